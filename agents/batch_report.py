"""A batch's report: score, tokens and calls per position in the task file, as a markdown page.

For a batch of similar tasks run with swarm memory, position is what to read:
does a task late in the file score as well with fewer tokens and calls than
one early in it? (The columns of ``benchmarks/continual.py``'s report, for one
stream.) A second batch with ``--no-memory`` over the same file is the control
to compare with: the scaffold alone, memory wiped (docs/memory.md).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

__all__ = ["render_batch_report", "write_batch_report"]


def _rows(results: Path) -> list[dict[str, Any]]:
    rows = []
    for text in results.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "id" in row:
            rows.append(row)
    return sorted(rows, key=lambda r: (r.get("position") is None, r.get("position") or 0))


def _tokens(row: dict[str, Any]) -> int:
    usage = row.get("usage") or {}
    return int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))


def _calls(row: dict[str, Any]) -> int:
    return int((row.get("usage") or {}).get("llm_calls", 0))


def _mean(values: list[float]) -> str:
    return f"{statistics.fmean(values):.2f}" if values else "-"


def render_batch_report(results: Path, *, title: str = "Batch") -> str:
    """The markdown report of a result file."""
    rows = _rows(results)
    scored = [r for r in rows if r.get("score") is not None]
    lines = [f"# {title}: per position", "", f"Results: `{results}` ({len(rows)} tasks).", "",
             "| position | id | status | score | tokens | LM calls | cost (USD) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cost = "-" if r.get("cost_usd") is None else f"{r['cost_usd']:.4f}"
        score = "-" if r.get("score") is None else f"{r['score']:.0f}"
        lines.append(f"| {r.get('position', '-')} | {r['id']} | {r.get('status')} | {score} | {_tokens(r):,} | "
                     f"{_calls(r)} | {cost} |")
    half = len(rows) // 2
    first, second = rows[:half], rows[half:]
    lines += ["", "| half | tasks | mean score | mean tokens | mean LM calls |", "| --- | --- | --- | --- | --- |"]
    for name, part in (("first", first), ("second", second)):
        part_scored = [float(r["score"]) for r in part if r.get("score") is not None]
        lines.append(f"| {name} | {len(part)} | {_mean(part_scored)} | {_mean([float(_tokens(r)) for r in part])} | "
                     f"{_mean([float(_calls(r)) for r in part])} |")
    if scored:
        lines += ["", f"Overall score: {sum(float(r['score']) for r in scored):.0f} of {len(scored)}."]
    lines.append("")
    return "\n".join(lines)


def write_batch_report(results: Path, out: Path, *, title: str = "Batch") -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_batch_report(results, title=title), encoding="utf-8")
    return out
