"""The memory store: notes, memories and docs of every namespace in one DuckDB file.

File: ``$RLM_HOME/memory.duckdb`` (:func:`memory_path`), separate from the run
log so that ``rlm memory`` commands and ``rlm runs`` never wait on each other.

Tables (created by append-only migrations recorded in ``_migrations``, as in
:mod:`rlm.runlog`)::

    entries         current state, one row per (namespace, id); deleted rows stay as tombstones
    entry_versions  every write: (namespace, id, version, op, ...fields, provenance, op_id, at)
    entry_vectors   sentence embeddings per (namespace, id, version, model) for semantic search

Writes are idempotent: an entry's id and each write's ``op_id`` come from the
caller, so a retried ``add`` of the same id and text returns the stored entry
and a retried ``edit``/``delete`` with the same ``op_id`` changes nothing.
Every write is one transaction; DuckDB's write-ahead log makes a committed
write survive a killed process, and an uncommitted one vanish whole.

Concurrency: DuckDB allows one read-write process per file. Within a process
share one :class:`MemoryStore` (it is thread-safe); across processes (a Ray
run) one actor owns the store and the others talk to it
(:mod:`rlm.agents.memory_actor`). Opening a file locked by another process
waits up to ``lock_timeout_s`` and then fails with a message naming the cause.

Search: :meth:`MemoryStore.search` ranks with BM25 (DuckDB's ``fts``
extension, loaded offline; see :mod:`rlm.memory.fts`) over an in-memory index
rebuilt per namespace after writes, fused by reciprocal rank with cosine
similarity of all-MiniLM-L6-v2 embeddings when that model is installed
(:mod:`rlm.memory.embed`).
"""

from __future__ import annotations

import builtins  # MemoryStore.list shadows the builtin in the annotations of the methods after it
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import duckdb

from rlm.migrations import apply_migrations
from rlm.memory import fts
from rlm.memory.records import (
    Entry,
    EntryNotFound,
    Hit,
    InvalidMemoryRequest,
    MemoryConflict,
    MemoryStoreError,
    Provenance,
    Version,
    check_fields,
    check_namespace,
    check_tags,
)
from rlm.memory.search import SearchIndex

__all__ = ["MIGRATIONS", "MemoryStore", "memory_path", "migrate"]

Connection = duckdb.DuckDBPyConnection
STORE_DB = "memstore"

# --------------------------------------------------------------------------
# Migrations (append-only: never edit one that was released, add a new one)
# --------------------------------------------------------------------------

_FIELDS = """
    kind        VARCHAR NOT NULL,
    title       VARCHAR NOT NULL,
    text        VARCHAR NOT NULL,
    tags        VARCHAR[] NOT NULL,
    source      VARCHAR NOT NULL,
    run_id      VARCHAR,
    agent_id    VARCHAR,
    depth       INTEGER,
    span_start  BIGINT,
    span_end    BIGINT,
    evidence    JSON
"""


def m001_initial(conn: Connection) -> None:
    """Entries, their version history, and embeddings."""
    conn.execute(f"""
        CREATE TABLE entries (
            namespace   VARCHAR NOT NULL,
            id          VARCHAR NOT NULL,
            {_FIELDS},
            created_at  DOUBLE NOT NULL,
            updated_at  DOUBLE NOT NULL,
            version     INTEGER NOT NULL,
            deleted     BOOLEAN NOT NULL DEFAULT false,
            quarantined BOOLEAN NOT NULL DEFAULT false,
            PRIMARY KEY (namespace, id)
        )""")
    conn.execute(f"""
        CREATE TABLE entry_versions (
            namespace   VARCHAR NOT NULL,
            id          VARCHAR NOT NULL,
            version     INTEGER NOT NULL,
            op          VARCHAR NOT NULL,
            {_FIELDS},
            op_id       VARCHAR NOT NULL,
            reason      VARCHAR NOT NULL DEFAULT '',
            written_at  DOUBLE NOT NULL,
            PRIMARY KEY (namespace, id, version),
            UNIQUE (namespace, op_id)
        )""")
    conn.execute("""
        CREATE TABLE entry_vectors (
            namespace VARCHAR NOT NULL,
            id        VARCHAR NOT NULL,
            version   INTEGER NOT NULL,
            model     VARCHAR NOT NULL,
            vec       FLOAT[] NOT NULL,
            PRIMARY KEY (namespace, id, version, model)
        )""")


MIGRATIONS: list[Callable[[Connection], None]] = [m001_initial]


def migrate(conn: Connection) -> list[str]:
    """Apply the migrations this file lacks, in order, each in its own transaction; return their names."""
    return apply_migrations(conn, MIGRATIONS)


def memory_path(home: Path) -> Path:
    """The memory database under ``RLM_HOME``."""
    return Path(home) / "memory.duckdb"


# --------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------

_ENTRY_COLUMNS = ("namespace, id, kind, title, text, tags, source, run_id, agent_id, depth, span_start, span_end, "
                  "evidence, created_at, updated_at, version, deleted, quarantined")
_VERSION_COLUMNS = ("namespace, id, version, op, kind, title, text, tags, source, run_id, agent_id, depth, "
                    "span_start, span_end, evidence, op_id, reason, written_at")


def _provenance(source: str, run_id: Any, agent_id: Any, depth: Any, start: Any, end: Any, evidence: Any) -> Provenance:
    return Provenance(source=source, run_id=run_id, agent_id=agent_id, depth=depth,
                      span=(int(start), int(end)) if start is not None and end is not None else None,
                      evidence=json.loads(evidence) if evidence else {})


def _entry(row: Sequence[Any]) -> Entry:
    (namespace, id_, kind, title, text, tags, source, run_id, agent_id, depth, start, end, evidence,
     created, updated, version, deleted, quarantined) = row
    return Entry(id=id_, namespace=namespace, kind=kind, text=text, title=title, tags=tuple(tags or ()),
                 provenance=_provenance(source, run_id, agent_id, depth, start, end, evidence),
                 created_at=created, updated_at=updated, version=version, deleted=deleted, quarantined=quarantined)


def _version(row: Sequence[Any]) -> Version:
    (namespace, id_, version, op, kind, title, text, tags, source, run_id, agent_id, depth, start, end, evidence,
     op_id, reason, at) = row
    provenance = _provenance(source, run_id, agent_id, depth, start, end, evidence)
    return Version(id=id_, namespace=namespace, version=version, op=op, kind=kind, text=text, title=title,
                   tags=tuple(tags or ()), provenance=provenance, op_id=op_id, at=at, reason=reason)


def _provenance_params(p: Provenance) -> list[Any]:
    span = p.span or (None, None)
    return [p.source, p.run_id, p.agent_id, p.depth, span[0], span[1], json.dumps(p.evidence, default=str)]


def new_id(prefix: str = "m") -> str:
    """A fresh random entry id, e.g. ``m-3f9a1c2b7d4e``."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------


def _connect(path: Path, read_only: bool, lock_timeout_s: float) -> Connection:
    if read_only and not path.exists():
        raise MemoryStoreError(f"no memory store at {path} yet (nothing was written to memory)")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + lock_timeout_s
    while True:
        conn = duckdb.connect(":memory:", config=fts.offline_config())
        try:
            # The file is attached to an in-memory database, which then holds the (derived) search indexes:
            # a read-only file cannot host them, and they never belong in the file anyway.
            quoted = str(path).replace("'", "''")
            conn.execute(f"ATTACH '{quoted}' AS {STORE_DB}{' (READ_ONLY)' if read_only else ''}")
            conn.execute(f"USE {STORE_DB}")
            return conn
        except (duckdb.Error, OSError) as exc:
            conn.close()
            cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            locked = "lock" in cause.lower()
            if locked and time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            if locked:
                hint = ("another process has it open (DuckDB allows one read-write process per file): wait for "
                        "that rlm run to finish; while `rlm serve` runs, `rlm memory` goes through it")
            elif "already attached" in cause:
                hint = "this process already has it open: share that MemoryStore"
            else:
                hint = "move the file away or use another RLM_HOME"
            cause = cause.split(" - ")[-1] if "already attached" in cause else cause
            raise MemoryStoreError(f"cannot open memory store {path}: {cause} ({hint})") from exc


class MemoryStore:
    """Entries of every namespace in one DuckDB file; thread-safe. See the module docstring.

    Args:
        path: the database file (usually :func:`memory_path` of ``RLM_HOME``).
        read_only: open without write access (many processes may, but not beside a writer).
        semantic: ``None`` uses semantic search when the embedding model is installed; ``False`` never.
        lock_timeout_s: how long to wait for another process to release the file.
    """

    def __init__(self, path: str | Path, *, read_only: bool = False, semantic: bool | None = None,
                 lock_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.RLock()
        self._conn = _connect(self.path, read_only, lock_timeout_s)
        try:
            fts.load_fts(self._conn)
            self.migrations_applied = [] if read_only else migrate(self._conn)
            if read_only:
                self._check_schema()
            self._index = SearchIndex(self._conn, semantic=semantic, persist_vectors=not read_only)
        except duckdb.Error as exc:
            self._conn.close()
            raise MemoryStoreError(f"cannot prepare memory store {self.path}: {exc}") from exc
        except BaseException:
            self._conn.close()
            raise
        self._closed = False

    def _check_schema(self) -> None:
        try:
            done = {r[0] for r in self._conn.execute("SELECT name FROM _migrations").fetchall()}
        except duckdb.Error:
            done = set()
        missing = [m.__name__ for m in MIGRATIONS if m.__name__ not in done]
        if missing:
            raise MemoryStoreError(f"memory store {self.path} needs migrations {missing}: open it read-write once")

    # -- lifecycle ------------------------------------------------------------
    def close(self) -> None:
        """Close the file (a checkpoint folds the write-ahead log in). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def semantic(self) -> bool:
        """Whether searches also rank by embedding similarity."""
        return self._index.embedder is not None

    # -- writing --------------------------------------------------------------
    def add(self, namespace: str, text: str, *, kind: str = "note", title: str = "", tags: Sequence[str] = (),
            provenance: Provenance | None = None, entry_id: str | None = None, op_id: str | None = None,
            quarantined: bool = False) -> Entry:
        """Store a new entry. Re-adding the same id with the same content returns the stored entry.

        Raises:
            MemoryConflict: the id exists with different content.
            MemoryStoreError: invalid fields or namespace.
        """
        (result,) = self.add_many([dict(namespace=namespace, text=text, kind=kind, title=title, tags=tags,
                                        provenance=provenance, entry_id=entry_id, op_id=op_id,
                                        quarantined=quarantined)])
        if isinstance(result, Exception):
            raise result
        return result

    def add_many(self, items: Sequence[dict[str, Any]]) -> list[Entry | MemoryStoreError]:
        """Several :meth:`add` calls (keyword dicts) in one transaction; each item's error is returned, not raised.

        One commit for many notes is what makes a busy swarm cheap (DuckDB pays per statement and commit).
        """
        results: list[Entry | MemoryStoreError | None] = [None] * len(items)
        rows: dict[tuple[str, str], tuple[int, Entry, str]] = {}
        for index, item in enumerate(items):
            try:
                entry, op_id = _new_entry(**item)
            except MemoryStoreError as exc:
                results[index] = exc
                continue
            key = (entry.namespace, entry.id)
            if key in rows:  # the same id twice in one batch: the first wins, like a retry
                results[index] = _same_or_conflict(rows[key][1], entry)
            else:
                rows[key] = (index, entry, op_id)
        if rows:
            with self._write() as conn:
                existing = self._fetch_keys(conn, list(rows))
                fresh = []
                for key, (index, entry, op_id) in rows.items():
                    if key in existing:
                        results[index] = _same_or_conflict(existing[key], entry)
                    else:
                        results[index] = entry
                        fresh.append((entry, op_id))
                self._insert_new(conn, fresh)
        done: list[Entry | MemoryStoreError] = []
        for index, result in enumerate(results):
            if result is None:  # a duplicate whose first copy was stored: the first copy's result
                result = results[next(i for i, item in enumerate(items) if _key(item) == _key(items[index]))]
                assert result is not None  # every first copy got its result above
            done.append(result)
        return done

    def _fetch_keys(self, conn: Connection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Entry]:
        rows = conn.execute(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE list_contains(?, namespace || chr(0) || id)",
                            [[f"{namespace}\0{entry_id}" for namespace, entry_id in keys]]).fetchall()
        return {(e.namespace, e.id): e for e in map(_entry, rows)}

    @staticmethod
    def _insert_new(conn: Connection, fresh: list[tuple[Entry, str]]) -> None:
        if not fresh:
            return
        entries, versions = [], []
        for entry, op_id in fresh:
            p = entry.provenance
            common = {"namespace": entry.namespace, "id": entry.id, "kind": entry.kind, "title": entry.title,
                      "text": entry.text, "tags": list(entry.tags), "source": p.source, "run_id": p.run_id,
                      "agent_id": p.agent_id, "depth": p.depth, "span_start": p.span[0] if p.span else None,
                      "span_end": p.span[1] if p.span else None, "evidence": json.dumps(p.evidence, default=str)}
            entries.append({**common, "created_at": entry.created_at, "updated_at": entry.updated_at, "version": 1,
                            "deleted": False, "quarantined": entry.quarantined})
            versions.append({**common, "version": 1, "op": "add", "op_id": op_id, "reason": "",
                             "written_at": entry.created_at})
        conn.execute(_json_insert("entries", _ENTRY_TYPES), [json.dumps(entries)])
        conn.execute(_json_insert("entry_versions", _VERSION_TYPES), [json.dumps(versions)])

    def edit(self, namespace: str, entry_id: str, *, text: str | None = None, title: str | None = None,
             tags: Sequence[str] | None = None, kind: str | None = None, provenance: Provenance | None = None,
             op_id: str | None = None, reason: str = "", quarantined: bool | None = None) -> Entry:
        """Change an entry's fields; the old version stays in the history. A repeated ``op_id`` is a no-op.

        Raises:
            EntryNotFound: no such entry, or it was deleted.
        """
        namespace = check_namespace(namespace)
        with self._write() as conn:
            current = self._require(conn, namespace, entry_id)
            if op_id is not None and self._op_done(conn, namespace, op_id):
                return current
            if current.deleted:
                raise EntryNotFound(f"entry {entry_id!r} in {namespace!r} was deleted; it cannot be edited")
            new_kind, new_text, new_title, new_tags = check_fields(
                kind if kind is not None else current.kind, text if text is not None else current.text,
                title if title is not None else current.title,
                list(tags) if tags is not None else list(current.tags))
            new_quarantine = current.quarantined if quarantined is None else quarantined
            if (new_kind, new_text, new_title, new_tags, new_quarantine) == (
                    current.kind, current.text, current.title, current.tags, current.quarantined):
                return current
            return self._rewrite(conn, current, "edit", new_kind, new_title, new_text, new_tags,
                                 provenance or Provenance(), op_id, reason, deleted=False, quarantined=new_quarantine)

    def delete(self, namespace: str, entry_id: str, *, provenance: Provenance | None = None,
               op_id: str | None = None, reason: str = "") -> Entry:
        """Mark an entry deleted (a tombstone version keeps its last text). Deleting twice is a no-op."""
        namespace = check_namespace(namespace)
        with self._write() as conn:
            current = self._require(conn, namespace, entry_id)
            if current.deleted or (op_id is not None and self._op_done(conn, namespace, op_id)):
                return current
            return self._rewrite(conn, current, "delete", current.kind, current.title, current.text, current.tags,
                                 provenance or Provenance(), op_id, reason, deleted=True,
                                 quarantined=current.quarantined)

    def _rewrite(self, conn: Connection, current: Entry, op: str, kind: str, title: str, text: str,
                 tags: tuple[str, ...], provenance: Provenance, op_id: str | None, reason: str, *, deleted: bool,
                 quarantined: bool) -> Entry:
        now = time.time()
        version = current.version + 1
        conn.execute(
            "UPDATE entries SET kind = ?, title = ?, text = ?, tags = ?, source = ?, run_id = ?, agent_id = ?, "
            "depth = ?, span_start = ?, span_end = ?, evidence = ?, updated_at = ?, version = ?, deleted = ?, "
            "quarantined = ? WHERE namespace = ? AND id = ?",
            [kind, title, text, list(tags), *_provenance_params(provenance), now, version, deleted, quarantined,
             current.namespace, current.id])
        self._append_version(conn, current.namespace, current.id, version, op, kind, title, text, tags, provenance,
                             op_id or f"{op}:{current.id}:{version}:{uuid.uuid4().hex[:8]}", reason, now)
        entry = self._fetch(conn, current.namespace, current.id)
        assert entry is not None
        return entry

    @staticmethod
    def _append_version(conn: Connection, namespace: str, entry_id: str, version: int, op: str, kind: str,
                        title: str, text: str, tags: tuple[str, ...], provenance: Provenance, op_id: str,
                        reason: str, at: float) -> None:
        conn.execute(f"INSERT INTO entry_versions ({_VERSION_COLUMNS}) VALUES ({', '.join('?' * 18)})",
                     [namespace, entry_id, version, op, kind, title, text, list(tags),
                      *_provenance_params(provenance), op_id, reason, at])

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction: commits on success, rolls back on any error, marks the index stale."""
        if self.read_only:
            raise MemoryStoreError(f"memory store {self.path} is open read-only")
        with self._reading() as conn:
            conn.execute("BEGIN TRANSACTION")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):  # the error that got here is the one to report
                    conn.execute("ROLLBACK")
                raise
            finally:
                self._index.invalidate()

    # -- reading --------------------------------------------------------------
    def get(self, namespace: str, entry_id: str) -> Entry:
        """The entry (a deleted one too: see ``Entry.deleted``). Raises :class:`EntryNotFound`."""
        with self._reading() as conn:
            return self._require(conn, check_namespace(namespace), entry_id)

    def history(self, namespace: str, entry_id: str) -> list[Version]:
        """Every version of an entry, oldest first."""
        with self._reading() as conn:
            self._require(conn, check_namespace(namespace), entry_id)
            rows = conn.execute(f"SELECT {_VERSION_COLUMNS} FROM entry_versions WHERE namespace = ? AND id = ? "
                                "ORDER BY version", [namespace, entry_id]).fetchall()
        return [_version(row) for row in rows]

    def list(self, namespace: str, *, kind: str | None = None, tags: Sequence[str] | None = None,
             run_id: str | None = None, include_deleted: bool = False, include_quarantined: bool = True,
             limit: int | None = None) -> list[Entry]:
        """Entries of a namespace, oldest first, filtered by kind, tags (all must match) and run."""
        where = ["namespace = ?"]
        params: builtins.list[Any] = [check_namespace(namespace)]
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if tags:
            where.append("list_has_all(tags, ?)")
            params.append(list(check_tags(list(tags))))
        if run_id is not None:
            where.append("run_id = ?")
            params.append(run_id)
        if not include_deleted:
            where.append("NOT deleted")
        if not include_quarantined:
            where.append("NOT quarantined")
        sql = f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE {' AND '.join(where)} ORDER BY created_at, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._reading() as conn:
            return [_entry(row) for row in conn.execute(sql, params).fetchall()]

    def namespaces(self) -> dict[str, dict[str, int]]:
        """``{namespace: {kind: live entries}}`` for every namespace that has entries."""
        with self._reading() as conn:
            rows = conn.execute("SELECT namespace, kind, count(*) FILTER (WHERE NOT deleted) FROM entries "
                                "GROUP BY ALL ORDER BY ALL").fetchall()
        result: dict[str, dict[str, int]] = {}
        for namespace, kind, count in rows:
            result.setdefault(namespace, {})[kind] = int(count)
        return result

    def search(self, namespace: str, query: str, *, k: int = 5, kinds: Sequence[str] | None = None,
               tags: Sequence[str] | None = None, run_id: str | None = None) -> builtins.list[Hit]:
        """The ``k`` best live, unquarantined entries for ``query``, best first.

        ``run_id`` limits *notes* to that run (memories and docs always count);
        ``kinds`` and ``tags`` (all must match) filter further.
        """
        namespace = check_namespace(namespace)
        if not isinstance(query, str) or not query.strip():
            raise InvalidMemoryRequest("the search query must be a non-empty str")
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 100:
            raise InvalidMemoryRequest("k must be an int from 1 to 100")
        tags_ = list(check_tags(list(tags))) if tags else []
        with self._reading() as conn:
            ranked = self._index.search(conn, namespace, query, k=k, kinds=list(kinds or []), tags=tags_,
                                        run_id=run_id)
            entries = {e.id: e for e in self._fetch_many(conn, namespace, [item.entry_id for item in ranked])}
        return [Hit(entry=entries[item.entry_id], score=item.score, bm25=item.bm25, cosine=item.cosine)
                for item in ranked if item.entry_id in entries]

    def export(self, namespace: str, *, include_deleted: bool = False,
               history: bool = False) -> builtins.list[dict[str, Any]]:
        """JSON-able records of a namespace (with ``"versions"`` when ``history``), for JSONL export."""
        records = []
        for entry in self.list(namespace, include_deleted=include_deleted):
            record = entry.to_dict()
            if history:
                record["versions"] = [v.to_dict() for v in self.history(namespace, entry.id)]
            records.append(record)
        return records

    def import_records(self, records: Iterable[dict[str, Any]], *, namespace: str | None = None) -> dict[str, int]:
        """Import exported records (into ``namespace``, or each record's own). Re-importing changes nothing.

        An id that exists with other text becomes a new version (``source="import"``). Returns counts of
        ``added``, ``updated`` and ``unchanged``.
        """
        prepared = []
        for number, record in enumerate(records, start=1):  # validate everything before writing anything
            try:
                prepared.append(_prepare_import(record, namespace))
            except (InvalidMemoryRequest, TypeError, ValueError, KeyError) as exc:
                raise InvalidMemoryRequest(f"import record {number}: {exc}") from None
        counts = {"added": 0, "updated": 0, "unchanged": 0}
        for item in prepared:
            counts[self._import_one(*item)] += 1
        return counts

    def _import_one(self, target: str, entry_id: str, kind: str, text: str, title: str, tags: tuple[str, ...],
                    provenance: Provenance) -> str:
        try:
            current = self.get(target, entry_id)
        except EntryNotFound:
            self.add(target, text, kind=kind, title=title, tags=tags, provenance=provenance, entry_id=entry_id,
                     op_id=f"import:{entry_id}:{_digest(text, title, tags)}")
            return "added"
        same = (current.text, current.title, current.tags, current.kind) == (text, title, tags, kind)
        if same and not current.deleted:
            return "unchanged"
        if current.deleted:
            raise MemoryConflict(f"entry {entry_id!r} was deleted in {target!r}; import it under another id")
        self.edit(target, entry_id, text=text, title=title, tags=tags, kind=kind, provenance=provenance,
                  op_id=f"import:{entry_id}:{_digest(text, title, tags)}", reason="import")
        return "updated"

    # -- helpers --------------------------------------------------------------
    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        """The store's lock and its live connection; DuckDB errors come out as MemoryStoreError."""
        with self._lock:
            if self._closed:
                raise MemoryStoreError(f"memory store {self.path} is closed")
            try:
                yield self._conn
            except duckdb.Error as exc:
                raise MemoryStoreError(f"memory store {self.path}: {exc}") from exc

    def _fetch(self, conn: Connection, namespace: str, entry_id: str) -> Entry | None:
        row = conn.execute(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE namespace = ? AND id = ?",
                           [namespace, entry_id]).fetchone()
        return _entry(row) if row else None

    def _fetch_many(self, conn: Connection, namespace: str, ids: builtins.list[str]) -> builtins.list[Entry]:
        if not ids:
            return []
        rows = conn.execute(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE namespace = ? AND list_contains(?, id)",
                            [namespace, ids]).fetchall()
        return [_entry(row) for row in rows]

    def _require(self, conn: Connection, namespace: str, entry_id: str) -> Entry:
        entry = self._fetch(conn, namespace, _check_id(entry_id))
        if entry is None:
            raise EntryNotFound(f"no entry {entry_id!r} in memory namespace {namespace!r}")
        return entry

    @staticmethod
    def _op_done(conn: Connection, namespace: str, op_id: str) -> bool:
        return conn.execute("SELECT 1 FROM entry_versions WHERE namespace = ? AND op_id = ?",
                            [namespace, op_id]).fetchone() is not None




def _prepare_import(record: Any, namespace: str | None) -> tuple[Any, ...]:
    if not isinstance(record, dict):
        raise InvalidMemoryRequest("not a JSON object")
    target = check_namespace(namespace or record.get("namespace"))
    original = Provenance.from_dict(record.get("provenance"))
    provenance = Provenance(source="import", run_id=original.run_id, agent_id=original.agent_id,
                            depth=original.depth, span=original.span,
                            evidence={**original.evidence, "original_source": original.source})
    kind, text, title, tags = check_fields(record.get("kind"), record.get("text"), record.get("title") or "",
                                           record.get("tags") or [])
    return target, _check_id(record.get("id")), kind, text, title, tags, provenance


_COMMON_TYPES = {"namespace": "VARCHAR", "id": "VARCHAR", "kind": "VARCHAR", "title": "VARCHAR", "text": "VARCHAR",
                 "tags": "VARCHAR[]", "source": "VARCHAR", "run_id": "VARCHAR", "agent_id": "VARCHAR",
                 "depth": "INTEGER", "span_start": "BIGINT", "span_end": "BIGINT", "evidence": "VARCHAR"}
_ENTRY_TYPES = {**_COMMON_TYPES, "created_at": "DOUBLE", "updated_at": "DOUBLE", "version": "INTEGER",
                "deleted": "BOOLEAN", "quarantined": "BOOLEAN"}
_VERSION_TYPES = {**_COMMON_TYPES, "version": "INTEGER", "op": "VARCHAR", "op_id": "VARCHAR", "reason": "VARCHAR",
                  "written_at": "DOUBLE"}


def _json_insert(table: str, types: dict[str, str]) -> str:
    # One JSON parameter per batch: DuckDB binds Python values one by one (slow) but parses JSON fast.
    schema = json.dumps([types])
    return (f"INSERT INTO {table} ({', '.join(types)}) "
            f"SELECT unnest(from_json($1::JSON, '{schema}'), recursive := true)")


def _key(item: dict[str, Any]) -> tuple[Any, Any]:
    return item.get("namespace"), item.get("entry_id")


def _new_entry(namespace: str, text: str, *, kind: str = "note", title: str = "", tags: Sequence[str] | None = (),
               provenance: Provenance | None = None, entry_id: str | None = None, op_id: str | None = None,
               quarantined: bool = False) -> tuple[Entry, str]:
    namespace = check_namespace(namespace)
    kind, text, title, tags_ = check_fields(kind, text, title, list(tags) if tags is not None else None)
    entry_id = _check_id(entry_id) if entry_id is not None else new_id(kind[0])
    now = time.time()
    entry = Entry(id=entry_id, namespace=namespace, kind=kind, text=text, title=title, tags=tags_,
                  provenance=provenance or Provenance(), created_at=now, updated_at=now, version=1,
                  quarantined=bool(quarantined))
    return entry, op_id or f"add:{entry_id}"


def _same_or_conflict(stored: Entry, new: Entry) -> Entry | MemoryStoreError:
    if (stored.text, stored.kind, stored.title) == (new.text, new.kind, new.title):
        return stored
    return MemoryConflict(f"entry {new.id!r} already exists in {new.namespace!r} with other content")


def _check_id(entry_id: Any) -> str:
    if not isinstance(entry_id, str) or not entry_id.strip() or len(entry_id) > 200:
        raise InvalidMemoryRequest(f"entry id must be a non-empty str of at most 200 characters, not {entry_id!r}")
    return entry_id


def _digest(text: str, title: str, tags: tuple[str, ...]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps([text, title, list(tags)]).encode()).hexdigest()[:16]
