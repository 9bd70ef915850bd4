"""SVG snapshots of the TUI's main screens (pytest-textual-snapshot).

Deterministic by construction: runs are replayed from fixed events (fixed run ids,
times, node names), times are shown in UTC, the document path is relative, and no
live run (so no clock) is on screen. Update with ``pytest --snapshot-update``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rlm.tui.app import RLMApp
from rlm.tui.document import DocumentPane
from rlm.tui.history import QuestionHistory
from rlm.tui.memory import MemoryEntry, MemoryPane
from test_tui_helpers import synthetic_run, wait_for
from textual.widgets import DataTable, Footer, Input

from rlm.config import RLMConfig
from rlm.runlog import RunLog

pytest.importorskip("pytest_textual_snapshot", reason="snapshot tests need pytest-textual-snapshot (dev extra)")

SIZE = (130, 38)
DOC = "".join(f"1901-01-{i % 28 + 1:02d} - Sighted the trawler Marigold at {i % 12 + 1} o'clock.\n" for i in range(300))


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def app_factory(rlm_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, utc):
    monkeypatch.chdir(tmp_path)
    Path("logbook.txt").write_text(DOC, encoding="utf-8")
    config = RLMConfig(model="openai/gpt-4.1-mini", sub_model="openai/gpt-4.1-nano",
                       api_base="http://127.0.0.1:8000/v1", home=rlm_home, max_depth=2)

    def make(path: str | None = "logbook.txt", memory=None) -> RLMApp:
        return RLMApp(config, path, memory=memory, history=QuestionHistory(None))

    return make


async def _steady(pilot) -> None:
    """No blinking cursor, and nothing still settling, when the snapshot is taken.

    A blinking cursor would be on or off depending on timing; a layout or recompose still
    queued on a slow machine would be caught half done. So wait (at most 10 s) until two
    screenshots 0.1 s apart are the same.
    """
    for screen in pilot.app.screen_stack:
        for box in screen.query(Input):
            box.cursor_blink = False
    await pilot.pause()
    shot = pilot.app.export_screenshot()
    for _ in range(100):
        await pilot.pause(0.1)
        shot, previous = pilot.app.export_screenshot(), shot
        if shot == previous:
            return
    raise AssertionError("the screen kept changing for 10 s")


async def _footer_ready(pilot) -> None:
    """Wait for the main screen's footer to show its keys before pressing any.

    Textual's Footer composes its keys only after the screen first publishes its bindings
    and a refresh has passed. A key that pushes a modal screen before then leaves the
    footer behind the modal blank on a slow machine (a CI snapshot mismatch).
    """
    footer = pilot.app.screen.query_one(Footer)
    await wait_for(pilot, lambda: bool(footer.children), timeout=10, what="the footer's keys")


async def _document_ready(pilot) -> None:
    await _footer_ready(pilot)
    pane = pilot.app.query_one(DocumentPane)
    while pane.index is None or not pane.index.complete:
        await pilot.pause(0.05)
    await _steady(pilot)


def test_main_screen_with_a_document(snap_compare, app_factory):
    assert snap_compare(app_factory(), terminal_size=SIZE, run_before=_document_ready)


def test_document_search(snap_compare, app_factory):
    async def search(pilot) -> None:
        await _document_ready(pilot)
        pane = pilot.app.query_one(DocumentPane)
        await pilot.press("ctrl+f", *"marigold at 7")
        for _ in range(2):
            done = pane.searches_done
            await pilot.press("enter")
            while pane.searches_done == done:
                await pilot.pause(0.05)
        await _steady(pilot)

    assert snap_compare(app_factory(), terminal_size=SIZE, run_before=search)


def test_finished_run_with_a_sub_agent_selected(snap_compare, app_factory):
    async def replay(pilot) -> None:
        await _document_ready(pilot)
        pilot.app.show_events(synthetic_run(children=3))
        await pilot.pause()
        await pilot.press("down")  # from the root onto its first sub-agent
        await _steady(pilot)

    assert snap_compare(app_factory(), terminal_size=SIZE, run_before=replay)


def test_runs_screen(snap_compare, app_factory, rlm_home):
    with RunLog(rlm_home / "rlm.duckdb") as log:
        for n, run_id in enumerate(["20260101-120000-abc123", "20260102-093000-def456"]):
            for event in synthetic_run(run_id, children=n + 1, t0=1_767_268_800.0 + n * 77_400):
                log.record(event)

    async def open_runs(pilot) -> None:
        await _footer_ready(pilot)
        await pilot.press("ctrl+r")
        while len(getattr(pilot.app.screen, "run_ids", [])) < 2:
            await pilot.pause(0.05)
        table = pilot.app.screen.query_one(DataTable)
        first_column = next(iter(table.columns.values()))
        while first_column.content_width < len("20260102-093000-def456"):  # widths are set on an idle pass
            await pilot.pause(0.05)
        await _steady(pilot)

    assert snap_compare(app_factory(path=None), terminal_size=SIZE, run_before=open_runs)


def test_settings_screen(snap_compare, app_factory):
    async def settings(pilot) -> None:
        await _footer_ready(pilot)
        await pilot.press("f2")
        await _steady(pilot)

    assert snap_compare(app_factory(path=None), terminal_size=SIZE, run_before=settings)


class FixedMemory:
    namespace = "harbour"

    def entries(self, kind=None, limit=200):
        return [MemoryEntry("m1", "memory", "The logbook lists one sighting per day; grep 'Sighted'.", ("logbook",)),
                MemoryEntry("d1", "doc", "Keepers: Penn, Hale. Lamp times are local.", ("keepers", "lamp"))]

    def search(self, query, limit=50):
        return [e for e in self.entries() if query.lower() in e.text.lower()]


def test_memory_pane(snap_compare, app_factory):
    async def memory(pilot) -> None:
        await _document_ready(pilot)
        await pilot.press("ctrl+t")
        pane = pilot.app.query_one(MemoryPane)
        while not pane.shown:
            await pilot.pause(0.05)
        await _steady(pilot)

    assert snap_compare(app_factory(memory=FixedMemory()), terminal_size=SIZE, run_before=memory)
