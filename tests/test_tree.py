"""The run tree (networkx), its JSON form, its terminal rendering, and text sanitizing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlm.events import (
    AgentFinished,
    AgentStarted,
    CellExecuted,
    Event,
    IterationFinished,
    LMCalled,
    RunFinished,
    RunStarted,
)
from rlm.runlog import RunLog
from rlm.textutil import sanitize_for_terminal, truncate_text
from rlm.tree import build_tree, critical_path, render_tree, subtree_cost, subtree_usage, tree_to_dict

RUN = "run-tree-1"
LONG_OUTPUT = "x" * 1000
ANSI_OUTPUT = "\x1b[31mred\x1b[0m \x1b]0;pwned title\x07 over\rwrite \u202eevil"


def call(agent: str, ts: float, call_id: str, purpose: str = "iteration", **kw: object) -> LMCalled:
    fields: dict[str, object] = {"input_tokens": 100, "output_tokens": 10, "cost_usd": 0.01, "latency_s": 0.5}
    fields.update(kw)
    return LMCalled(run_id=RUN, agent_id=agent, ts=ts, call_id=call_id, model="m", role="x", purpose=purpose, **fields)  # type: ignore[arg-type]  # the numbers, as one dict


def cell(agent: str, ts: float, iteration: int, code: str, stdout: str = "", **kw: object) -> CellExecuted:
    return CellExecuted(run_id=RUN, agent_id=agent, ts=ts, iteration=iteration, index=0, code=code, stdout=stdout, **kw)  # type: ignore[arg-type]  # the fields, as one dict


def started(agent: str, ts: float, parent: str | None, depth: int) -> AgentStarted:
    return AgentStarted(
        run_id=RUN,
        agent_id=agent,
        ts=ts,
        parent_id=parent,
        depth=depth,
        model=f"model-{depth}",
        prompt=f"task of {agent}",
        node_id="host-a",
    )


def finished(agent: str, ts: float, iterations: int, answer: str) -> AgentFinished:
    return AgentFinished(
        run_id=RUN, agent_id=agent, ts=ts, status="ok", answer=answer, iterations=iterations, duration_s=0.0
    )


def iteration_done(agent: str, ts: float, iteration: int) -> IterationFinished:
    return IterationFinished(
        run_id=RUN, agent_id=agent, ts=ts, iteration=iteration, reply=f"reply {iteration}", n_cells=1
    )


def depth2_events() -> list[Event]:
    """root (depth 0) -> child (1) -> grandchild (2), plus a second child after the first iteration."""
    return [
        RunStarted(run_id=RUN, ts=100.0, question="What is in the file?", model="model-0", sub_model="model-1"),
        started("root", 100.0, None, 0),
        # root iteration 1: its turn, a cell that spawns `child` and does two llm_query calls
        call("root", 101.0, "c1"),
        started("child", 101.5, "root", 1),
        call("child", 102.0, "c2"),
        started("grand", 102.5, "child", 2),
        call("grand", 103.0, "c3", cost_usd=None),  # unknown price, tokens used
        call("grand", 103.2, "c4", cost_usd=None, input_tokens=0, output_tokens=0, ok=False, error="boom"),
        finished("grand", 104.0, 0, "grand answer"),
        cell("child", 104.5, 1, "print(rlm_query('deeper'))", "grand answer\n"),
        iteration_done("child", 104.6, 1),
        finished("child", 105.0, 1, "child answer"),
        call("root", 105.5, "c5", purpose="llm_query"),
        call("root", 105.6, "c6", purpose="llm_query"),
        cell("root", 106.0, 1, "a = rlm_query('sub task')\nb = llm_query('x')\nprint(a)", LONG_OUTPUT),
        iteration_done("root", 106.1, 1),
        # root iteration 2: output with terminal escapes, then FINAL
        call("root", 107.0, "c7"),
        cell("root", 107.5, 2, "print(colored)", ANSI_OUTPUT, stderr="warn\x1b[2J", final=True),
        iteration_done("root", 107.6, 2),
        # a late child not started inside any iteration
        started("late", 108.0, "root", 1),
        finished("late", 108.5, 0, "late answer"),
        call("root", 109.0, "c8", purpose="final"),
        finished("root", 110.0, 2, "the answer"),
        RunFinished(run_id=RUN, ts=110.0, status="ok", answer="the answer", input_tokens=700, output_tokens=70,
                    llm_calls=8, cost_usd=None, iterations=4, depth_reached=2, duration_s=10.0),
    ]  # fmt: skip


@pytest.fixture
def graph():
    return build_tree(depth2_events())


# -- structure ------------------------------------------------------------------


def test_nodes_edges_and_run_attributes(graph) -> None:
    assert set(graph.nodes) == {"root", "child", "grand", "late"}
    assert set(graph.edges) == {("root", "child"), ("child", "grand"), ("root", "late")}
    assert graph.graph["root"] == "root"
    assert graph.graph["run_id"] == RUN
    assert graph.graph["question"] == "What is in the file?"
    assert graph.graph["status"] == "ok"
    assert graph.graph["depth_reached"] == 2
    assert graph.graph["started_at"] == 100.0 and graph.graph["finished_at"] == 110.0


def test_agent_attributes(graph) -> None:
    root, child, grand = (graph.nodes[n] for n in ("root", "child", "grand"))
    assert (root["depth"], root["parent"], root["model"], root["node_id"]) == (0, None, "model-0", "host-a")
    assert (child["depth"], child["parent"]) == (1, "root")
    assert (grand["depth"], grand["parent"]) == (2, "child")
    assert root["status"] == "ok" and root["answer"] == "the answer"
    assert root["n_iterations"] == 2 and child["n_iterations"] == 1
    assert root["started_at"] == 100.0 and root["finished_at"] == 110.0 and root["duration_s"] == 10.0
    # own usage only: root made c1, c5, c6, c7, c8
    assert (root["input_tokens"], root["output_tokens"], root["llm_calls"]) == (500, 50, 5)
    assert root["cost_usd"] == pytest.approx(0.05)


def test_iterations_cells_calls_and_children(graph) -> None:
    iterations = graph.nodes["root"]["iterations"]
    assert [it["iteration"] for it in iterations] == [1, 2, None]
    first, second, trailing = iterations
    assert first["finished"] and first["reply"] == "reply 1"
    assert [c["call_id"] for c in first["lm_calls"]] == ["c1", "c5", "c6"]
    assert first["cells"][0]["code"].startswith("a = rlm_query")
    assert first["children"] == ["child"]
    assert second["cells"][0]["final"] is True and second["children"] == []
    assert not trailing["finished"] and [c["purpose"] for c in trailing["lm_calls"]] == ["final"]
    assert graph.nodes["child"]["iterations"][0]["children"] == ["grand"]


def test_cost_rule(graph) -> None:
    # grand: c3 has unknown cost with tokens -> unknown; c4 unknown but zero tokens would be free.
    assert graph.nodes["grand"]["cost_usd"] is None
    assert graph.nodes["child"]["cost_usd"] == pytest.approx(0.01)
    assert subtree_cost(graph, "child") is None
    assert subtree_cost(graph, "late") == 0.0
    assert subtree_usage(graph, "child") == {"input_tokens": 200, "output_tokens": 20, "llm_calls": 3}


def test_zero_token_call_with_unknown_cost_is_free() -> None:
    events = [started("a", 1.0, None, 0), call("a", 2.0, "x", cost_usd=None, input_tokens=0, output_tokens=0, ok=False)]
    assert build_tree(events).nodes["a"]["cost_usd"] == 0.0


def test_critical_path(graph) -> None:
    assert critical_path(graph) == ["root", "child", "grand"]


def test_partial_stream_of_a_running_run() -> None:
    events = depth2_events()[:6]  # up to the grandchild's start
    graph = build_tree(events)
    assert graph.graph["status"] == "running"
    assert graph.nodes["grand"]["status"] == "running"
    assert graph.nodes["grand"]["duration_s"] is None
    assert "status=running" in render_tree(graph)


# -- JSON -----------------------------------------------------------------------


def test_tree_to_dict_is_nested_and_json_serialisable(graph) -> None:
    data = tree_to_dict(graph)
    text = json.dumps(data)
    assert json.loads(text) == data
    assert data["run"]["run_id"] == RUN
    root = data["root"]
    assert root["agent_id"] == "root"
    assert [c["agent_id"] for c in root["children"]] == ["child", "late"]
    assert [c["agent_id"] for c in root["children"][0]["children"]] == ["grand"]
    assert data["detached"] == []


def test_tree_survives_the_run_log(tmp_path: Path) -> None:
    events = depth2_events()
    with RunLog(tmp_path / "rlm.duckdb") as log:
        for event in events:
            log.record(event)
        stored = log.events(RUN[:6])
    assert tree_to_dict(build_tree(stored)) == tree_to_dict(build_tree(events))


# -- rendering -----------------------------------------------------------------------


def test_render_tree_shows_code_headers_and_truncation(graph) -> None:
    text = render_tree(graph, max_output=100)
    assert "a = rlm_query('sub task')" in text
    assert "print(colored)" in text
    assert "x" * 100 + "... [900 more chars]" in text
    assert "x" * 101 not in text
    header = next(line for line in text.splitlines() if "agent root" in line)
    for part in (
        "depth=0",
        "model=model-0",
        "status=ok",
        "iterations=2",
        "500 in / 50 out",
        "time=10.0s",
        "node=host-a",
    ):
        assert part in header
    assert "llm_query: 2 calls" in text


def test_render_tree_nests_children_under_their_iteration(graph) -> None:
    lines = render_tree(graph).splitlines()

    def index(fragment: str) -> int:
        return next(i for i, line in enumerate(lines) if fragment in line)

    def indent(fragment: str) -> int:
        line = lines[index(fragment)]
        return len(line) - len(line.lstrip())

    assert index("- iteration 1") < index("agent child") < index("- iteration 2")
    assert indent("agent grand") > indent("agent child") > indent("agent root")
    # `late` started outside any iteration: listed under the agent, after its iterations
    assert index("after the iterations") < index("agent late")
    assert indent("agent late") == indent("- iteration 1")


def test_render_tree_escapes_terminal_control_characters(graph) -> None:
    text = render_tree(graph, max_output=10_000)
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text and "\u202e" not in text
    assert "\\x1b[31mred" in text and "\\x1b]0;pwned title\\x07" in text
    assert "over\\rwrite" in text and "\\u202eevil" in text
    assert "warn\\x1b[2J" in text


# -- textutil -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text\n\tindented", "plain text\n\tindented"),
        ("\x1b[1;31mbold\x1b[0m", "\\x1b[1;31mbold\\x1b[0m"),
        ("\x1b]8;;http://x\x1b\\link", "\\x1b]8;;http://x\\x1b\\link"),
        ("line\r\nnext", "line\nnext"),
        ("progress\roverwritten", "progress\\roverwritten"),
        ("\x9b31m c1 csi", "\\x9b31m c1 csi"),
        ("del\x7f nul\x00", "del\\x7f nul\\x00"),
        ("abc\u202edcba\u2066x\u2069", "abc\\u202edcba\\u2066x\\u2069"),
        ("unicode é 😀 ok", "unicode é 😀 ok"),
    ],
)
def test_sanitize_for_terminal(raw: str, shown: str) -> None:
    assert sanitize_for_terminal(raw) == shown


def test_sanitize_single_line() -> None:
    assert sanitize_for_terminal("a\nb\tc\r\nd", single_line=True) == "a\\nb\\tc\\nd"


def test_truncate_text() -> None:
    assert truncate_text("abcdef", 10) == "abcdef"
    assert truncate_text("abcdef", 4) == "abcd... [2 more chars]"
    assert truncate_text("abc", -1) == "... [3 more chars]"


def test_render_shows_a_reply_that_had_no_code():
    events = [
        RunStarted(run_id=RUN, ts=1.0, question="q", model="m", sub_model="m"),
        started("root", 1.0, None, 0),
        call("root", 2.0, "c1"),
        IterationFinished(run_id=RUN, agent_id="root", ts=2.1, iteration=1, reply="I will think \x1b[2J first.",
                          n_cells=0),
        finished("root", 3.0, 1, "done"),
    ]
    text = render_tree(build_tree(events))
    assert "reply (no code)" in text and "I will think" in text
    assert "\x1b" not in text
