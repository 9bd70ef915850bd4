"""``report.md`` and PNG plots from ``results.jsonl``.

When the results hold a suite of the RLM paper's Table 1 at the paper's length
(OOLONG at 131K, OOLONG-Pairs at 32K), the report opens with that table's layout:
our methods' mean scores in percent, with the paper's published GPT-5 numbers as
labelled reference rows (:mod:`rlm.benchmarks.paper`). "-like" suites never appear
there. Then, per suite: a table of mean score by method and context length, a
table of mean cost (USD; tokens when a price is unknown), seconds and LM calls, the
status counts, and two plots: score vs context length per method
(``score_vs_length.png``) and cost vs length (``cost_vs_length.png``). matplotlib is
imported lazily; without it the report says so and has no plots.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from statistics import mean
from typing import Any

from rlm.benchmarks.runner import BenchResult, read_results


def _grouped(results: Iterable[BenchResult]) -> dict[str, dict[str, dict[int, list[BenchResult]]]]:
    table: dict[str, dict[str, dict[int, list[BenchResult]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for r in results:
        table[r.suite][r.method][r.length].append(r)
    return table


def _cost(rows: list[BenchResult]) -> float | None:
    """Mean cost in USD, or None when any row's cost is unknown."""
    known = [float(r.cost_usd) for r in rows if r.cost_usd is not None]
    return mean(known) if len(known) == len(rows) else None


def _tokens(rows: list[BenchResult]) -> float:
    return mean(r.input_tokens + r.output_tokens for r in rows)


def paper_table(results: list[BenchResult], model: str | None) -> list[str]:
    """Table 1's layout for the paper suites present at the paper's lengths (empty when none is)."""
    from rlm.benchmarks.paper import CITATION, COLUMNS, REFERENCE_ROWS

    grouped = _grouped(results)
    columns = [c for c in COLUMNS if any(c.length in by_len for by_len in grouped.get(c.suite, {}).values())]
    if not columns:
        return []
    lines = ["## Compared with the RLM paper", "",
             f"Mean score in percent at the paper's lengths; reference rows are published numbers ({CITATION}), "
             "not runs of this project.", "",
             "| method | " + " | ".join(c.title for c in columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for method in sorted({m for c in columns for m in grouped[c.suite]}):
        cells = [_percent(grouped[c.suite].get(method, {}).get(c.length)) for c in columns]
        lines.append(f"| {method} ({model or 'this run'}) | " + " | ".join(cells) + " |")
    for label, published in REFERENCE_ROWS:
        lines.append(f"| *{label}* | " + " | ".join(f"{published[c.suite]:.2f}" for c in columns) + " |")
    counts = {c.title: max(len(by_len.get(c.length, [])) for by_len in grouped[c.suite].values()) for c in columns}
    return lines + ["", "Tasks per method: " + ", ".join(f"{t} {k}" for t, k in counts.items()) + ".", ""]


def _percent(rows: list[BenchResult] | None) -> str:
    return f"{100 * mean(r.score for r in rows):.2f}" if rows else "-"


def _secondary_table(methods: dict[str, dict[int, list[BenchResult]]], lengths: list[int]) -> list[str]:
    """Mean of each secondary score (e.g. oolong's lenient rule) by method and length."""
    names = sorted({name for by_length in methods.values() for rows in by_length.values() for r in rows
                    for name in r.scores})
    if not names:
        return []
    lines = ["Secondary scores (not the suite's official rule; not comparable with published numbers):", "",
             "| score | method | " + " | ".join(f"{n:,}" for n in lengths) + " |",
             "| --- | --- |" + " ---: |" * len(lengths)]
    for name in names:
        for method, by_length in methods.items():
            cells = [f"{mean(r.scores.get(name, 0.0) for r in by_length[n]):.3f}" if by_length.get(n) else "-"
                     for n in lengths]
            lines.append(f"| {name} | {method} | " + " | ".join(cells) + " |")
    return lines + [""]


def _score_table(methods: dict[str, dict[int, list[BenchResult]]], lengths: list[int]) -> list[str]:
    lines = ["| method | " + " | ".join(f"{n:,}" for n in lengths) + " | all |",
             "| --- |" + " ---: |" * (len(lengths) + 1)]
    for method, by_length in methods.items():
        cells = [f"{mean(r.score for r in by_length[n]):.3f}" if by_length.get(n) else "-" for n in lengths]
        every = [r for rows in by_length.values() for r in rows]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {mean(r.score for r in every):.3f} |")
    return lines


def _cost_table(methods: dict[str, dict[int, list[BenchResult]]], lengths: list[int]) -> list[str]:
    lines = ["| method | length | n | mean cost (USD) | mean tokens | mean LM calls | mean seconds | statuses |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for method, by_length in methods.items():
        for n in lengths:
            rows = by_length.get(n)
            if not rows:
                continue
            cost = _cost(rows)
            statuses = ", ".join(f"{k} {v}" for k, v in sorted(Counter(r.status for r in rows).items()))
            lines.append(f"| {method} | {n:,} | {len(rows)} | {'unknown' if cost is None else f'{cost:.4f}'} | "
                         f"{_tokens(rows):,.0f} | {mean(r.llm_calls for r in rows):.1f} | "
                         f"{mean(r.seconds for r in rows):.1f} | {statuses} |")
    return lines


def plot_suite(suite: str, methods: dict[str, dict[int, list[BenchResult]]], out_dir: Path) -> list[str]:
    """Write the two PNGs for ``suite``; returns their file names (empty without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    names = []
    all_rows = [r for by_length in methods.values() for rows in by_length.values() for r in rows]
    priced = all(r.cost_usd is not None for r in all_rows)
    for kind in ("score", "cost"):
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        for method, by_length in methods.items():
            lengths = sorted(by_length)
            if kind == "score":
                values = [mean(r.score for r in by_length[n]) for n in lengths]
            elif priced:
                values = [_cost(by_length[n]) or 0.0 for n in lengths]
            else:
                values = [_tokens(by_length[n]) for n in lengths]
            ax.plot(lengths, values, marker="o", label=method)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("mean score" if kind == "score" else ("mean cost (USD)" if priced else
                                                           "mean tokens (price unknown)"))
        if kind == "score":
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{suite}: {kind} vs context length")
        ax.grid(True, alpha=0.3)
        ax.legend()
        name = f"{suite}_{kind}_vs_length.png"
        fig.tight_layout()
        fig.savefig(out_dir / name)
        plt.close(fig)
        names.append(name)
    return names


def write_report(results: list[BenchResult], out_dir: Path, *, title: str = "Benchmark report",
                 command: str | None = None, model: str | None = None) -> Path:
    """Write ``out_dir/report.md`` (and the plots) for ``results``."""
    lines = [f"# {title}", ""]
    if command:
        lines += ["Command:", "", "```", command, "```", ""]
    lines += paper_table(results, model)
    for suite, methods in _grouped(results).items():
        lengths = sorted({n for by_length in methods.values() for n in by_length})
        lines += [f"## {suite}", "", "Mean score by context length (tokens):", ""]
        lines += _score_table(methods, lengths) + [""] + _secondary_table(methods, lengths)
        lines += ["Cost, tokens, calls and time:", ""]
        lines += _cost_table(methods, lengths) + [""]
        plots = plot_suite(suite, methods, out_dir)
        lines += [f"![{name}]({name})" for name in plots] or ["(matplotlib is not installed: no plots)"]
        lines.append("")
    errors = [r for r in results if r.error]
    if errors:
        lines += ["## Errors", ""] + [f"- {r.id} / {r.method}: {str(r.error)[:300]}" for r in errors[:50]] + [""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def report_from_dir(out_dir: Path, **kwargs: Any) -> Path:
    """Re-render ``report.md`` from an existing ``results.jsonl``."""
    return write_report(read_results(out_dir / "results.jsonl"), out_dir, **kwargs)
