"""What the paper preset's generators produce: sizes measured on generated tasks, written as a report.

``python -m rlm.benchmarks.sizes [--out benchmarks/reports/paper_sizes.md] [--seed 0]``
generates the paper preset's tasks (fewer of them: sizes do not depend on the task
index beyond the question) and measures, with the ``o200k_base`` tokenizer: s-niah's
prompt tokens per length; oolong's and oolong-pairs' records, distinct users and
context tokens; and the gold pair count of each of the 20 OOLONG-Pairs queries at 32K.
The numbers quoted in docs/benchmarks.md come from this report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from statistics import mean

from rlm.benchmarks.tasks import Task, generate


def _sniah_rows(seed: int) -> list[str]:
    from rlm.benchmarks.sniah import PAPER_LENGTHS

    rows = ["| length | haystack | prompt tokens + 128 | share of the length |", "| ---: | --- | ---: | ---: |"]
    for task in generate("s-niah", 2, PAPER_LENGTHS, seed):
        used = task.meta["prompt_tokens"] + 128
        share = used / task.length_tokens
        rows.append(f"| {task.length_tokens:,} | {task.meta['haystack']} | {used:,} | {share:.3f} |")
    return rows


def _window_rows(tasks: list[Task]) -> list[str]:
    rows = ["| suite | length | tasks | records | distinct users (mean) | context tokens (mean) | tokens per record |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for suite, length in sorted({(t.suite, t.length_tokens) for t in tasks}):
        group = [t for t in tasks if (t.suite, t.length_tokens) == (suite, length)]
        records = group[0].meta["n_records"]
        tokens = mean(t.meta["context_tokens"] for t in group)
        rows.append(f"| {suite} | {length:,} | {len(group)} | {records:,} | "
                    f"{mean(t.meta['n_users'] for t in group):.0f} | {tokens:,.0f} | {tokens / records:.1f} |")
    return rows


def _pairs_rows(pairs: list[Task]) -> list[str]:
    rows = ["| query | gold pairs |", "| ---: | ---: |"]
    return rows + [f"| {t.meta['query']} | {len(t.answer):,} |" for t in pairs]


def write_sizes(out: Path, seed: int = 0) -> Path:
    """Generate, measure and write the report; returns its path."""
    pairs = generate("oolong-pairs", 20, [32_768], seed)
    windows = generate("oolong", 5, [32_768, 131_072], seed) + pairs
    lines = ["# Paper preset: generated sizes", "", "Command:", "", "```",
             f"python -m rlm.benchmarks.sizes --out {out} --seed {seed}", "```", "",
             "## s-niah (RULER): the whole prompt plus 128 reply tokens, in o200k_base tokens", ""]
    lines += _sniah_rows(seed) + ["", "## oolong and oolong-pairs windows", ""] + _window_rows(windows)
    lines += ["", "## oolong-pairs at 32K: gold pairs per query (seed "
              f"{seed}; the paper's Appendix B.2 example of query 3 has 406)", ""] + _pairs_rows(pairs) + [""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/reports/paper_sizes.md"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_sizes(args.out, args.seed), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
