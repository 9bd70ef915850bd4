"""The TUI driven headless by Textual's pilot, against the scripted model server, the real
sandbox and a real run log: ask and see the answer, the live tree, agent details, cancel,
past runs, errors, search, history and settings."""

from __future__ import annotations

import socket
import time

import pytest
from conftest import first_user, is_agent_prompt, repl, turn
from test_tui_helpers import ask, drive, synthetic_run, wait_for

from rlm.runlog import RunLog
from rlm.runner import run
from rlm.tui.app import RLMApp
from rlm.tui.document import DocumentPane, DocumentView
from rlm.tui.history import QuestionHistory
from rlm.tui.widgets import AgentDetail, AnswerPane, QuestionInput, StatusBar, SwarmTree

DOC = "".join(f"line {i}: the harbour log, ship {i % 7}\n" for i in range(500))


def fan_out_policy(messages):
    """Root fans out to three sub-agents with rlm_query_batched; each counts its chunk."""
    if not is_agent_prompt(messages):
        return "plain"
    if "Question: CHUNK" in first_user(messages):
        return repl("CHILD_MARK = 1\nFINAL('chunk of ' + str(len(context)))")
    if turn(messages) == 0:
        return repl("parts = rlm_query_batched(['CHUNK'] * 3, [context[:10], context[10:30], context[30:60]])\n"
                    "print(parts)")
    return repl("FINAL('sizes: ' + ' / '.join(parts))")


def test_open_ask_and_see_the_answer(server_factory, make_config, text_file):
    server = server_factory(script=[repl("print(len(context))"), repl("FINAL('The answer is **42**.')")])
    app = RLMApp(make_config(server), text_file(DOC), memory=None)

    async def scenario(pilot):
        pane = app.query_one(DocumentPane)
        await wait_for(pilot, lambda: pane.index is not None and pane.index.complete, what="the document")
        assert isinstance(app.focused, QuestionInput)  # started with a PATH: type at once
        assert pane.index.line_count == 500 and pane.index.line(3) == "line 3: the harbour log, ship 3"
        await ask(pilot, "What is the answer?")
        await wait_for(pilot, lambda: app.last_result is not None, what="the run")
        assert app.last_result.status == "ok", app.last_result.error
        assert "The answer is **42**." in app.query_one(AnswerPane).source
        stats = app.query_one(StatusBar).stats
        assert stats.status == "ok" and stats.llm_calls == 2 and stats.tokens > 0
        assert app.query_one(SwarmTree).agent_count == 1
        detail = app.query_one(AgentDetail).text()
        assert "print(len(context))" in detail and str(len(DOC)) in detail  # code and its output

    drive(app, scenario)
    with RunLog(app.config.runlog_path) as log:
        (summary,) = log.list_runs()
    assert summary.status == "ok" and summary.question == "What is the answer?"


def test_closing_the_app_during_a_run_stops_the_run(server_factory, make_config, text_file):
    """Not only ctrl+q: however the app closes (here the pilot's own shutdown, as after an error
    in the UI), the run is told to stop. Before, the process waited for all 50 iterations."""
    server = server_factory(policy=looping, latency_ms=300)
    app = RLMApp(make_config(server, max_iterations=50), text_file(DOC), memory=None)

    async def scenario(pilot):
        await ask(pilot, "Loop forever")
        await wait_for(pilot, lambda: any(it.cells for a in app.state.agents.values() for it in a.iterations),
                       what="a first cell")
        assert app.running

    drive(app, scenario)  # returns once the app and its run thread are done
    with RunLog(app.config.runlog_path) as log:
        (summary,) = log.list_runs()
    assert summary.status == "cancelled"
    assert summary.llm_calls < 10


def test_a_selection_still_queued_when_the_app_closes_is_dropped(server_factory, make_config, text_file):
    """Selecting a tree node posts a message; one dispatched after the screen's widgets are
    gone (the app closing) must not raise (it did, intermittently, at the end of a test)."""
    app = RLMApp(make_config(server_factory(script=[])), text_file(DOC), memory=None)

    async def scenario(pilot):
        assert app.query_one(AgentDetail).agent_id is None  # mounted, nothing selected yet

    drive(app, scenario)
    app.on_swarm_tree_agent_selected(SwarmTree.AgentSelected("agent-that-was-never-shown"))
    assert app._selected == "agent-that-was-never-shown"


@pytest.mark.slow
def test_sub_agents_appear_in_the_tree_and_selecting_one_shows_its_code(server_factory, make_config, text_file):
    server = server_factory(policy=fan_out_policy)
    app = RLMApp(make_config(server, max_depth=1), text_file(DOC), memory=None)

    async def scenario(pilot):
        await ask(pilot, "How big are the chunks?")
        await wait_for(pilot, lambda: app.last_result is not None, what="the run")
        assert app.last_result.answer == "sizes: chunk of 10 / chunk of 20 / chunk of 30"
        tree = app.query_one(SwarmTree)
        assert tree.agent_count == 4
        root = app.state.root_id
        children = app.state.children(root)
        assert len(children) == 3
        assert all(tree.node_for(c).parent is tree.node_for(root) for c in children)
        assert all(app.state.agents[c].depth == 1 and app.state.agents[c].status == "ok" for c in children)
        # Children start in any order, but their ids follow the batch: a1 got the first chunk.
        by_id = sorted(children, key=lambda c: int(c.lstrip("a")))
        assert [app.state.agents[c].answer for c in by_id] == ["chunk of 10", "chunk of 20", "chunk of 30"]
        assert "rlm_query_batched" in app.query_one(AgentDetail).text()  # the root is shown first
        tree.focus()
        await pilot.pause()
        tree.move_cursor(tree.node_for(root))
        await pilot.press("down")  # onto the first sub-agent
        await wait_for(pilot, lambda: app.query_one(AgentDetail).agent_id == children[0], what="selection")
        detail = app.query_one(AgentDetail).text()
        assert "CHILD_MARK = 1" in detail and "rlm_query_batched" not in detail
        assert f"answer: {app.state.agents[children[0]].answer}" in detail

    drive(app, scenario)


def looping(messages):
    return repl(f"print('step {turn(messages)}')") if is_agent_prompt(messages) else "sub"


@pytest.mark.slow
def test_cancel_stops_the_run_promptly_and_it_is_recorded_as_cancelled(server_factory, make_config, text_file):
    server = server_factory(policy=looping, latency_ms=300)
    app = RLMApp(make_config(server, max_iterations=50), text_file(DOC), memory=None)
    timings = {}

    async def scenario(pilot):
        await ask(pilot, "Loop forever")
        await wait_for(pilot, lambda: any(it.cells for a in app.state.agents.values() for it in a.iterations),
                       what="a first cell")
        assert app.running and app.query_one(StatusBar).stats.status == "running"
        await pilot.press("ctrl+x")
        # the key takes effect at once; the run may even have stopped before press() returns
        assert app.query_one(StatusBar).stats.status == ("cancelling" if app.running else "cancelled")
        timings["cancel"] = await wait_for(pilot, lambda: not app.running, timeout=20, what="the cancel")
        assert app.last_result.status == "cancelled"
        assert app.query_one(StatusBar).stats.status == "cancelled"
        assert "cancelled" in app.query_one(AnswerPane).source
        assert app.state.agents[app.state.root_id].status == "cancelled"

    drive(app, scenario)
    # one LM call (300 ms) or one short cell may still finish after the key press
    assert timings["cancel"] < 3.0
    with RunLog(app.config.runlog_path) as log:
        (summary,) = log.list_runs()
    assert summary.status == "cancelled"
    assert summary.llm_calls < 20


@pytest.mark.slow
def test_past_runs_reopen_with_their_tree(server_factory, make_config, text_file):
    server = server_factory(policy=fan_out_policy)
    config = make_config(server, max_depth=1)
    result = run("How big are the chunks?", text_file(DOC), config)
    assert result.status == "ok"
    app = RLMApp(config, memory=None)

    async def scenario(pilot):
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: getattr(app.screen, "run_ids", None) == [result.run_id], what="runs list")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.state.run_id == result.run_id, what="the past run")
        assert app.query_one(SwarmTree).agent_count == 4
        assert "sizes: chunk of 10 / chunk of 20 / chunk of 30" in app.query_one(AnswerPane).source
        stats = app.query_one(StatusBar).stats
        assert stats.run_id == result.run_id and stats.llm_calls == result.usage.llm_calls
        assert "rlm_query_batched" in app.query_one(AgentDetail).text()

    drive(app, scenario)


def test_a_bad_path_is_shown_and_asking_without_a_document_is_refused(make_config, tmp_path, server_factory):
    server = server_factory(script=[])
    app = RLMApp(make_config(server), tmp_path / "missing.txt", memory=None)

    async def scenario(pilot):
        pane = app.query_one(DocumentPane)
        await wait_for(pilot, lambda: pane.error is not None, what="the open error")
        assert "missing.txt" in pane.error and "No such file" in pane.error
        await ask(pilot, "anything?")
        assert not app.running and app.doc_path is None
        assert any("Open a document first" in n for n in app.notices)

    drive(app, scenario)
    assert server.requests == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_model_ends_the_run_with_an_error_shown(make_config, text_file, server_factory):
    server = server_factory(script=[])
    config = make_config(server, api_base=f"http://127.0.0.1:{_closed_port()}/v1", lm_retries=0)
    app = RLMApp(config, text_file(DOC), memory=None)

    async def scenario(pilot):
        await ask(pilot, "Is anyone there?")
        await wait_for(pilot, lambda: app.last_result is not None, what="the failed run")
        assert app.last_result.status == "error" and app.last_result.error
        source = app.query_one(AnswerPane).source
        assert "The run ended: error" in source and "Error:" in source
        assert app.query_one(StatusBar).stats.status == "error"
        # still alive and usable: the question box takes the next question
        await pilot.press("x")
        assert app.query_one(QuestionInput).value == "x"

    drive(app, scenario)


def test_a_run_that_cannot_start_is_shown_not_raised(make_config, tmp_path, server_factory):
    server = server_factory(script=[])
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    app = RLMApp(make_config(server), empty, memory=None)

    async def scenario(pilot):
        await ask(pilot, "What is in it?")
        await wait_for(pilot, lambda: app.last_error is not None, what="the input error")
        assert "empty" in app.last_error
        assert "empty" in app.query_one(AnswerPane).source
        assert app.query_one(StatusBar).stats.status == "error" and not app.running

    drive(app, scenario)


def test_search_jumps_between_matches_in_a_large_document(tmp_path, make_config, server_factory):
    lines = [f"row {i}" + (" NEEDLE here" if i in (1500, 90_000, 150_000) else "") for i in range(200_000)]
    path = tmp_path / "big.log"
    path.write_text("\n".join(lines) + "\n")
    app = RLMApp(make_config(server_factory(script=[])), path, memory=None)

    async def scenario(pilot):
        pane = app.query_one(DocumentPane)
        await wait_for(pilot, lambda: pane.index is not None and pane.index.complete, what="indexing")
        view = app.query_one(DocumentView)
        assert view.virtual_size.height == 200_000
        await pilot.press("ctrl+f")

        async def step(*keys):  # searches run in a thread: wait for each to land
            for key in keys:
                done = pane.searches_done
                await pilot.press(key)
                await wait_for(pilot, lambda done=done: pane.searches_done > done, what=f"search after {key}")

        await pilot.press(*"needle")  # smart case: lower case matches NEEDLE
        await step("enter")
        assert pane.match_line == 1500 and view.current == (1500, len("row 1500 "))
        assert view.top_line <= 1500 < view.top_line + view.size.height  # scrolled into view
        await step("enter")
        assert pane.match_line == 90_000
        await step("enter", "enter")
        assert pane.match_line == 1500  # wrapped around
        await step("shift+f3")
        assert pane.match_line == 150_000  # backwards, wrapping to the bottom
        await pilot.press("escape")
        assert isinstance(app.focused, DocumentView)
        await step("N")
        assert pane.match_line == 90_000
        await pilot.press("ctrl+f", *" nowhere")
        await step("enter")
        assert pane.match_line is None and "no match" in str(pane.query_one("#doc-search-status").content)
        started = time.perf_counter()
        for _ in range(20):
            await pilot.press("pagedown")
        assert time.perf_counter() - started < 10  # drawing cost does not grow with the file

    drive(app, scenario)


def test_question_history_with_up_and_down(tmp_path, make_config, server_factory):
    history = QuestionHistory(tmp_path / "history.jsonl")
    history.add("first question")
    history.add("second question")
    app = RLMApp(make_config(server_factory(script=[])), memory=None, history=history)

    async def scenario(pilot):
        box = app.query_one(QuestionInput)
        await pilot.press(*"draft")
        await pilot.press("up")
        assert box.value == "second question"
        await pilot.press("up", "up")
        assert box.value == "first question"
        await pilot.press("down")
        assert box.value == "second question"
        await pilot.press("down")
        assert box.value == "draft"

    drive(app, scenario)
    assert QuestionHistory(tmp_path / "history.jsonl").entries == ["first question", "second question"]


def test_settings_change_the_next_runs_config_and_reject_bad_values(make_config, server_factory):
    app = RLMApp(make_config(server_factory(script=[])), memory=None)

    async def scenario(pilot):
        await pilot.press("f2")
        await wait_for(pilot, lambda: app.screen.query("#set-max_depth"), what="settings")
        depth = app.screen.query_one("#set-max_depth")
        await pilot.press("ctrl+f")  # the main screen's keys are off while a dialog is open
        assert not app.query_one(DocumentPane).has_class("searching")
        depth.value = "-1"
        await pilot.press("ctrl+s")
        assert "max_depth must be >= 0" in str(app.screen.query_one("#settings-error").content)
        depth.value = "3"
        app.screen.query_one("#set-max_tokens").value = "5000"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.config.max_depth == 3 and app.config.max_tokens == 5000

    drive(app, scenario)


def test_a_hundred_agents_stay_responsive(make_config, server_factory):
    """300 sub-agents' events arrive in one batch: one redraw, and keys still answer at once."""
    app = RLMApp(make_config(server_factory(script=[])), memory=None)
    events = synthetic_run(children=300)

    async def scenario(pilot):
        app.running = True  # feed the live path exactly as the run's thread would
        for event in events:
            app._inbox.put(event)
        started = time.perf_counter()
        app._drain()
        took = time.perf_counter() - started
        app.running = False
        assert app.query_one(SwarmTree).agent_count == 301
        assert took < 5.0, took
        started = time.perf_counter()
        await pilot.press(*"still typing")
        assert app.query_one(QuestionInput).value == "still typing"
        assert time.perf_counter() - started < 5.0

    drive(app, scenario)


def test_open_a_document_from_inside_the_app(tmp_path, make_config, server_factory):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.md").write_text("# A\n")
    (tmp_path / "notes" / "b.txt").write_text("bee\n")
    app = RLMApp(make_config(server_factory(script=[])), memory=None)

    async def scenario(pilot):
        pane = app.query_one(DocumentPane)
        assert app.doc_path is None and "No document" in str(pane.query_one("#doc-header").content)
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: app.screen.query("#open-path"), what="the open dialog")
        await ask(pilot, str(tmp_path / "notes"))
        await wait_for(pilot, lambda: pane.index is not None and pane.index.complete, what="the listing")
        assert app.doc_path == tmp_path / "notes" and isinstance(app.focused, QuestionInput)
        listing = [pane.index.line(i) for i in range(pane.index.line_count)]
        assert "a.md  (4 bytes)" in listing and "b.txt  (4 bytes)" in listing

    drive(app, scenario)


def test_a_second_question_is_a_follow_up_that_keeps_the_repl(server_factory, make_config, text_file):
    def policy(messages):
        if str(messages[-1]["content"]).startswith("Next question"):
            return repl("FINAL('still ' + str(kept) + ' after ' + answers[1])")
        return repl("kept = len(context)\nprint(kept)") if turn(messages) == 0 else repl("FINAL('counted')")

    server = server_factory(policy=policy)
    app = RLMApp(make_config(server), text_file(DOC), memory=None)

    async def scenario(pilot):
        await ask(pilot, "How long is it?")
        await wait_for(pilot, lambda: app.last_result is not None, what="the first turn")
        first = app.last_result
        await ask(pilot, "And still?")
        await wait_for(pilot, lambda: app.last_result is not first, what="the follow-up")
        assert app.last_result.answer == f"still {len(DOC)} after counted"
        assert app.query_one(StatusBar).stats.turn == 2
        await pilot.press("ctrl+n")
        assert app.conversation is None and app.turns == 0

    drive(app, scenario)
    with RunLog(app.config.runlog_path) as log:
        turns = sorted((r.turn, r.origin) for r in log.list_runs())
    assert turns == [(1, "turn"), (2, "turn")]
