"""From the shell: every efficiency scenario timed as a user meets it, cold and with a service running.

Each scenario is ``rlm ask CONTEXT QUESTION --json`` (``rlm batch`` for the
batch scenario) run as a subprocess with default settings, the wall clock taken
from spawn to exit, the answer checked by content. Two conditions:

* **cold** — nothing of rlm running: a fresh ``RLM_HOME`` per run, no service,
  no Ray (the process starts, imports, starts its sandbox zygote, runs, exits);
* **warm** — ``rlm serve`` running for the ``RLM_HOME`` (started before the
  timed runs, as a user starts it once; its start-up is reported separately).

Beside each: the in-run window the run itself reports (``duration_s``) and the
scripted server's window (first to last request), so that what the process
start and exit cost is visible. The scripted trajectories are
:class:`rlm.benchmarks.efficiency.ScenarioPolicy` in our dialect, plus
``trivial`` (one call whose first cell answers), and ``embedded``: the README's
first command on the embedded model (its warm runs with ``--no-cache``, since
they share a run log). Pools stay at their default sizes: nothing is
pre-started to fit a scenario.

Also measured: time for ``rlm serve`` to answer, the service's resident memory
(its process tree) idle and at the end of the spawn scenario, ``rlm runs``
latency while four runs write, and what starting a sandbox zygote costs (every
run starts one: runs never share a jail).

Run it: ``python -m rlm.benchmarks.shell [--repeat 3] [--only trivial,spawn] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm.benchmarks.readings import write_report
from rlm.benchmarks.efficiency import (DIALECTS, EXPECTED, ROOT_MARK, EfficiencyOptions, ScenarioPolicy, _children,
                                       _huge_file, _rss)

__all__ = ["ShellRun", "measure_scenario", "main"]

SCENARIOS = ("trivial", "overhead", "fanout_cpu", "fanout_latency", "spawn", "huge", "batch", "embedded")
#: The issue's goals (2 cores, scripted server): cold, warm. ``embedded`` has none.
GOALS = {"trivial": (0.3, 0.15), "overhead": (0.5, 0.3), "fanout_cpu": (0.8, 0.5),
         "fanout_latency": (8.4, 8.2), "spawn": (2.5, 1.6), "huge": (0.8, 0.4), "batch": (2.0, 1.0)}
BATCH_TASKS = 50
#: ``embedded``: the README's first command, on the embedded model (no scripted server).
README_FILE = Path(__file__).resolve().parents[1] / "examples" / "logbook.txt"
README_QUESTION = "What is the harbour master's launch code?"
README_ANSWER = "ORCA-7731"


@dataclass
class ShellRun:
    """One timed command."""

    scenario: str
    condition: str  # "cold" or "warm"
    wall_s: float
    run_s: float | None  # the run's own duration_s (the in-process window)
    server_window_s: float | None
    correct: bool
    answer: str | None = None
    error: str | None = None
    cpu_s: float | None = None  # the command's CPU time (with the processes it started and reaped)
    service_cpu_s: float | None = None  # warm: the service's CPU time over the command (reaped zygotes included)


@dataclass
class Summary:
    scenario: str
    condition: str
    runs: list[ShellRun] = field(default_factory=list)

    def wall(self) -> tuple[float, float, float]:
        values = [r.wall_s for r in self.runs]
        return min(values), statistics.median(values), max(values)


class _Policy:
    """``ScenarioPolicy`` for one run at a time (reset per run), plus the ``trivial`` and ``batch`` scenarios."""

    def __init__(self, scenario: str, options: EfficiencyOptions) -> None:
        self.scenario, self.options = scenario, options
        self.reset()

    def reset(self) -> None:
        base = "overhead" if self.scenario in ("trivial", "batch") else self.scenario
        self.inner = ScenarioPolicy(base, DIALECTS["ours"], self.options)

    def __call__(self, messages: list[dict[str, Any]]) -> Any:
        if self.scenario in ("trivial", "batch"):
            text = "\n".join(str(m.get("content")) for m in messages)
            marker = text[text.rfind("TASK-"):].split()[0] if "TASK-" in text else "trivial"
            return f"```repl\nFINAL({marker!r})\n```"
        return self.inner(messages)


def _rlm_command() -> list[str]:
    script = Path(sys.executable).parent / "rlm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rlm.cli"]


def _expected(scenario: str, options: EfficiencyOptions) -> str:
    return "trivial" if scenario == "trivial" else EXPECTED[scenario](options)


def _ask_argv(scenario: str, context: Path, base_url: str, options: EfficiencyOptions) -> list[str]:
    argv = [*_rlm_command(), "ask", str(context), f"{ROOT_MARK}: run the {scenario} scenario.",
            "--model", "openai/scripted", "--api-base", base_url, "--json", "-q",
            "--max-llm-calls", "10000", "--max-iterations", str(options.iterations + 5)]
    if scenario == "spawn":
        argv += ["--max-depth", "1"]
    if scenario.startswith("fanout"):
        argv += ["--max-concurrency", "64"]
    return argv


def _timed(argv: list[str], env: dict[str, str],
           timeout: float = 600) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    return time.perf_counter() - started, done


class _Cpu:
    """CPU seconds over one command: the command's own (``RUSAGE_CHILDREN``), and the service's (``/proc``)."""

    def __init__(self, service_pid: int | None) -> None:
        self.service_pid = service_pid
        self.command = _children_cpu()
        self.service = _process_cpu(service_pid)

    def done(self, run: ShellRun) -> ShellRun:
        run.cpu_s = _children_cpu() - self.command
        if self.service_pid is not None:
            run.service_cpu_s = _process_cpu(self.service_pid) - self.service
        return run


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(pid: int | None) -> float:
    """User + system time of ``pid`` and its reaped children, in seconds (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _server_window(records: list[Any]) -> float | None:
    answered = [r for r in records if r.responded_at is not None]
    if not answered:
        return None
    return max(r.responded_at for r in answered) - min(r.received_at for r in answered)


def _result(done: subprocess.CompletedProcess[str]) -> dict[str, Any] | None:
    """The ``--json`` object ``rlm ask`` printed last, or ``None`` when it printed none."""
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return result if isinstance(result, dict) else None


def _one_ask(scenario: str, condition: str, context: Path, server: Any, policy: _Policy, env: dict[str, str],
             options: EfficiencyOptions, cpu: _Cpu) -> ShellRun:
    policy.reset()
    before = len(server.requests)
    wall, done = _timed(_ask_argv(scenario, context, server.base_url, options), env)
    expected = _expected(scenario, options)
    return _asked(scenario, condition, wall, done, _server_window(server.requests[before:]),
                  lambda answer: answer == expected, cpu)


def _asked(scenario: str, condition: str, wall: float, done: subprocess.CompletedProcess[str],
           window: float | None, correct: Callable[[str], bool], cpu: _Cpu) -> ShellRun:
    """The timed ``rlm ask --json`` as a :class:`ShellRun`: its answer checked by ``correct``."""
    result = _result(done)
    if result is None:
        return cpu.done(ShellRun(scenario, condition, wall, None, window, False,
                                 error=(done.stderr or done.stdout)[-400:]))
    answer = str(result.get("answer"))
    return cpu.done(ShellRun(scenario, condition, wall, result.get("duration_s"), window, correct(answer),
                             answer=answer[:100], error=result.get("error")))


def _one_batch(condition: str, server: Any, env: dict[str, str], tmp: Path, cpu: _Cpu) -> ShellRun:
    tasks = tmp / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": f"t{i}", "question": f"answer TASK-{i}", "context": f"doc {i}"}) + "\n"
                             for i in range(BATCH_TASKS)))
    out = tmp / f"results-{time.monotonic_ns()}.jsonl"
    argv = [*_rlm_command(), "batch", str(tasks), "--out", str(out), "--concurrency", "8", "-q",
            "--model", "openai/scripted", "--api-base", server.base_url]
    before = len(server.requests)
    wall, done = _timed(argv, env)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    correct = len(rows) == BATCH_TASKS and all(r["answer"] == f"TASK-{r['id'][1:]}" for r in rows)
    return cpu.done(ShellRun("batch", condition, wall, None, _server_window(server.requests[before:]), correct,
                             answer=f"{sum(r['status'] == 'ok' for r in rows)}/{BATCH_TASKS} ok",
                             error=None if done.returncode == 0 else done.stderr[-400:]))


def _one_embedded(condition: str, env: dict[str, str], cpu: _Cpu) -> ShellRun:
    """The README's first command as typed. Warm runs share one RLM_HOME, so they add ``--no-cache``: the
    embedded model runs at temperature 0, and a repeat of the question would be answered from the run log."""
    argv = [*_rlm_command(), "ask", str(README_FILE), README_QUESTION, "--json", "-q"]
    if condition == "warm":
        argv.append("--no-cache")
    wall, done = _timed(argv, env)
    return _asked("embedded", condition, wall, done, None, lambda answer: README_ANSWER in answer, cpu)


class _Service:
    """``rlm serve`` for one RLM_HOME, started and stopped around the warm runs."""

    def __init__(self, env: dict[str, str]) -> None:
        from rlm.service.paths import find_service

        home = Path(env["RLM_HOME"])
        started = time.perf_counter()
        self.proc = subprocess.Popen([*_rlm_command(), "serve"], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        while getattr(find_service(home), "pid", None) != self.proc.pid:
            if self.proc.poll() is not None or time.perf_counter() - started > 120:
                raise RuntimeError("rlm serve did not start")
            time.sleep(0.01)
        status = subprocess.run([*_rlm_command(), "service", "status"], env=env, capture_output=True)
        self.ready_s = time.perf_counter() - started if status.returncode == 0 else None
        time.sleep(1.0)  # its zygotes and warm-up threads settle, as they would before a user's first command

    def rss(self) -> int:
        return sum(_rss(p) for p in [self.proc.pid, *_children(self.proc.pid)])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)


def measure_scenario(scenario: str, condition: str, repeat: int, options: EfficiencyOptions,
                     extra: dict[str, Any]) -> Summary:
    """``repeat`` timed commands of ``scenario`` under ``condition``."""
    from rlm.testing import ScriptedServer

    summary = Summary(scenario, condition)
    policy = _Policy(scenario, options)
    latency = 0
    with tempfile.TemporaryDirectory(prefix="rlm-shell-") as tmp_name, ScriptedServer(policy=policy,
                                                                                      latency_ms=latency) as server:
        tmp = Path(tmp_name)
        context = _huge_file(options.huge_bytes) if scenario == "huge" else tmp / "context.txt"
        if scenario != "huge":
            context.write_text("efficiency benchmark context\n" * 100, encoding="utf-8")
        base_env = {k: v for k, v in os.environ.items() if k not in ("RLM_EXECUTOR", "RAY_ADDRESS")}
        service = None
        if condition == "warm":
            home = tmp / "home"
            service = _Service({**base_env, "RLM_HOME": str(home)})
            extra.setdefault("service_ready_s", []).append(service.ready_s)
            extra.setdefault("service_idle_rss", []).append(service.rss())
        try:
            for index in range(repeat):
                home = tmp / "home" if condition == "warm" else tmp / f"home-{index}"
                env = {**base_env, "RLM_HOME": str(home)}
                cpu = _Cpu(service.proc.pid if service is not None else None)
                if scenario == "batch":
                    summary.runs.append(_one_batch(condition, server, env, tmp, cpu))
                elif scenario == "embedded":
                    summary.runs.append(_one_embedded(condition, env, cpu))
                else:
                    summary.runs.append(_one_ask(scenario, condition, context, server, policy, env, options, cpu))
            if service is not None and scenario == "spawn":
                extra["service_rss_after_spawn"] = service.rss()
        finally:
            if service is not None:
                service.stop()
    return summary


def runs_latency_while_writing(options: EfficiencyOptions) -> dict[str, float]:
    """``rlm runs`` with a service running while four runs write (each a cell of 3 s)."""
    from rlm.testing import ScriptedServer

    def slow(messages: list[dict[str, Any]]) -> str:
        return "```repl\nimport time\ntime.sleep(3)\nFINAL('done')\n```"

    with tempfile.TemporaryDirectory(prefix="rlm-shell-") as tmp_name, ScriptedServer(policy=slow) as server:
        tmp = Path(tmp_name)
        context = tmp / "context.txt"
        context.write_text("x\n")
        env = {**os.environ, "RLM_HOME": str(tmp / "home")}
        service = _Service(env)
        try:
            writers = [subprocess.Popen([*_rlm_command(), "ask", str(context), "slow", "--model", "openai/scripted",
                                         "--api-base", server.base_url, "-q"], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(4)]
            while len(server.requests) < 4:
                time.sleep(0.02)
            times = [_timed([*_rlm_command(), "runs"], env)[0] for _ in range(5)]
            for writer in writers:
                writer.wait(timeout=60)
        finally:
            service.stop()
    return {"min_s": min(times), "median_s": statistics.median(times), "max_s": max(times)}


def zygote_cost(starts: int = 20) -> dict[str, float]:
    """A sandbox zygote started (to ready) and closed, one after another: what the one-jail-per-run rule costs
    each run. Serial and CPU-bound on one core, so the wall time is about its CPU time too."""
    from rlm.config import SandboxConfig
    from rlm.sandbox.forkserver import ForkServer

    config = SandboxConfig()
    ForkServer(config).start().close()  # the sandbox's compiled files settled, as in a service
    times = []
    for _ in range(starts):
        started = time.perf_counter()
        ForkServer(config).start().close()
        times.append(time.perf_counter() - started)
    return {"min_s": min(times), "median_s": statistics.median(times), "starts": starts}


def render(summaries: list[Summary], extra: dict[str, Any], command: str) -> str:
    lines = ["# From the shell: whole commands, cold and with a service running", "",
             f"Command: `{command}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; load average "
             f"{os.getloadavg()[0]:.1f} when the report was written (a shared machine: other work inflates these).", "",
             "Wall clock from spawn to exit of `rlm ask ... --json` (`rlm batch` for batch), default settings, "
             "scripted model server on loopback; min / median / max over the runs; every answer checked by content. "
             "`run` is the run's own `duration_s`, `server` the scripted server's first-to-last-request window. "
             f"`embedded` is the README's first command (`rlm ask examples/logbook.txt \"{README_QUESTION}\"`) on "
             f"the embedded model, correct when the answer holds {README_ANSWER}; its warm runs add `--no-cache` "
             "(the repeated question would be answered from the run log).", "",
             "`command CPU` is the command's own CPU time (with the processes it started and reaped), `service CPU` "
             "the service's over the same command (its reaped zygotes included; a zygote still alive in its pool "
             "is not), medians.", "",
             "| scenario | condition | goal | wall min / median / max | run (median) | server (median) | "
             "command CPU | service CPU | correct |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in summaries:
        lo, mid, hi = s.wall()
        goals = GOALS.get(s.scenario)
        goal = f"<= {goals[0 if s.condition == 'cold' else 1]:g} s" if goals else "-"
        runs = [r.run_s for r in s.runs if r.run_s is not None]
        windows = [r.server_window_s for r in s.runs if r.server_window_s is not None]
        ok = sum(r.correct for r in s.runs)
        cpus = [r.cpu_s for r in s.runs if r.cpu_s is not None]
        service_cpus = [r.service_cpu_s for r in s.runs if r.service_cpu_s is not None]
        lines.append(f"| {s.scenario} | {s.condition} | {goal} | {lo:.2f} / {mid:.2f} / {hi:.2f} s | "
                     f"{_s(statistics.median(runs)) if runs else '-'} | "
                     f"{_s(statistics.median(windows)) if windows else '-'} | "
                     f"{_s(statistics.median(cpus)) if cpus else '-'} | "
                     f"{_s(statistics.median(service_cpus)) if service_cpus else '-'} | {ok}/{len(s.runs)} |")
    lines += ["", "Service:", ""]
    if extra.get("service_ready_s"):
        ready = [v for v in extra["service_ready_s"] if v is not None]
        lines.append(f"- `rlm serve` ready (answers `rlm service status`): median {_s(statistics.median(ready))} "
                     f"over {len(ready)} starts")
    if extra.get("service_idle_rss"):
        lines.append(f"- resident memory of the service's process tree, idle: median "
                     f"{statistics.median(extra['service_idle_rss']) / 2**20:,.0f} MiB")
    if extra.get("service_rss_after_spawn"):
        lines.append(f"- after the spawn scenario: {extra['service_rss_after_spawn'] / 2**20:,.0f} MiB")
    if extra.get("runs_latency"):
        r = extra["runs_latency"]
        lines.append(f"- `rlm runs` while four runs write: {_s(r['min_s'])} / {_s(r['median_s'])} / "
                     f"{_s(r['max_s'])} (min / median / max of 5)")
    if extra.get("zygote"):
        z = extra["zygote"]
        lines.append(f"- a sandbox zygote started and closed, one after another (each run starts one): "
                     f"{z['min_s'] * 1000:.1f} ms / {z['median_s'] * 1000:.1f} ms (min / median of {z['starts']})")
    failures = [r for s in summaries for r in s.runs if not r.correct]
    if failures:
        lines += ["", "Failures:", ""] + [f"- {r.scenario} {r.condition}: {r.answer!r} {r.error or ''}"[:300]
                                          for r in failures]
    lines.append("")
    return "\n".join(lines)


def _s(value: float) -> str:
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlm.benchmarks.shell", description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", help="comma-separated scenarios (default: all)")
    parser.add_argument("--conditions", default="cold,warm")
    parser.add_argument("--huge-bytes", type=int, default=1 << 30)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/reports/shell.md"))
    args = parser.parse_args(argv)
    options = EfficiencyOptions(huge_bytes=args.huge_bytes)
    scenarios = [s for s in SCENARIOS if not args.only or s in args.only.split(",")]
    summaries: list[Summary] = []
    extra: dict[str, Any] = {}
    for scenario in scenarios:
        for condition in args.conditions.split(","):
            print(f"[shell] {scenario} {condition} ...", file=sys.stderr, flush=True)
            summary = measure_scenario(scenario, condition, args.repeat, options, extra)
            print(f"[shell]   wall {summary.wall()}", file=sys.stderr, flush=True)
            summaries.append(summary)
    if not args.only or "runs" in args.only.split(","):
        extra["runs_latency"] = runs_latency_while_writing(options)
    if not args.only or "zygote" in args.only.split(","):
        extra["zygote"] = zygote_cost()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"summaries": [
        {"scenario": s.scenario, "condition": s.condition, "runs": [r.__dict__ for r in s.runs]} for s in summaries],
        "extra": extra}, indent=1, default=str))
    command = "python -m rlm.benchmarks.shell " + " ".join(argv if argv is not None else sys.argv[1:])
    write_report(args.out, render(summaries, extra, command.strip()))
    print(f"[shell] report: {args.out}", file=sys.stderr)
    return 0 if all(r.correct for s in summaries for r in s.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
