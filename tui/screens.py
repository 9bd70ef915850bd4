"""Modal screens: open a document, edit model and limits, pick a past run."""

from __future__ import annotations

import json

import time
from typing import TYPE_CHECKING, Any
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, DirectoryTree, Input, Label, Static

from rlm.config import RLMConfig
from rlm.errors import ConfigError, RLMError
from rlm.tui.format import fmt_cost, fmt_seconds, fmt_tokens, one_line, status_text
from rlm.tui.settings import FIELDS, apply_settings, current_values

if TYPE_CHECKING:
    from rlm.runlog import RunSummary  # imported when runs are loaded (rlm.runlog brings DuckDB)

__all__ = ["OpenScreen", "RunsScreen", "SettingsScreen", "load_runs"]


class OpenScreen(ModalScreen[Path | None]):
    """Type a path, or pick a file or directory in the tree."""

    BINDINGS = [Binding("escape", "dismiss_none", "Close")]
    DEFAULT_CSS = """
    OpenScreen { align: center middle; }
    OpenScreen > Vertical { width: 90%; height: 80%; border: thick $primary; background: $surface; padding: 0 1; }
    OpenScreen DirectoryTree { height: 1fr; }
    OpenScreen #open-hint { color: $text-muted; }
    """

    def __init__(self, start: Path) -> None:
        super().__init__()
        self.start = start

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Open a document: type a path and press Enter, or pick one below (Esc: close)",
                        id="open-hint")
            yield Input(placeholder="path to a file or directory", id="open-path")
            yield DirectoryTree(self.start, id="open-tree")

    def on_input_submitted(self, message: Input.Submitted) -> None:
        message.stop()
        if message.value.strip():
            self.dismiss(Path(message.value.strip()).expanduser())

    def on_directory_tree_file_selected(self, message: DirectoryTree.FileSelected) -> None:
        message.stop()
        self.dismiss(message.path)

    def on_directory_tree_directory_selected(self, message: DirectoryTree.DirectorySelected) -> None:
        message.stop()
        self.query_one("#open-path", Input).value = str(message.path)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class SettingsScreen(ModalScreen[RLMConfig | None]):
    """Edit the model and the limits used by the next run (ctrl+s saves, Esc cancels)."""

    BINDINGS = [Binding("escape", "dismiss_none", "Cancel"), Binding("ctrl+s", "save", "Save", priority=True)]
    DEFAULT_CSS = """
    SettingsScreen { align: center middle; }
    SettingsScreen > Vertical { width: 84; height: auto; max-height: 95%; border: thick $primary;
                                background: $surface; padding: 0 1; }
    SettingsScreen Grid { grid-size: 2; grid-columns: 34 1fr; grid-rows: 3; height: auto; }
    SettingsScreen Grid > Label { padding: 1 0 0 0; }
    SettingsScreen #settings-error { color: $error; height: auto; }
    SettingsScreen Horizontal { height: 3; align-horizontal: right; }
    """

    def __init__(self, config: RLMConfig) -> None:
        super().__init__()
        self.config = config

    def compose(self) -> ComposeResult:
        values = current_values(self.config)
        with Vertical():
            yield Label("Model and limits for the next run (ctrl+s: save, Esc: cancel)")
            with Grid():
                for field in FIELDS:
                    yield Label(field.label)
                    yield Input(values[field.name], id=f"set-{field.name}")
            yield Static("", id="settings-error")
            with Horizontal():
                yield Button("Save", variant="primary", id="settings-save")
                yield Button("Cancel", id="settings-cancel")

    def values(self) -> dict[str, str]:
        return {field.name: self.query_one(f"#set-{field.name}", Input).value for field in FIELDS}

    def action_save(self) -> None:
        try:
            config = apply_settings(self.config, self.values())
        except ConfigError as exc:
            self.query_one("#settings-error", Static).update(f"{exc}")
            return
        self.dismiss(config)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)

    def on_input_submitted(self, message: Input.Submitted) -> None:
        message.stop()
        self.action_save()

    def on_button_pressed(self, message: Button.Pressed) -> None:
        message.stop()
        if message.button.id == "settings-save":
            self.action_save()
        else:
            self.dismiss(None)


def load_runs(config: RLMConfig, limit: int = 200, service: Any = None) -> list[RunSummary]:
    """Past runs from the run log, newest first (empty when there is no log yet); through ``service`` if given."""
    from rlm.runlog import RunLog, RunSummary
    from rlm.runlog.journal import journal_paths

    if service is not None:
        reply = service.call({"op": "runs", "limit": limit, "json": True})
        return [RunSummary(**row) for row in json.loads(reply["stdout"] or "[]")]
    if not config.runlog_path.exists() and not journal_paths(config.runlog_path):
        return []
    # Read-write, like the runner: DuckDB refuses a read-only connection next to a
    # read-write one in the same process, and a run may be going on in this process.
    with RunLog(config.runlog_path) as log:
        return log.list_runs(limit=limit)


def _started(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


class RunsScreen(ModalScreen[str | None]):
    """Past runs from the run log; Enter opens one (its tree, iterations and answer)."""

    BINDINGS = [Binding("escape", "dismiss_none", "Close"), Binding("r", "reload", "Reload")]
    DEFAULT_CSS = """
    RunsScreen { align: center middle; }
    RunsScreen > Vertical { width: 96%; height: 90%; border: thick $primary; background: $surface; }
    RunsScreen DataTable { height: 1fr; }
    RunsScreen #runs-status { height: 1; padding: 0 1; color: $text-muted; }
    """

    def __init__(self, config: RLMConfig) -> None:
        super().__init__()
        self.config = config
        self.run_ids: list[str] = []

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Past runs (Enter: open, r: reload, Esc: close)", id="runs-status")
            yield DataTable(cursor_type="row", zebra_stripes=True, id="runs-table")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("run", "started", "status", "agents", "calls", "tokens", "cost", "time", "question")
        table.focus()
        self.action_reload()

    def action_reload(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="runs")
    def _load(self) -> None:
        try:
            runs = load_runs(self.config, service=getattr(self.app, "service", None))
        except RLMError as exc:
            self.app.call_from_thread(self._status, Text(f"cannot read the run log: {exc}", style="bold red"))
            return
        self.app.call_from_thread(self._fill, runs)

    def _status(self, text: Text | str) -> None:
        self.query_one("#runs-status", Static).update(text)

    def _fill(self, runs: list[RunSummary]) -> None:
        table = self.query_one(DataTable)
        table.clear()
        self.run_ids = [r.run_id for r in runs]
        for r in runs:
            table.add_row(r.run_id, _started(r.started_at), status_text(r.status or "running"), str(r.agents),
                          str(r.llm_calls), fmt_tokens(r.input_tokens + r.output_tokens), fmt_cost(r.cost_usd),
                          fmt_seconds(r.duration_s), one_line(r.question, 60), key=r.run_id)
        self._status(f"{len(runs)} past runs (Enter: open, r: reload, Esc: close)" if runs else
                     "No runs yet: ask a question first (Esc: close)")

    def on_data_table_row_selected(self, message: DataTable.RowSelected) -> None:
        message.stop()
        if message.row_key.value is not None:
            self.dismiss(str(message.row_key.value))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
