"""The loaders: a path (file, directory or stdin), a string or a list of documents to a payload."""

from __future__ import annotations

import codecs
import stat
import sys
from pathlib import Path
from typing import BinaryIO

from rlm.errors import InputError
from rlm.inputs import fileio
from rlm.inputs.documents import DocumentsWriter, check_documents, load_directory
from rlm.inputs.facts import recall, remember, remember_written
from rlm.inputs.fileio import file_type, looks_binary, payload_writer, read_bytes, read_error, read_head
from rlm.inputs.formats import (
    BINARY_EXTENSIONS,
    HTML_EXTENSIONS,
    JSON_EXTENSIONS,
    PDF_EXTENSIONS,
    SUPPORTED,
    html_to_text,
    is_known_text,
    json_to_text,
    pdf_to_text,
    validate_text_format,
)
from rlm.inputs.payload import PREVIEW_CHARS, ContextPayload
from rlm.inputs.utf8 import copy_as_clean_utf8, decode, scan_utf8, to_utf8

__all__ = ["load_context", "payload_from_documents", "payload_from_text"]


_STDIN_LABEL = "stdin"

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
        raise read_error(label, exc) from None
    if stat.S_ISDIR(st.st_mode):
        return load_directory(path, label, workdir)
    if stat.S_ISREG(st.st_mode):
        return _load_file(path, label, st.st_size, workdir)
    raise InputError(f"{label}: not a regular file or directory ({file_type(st.st_mode)})")


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
    check_documents(docs)
    warnings: list[str] = []
    with payload_writer(Path(workdir), ".json") as (path, out):
        writer = DocumentsWriter(out, warnings)
        for doc in docs:
            writer.add(doc["path"], doc["text"])
        writer.close()
    return writer.payload(path, source="documents", skipped=[])


# --------------------------------------------------------------------------- single files


def _load_stdin(stream: BinaryIO, workdir: Path) -> ContextPayload:
    """Copy stdin into ``workdir`` and treat it as UTF-8 text."""
    with payload_writer(workdir, ".txt") as (raw, out):
        while True:
            try:
                chunk = stream.read(fileio.CHUNK_BYTES)
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
        return _write_text_payload(pdf_to_text(path, label), label, workdir, [])
    if ext in BINARY_EXTENSIONS:
        raise InputError(f"{label}: binary file ({ext}); rlm reads {SUPPORTED}")
    if ext in JSON_EXTENSIONS or ext in HTML_EXTENSIONS:
        text, warnings = decode(read_bytes(path, label), label)
        converted = json_to_text(text, label) if ext in JSON_EXTENSIONS else html_to_text(text, label)
        return _write_text_payload(converted, label, workdir, warnings)
    if not is_known_text(ext) and looks_binary(read_head(path, label)):
        raise InputError(f"{label}: looks like a binary file (NUL bytes in the first 8 KB); rlm reads {SUPPORTED}")
    payload = _text_file_payload(path, label, workdir, owned=False)
    try:
        validate_text_format(payload.path, label, ext)
    except BaseException:
        payload.cleanup()
        raise
    return payload


def _text_file_payload(path: Path, label: str, workdir: Path, *, owned: bool) -> ContextPayload:
    """A ``"text"`` payload for a file: in place if it is clean UTF-8, else a cleaned copy.

    When a copy is made and ``owned`` is True, the original file is deleted. A file this process
    validated before and that has not changed since is not scanned again (:func:`_remembered`).
    """
    remembered = _remembered(path, label, owned)
    if remembered is not None:
        return remembered
    scan = scan_utf8(path, label, written_here=owned)
    if scan.bad_offset is None and not scan.has_bom:
        if scan.facts is not None:
            remember(scan.facts)
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
    copy, chars, preview, checkpoints = copy_as_clean_utf8(path, label, workdir)
    if owned:
        path.unlink(missing_ok=True)
    if chars == 0:
        copy.unlink(missing_ok=True)
        raise InputError(f"{label} is empty")
    remember_written(copy, chars, checkpoints)
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


def _remembered(path: Path, label: str, owned: bool) -> ContextPayload | None:
    """The payload of a clean UTF-8 file whose validation this process remembers (same device, inode, size,
    mtime and ctime), from those facts and its first bytes; ``None`` when there are none, or it starts
    with a byte-order mark (such a file takes the cleaning path)."""
    facts = recall(path)
    if facts is None:
        return None
    head = read_head(path, label)
    if head.startswith(codecs.BOM_UTF8):
        return None
    try:
        text, _ = codecs.utf_8_decode(head, "strict", False)  # a character cut at the end waits
    except UnicodeDecodeError:
        return None
    return ContextPayload(path=path, kind="text", size_bytes=facts.identity[2], length_chars=facts.chars,
                          preview=text[:PREVIEW_CHARS], owned=owned, source=label)


def _write_text_payload(
    text: str, label: str, workdir: Path, warnings: list[str], *, allow_empty: bool = False
) -> ContextPayload:
    """Write ``text`` to a new file in ``workdir`` as a ``"text"`` payload."""
    if not text and not allow_empty:
        raise InputError(f"{label} is empty")
    warnings = list(warnings)
    data = to_utf8(text, label, warnings)
    with payload_writer(workdir, ".txt") as (path, out):
        out.write(data)
    remember_written(path, len(text), [(0, 0), (len(data), len(text))] if len(data) == len(text) else None)
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
