"""A regenerated benchmark report keeps the hand-written reading beside it."""

from __future__ import annotations

from pathlib import Path

from rlm.benchmarks.readings import reading_path, write_report

REPORTS = Path(__file__).resolve().parent.parent / "benchmarks" / "reports"


def test_reading_is_appended_and_survives_regeneration(tmp_path: Path) -> None:
    report = tmp_path / "demo.md"
    reading_path(report).write_text("## Reading\n\nWhy run 1 was slow.\n", encoding="utf-8")
    write_report(report, "# Demo\n\n| a | 1 |\n")
    write_report(report, "# Demo\n\n| a | 2 |\n")
    text = report.read_text(encoding="utf-8")
    assert text == "# Demo\n\n| a | 2 |\n\n## Reading\n\nWhy run 1 was slow.\n"


def test_report_without_reading_is_the_generated_text(tmp_path: Path) -> None:
    report = tmp_path / "sub" / "plain.md"
    write_report(report, "# Plain\n\n\n")
    assert report.read_text(encoding="utf-8") == "# Plain\n"


def test_committed_reports_end_with_their_reading() -> None:
    readings = sorted(REPORTS.glob("*.reading.md"))
    assert readings, "no hand-written readings found"
    for reading in readings:
        report = reading.with_name(reading.name.replace(".reading.md", ".md"))
        assert report.is_file(), f"{reading.name} has no report beside it"
        body = reading.read_text(encoding="utf-8").strip("\n")
        assert report.read_text(encoding="utf-8").rstrip("\n").endswith(body), report.name
