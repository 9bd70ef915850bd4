"""The TUI's parts without a screen: line index, swarm fold, settings, history, memory, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import first_user, is_agent_prompt, repl, turn
from test_tui_helpers import drive, synthetic_run, wait_for

from rlm.cli import build_parser
from rlm.config import RLMConfig
from rlm.errors import ConfigError
from rlm.events import EventBus
from rlm.runner import run
from rlm.tree import build_tree
from rlm.tui.app import RLMApp, answer_markdown
from rlm.tui.cli import config_for
from rlm.tui.history import QuestionHistory
from rlm.tui.lines import LineIndex, search_pattern
from rlm.tui.memory import MemoryEntry, MemoryPane, open_memory_source
from rlm.tui.settings import apply_settings, current_values
from rlm.tui.swarm import SwarmState

# --------------------------------------------------------------------------- line index


def _index(tmp_path: Path, data: bytes, chunk: int = 7) -> LineIndex:
    path = tmp_path / "doc.txt"
    path.write_bytes(data)
    index = LineIndex.open(path)
    while index.index_more(chunk):  # tiny chunks: lines straddle every boundary
        pass
    return index


def test_line_index_reads_lines_across_chunks_and_line_endings(tmp_path):
    index = _index(tmp_path, b"alpha\r\nbeta\n\ngamma beta\nlast line without newline")
    assert index.complete and index.line_count == 5
    assert [index.line(i) for i in range(5)] == ["alpha", "beta", "", "gamma beta", "last line without newline"]
    assert index.longest_line == len("last line without newline")
    assert index.line_of(index.line_start(3) + 4) == 3


def test_line_index_edge_cases(tmp_path):
    assert _index(tmp_path, b"").line_count == 0
    assert [_index(tmp_path, b"one\n").line(0)] == ["one"] and _index(tmp_path, b"one\n").line_count == 1
    bad = _index(tmp_path, "é\xff".encode("latin-1") + "naïve ü\n".encode())
    assert bad.line(0) == "\ufffd\ufffdnaïve ü"  # invalid UTF-8 replaced, never raised
    listing = LineIndex.from_text("a\nb\nc")
    listing.index_all()
    assert listing.line_count == 3 and listing.line(2) == "c"


def test_line_index_search_forwards_backwards_wrapping_and_smart_case(tmp_path):
    index = _index(tmp_path, "x Needle\nnaïve needle\nnothing\nNEEDLE end\n".encode())
    lower = search_pattern("needle")
    first = index.find(lower, 0)
    assert index.line_of(first.start()) == 0
    second = index.find(lower, first.start() + 1)
    assert index.line_of(second.start()) == 1 and index.column_of(second.start()) == len("naïve ")
    third = index.find(lower, second.start() + 1)
    assert index.line_of(third.start()) == 3
    assert index.find(lower, third.start() + 1).start() == first.start()  # wraps to the top
    assert index.find_before(lower, first.start()).start() == third.start()  # wraps to the bottom
    assert index.find_before(lower, third.start()).start() == second.start()
    exact = search_pattern("NEEDLE")  # a capital letter makes it case-sensitive
    assert index.line_of(index.find(exact, 0).start()) == 3 and index.find(search_pattern("absent"), 0) is None


def test_line_index_backward_search_crosses_windows(tmp_path, monkeypatch):
    monkeypatch.setattr("rlm.tui.lines.BACKWARD_WINDOW", 16)
    index = _index(tmp_path, b"target\n" + b"filler line\n" * 50 + b"target again\n", chunk=64)
    last = index.find_before(search_pattern("target"), index.size)
    assert index.line_of(last.start()) == 51
    assert index.line_of(index.find_before(search_pattern("target"), last.start()).start()) == 0


# --------------------------------------------------------------------------- swarm fold


def tree_policy(messages):
    if not is_agent_prompt(messages):
        return "sub answer"
    if "Question: CHILD" in first_user(messages):
        if turn(messages) == 0:
            return repl("s = llm_query('summarise ' + context)\nprint(s)")
        return repl("FINAL('child: ' + s)")
    if turn(messages) == 0:
        return repl("parts = rlm_query_batched(['CHILD', 'CHILD'], ['ctx one', 'ctx two'])\nprint(parts)")
    return repl("FINAL(' + '.join(parts))")


def test_swarm_fold_agrees_with_the_run_log_tree(server_factory, make_config, text_file):
    """Folding live events one by one gives what rlm.tree builds from the logged events."""
    server = server_factory(policy=tree_policy)
    bus = EventBus()
    live = SwarmState()
    bus.subscribe(live.apply)
    result = run("ROOT", text_file("some document\n" * 10), make_config(server, max_depth=1), bus=bus)
    assert result.status == "ok"
    from rlm.runlog import RunLog

    with RunLog(make_config(server).runlog_path) as log:
        graph = build_tree(log.events(result.run_id))
    assert set(live.agents) == set(graph.nodes) and len(live.agents) == 3
    for agent_id, view in live.agents.items():
        node = graph.nodes[agent_id]
        assert (view.status, view.depth, view.parent_id) == (node["status"], node["depth"], node["parent"])
        assert (view.input_tokens, view.output_tokens, view.llm_calls) == (
            node["input_tokens"], node["output_tokens"], node["llm_calls"])
        assert view.n_iterations == node["n_iterations"]
        assert [c.code for it in view.iterations for c in it.cells] == [
            c["code"] for it in node["iterations"] for c in it["cells"]]
    root = live.agents[live.root_id]
    assert root.iterations[0].children == [c for c in graph.successors(live.root_id)]
    child = live.agents[root.iterations[0].children[0]]
    assert [c.purpose for c in child.iterations[0].calls] == ["iteration", "llm_query"]  # its sub-call, in place
    assert live.status == "ok" and live.answer == result.answer


def test_swarm_fold_marks_agents_cut_off_by_the_end_of_the_run():
    events = synthetic_run(children=1)
    finished = [e for e in events if type(e).__name__ == "AgentFinished"]
    cut = [e for e in events if e not in finished]  # as if the process stopped them all
    state = SwarmState.from_events(cut)
    assert {a.status for a in state.agents.values()} == {"ok"}  # the RunFinished status
    assert state.agents["a0"].cost_usd == pytest.approx(0.0018)


# --------------------------------------------------------------------------- settings, history, answer


def test_settings_round_trip_and_validation(tmp_path):
    config = RLMConfig(model="openai/m", home=tmp_path)
    values = current_values(config)
    assert values["max_tokens"] == "" and values["cell_timeout_s"] == "120.0"
    values.update(model="anthropic/x", max_tokens="900", timeout_s="30", cell_timeout_s="5", sub_model="")
    new = apply_settings(config, values)
    assert (new.model, new.max_tokens, new.timeout_s, new.sandbox.cell_timeout_s) == ("anthropic/x", 900, 30.0, 5.0)
    assert new.sub_model is None and config.model == "openai/m"  # the old config is untouched
    with pytest.raises(ConfigError, match="max LM calls"):
        apply_settings(config, {**values, "max_llm_calls": "many"})
    with pytest.raises(ConfigError, match="a value is required"):
        apply_settings(config, {**values, "model": " "})
    with pytest.raises(ConfigError, match="timeout must be > 0"):
        apply_settings(config, {**values, "timeout_s": "0"})


def test_history_keeps_a_draft_skips_repeats_and_survives_a_corrupt_file(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text('"old"\nnot json\n42\n')
    history = QuestionHistory(path)
    assert history.entries == ["old"]
    history.add("new")
    history.add("new")
    assert history.entries == ["old", "new"]
    assert history.previous("typing") == "new" and history.previous("") == "old" and history.previous("") == "old"
    assert history.next() == "new" and history.next() == "typing"


def test_answer_markdown_makes_model_text_inert():
    text = answer_markdown("ok", "fine \x1b[31mred\x1b[0m", None)
    assert "\x1b" not in text and "\\x1b[31m" in text
    failed = answer_markdown("error", None, "boom ``` \x07")
    assert "The run ended: error" in failed and "```text" in failed and "\x07" not in failed
    assert "Best partial answer" in answer_markdown("max_llm_calls", "partial", None)


# --------------------------------------------------------------------------- memory pane


class ListMemory:
    namespace = "team"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.queries: list[str] = []

    def entries(self, kind=None, limit=200):
        if self.fail:
            raise RuntimeError("database is locked")
        return [MemoryEntry("m1", "memory", "grep for ERROR first"), MemoryEntry("d1", "doc", "deploy notes")]

    def search(self, query, limit=50):
        self.queries.append(query)
        return [e for e in self.entries() if query in e.text]


def test_memory_pane_lists_and_searches(tmp_path):
    memory = ListMemory()
    app = RLMApp(RLMConfig(model="openai/m", home=tmp_path), memory=memory)

    async def scenario(pilot):
        pane = app.query_one(MemoryPane)
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: len(pane.shown) == 2, what="the listing")
        pane.query_one("#memory-search").focus()
        await pilot.press(*"deploy", "enter")
        await wait_for(pilot, lambda: [e.entry_id for e in pane.shown] == ["d1"], what="the search")
        assert memory.queries == ["deploy"]

    drive(app, scenario)


def test_memory_pane_shows_a_failing_store_instead_of_crashing(tmp_path):
    app = RLMApp(RLMConfig(model="openai/m", home=tmp_path), memory=ListMemory(fail=True))

    async def scenario(pilot):
        body = app.query_one("#memory-body")
        await wait_for(pilot, lambda: "memory unavailable" in str(body.content), what="the error")
        assert "database is locked" in str(body.content)

    drive(app, scenario)


def test_no_memory_pane_without_a_memory_store(tmp_path):
    config = RLMConfig(model="openai/m", home=tmp_path)
    assert open_memory_source(config) is None  # no memory database under RLM_HOME
    app = RLMApp(config)

    async def scenario(pilot):
        assert not app.query(MemoryPane)

    drive(app, scenario)


# --------------------------------------------------------------------------- CLI


def test_tui_sub_command_takes_the_model_and_limit_options(tmp_path):
    args = build_parser().parse_args(["tui", "notes.md", "--model", "openai/x", "--max-depth", "2",
                                      "--cell-timeout", "9", "--memory", "team"])
    assert args.func.__module__ == "rlm.tui.cli" and args.path == "notes.md"
    config = config_for(args, {"RLM_HOME": str(tmp_path), "RLM_API_BASE": "http://127.0.0.1:1/v1"})
    assert (config.model, config.max_depth, config.sandbox.cell_timeout_s) == ("openai/x", 2, 9.0)
    assert config.api_base == "http://127.0.0.1:1/v1" and config.memory_namespace == "team"
    bare = build_parser().parse_args(["tui", "--no-memory"])
    assert bare.path is None and config_for(bare, {"RLM_HOME": str(tmp_path)}).memory_namespace is None


def test_memory_source_reads_the_real_swarm_memory_store(tmp_path):
    store_module = pytest.importorskip("rlm.memory.store", reason="swarm memory is not installed")
    with store_module.MemoryStore(store_module.memory_path(tmp_path), semantic=False) as store:
        store.add("harbour", "Lamp times are local.", kind="memory", tags=["lamp"])
        store.add("harbour", "Keepers: Penn and Hale.", kind="doc", title="keepers")
    source = open_memory_source(RLMConfig(model="openai/m", home=tmp_path))  # the first namespace
    assert source is not None and source.namespace == "harbour"
    assert [(e.kind, e.text, e.tags) for e in source.entries()] == [
        ("memory", "Lamp times are local.", ("lamp",)), ("doc", "keepers: Keepers: Penn and Hale.", ())]
    assert [e.kind for e in source.search("keepers")][:1] == ["doc"]
    other = open_memory_source(RLMConfig(model="openai/m", home=tmp_path, memory_namespace="elsewhere"))
    assert other is not None and other.entries() == []
