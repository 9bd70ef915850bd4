"""The streaming UTF-8 scan of text inputs, and the cleaned copy of invalid ones.

One pass over a reused buffer validates a file, counts its characters, keeps its
preview and notes ``(byte, char)`` checkpoints at chunk borders (see
:mod:`rlm.inputs.facts`); memory stays flat even for a 1 GiB input.
"""

from __future__ import annotations

import codecs
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

from rlm.inputs import fileio
from rlm.inputs.facts import SETTLE_NS, Facts, identity, thin
from rlm.inputs.fileio import open_input, open_unbuffered, payload_writer, read_chunk, read_error
from rlm.inputs.payload import PREVIEW_CHARS

__all__ = ["Preview", "TextScan", "copy_as_clean_utf8", "decode", "scan_utf8", "to_utf8"]


@dataclass
class TextScan:
    """What one streaming pass over a file found."""

    chars: int
    preview: str
    bad_offset: int | None
    has_bom: bool
    size: int = 0
    facts: Facts | None = None


class Preview:
    """Collects the first :data:`PREVIEW_CHARS` characters of a stream of text."""

    def __init__(self) -> None:
        self.text = ""

    def feed(self, text: str) -> None:
        if len(self.text) < PREVIEW_CHARS:
            self.text += text[: PREVIEW_CHARS - len(self.text)]

    def feed_ascii(self, data: bytearray, size: int) -> None:
        if len(self.text) < PREVIEW_CHARS:
            self.text += data[: min(size, PREVIEW_CHARS - len(self.text))].decode("ascii")


def scan_utf8(path: Path, label: str, *, written_here: bool = False) -> TextScan:
    """Validate ``path`` as UTF-8 in one pass; count characters; find the first bad byte.

    The file is read into one reused buffer. A chunk that is pure ASCII (checked
    by ``bytearray.isascii``, a C scan) is valid as it is and has as many
    characters as bytes; any other chunk goes through a strict incremental
    decoder, which carries a character cut by a chunk border over to the next.
    The pass also collects the :func:`~rlm.inputs.facts.text_facts` of a valid file (``written_here``:
    a file this module wrote, e.g. stdin's copy, which nobody else writes to).
    """
    size = fileio.CHUNK_BYTES  # read at call time: tests shrink it
    buffer = bytearray(size)
    view = memoryview(buffer)
    preview = Preview()
    chars = fed = 0
    pending = b""  # the start of a character cut by the last chunk border
    all_ascii, has_bom = True, False
    checkpoints = [(0, 0)]
    started_ns = time.time_ns()
    with open_unbuffered(path, label) as f:
        before = os.fstat(f.fileno())
        while True:
            n = _fill(f, view, label)
            if fed == 0:
                has_bom = buffer.startswith(codecs.BOM_UTF8) and n >= len(codecs.BOM_UTF8)
            if not pending and (buffer.isascii() if n == size else view[:n].tobytes().isascii()):
                preview.feed_ascii(buffer, n)
                chars += n
            else:
                all_ascii = False
                data = pending + view[:n] if pending else view[:n]
                try:
                    text, used = codecs.utf_8_decode(data, "strict", not n)
                except UnicodeDecodeError as exc:
                    return TextScan(chars, preview.text, fed - len(pending) + exc.start, has_bom)
                pending = bytes(data[used:])
                chars += len(text)
                preview.feed(text)
            fed += n
            if not n:
                break
            if fed - len(pending) > checkpoints[-1][0]:  # a chunk inside one character adds none
                checkpoints.append((fed - len(pending), chars))
        after = os.fstat(f.fileno())
    facts = None
    # Remember the facts only for a file that did not change while it was read and has settled
    # (a write within one coarse timestamp tick after the check would not change its mtime).
    settled = written_here or max(after.st_mtime_ns, after.st_ctime_ns) < started_ns - SETTLE_NS
    if identity(before) == identity(after) and after.st_size == fed and settled:
        facts = Facts(identity(after), chars, all_ascii, None if all_ascii else thin(checkpoints))
    return TextScan(chars, preview.text, None, has_bom, size=fed, facts=facts)


def _fill(f: io.FileIO, view: memoryview, label: str) -> int:
    """Read into ``view`` until it is full or the file ends; returns the bytes read."""
    n = 0
    try:
        while n < len(view):
            got = f.readinto(view[n:])
            if not got:
                break
            n += got
    except OSError as exc:
        raise read_error(label, exc) from None
    return n


def copy_as_clean_utf8(src: Path, label: str, workdir: Path) -> tuple[Path, int, str, list[tuple[int, int]]]:
    """Stream ``src`` into a new file, replacing invalid UTF-8 and dropping a BOM.

    Returns the new path, its length in characters, its preview and its
    ``(byte, char)`` checkpoints (one per chunk written).
    """
    decoder = codecs.getincrementaldecoder("utf-8-sig")("replace")
    preview = Preview()
    chars = written = 0
    checkpoints = [(0, 0)]
    with payload_writer(workdir, ".txt") as (dst, out), open_input(src, label) as f:
        while True:
            chunk = read_chunk(f, label)
            text = decoder.decode(chunk, final=not chunk)
            data = text.encode("utf-8")
            out.write(data)
            chars += len(text)
            written += len(data)
            if data:
                checkpoints.append((written, chars))
            preview.feed(text)
            if not chunk:
                break
    return dst, chars, preview.text, checkpoints


def decode(data: bytes, label: str) -> tuple[str, list[str]]:
    """Decode bytes as UTF-8 (dropping a BOM); invalid bytes are replaced with a warning."""
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    body = memoryview(data)[start:]
    try:
        return str(body, "utf-8"), []
    except UnicodeDecodeError as exc:
        warning = (
            f"invalid UTF-8 in {label} at byte offset {start + exc.start}; "
            "invalid bytes were replaced with U+FFFD"
        )
        return str(body, "utf-8", "replace"), [warning]


def to_utf8(text: str, label: str, warnings: list[str]) -> bytes:
    """Encode ``text``; lone surrogates become ``?`` and add a warning."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        warnings.append(f"{label}: characters that UTF-8 cannot encode (lone surrogates) were replaced with '?'")
        return text.encode("utf-8", "replace")
