"""The scripted server under the benchmarks' heaviest load: 1,000 chat completions at 0 ms, 64 in flight.

Not a timed test: it measures whichever ``rlm.testing.ScriptedServer`` is
importable (run it with ``PYTHONPATH`` pointing at another checkout to measure
that one) and records the numbers under ``--label`` in
``benchmarks/reports/scripted_server_load.json``; the Markdown report next to it
shows every label recorded. The load is the one of ``benchmarks/fanout.py``'s
``fanout_cpu`` (``llm_query_batched`` of 1,000 short prompts, a policy answering
``"ans:" + prompt``), sent by an ``aiohttp`` client (the client of
``rlm/transport.py``) with 64 connections. Two set-ups:

* ``process`` -- the server alone in its own process (``python -m
  rlm.testing.scripted_server --policy ...``): requests per second, and the
  server's CPU per request (``utime + stime`` of its process over the rounds,
  from ``/proc/PID/stat``; the client's CPU is not in it);
* ``thread`` -- the server in a thread of the client's process, as the
  benchmarks run it (``with ScriptedServer(...)``): requests per second and the
  whole process's CPU per request (client and server share one interpreter).

* ``bare`` -- the floor of the two HTTP stacks with no logic at all: a bare
  aiohttp low-level server and a bare ``asyncio``-streams server answering a
  constant completion, each in its own process, under the same load (their CPU
  per request; recorded with every label, the latest kept);
* ``--fanout N`` -- ``N`` runs of ``benchmarks/fanout.py``'s ``measure_cpu_bound``
  (the real fan-out through rlm on Ray, the server in a thread of the driver), the
  seconds each run's 1,000 sub-calls took.

Each set-up runs ``--rounds`` rounds of 1,000 requests after a warm-up round;
the report gives the median round and the CPU over all rounds.

Usage: ``.venv/bin/python benchmarks/scripted_server_load.py --label NAME [--rounds 7] [--fanout 4]``; to
measure another commit's server, export its ``rlm/`` (``git archive COMMIT rlm | tar -x -C DIR``) and run
the same command from ``DIR`` with ``PYTHONPATH=DIR`` and ``--commit COMMIT``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

__all__ = ["echo_policy", "main", "measure_bare", "measure_fanout", "measure_process", "measure_thread", "report"]

HERE = Path(__file__).resolve()
REPORTS = HERE.parent / "reports"
N_REQUESTS = 1000
IN_FLIGHT = 64
TICK = os.sysconf("SC_CLK_TCK")


def echo_policy(messages: list[dict[str, Any]]) -> str:
    """The sub-call answer of ``benchmarks/fanout.py``: ``"ans:"`` + the prompt."""
    return "ans:" + str(messages[-1].get("content"))


async def _round(base_url: str, session: aiohttp.ClientSession) -> float:
    """Send N_REQUESTS completions, IN_FLIGHT at a time; check every answer; return the wall time."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        body = {"model": "scripted", "messages": [{"role": "user", "content": f"p{i}"}]}
        async with gate, session.post(f"{base_url}/chat/completions", json=body) as response:
            data = await response.json()
        if data["choices"][0]["message"]["content"] != f"ans:p{i}":
            raise RuntimeError(f"wrong answer to p{i}: {data}")

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(N_REQUESTS)))
    return time.perf_counter() - started


async def _load(base_url: str, rounds: int) -> list[float]:
    """A warm-up round, then ``rounds`` timed rounds over one pool of IN_FLIGHT connections."""
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector) as session:
        await _round(base_url, session)
        return [await _round(base_url, session) for _ in range(rounds)]


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _summary(times: list[float], cpu: float) -> dict[str, float]:
    requests = N_REQUESTS * len(times)
    return {"requests_per_s": N_REQUESTS / statistics.median(times), "round_s_median": statistics.median(times),
            "round_s_min": min(times), "round_s_max": max(times), "cpu_us_per_request": cpu / requests * 1e6}


def measure_process(rounds: int) -> dict[str, float]:
    """The server in its own process; its CPU only."""
    command = [sys.executable, "-m", "rlm.testing.scripted_server", "--policy", f"{HERE}:echo_policy"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().split()[-1]
        asyncio.run(_load(base_url, 0))  # warm-up: imports, first connections
        before = _cpu_seconds(server.pid)
        times = asyncio.run(_load(base_url, rounds))
        cpu = _cpu_seconds(server.pid) - before
    finally:
        server.terminate()
        server.wait(30)
    return _summary(times, cpu)


def measure_thread(rounds: int) -> dict[str, float]:
    """The server in a thread of this process, as the benchmarks run it; the whole process's CPU."""
    from rlm.testing import ScriptedServer

    with ScriptedServer(policy=echo_policy) as server:
        asyncio.run(_load(server.base_url, 0))
        before = resource.getrusage(resource.RUSAGE_SELF)
        times = asyncio.run(_load(server.base_url, rounds))
        after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return _summary(times, cpu)


_COMPLETION = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "scripted",
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": "ans:p1"},
                                       "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}).encode()
#: A bare aiohttp low-level server: read the body, answer a constant completion.
_BARE_AIOHTTP = """
import asyncio
from aiohttp import web
BODY = _BODY_
async def handle(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")
async def serve():
    runner = web.ServerRunner(web.Server(handle, access_log=None), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print("listening on http://127.0.0.1:%d/v1" % runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()
asyncio.run(serve())
""".replace("_BODY_", repr(_COMPLETION))
#: A bare asyncio-streams server: read the head and the content-length body, answer a constant completion.
_BARE_STREAMS = r"""
import asyncio
BODY = _BODY_
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(BODY)
async def connection(reader, writer):
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            break
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        writer.write(HEAD + BODY)
        await writer.drain()
    writer.close()
async def serve():
    server = await asyncio.start_server(connection, "127.0.0.1", 0)
    print("listening on http://127.0.0.1:%d/v1" % server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(serve())
""".replace("_BODY_", repr(_COMPLETION))


async def _bare_load(base_url: str, rounds: int) -> list[float]:
    """Like :func:`_load` without checking answers (the bare servers answer a constant)."""
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    gate = asyncio.Semaphore(IN_FLIGHT)
    body = {"model": "scripted", "messages": [{"role": "user", "content": "p1"}]}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            async with gate, session.post(f"{base_url}/chat/completions", json=body) as response:
                await response.read()

        times = []
        for _ in range(rounds + 1):  # the first round warms up
            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(N_REQUESTS)))
            times.append(time.perf_counter() - started)
        return times[1:]


def measure_bare(rounds: int) -> dict[str, dict[str, float]]:
    """The two HTTP stacks with no logic, each alone in a process: their CPU per request."""
    results = {}
    for name, code in (("aiohttp low-level server", _BARE_AIOHTTP), ("asyncio streams", _BARE_STREAMS)):
        server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            base_url = server.stdout.readline().split()[-1]
            asyncio.run(_bare_load(base_url, 0))
            before = _cpu_seconds(server.pid)
            times = asyncio.run(_bare_load(base_url, rounds))
            results[name] = _summary(times, _cpu_seconds(server.pid) - before)
        finally:
            server.kill()
            server.wait(30)
    return results


def measure_fanout(runs: int) -> list[float]:
    """``runs`` runs of the fan-out benchmark at 0 ms (1,000 sub-calls through rlm on Ray): seconds each."""
    from rlm.benchmarks.fanout import measure_cpu_bound

    return [float(measure_cpu_bound()["seconds"]) for _ in range(runs)]


def _commit() -> str:
    import rlm.testing

    root = Path(rlm.testing.__file__).resolve().parents[2]
    done = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%h"], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() or f"(no git: {root})"


def report(results: dict[str, Any]) -> str:
    """The Markdown report of every label recorded."""
    lines = ["# The scripted server under load: 1,000 completions at 0 ms, 64 in flight", "",
             "Command: `.venv/bin/python benchmarks/scripted_server_load.py --label NAME --fanout 6` (for another "
             "commit's server: from an export of its `rlm/`, with `PYTHONPATH` there and `--commit`).", "",
             "| implementation | commit | set-up | requests/s (median round) | round (min-max) | "
             "CPU per request |", "| --- | --- | --- | --- | --- | --- |"]
    labels = {label: entry for label, entry in results.items() if label != "bare"}
    for label, entry in labels.items():
        for setup, who in (("process", "server's CPU"), ("thread", "whole process's CPU")):
            lines.append(_row(label, entry["commit"], setup, entry[setup], who))
    bare = results.get("bare")
    if bare is not None:
        for name, stats in bare["servers"].items():
            lines.append(_row(f"bare {name}", "-", "process", stats, "server's CPU"))
    fanouts = [(label, entry["fanout"]) for label, entry in labels.items() if entry.get("fanout")]
    if fanouts:
        lines += ["", "`benchmarks/fanout.py` `measure_cpu_bound()` (1,000 sub-calls at 0 ms through rlm on Ray), "
                  "seconds per run:", ""]
        lines += [f"- {label}: median {statistics.median(runs):.3f} s (min {min(runs):.3f}, max {max(runs):.3f}; "
                  f"{', '.join(f'{r:.3f}' for r in runs)})" for label, runs in fanouts]
    lines += ["", "Machines and loads:", ""]
    lines += [f"- {label}: {entry['machine']}" for label, entry in labels.items()]
    if bare is not None:
        lines.append(f"- bare servers: {bare['machine']}")
    return "\n".join(lines) + "\n"


def _row(label: str, commit: str, setup: str, s: dict[str, float], who: str) -> str:
    return (f"| {label} | {commit} | {setup} | {s['requests_per_s']:,.0f} | {s['round_s_median']:.3f} s "
            f"({s['round_s_min']:.3f}-{s['round_s_max']:.3f}) | {s['cpu_us_per_request']:,.0f} us ({who}) |")


def _machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"aiohttp {aiohttp.__version__}, 1-minute load average {os.getloadavg()[0]:.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", required=True, help="the name of the implementation measured")
    parser.add_argument("--commit", help="the commit measured (default: git's HEAD of the rlm imported)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--fanout", type=int, default=0, help="runs of the real fan-out benchmark (needs Ray)")
    parser.add_argument("--output", type=Path, default=REPORTS / "scripted_server_load.json")
    args = parser.parse_args(argv)
    machine = _machine()
    entry: dict[str, Any] = {"commit": args.commit or _commit(), "process": measure_process(args.rounds),
                             "thread": measure_thread(args.rounds), "fanout": measure_fanout(args.fanout)}
    bare: dict[str, Any] = {"servers": measure_bare(args.rounds)}
    entry["machine"] = bare["machine"] = f"{machine} before, {os.getloadavg()[0]:.1f} after"
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    results[args.label] = entry
    results["bare"] = bare
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    text = report(results)
    args.output.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
