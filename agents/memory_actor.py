"""Swarm memory on Ray: one actor owns the DuckDB file, every agent talks to it through a client.

DuckDB allows one read-write process per file, so in a Ray run exactly one
:class:`MemoryStoreActor` (``num_cpus=0``: it waits on I/O, it must not take a
CPU slot from agents) opens :class:`~rlm.memory.store.MemoryStore`; agents hold
a :class:`MemoryClient`, which has the same interface as the in-process store
(``add``, ``edit``, ``delete``, ``get``, ``history``, ``list``, ``search``, ...),
so :class:`~rlm.memory.extension.MemoryExtension` takes either.

Correctness under failure:

* The client fills in the caller-generated ids (the entry id of an ``add``,
  the ``op_id`` of an ``edit``/``delete``) *before* the first attempt, and
  retries with the same ids when the actor dies or restarts: a write that was
  committed before the crash is recognised and not repeated, one that was not
  is written by the retry. Zero lost, zero duplicated.
* The actor restarts itself (``max_restarts=-1``) and reopens the file; DuckDB
  replays its write-ahead log, so every committed write is there.
* Group commit: ``add`` calls arriving while a commit is in progress are
  written together in the next transaction (``MemoryStore.add_many``); a commit
  costs milliseconds, so a swarm of writers would otherwise queue behind it.
"""

from __future__ import annotations

import asyncio
import builtins  # MemoryClient.list shadows the builtin in the annotations of the methods after it
import hashlib
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlm.errors import RLMError
from rlm.memory.records import Entry, Hit, MemoryStoreError, Provenance, Version
from rlm.memory.store import MemoryStore, new_id

#: Store methods the client may call through :meth:`MemoryStoreActor.call` (reads and non-add writes).
FORWARDED = frozenset({"edit", "delete", "get", "history", "list", "search", "namespaces", "export",
                       "import_records"})


class MemoryStoreActor:
    """The one owner of the memory file in a Ray run (wrap with :func:`actor_class`, or use :func:`start`)."""

    def __init__(self, path: str, semantic: bool | None = None) -> None:
        self._store = MemoryStore(path, semantic=semantic, lock_timeout_s=30.0)
        self._pending: list[tuple[dict[str, Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def add(self, item: dict[str, Any]) -> Entry:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let calls delivered in the same tick join this batch
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results: list[Any] = self._store.add_many([item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 -- the whole transaction failed: every caller hears it
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def call(self, method: str, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        if method not in FORWARDED:
            raise MemoryStoreError(f"the memory actor does not offer {method!r}")
        return getattr(self._store, method)(*args, **kwargs)

    async def semantic_enabled(self) -> bool:
        return self._store.semantic

    async def close(self) -> None:
        self._store.close()


def actor_class() -> Any:
    """:class:`MemoryStoreActor` as a Ray actor class (Ray imported only when used)."""
    import ray

    return ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)(MemoryStoreActor)


def actor_name(path: str | Path) -> str:
    return "rlm-memory-" + hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:16]


def start(path: str | Path, *, semantic: bool | None = None) -> MemoryClient:
    """Start (or join) the memory actor for ``path`` in the connected Ray cluster; returns a client."""
    actor = actor_class().options(name=actor_name(path), get_if_exists=True).remote(str(path), semantic)
    return MemoryClient(actor)


class MemoryClient:
    """The in-process store's interface, served by the memory actor; picklable (pass it to other actors).

    Args:
        actor: the :class:`MemoryStoreActor` handle.
        retries: attempts per call when the actor is dead or restarting.
        call_timeout_s: how long one attempt may wait for its reply.
    """

    def __init__(self, actor: Any, *, retries: int = 20, call_timeout_s: float = 120.0) -> None:
        self.actor = actor
        self.retries = retries
        self.call_timeout_s = call_timeout_s
        self._semantic: bool | None = None

    # -- writes: ids are fixed before the first attempt, so retries are idempotent ---------
    def add(self, namespace: str, text: str, *, kind: str = "note", title: str = "", tags: Sequence[str] = (),
            provenance: Provenance | None = None, entry_id: str | None = None, op_id: str | None = None,
            quarantined: bool = False) -> Entry:
        entry_id = entry_id or new_id(kind[:1] if isinstance(kind, str) and kind else "m")
        item = dict(namespace=namespace, text=text, kind=kind, title=title, tags=list(tags or ()),
                    provenance=provenance, entry_id=entry_id, op_id=op_id, quarantined=quarantined)
        return self._retry(lambda: self.actor.add.remote(item))

    def edit(self, namespace: str, entry_id: str, **fields: Any) -> Entry:
        fields.setdefault("op_id", f"edit:{entry_id}:{uuid.uuid4().hex}")
        return self._call("edit", namespace, entry_id, **fields)

    def delete(self, namespace: str, entry_id: str, **fields: Any) -> Entry:
        fields.setdefault("op_id", f"delete:{entry_id}:{uuid.uuid4().hex}")
        return self._call("delete", namespace, entry_id, **fields)

    # -- reads ----------------------------------------------------------------------------
    def get(self, namespace: str, entry_id: str) -> Entry:
        return self._call("get", namespace, entry_id)

    def history(self, namespace: str, entry_id: str) -> list[Version]:
        return self._call("history", namespace, entry_id)

    def list(self, namespace: str, **filters: Any) -> list[Entry]:
        return self._call("list", namespace, **filters)

    def search(self, namespace: str, query: str, **options: Any) -> builtins.list[Hit]:
        return self._call("search", namespace, query, **options)

    def namespaces(self) -> dict[str, dict[str, int]]:
        return self._call("namespaces")

    def export(self, namespace: str, **options: Any) -> builtins.list[dict[str, Any]]:
        return self._call("export", namespace, **options)

    def import_records(self, records: builtins.list[dict[str, Any]], **options: Any) -> dict[str, int]:
        return self._call("import_records", records, **options)

    @property
    def semantic(self) -> bool:
        if self._semantic is None:
            self._semantic = bool(self._retry(lambda: self.actor.semantic_enabled.remote()))
        return self._semantic

    def close(self) -> None:
        """Clients own nothing: closing one leaves the actor (and the other clients) running."""

    def shutdown(self) -> None:
        """Close the file and stop the actor (the run's owner does this once, at the end)."""
        import ray

        try:
            self._retry(lambda: self.actor.close.remote())
        finally:
            ray.kill(self.actor, no_restart=True)

    # -- plumbing -----------------------------------------------------------------------------
    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._retry(lambda: self.actor.call.remote(method, args, kwargs))

    def _retry(self, submit: Any) -> Any:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        delay = 0.05
        for attempt in range(self.retries + 1):
            try:
                return ray.get(submit(), timeout=self.call_timeout_s)
            except RayTaskError as exc:  # the store raised: give the caller the store's own exception
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, RLMError) else exc) from None
            except (RayActorError, GetTimeoutError) as exc:
                if attempt == self.retries:
                    raise MemoryStoreError(f"the memory actor is unavailable: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")
