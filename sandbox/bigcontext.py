"""``Context``: a huge text input as a str-like object over a read-only mmap. Stdlib only.

Runs inside the jail beside ``worker.py``. Beyond ``SandboxConfig.huge_input_bytes``
the worker binds ``context`` to a :class:`Context` instead of decoding the whole
file into a ``str``: the read-only file stays in the page cache (shared, never
copied whole) and every operation reads pieces of it with ``pread`` into
short-lived buffers. (An ``mmap`` of the file would work the same, but every page a
scan touches then counts in the worker's resident set, and on small VMs the page
faults of a 1 GiB scan cost more than the copies; pread keeps memory flat.)

Character semantics match ``str`` on the decoded UTF-8 text (rlm's inputs are
valid UTF-8; invalid bytes read as U+FFFD). Offsets are character offsets. The
host validated the file before the run and hands its ``facts`` over in the
``init`` frame: the length in characters, whether it is pure ASCII (then
characters are bytes and no offset needs counting) and, for other text, the
character offset at byte checkpoints (about every 1 MiB). Without them (a file
the host did not validate in this process), the first operation that needs
character offsets (``len``, negative or non-zero start indices) makes that pass
itself: an ``isascii`` scan per checkpoint, decoding only non-ASCII pieces.

``find``/``rfind``/``index``/``in`` look for the needle's rarest byte (sampled
from the text) with ``memchr`` and compare the needle only where it occurs,
falling back to the standard substring search when that byte turns out to be
common; either way the scan runs in C over pieces read into one reused buffer.

Regular expressions use the standard ``re`` engine (the jail runs the standard
library only) on overlapping windows of the text, under a time budget per call:
a catastrophic pattern raises :class:`RegexTimeout` instead of hanging the cell.
A match may span window borders but not be longer than ``MAX_MATCH_CHARS``.
"""

from __future__ import annotations

import bisect
import codecs
import os
import re
import signal
import threading
import time

# ``typing`` is not imported at run time (it would slow every worker start): these names exist for the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import FrameType
    from typing import Any, NoReturn

CHECKPOINT_BYTES = 1 << 20
PIECE_BYTES = 4 << 20
WINDOW_BYTES = 8 << 20
#: Context kept before each regex window (for look-behind, ``\b`` and ``^``).
LOOKBEHIND_BYTES = 1024
#: Overlap after each regex window; a match must be shorter than this (the window grows up to the cap).
MATCH_TAIL_BYTES = 64 << 10
MAX_MATCH_CHARS = 16 << 20

#: ``find`` over fewer bytes than this uses the plain substring search (no sampling for a rare byte).
ANCHOR_MIN_BYTES = 1 << 20
#: Bytes of text sampled to pick the needle's rarest byte.
ANCHOR_SAMPLE_BYTES = 16 << 10

METHODS = ("len", "[i]", "[a:b]", "find", "rfind", "index", "rindex", "count", "startswith", "endswith",
           "in", "lines", "splitlines", "chunks", "search", "finditer", "findall")


class RegexTimeout(Exception):
    """A regular expression ran past its time budget (likely catastrophic backtracking)."""


class ContextTooLarge(ValueError):
    """An operation would load more of the huge input into memory than allowed."""


class Context:
    """The input text, memory-mapped. Slices and results are ``str``; the whole text never is."""

    def __init__(self, path: str, *, regex_timeout_s: float = 30.0, max_materialize_chars: int = 64 << 20,
                 checkpoint_bytes: int = CHECKPOINT_BYTES, piece_bytes: int = PIECE_BYTES,
                 window_bytes: int = WINDOW_BYTES, match_tail_bytes: int = MATCH_TAIL_BYTES,
                 anchor_min_bytes: int = ANCHOR_MIN_BYTES, facts: dict[str, Any] | None = None) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._size = os.fstat(self._fd).st_size
        self.regex_timeout_s = regex_timeout_s
        self.max_materialize_chars = max_materialize_chars
        self._checkpoint, self._piece, self._window = checkpoint_bytes, piece_bytes, window_bytes
        self._match_tail = match_tail_bytes
        self._anchor_min = anchor_min_bytes
        self._bytes_at: list[int] | None = None
        self._chars_at: list[int] = []
        self._ascii = False
        self._length: int | None = None  # in characters, when known before the index
        if facts is not None:
            self._adopt(facts)

    def _adopt(self, facts: dict[str, Any]) -> None:
        """Take the host's facts about the file (``rlm.inputs.text_facts``) if they are consistent with it."""
        try:
            size, chars, ascii_only = facts["size"], facts["chars"], facts["ascii"]
            points = facts.get("checkpoints")
        except (TypeError, KeyError, AttributeError):
            return
        if type(size) is not int or type(chars) is not int or type(ascii_only) is not bool or size != self._size:
            return
        if ascii_only:
            if chars == size:
                self._bytes_at, self._chars_at, self._ascii, self._length = [0, size], [0, size], True, size
            return
        if not 0 <= chars <= size:
            return
        self._length = chars
        if not isinstance(points, list) or not points:
            return
        bytes_at: list[int] = []
        chars_at: list[int] = []
        for point in points:
            if not (isinstance(point, list) and len(point) == 2 and type(point[0]) is int and type(point[1]) is int):
                return
            byte, char = point
            if bytes_at and not (byte > bytes_at[-1] and 0 <= char - chars_at[-1] <= byte - bytes_at[-1]):
                return
            bytes_at.append(byte)
            chars_at.append(char)
        if bytes_at[0] == 0 and chars_at[0] == 0 and bytes_at[-1] == size and chars_at[-1] == chars:
            self._bytes_at, self._chars_at = bytes_at, chars_at

    # -- sizes and offsets -----------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Size of the input in bytes (UTF-8)."""
        return self._size

    def __len__(self) -> int:
        if self._length is not None:
            return self._length
        self._index()
        return self._chars_at[-1]

    def __bool__(self) -> bool:
        return self._size > 0

    def _index(self) -> None:
        """One pass recording the character offset of every checkpoint (pure ASCII: trivial)."""
        if self._bytes_at is not None:
            return
        bytes_at, chars_at, ascii_only, pos, chars = [0], [0], True, 0, 0
        buffer = bytearray(self._checkpoint)
        view = memoryview(buffer)
        while pos < self._size:
            end = self._boundary(pos + self._checkpoint)
            n = self._read_into(view, pos, end)
            if n == len(buffer) and buffer.isascii() or n < len(buffer) and view[:n].tobytes().isascii():
                count = n
            else:
                count = len(codecs.decode(view[:n], "utf-8", "replace"))
            ascii_only = ascii_only and count == n
            pos, chars = end, chars + count
            bytes_at.append(pos)
            chars_at.append(chars)
        self._bytes_at, self._chars_at, self._ascii = bytes_at, chars_at, ascii_only
        self._length = chars

    def _boundary(self, pos: int) -> int:
        """``pos`` moved back to the start of a UTF-8 character (clamped to the file)."""
        if pos >= self._size:
            return self._size
        head = self._read(max(0, pos - 3), pos + 1)  # the byte at pos is head[-1]
        index = len(head) - 1
        while pos > 0 and index > 0 and 0x80 <= head[index] < 0xC0:
            pos -= 1
            index -= 1
        return pos

    def _read_into(self, view: memoryview, start: int, end: int) -> int:
        """Read bytes [start, end) of the file into ``view`` (no new buffer); returns the count read."""
        want, got = end - start, 0
        while got < want:
            n = os.preadv(self._fd, [view[got:want]], start + got)
            if not n:
                break
            got += n
        return got

    def _read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the file (a regular file: pread returns them all)."""
        if end <= start:
            return b""
        data = os.pread(self._fd, end - start, start)
        while len(data) < end - start:
            more = os.pread(self._fd, end - start - len(data), start + len(data))
            if not more:
                break
            data += more
        return data

    def _byte_of(self, char: int) -> int:
        self._index()
        if self._ascii:
            return char
        assert self._bytes_at is not None
        i = max(0, bisect.bisect_right(self._chars_at, char) - 1)
        if i >= len(self._bytes_at) - 1:
            return self._size
        need = char - self._chars_at[i]
        if need == 0:
            return self._bytes_at[i]
        text = self._decode(self._bytes_at[i], self._bytes_at[i + 1])
        return self._bytes_at[i] + len(text[:need].encode("utf-8"))

    def _char_of(self, byte: int) -> int:
        self._index()
        if self._ascii:
            return byte
        assert self._bytes_at is not None
        i = max(0, bisect.bisect_right(self._bytes_at, byte) - 1)
        return self._chars_at[i] + len(self._decode(self._bytes_at[i], byte))

    def _bounds(self, start: int | None, end: int | None) -> tuple[int, int]:
        """Byte bounds for str-style ``start``/``end`` character arguments."""
        if start is None and end is None:
            return 0, self._size
        first, last, _ = slice(start, end).indices(len(self))
        return self._byte_of(first), self._byte_of(max(first, last))

    def _decode(self, start_byte: int, end_byte: int) -> str:
        return self._read(start_byte, end_byte).decode("utf-8", "replace")

    # -- str operations --------------------------------------------------------------
    def __getitem__(self, key: int | slice) -> str:
        if isinstance(key, slice):
            return self._slice(key)
        if not isinstance(key, int):
            raise TypeError(f"context indices must be integers or slices, not {type(key).__name__}")
        length = len(self)
        index = key + length if key < 0 else key
        if not 0 <= index < length:
            raise IndexError("context index out of range")
        return self._decode(self._byte_of(index), self._byte_of(index + 1))

    def _slice(self, key: slice) -> str:
        if key.step in (None, 1) and key.start in (None, 0) and isinstance(key.stop, int) and key.stop >= 0:
            return self._prefix(key.stop)  # context[:n] needs no index
        start, stop, step = key.indices(len(self))
        lo, hi = (start, stop) if step > 0 else (stop + 1, start + 1)
        span = max(0, hi - lo)
        self._check_size(span, "context[a:b]")
        text = self._decode(self._byte_of(lo), self._byte_of(max(lo, hi)))
        return text if step == 1 else text[::step] if step > 0 else text[::-1][::-step]

    def _prefix(self, count: int) -> str:
        self._check_size(count, "context[:n]")
        return self._decode(0, self._boundary(min(self._size, 4 * count + 4)))[:count]

    def _check_size(self, chars: int, what: str) -> None:
        if chars > self.max_materialize_chars:
            raise ContextTooLarge(
                f"{what} would load {chars:,} characters into memory (limit {self.max_materialize_chars:,}); "
                f"take smaller slices, or iterate with context.chunks(size) / context.lines()")

    def find(self, sub: str, start: int | None = None, end: int | None = None) -> int:
        """Lowest character offset of ``sub`` in ``context[start:end]``, or -1."""
        lo, hi = self._bounds(start, end)
        pos = self._find_bytes(_utf8(sub, "find"), lo, hi)
        return -1 if pos < 0 else self._char_of(pos)

    def rfind(self, sub: str, start: int | None = None, end: int | None = None) -> int:
        """Highest character offset of ``sub`` in ``context[start:end]``, or -1."""
        lo, hi = self._bounds(start, end)
        pos = self._rfind_bytes(_utf8(sub, "rfind"), lo, hi)
        return -1 if pos < 0 else self._char_of(pos)

    def _find_bytes(self, needle: bytes, lo: int, hi: int) -> int:
        """Lowest byte offset of ``needle`` fully inside [lo, hi), or -1 (pieces overlap by len-1)."""
        if not needle:
            return lo if lo <= hi else -1
        width = len(needle)
        if hi - lo < width:
            return -1
        if hi - lo < self._anchor_min:
            found = self._read(lo, hi).find(needle)
            return -1 if found < 0 else lo + found
        buffer = bytearray(min(self._piece, hi - lo) + width - 1)
        view, search, pos = memoryview(buffer), _Search(needle), lo
        while pos + width <= hi:
            end = min(hi, pos + len(buffer))
            found = search.find(buffer, self._read_into(view, pos, end))
            if found >= 0:
                return pos + found
            pos = end - width + 1
        return -1

    def _rfind_bytes(self, needle: bytes, lo: int, hi: int) -> int:
        """Highest byte offset of ``needle`` fully inside [lo, hi), or -1."""
        if not needle:
            return hi if lo <= hi else -1
        width = len(needle)
        if hi - lo < width:
            return -1
        if hi - lo < self._anchor_min:
            found = self._read(lo, hi).rfind(needle)
            return -1 if found < 0 else lo + found
        buffer = bytearray(min(self._piece, hi - lo) + width - 1)
        view, search, end = memoryview(buffer), _Search(needle), hi
        while end - lo >= width:
            start = max(lo, end - len(buffer))
            found = search.rfind(buffer, self._read_into(view, start, end))
            if found >= 0:
                return start + found
            end = start + width - 1
        return -1

    def index(self, sub: str, start: int | None = None, end: int | None = None) -> int:
        """Like :meth:`find` but raises ``ValueError`` when not found."""
        pos = self.find(sub, start, end)
        if pos < 0:
            raise ValueError("substring not found")
        return pos

    def rindex(self, sub: str, start: int | None = None, end: int | None = None) -> int:
        """Like :meth:`rfind` but raises ``ValueError`` when not found."""
        pos = self.rfind(sub, start, end)
        if pos < 0:
            raise ValueError("substring not found")
        return pos

    def count(self, sub: str, start: int | None = None, end: int | None = None) -> int:
        """Non-overlapping occurrences of ``sub`` in ``context[start:end]`` (as ``str.count``)."""
        needle = _utf8(sub, "count")
        lo, hi = self._bounds(start, end)
        if not needle:
            return self._char_of(hi) - self._char_of(lo) + 1
        total, pos = 0, lo
        while pos < hi:
            cut = self._clean_cut(needle, min(hi, pos + self._piece), hi)
            total += self._read(pos, cut).count(needle)
            pos = cut
        return total

    def _clean_cut(self, needle: bytes, cut: int, hi: int) -> int:
        """Move ``cut`` forward until no occurrence of ``needle`` straddles it (keeps counts exact)."""
        width = len(needle)
        while cut < hi:
            found = self._find_bytes(needle, cut - width + 1, min(hi, cut + width - 1))
            if found < 0 or found >= cut:
                return cut
            cut = found + width
        return hi

    def startswith(self, prefix: str | tuple[str, ...], start: int | None = None, end: int | None = None) -> bool:
        """As ``str.startswith``."""
        options = prefix if isinstance(prefix, tuple) else (prefix,)
        lo, hi = self._bounds(start, end)
        return any(self._starts(_utf8(p, "startswith"), lo, hi) for p in options)

    def endswith(self, suffix: str | tuple[str, ...], start: int | None = None, end: int | None = None) -> bool:
        """As ``str.endswith``."""
        options = suffix if isinstance(suffix, tuple) else (suffix,)
        lo, hi = self._bounds(start, end)
        return any(self._ends(_utf8(s, "endswith"), lo, hi) for s in options)

    def _starts(self, needle: bytes, lo: int, hi: int) -> bool:
        return lo + len(needle) <= hi and self._read(lo, lo + len(needle)) == needle

    def _ends(self, needle: bytes, lo: int, hi: int) -> bool:
        return hi - len(needle) >= lo and self._read(hi - len(needle), hi) == needle

    def __contains__(self, sub: object) -> bool:
        if not isinstance(sub, str):
            raise TypeError(f"'in <Context>' requires string as left operand, not {type(sub).__name__}")
        return self._find_bytes(sub.encode("utf-8"), 0, self._size) >= 0

    # -- iteration ---------------------------------------------------------------------
    def _pieces(self, start: int = 0, end: int | None = None, size: int | None = None) -> Iterator[str]:
        """Decoded text of consecutive byte pieces cut at character boundaries."""
        end = self._size if end is None else end
        size = size or self._piece
        pos = start
        while pos < end:
            cut = self._boundary(min(end, pos + size)) if pos + size < end else end
            if cut <= pos:
                cut = min(end, pos + 4)
            yield self._decode(pos, cut)
            pos = cut

    def lines(self, keepends: bool = False) -> Iterator[str]:
        """Iterate over the lines (``str.splitlines`` semantics), one piece of the file at a time."""
        carry = ""
        for piece in self._pieces():
            text = carry + piece
            parts = text.splitlines(True)
            carry = parts[-1] if parts else ""
            self._check_size(len(carry), "a single line")
            yield from text[:len(text) - len(carry)].splitlines(keepends)
        if carry:
            yield from carry.splitlines(keepends)

    def splitlines(self, keepends: bool = False) -> Iterator[str]:
        """An *iterator* over the lines (not a list: the input is too large for one)."""
        return self.lines(keepends)

    def __iter__(self) -> Iterator[str]:
        """Iterating a Context yields its lines (without line endings), not characters."""
        return self.lines()

    def chunks(self, size: int = 1_000_000, overlap: int = 0) -> Iterator[str]:
        """Consecutive ``str`` chunks of ``size`` characters, each starting ``overlap`` characters early."""
        if size <= 0 or not 0 <= overlap < size:
            raise ValueError("chunks: need size > 0 and 0 <= overlap < size")
        self._check_size(size, "chunks(size)")
        buffer, start, step = "", 0, size - overlap
        for piece in self._pieces():
            buffer += piece
            while len(buffer) - start >= size:
                yield buffer[start:start + size]
                start += step
            buffer, start = buffer[start:], 0
        while start < len(buffer):  # the tail, as [text[i:i + size] for i in range(0, len(text), step)]
            yield buffer[start:start + size]
            start += step

    # -- regular expressions --------------------------------------------------------------
    def search(self, pattern: str | re.Pattern[str], flags: int = 0) -> ContextMatch | None:
        """The first match of ``pattern`` (a :class:`ContextMatch`, offsets into the whole text) or None."""
        with _Budget(self.regex_timeout_s, "search"):
            for match in self._matches(_compile(pattern, flags)):
                return match
        return None

    def finditer(self, pattern: str | re.Pattern[str], flags: int = 0) -> Iterator[ContextMatch]:
        """Iterate over non-overlapping matches (:class:`ContextMatch`), in order."""
        compiled = _compile(pattern, flags)
        budget = _Budget(self.regex_timeout_s, "finditer")
        for batch in self._match_batches(compiled, budget):
            yield from batch

    def findall(self, pattern: str | re.Pattern[str], flags: int = 0) -> list[Any]:
        """As ``re.findall`` over the whole text: strings, or tuples of groups."""
        compiled = _compile(pattern, flags)
        with _Budget(self.regex_timeout_s, "findall"):
            return [_found(m, compiled.groups) for m in self._matches(compiled)]

    def _matches(self, compiled: re.Pattern[str]) -> Iterator[ContextMatch]:
        for batch in self._match_batches(compiled, None):
            yield from batch

    def _match_batches(self, compiled: re.Pattern[str], budget: _Budget | None) -> Iterator[list[ContextMatch]]:
        """Matches window by window; each window's matches are found under the budget."""
        pos, chars, resume = 0, 0, 0
        while True:
            cut = self._boundary(pos + self._window)
            last = cut >= self._size
            if budget is None:
                batch, chars_in, resume = self._scan(compiled, pos, cut, chars, resume, last)
            else:
                with budget:
                    batch, chars_in, resume = self._scan(compiled, pos, cut, chars, resume, last)
            yield batch
            if last:
                return
            pos, chars = cut, chars + chars_in

    def _scan(self, compiled: re.Pattern[str], pos: int, cut: int, chars: int, resume: int,
              last: bool) -> tuple[list[ContextMatch], int, int]:
        """Matches starting in bytes [pos, cut) whose global char offset is ``chars`` at ``pos``."""
        before = self._decode(self._boundary(max(0, pos - LOOKBEHIND_BYTES)), pos)
        main = self._decode(pos, cut)
        tail_bytes = self._match_tail
        while True:
            tail_end = self._boundary(cut + tail_bytes)
            text = before + main + (self._decode(cut, tail_end) if not last else "")
            base = chars - len(before)  # global char offset of text[0]
            whole = last or tail_end >= self._size
            batch: list[ContextMatch] = []
            touched = False
            for m in compiled.finditer(text, max(len(before), resume - base)):
                if m.start() >= len(before) + len(main) and not last:
                    break
                if not whole and m.end() >= len(text) - 1:  # maybe cut short, or a false $
                    touched = True
                    break
                batch.append(ContextMatch(m, base))
            if not touched:
                new_resume = batch[-1].end() if batch else resume
                return batch, len(main), max(new_resume, resume)
            if len(text) > MAX_MATCH_CHARS:
                raise ContextTooLarge(f"a match of this pattern is longer than {MAX_MATCH_CHARS:,} characters; "
                                      "use a more specific pattern (e.g. [^\\n]* instead of .* with DOTALL)")
            tail_bytes *= 4

    # -- display ---------------------------------------------------------------------
    def __repr__(self) -> str:
        return (f"<Context: {self._size:,} bytes of text, memory-mapped (not loaded). "
                f"Use len, slicing, find/count, lines(), chunks(n), search/finditer/findall.>")

    def __str__(self) -> str:
        length = len(self)
        self._check_size(length, "str(context)")
        return self._decode(0, self._size)

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"Context (a huge input kept out of memory) has no .{name}(); it supports "
            f"{', '.join(METHODS)}. Slices (context[a:b]) and chunks are plain str with every str method.")


class ContextMatch:
    """A regex match in a :class:`Context`: ``re.Match``'s API with offsets into the whole text.

    It keeps only its groups and spans, not the window of text it was found in.
    """

    def __init__(self, match: re.Match[str], base: int) -> None:
        self.re = match.re
        count = match.re.groups
        self._groups = tuple(match.group(i) for i in range(count + 1))
        self._spans = tuple((a + base if a >= 0 else a, b + base if b >= 0 else b)
                            for a, b in (match.span(i) for i in range(count + 1)))
        self.lastindex = match.lastindex
        self.lastgroup = match.lastgroup

    def _number(self, group: int | str) -> int:
        number = self.re.groupindex.get(group, group) if isinstance(group, str) else group
        if not isinstance(number, int) or not 0 <= number < len(self._groups):
            raise IndexError("no such group")
        return number

    def group(self, *groups: int | str) -> Any:
        if len(groups) <= 1:
            return self._groups[self._number(groups[0] if groups else 0)]
        return tuple(self._groups[self._number(g)] for g in groups)

    def __getitem__(self, group: int | str) -> Any:
        return self.group(group)

    def groups(self, default: Any = None) -> tuple[Any, ...]:
        return tuple(default if g is None else g for g in self._groups[1:])

    def groupdict(self, default: Any = None) -> dict[str, Any]:
        return {name: default if self._groups[i] is None else self._groups[i] for name, i in self.re.groupindex.items()}

    def start(self, group: int | str = 0) -> int:
        return self._spans[self._number(group)][0]

    def end(self, group: int | str = 0) -> int:
        return self._spans[self._number(group)][1]

    def span(self, group: int | str = 0) -> tuple[int, int]:
        return self._spans[self._number(group)]

    def __repr__(self) -> str:
        return f"<ContextMatch object; span={self.span()}, match={self.group()!r}>"


class _Search:
    """Substring search in a buffer, anchored on the needle's rarest byte (``memchr``) while that pays.

    The anchor is the byte of the needle that occurs least often in a sample of
    the first buffer searched. Each occurrence of it is a candidate, checked
    with ``startswith``; when candidates turn out denser than one per KiB, the
    anchor is dropped and the plain (two-way) ``bytes.find`` takes over.
    """

    def __init__(self, needle: bytes) -> None:
        self.needle = needle
        self.anchor: tuple[int, int] | None = None  # (byte value, its offset in the needle)
        self._sampled = len(needle) < 2  # a one-byte needle is already a memchr

    def _pick(self, buffer: bytearray, n: int) -> None:
        self._sampled = True
        sample = min(n, ANCHOR_SAMPLE_BYTES)
        best: tuple[int, int] | None = None
        seen: set[int] = set()
        for offset, byte in enumerate(self.needle[:64]):
            if byte not in seen:
                seen.add(byte)
                count = buffer.count(byte, 0, sample)
                if best is None or count < best[0]:
                    best = (count, offset)
        if best is not None and best[0] * 1024 <= sample:
            self.anchor = (self.needle[best[1]], best[1])

    def find(self, buffer: bytearray, n: int) -> int:
        """Lowest offset of the needle in ``buffer[:n]``, or -1."""
        if not self._sampled:
            self._pick(buffer, n)
        needle, width = self.needle, len(self.needle)
        if self.anchor is None:
            return buffer.find(needle, 0, n)
        byte, offset = self.anchor
        stop = n - width + offset + 1  # an anchor at or past this leaves no room for the needle
        budget = 16 + (n >> 10)
        at = buffer.find(byte, offset, stop)
        while at >= 0:
            start = at - offset
            if buffer.startswith(needle, start, n):
                return start
            budget -= 1
            if budget < 0:  # the anchor byte is common here: the plain search is faster
                self.anchor = None
                return buffer.find(needle, start + 1, n)
            at = buffer.find(byte, at + 1, stop)
        return -1

    def rfind(self, buffer: bytearray, n: int) -> int:
        """Highest offset of the needle in ``buffer[:n]``, or -1."""
        if not self._sampled:
            self._pick(buffer, n)
        needle, width = self.needle, len(self.needle)
        if self.anchor is None:
            return buffer.rfind(needle, 0, n)
        byte, offset = self.anchor
        stop = n - width + offset + 1
        budget = 16 + (n >> 10)
        at = buffer.rfind(byte, offset, stop)
        while at >= 0:
            start = at - offset
            if buffer.startswith(needle, start, n):
                return start
            budget -= 1
            if budget < 0:
                self.anchor = None
                return buffer.rfind(needle, 0, start + width - 1)
            at = buffer.rfind(byte, offset, at)
        return -1


def _utf8(sub: object, method: str) -> bytes:
    if not isinstance(sub, str):
        raise TypeError(f"Context.{method}() argument must be str, not {type(sub).__name__}")
    return sub.encode("utf-8")


def _compile(pattern: object, flags: int) -> re.Pattern[str]:
    if isinstance(pattern, re.Pattern):
        if flags:
            raise ValueError("cannot process flags argument with a compiled pattern")
        return pattern
    if not isinstance(pattern, str):
        raise TypeError("Context regex patterns must be str (the text is str), "
                        f"not {type(pattern).__name__}")
    return re.compile(pattern, flags)


def _found(match: ContextMatch, groups: int) -> Any:
    if groups == 0:
        return match.group()
    if groups == 1:
        return match.group(1)
    return match.groups("")


class _Budget:
    """A wall-clock budget for regex work, re-entered per window; SIGALRM interrupts ``re`` (it checks signals)."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.what = what
        self.used = 0.0
        self._entered = 0.0
        self._armed = False
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None

    def __enter__(self) -> _Budget:
        self._entered = time.monotonic()
        remaining = self.seconds - self.used
        if remaining <= 0:
            self._raise()
        if self.seconds > 0 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGALRM, self._alarm)
            signal.setitimer(signal.ITIMER_REAL, remaining)
            self._armed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL if self._previous is None else self._previous)
            self._armed = False
        self.used += time.monotonic() - self._entered

    def _alarm(self, signum: int, frame: FrameType | None) -> None:
        self._raise()

    def _raise(self) -> None:
        raise RegexTimeout(
            f"context.{self.what}() ran past its {self.seconds:g}s regex budget (catastrophic backtracking?). "
            "Simplify the pattern: avoid nested quantifiers like (a+)+ and unanchored .* runs.")


class _ReDispatch:
    """``re.search``/``finditer``/``findall`` handing a :class:`Context` to its own method, anything else to ``re``."""

    context_dispatch = True  # marks an installed dispatcher: each function is wrapped once

    def __init__(self, name: str, original: Callable[..., Any]) -> None:
        self.__name__ = name
        self.__doc__ = original.__doc__
        self._name, self._original = name, original

    def __call__(self, pattern: Any, string: Any, flags: int = 0) -> Any:
        if isinstance(string, Context):
            return getattr(string, self._name)(pattern, flags)
        return self._original(pattern, string, flags)


def install_re_dispatch() -> None:
    """Make ``re.search/finditer/findall(pattern, context)`` work when ``context`` is a Context."""
    for name in ("search", "finditer", "findall"):
        original = getattr(re, name)
        if not getattr(original, "context_dispatch", False):
            setattr(re, name, _ReDispatch(name, original))
