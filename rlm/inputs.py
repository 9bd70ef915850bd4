"""Turn what the user passes to ``rlm ask PATH`` into a context payload.

The user's input never goes into a prompt: it becomes the variable ``context``
inside the sandboxed REPL worker. This module turns a path (a file, a
directory, or ``-`` for stdin), a string or a list of documents into a
:class:`ContextPayload`: one file on disk plus the facts the prompt needs
(:meth:`ContextPayload.describe`) and the run log records
(:meth:`ContextPayload.info`).

Payload file formats (the contract with the sandbox worker)
-----------------------------------------------------------
The worker memory-maps ``payload.path`` read-only and builds ``context`` from
it according to ``payload.kind``:

``"text"``
    The file is valid UTF-8 with no byte-order mark. ``context`` is the decoded
    ``str`` (``payload.length_chars`` characters). Only
    :func:`payload_from_text` can produce an empty file (``context == ""``;
    ``mmap`` cannot map zero bytes, so the worker must special-case size 0).
    Line endings are left as they were in the input.

``"documents"``
    The file is a UTF-8 JSON array (no BOM) of objects with exactly two string
    keys, in a deterministic order::

        [
        {"path": "notes/a.md", "text": "..."},
        {"path": "report.pdf", "text": "..."}
        ]

    ``context`` is ``json.loads`` of it: a ``list`` of ``dict``. Directory
    inputs use POSIX paths relative to the directory, sorted as a depth-first
    walk with entries ordered by name.

Where the file comes from
-------------------------
* A plain UTF-8 text file (text, Markdown, logs, source code, and CSV/TSV and
  JSONL after validation) is used **in place**: no copy, ``owned`` is False.
  It is validated in one streaming pass over a reused buffer, so memory stays
  flat even for a 1 GiB input: pure-ASCII chunks are checked with
  ``bytearray.isascii`` (a C scan, no decoding), other chunks go through a
  strict incremental UTF-8 decoder. The same pass counts characters and notes
  where character offsets fall (:func:`text_facts`), so the sandbox worker never
  scans the file again to answer ``len(context)`` or turn byte offsets into
  character offsets.
* Invalid UTF-8 (or a UTF-8 BOM) makes a cleaned copy in ``workdir``, decoded
  with ``errors="replace"``; a warning names the file and the byte offset of
  the first bad byte.
* JSON, HTML and PDF files are converted (pretty-printed JSON, visible text,
  extracted page text) and the text is written to ``workdir``.
* ``-`` copies stdin to ``workdir``.
* A directory becomes ``"documents"``: hidden entries (``.git``, ``.env``...),
  ``__pycache__`` and ``node_modules`` are ignored; binary files, empty files,
  unreadable files, PDFs without extractable text (or without pypdf), special
  files, symlinked directories and symlinks that leave the directory are listed
  in ``skipped``. Inside a directory a JSON/JSONL/CSV file that does not parse is
  kept as raw text with a warning (a single such file is an error).

Files written to ``workdir`` (mode 0600, via :func:`tempfile.mkstemp`) are owned by the payload (``owned`` is True) and
deleted by :meth:`ContextPayload.cleanup`. Bad input raises
:class:`~rlm.errors.InputError` with a message meant for the user; failing to
write into ``workdir`` raises :class:`~rlm.errors.RLMError`.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import logging
import os
import re
import stat
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, BinaryIO

from rlm.errors import InputError, RLMError

__all__ = [
    "ContextPayload",
    "DocumentInfo",
    "load_context",
    "payload_from_text",
    "payload_from_documents",
    "text_facts",
    "PREVIEW_CHARS",
]

#: Characters of text kept in :attr:`ContextPayload.preview`.
PREVIEW_CHARS = 300
#: What :meth:`ContextPayload.describe` says when ``context`` is a memory-mapped ``Context`` (huge text).
HUGE_CONTEXT_DESCRIPTION = (
    "`context` is a Context object: {chars:,} characters ({size:,} bytes) of text, memory-mapped because it "
    "is too large to load as one str. It supports len(context), context[i], context[a:b] (a str), "
    "find/rfind/index/rindex/count/startswith/endswith, `x in context`, context.lines() (an iterator over "
    "lines; so are iter(context) and context.splitlines()), context.chunks(size, overlap=0) (str chunks), and "
    "regex context.search/finditer/findall(pattern) (re.search/finditer/findall(pattern, context) work too; "
    "match offsets are into the whole text). str(context) and other str methods (split, lower, ...) are not "
    "available on the whole: use them on slices or chunks."
)
#: Documents listed by name in :meth:`ContextPayload.describe`.
DESCRIBE_MAX_DOCUMENTS = 20
#: Bytes read at a time when validating or copying a large file (1 MiB: the buffer stays in a core's L2).
CHUNK_BYTES = 1024 * 1024
#: At most this many (byte, char) checkpoints are kept per file in :func:`text_facts` (thinned beyond).
MAX_CHECKPOINTS = 4096
#: Files whose facts are remembered for the sandbox (the most recent ones).
MAX_REMEMBERED_FILES = 64
#: Bytes sniffed for NUL to decide a file is binary.
SNIFF_BYTES = 8192

TEXT_EXTENSIONS = frozenset(
    """
    .txt .text .md .markdown .rst .log .adoc .org .tex .bib .srt .vtt .diff .patch
    .py .pyi .js .jsx .mjs .cjs .ts .tsx .java .kt .kts .scala .go .rs .c .h .cc
    .cpp .cxx .hpp .hh .cs .rb .php .pl .pm .swift .m .mm .r .jl .lua .dart .zig
    .ex .exs .erl .hs .ml .clj .sh .bash .zsh .fish .ps1 .bat .sql .css .scss
    .less .vue .svelte .proto .graphql .yaml .yml .toml .ini .cfg .conf
    .properties .xml .gradle .cmake .mk .tf .hcl
    """.split()
)
BINARY_EXTENSIONS = frozenset(
    """
    .png .jpg .jpeg .gif .bmp .ico .webp .tif .tiff .heic .psd
    .zip .gz .tgz .bz2 .xz .zst .lz4 .7z .rar .tar .iso .dmg .deb .rpm .apk
    .exe .dll .so .dylib .o .a .lib .obj .class .jar .war .pyc .pyo .pyd .whl
    .egg .wasm .bin
    .mp3 .mp4 .m4a .wav .flac .ogg .opus .avi .mov .mkv .webm
    .woff .woff2 .ttf .otf .eot
    .sqlite .sqlite3 .db .parquet .feather .arrow .npy .npz .pkl .pickle .h5
    .hdf5 .onnx .pt .pth .safetensors .gguf .ckpt
    .doc .docx .xls .xlsx .ppt .pptx .odt .ods .odp .epub
    """.split()
)
JSON_EXTENSIONS = frozenset({".json"})
JSONL_EXTENSIONS = frozenset({".jsonl", ".ndjson"})
CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}
HTML_EXTENSIONS = frozenset({".html", ".htm", ".xhtml"})
PDF_EXTENSIONS = frozenset({".pdf"})
IGNORED_DIR_NAMES = frozenset({"__pycache__", "node_modules"})

_SUPPORTED = "text, Markdown, logs, source code, JSON, JSONL, CSV/TSV, HTML and PDF"
_STDIN_LABEL = "stdin"


# --------------------------------------------------------------------------- payload


@dataclass(frozen=True)
class DocumentInfo:
    """One document of a ``"documents"`` payload: its path and its length."""

    name: str
    chars: int


@dataclass(frozen=True)
class ContextPayload:
    """A file the sandbox worker turns into ``context``, plus what to say about it.

    Attributes:
        path: the file the worker memory-maps read-only (see the module docs).
        kind: ``"text"`` (``context`` is a ``str``) or ``"documents"``
            (``context`` is a list of ``{"path": str, "text": str}``).
        size_bytes: size of ``path`` in bytes.
        length_chars: total characters of text (of all documents).
        preview: the first :data:`PREVIEW_CHARS` characters of the text (of the
            first document).
        documents: name and length of each document; empty for ``"text"``.
        skipped: ``"name: reason"`` for each file left out of a directory.
        warnings: things the user should know (e.g. invalid UTF-8 replaced).
        owned: True when ``path`` is a file this module created in the workdir;
            :meth:`cleanup` deletes it.
        source: what the user gave, for messages (a path, ``"stdin"``...).
    """

    path: Path
    kind: str
    size_bytes: int
    length_chars: int
    preview: str
    documents: list[DocumentInfo] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    owned: bool = False
    source: str = ""

    def describe(self, huge_input_bytes: int | None = None) -> str:
        """A few lines for the model's prompt: what ``context`` is, its size, a preview.

        ``huge_input_bytes`` is the sandbox's threshold (``SandboxConfig.huge_input_bytes``,
        its default when None) above which ``context`` is a memory-mapped ``Context`` object.
        """
        if huge_input_bytes is None:
            from rlm.config import SandboxConfig  # noqa: PLC0415 - config imports nothing from here

            huge_input_bytes = SandboxConfig().huge_input_bytes
        if self.kind == "documents":
            lines = self._describe_documents()
            if not self.documents:
                return "\n".join(lines)
            header = f"Preview of the first document ({self.documents[0].name})"
        elif 0 < huge_input_bytes < self.size_bytes:
            lines = [HUGE_CONTEXT_DESCRIPTION.format(chars=self.length_chars, size=self.size_bytes)]
            header = "Preview"
        else:
            lines = [f"`context` is a str of {self.length_chars:,} characters."]
            header = "Preview"
        shown = len(self.preview)
        total = self.documents[0].chars if self.documents else self.length_chars
        amount = "the whole text" if shown >= total else f"first {shown:,} characters"
        lines.append(f"{header}, {amount}:")
        lines.append("<<<")
        lines.append(self.preview)
        lines.append(">>>")
        return "\n".join(lines)

    def _describe_documents(self) -> list[str]:
        """The lines of :meth:`describe` that list the documents."""
        count = len(self.documents)
        lines = [
            f'`context` is a list of {count:,} documents, each a dict {{"path": str, "text": str}}; '
            f"{self.length_chars:,} characters of text in total.",
        ]
        if count:
            lines.append("Documents:" if count <= DESCRIBE_MAX_DOCUMENTS else f"First {DESCRIBE_MAX_DOCUMENTS} documents:")
        for doc in self.documents[:DESCRIBE_MAX_DOCUMENTS]:
            lines.append(f"  - {doc.name} ({doc.chars:,} chars)")
        if count > DESCRIBE_MAX_DOCUMENTS:
            more = count - DESCRIBE_MAX_DOCUMENTS
            lines.append(f"  ... and {more:,} more (list them with [d['path'] for d in context])")
        return lines

    def info(self) -> dict[str, Any]:
        """A JSON-able summary for the run log and the CLI."""
        return {
            "kind": self.kind,
            "source": self.source,
            "size_bytes": self.size_bytes,
            "length_chars": self.length_chars,
            "n_documents": len(self.documents),
            "n_skipped": len(self.skipped),
            "warnings": list(self.warnings),
        }

    def cleanup(self) -> None:
        """Delete ``path`` if this payload created it; otherwise do nothing."""
        if self.owned:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> ContextPayload:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()


# --------------------------------------------------------------------------- public API


def load_context(
    source: str | Path, *, workdir: Path, stdin: BinaryIO | None = None
) -> ContextPayload:
    """Build the payload for ``rlm ask SOURCE``.

    Args:
        source: a file, a directory, or ``"-"`` for stdin.
        workdir: where converted or copied files are written (created if missing).
        stdin: the byte stream read for ``"-"``; defaults to ``sys.stdin.buffer``.

    Raises:
        InputError: the input is missing, empty, unreadable or malformed.
        RLMError: a file could not be written into ``workdir``.
    """
    workdir = Path(workdir)
    if str(source) == "-":
        return _load_stdin(stdin if stdin is not None else sys.stdin.buffer, workdir)
    label = str(source)
    path = Path(source).expanduser()
    try:
        st = path.stat()
    except OSError as exc:
        raise _read_error(label, exc) from None
    if stat.S_ISDIR(st.st_mode):
        return _load_directory(path, label, workdir)
    if stat.S_ISREG(st.st_mode):
        return _load_file(path, label, st.st_size, workdir)
    raise InputError(f"{label}: not a regular file or directory ({_file_type(st.st_mode)})")


def payload_from_text(text: str, *, workdir: Path) -> ContextPayload:
    """Write ``text`` to a new file in ``workdir`` and return its ``"text"`` payload.

    Used by the Python API and for child agents. Lone surrogates (which UTF-8
    cannot encode) are replaced with ``?`` and reported in ``warnings``. An
    empty string gives an empty file (``context == ""``).

    Raises:
        InputError: ``text`` is not a ``str``.
    """
    if not isinstance(text, str):
        raise InputError(f"the context must be a str, not {type(text).__name__}")
    return _write_text_payload(text, "the context text", Path(workdir), [], allow_empty=True)


def payload_from_documents(docs: list[dict[str, str]], *, workdir: Path) -> ContextPayload:
    """Write ``docs`` to a new JSON file in ``workdir`` and return its ``"documents"`` payload.

    Args:
        docs: a list of ``{"path": str, "text": str}`` (no other keys); it may be empty.

    Raises:
        InputError: ``docs`` is not a list of such dicts.
    """
    _check_documents(docs)
    warnings: list[str] = []
    with _payload_writer(Path(workdir), ".json") as (path, out):
        writer = _DocumentsWriter(out, warnings)
        for doc in docs:
            writer.add(doc["path"], doc["text"])
        writer.close()
    return writer.payload(path, source="documents", skipped=[])


# --------------------------------------------------------------------------- single files


def _load_stdin(stream: BinaryIO, workdir: Path) -> ContextPayload:
    """Copy stdin into ``workdir`` and treat it as UTF-8 text."""
    with _payload_writer(workdir, ".txt") as (raw, out):
        while True:
            try:
                chunk = stream.read(CHUNK_BYTES)
            except OSError as exc:
                raise InputError(f"cannot read stdin: {exc.strerror or exc}") from None
            if not chunk:
                break
            out.write(chunk)
        if out.tell() == 0:
            raise InputError(f"{_STDIN_LABEL} is empty")
    try:
        return _text_file_payload(raw, _STDIN_LABEL, workdir, owned=True)
    except BaseException:
        raw.unlink(missing_ok=True)
        raise


def _load_file(path: Path, label: str, size: int, workdir: Path) -> ContextPayload:
    """Build the payload of one regular file according to its extension."""
    if size == 0:
        raise InputError(f"{label} is empty")
    ext = path.suffix.lower()
    if ext in PDF_EXTENSIONS:
        return _write_text_payload(_pdf_to_text(path, label), label, workdir, [])
    if ext in BINARY_EXTENSIONS:
        raise InputError(f"{label}: binary file ({ext}); rlm reads {_SUPPORTED}")
    if ext in JSON_EXTENSIONS or ext in HTML_EXTENSIONS:
        text, warnings = _decode(_read_bytes(path, label), label)
        converted = _json_to_text(text, label) if ext in JSON_EXTENSIONS else _html_to_text(text, label)
        return _write_text_payload(converted, label, workdir, warnings)
    if not _is_known_text(ext) and _looks_binary(_read_head(path, label)):
        raise InputError(f"{label}: looks like a binary file (NUL bytes in the first 8 KB); rlm reads {_SUPPORTED}")
    payload = _text_file_payload(path, label, workdir, owned=False)
    try:
        _validate_text_format(payload.path, label, ext)
    except BaseException:
        payload.cleanup()
        raise
    return payload


def _is_known_text(ext: str) -> bool:
    """Whether ``ext`` names a text format (which may legitimately hold odd bytes)."""
    return ext in TEXT_EXTENSIONS or ext in JSONL_EXTENSIONS or ext in CSV_DELIMITERS


def _validate_text_format(path: Path, label: str, ext: str) -> None:
    """Check that a JSONL/CSV/TSV file parses (streamed); other text needs no check."""
    if ext not in JSONL_EXTENSIONS and ext not in CSV_DELIMITERS:
        return
    with _open_input(path, label) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as lines:
        if ext in JSONL_EXTENSIONS:
            _check_jsonl(lines, label)
        else:
            _check_csv(lines, label, CSV_DELIMITERS[ext])


def _text_file_payload(path: Path, label: str, workdir: Path, *, owned: bool) -> ContextPayload:
    """A ``"text"`` payload for a file: in place if it is clean UTF-8, else a cleaned copy.

    When a copy is made and ``owned`` is True, the original file is deleted.
    """
    scan = _scan_utf8(path, label, written_here=owned)
    if scan.bad_offset is None and not scan.has_bom:
        if scan.facts is not None:
            _remember(scan.facts)
        return ContextPayload(
            path=path,
            kind="text",
            size_bytes=scan.size,
            length_chars=scan.chars,
            preview=scan.preview,
            owned=owned,
            source=label,
        )
    warnings = []
    if scan.bad_offset is not None:
        warnings.append(
            f"invalid UTF-8 in {label} at byte offset {scan.bad_offset}; "
            "invalid bytes were replaced with U+FFFD in a cleaned copy"
        )
    copy, chars, preview, checkpoints = _copy_as_clean_utf8(path, label, workdir)
    if owned:
        path.unlink(missing_ok=True)
    if chars == 0:
        copy.unlink(missing_ok=True)
        raise InputError(f"{label} is empty")
    _remember_written(copy, chars, checkpoints)
    return ContextPayload(
        path=copy,
        kind="text",
        size_bytes=copy.stat().st_size,
        length_chars=chars,
        preview=preview,
        warnings=warnings,
        owned=True,
        source=label,
    )


def _write_text_payload(
    text: str, label: str, workdir: Path, warnings: list[str], *, allow_empty: bool = False
) -> ContextPayload:
    """Write ``text`` to a new file in ``workdir`` as a ``"text"`` payload."""
    if not text and not allow_empty:
        raise InputError(f"{label} is empty")
    warnings = list(warnings)
    data = _to_utf8(text, label, warnings)
    with _payload_writer(workdir, ".txt") as (path, out):
        out.write(data)
    _remember_written(path, len(text), [(0, 0), (len(data), len(text))] if len(data) == len(text) else None)
    return ContextPayload(
        path=path,
        kind="text",
        size_bytes=len(data),
        length_chars=len(text),
        preview=text[:PREVIEW_CHARS],
        warnings=warnings,
        owned=True,
        source=label,
    )


# --------------------------------------------------------------------------- UTF-8


@dataclass
class _TextScan:
    """What one streaming pass over a file found."""

    chars: int
    preview: str
    bad_offset: int | None
    has_bom: bool
    size: int = 0
    facts: _Facts | None = None


@dataclass(frozen=True)
class _Facts:
    """What the validation pass learnt about a text file, tied to the file's identity.

    ``checkpoints`` are ``(byte offset, character offset)`` pairs at character
    boundaries, from ``(0, 0)`` to ``(size, chars)``; ``None`` when unknown. A
    pure-ASCII file needs none (characters are bytes).
    """

    identity: tuple[int, ...]  # (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)
    chars: int
    ascii: bool
    checkpoints: tuple[tuple[int, int], ...] | None

    def message(self) -> dict[str, Any]:
        """The ``context_facts`` the sandbox worker gets in its ``init`` frame (JSON)."""
        facts: dict[str, Any] = {"size": self.identity[2], "chars": self.chars, "ascii": self.ascii}
        if not self.ascii and self.checkpoints is not None:
            facts["checkpoints"] = [list(point) for point in self.checkpoints]
        return facts


_FACTS: OrderedDict[tuple[int, int], _Facts] = OrderedDict()
_FACTS_LOCK = threading.Lock()
#: A file modified this recently may still be being written within one timestamp tick: not remembered.
_SETTLE_NS = 100_000_000


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _remember(facts: _Facts) -> None:
    with _FACTS_LOCK:
        key = facts.identity[:2]
        _FACTS.pop(key, None)
        _FACTS[key] = facts
        while len(_FACTS) > MAX_REMEMBERED_FILES:
            _FACTS.popitem(last=False)


def _remember_written(path: Path, chars: int, checkpoints: list[tuple[int, int]] | None) -> None:
    """Remember the facts of a payload file this module just wrote (nobody else writes it)."""
    try:
        st = path.stat()
    except OSError:
        return
    points = _thin(checkpoints) if checkpoints else None
    _remember(_Facts(_identity(st), chars, st.st_size == chars, points))


def _thin(points: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """At most :data:`MAX_CHECKPOINTS` checkpoints, evenly spread, the first and last kept."""
    if len(points) <= MAX_CHECKPOINTS:
        return tuple(points)
    step = -(-(len(points) - 1) // (MAX_CHECKPOINTS - 1))
    kept = points[::step]
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return tuple(kept)


def text_facts(path: str | Path) -> dict[str, Any] | None:
    """What validation learnt about the ``"text"`` payload file at ``path``, for the sandbox worker.

    ``{"size", "chars", "ascii", "checkpoints"?}``: its length in characters,
    whether it is pure ASCII (characters are bytes), and ``(byte, char)`` offset
    pairs at character boundaries (at most every :data:`CHUNK_BYTES`). With them a
    huge ``Context`` answers ``len`` and offset conversions without a pass over
    the file. None when this process has not validated the file, or the file
    changed since (device, inode, size, mtime and ctime are compared).
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    with _FACTS_LOCK:
        facts = _FACTS.get((st.st_dev, st.st_ino))
    if facts is None or facts.identity != _identity(st):
        return None
    return facts.message()


class _Preview:
    """Collects the first :data:`PREVIEW_CHARS` characters of a stream of text."""

    def __init__(self) -> None:
        self.text = ""

    def feed(self, text: str) -> None:
        if len(self.text) < PREVIEW_CHARS:
            self.text += text[: PREVIEW_CHARS - len(self.text)]

    def feed_ascii(self, data: bytearray, size: int) -> None:
        if len(self.text) < PREVIEW_CHARS:
            self.text += data[: min(size, PREVIEW_CHARS - len(self.text))].decode("ascii")


def _scan_utf8(path: Path, label: str, *, written_here: bool = False) -> _TextScan:
    """Validate ``path`` as UTF-8 in one pass; count characters; find the first bad byte.

    The file is read into one reused buffer. A chunk that is pure ASCII (checked
    by ``bytearray.isascii``, a C scan) is valid as it is and has as many
    characters as bytes; any other chunk goes through a strict incremental
    decoder, which carries a character cut by a chunk border over to the next.
    The pass also collects the :func:`text_facts` of a valid file (``written_here``:
    a file this module wrote, e.g. stdin's copy, which nobody else writes to).
    """
    size = CHUNK_BYTES
    buffer = bytearray(size)
    view = memoryview(buffer)
    preview = _Preview()
    chars = fed = 0
    pending = b""  # the start of a character cut by the last chunk border
    all_ascii, has_bom = True, False
    checkpoints = [(0, 0)]
    started_ns = time.time_ns()
    with _open_input(path, label, buffering=0) as f:
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
                    return _TextScan(chars, preview.text, fed - len(pending) + exc.start, has_bom)
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
    settled = written_here or max(after.st_mtime_ns, after.st_ctime_ns) < started_ns - _SETTLE_NS
    if _identity(before) == _identity(after) and after.st_size == fed and settled:
        facts = _Facts(_identity(after), chars, all_ascii, None if all_ascii else _thin(checkpoints))
    return _TextScan(chars, preview.text, None, has_bom, size=fed, facts=facts)


def _fill(f: BinaryIO, view: memoryview, label: str) -> int:
    """Read into ``view`` until it is full or the file ends; returns the bytes read."""
    n = 0
    try:
        while n < len(view):
            got = f.readinto(view[n:])
            if not got:
                break
            n += got
    except OSError as exc:
        raise _read_error(label, exc) from None
    return n


def _copy_as_clean_utf8(src: Path, label: str, workdir: Path) -> tuple[Path, int, str, list[tuple[int, int]]]:
    """Stream ``src`` into a new file, replacing invalid UTF-8 and dropping a BOM.

    Returns the new path, its length in characters, its preview and its
    ``(byte, char)`` checkpoints (one per chunk written).
    """
    decoder = codecs.getincrementaldecoder("utf-8-sig")("replace")
    preview = _Preview()
    chars = written = 0
    checkpoints = [(0, 0)]
    with _payload_writer(workdir, ".txt") as (dst, out), _open_input(src, label) as f:
        while True:
            chunk = _read_chunk(f, label)
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


def _decode(data: bytes, label: str) -> tuple[str, list[str]]:
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


def _to_utf8(text: str, label: str, warnings: list[str]) -> bytes:
    """Encode ``text``; lone surrogates become ``?`` and add a warning."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        warnings.append(f"{label}: characters that UTF-8 cannot encode (lone surrogates) were replaced with '?'")
        return text.encode("utf-8", "replace")


def _looks_binary(head: bytes) -> bool:
    """Whether the first bytes of a file say it is binary (it has a NUL byte)."""
    return b"\x00" in head[:SNIFF_BYTES]


# --------------------------------------------------------------------------- formats


def _json_to_text(text: str, label: str) -> str:
    """Validate JSON and return it pretty-printed (2-space indent, non-ASCII kept)."""
    try:
        value = json.loads(text)
        return json.dumps(value, indent=2, ensure_ascii=False)
    except json.JSONDecodeError as exc:
        raise InputError(f"{label}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{label}: not valid JSON: {exc}") from None


def _check_jsonl(lines: Iterable[str], label: str) -> None:
    """Check that every non-blank line is one JSON value."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{label}: line {lineno} is not valid JSON: {exc.msg} (column {exc.colno})"
            ) from None
        except (ValueError, RecursionError) as exc:
            raise InputError(f"{label}: line {lineno} is not valid JSON: {exc}") from None


@contextlib.contextmanager
def _unlimited_csv_fields() -> Iterator[None]:
    """Lift the csv module's 128 KiB field limit for the duration of a check."""
    old = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _check_csv(lines: Iterable[str], label: str, delimiter: str) -> None:
    """Check that the text parses with the csv module (strict quoting)."""
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    name = "TSV" if delimiter == "\t" else "CSV"
    try:
        with _unlimited_csv_fields():
            for _ in reader:
                pass
    except csv.Error as exc:
        raise InputError(
            f"{label}: not valid {name} at line {reader.line_num}: {exc} "
            "(rename the file to .txt to use it as plain text)"
        ) from None


_WHITESPACE = re.compile(r"\s+")


class _HTMLText(HTMLParser):
    """Collects the visible text of an HTML document, keeping paragraph and line breaks."""

    HIDDEN = frozenset({"script", "style", "template", "noscript"})
    PARAGRAPH = frozenset(
        "p h1 h2 h3 h4 h5 h6 blockquote pre table ul ol dl figure section article "
        "header footer main aside nav form fieldset details address title hr".split()
    )
    LINE = frozenset("div li tr dt dd caption figcaption summary legend option body html".split())
    CELL = frozenset({"td", "th"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._hidden = 0
        self._pre = 0
        self._newlines = 2  # the start of the document counts as a paragraph break

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self._break(1, force=True)
        elif tag == "pre":
            self._break(2)
            self._pre += 1
        else:
            self._block(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self._break(1, force=True)
        elif tag not in self.HIDDEN:
            self._block(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
            self._break(2)
        elif tag in self.CELL and not self._hidden:
            self._emit("\t")
        else:
            self._block(tag)

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        if self._pre:
            self._emit(data)
            return
        text = _WHITESPACE.sub(" ", data)
        if self._newlines or self._parts[-1].endswith((" ", "\t")):
            text = text.lstrip(" ")
        self._emit(text)

    def text(self) -> str:
        """The collected text, without leading or trailing blank lines."""
        self.close()
        lines = "".join(self._parts).split("\n")
        return "\n".join(line.rstrip(" \t") for line in lines).strip("\n")

    def _block(self, tag: str) -> None:
        if tag in self.PARAGRAPH:
            self._break(2)
        elif tag in self.LINE:
            self._break(1)

    def _emit(self, text: str) -> None:
        """Append text and keep count of the newlines the output ends with."""
        if not text:
            return
        self._parts.append(text)
        stripped = text.rstrip("\n")
        trailing = len(text) - len(stripped)
        self._newlines = trailing if stripped else self._newlines + trailing

    def _break(self, count: int, *, force: bool = False) -> None:
        """End the current line; ``count`` 2 leaves a blank line. ``force`` always adds one."""
        if self._hidden:
            return
        if force:
            self._parts.append("\n")
            self._newlines += 1
            return
        missing = count - self._newlines
        if missing > 0:
            self._parts.append("\n" * missing)
            self._newlines = count


def _html_to_text(text: str, label: str) -> str:
    """Extract the visible text of an HTML document with the stdlib parser."""
    parser = _HTMLText()
    parser.feed(text)
    result = parser.text()
    if not result.strip():
        raise InputError(f"{label}: no visible text in this HTML file")
    return result


def _import_pypdf(label: str) -> Any:
    """Import pypdf lazily; explain how to install it when it is missing."""
    try:
        import pypdf
    except ImportError:
        raise InputError(f"{label}: reading PDF files needs pypdf: pip install pypdf") from None
    return pypdf


@contextlib.contextmanager
def _quiet_pypdf() -> Iterator[None]:
    """Silence pypdf's log warnings about malformed files (real failures still raise)."""
    logger = logging.getLogger("pypdf")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def _pdf_to_text(path: Path, label: str) -> str:
    """Extract the text of every page of a PDF, pages separated by a blank line."""
    pypdf = _import_pypdf(label)
    with _open_input(path, label) as f, _quiet_pypdf():
        try:
            reader = pypdf.PdfReader(f)
            if reader.is_encrypted and not reader.decrypt(""):
                raise InputError(f"{label}: encrypted PDF (password-protected)")
            pages = [page.extract_text() or "" for page in reader.pages]
        except InputError:
            raise
        except Exception as exc:  # pypdf raises many types on malformed files
            raise InputError(f"{label}: not a readable PDF ({type(exc).__name__}: {exc})") from None
    text = "\n\n".join(page.strip("\n") for page in pages if page.strip())
    if not text:
        raise InputError(f"{label}: no text could be extracted from this PDF (scanned pages need OCR first)")
    return text


# --------------------------------------------------------------------------- directories


class _DocumentsWriter:
    """Streams documents into a ``"documents"`` payload file as a JSON array."""

    def __init__(self, out: BinaryIO, warnings: list[str]) -> None:
        self._out = out
        self.warnings = warnings
        self.infos: list[DocumentInfo] = []
        self.chars = 0
        self.preview = ""
        out.write(b"[")

    def add(self, name: str, text: str) -> None:
        """Append one document."""
        line = json.dumps({"path": name, "text": text}, ensure_ascii=False)
        self._out.write(b",\n" if self.infos else b"\n")
        self._out.write(_to_utf8(line, name, self.warnings))
        if not self.infos:
            self.preview = text[:PREVIEW_CHARS]
        self.infos.append(DocumentInfo(name=name, chars=len(text)))
        self.chars += len(text)

    def close(self) -> None:
        """End the JSON array."""
        self._out.write(b"\n]\n")

    def payload(self, path: Path, *, source: str, skipped: list[str]) -> ContextPayload:
        """The payload describing the written file."""
        return ContextPayload(
            path=path,
            kind="documents",
            size_bytes=path.stat().st_size,
            length_chars=self.chars,
            preview=self.preview,
            documents=self.infos,
            skipped=skipped,
            warnings=self.warnings,
            owned=True,
            source=source,
        )


def _load_directory(root: Path, label: str, workdir: Path) -> ContextPayload:
    """Convert every readable file under ``root`` into one ``"documents"`` payload."""
    files, skipped = _walk_directory(root, label, workdir)
    warnings: list[str] = []
    with _payload_writer(workdir, ".json") as (path, out):
        writer = _DocumentsWriter(out, warnings)
        for rel, file in files:
            converted = _convert_member(file, rel)
            if isinstance(converted, str):
                skipped.append(converted)
                continue
            text, member_warnings = converted
            warnings.extend(member_warnings)
            writer.add(rel, text)
        writer.close()
        if not writer.infos:
            raise InputError(_no_documents_message(label, skipped))
    return writer.payload(path, source=label, skipped=sorted(skipped))


def _no_documents_message(label: str, skipped: list[str]) -> str:
    """The error for a directory without a single usable file."""
    message = f"{label}: no readable text files in this directory"
    if skipped:
        shown = "; ".join(sorted(skipped)[:5])
        more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        message += f" (skipped {shown}{more})"
    return message


def _walk_directory(root: Path, label: str, workdir: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """List ``(relative posix path, path)`` of candidate files, sorted depth-first by name.

    Hidden entries, ignored directory names and ``workdir`` are left out silently;
    symlinks leaving ``root``, symlinked directories, broken symlinks and special
    files are reported in the second list as ``"name: reason"``.
    """
    root_real = root.resolve()
    exclude = workdir.resolve() if workdir.exists() else None
    if exclude == root_real:
        exclude = None
    files: list[tuple[str, Path]] = []
    skipped: list[str] = []

    def visit(directory: Path, prefix: str) -> None:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda entry: entry.name)
        except OSError as exc:
            if not prefix:
                raise _read_error(label, exc) from None
            skipped.append(f"{prefix.rstrip('/')}/: {_reason(exc)}")
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = prefix + entry.name
            try:
                kind = _entry_kind(entry, root_real)
            except OSError as exc:
                kind = _reason(exc)
            if kind == "file":
                files.append((rel, Path(entry.path)))
            elif kind == "dir":
                if entry.name not in IGNORED_DIR_NAMES and Path(entry.path).resolve() != exclude:
                    visit(Path(entry.path), rel + "/")
            else:
                skipped.append(f"{rel}: {kind}")

    visit(root, "")
    return files, skipped


def _entry_kind(entry: os.DirEntry[str], root_real: Path) -> str:
    """``"file"``, ``"dir"`` (a real directory), or why the entry is skipped."""
    if entry.is_symlink():
        return _symlink_problem(Path(entry.path), root_real) or "file"
    if entry.is_dir(follow_symlinks=False):
        return "dir"
    if entry.is_file(follow_symlinks=False):
        return "file"
    return "not a regular file"


def _symlink_problem(link: Path, root_real: Path) -> str | None:
    """Why a symlink inside the directory is not used, or None if it is a file inside it."""
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError):
        return "broken symlink"
    if not target.is_relative_to(root_real):
        return "symlink pointing outside the directory"
    if target.is_dir():
        return "symlink to a directory (not followed)"
    if not target.is_file():
        return "not a regular file"
    return None


def _convert_member(path: Path, rel: str) -> tuple[str, list[str]] | str:
    """Convert one file of a directory: ``(text, warnings)``, or why it is skipped."""
    ext = path.suffix.lower()
    if ext in BINARY_EXTENSIONS:
        return f"{rel}: binary file ({ext})"
    if ext in PDF_EXTENSIONS:
        try:
            return _pdf_to_text(path, rel), []
        except InputError as exc:
            return str(exc)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"{rel}: {_reason(exc)}"
    if not data:
        return f"{rel}: empty file"
    if _looks_binary(data):
        return f"{rel}: binary file (NUL bytes)"
    text, warnings = _decode(data, rel)
    return _convert_member_text(text, rel, ext, warnings)


def _convert_member_text(text: str, rel: str, ext: str, warnings: list[str]) -> tuple[str, list[str]] | str:
    """Apply the format conversion to a decoded directory member; lenient on parse errors."""
    try:
        if ext in JSON_EXTENSIONS:
            return _json_to_text(text, rel), warnings
        if ext in HTML_EXTENSIONS:
            return _html_to_text(text, rel), warnings
        if ext in JSONL_EXTENSIONS:
            _check_jsonl(io.StringIO(text, newline=""), rel)
        elif ext in CSV_DELIMITERS:
            _check_csv(io.StringIO(text, newline=""), rel, CSV_DELIMITERS[ext])
    except InputError as exc:
        if ext in HTML_EXTENSIONS:
            return str(exc)
        return text, [*warnings, f"{exc}; kept as raw text"]
    return text, warnings


# --------------------------------------------------------------------------- I/O helpers


def _check_documents(docs: object) -> None:
    """Raise InputError unless ``docs`` is a list of ``{"path": str, "text": str}``."""
    if not isinstance(docs, (list, tuple)):
        raise InputError(f"documents must be a list of dicts, not {type(docs).__name__}")
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict) or set(doc) != {"path", "text"}:
            raise InputError(f'document {index} must be a dict with exactly the keys "path" and "text"')
        if not isinstance(doc["path"], str) or not isinstance(doc["text"], str):
            raise InputError(f'document {index}: "path" and "text" must both be str')


@contextlib.contextmanager
def _payload_writer(workdir: Path, suffix: str) -> Iterator[tuple[Path, BinaryIO]]:
    """Create a new file in ``workdir``; yield its path and binary handle.

    The file is deleted if the block raises. OS errors while writing become
    :class:`RLMError` (the input is fine, the workdir is not).
    """
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="context-", suffix=suffix, dir=workdir)
    except OSError as exc:
        raise RLMError(f"cannot create a context file in {workdir}: {exc}") from None
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            yield path, out
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise RLMError(f"cannot write the context file {path}: {exc}") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _open_input(path: Path, label: str, buffering: int = -1) -> BinaryIO:
    """Open an input file for reading; OS errors become InputError."""
    try:
        return path.open("rb", buffering=buffering)
    except OSError as exc:
        raise _read_error(label, exc) from None


def _read_chunk(f: BinaryIO, label: str) -> bytes:
    """Read the next chunk of an input file; OS errors become InputError."""
    try:
        return f.read(CHUNK_BYTES)
    except OSError as exc:
        raise _read_error(label, exc) from None


def _read_bytes(path: Path, label: str) -> bytes:
    """Read a whole input file; OS errors become InputError."""
    with _open_input(path, label) as f:
        try:
            return f.read()
        except OSError as exc:
            raise _read_error(label, exc) from None


def _read_head(path: Path, label: str) -> bytes:
    """Read the first :data:`SNIFF_BYTES` bytes of an input file."""
    with _open_input(path, label) as f:
        try:
            return f.read(SNIFF_BYTES)
        except OSError as exc:
            raise _read_error(label, exc) from None


def _reason(exc: OSError) -> str:
    """A short reason for an OS error, e.g. ``permission denied``."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    return f"unreadable ({exc.strerror or exc})"


def _read_error(label: str, exc: OSError) -> InputError:
    """The InputError for an OS error met while reading the user's input."""
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return InputError(f"no such file or directory: {label}")
    if isinstance(exc, PermissionError):
        return InputError(f"permission denied: {label}")
    return InputError(f"cannot read {label}: {exc.strerror or exc}")


def _file_type(mode: int) -> str:
    """Name the kind of a special file from its stat mode."""
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"
