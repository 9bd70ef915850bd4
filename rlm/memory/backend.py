"""What a run needs of a memory store, whichever holds it (the local file, or the Ray actor)."""

from __future__ import annotations

import builtins  # MemoryBackend.list shadows the builtin in the annotations of the methods after it
from collections.abc import Sequence
from typing import Protocol

from rlm.memory.records import Entry, Hit, Provenance, Version

__all__ = ["MemoryBackend"]


class MemoryBackend(Protocol):
    """What a run needs of a memory store: :class:`~rlm.memory.store.MemoryStore`, or the Ray actor's client."""

    @property
    def semantic(self) -> bool: ...

    def add(self, namespace: str, text: str, *, kind: str = "note", title: str = "", tags: Sequence[str] = (),
            provenance: Provenance | None = None, entry_id: str | None = None, op_id: str | None = None,
            quarantined: bool = False) -> Entry: ...

    def edit(self, namespace: str, entry_id: str, *, text: str | None = None, title: str | None = None,
             tags: Sequence[str] | None = None, kind: str | None = None, provenance: Provenance | None = None,
             op_id: str | None = None, reason: str = "", quarantined: bool | None = None) -> Entry: ...

    def delete(self, namespace: str, entry_id: str, *, provenance: Provenance | None = None,
               op_id: str | None = None, reason: str = "") -> Entry: ...

    def get(self, namespace: str, entry_id: str) -> Entry: ...

    def history(self, namespace: str, entry_id: str) -> list[Version]: ...

    def list(self, namespace: str, *, kind: str | None = None, tags: Sequence[str] | None = None,
             run_id: str | None = None, include_deleted: bool = False, include_quarantined: bool = True,
             limit: int | None = None) -> list[Entry]: ...

    def search(self, namespace: str, query: str, *, k: int = 5, kinds: Sequence[str] | None = None,
               tags: Sequence[str] | None = None, run_id: str | None = None) -> builtins.list[Hit]: ...

    def close(self) -> None: ...
