"""The recursion tree of one run, rebuilt from its event stream.

:func:`build_tree` turns the events of a run (from :meth:`rlm.runlog.RunLog.events`
or collected live) into a :class:`networkx.DiGraph` with one node per agent and
an edge ``parent -> child`` per sub-agent. :func:`tree_to_dict` makes it
JSON-able, :func:`render_tree` prints it for ``rlm show RUN_ID``.

Node attributes (key = agent id):

``agent_id, depth, parent, model, prompt, node_id, context_info``
    from ``AgentStarted`` (``None`` for an agent only seen through later events).
``status, answer, error``
    from ``AgentFinished``; ``status`` is ``"running"`` until then.
``iterations``
    list of dicts ``{iteration, reply, cells, lm_calls, children, started_at,
    finished_at, duration_s, finished}``; ``cells`` holds ``{index, code, stdout,
    stderr, error, duration_s, final, restarted, ts}``, ``lm_calls`` the agent's
    own model calls made during the iteration (its turn and its ``llm_query``
    sub-calls) and ``children`` the ids of sub-agents started during it. Calls
    made after the last finished iteration (e.g. the forced final answer) go
    to a trailing entry with ``finished: False``.
``n_iterations``
    the count reported by ``AgentFinished``, else the finished iterations seen.
``input_tokens, output_tokens, llm_calls, cost_usd``
    the agent's **own** usage, summed over its ``LMCalled`` events (sub-agents
    excluded; see :func:`subtree_usage` / :func:`subtree_cost`).
``started_at, finished_at, duration_s``
    UNIX seconds and seconds.

Cost rule: an agent's ``cost_usd`` is the sum of its calls' costs; a call whose
cost is unknown (``None``) makes the total ``None`` unless it used no tokens at
all (a call that failed before the provider counted anything costs nothing).
A subtree's cost is ``None`` if any agent in it has cost ``None``.

Sub-agents are attributed to the iteration that was open in their parent when
their ``AgentStarted`` arrived (events are in emission order, and a parent
waits inside a cell while its children start), else to the parent iteration
whose time span contains the child's start, else to the parent agent itself.

Graph attributes (``graph.graph``) carry the run: ``run_id, question, model,
sub_model, config, context_info, started_at`` (``RunStarted``), ``finished_at,
status, answer, input_tokens, output_tokens, llm_calls, cost_usd, iterations,
depth_reached, duration_s, error`` (``RunFinished``; totals over the whole
tree) and ``root``, the id of the root agent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import networkx as nx

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
from rlm.textutil import sanitize_for_terminal, truncate_text

__all__ = [
    "agent_cost",
    "build_tree",
    "critical_path",
    "deployment_totals",
    "render_tree",
    "subtree_cost",
    "subtree_usage",
    "tree_to_dict",
]

_RUN_KEYS = (
    "run_id", "question", "model", "sub_model", "config", "context_info", "started_at",
    "finished_at", "status", "answer", "input_tokens", "output_tokens", "llm_calls", "cost_usd",
    "iterations", "depth_reached", "duration_s", "error", "root", "cache_hits", "origin", "parent_run_id",
    "session", "turn", "fork_at",
)  # fmt: skip
_RUN_FINISHED_KEYS = (
    "status", "answer", "input_tokens", "output_tokens", "llm_calls", "cost_usd",
    "iterations", "depth_reached", "duration_s", "error", "cache_hits",
)  # fmt: skip


# --------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------


def _new_agent(agent_id: str) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "depth": None,
        "parent": None,
        "model": None,
        "prompt": None,
        "node_id": None,
        "context_info": {},
        "status": "running",
        "answer": None,
        "error": None,
        "iterations": [],
        "n_iterations": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "llm_calls": 0,
        "cost_usd": 0.0,
        "started_at": None,
        "finished_at": None,
        "duration_s": None,
        "_reported_iterations": None,
    }


def _new_iteration(number: int | None, ts: float) -> dict[str, Any]:
    return {
        "iteration": number,
        "reply": None,
        "cells": [],
        "lm_calls": [],
        "children": [],
        "started_at": ts,
        "finished_at": None,
        "duration_s": None,
        "finished": False,
    }


class _TreeBuilder:
    """Folds events into the graph; one handler per event type."""

    def __init__(self) -> None:
        self.graph: nx.DiGraph = nx.DiGraph(**{key: None for key in _RUN_KEYS})
        self.open: dict[str, dict[str, Any]] = {}  # agent id -> its iteration in progress
        self.handlers: dict[type[Event], Callable[[Any], None]] = {
            RunStarted: self.run_started,
            RunFinished: self.run_finished,
            AgentStarted: self.agent_started,
            AgentFinished: self.agent_finished,
            LMCalled: self.lm_called,
            CellExecuted: self.cell_executed,
            IterationFinished: self.iteration_finished,
        }

    def add(self, event: Event) -> None:
        handler = self.handlers.get(type(event))
        if handler is not None:
            handler(event)

    # -- helpers ------------------------------------------------------------

    def node(self, agent_id: str) -> dict[str, Any]:
        if agent_id not in self.graph:
            self.graph.add_node(agent_id, **_new_agent(agent_id))
        node: dict[str, Any] = self.graph.nodes[agent_id]
        return node

    def open_iteration(self, agent_id: str, ts: float, number: int | None = None) -> dict[str, Any]:
        """The agent's iteration in progress; a new one if none or if ``number`` differs."""
        current = self.open.get(agent_id)
        if current is not None and (number is None or current["iteration"] in (None, number)):
            if current["iteration"] is None:
                current["iteration"] = number
            return current
        current = _new_iteration(number, ts)
        self.node(agent_id)["iterations"].append(current)
        self.open[agent_id] = current
        return current

    # -- handlers -----------------------------------------------------------

    def run_started(self, e: RunStarted) -> None:
        self.graph.graph.update(
            run_id=e.run_id,
            question=e.question,
            model=e.model,
            sub_model=e.sub_model,
            config=dict(e.config),
            context_info=dict(e.context_info),
            started_at=e.ts,
            status=self.graph.graph["status"] or "running",
            origin=e.origin,
            parent_run_id=e.parent_run_id,
            session=e.session,
            turn=e.turn,
            fork_at=e.fork_at,
        )

    def run_finished(self, e: RunFinished) -> None:
        self.graph.graph.update({key: getattr(e, key) for key in _RUN_FINISHED_KEYS}, finished_at=e.ts)
        self.graph.graph["run_id"] = self.graph.graph["run_id"] or e.run_id

    def agent_started(self, e: AgentStarted) -> None:
        if e.agent_id is None:
            return
        node = self.node(e.agent_id)
        node.update(
            depth=e.depth,
            parent=e.parent_id,
            model=e.model,
            prompt=e.prompt,
            node_id=e.node_id,
            context_info=dict(e.context_info),
            started_at=e.ts,
        )
        if e.parent_id is None:
            self.graph.graph["root"] = self.graph.graph["root"] or e.agent_id
            return
        self.node(e.parent_id)
        self.graph.add_edge(e.parent_id, e.agent_id)
        self.attach_child(e.parent_id, e.agent_id, e.ts)

    def attach_child(self, parent_id: str, child_id: str, ts: float) -> None:
        iteration = self.open.get(parent_id) or _iteration_spanning(self.node(parent_id)["iterations"], ts)
        if iteration is not None:
            iteration["children"].append(child_id)

    def agent_finished(self, e: AgentFinished) -> None:
        if e.agent_id is None:
            return
        node = self.node(e.agent_id)
        node.update(status=e.status, answer=e.answer, error=e.error, finished_at=e.ts)
        node["_reported_iterations"] = e.iterations
        node["duration_s"] = e.duration_s or _elapsed(node["started_at"], e.ts)
        self.open.pop(e.agent_id, None)

    def lm_called(self, e: LMCalled) -> None:
        if e.agent_id is None:
            return
        iteration = self.open_iteration(e.agent_id, e.ts - e.latency_s)
        iteration["lm_calls"].append(
            {
                "call_id": e.call_id,
                "model": e.model,
                "role": e.role,
                "purpose": e.purpose,
                "input_tokens": e.input_tokens,
                "output_tokens": e.output_tokens,
                "cost_usd": e.cost_usd,
                "latency_s": e.latency_s,
                "ok": e.ok,
                "error": e.error,
                "prompt_preview": e.prompt_preview,
                "response_preview": e.response_preview,
                "ts": e.ts,
                "model_group": e.model_group,
                "deployment": e.deployment,
                "node": e.node,
                "route_reason": e.route_reason,
                "queue_s": e.queue_s,
                "cache_hit": e.cache_hit,
                "request_key": e.request_key,
            }
        )

    def cell_executed(self, e: CellExecuted) -> None:
        if e.agent_id is None:
            return
        iteration = self.open_iteration(e.agent_id, e.ts - e.duration_s, e.iteration)
        iteration["cells"].append(
            {
                "index": e.index,
                "code": e.code,
                "stdout": e.stdout,
                "stderr": e.stderr,
                "error": e.error,
                "duration_s": e.duration_s,
                "final": e.final,
                "restarted": e.restarted,
                "ts": e.ts,
            }
        )

    def iteration_finished(self, e: IterationFinished) -> None:
        if e.agent_id is None:
            return
        current = self.open.get(e.agent_id)
        if current is None or current["iteration"] not in (None, e.iteration):
            current = self.open_iteration(e.agent_id, e.ts - e.duration_s, e.iteration)
        current.update(
            iteration=e.iteration,
            reply=e.reply,
            finished_at=e.ts,
            duration_s=e.duration_s or _elapsed(current["started_at"], e.ts),
            finished=True,
        )
        self.open.pop(e.agent_id, None)

    # -- finishing ----------------------------------------------------------

    def finish(self) -> nx.DiGraph:
        for _, node in self.graph.nodes(data=True):
            _total_usage(node)
            reported = node.pop("_reported_iterations")
            finished = sum(1 for it in node["iterations"] if it["finished"])
            node["n_iterations"] = reported if reported is not None else finished
        if self.graph.graph["root"] is None:
            roots = [n for n in self.graph if self.graph.in_degree(n) == 0]
            self.graph.graph["root"] = roots[0] if roots else None
        return self.graph


def _elapsed(start: float | None, end: float) -> float | None:
    return None if start is None else max(end - start, 0.0)


def _iteration_spanning(iterations: list[dict[str, Any]], ts: float) -> dict[str, Any] | None:
    for iteration in iterations:
        end = iteration["finished_at"]
        if iteration["started_at"] <= ts and (end is None or ts <= end):
            return iteration
    return None


def _call_cost(call: dict[str, Any]) -> float | None:
    if call["cost_usd"] is not None:
        return float(call["cost_usd"])
    return 0.0 if call["input_tokens"] == 0 and call["output_tokens"] == 0 else None


def _total_usage(node: dict[str, Any]) -> None:
    calls = [call for it in node["iterations"] for call in it["lm_calls"]]
    node["input_tokens"] = sum(call["input_tokens"] for call in calls)
    node["output_tokens"] = sum(call["output_tokens"] for call in calls)
    node["llm_calls"] = len(calls)
    node["cost_usd"] = _sum_or_none(_call_cost(call) for call in calls)


def _sum_or_none(values: Iterable[float | None]) -> float | None:
    known = list(values)
    return None if None in known else math.fsum(v for v in known if v is not None)


def build_tree(events: Iterable[Event]) -> nx.DiGraph:
    """Rebuild the agent tree of one run from its events (in recorded order).

    See the module docstring for the node and graph attributes. Events of
    other runs are not filtered out: pass one run's events.
    """
    builder = _TreeBuilder()
    for event in events:
        builder.add(event)
    return builder.finish()


# --------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------


def agent_cost(graph: nx.DiGraph, agent_id: str) -> float | None:
    """The agent's own cost in USD (its calls only); ``None`` if unknown."""
    cost: float | None = graph.nodes[agent_id]["cost_usd"]
    return cost


def subtree_cost(graph: nx.DiGraph, agent_id: str) -> float | None:
    """Cost in USD of ``agent_id`` and all its descendants; ``None`` if any is unknown."""
    members = {agent_id} | nx.descendants(graph, agent_id)
    return _sum_or_none(graph.nodes[n]["cost_usd"] for n in members)


def subtree_usage(graph: nx.DiGraph, agent_id: str) -> dict[str, int]:
    """``input_tokens``, ``output_tokens`` and ``llm_calls`` of ``agent_id`` and its descendants."""
    members = {agent_id} | nx.descendants(graph, agent_id)
    keys = ("input_tokens", "output_tokens", "llm_calls")
    return {key: sum(int(graph.nodes[n][key]) for n in members) for key in keys}


def _children(graph: nx.DiGraph, agent_id: str) -> list[str]:
    return sorted(graph.successors(agent_id), key=lambda n: (graph.nodes[n]["started_at"] or 0.0, str(n)))


def critical_path(graph: nx.DiGraph) -> list[str]:
    """Agent ids from the root down, following at each level the longest-running child.

    With children that run in parallel, this is the chain that bounded the
    run's wall-clock time. Empty if the graph has no root.
    """
    current = graph.graph.get("root")
    path: list[str] = []
    while current is not None:
        path.append(current)
        children = _children(graph, current)
        current = max(children, key=lambda n: graph.nodes[n]["duration_s"] or 0.0) if children else None
    return path


# --------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _agent_to_dict(graph: nx.DiGraph, agent_id: str, seen: set[str]) -> dict[str, Any]:
    seen.add(agent_id)
    data: dict[str, Any] = _jsonable(dict(graph.nodes[agent_id]))
    data["children"] = [_agent_to_dict(graph, child, seen) for child in _children(graph, agent_id) if child not in seen]
    return data


def tree_to_dict(graph: nx.DiGraph) -> dict[str, Any]:
    """A JSON-able dict: ``{"run": {...}, "root": agent, "detached": [agents]}``.

    Each agent is its node attributes plus ``children`` (agents, recursively,
    in start order). ``detached`` holds agents not reachable from the root
    (only in incomplete or malformed event streams).
    """
    seen: set[str] = set()
    root_id = graph.graph.get("root")
    root = _agent_to_dict(graph, root_id, seen) if root_id is not None else None
    detached = [_agent_to_dict(graph, n, seen) for n in graph if n not in seen and graph.in_degree(n) == 0]
    detached += [_agent_to_dict(graph, n, seen) for n in graph if n not in seen]  # cycles, if any
    return {"run": _jsonable(dict(graph.graph)), "root": root, "detached": detached}


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------

_STEP = "    "


def _one_line(value: Any) -> str:
    return sanitize_for_terminal(str(value), single_line=True)


def _clip(text: str, limit: int) -> str:
    return sanitize_for_terminal(truncate_text(text, limit))


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _fmt_cost(cost: float | None) -> str:
    return "unknown" if cost is None else f"${cost:.4f}"


def _fmt_tokens(data: dict[str, Any]) -> str:
    return f"{data.get('input_tokens') or 0:,} in / {data.get('output_tokens') or 0:,} out"


def _block(lines: list[str], indent: str, label: str, text: str, limit: int) -> None:
    """Append ``label:`` then ``text`` (clipped, sanitized) one line per line, indented."""
    lines.append(f"{indent}{label}:")
    body = _clip(text, limit)
    body = body.removesuffix("\n")  # the usual final newline of output
    lines.extend(f"{indent}  | {line}" for line in body.split("\n"))


def _run_header(g: dict[str, Any], max_output: int) -> list[str]:
    title = (
        f"run {_one_line(g.get('run_id'))}  status={_one_line(g.get('status'))}  "
        f"model={_one_line(g.get('model'))}  sub_model={_one_line(g.get('sub_model'))}"
    )
    hits = f" ({g['cache_hits']} from records)" if g.get("cache_hits") else ""
    usage = (
        f"  time={_fmt_seconds(g.get('duration_s'))}  tokens={_fmt_tokens(g)}  llm_calls={g.get('llm_calls') or 0}"
        f"{hits}  cost={_fmt_cost(g.get('cost_usd'))}  depth_reached={g.get('depth_reached') or 0}"
    )
    lines = [title, usage, *_origin_line(g)]
    if g.get("question"):
        _block(lines, "  ", "question", str(g["question"]), max_output)
    if g.get("answer") is not None:
        _block(lines, "  ", "answer", str(g["answer"]), max_output)
    if g.get("error"):
        _block(lines, "  ", "error", str(g["error"]), max_output)
    return lines


def _origin_line(g: dict[str, Any]) -> list[str]:
    """Where a run comes from: a replay, resume or fork of another run, or a session's turn."""
    origin, parent = g.get("origin"), _one_line(g.get("parent_run_id"))
    if origin in ("replay", "resume"):
        return [f"  {origin} of run {parent}"]
    if origin == "fork":
        return [f"  fork of run {parent} at iteration {g.get('fork_at')}"]
    if origin == "turn":
        after = f" (after run {parent})" if g.get("parent_run_id") else ""
        return [f"  turn {g.get('turn')} of session {_one_line(g.get('session'))}{after}"]
    return []


def _agent_header(node: dict[str, Any]) -> str:
    parts = [
        f"agent {_one_line(node['agent_id'])}",
        f"depth={node['depth'] if node['depth'] is not None else '?'}",
        f"model={_one_line(node['model'])}",
        f"status={_one_line(node['status'])}",
        f"iterations={node['n_iterations']}",
        f"tokens={_fmt_tokens(node)}",
        f"time={_fmt_seconds(node['duration_s'])}",
    ]
    if node["node_id"]:
        parts.append(f"node={_one_line(node['node_id'])}")
    return "* " + "  ".join(parts)


def _calls_summary(calls: list[dict[str, Any]]) -> list[str]:
    """One line per call purpose other than the agent's own turn, e.g. ``llm_query: 3 calls``."""
    by_purpose: dict[str, list[dict[str, Any]]] = {}
    for call in calls:
        if call["purpose"] != "iteration":
            by_purpose.setdefault(call["purpose"], []).append(call)
    lines = []
    for purpose, group in by_purpose.items():
        failed = sum(1 for call in group if not call["ok"])
        hits = sum(1 for call in group if call.get("cache_hit"))
        usage = {key: sum(call[key] for call in group) for key in ("input_tokens", "output_tokens")}
        line = f"{_one_line(purpose)}: {len(group)} call{'s' if len(group) != 1 else ''} ({_fmt_tokens(usage)} tokens)"
        lines.append(line + (f", {hits} from records" if hits else "") + (f", {failed} failed" if failed else ""))
    return lines


def _route_lines(calls: list[dict[str, Any]]) -> list[str]:
    """Where an iteration's calls went and why: one line per (group, deployment, node, reason), with a count."""
    routes: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for call in calls:
        if call.get("model_group") or call.get("route_reason"):
            key = (call.get("model_group"), call.get("deployment"), call.get("node"), call.get("route_reason"))
            routes.setdefault(key, []).append(call)
    lines = []
    for (group, deployment, node, reason), routed in routes.items():
        where = f"{group}/{deployment}" if deployment else f"{group or '?'} (not sent)"
        purposes = ", ".join(sorted({c["purpose"] for c in routed}))
        on = f" on {_one_line(node)}" if node else ""
        lines.append(f"-> {_one_line(where)}{on}: {len(routed)} {purposes} [{_one_line(reason or '')}]")
    return lines


def deployment_totals(graph: nx.DiGraph) -> list[dict[str, Any]]:
    """Per deployment over the whole run: calls, failed calls, tokens, cost (``None`` if any unknown) and time."""
    totals: dict[str, dict[str, Any]] = {}
    for agent_id in graph:
        for iteration in graph.nodes[agent_id]["iterations"]:
            for call in iteration["lm_calls"]:
                if not call.get("deployment"):
                    continue
                row = totals.setdefault(call["deployment"], {
                    "deployment": call["deployment"], "groups": set(), "calls": 0, "failed": 0, "input_tokens": 0,
                    "output_tokens": 0, "costs": [], "latency_s": 0.0})
                row["groups"].add(call.get("model_group"))
                row["calls"] += 1
                row["failed"] += 0 if call["ok"] else 1
                row["input_tokens"] += call["input_tokens"] or 0
                row["output_tokens"] += call["output_tokens"] or 0
                row["costs"].append(call["cost_usd"] if call["ok"] else 0.0)
                row["latency_s"] += call["latency_s"] or 0.0
    return [{**{k: v for k, v in row.items() if k not in ("groups", "costs")},
             "groups": sorted(g for g in row["groups"] if g), "cost_usd": _sum_or_none(row["costs"])}
            for row in sorted(totals.values(), key=lambda r: -r["calls"])]


def _deployment_lines(graph: nx.DiGraph) -> list[str]:
    rows = deployment_totals(graph)
    if not rows:
        return []
    lines = ["  deployments:"]
    for row in rows:
        failed = f", {row['failed']} failed" if row["failed"] else ""
        lines.append(f"    {_one_line(row['deployment'])} ({', '.join(map(_one_line, row['groups']))}): "
                     f"{row['calls']} calls{failed}, {_fmt_tokens(row)} tokens, cost={_fmt_cost(row['cost_usd'])}, "
                     f"time={_fmt_seconds(row['latency_s'])}")
    return lines


def _render_cell(lines: list[str], indent: str, cell: dict[str, Any], max_output: int) -> None:
    flags = "".join([" final" if cell["final"] else "", " sandbox-restarted" if cell["restarted"] else ""])
    lines.append(f"{indent}cell {cell['index']}  ({_fmt_seconds(cell['duration_s'])}){flags}")
    lines.extend(f"{indent}  > {line}" for line in sanitize_for_terminal(cell["code"]).split("\n"))
    for label in ("stdout", "stderr", "error"):
        if cell[label]:
            _block(lines, indent + "  ", label, cell[label], max_output)


def _iteration_title(iteration: dict[str, Any]) -> str:
    calls = len(iteration["lm_calls"])
    failed = sum(1 for call in iteration["lm_calls"] if not call["ok"])
    hits = sum(1 for call in iteration["lm_calls"] if call.get("cache_hit"))
    counted = f"{calls} model call{'s' if calls != 1 else ''}" + (f", {hits} from records" if hits else "") + (
        f", {failed} failed" if failed else "")
    if iteration["finished"]:
        return f"iteration {iteration['iteration']}  ({_fmt_seconds(iteration['duration_s'])}, {counted})"
    if iteration["iteration"] is not None:
        return f"iteration {iteration['iteration']}  (unfinished, {counted})"
    return f"after the iterations  ({counted})"


class _Renderer:
    """Walks the graph depth-first and collects lines."""

    def __init__(self, graph: nx.DiGraph, max_output: int) -> None:
        self.graph = graph
        self.max_output = max_output
        self.lines: list[str] = []
        self.seen: set[str] = set()

    def agent(self, agent_id: str, indent: str) -> None:
        self.seen.add(agent_id)
        node = self.graph.nodes[agent_id]
        self.lines.append(indent + _agent_header(node))
        inner = indent + _STEP
        if node["depth"] and node["prompt"]:
            _block(self.lines, inner, "prompt", node["prompt"], self.max_output)
        for iteration in node["iterations"]:
            self.iteration(iteration, inner)
        for child in _children(self.graph, agent_id):
            if child not in self.seen:
                self.agent(child, inner)
        if node["answer"] is not None:
            _block(self.lines, inner, "answer", node["answer"], self.max_output)
        if node["error"]:
            _block(self.lines, inner, "error", node["error"], self.max_output)

    def iteration(self, iteration: dict[str, Any], indent: str) -> None:
        self.lines.append(f"{indent}- {_iteration_title(iteration)}")
        inner = indent + _STEP
        if not iteration["cells"] and iteration.get("reply"):
            # a reply without code: show what the model said, since nothing ran
            _block(self.lines, inner, "reply (no code)", iteration["reply"], self.max_output)
        for cell in iteration["cells"]:
            _render_cell(self.lines, inner, cell, self.max_output)
        self.lines.extend(inner + line for line in _calls_summary(iteration["lm_calls"]))
        self.lines.extend(inner + line for line in _route_lines(iteration["lm_calls"]))
        for child in iteration["children"]:
            if child not in self.seen and child in self.graph:
                self.agent(child, inner)


def render_tree(graph: nx.DiGraph, max_output: int = 400) -> str:
    """A human-readable, terminal-safe, indented tree of the run (for ``rlm show``).

    Per agent: a header line (id, depth, model, status, iterations, tokens,
    time, node), then per iteration its cells' code and output (output clipped
    to ``max_output`` characters with a ``... [N more chars]`` marker), a count
    of sub-calls by purpose, where its calls went and why (group/deployment, node,
    routing reason), and the sub-agents it started, nested; under the run's header,
    the totals per deployment (calls, tokens, cost, time). All
    model-produced text goes through :func:`~rlm.textutil.sanitize_for_terminal`.
    """
    renderer = _Renderer(graph, max_output)
    renderer.lines.extend([*_run_header(dict(graph.graph), max_output), *_deployment_lines(graph), ""])
    root = graph.graph.get("root")
    if root is not None:
        renderer.agent(root, "")
    for agent_id in graph:
        if agent_id not in renderer.seen:
            renderer.agent(agent_id, "")
    return "\n".join(renderer.lines) + "\n"
