"""A line index over a memory-mapped file, for showing huge documents.

:class:`LineIndex` maps a file read-only (``mmap``: the OS pages in only what is
read) and records the byte offset where each line starts, so line *n* is one
slice away however big the file is. Indexing is incremental
(:meth:`LineIndex.index_more` scans one chunk), so a UI can show the first
screen of a 1 GB log at once and index the rest in a background thread. Memory
is 8 bytes per line (numpy ``int64`` chunks; a pure-Python ``array`` if numpy
is missing). Search runs a regular expression over the mapped bytes, forwards
or backwards from a byte offset, without decoding the file.

Lines are decoded as UTF-8 with invalid bytes replaced; ``\\r\\n`` and ``\\n``
both end a line.
"""

from __future__ import annotations

import bisect
import mmap
import re
import threading
from array import array
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    #: The line starts found in one chunk: numpy offsets, or an ``array("q")`` where numpy is missing.
    Starts = array[int] | NDArray[np.int64]

__all__ = ["LineIndex", "search_pattern"]

#: Bytes scanned per indexing step.
INDEX_CHUNK = 8 * 1024 * 1024
#: Bytes scanned per step of a backwards search.
BACKWARD_WINDOW = 4 * 1024 * 1024
#: Characters of one line that are ever decoded (a 100 MB line is not drawn whole).
MAX_LINE_CHARS = 10_000


def _newlines(chunk: bytes, base: int) -> Starts:
    """Offsets just after each ``\\n`` in ``chunk`` (offsets relative to the file)."""
    try:
        import numpy as np
    except ImportError:  # numpy comes with Ray; fall back to a slower scan without it
        return array("q", (m.end() + base for m in re.finditer(b"\n", chunk)))
    positions = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)
    return positions.astype(np.int64) + (base + 1)


def _max_gap(starts: Starts) -> int:
    """The largest difference between consecutive line starts."""
    if len(starts) < 2:
        return 0
    if isinstance(starts, array):
        return max(b - a for a, b in zip(starts, starts[1:], strict=False))
    return int((starts[1:] - starts[:-1]).max())


def search_pattern(query: str) -> re.Pattern[bytes]:
    """A byte pattern for ``query``: literal, case-insensitive unless it has a capital (smart case)."""
    flags = 0 if any(ch.isupper() for ch in query) else re.IGNORECASE
    return re.compile(re.escape(query.encode("utf-8")), flags)


class LineIndex:
    """Line starts of a file (or of bytes), built incrementally; see the module docstring."""

    def __init__(self, data: Any, size: int, source: str) -> None:
        self._data = data
        self.size = size
        self.source = source
        self._chunks: list[Starts] = [array("q", [0])] if size else []
        self._firsts: list[int] = [0] if size else []  # line number of each chunk's first entry
        self._lines = 1 if size else 0
        self._scanned = 0
        self.longest_line = 0  # bytes, an upper bound on a line's width in cells
        self._lock = threading.Lock()
        self._file: Any = None

    @classmethod
    def open(cls, path: Path) -> LineIndex:
        """Map ``path`` read-only. Raises ``OSError`` if it cannot be read."""
        handle = open(path, "rb")  # noqa: SIM115 - the index owns it: close() closes it
        try:
            size = Path(path).stat().st_size
            data: Any = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except BaseException:
            handle.close()
            raise
        index = cls(data, size, str(path))
        index._file = handle
        return index

    @classmethod
    def from_text(cls, text: str, source: str = "") -> LineIndex:
        """An index over text held in memory (e.g. a directory listing)."""
        data = text.encode("utf-8")
        return cls(data, len(data), source)

    def close(self) -> None:
        """Unmap the file. Safe to call twice."""
        if isinstance(self._data, mmap.mmap):
            self._data.close()
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- indexing -----------------------------------------------------------

    @property
    def complete(self) -> bool:
        return self._scanned >= self.size

    @property
    def progress(self) -> float:
        """Fraction of the file indexed (1.0 when done)."""
        return 1.0 if not self.size else self._scanned / self.size

    @property
    def line_count(self) -> int:
        """Lines known so far (all of them once :attr:`complete`)."""
        return self._lines

    def index_more(self, chunk_bytes: int = INDEX_CHUNK) -> bool:
        """Index the next chunk; return True while there is more to do."""
        start = self._scanned
        end = min(self.size, start + chunk_bytes)
        if start >= end:
            return False
        starts = _newlines(self._data[start:end], start)
        if len(starts) and int(starts[-1]) >= self.size:
            starts = starts[:-1]  # a final "\n" starts no new line
        self._measure(starts, end)
        with self._lock:
            if len(starts):
                self._chunks.append(starts)
                self._firsts.append(self._lines)
                self._lines += len(starts)
            self._scanned = end
        return end < self.size

    def _measure(self, starts: Starts, end: int) -> None:
        """Update :attr:`longest_line` with the lines this chunk completed."""
        previous = int(self._chunks[-1][-1]) if self._chunks else 0
        widest = 0
        if len(starts):
            widest = max(int(starts[0]) - previous, _max_gap(starts))
            previous = int(starts[-1])
        if end >= self.size:
            widest = max(widest, self.size - previous)
        self.longest_line = max(self.longest_line, widest)

    def index_all(self) -> None:
        while self.index_more():
            pass

    # -- reading ------------------------------------------------------------

    def line_start(self, number: int) -> int:
        """Byte offset where line ``number`` (0-based) starts."""
        with self._lock:
            chunk = bisect.bisect_right(self._firsts, number) - 1
            return int(self._chunks[chunk][number - self._firsts[chunk]])

    def line_end(self, number: int) -> int:
        """Byte offset just past line ``number``'s text (its newline excluded)."""
        if number + 1 < self._lines:
            end = self.line_start(number + 1) - 1
        else:
            end = self._scanned if not self.complete else self.size
            if end and self._data[end - 1:end] == b"\n":
                end -= 1
        if end > 0 and self._data[end - 1:end] == b"\r":
            end -= 1
        return max(end, self.line_start(number))

    def line(self, number: int) -> str:
        """The text of line ``number`` (at most :data:`MAX_LINE_CHARS` characters)."""
        start = self.line_start(number)
        end = min(self.line_end(number), start + MAX_LINE_CHARS * 4)
        return self._data[start:end].decode("utf-8", "replace")[:MAX_LINE_CHARS]

    def line_of(self, offset: int) -> int:
        """The line holding byte ``offset`` (among the lines indexed so far)."""
        with self._lock:
            heads = [int(chunk[0]) for chunk in self._chunks]
            which = max(bisect.bisect_right(heads, offset) - 1, 0)
            chunk = self._chunks[which]
            return self._firsts[which] + max(bisect.bisect_right(chunk, offset) - 1, 0)

    def column_of(self, offset: int) -> int:
        """The character column of byte ``offset`` within its line."""
        start = self.line_start(self.line_of(offset))
        return len(self._data[start:offset].decode("utf-8", "replace"))

    # -- search -------------------------------------------------------------

    def find(self, pattern: re.Pattern[bytes], start: int) -> re.Match[bytes] | None:
        """The first match at or after byte ``start``, wrapping around to the top."""
        match = pattern.search(self._data, max(0, start))
        if match is None and start > 0:
            match = pattern.search(self._data, 0)
        return match

    def find_before(self, pattern: re.Pattern[bytes], offset: int) -> re.Match[bytes] | None:
        """The last match starting before byte ``offset``, wrapping around to the bottom."""
        for limit in (offset, self.size):
            found = self._last_match_before(pattern, limit)
            if found is not None:
                return found
        return None

    def _last_match_before(self, pattern: re.Pattern[bytes], limit: int) -> re.Match[bytes] | None:
        """Scan windows backwards from ``limit``; the last match starting before it."""
        end = limit
        reach = len(pattern.pattern)  # a literal's escaped form is at least as long as a match
        while end > 0:
            begin = max(0, end - BACKWARD_WINDOW)
            found = None
            for match in pattern.finditer(self._data, begin, min(self.size, end + reach)):
                if match.start() >= end:
                    break
                found = match
            if found is not None:
                return found
            end = begin
        return None
