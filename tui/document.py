"""The document pane: a virtualised, line-numbered view of the input, with search.

:class:`DocumentView` draws only the lines on screen, read on demand from a
:class:`~rlm.tui.lines.LineIndex` (a memory-mapped file), so a 1 GB log costs
no more to show than a 1 KB note. :class:`DocumentPane` adds a header, the
search box (ctrl+f; Enter / F3 next match, shift+F3 previous, ``n``/``N`` in
the view) and opens files and directories in a background thread.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from rich.segment import Segment
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Input, Static
from textual.worker import get_current_worker

from rlm.textutil import sanitize_for_terminal
from rlm.tui.lines import LineIndex, search_pattern

__all__ = ["DocumentPane", "DocumentView", "directory_listing"]

#: Seconds between two progress updates while a big file is indexed.
PROGRESS_INTERVAL = 0.25
#: Entries listed when a directory is opened.
MAX_LISTED_FILES = 5000
_HIDDEN_DIRS = {"__pycache__", "node_modules"}


def directory_listing(root: Path) -> str:
    """A text listing of a directory's files (what ``rlm ask DIR`` would read), sorted."""
    lines = [f"{root}/  (directory: each file becomes one document of `context`)", ""]
    count = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _HIDDEN_DIRS)
        for name in sorted(f for f in files if not f.startswith(".")):
            path = Path(folder, name)
            try:
                size = path.stat().st_size
            except OSError:
                continue
            lines.append(f"{path.relative_to(root).as_posix()}  ({size:,} bytes)")
            count += 1
            if count >= MAX_LISTED_FILES:
                lines.append(f"... (listing stopped at {MAX_LISTED_FILES:,} files)")
                return "\n".join(lines)
    return "\n".join(lines)


class DocumentView(ScrollView, can_focus=True):
    """Line-numbered, read-only view of a :class:`LineIndex`; only visible lines are drawn."""

    COMPONENT_CLASSES = {"document--gutter", "document--match", "document--current"}
    BINDINGS = [
        Binding("n", "next_match", "Next match", show=False),
        Binding("N", "previous_match", "Previous match", show=False),
    ]
    DEFAULT_CSS = """
    DocumentView { height: 1fr; background: $surface; }
    DocumentView > .document--gutter { color: $text-muted; background: $panel; }
    DocumentView > .document--match { background: $warning 40%; }
    DocumentView > .document--current { background: $accent; color: $text; text-style: bold; }
    """

    class MatchRequested(Message):
        """The user asked for the next (or previous) match from the view."""

        def __init__(self, backwards: bool) -> None:
            super().__init__()
            self.backwards = backwards

    def __init__(self, **kwargs: Any) -> None:  # the widget's own options (id, classes...)
        super().__init__(**kwargs)
        self.index: LineIndex | None = None
        self.query_text = ""
        self._highlight: re.Pattern[str] | None = None
        self.current: tuple[int, int] | None = None  # (line, column) of the current match

    # -- content ------------------------------------------------------------

    def show(self, index: LineIndex | None) -> None:
        """Display ``index`` from the top (``None``: nothing)."""
        self.index = index
        self.current = None
        self.scroll_to(0, 0, animate=False)
        self.update_size()

    def update_size(self) -> None:
        """Re-read the line count and width (as indexing progresses)."""
        index = self.index
        if index is None:
            self.virtual_size = Size(0, 0)
        else:
            width = self._gutter_width() + min(index.longest_line, 2000) + 1
            self.virtual_size = Size(width, index.line_count)
        self.refresh()

    def set_query(self, query: str) -> None:
        """Highlight every occurrence of ``query`` on screen (smart case, literal)."""
        self.query_text = query
        flags = 0 if any(ch.isupper() for ch in query) else re.IGNORECASE
        self._highlight = re.compile(re.escape(query), flags) if query else None
        self.refresh()

    def jump_to(self, line: int, column: int) -> None:
        """Make (line, column) the current match and scroll it to the middle."""
        self.current = (line, column)
        height = self.scrollable_content_region.height or 1
        self.scroll_to(y=max(0, line - height // 2), animate=False)
        self.refresh()

    @property
    def top_line(self) -> int:
        return int(self.scroll_offset.y)

    # -- actions ------------------------------------------------------------

    # Instant paging, like a pager: an animated scroll over a huge file only costs frames.
    def action_page_down(self) -> None:
        self.scroll_page_down(animate=False)

    def action_page_up(self) -> None:
        self.scroll_page_up(animate=False)

    def action_scroll_home(self) -> None:
        self.scroll_home(animate=False)

    def action_scroll_end(self) -> None:
        self.scroll_end(animate=False)

    def action_next_match(self) -> None:
        self.post_message(self.MatchRequested(backwards=False))

    def action_previous_match(self) -> None:
        self.post_message(self.MatchRequested(backwards=True))

    # -- drawing ------------------------------------------------------------

    def _gutter_width(self) -> int:
        count = self.index.line_count if self.index is not None else 0
        return max(len(str(count)), 3) + 2

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        number = scroll_y + y
        width = self.scrollable_content_region.width
        if self.index is None or number >= self.index.line_count:
            return Strip.blank(width, self.rich_style)
        gutter_width = self._gutter_width()
        gutter_style = self.get_component_rich_style("document--gutter")
        gutter = Strip([Segment(f"{number + 1:>{gutter_width - 1}} ", gutter_style)])
        body = self._line_text(number)
        body_strip = Strip(list(body.render(self.app.console, end=""))).crop(scroll_x, scroll_x + width - gutter_width)
        strip = Strip.join([gutter, body_strip.apply_style(self.rich_style)])
        return strip.extend_cell_length(width, self.rich_style)

    def _line_text(self, number: int) -> Text:
        assert self.index is not None
        text = Text(sanitize_for_terminal(self.index.line(number).expandtabs(4)))
        if self._highlight is not None:
            text.highlight_regex(self._highlight, self.get_component_rich_style("document--match"))
        if self.current is not None and self.current[0] == number:
            column = self.current[1]
            text.stylize(self.get_component_rich_style("document--current"), column, column + len(self.query_text))
        return text


class SearchInput(Input):
    """The search box: Enter finds the next match, Escape closes it."""

    BINDINGS = [Binding("escape", "close", "Close search", show=False)]

    class Closed(Message):
        """The user closed the search box."""

    def action_close(self) -> None:
        self.post_message(self.Closed())


class DocumentPane(Vertical):
    """Header, virtualised view and search box for the document being asked about."""

    DEFAULT_CSS = """
    DocumentPane { height: 1fr; }
    DocumentPane > #doc-header { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    DocumentPane > #doc-search { display: none; height: 3; }
    DocumentPane.searching > #doc-search { display: block; }
    DocumentPane > #doc-search-status { display: none; height: 1; padding: 0 1; color: $text-muted; }
    DocumentPane.searching > #doc-search-status { display: block; }
    """

    class Opened(Message):
        """A document was opened (``error`` is set if it could not be)."""

        def __init__(self, path: Path, error: str | None) -> None:
            super().__init__()
            self.path = path
            self.error = error

    def __init__(self, **kwargs: Any) -> None:  # the widget's own options (id, classes...)
        super().__init__(**kwargs)
        self.path: Path | None = None
        self.index: LineIndex | None = None
        self.error: str | None = None
        self._match_offset = -1  # byte offset of the current match, -1 before the first search
        self.match_line: int | None = None
        self.searches_done = 0

    def compose(self) -> ComposeResult:
        yield Static("No document: press ctrl+o to open a file or directory.", id="doc-header")
        yield DocumentView(id="doc-view")
        yield SearchInput(placeholder="search the document (Enter: next, F3/shift+F3, Esc: close)", id="doc-search")
        yield Static("", id="doc-search-status")

    @property
    def view(self) -> DocumentView:
        return self.query_one(DocumentView)

    # -- opening ------------------------------------------------------------

    def open(self, path: Path, label: str | None = None) -> None:
        """Open a file or a directory in the background; posts :class:`Opened`."""
        self.path = path
        self.error = None
        self._header(f"{label or path}  (opening...)")
        self._load(path, label or str(path))

    @work(thread=True, exclusive=True, group="document")
    def _load(self, path: Path, label: str) -> None:
        worker = get_current_worker()
        try:
            index = LineIndex.from_text(directory_listing(path), str(path)) if path.is_dir() else LineIndex.open(path)
        except OSError as exc:
            self.app.call_from_thread(self._failed, path, label, exc.strerror or str(exc))
            return
        except Exception as exc:  # noqa: BLE001 -- e.g. a file that cannot be mapped: shown, not raised
            self.app.call_from_thread(self._failed, path, label, f"{type(exc).__name__}: {exc}")
            return
        self.app.call_from_thread(self._shown, path, label, index)
        shown_at = time.monotonic()
        while not worker.is_cancelled and index.index_more():
            if time.monotonic() - shown_at > PROGRESS_INTERVAL:  # lines so far are browsable meanwhile
                self.app.call_from_thread(self._progress, label, index)
                shown_at = time.monotonic()
        if worker.is_cancelled:
            index.close()
            return
        self.app.call_from_thread(self._progress, label, index)

    def _failed(self, path: Path, label: str, reason: str) -> None:
        self.error = f"cannot open {label}: {reason}"
        self._header(self.error, error=True)
        self.view.show(None)
        self.post_message(self.Opened(path, self.error))

    def _shown(self, path: Path, label: str, index: LineIndex) -> None:
        if self.index is not None and self.index.complete:
            self.index.close()
        self.index = index
        self._match_offset = -1
        self.match_line = None
        self.view.show(index)
        self._progress(label, index)
        self.post_message(self.Opened(path, None))

    def _progress(self, label: str, index: LineIndex) -> None:
        if index is not self.index:
            return
        self.view.update_size()
        done = "" if index.complete else f"  indexing {index.progress:.0%}"
        self._header(f"{label}  {index.size:,} bytes  {index.line_count:,} lines{done}")

    def _header(self, text: str, error: bool = False) -> None:
        style = "bold red" if error else ""
        self.query_one("#doc-header", Static).update(Text(sanitize_for_terminal(text), style=style))

    # -- search -------------------------------------------------------------

    def start_search(self) -> None:
        self.add_class("searching")
        self.query_one(SearchInput).focus()

    def on_search_input_closed(self, message: SearchInput.Closed) -> None:
        message.stop()
        self.remove_class("searching")
        self.view.focus()

    def on_input_submitted(self, message: Input.Submitted) -> None:
        if isinstance(message.input, SearchInput):
            message.stop()
            self.find(message.value)

    def on_input_changed(self, message: Input.Changed) -> None:
        if isinstance(message.input, SearchInput):
            message.stop()
            self.view.set_query(message.value)
            self._match_offset = -1

    def on_document_view_match_requested(self, message: DocumentView.MatchRequested) -> None:
        message.stop()
        self.find(self.query_one(SearchInput).value, backwards=message.backwards)

    def find(self, query: str, backwards: bool = False) -> None:
        """Look for the next (or previous) match of ``query`` in the background, then jump to it.

        The search scans the mapped file (seconds for a GB), so it runs in a thread;
        :attr:`searches_done` counts the searches that finished.
        """
        status = self.query_one("#doc-search-status", Static)
        if not query or self.index is None:
            status.update("type something to search for")
            return
        self.view.set_query(query)
        status.update(f"searching for {sanitize_for_terminal(query)!r}...")
        self._search(self.index, query, backwards, self._match_offset)

    @work(thread=True, exclusive=True, group="search")
    def _search(self, index: LineIndex, query: str, backwards: bool, offset: int) -> None:
        pattern = search_pattern(query)
        match = index.find_before(pattern, max(offset, 0)) if backwards else index.find(pattern, offset + 1)
        if get_current_worker().is_cancelled:
            return  # a newer search replaced this one
        if match is None:
            self.app.call_from_thread(self._found, index, query, None, 0, 0)
            return
        line = index.line_of(match.start())
        raw = index.line(line)[: index.column_of(match.start())]
        column = len(sanitize_for_terminal(raw.expandtabs(4)))
        self.app.call_from_thread(self._found, index, query, match.start(), line, column)

    def _found(self, index: LineIndex, query: str, offset: int | None, line: int, column: int) -> None:
        self.searches_done += 1
        if index is not self.index:
            return  # another document was opened meanwhile
        status = self.query_one("#doc-search-status", Static)
        if offset is None:
            self.match_line = None
            status.update(Text(f"no match for {sanitize_for_terminal(query)!r}", style="bold red"))
            return
        self._match_offset, self.match_line = offset, line
        self.view.jump_to(line, column)
        status.update(f"match on line {line + 1:,}")
