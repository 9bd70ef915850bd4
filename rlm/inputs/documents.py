"""The directory walker and the ``"documents"`` payload writer.

A directory becomes one JSON array of ``{"path", "text"}`` objects, written as
it is walked (depth-first, entries sorted by name); files that cannot be used
are listed in ``skipped`` with the reason.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import BinaryIO

from rlm.errors import InputError
from rlm.inputs.fileio import looks_binary, payload_writer, read_error, reason
from rlm.inputs.formats import (
    BINARY_EXTENSIONS,
    CSV_DELIMITERS,
    HTML_EXTENSIONS,
    JSON_EXTENSIONS,
    JSONL_EXTENSIONS,
    PDF_EXTENSIONS,
    check_csv,
    check_jsonl,
    html_to_text,
    json_to_text,
    pdf_to_text,
)
from rlm.inputs.payload import PREVIEW_CHARS, ContextPayload, DocumentInfo
from rlm.inputs.utf8 import decode, to_utf8

__all__ = ["IGNORED_DIR_NAMES", "DocumentsWriter", "check_documents", "load_directory", "walk_directory"]


IGNORED_DIR_NAMES = frozenset({"__pycache__", "node_modules"})


class DocumentsWriter:
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
        self._out.write(to_utf8(line, name, self.warnings))
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


def load_directory(root: Path, label: str, workdir: Path) -> ContextPayload:
    """Convert every readable file under ``root`` into one ``"documents"`` payload."""
    files, skipped = walk_directory(root, label, workdir)
    warnings: list[str] = []
    with payload_writer(workdir, ".json") as (path, out):
        writer = DocumentsWriter(out, warnings)
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


def walk_directory(root: Path, label: str, workdir: Path) -> tuple[list[tuple[str, Path]], list[str]]:
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
                raise read_error(label, exc) from None
            skipped.append(f"{prefix.rstrip('/')}/: {reason(exc)}")
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = prefix + entry.name
            try:
                kind = _entry_kind(entry, root_real)
            except OSError as exc:
                kind = reason(exc)
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
            return pdf_to_text(path, rel), []
        except InputError as exc:
            return str(exc)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"{rel}: {reason(exc)}"
    if not data:
        return f"{rel}: empty file"
    if looks_binary(data):
        return f"{rel}: binary file (NUL bytes)"
    text, warnings = decode(data, rel)
    return _convert_member_text(text, rel, ext, warnings)


def _convert_member_text(text: str, rel: str, ext: str, warnings: list[str]) -> tuple[str, list[str]] | str:
    """Apply the format conversion to a decoded directory member; lenient on parse errors."""
    try:
        if ext in JSON_EXTENSIONS:
            return json_to_text(text, rel), warnings
        if ext in HTML_EXTENSIONS:
            return html_to_text(text, rel), warnings
        if ext in JSONL_EXTENSIONS:
            check_jsonl(io.StringIO(text, newline=""), rel)
        elif ext in CSV_DELIMITERS:
            check_csv(io.StringIO(text, newline=""), rel, CSV_DELIMITERS[ext])
    except InputError as exc:
        if ext in HTML_EXTENSIONS:
            return str(exc)
        return text, [*warnings, f"{exc}; kept as raw text"]
    return text, warnings


def check_documents(docs: object) -> None:
    """Raise InputError unless ``docs`` is a list of ``{"path": str, "text": str}``."""
    if not isinstance(docs, (list, tuple)):
        raise InputError(f"documents must be a list of dicts, not {type(docs).__name__}")
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict) or set(doc) != {"path", "text"}:
            raise InputError(f'document {index} must be a dict with exactly the keys "path" and "text"')
        if not isinstance(doc["path"], str) or not isinstance(doc["text"], str):
            raise InputError(f'document {index}: "path" and "text" must both be str')
