"""Fan-out benchmarks (issue 6, efficiency suite (b) and (c)) against the scripted server.

Each ``measure_*`` function runs one scripted trajectory through :func:`rlm.runner.run`
(on Ray by default, as the CLI runs) and returns a dict of numbers. The time is
measured *inside the root's REPL cell*, around the one batched call, so it
excludes cluster start, imports and the root's own model turns. Every answer is
checked by content inside the cell (``answers_ok`` must equal ``n``).

    python -m rlm.benchmarks.fanout          # writes benchmarks/reports/fanout.md
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

from rlm.config import RLMConfig, SandboxConfig

REPORT = Path(__file__).resolve().parent / "reports" / "fanout.md"


def _is_agent(messages: list[dict[str, Any]]) -> bool:
    return bool(messages) and messages[0].get("role") == "system" and "REPL" in str(messages[0].get("content"))


def _task(messages: list[dict[str, Any]]) -> str:
    """The agent's own task: the last "Question:" (the worked example's comes first)."""
    users = [str(m.get("content")) for m in messages if m.get("role") == "user"]
    asked = [text.split("Question: ", 1)[1].splitlines()[0] for text in users if "Question: " in text]
    return asked[-1] if asked else ""



def _repl(code: str) -> str:
    return f"```repl\n{code}\n```"


def _fanout_policy(code: str):
    """Root: run ``code`` (which prints RESULT {...}), then FINAL that line. Sub-calls echo 'ans:' + prompt."""

    def policy(messages: list[dict[str, Any]]) -> str:
        if not _is_agent(messages):
            return "ans:" + str(messages[-1].get("content"))
        task = _task(messages)
        if task.startswith("CHILD"):
            return _repl("FINAL('kid ' + context)")
        last = str(messages[-1].get("content"))
        if "RESULT " in last:
            return _repl("FINAL(RESULT_LINE)  # RESULT")
        return _repl(code)

    return policy


_LLM_CODE = """import time, json
prompts = [f'p{{i}}' for i in range({n})]
t = time.perf_counter()
replies = llm_query_batched(prompts)
dt = time.perf_counter() - t
ok = sum(1 for p, r in zip(prompts, replies) if r == 'ans:' + p)
RESULT_LINE = json.dumps({{'seconds': dt, 'answers_ok': ok}})
print('RESULT ' + RESULT_LINE)"""

_SPAWN_CODE = """import time, json
chunks = [f'c{{i}}' for i in range({n})]
t = time.perf_counter()
answers = rlm_query_batched(['CHILD'] * {n}, chunks)
dt = time.perf_counter() - t
ok = sum(1 for c, a in zip(chunks, answers) if a == 'kid ' + c)
RESULT_LINE = json.dumps({{'seconds': dt, 'answers_ok': ok}})
print('RESULT ' + RESULT_LINE)"""


def _config(server: Any, home: Path, *, concurrency: int, executor: str, **extra: Any) -> RLMConfig:
    return RLMConfig(model="openai/scripted", api_base=server.base_url, api_key="sk-bench", home=home,
                     max_concurrency=concurrency, max_llm_calls=100_000, max_iterations=5, lm_retries=1,
                     executor=executor, sandbox=SandboxConfig(cell_timeout_s=600), record_run=False, **extra)


def _run(code: str, *, latency_ms: float, concurrency: int, executor: str, **extra: Any) -> dict[str, Any]:
    from rlm.runner import run
    from rlm.testing import ScriptedServer

    with tempfile.TemporaryDirectory(prefix="rlm-bench-") as tmp, \
            ScriptedServer(policy=_fanout_policy(code), latency_ms=latency_ms) as server:
        home = Path(tmp)
        config = _config(server, home, concurrency=concurrency, executor=executor, **extra)
        if executor == "ray":
            _warm(config)
        doc = home / "doc.txt"
        doc.write_text("benchmark root context\n", encoding="utf-8")
        result = run("ROOT", doc, config)
        if result.status != "ok" or not result.answer:
            raise RuntimeError(f"benchmark run failed: {result.status} {result.error}")
        numbers = json.loads(result.answer)
        numbers.update(server_max_concurrency=server.max_concurrency(), requests=len(server.requests),
                       executor=executor)
        return numbers


def _warm(config: RLMConfig) -> None:
    """Start the session and, on every host, its LM client and sandbox zygotes at their default number (not timed).

    Nothing is pre-started to fit the scenario: a run's agents fork their workers from one zygote.
    """
    from rlm.agents.session import RaySession

    session = RaySession.get(config)
    session.ray.get([host.warm.remote(config) for host in session.hosts])


def measure_latency_bound(n: int = 1000, latency_ms: float = 500, concurrency: int = 64,
                          executor: str = "ray") -> dict[str, Any]:
    """1,000 ``llm_query_batched`` prompts at 500 ms with 64 in flight; ideal = ceil(n/c) * latency."""
    numbers = _run(_LLM_CODE.format(n=n), latency_ms=latency_ms, concurrency=concurrency, executor=executor)
    numbers.update(n=n, latency_ms=latency_ms, concurrency=concurrency,
                   ideal_s=-(-n // concurrency) * latency_ms / 1000)
    return numbers


def measure_cpu_bound(n: int = 1000, concurrency: int = 64, executor: str = "ray") -> dict[str, Any]:
    """The same fan-out at 0 ms latency: sub-calls per second on this machine."""
    numbers = _run(_LLM_CODE.format(n=n), latency_ms=0, concurrency=concurrency, executor=executor)
    numbers.update(n=n, concurrency=concurrency, calls_per_s=n / numbers["seconds"])
    return numbers


def measure_spawn(n: int = 200, latency_ms: float = 100, concurrency: int = 16,
                  executor: str = "ray") -> dict[str, Any]:
    """``n`` child agents via ``rlm_query_batched``, one iteration each, each in its own sandbox."""
    numbers = _run(_SPAWN_CODE.format(n=n), latency_ms=latency_ms, concurrency=concurrency, executor=executor)
    numbers.update(n=n, latency_ms=latency_ms, concurrency=concurrency,
                   ideal_s=-(-n // concurrency) * latency_ms / 1000)
    return numbers


def main() -> None:
    rows = [
        ("latency-bound: 1,000 llm_query_batched, 500 ms, 64 in flight", measure_latency_bound(), "seconds", 8.5),
        ("CPU-bound: 1,000 llm_query_batched, 0 ms, 64 in flight", measure_cpu_bound(), "calls_per_s", 600),
        ("spawn: 200 rlm_query_batched children, 100 ms, 16 in flight", measure_spawn(), "seconds", 1.5),
    ]
    lines = ["# Fan-out benchmarks", "",
             f"Machine: {os.cpu_count()} cores, {platform.python_version()}, load average "
             f"{os.getloadavg()[0]:.1f} at the end. Executor: Ray (embedded cluster, 2 agent hosts). "
             "Times are measured inside the root's cell around the one batched call; every answer is "
             "checked by content.", "",
             "| workload | result | target | answers ok | server max in flight |", "| --- | --- | --- | --- | --- |"]
    for name, numbers, key, target in rows:
        value = f"{numbers[key]:.2f} s" if key == "seconds" else f"{numbers[key]:.0f} calls/s"
        goal = f"<= {target} s" if key == "seconds" else f">= {target} calls/s"
        lines.append(f"| {name} | {value} | {goal} | {numbers['answers_ok']}/{numbers['n']} | "
                     f"{numbers['server_max_concurrency']} |")
    lines += ["", "Raw numbers:", "", "```json", json.dumps([r[1] for r in rows], indent=1), "```", ""]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
