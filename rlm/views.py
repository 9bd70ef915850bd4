"""What ``rlm runs`` and ``rlm show`` print, computed from a run log wherever it is open.

The command line prints these from a log it opens itself, or from the text the
resident service sends back (the service holds the log): the same functions
make both, so the output is the same either way. Each returns ``(stdout,
stderr)`` text.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from rlm.errors import InputError
from rlm.textutil import sanitize_for_terminal

if TYPE_CHECKING:
    from rlm.runlog import RunLog

__all__ = ["runs_view", "show_view"]


def runs_view(log: RunLog | None, limit: int, as_json: bool) -> tuple[str, str]:
    """Past runs, newest first: one line each, or a JSON list."""
    runs = [] if log is None else log.list_runs(limit=limit)
    if as_json:
        return json.dumps([r.to_dict() for r in runs], ensure_ascii=False, default=str) + "\n", ""
    if not runs:
        return "", "no runs yet\n"
    lines = []
    for r in runs:
        question = sanitize_for_terminal((r.question or "").replace("\n", " "))[:60]
        lines.append(f"{r.run_id}  {r.status or 'running':<14} {r.llm_calls or 0:>4} calls  {question}\n")
    return "".join(lines), ""


def show_view(log: RunLog | None, run_id: str, max_output: int, as_json: bool) -> tuple[str, str]:
    """One run's tree of agents, iterations, code and outputs: as text, or as JSON."""
    from rlm.tree import build_tree, render_tree, tree_to_dict

    if log is None:
        raise InputError("no run log yet: run `rlm ask` first")
    summary = log.get_run(run_id)
    graph = build_tree(log.events(summary.run_id))
    if as_json:
        return json.dumps(tree_to_dict(graph), ensure_ascii=False, default=str) + "\n", ""
    return render_tree(graph, max_output=max_output) + "\n", ""
