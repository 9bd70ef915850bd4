"""Sessions: turns that keep the root's REPL and history, live in one process or rebuilt from the records.

Against the scripted server over HTTP, the real sandbox and run log; the command-line test runs
``rlm ask --session`` as real processes, so its later turns rebuild the conversation by replaying
the earlier ones (the server must see no request during a rebuild).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import is_agent_prompt, repl

from rlm import prompts
from rlm.events import EventBus, LMCalled, RunStarted
from rlm.runlog import RunLog
from rlm.sessions import Session, load_state

DOC = "x marks the spot\n" * 30 + "no mark here\n" * 10
COUNT = DOC.count("x")
_TURN = re.compile(r"Next question \(turn (\d+) of this conversation\)")


def session_turn(messages):
    """(turn, replies the root already gave in this turn) of a root's request."""
    index, number = 0, 1
    for i, m in enumerate(messages):
        match = _TURN.search(str(m.get("content"))) if m.get("role") == "user" else None
        if match:
            index, number = i, int(match.group(1))
    if number == 1:
        index = prompts.task_index(messages) or 0
    return number, sum(1 for m in messages[index:] if m.get("role") == "assistant")


def policy(messages):
    """Turn 1 counts into `secret`; turns 2-4 read answers/history of the turn before; turn 5 uses `secret`."""
    if not is_agent_prompt(messages):
        return "sub"
    number, step = session_turn(messages)
    if number == 1:
        return repl("secret = context.count('x')\nnotes = ['t1']\nprint(secret)") if step == 0 else \
            repl("FINAL(f'found {secret}')")
    if number < 5:
        if step == 0:
            return repl(f"notes.append('t{number}')\nprint(answers[{number - 1}], len(history[{number - 1}]))")
        return repl(f"FINAL('turn {number} after ' + answers[{number - 1}])")
    return repl("FINAL(str(secret) + ' ' + ','.join(notes))")


EXPECTED = [f"found {COUNT}", f"turn 2 after found {COUNT}", f"turn 3 after turn 2 after found {COUNT}",
            f"turn 4 after turn 3 after turn 2 after found {COUNT}", f"{COUNT} t1,t2,t3,t4"]
QUESTIONS = ["How many x?", "And then?", "And then?", "And then?", "What did the first count find?"]


def test_five_turns_keep_the_repl_and_turn_five_uses_a_variable_of_turn_one(server_factory, make_config, text_file):
    server = server_factory(policy=policy)
    config = make_config(server)
    started: list[RunStarted] = []
    bus = EventBus()
    bus.subscribe(lambda e: started.append(e) if isinstance(e, RunStarted) else None)
    with Session("five", text_file(DOC), config) as session:
        answers = [session.ask(q, bus=bus).answer for q in QUESTIONS]
    assert answers == EXPECTED
    assert len(server.requests) == 9  # two root turns for questions 1-4, one for 5: nothing redone
    assert [(s.origin, s.session, s.turn) for s in started] == [("turn", "five", k) for k in range(1, 6)]
    assert [s.parent_run_id for s in started[1:]] == [s.run_id for s in started[:-1]]
    follow_up = server.requests[-1].messages[-1]["content"]
    assert follow_up.startswith("Next question (turn 5 of this conversation): What did the first count find?")
    assert f"- turn 1: 'How many x?' -> 'found {COUNT}'" in follow_up
    system = server.requests[0].messages[0]["content"]
    assert "`answers[k]`, `history[k]`" in system
    state = load_state(config.home, "five")
    assert [t["answer"] for t in state.turns] == EXPECTED and state.context["path"]
    assert oct(config.home.joinpath("sessions", "five.json").stat().st_mode & 0o777) == "0o600"


def test_a_session_reopened_elsewhere_is_rebuilt_from_its_records_without_calls(server_factory, make_config,
                                                                                text_file):
    server = server_factory(policy=policy)
    config = make_config(server)
    path = text_file(DOC)
    with Session("again", path, config) as first:
        assert [first.ask(q).answer for q in QUESTIONS[:2]] == EXPECTED[:2]
    sent = len(server.requests)
    calls: list[LMCalled] = []
    bus = EventBus()
    bus.subscribe(lambda e: calls.append(e) if isinstance(e, LMCalled) else None)
    with Session("again", path, config) as second:  # as another process would: nothing live
        assert second.ask(QUESTIONS[2], bus=bus).answer == EXPECTED[2]
        assert len(server.requests) == sent + 2  # the rebuild sent nothing; the new turn two requests
        assert [second.ask(q).answer for q in QUESTIONS[3:]] == EXPECTED[3:]  # `secret` of turn 1, rebuilt
    assert not any(c.cache_hit for c in calls)  # the new turn's calls were made, not replayed


def test_a_session_refuses_another_input_and_a_changed_file(server_factory, make_config, text_file, tmp_path):
    from rlm.errors import InputError

    server = server_factory(policy=policy)
    config = make_config(server)
    path = text_file(DOC)
    with Session("one-input", path, config) as session:
        session.ask(QUESTIONS[0])
    with pytest.raises(InputError, match="is about"):
        Session("one-input", text_file("other text", name="other.txt"), config)
    path.write_text(DOC + "more\n", encoding="utf-8")
    with pytest.raises(InputError, match="changed since"):
        Session("one-input", None, config)


@pytest.mark.slow
def test_rlm_ask_session_across_processes_rebuilds_with_zero_calls(server_factory, text_file, rlm_home):
    server = server_factory(policy=policy)
    path = text_file(DOC)
    env = {**os.environ, "RLM_HOME": str(rlm_home), "RLM_NO_SERVICE": "1", "RLM_MODEL": "openai/scripted",
           "RLM_API_BASE": server.base_url, "RLM_API_KEY": "sk-test"}
    sent = []
    for question in QUESTIONS:
        before = len(server.requests)
        done = subprocess.run([sys.executable, "-m", "rlm.cli", "ask", str(path), question, "--session", "cli",
                               "--json", "--quiet"], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        sent.append(len(server.requests) - before)
        assert json.loads(done.stdout)["answer"] == EXPECTED[len(sent) - 1]
    assert sent == [2, 2, 2, 2, 1]  # each process rebuilt the earlier turns without a request
    with RunLog(rlm_home / "rlm.duckdb") as log:
        turns = [r for r in log.list_runs() if r.session == "cli"]
    assert sorted(r.turn for r in turns) == [1, 2, 3, 4, 5] and all(r.origin == "turn" for r in turns)


def test_a_later_turn_of_a_session_replays_identically(server_factory, make_config, text_file):
    from rlm.events import CellExecuted
    from rlm.reruns import load_chain, recorded_outcome, rerun, workspace
    from rlm.sessions_cli import compare_cells

    server = server_factory(policy=policy)
    config = make_config(server)
    with Session("replayed", text_file(DOC), config) as session:
        results = [session.ask(q) for q in QUESTIONS[:3]]
    sent = len(server.requests)
    with RunLog(config.runlog_path) as log:
        chain = load_chain(log, results[2].run_id)
        recorded = recorded_outcome(log, results[2].run_id)
    assert [step.run.run_id for step in chain.steps] == [r.run_id for r in results[:2]]
    cells: list[CellExecuted] = []
    bus = EventBus()
    bus.subscribe(lambda e: cells.append(e) if isinstance(e, CellExecuted) else None)
    with workspace(config.home) as workdir:
        replayed = rerun(chain, "replay", config, workdir, bus=bus)
    assert compare_cells(recorded, cells, replayed).startswith("identical")
    assert replayed.answer == EXPECTED[2] and len(server.requests) == sent
