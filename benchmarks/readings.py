"""Hand-written readings of benchmark reports, kept apart from what the generators write.

A report ``benchmarks/reports/NAME.md`` is regenerated whole by its command; what
a person wrote about a run (what changed, what the numbers mean, earlier runs)
lives in ``NAME.reading.md`` beside it, which no generator writes.
:func:`write_report` writes the generated text followed by that file's
content, so a new run never loses the reading.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["reading_path", "write_report"]


def reading_path(report: Path) -> Path:
    """``NAME.reading.md`` beside ``NAME.md``."""
    return report.with_name(report.stem + ".reading.md")


def write_report(report: Path, generated: str) -> Path:
    """Write ``generated`` to ``report``, followed by its hand-written reading when there is one."""
    reading = reading_path(report)
    text = generated.rstrip("\n") + "\n"
    if reading.is_file():
        text += "\n" + reading.read_text(encoding="utf-8").strip("\n") + "\n"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text, encoding="utf-8")
    return report
