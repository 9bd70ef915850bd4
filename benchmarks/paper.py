"""The RLM paper's published numbers, shown beside ours as labelled reference rows.

Source: Zhang, Kraska, Khattab, "Recursive Language Models", arXiv:2512.24601v1
(31 Dec 2025), Table 1, GPT-5 rows (GPT-5 with medium reasoning; the RLM's sub-calls
use GPT-5-mini). Scores are percentages: OOLONG at 131K tokens by OOLONG's own
scoring, OOLONG-Pairs at 32K tokens as F1. The table's CodeQA and BrowseComp+ (1K)
columns are not listed here: this project's ``codeqa-like`` and
``browsecomp-plus-like`` suites are not those tasks. S-NIAH appears only as a plot
(Figure 1), so no S-NIAH number is transcribed.
"""

from __future__ import annotations

from dataclasses import dataclass

CITATION = "Zhang, Kraska, Khattab, arXiv:2512.24601v1, Table 1"


@dataclass(frozen=True)
class PaperColumn:
    """One of Table 1's columns that a suite here regenerates: the suite and its task length."""

    suite: str
    title: str
    length: int


#: Table 1's columns that this project regenerates, in the paper's order.
COLUMNS: tuple[PaperColumn, ...] = (
    PaperColumn("oolong", "OOLONG (131K)", 131_072),
    PaperColumn("oolong-pairs", "OOLONG-Pairs (32K)", 32_768),
)

#: Reference rows: (label, {suite: published score in %}); they correspond to our ``base``,
#: ``rlm`` and ``rlm-no-sub`` methods.
REFERENCE_ROWS: tuple[tuple[str, dict[str, float]], ...] = (
    ("GPT-5, base model (paper)", {"oolong": 44.00, "oolong-pairs": 0.04}),
    ("RLM(GPT-5) (paper)", {"oolong": 56.50, "oolong-pairs": 58.00}),
    ("RLM(GPT-5), no sub-calls (paper)", {"oolong": 36.00, "oolong-pairs": 43.93}),
)
