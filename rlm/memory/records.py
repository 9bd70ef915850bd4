"""What the memory store holds and returns: typed records with ``to_dict``/``from_dict``.

An :class:`Entry` is the current state of one item of a namespace; every write
(add, edit, delete) also appends a :class:`Version`, so nothing disappears
silently. :class:`Provenance` says who wrote a version and from what: ``source``
is ``"agent"`` (``note()`` during a run), ``"reflection"`` (the model after a
run), ``"user"`` (the ``rlm memory`` command or the Python API) or
``"import"`` (a JSONL import). ``evidence`` holds what backed a reflection
write (the run's status, whether an external check passed).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from rlm.errors import InputError, RLMError

__all__ = [
    'KINDS',
    'SOURCES',
    'MAX_TEXT_CHARS',
    'MAX_TITLE_CHARS',
    'MAX_TAGS',
    'MAX_TAG_CHARS',
    'MemoryStoreError',
    'InvalidMemoryRequest',
    'MemoryConflict',
    'EntryNotFound',
    'Provenance',
    'Entry',
    'Version',
    'Hit',
    'check_namespace',
    'check_fields',
    'check_tags',
]

KINDS = ("note", "memory", "doc")
SOURCES = ("agent", "reflection", "user", "import")
MAX_TEXT_CHARS = 20_000
MAX_TITLE_CHARS = 200
MAX_TAGS = 16
MAX_TAG_CHARS = 64
_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,99}$")


class MemoryStoreError(RLMError):
    """The memory store cannot be opened, read or written, or a request is invalid."""


class InvalidMemoryRequest(MemoryStoreError, InputError):
    """A namespace, field or argument is invalid (bad input, not a broken store)."""


class MemoryConflict(MemoryStoreError):
    """A write reused an id (or operation id) for different content."""


class EntryNotFound(MemoryStoreError, InputError):
    """No entry with that id in that namespace."""


@dataclass(frozen=True, slots=True)
class Provenance:
    """Who wrote a version, and from what. ``span`` is ``(start, end)`` characters of the context."""

    source: str = "user"
    run_id: str | None = None
    agent_id: str | None = None
    depth: int | None = None
    span: tuple[int, int] | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise InvalidMemoryRequest(f"provenance source must be one of {', '.join(SOURCES)}, not {self.source!r}")

    @property
    def verified(self) -> bool:
        """Written by a person, or by reflection after an external check passed."""
        return self.source in ("user", "import") or bool(self.evidence.get("verified"))

    def label(self) -> str:
        """A short human-readable origin, e.g. ``learned in run 2026...-ab12 (ok, unverified)``."""
        if self.source == "agent":
            where = f"agent {self.agent_id}" + (f" at depth {self.depth}" if self.depth is not None else "")
            return f"note by {where} in run {self.run_id}"
        if self.source == "reflection":
            status = self.evidence.get("status", "?")
            check = "verified" if self.verified else "unverified"
            return f"learned in run {self.run_id} ({status}, {check})"
        return "written by a person" if self.source == "user" else "imported"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["span"] = list(self.span) if self.span else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Provenance:
        data = dict(data or {})
        span = data.get("span")
        return cls(source=str(data.get("source") or "user"), run_id=data.get("run_id"),
                   agent_id=data.get("agent_id"), depth=data.get("depth"),
                   span=(int(span[0]), int(span[1])) if span else None, evidence=dict(data.get("evidence") or {}))


@dataclass(frozen=True, slots=True)
class Entry:
    """The current state of one item. ``version`` counts writes; a deleted entry is a tombstone."""

    id: str
    namespace: str
    kind: str
    text: str
    title: str = ""
    tags: tuple[str, ...] = ()
    provenance: Provenance = field(default_factory=Provenance)
    created_at: float = 0.0
    updated_at: float = 0.0
    version: int = 1
    deleted: bool = False
    quarantined: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tags"] = list(self.tags)
        data["provenance"] = self.provenance.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entry:
        return cls(id=str(data["id"]), namespace=str(data["namespace"]), kind=str(data["kind"]),
                   text=str(data["text"]), title=str(data.get("title") or ""),
                   tags=tuple(data.get("tags") or ()), provenance=Provenance.from_dict(data.get("provenance")),
                   created_at=float(data.get("created_at") or 0.0), updated_at=float(data.get("updated_at") or 0.0),
                   version=int(data.get("version") or 1), deleted=bool(data.get("deleted")),
                   quarantined=bool(data.get("quarantined")))


@dataclass(frozen=True, slots=True)
class Version:
    """One write of an entry: ``op`` is ``"add"``, ``"edit"`` or ``"delete"`` (which keeps the last text)."""

    id: str
    namespace: str
    version: int
    op: str
    kind: str
    text: str
    title: str
    tags: tuple[str, ...]
    provenance: Provenance
    op_id: str
    at: float
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tags"] = list(self.tags)
        data["provenance"] = self.provenance.to_dict()
        return data


@dataclass(frozen=True, slots=True)
class Hit:
    """A search result: the entry, its fused score and the parts it came from."""

    entry: Entry
    score: float
    bm25: float | None = None
    cosine: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"entry": self.entry.to_dict(), "score": self.score, "bm25": self.bm25, "cosine": self.cosine}


def check_namespace(namespace: Any) -> str:
    """Return ``namespace`` if valid (letters, digits, ``._:/@-``; at most 100 characters)."""
    if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
        raise InvalidMemoryRequest(
            f"invalid memory namespace {namespace!r}: use 1-100 letters, digits or ._:/@- (starting with a "
            "letter or digit)")
    return namespace


def check_fields(kind: Any, text: Any, title: Any, tags: Any) -> tuple[str, str, str, tuple[str, ...]]:
    """Validate an entry's fields; returns them normalised (tags stripped, de-duplicated, in order)."""
    if kind not in KINDS:
        raise InvalidMemoryRequest(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if not isinstance(text, str) or not text.strip():
        raise InvalidMemoryRequest("text must be a non-empty str")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidMemoryRequest(f"text is {len(text):,} characters; the limit is {MAX_TEXT_CHARS:,}")
    if not isinstance(title, str) or len(title) > MAX_TITLE_CHARS:
        raise InvalidMemoryRequest(f"title must be a str of at most {MAX_TITLE_CHARS} characters")
    return kind, text, title.strip(), check_tags(tags)


def check_tags(tags: Any) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str) or not isinstance(tags, (list, tuple)):
        raise InvalidMemoryRequest("tags must be a list of str")
    cleaned: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip() or len(tag) > MAX_TAG_CHARS:
            raise InvalidMemoryRequest(f"each tag must be a non-empty str of at most {MAX_TAG_CHARS} characters")
        if tag.strip() not in cleaned:
            cleaned.append(tag.strip())
    if len(cleaned) > MAX_TAGS:
        raise InvalidMemoryRequest(f"at most {MAX_TAGS} tags")
    return tuple(cleaned)
