"""Format converters and validators: JSON, JSONL, CSV/TSV, HTML and PDF to text.

Which extensions name which format is decided here too (``*_EXTENSIONS``).
Every problem is an :class:`~rlm.errors.InputError` whose message names the
input (``label``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from rlm.errors import InputError
from rlm.inputs.fileio import open_input

__all__ = [
    "BINARY_EXTENSIONS",
    "CSV_DELIMITERS",
    "HTML_EXTENSIONS",
    "JSONL_EXTENSIONS",
    "JSON_EXTENSIONS",
    "PDF_EXTENSIONS",
    "SUPPORTED",
    "TEXT_EXTENSIONS",
    "check_csv",
    "check_jsonl",
    "html_to_text",
    "is_known_text",
    "json_to_text",
    "pdf_to_text",
    "validate_text_format",
]


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

SUPPORTED = "text, Markdown, logs, source code, JSON, JSONL, CSV/TSV, HTML and PDF"


def is_known_text(ext: str) -> bool:
    """Whether ``ext`` names a text format (which may legitimately hold odd bytes)."""
    return ext in TEXT_EXTENSIONS or ext in JSONL_EXTENSIONS or ext in CSV_DELIMITERS


def validate_text_format(path: Path, label: str, ext: str) -> None:
    """Check that a JSONL/CSV/TSV file parses (streamed); other text needs no check."""
    if ext not in JSONL_EXTENSIONS and ext not in CSV_DELIMITERS:
        return
    with open_input(path, label) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as lines:
        if ext in JSONL_EXTENSIONS:
            check_jsonl(lines, label)
        else:
            check_csv(lines, label, CSV_DELIMITERS[ext])


def json_to_text(text: str, label: str) -> str:
    """Validate JSON and return it pretty-printed (2-space indent, non-ASCII kept)."""
    try:
        value = json.loads(text)
        return json.dumps(value, indent=2, ensure_ascii=False)
    except json.JSONDecodeError as exc:
        raise InputError(f"{label}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{label}: not valid JSON: {exc}") from None


def check_jsonl(lines: Iterable[str], label: str) -> None:
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


def check_csv(lines: Iterable[str], label: str, delimiter: str) -> None:
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


def html_to_text(text: str, label: str) -> str:
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


def pdf_to_text(path: Path, label: str) -> str:
    """Extract the text of every page of a PDF, pages separated by a blank line."""
    pypdf = _import_pypdf(label)
    with open_input(path, label) as f, _quiet_pypdf():
        try:
            reader = pypdf.PdfReader(f)
            if reader.is_encrypted and not reader.decrypt(""):
                raise InputError(f"{label}: encrypted PDF (password-protected)")
            pages = [page.extract_text() or "" for page in reader.pages]
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - pypdf raises many types on malformed files
            raise InputError(f"{label}: not a readable PDF ({type(exc).__name__}: {exc})") from None
    text = "\n\n".join(page.strip("\n") for page in pages if page.strip())
    if not text:
        raise InputError(f"{label}: no text could be extracted from this PDF (scanned pages need OCR first)")
    return text
