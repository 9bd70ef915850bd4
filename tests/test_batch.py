"""`rlm batch`: concurrency, resume, per-task failure and the result format, on an embedded Ray cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import first_user, is_agent_prompt, repl, turn

from rlm.agents.batch import BatchJob, ProgressLine, read_tasks
from rlm.config import SandboxConfig
from rlm.errors import InputError

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RESULT_KEYS = {"id", "answer", "status", "usage", "cost_usd", "run_id", "error", "duration_s", "position", "score"}


@pytest.fixture(scope="module")
def embedded_ray():
    """One embedded single-node cluster for the module, started the way the CLI starts it."""
    from rlm.agents.cluster import ensure_ray
    from rlm.agents.session import RaySession
    from rlm.config import RLMConfig

    ray = ensure_ray(RLMConfig(executor="ray"))
    yield ray
    RaySession.shutdown_current()
    ray.shutdown()


def answer_policy(messages):
    """Every task answers with its question reversed in one iteration."""
    if not is_agent_prompt(messages):
        return "unused"
    question = first_user(messages).split("Question: ", 1)[1].splitlines()[0]
    return repl(f"FINAL({question[::-1]!r} + ' / ' + context[:5])")


def write_tasks(path: Path, tasks: list[dict]) -> Path:
    path.write_text("".join(json.dumps(t) + "\n" for t in tasks), encoding="utf-8")
    return path


def results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def batch_config(embedded_ray, make_config):
    def make(server, **overrides):
        return make_config(server, executor="ray", ray_hosts_per_node=1, sandbox=SandboxConfig(cell_timeout_s=60),
                           **overrides)

    return make


def test_tasks_run_concurrently_and_every_result_is_written(server_factory, batch_config, tmp_path):
    server = server_factory(policy=answer_policy, latency_ms=400)
    tasks = write_tasks(tmp_path / "tasks.jsonl",
                        [{"id": f"t{i}", "question": f"question {i}", "context": f"ctx-{i}-tail"} for i in range(6)])
    out = tmp_path / "out" / "results.jsonl"
    seen = []
    stats = BatchJob(read_tasks(tasks), batch_config(server), out, concurrency=3,
                     progress=lambda s: seen.append(s.running)).run()
    rows = results(out)
    assert sorted(r["id"] for r in rows) == [f"t{i}" for i in range(6)]
    for row in rows:
        i = row["id"][1:]
        assert set(row) == RESULT_KEYS
        assert row["status"] == "ok" and row["error"] is None
        assert row["answer"] == f"{i} noitseuq / ctx-{i}"
        assert row["usage"]["llm_calls"] == 1 and row["usage"]["input_tokens"] > 0
        assert row["run_id"]
    assert server.max_concurrency() == 3  # three tasks in flight at once, never more
    assert stats.done == 6 and stats.failed == 0
    assert max(seen) == 3
    assert "6/6 done" in ProgressLine.render(stats)
    # The embedded cluster's agent hosts run at the driver's priority, not at Ray's default nice 15.
    from rlm.agents.session import RaySession

    session = RaySession.current()
    assert session is not None and session.host_info
    assert {os.getpriority(os.PRIO_PROCESS, info["pid"]) for info in session.host_info} == {os.getpriority(
        os.PRIO_PROCESS, 0)}


def test_a_failing_task_is_recorded_and_the_batch_goes_on(server_factory, batch_config, tmp_path):
    server = server_factory(policy=answer_policy)
    good = tmp_path / "good.txt"
    good.write_text("file context", encoding="utf-8")
    tasks = write_tasks(tmp_path / "tasks.jsonl", [
        {"id": "missing", "question": "q", "context_path": "nope/absent.txt"},
        {"id": "file", "question": "abc", "context_path": "good.txt"},
        {"id": 7, "question": "xyz", "context": "inline", "max_iterations": 3},
    ])
    out = tmp_path / "results.jsonl"
    stats = BatchJob(read_tasks(tasks), batch_config(server), out, concurrency=2).run()
    rows = {r["id"]: r for r in results(out)}
    assert rows["missing"]["status"] == "error" and rows["missing"]["run_id"] is None
    assert "absent.txt" in rows["missing"]["error"]
    assert rows["file"]["answer"] == "cba / file "
    assert rows["7"]["answer"] == "zyx / inlin"
    assert stats.failed == 1 and stats.done == 3


def test_a_rerun_resumes_skipping_finished_ids(server_factory, batch_config, tmp_path):
    server = server_factory(policy=answer_policy)
    specs = [{"id": f"r{i}", "question": f"q{i}", "context": "c"} for i in range(5)]
    out = tmp_path / "results.jsonl"
    BatchJob(read_tasks(write_tasks(tmp_path / "a.jsonl", specs[:3])), batch_config(server), out).run()
    assert len(server.requests) == 3
    with open(out, "a", encoding="utf-8") as torn:  # a crash mid-write leaves a torn last line
        torn.write('{"id": "r3", "ans')
    job = BatchJob(read_tasks(write_tasks(tmp_path / "b.jsonl", specs)), batch_config(server), out)
    assert [t.id for t in job.pending] == ["r3", "r4"]
    stats = job.run()
    assert len(server.requests) == 5 and stats.skipped == 3 and stats.done == 2
    ids = [r["id"] for r in (json.loads(line) for line in out.read_text().splitlines() if line.endswith("}"))]
    assert sorted(ids) == [f"r{i}" for i in range(5)]


def test_cancelled_tasks_are_not_written(server_factory, batch_config, tmp_path):
    """What Ctrl-C does: running tasks are stopped (status cancelled) and left for the resume."""
    def two_turns(messages):
        return repl("print('looking')") if turn(messages) == 0 else repl("FINAL('too late')")

    server = server_factory(policy=two_turns, latency_ms=1500)
    out = tmp_path / "results.jsonl"
    job = BatchJob(read_tasks(write_tasks(tmp_path / "t.jsonl", [{"id": "slow", "question": "q", "context": "c"}])),
                   batch_config(server), out)
    import threading

    threading.Timer(1.0, job._interrupt).start()
    job.run()
    assert out.read_text() == ""
    assert len(server.requests) == 1 and job.pending[0].id == "slow"


@pytest.mark.parametrize(("lines", "message"), [
    (['{"id": "a", "question": "q", "context": "c"}', "{not json"], "line 2: not valid JSON"),
    (['{"id": "a", "question": "q", "context": "c"}', '{"id": "a", "question": "q2", "context": "c"}'],
     "duplicate task id 'a' (first on line 1)"),
    (['{"id": "a", "question": "q"}'], "line 1: give exactly one of 'context_path' and 'context'"),
    (['{"id": "a", "question": "q", "context": "c", "colour": 1}'], "line 1: unknown keys ['colour']"),
])
def test_bad_task_files_are_clear_errors(tmp_path, rlm_home, lines, message):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        read_tasks(tasks)
    done = subprocess.run([sys.executable, "-m", "rlm.cli", "batch", str(tasks), "--out", str(tmp_path / "o.jsonl"),
                           "--model", "openai/x", "--api-base", "http://127.0.0.1:9/v1"],
                          capture_output=True, text=True, env={**os.environ, "RLM_HOME": str(rlm_home)}, timeout=120)
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_batch_writes_results_and_a_progress_line(server_factory, tmp_path, rlm_home):
    server = server_factory(policy=answer_policy)
    tasks = write_tasks(tmp_path / "tasks.jsonl", [{"id": i, "question": f"n{i}", "context": "cli"} for i in range(3)])
    out = tmp_path / "results.jsonl"
    done = subprocess.run([sys.executable, "-m", "rlm.cli", "batch", str(tasks), "--out", str(out), "--concurrency",
                           "2", "--model", "openai/scripted", "--api-base", server.base_url, "--executor", "local"],
                          capture_output=True, text=True, env={**os.environ, "RLM_HOME": str(rlm_home)}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(r["answer"] for r in results(out)) == ["0n / cli", "1n / cli", "2n / cli"]
    assert "3/3 done" in done.stderr and "0 failed" in done.stderr


def test_a_batch_with_memory_learns_across_its_tasks_and_reports_per_position(server_factory, tmp_path, rlm_home):
    """Every task shares one memory store: what the first task's reflection stored is in the next tasks' prompts."""
    seen_memory: list[bool] = []

    def policy(messages):
        if str(messages[0].get("content", "")).startswith("You maintain the long-term memory"):
            return ('```json\n[{"op": "add", "kind": "memory", "title": "counting", '
                    '"text": "Count the word with str.count."}]\n```')
        if not is_agent_prompt(messages):
            return "unused"
        seen_memory.append("Count the word with str.count." in str(messages[0]["content"]))
        return repl("FINAL(str(context.count('needle')))")

    server = server_factory(policy=policy)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": f"t{i}", "question": "How many needles?", "context": "needle " * i,
                                         "expected": str(i)}) + "\n" for i in range(1, 5)))
    out, report = tmp_path / "results.jsonl", tmp_path / "report.md"
    env = {**os.environ, "RLM_HOME": str(rlm_home), "RLM_EXECUTOR": "local"}
    done = subprocess.run([sys.executable, "-m", "rlm.cli", "batch", str(tasks), "--out", str(out), "--concurrency",
                           "1", "--model", "openai/scripted", "--api-base", server.base_url, "--memory", "needles",
                           "--reflect", "always", "--report", str(report), "-q"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = sorted(results(out), key=lambda r: r["position"])
    assert [(r["position"], r["score"]) for r in rows] == [(0, 1.0), (1, 1.0), (2, 1.0), (3, 1.0)]
    assert seen_memory == [False, True, True, True]  # learnt after the first task, used by the others
    text = report.read_text()
    assert "| position | id | status | score | tokens | LM calls | cost (USD) |" in text
    assert "Overall score: 4 of 4." in text
