"""The payload model: the file the sandbox worker turns into ``context``, and what to say about it.

:class:`ContextPayload` is what every loader in :mod:`rlm.inputs` returns; the
format of its file (``"text"`` or ``"documents"``) is described in the package
docstring.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DESCRIBE_MAX_DOCUMENTS", "HUGE_CONTEXT_DESCRIPTION", "PREVIEW_CHARS", "ContextPayload", "DocumentInfo"]


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
            from rlm.config import SandboxConfig  # here: config imports nothing from this module

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
            shown = DESCRIBE_MAX_DOCUMENTS
            lines.append("Documents:" if count <= shown else f"First {shown} documents:")
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
