"""Sessions against independent questions, and resume after a kill: what a conversation saves, what a crash costs.

Part 1, **ten questions about one 100 MB log**, asked as the shell user asks them:

* ``independent`` -- ten ``rlm ask LOG QUESTION`` processes (no service), each
  starting from nothing; once with the sub-call cache on (temperature 0, the
  default there), once with ``--no-cache``;
* ``independent-repeat`` -- the same ten processes, measured the second time the
  ten questions are asked (cache on): every call has a record in the run log;
* ``chat`` -- one ``rlm chat LOG`` process, the ten questions on its standard
  input: one session, kept live in that process;
* ``service`` -- ``rlm serve`` running, ten ``rlm ask LOG QUESTION --session S``
  processes: the session lives in the service;
* ``rebuild`` -- ten ``rlm ask ... --session S`` processes without a service:
  each rebuilds the conversation by replaying the earlier turns from the run log
  (zero model calls, but every earlier cell runs again).

The model is the scripted server with :class:`AnalystPolicy`, a fixed trajectory
of what a model does with such a log: without an index in its REPL it looks at
the start, splits the lines, builds an index (levels, services, errors per
service: a pass over 1.2 million lines), asks four sub-calls about samples, and
answers from the index; with ``index`` already among its REPL variables (a
follow-up) it skips to the sub-calls and the answer. Measured per condition:
the requests the server received (paid calls), the calls answered from records,
input and output tokens (the server's count: a token per 4 characters), the
wall time from the first process start to the last exit, and whether every
answer is right.

Part 2, **resume after kill -9**: a run of 10 root turns, each with a batch of 4
sub-calls (50 calls), is killed (SIGKILL, real ``rlm ask`` process) once the
server has answered 25%, 50% or 75% of them; ``rlm resume`` finishes it. Measured:
the calls the server answered before the kill, how many of those the killed
process had recorded (a reply that arrives as the process dies is paid but never
read), how many were asked again (the goal is 0 for the recorded ones: the
rest cannot be saved), the calls the resume paid for, and whether its answer is
the uninterrupted run's.

Run it: ``python -m rlm.benchmarks.sessions [--size-mb 100] [--out FILE]`` (takes minutes: the
log is built first; all of it runs on this machine against loopback).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlm.records import canonical_json
from rlm.testing import ScriptedServer

__all__ = ["AnalystPolicy", "QUESTIONS", "make_log", "measure_session", "measure_resume", "main"]

REPORT = Path(__file__).resolve().parent / "reports" / "sessions.md"
LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
SERVICES = ("auth", "billing", "search", "cart", "mailer", "gateway")
#: (question, the index expression that answers it).
QUESTIONS = [
    ("How many ERROR lines are there?", "index['levels']['ERROR']"),
    ("How many WARN lines are there?", "index['levels']['WARN']"),
    ("Which service logged the most errors?", "index['errors'].most_common(1)[0][0]"),
    ("How many errors did auth log?", "index['errors']['auth']"),
    ("How many lines did billing log?", "index['services']['billing']"),
    ("How many DEBUG lines are there?", "index['levels']['DEBUG']"),
    ("Which service logged the fewest lines?", "index['services'].most_common()[-1][0]"),
    ("How many errors did the gateway log?", "index['errors']['gateway']"),
    ("How many lines are there in all?", "index['lines']"),
    ("How many errors did search and cart log together?", "index['errors']['search'] + index['errors']['cart']"),
]
BUILD_INDEX = """\
import collections
index = {'levels': collections.Counter(), 'services': collections.Counter(), 'errors': collections.Counter(),
         'lines': 0}
for line in lines:
    parts = line.split(' ', 3)
    if len(parts) < 3:
        continue
    index['lines'] += 1
    index['levels'][parts[1]] += 1
    index['services'][parts[2]] += 1
    if parts[1] == 'ERROR':
        index['errors'][parts[2]] += 1
print(index['lines'], dict(index['levels']))"""


def make_log(path: Path, size_mb: int) -> Counter[str]:
    """A deterministic log of about ``size_mb`` MB; returns what the questions ask (for checking answers)."""
    facts: Counter[str] = Counter()
    target = size_mb * 1_000_000
    written = 0
    with path.open("w", encoding="utf-8") as out:
        i = 0
        while written < target:
            level, service = LEVELS[(i * 7 + i // 13) % len(LEVELS)], SERVICES[(i * 5 + i // 7) % len(SERVICES)]
            line = f"2025-03-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d} {level} {service} " \
                   f"request {i:09d} took {(i * 37) % 997} ms user=u{i % 5000:04d} path=/api/v1/{service}/{i % 97}\n"
            out.write(line)
            written += len(line)
            facts["lines"] += 1
            facts[f"level:{level}"] += 1
            facts[f"service:{service}"] += 1
            if level == "ERROR":
                facts[f"error:{service}"] += 1
            i += 1
    return facts


def expected_answers(facts: Counter[str]) -> list[str]:
    """The right answer to each of :data:`QUESTIONS`, from the log's own counts."""
    errors = Counter({k.split(":", 1)[1]: v for k, v in facts.items() if k.startswith("error:")})
    services = Counter({k.split(":", 1)[1]: v for k, v in facts.items() if k.startswith("service:")})
    return [str(facts["level:ERROR"]), str(facts["level:WARN"]), errors.most_common(1)[0][0], str(errors["auth"]),
            str(services["billing"]), str(facts["level:DEBUG"]), services.most_common()[-1][0],
            str(errors["gateway"]), str(facts["lines"]), str(errors["search"] + errors["cart"])]


_FOLLOW = re.compile(r"Next question \(turn \d+ of this conversation\): (.*)", re.S)


class AnalystPolicy:
    """The scripted model of part 1 (see the module docstring)."""

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        system = str(messages[0].get("content")) if messages else ""
        if messages[0].get("role") != "system" or "REPL" not in system:
            return "routine"  # a sub-call classifying sample lines
        start, question = self._question(messages)
        step = sum(1 for m in messages[start:] if m.get("role") == "assistant")
        has_index = any("index (dict" in str(m.get("content")) for m in messages[:start])
        plan = ([] if has_index else [
            "print(len(context))\nprint(context[:300])",
            "lines = context.splitlines()\nprint(len(lines), lines[:3])",
            BUILD_INDEX,
        ]) + [
            "samples = [l for l in lines[:40000:10000]]\n"
            f"labels = llm_query_batched([{question!r} + ' Is this line routine? ' + s for s in samples])\n"
            "print(labels)",
            f"FINAL(str({self._expression(question)}))",
        ]
        return "```repl\n" + plan[min(step, len(plan) - 1)] + "\n```"

    @staticmethod
    def _question(messages: list[dict[str, Any]]) -> tuple[int, str]:
        for index in range(len(messages) - 1, -1, -1):
            content = str(messages[index].get("content"))
            match = _FOLLOW.search(content)
            if messages[index].get("role") == "user" and match:
                return index, match.group(1).split("\n", 1)[0]
        for index, message in enumerate(messages):
            content = str(message.get("content"))
            if message.get("role") == "user" and content.startswith("Question: "):
                return index, content[len("Question: "):].split("\n", 1)[0]
        return 1, ""

    @staticmethod
    def _expression(question: str) -> str:
        return next((expression for text, expression in QUESTIONS if text == question), "'unknown question'")


@dataclass
class Condition:
    """One way of asking the ten questions, measured."""

    name: str
    wall_s: float = 0.0
    requests: int = 0
    cache_hits: int = 0
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    correct: int = 0
    answers: list[str | None] = field(default_factory=list)
    per_question_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _env(home: Path, server: ScriptedServer, service: bool = False) -> dict[str, str]:
    env = {**os.environ, "RLM_HOME": str(home), "RLM_MODEL": "openai/scripted", "RLM_API_BASE": server.base_url,
           "RLM_API_KEY": "sk-bench", "RLM_EXECUTOR": "local"}
    env.pop("RAY_ADDRESS", None)
    if not service:
        env["RLM_NO_SERVICE"] = "1"
    return env


def _rlm(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rlm.cli", *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=3600)


def _totals(condition: Condition, home: Path, since: float) -> None:
    """Calls, hits and tokens of every run the condition made since ``since``, from its run log."""
    from rlm.runlog import RunLog

    with RunLog(home / "rlm.duckdb") as log:
        for run in log.list_runs(limit=1000):
            if (run.started_at or 0.0) < since:
                continue
            condition.llm_calls += run.llm_calls
            condition.cache_hits += run.cache_hits or 0
            condition.input_tokens += run.input_tokens
            condition.output_tokens += run.output_tokens


@contextmanager
def _serving(env: dict[str, str], home: Path) -> Iterator[None]:
    from rlm.service.paths import find_service

    process = subprocess.Popen([sys.executable, "-m", "rlm.cli", "serve"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while find_service(home) is None:
            if process.poll() is not None:
                raise RuntimeError("rlm serve did not start")
            time.sleep(0.1)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)


def measure_session(name: str, log_path: Path, expected: list[str], base: Path) -> Condition:
    """Ask the ten questions one way (``name``: a condition of part 1)."""
    home = base / name
    condition = Condition(name)
    with ScriptedServer(policy=AnalystPolicy()) as server:
        env = _env(home, server, service=name == "service")
        common = ["--temperature", "0", "--quiet"]
        if name == "independent-repeat":  # the first round, not measured: it fills the run log
            for question, _ in QUESTIONS:
                _rlm("ask", str(log_path), question, "--json", *common, env=env)
        first_round = len(server.requests)
        since = time.time()
        started = time.monotonic()
        if name == "chat":
            done = _rlm("chat", str(log_path), "--session", "bench", "--temperature", "0",
                        stdin="".join(q + "\n" for q, _ in QUESTIONS), env=env)
            condition.answers = [line for line in done.stdout.splitlines() if line.strip()]
            if done.returncode != 0:
                condition.errors.append(done.stderr[-500:])
        else:
            with _serving(env, home) if name == "service" else _nothing():
                started = time.monotonic()
                for question, _ in QUESTIONS:
                    extra = {"independent": [], "independent-repeat": [], "independent-no-cache": ["--no-cache"]}.get(
                        name, ["--session", "bench"])
                    asked = time.monotonic()
                    done = _rlm("ask", str(log_path), question, "--json", *common, *extra, env=env)
                    condition.per_question_s.append(time.monotonic() - asked)
                    answer = json.loads(done.stdout)["answer"] if done.returncode == 0 else None
                    condition.answers.append(answer)
                    if done.returncode != 0:
                        condition.errors.append(done.stderr[-500:])
        condition.wall_s = time.monotonic() - started
        condition.requests = len(server.requests) - first_round
    condition.correct = sum(1 for got, want in zip(condition.answers, expected, strict=False) if got == want)
    _totals(condition, home, since)
    return condition


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# -- part 2: resume after kill -9 ------------------------------------------------------------------
RESUME_TURNS = 10
RESUME_BATCH = 4


def resume_policy(messages: list[dict[str, Any]]) -> Any:
    """A root of :data:`RESUME_TURNS` turns, each a batch of :data:`RESUME_BATCH` sub-calls (50 ms each)."""
    system = str(messages[0].get("content")) if messages else ""
    if messages[0].get("role") != "system" or "REPL" not in system:
        return {"content": f"seen {len(str(messages[-1].get('content')))}", "delay_ms": 50}
    step = sum(1 for m in messages if m.get("role") == "assistant")
    if step >= RESUME_TURNS:
        return "```repl\nFINAL(str(sum(totals)))\n```"
    prefix = "totals = []\n" if step == 0 else ""
    return (f"```repl\n{prefix}r = llm_query_batched([f'part {step}.{{i}} ' + context[{step} * 10:{step} * 10 + 40] "
            f"for i in range({RESUME_BATCH})])\ntotals.append(sum(len(x) for x in r))\nprint(totals)\n```")


@dataclass
class ResumeResult:
    """One kill and resume."""

    kill_at: float
    total_calls: int
    finished_before_kill: int
    recorded_before_kill: int
    repeated: int
    resume_paid: int
    resume_hits: int
    same_answer: bool
    resume_wall_s: float


def measure_resume(kill_at: float, doc: Path, base: Path) -> ResumeResult:
    """Kill a run once ``kill_at`` of its calls are answered, resume it, count what was asked twice."""
    total = RESUME_TURNS * (RESUME_BATCH + 1) + 1
    home = base / f"resume-{int(kill_at * 100)}"
    with ScriptedServer(policy=resume_policy) as reference:
        whole = _rlm("ask", str(doc), "Sum the parts", "--json", "--quiet", env=_env(base / "reference", reference))
        expected = json.loads(whole.stdout)["answer"]
    with ScriptedServer(policy=resume_policy) as server:
        env = _env(home, server)
        asked = subprocess.Popen([sys.executable, "-m", "rlm.cli", "ask", str(doc), "Sum the parts", "--quiet"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while sum(1 for r in server.requests if r.responded_at is not None) < kill_at * total:
            time.sleep(0.005)
        time.sleep(0.05)  # what was answered reaches the client's journal
        asked.send_signal(signal.SIGKILL)
        asked.wait()
        finished = {canonical_json(r.messages) for r in server.requests if r.responded_at is not None}
        before = len(server.requests)
        run_id, recorded = _killed_run(home)
        started = time.monotonic()
        done = _rlm("resume", run_id, "--json", "--quiet", env=env)
        wall = time.monotonic() - started
        after = server.requests[before:]
        result = json.loads(done.stdout)
    return ResumeResult(kill_at, total, len(finished), recorded,
                        sum(1 for r in after if canonical_json(r.messages) in finished), len(after),
                        int(result["usage"].get("cache_hits", 0)), result["answer"] == expected, wall)


def _killed_run(home: Path) -> tuple[str, int]:
    """The killed run's id and how many of its calls it had recorded (successful ``LMCalled`` events)."""
    from rlm.runlog import RunLog

    with RunLog(home / "rlm.duckdb") as log:
        run_id = next(r.run_id for r in log.list_runs() if r.status == "running")
        return run_id, sum(1 for call in log.lm_calls(run_id) if call.ok)


# -- the report ----------------------------------------------------------------------------------
def report(conditions: list[Condition], resumes: list[ResumeResult], size_mb: int,
           load: tuple[float, float]) -> str:
    lines = ["# Sessions and resume", "",
             f"`python -m rlm.benchmarks.sessions --size-mb {size_mb}`; {platform.machine()}, "
             f"{os.cpu_count()} cores (shared: load average {load[0]:.1f} at the start, {load[1]:.1f} at the end), "
             f"Python {platform.python_version()}; scripted model on loopback "
             "(see the module docstring for the trajectory it follows).", "",
             f"## Ten questions about one {size_mb} MB log", "",
             "| condition | right answers | requests to the model (paid) | answered from records | input tokens "
             "| output tokens | wall time |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in conditions:
        lines.append(f"| {c.name} | {c.correct} of {len(QUESTIONS)} | {c.requests} | {c.cache_hits} | "
                     f"{c.input_tokens:,} | {c.output_tokens:,} | {c.wall_s:.1f} s |")
    lines += ["", "Per question (wall seconds, process start to exit):", ""]
    for c in conditions:
        if c.per_question_s:
            lines.append(f"- {c.name}: " + ", ".join(f"{s:.1f}" for s in c.per_question_s))
    for c in conditions:
        for error in c.errors:
            lines.append(f"- {c.name} error: `{error.strip()[:300]}`")
    lines += ["", "## Resume after kill -9", "",
              "| killed at | calls of the whole run | answered by the server before the kill | recorded by the "
              "killed run | asked again after resume | recorded ones not answered from their records | "
              "paid by the resume | answered from records | same answer | resume wall time |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in resumes:
        lines.append(f"| {r.kill_at:.0%} | {r.total_calls} | {r.finished_before_kill} | {r.recorded_before_kill} | "
                     f"{r.repeated} ({r.repeated / max(r.finished_before_kill, 1):.0%}) | "
                     f"{r.recorded_before_kill - r.resume_hits} | {r.resume_paid} | "
                     f"{r.resume_hits} | {'yes' if r.same_answer else 'NO'} | {r.resume_wall_s:.1f} s |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--only", default="independent,independent-no-cache,independent-repeat,chat,service,rebuild")
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="rlm-bench-sessions-") as tmp:
        base = Path(tmp)
        log_path = base / "app.log"
        expected = expected_answers(make_log(log_path, args.size_mb))
        conditions = []
        for name in args.only.split(","):
            condition = measure_session(name, log_path, expected, base)
            print(f"{name}: {condition.correct}/{len(QUESTIONS)} right, {condition.requests} requests, "
                  f"{condition.wall_s:.1f} s", file=sys.stderr)
            conditions.append(condition)
        doc = base / "short.txt"
        doc.write_text("".join(f"line {i}\n" for i in range(200)), encoding="utf-8")
        resumes = [measure_resume(fraction, doc, base) for fraction in (0.25, 0.5, 0.75)]
    text = report(conditions, resumes, args.size_mb, (load_at_start, os.getloadavg()[0]))
    args.out.write_text(text, encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps({"conditions": [asdict(c) for c in conditions],
                                                         "resumes": [asdict(r) for r in resumes]}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
