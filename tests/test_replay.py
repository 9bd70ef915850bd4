"""Replay and fork: a recorded run re-executed from its records, with the real sandbox and run log.

Twenty scripted runs of different shapes (printed sets and dicts, sub-calls, batches, child agents
and batches of them, two levels deep) are each replayed: the same cells with the same outputs and
the same answer, and the scripted server receives no request. A replay whose cells print something
else stops at the first request it has no record of, and says where.
"""

from __future__ import annotations

import pytest
from conftest import first_user, repl, turn

from rlm import prompts
from rlm.events import CellExecuted, EventBus, RunStarted
from rlm.reruns import load_chain, recorded_outcome, rerun, workspace
from rlm.runlog import RunLog
from rlm.runner import run
from rlm.sessions_cli import compare_cells

ROOT_CELLS = [
    "words = context.split()\nprint(len(words), sorted(set(words))[:5])\nprint({w for w in set(words)})",
    "r = llm_query_batched([f'summarise part {j}: ' + context[j * 50:(j + 1) * 50] for j in range(4)])\n"
    "print(r)\nwords = r",
    "a = rlm_query('count the x', context=context[:200])\nprint(a)\nwords = [a]",
    "rs = rlm_query_batched(['part a', 'part b', 'part c'], contexts=[context[:100], context[100:200], "
    "context[200:300]])\nprint(rs)\nwords = rs",
    "import collections\nc = collections.Counter(context.split())\nprint(c.most_common(3), list(dict(c))[:4])\n"
    "s = llm_query('what is ' + str(c.most_common(1)))\nprint(s, {k for k in c})\nwords = [s]",
]


def child_note(messages) -> bool:
    return prompts.CHILD_NOTE in str(messages[0].get("content"))


def policy(messages):
    """Roots run ROOT_CELLS[question number % 5] then answer; children look and answer; sub-calls echo."""
    system = str(messages[0].get("content")) if messages else ""
    if messages[0].get("role") != "system" or "REPL" not in system:
        return f"ans:{len(messages[-1]['content'])}:{messages[-1]['content'][:12]}"
    if child_note(messages):
        if turn(messages) == 0:
            return repl("print(len(context), sorted(set(context.split()))[:3], {c for c in context[:40]})")
        if "count" in first_user(messages) and turn(messages) == 1:  # a grandchild, two levels deep
            return repl("g = rlm_query('look closer', context=context[:60])\nprint(g)")
        return repl("FINAL('child saw ' + str(len(context)))")
    number = int(first_user(messages).split("Question: Question ", 1)[1].split(":", 1)[0])
    if turn(messages) == 0:
        return repl(ROOT_CELLS[number % 5])
    if turn(messages) == 1:
        return repl(f"print(len(words), {number})\nresult = str(len(words)) + '-{number}'")
    return repl("FINAL(result)")


def document(number: int) -> str:
    return "".join(f"row {i} {'x' * (i % 7)} word{i % (number + 3)} tag{(i * number) % 11}\n" for i in range(60))


def replay(config, run_id):
    with RunLog(config.runlog_path) as log:
        chain = load_chain(log, run_id)
        recorded = recorded_outcome(log, run_id)
    cells: list[CellExecuted] = []
    started: list[RunStarted] = []
    bus = EventBus()
    bus.subscribe(lambda e: cells.append(e) if isinstance(e, CellExecuted) else None)
    bus.subscribe(lambda e: started.append(e) if isinstance(e, RunStarted) else None)
    with workspace(config.home) as workdir:
        result = rerun(chain, "replay", config, workdir, bus=bus)
    return result, compare_cells(recorded, cells, result), started[0], recorded


@pytest.mark.slow
def test_twenty_recorded_runs_replay_with_identical_cells_outputs_answers_and_no_calls(
        server_factory, make_config, text_file):
    server = server_factory(policy=policy)
    config = make_config(server, max_depth=2)
    for number in range(20):
        original = run(f"Question {number}: what is in it?", text_file(document(number), f"doc{number}.txt"), config)
        assert original.status == "ok", original.error
        sent = len(server.requests)
        result, report, started, recorded = replay(config, original.run_id)
        assert len(server.requests) == sent, number  # zero requests reached the model server
        assert report.startswith("identical"), (number, report)
        assert result.answer == original.answer and result.usage.paid_calls == 0
        assert result.usage.cache_hits == original.usage.llm_calls
        assert len(recorded["cells"]) >= 3
        assert (started.origin, started.parent_run_id) == ("replay", original.run_id)


def test_a_replay_whose_cells_print_something_else_stops_at_the_first_unrecorded_request(
        server_factory, make_config, text_file):
    server = server_factory(policy=policy)
    config = make_config(server)
    path = text_file(document(1))
    original = run("Question 1: what is in it?", path, config)
    path.write_text(document(2), encoding="utf-8")  # another input: a replay must refuse it
    with pytest.raises(Exception, match="changed since the run"):
        replay(config, original.run_id)
    path.write_text(document(1), encoding="utf-8")
    import os

    os.utime(path, ns=(0, 0))  # same bytes, another time: accepted by its hash (small files are hashed)
    result, report, _, _ = replay(config, original.run_id)
    assert report.startswith("identical"), report


def test_a_replay_diverges_at_the_call_whose_request_differs(server_factory, make_config, text_file):
    calls = {"n": 0}

    def clock_policy(messages):  # the first reply prints the time: no replay can match it
        if turn(messages) == 0:
            return repl("import time\nprint(time.time_ns())")
        return repl("FINAL('done')")

    server = server_factory(policy=clock_policy)
    config = make_config(server)
    original = run("What time is it?", text_file("some text"), config)
    sent = len(server.requests)
    result, report, _, _ = replay(config, original.run_id)
    assert len(server.requests) == sent and calls["n"] == 0
    assert result.status == "diverged" and report.startswith("diverged: diverged at call 2 (a0, iteration)")


def test_a_fork_replays_the_root_to_an_iteration_then_asks_the_new_question(server_factory, make_config,
                                                                            text_file):
    def fork_policy(messages):
        follow = [m for m in messages if "Next question (turn" in str(m.get("content"))]
        if follow:
            return repl("FINAL('forked: ' + str(step))")
        return repl(f"step = {turn(messages)}\nprint(step)") if turn(messages) < 3 else repl("FINAL(str(step))")

    server = server_factory(policy=fork_policy)
    config = make_config(server)
    original = run("Count the steps", text_file("abc"), config)
    assert original.answer == "2"
    sent = len(server.requests)
    with RunLog(config.runlog_path) as log:
        chain = load_chain(log, original.run_id)
    started: list[RunStarted] = []
    bus = EventBus()
    bus.subscribe(lambda e: started.append(e) if isinstance(e, RunStarted) else None)
    with workspace(config.home) as workdir:
        forked = rerun(chain, "fork", config, workdir, question="Which step were you at?", at=2, bus=bus)
    assert forked.answer == "forked: 1"  # the REPL as it was after iteration 2 (step = 1)
    assert len(server.requests) == sent + 1  # the replay of two iterations sent nothing
    follow_up = server.requests[-1].messages[-1]["content"]
    # the parent stopped on an output: the question rides on it (no two user turns in a row)
    assert follow_up.startswith("Output of your code")
    assert "\n\nNext question (turn 2 of this conversation): Which step were you at?" in follow_up
    assert (started[0].origin, started[0].parent_run_id, started[0].fork_at) == ("fork", original.run_id, 2)
