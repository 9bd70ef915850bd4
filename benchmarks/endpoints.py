"""The OpenAI-compatible endpoint under load: concurrent ``openai`` clients against ``rlm serve --http``.

Not a timed test: :func:`main` measures and writes ``benchmarks/reports/endpoints.md`` (and ``.json``).

Set-up, as a user runs it: the scripted model server (:mod:`rlm.testing.scripted_server`) as a process of
its own with :func:`policy`, and ``rlm serve --http 127.0.0.1:0`` as another, at its default admission
(8 runs at once, 64 more queued) and pool sizes. The clients are ``openai.AsyncOpenAI`` instances (one per
client, each with its own connections) on one event loop in this process.

Scenarios (the policy recognises a root by the efficiency suite's marker ``EFFICIENCY-ROOT`` and a child
agent by ``CHILD-<n>``, as :mod:`rlm.benchmarks.efficiency` does):

* ``trivial``: one model call at 0 ms whose first cell answers;
* ``spawn``: a root that calls ``rlm_query_batched`` over 200 prompts, each a child agent whose one model
  call takes 100 ms, 16 in flight.

Each request's question carries a tag of its own (``TAG-c<client>-r<request>``) that its answer must
repeat, so an answer lost, cut or given to the wrong client is counted as wrong. Measured:

* in-process: ``rlm.run`` in this process (local executor, after a warm-up run), the median of several;
* one client: the same requests through the endpoint one at a time (the endpoint's own cost);
* N clients at once: requests served per second over the whole phase, and p50/p95/max latency per
  request; the service process's CPU seconds over the phase.

Usage: ``.venv/bin/python -m rlm.benchmarks.endpoints [--clients 32] [--trivial-per-client 10]
[--spawn-n 200] [--out benchmarks/reports/endpoints.md]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlm.benchmarks.efficiency import ROOT_MARK

__all__ = ["main", "policy"]

REPORT = Path(__file__).resolve().parent / "reports" / "endpoints.md"
CHILD_LATENCY_MS = 100
SPAWN_CONCURRENCY = 16


def _repl(code: str) -> str:
    return f"```repl\n{code}\n```"


def policy(messages: list[dict[str, Any]]) -> Any:
    """The scripted model of both scenarios (run by the scripted server process)."""
    text = "\n".join(str(m.get("content")) for m in messages)
    if ROOT_MARK in text:
        tag = re.search(r"TAG-(c\d+-r\d+)", text)
        label = tag.group(1) if tag else "none"
        if spawn := re.search(r"SPAWN-(\d+)", text):
            n = int(spawn.group(1))
            return _repl(f"res = rlm_query_batched(['CHILD-' + str(i) for i in range({n})])\n"
                         "ok = sum(1 for i, r in enumerate(res) if 'child-' + str(i) + '-ok' in str(r))\n"
                         f"FINAL('ok=' + str(ok) + ' {label}')")
        return _repl(f"FINAL('answer {label}')")
    child = re.findall(r"CHILD-(\d+)", text)
    if child:
        return {"content": _repl(f"FINAL('child-{child[0]}-ok')"), "delay_ms": CHILD_LATENCY_MS}
    return "FINAL(unexpected request)"


def question(scenario: str, client: int, request: int, spawn_n: int) -> tuple[str, str]:
    """The question of one request and the answer it must get."""
    tag = f"c{client:02d}-r{request:03d}"
    if scenario == "spawn":
        return f"{ROOT_MARK} SPAWN-{spawn_n} TAG-{tag}", f"ok={spawn_n} {tag}"
    return f"{ROOT_MARK} TRIVIAL TAG-{tag}", f"answer {tag}"


# -- the processes -----------------------------------------------------------------------------
@dataclass
class Processes:
    model_url: str
    model: subprocess.Popen[str]
    service: subprocess.Popen[bytes] | None = None
    service_url: str = ""
    token: str = ""


def start_model() -> Processes:
    process = subprocess.Popen([sys.executable, "-m", "rlm.testing.scripted_server", "--policy",
                                "rlm.benchmarks.endpoints:policy"], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"listening on (\S+)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"the scripted server did not start: {line!r}")
    return Processes(model_url=match.group(1), model=process)


def start_service(procs: Processes, home: Path) -> None:
    from rlm.service.paths import find_service, read_token

    env = {**os.environ, "RLM_HOME": str(home), "RLM_API_KEY": "sk-bench", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    argv = [sys.executable, "-m", "rlm.cli", "serve", "--http", "127.0.0.1:0", "--model", "openai/scripted",
            "--api-base", procs.model_url, "--max-llm-calls", "1000"]
    with open(home.parent / "serve.log", "wb") as log:  # the service writes to its own copy of the descriptor
        procs.service = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 120
    while (state := find_service(home)) is None or state.http is None:
        if procs.service.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((home.parent / "serve.log").read_text())
        time.sleep(0.05)
    procs.service_url, procs.token = state.http + "/v1", str(read_token(home))


def stop(procs: Processes) -> None:
    for process in (procs.service, procs.model):
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def service_cpu(procs: Processes) -> float:
    """CPU seconds of the service's process tree so far (its sandboxes' included once their parent reaped them)."""
    import psutil

    assert procs.service is not None
    root = psutil.Process(procs.service.pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def wait_idle(procs: Processes, timeout: float = 60) -> None:
    """Wait until the service stops using CPU (litellm's import in the background, its pools' start)."""
    deadline = time.monotonic() + timeout
    before = service_cpu(procs)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = service_cpu(procs)
        if now - before < 0.05:
            return
        before = now


# -- measurements ------------------------------------------------------------------------------
@dataclass
class Phase:
    """One scenario at one level of concurrency."""

    scenario: str
    clients: int
    requests: int = 0
    correct: int = 0
    wrong: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    service_cpu_s: float | None = None  # the service's process tree
    client_cpu_s: float | None = None  # this process: the openai clients

    @property
    def per_second(self) -> float:
        return self.requests / self.wall_s if self.wall_s else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(per_second=self.per_second, p50_s=self.percentile(0.5), p95_s=self.percentile(0.95),
                    max_s=max(self.latencies_s, default=0.0))
        return data


def in_process(scenario: str, model_url: str, home: Path, repeat: int, spawn_n: int) -> list[float]:
    """Seconds of ``rlm.run`` of the scenario in this process (after one warm-up run), one per repeat."""
    from rlm.config import RLMConfig
    from rlm.runner import run

    config = RLMConfig(model="openai/scripted", api_base=model_url, api_key="sk-bench", home=home,
                       max_llm_calls=1000, lm_retries=0)
    seconds = []
    for index in range(repeat + 1):
        text, expected = question(scenario, 99, index, spawn_n)
        started = time.perf_counter()
        result = run(text, "", config)
        if result.answer != expected:
            raise RuntimeError(f"in-process {scenario}: {result.answer!r}, not {expected!r}")
        if index:
            seconds.append(time.perf_counter() - started)
    return seconds


async def through_endpoint(procs: Processes, scenario: str, clients: int, per_client: int, spawn_n: int) -> Phase:
    """``clients`` openai clients at once, each sending ``per_client`` requests one after another."""
    import openai

    phase = Phase(scenario, clients)
    cpu_before, client_before = service_cpu(procs), _own_cpu()

    async def one_client(index: int) -> None:
        async with openai.AsyncOpenAI(base_url=procs.service_url, api_key=procs.token, max_retries=0,
                                      timeout=1800) as client:
            for request in range(per_client):
                text, expected = question(scenario, index, request, spawn_n)
                started = time.perf_counter()
                reply = await client.chat.completions.create(model="rlm", messages=[{"role": "user", "content": text}])
                phase.latencies_s.append(time.perf_counter() - started)
                phase.requests += 1
                answer = reply.choices[0].message.content
                if answer == expected:
                    phase.correct += 1
                else:
                    phase.wrong.append(f"{expected!r} got {answer!r}")

    started = time.perf_counter()
    await asyncio.gather(*(one_client(i) for i in range(clients)))
    phase.wall_s = time.perf_counter() - started
    phase.service_cpu_s = service_cpu(procs) - cpu_before
    phase.client_cpu_s = _own_cpu() - client_before
    return phase


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def measure(clients: int, trivial_per_client: int, spawn_n: int, log: Any = sys.stderr) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    procs = start_model()
    try:
        with tempfile.TemporaryDirectory(prefix="rlm-endpoints-") as tmp:
            print("in-process runs", file=log, flush=True)
            inproc = {"trivial": in_process("trivial", procs.model_url, Path(tmp) / "inproc", 20, spawn_n),
                      "spawn": in_process("spawn", procs.model_url, Path(tmp) / "inproc", 3, spawn_n)}
            home = Path(tmp) / "svc" / "home"
            home.parent.mkdir(parents=True)
            started = time.perf_counter()
            start_service(procs, home)
            ready_s = time.perf_counter() - started
            first = asyncio.run(through_endpoint(procs, "trivial", 1, 1, spawn_n))
            wait_idle(procs)
            phases = []
            for scenario, per_client in (("trivial", trivial_per_client), ("spawn", 1)):
                for level, repeat in ((1, 20 if scenario == "trivial" else 3), (clients, per_client)):
                    print(f"{scenario}: {level} client(s) x {repeat}", file=log, flush=True)
                    phases.append(asyncio.run(through_endpoint(procs, scenario, level, repeat, spawn_n)))
    finally:
        stop(procs)
    return {"in_process_s": inproc, "service_ready_s": ready_s, "first_request_s": first.latencies_s[0],
            "phases": [p.to_dict() for p in phases],
            "clients": clients, "spawn_n": spawn_n, "cores": os.cpu_count(), "python": platform.python_version(),
            "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)]}


# -- the report ----------------------------------------------------------------------------------
def render(numbers: dict[str, Any], command: str) -> str:
    inproc = {k: statistics.median(v) for k, v in numbers["in_process_s"].items()}
    lines = ["# The OpenAI-compatible endpoint under load", "",
             f"Command: `{command}`", "",
             f"Machine: {numbers['cores']} cores, Python {numbers['python']}, load average "
             f"{numbers['load_average'][0]} before and {numbers['load_average'][1]} after (other work shares the "
             "machine: numbers move with it). `rlm serve --http` with its default "
             f"admission (8 runs at once, 64 queued) as its own process, the scripted model server as another, "
             f"the `openai` clients (`AsyncOpenAI`, one per client) in a third; `rlm serve` was ready "
             f"{numbers['service_ready_s']:.2f} s after it was started, and its first request (trivial) took "
             f"{numbers['first_request_s']:.2f} s; the phases below start once the service is idle after it.", "",
             f"Scenarios: **trivial** (one model call at 0 ms, the first cell answers) and **spawn** (a root that "
             f"calls `rlm_query_batched` over {numbers['spawn_n']} prompts: {numbers['spawn_n']} child agents, "
             f"{CHILD_LATENCY_MS} ms per model call, {SPAWN_CONCURRENCY} in flight). Every answer is checked by "
             "content: each question has a tag of its own that its answer must repeat (a spawn answer must also "
             f"count {numbers['spawn_n']} right children).", "",
             "| scenario | clients at once | requests | answers right | wall | requests/s | p50 | p95 | max "
             "| in-process run (median) | service CPU per request | client CPU per request |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in numbers["phases"]:
        lines.append(f"| {p['scenario']} | {p['clients']} | {p['requests']} | {p['correct']}/{p['requests']} | "
                     f"{p['wall_s']:.2f} s | {p['per_second']:.2f} | {p['p50_s']:.3f} s | {p['p95_s']:.3f} s | "
                     f"{p['max_s']:.3f} s | {inproc[p['scenario']]:.3f} s | "
                     f"{1000 * p['service_cpu_s'] / p['requests']:.0f} ms | "
                     f"{1000 * p['client_cpu_s'] / p['requests']:.0f} ms |")
    wrong = [w for p in numbers["phases"] for w in p["wrong"]]
    lines += ["", f"Answers wrong, lost or mixed up: {len(wrong)}." + ("" if not wrong else f" First: {wrong[:5]}"),
              "", "Service CPU is the user+system time of `rlm serve`'s process tree over the phase (the sandbox "
              "zygotes and the workers they forked and reaped included), per request; client CPU is this "
              "process's (the `openai` clients). On a 2-core machine, requests/s at 32 clients is bounded by the "
              "CPU of all of them together, and by whatever else runs on the machine (the load average above).",
              "", "In-process runs: `rlm.run` in the benchmark's process with the local executor, after one warm-up "
              "run (so its sandbox zygote and imports are warm, as in the service); seconds of each: "
              + ", ".join(f"{k} {', '.join(f'{s:.3f}' for s in v)}" for k, v in numbers["in_process_s"].items())
              + ".", "", "Raw numbers (latencies omitted):", "", "```json",
              json.dumps({**numbers, "phases": [{k: v for k, v in p.items() if k != "latencies_s"}
                                                for p in numbers["phases"]]}, indent=1), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--trivial-per-client", type=int, default=10)
    parser.add_argument("--spawn-n", type=int, default=200)
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    command = "python -m rlm.benchmarks.endpoints " + " ".join(argv if argv is not None else sys.argv[1:])
    numbers = measure(args.clients, args.trivial_per_client, args.spawn_n)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(numbers, indent=1), encoding="utf-8")
    args.out.write_text(render(numbers, command.strip()), encoding="utf-8")
    print(render(numbers, command.strip()))


if __name__ == "__main__":
    main()
