"""The run log: every event of every run, kept in one DuckDB file.

:class:`RunLog` appends each :mod:`rlm.events` event to the ``events`` table
(the full event as JSON, in emission order) and keeps denormalized tables up to
date for querying:

``runs``      one row per run (``RunStarted`` inserts it, ``RunFinished`` completes it)
``agents``    one row per agent (``AgentStarted`` / ``AgentFinished``)
``lm_calls``  one row per ``LMCalled``
``cells``     one row per ``CellExecuted``
``events``    ``(run_id, seq, ts, agent_id, type, payload)``, every event

Times are UNIX seconds (``DOUBLE``); use ``to_timestamp(started_at)`` in SQL for
a timestamp. Counters of a run or agent still in progress are 0 and its status
is ``"running"`` (a process that died mid-run leaves it so).

Writing is cheap for the caller: :meth:`RunLog.record` numbers the event, appends
it as one line to a journal file next to the database (one ``write`` system call,
no fsync) and enqueues it; one background thread gathers what arrives within
:data:`BATCH_WINDOW_S` and writes it in a single transaction (DuckDB costs ~10 ms
of CPU per transaction and ~0.05 ms per row, so one transaction per model turn
would cost more than the turn). :meth:`RunLog.flush` waits for everything
recorded so far; the read methods flush first; :meth:`RunLog.close` (also run at
exit and on Ctrl-C through the runner) writes everything.

Nothing recorded is lost when the process dies before the writer caught up
(SIGKILL, a segfault, the OOM killer): the journal
(``rlm.duckdb.<pid>-<token>.journal``, ``<seq> <event JSON>`` per line, held
under an exclusive ``flock`` while its writer lives) is in the kernel's page cache
the moment :meth:`RunLog.record` returns. The next read-write open replays the
journals whose writer is gone (their lock is free), skipping events already in
the database (by ``(run_id, seq)``), and deletes them. A clean close deletes its
own journal.

The schema is created and evolved by append-only migrations (``m001_initial``,
...), each applied once, in order, inside a transaction, and recorded in the
``_migrations`` table. Never edit a released migration: add a new one.

Concurrency: **DuckDB allows only one read-write process per database file.**
While a process (e.g. a running ``rlm run``) holds the log open, opening it from
another process fails with :class:`~rlm.errors.RunLogError` naming the lock
holder; read-only opens (``RunLog(path, read_only=True)``) can be shared by many
processes but not with a writer. Within one process, share one ``RunLog``
between threads: it is thread-safe.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import duckdb

from rlm.errors import RunLogError
from rlm.events import (
    AgentFinished,
    AgentStarted,
    CellExecuted,
    Event,
    LMCalled,
    RunFinished,
    RunStarted,
    event_from_dict,
)
from rlm.migrations import applied_migrations, apply_migrations

__all__ = ["MIGRATIONS", "RunLog", "RunSummary", "migrate"]

log = logging.getLogger(__name__)

Connection = duckdb.DuckDBPyConnection
Migration = Callable[[Connection], None]

# --------------------------------------------------------------------------
# Migrations (append-only: never edit one that was released, add a new one)
# --------------------------------------------------------------------------


def m001_initial(conn: Connection) -> None:
    """Create the runs, agents, lm_calls, cells and events tables."""
    conn.execute(
        """
        CREATE TABLE runs (
            run_id        VARCHAR PRIMARY KEY,
            started_at    DOUBLE,
            finished_at   DOUBLE,
            question      VARCHAR,
            model         VARCHAR,
            sub_model     VARCHAR,
            status        VARCHAR NOT NULL,
            answer        VARCHAR,
            input_tokens  BIGINT NOT NULL DEFAULT 0,
            output_tokens BIGINT NOT NULL DEFAULT 0,
            llm_calls     BIGINT NOT NULL DEFAULT 0,
            cost_usd      DOUBLE,
            iterations    BIGINT NOT NULL DEFAULT 0,
            depth_reached INTEGER NOT NULL DEFAULT 0,
            duration_s    DOUBLE,
            error         VARCHAR,
            config        JSON,
            context_info  JSON
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE agents (
            run_id        VARCHAR NOT NULL,
            agent_id      VARCHAR NOT NULL,
            parent_id     VARCHAR,
            depth         INTEGER,
            model         VARCHAR,
            prompt        VARCHAR,
            node_id       VARCHAR,
            status        VARCHAR NOT NULL,
            answer        VARCHAR,
            iterations    BIGINT NOT NULL DEFAULT 0,
            input_tokens  BIGINT NOT NULL DEFAULT 0,
            output_tokens BIGINT NOT NULL DEFAULT 0,
            llm_calls     BIGINT NOT NULL DEFAULT 0,
            started_at    DOUBLE,
            finished_at   DOUBLE,
            duration_s    DOUBLE,
            error         VARCHAR,
            PRIMARY KEY (run_id, agent_id)
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE lm_calls (
            run_id           VARCHAR NOT NULL,
            call_id          VARCHAR,
            agent_id         VARCHAR,
            ts               DOUBLE NOT NULL,
            model            VARCHAR,
            role             VARCHAR,
            purpose          VARCHAR,
            input_tokens     BIGINT,
            output_tokens    BIGINT,
            cost_usd         DOUBLE,
            latency_s        DOUBLE,
            ok               BOOLEAN,
            error            VARCHAR,
            prompt_preview   VARCHAR,
            response_preview VARCHAR
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE cells (
            run_id     VARCHAR NOT NULL,
            agent_id   VARCHAR,
            ts         DOUBLE NOT NULL,
            iteration  INTEGER,
            cell_index INTEGER,
            code       VARCHAR,
            stdout     VARCHAR,
            stderr     VARCHAR,
            error      VARCHAR,
            duration_s DOUBLE,
            final      BOOLEAN,
            restarted  BOOLEAN
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE events (
            run_id   VARCHAR NOT NULL,
            seq      BIGINT NOT NULL,
            ts       DOUBLE NOT NULL,
            agent_id VARCHAR,
            type     VARCHAR NOT NULL,
            payload  JSON NOT NULL,
            PRIMARY KEY (run_id, seq)
        )
        """
    )


MIGRATIONS: tuple[Migration, ...] = (m001_initial,)
"""Every migration, in the order they are applied. Only ever append."""

def migrate(conn: Connection) -> list[str]:
    """Apply the migrations ``conn``'s database lacks; return the names applied now."""
    return apply_migrations(conn, MIGRATIONS)


def _check_schema_current(conn: Connection, path: Path) -> None:
    """For read-only opens: fail clearly if the schema is missing or outdated."""
    try:
        applied = applied_migrations(conn)
    except duckdb.CatalogException:
        applied = set()
    missing = [m.__name__ for m in MIGRATIONS if m.__name__ not in applied]
    if missing:
        raise RunLogError(
            f"run log {path} is not initialised or is from an older rlm (missing migrations: "
            f"{', '.join(missing)}); open it once read-write to migrate it"
        )


# --------------------------------------------------------------------------
# Batched writes
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    """An insert target: column names and the types used to decode a JSON batch.

    JSON columns are sent as VARCHAR holding JSON text, so the stored text is
    exactly what :func:`_json` produced.
    """

    name: str
    columns: tuple[tuple[str, str], ...]
    or_ignore: bool = False

    def insert_sql(self) -> str:
        names = ", ".join(name for name, _ in self.columns)
        schema = json.dumps([{name: kind for name, kind in self.columns}])
        verb = "INSERT OR IGNORE INTO" if self.or_ignore else "INSERT INTO"
        return f"{verb} {self.name} ({names}) SELECT unnest(from_json($1::JSON, '{schema}'), recursive := true)"


_RUNS = _Table(
    "runs",
    (
        ("run_id", "VARCHAR"),
        ("started_at", "DOUBLE"),
        ("question", "VARCHAR"),
        ("model", "VARCHAR"),
        ("sub_model", "VARCHAR"),
        ("status", "VARCHAR"),
        ("config", "VARCHAR"),
        ("context_info", "VARCHAR"),
    ),
    or_ignore=True,
)
_AGENTS = _Table(
    "agents",
    (
        ("run_id", "VARCHAR"),
        ("agent_id", "VARCHAR"),
        ("parent_id", "VARCHAR"),
        ("depth", "INTEGER"),
        ("model", "VARCHAR"),
        ("prompt", "VARCHAR"),
        ("node_id", "VARCHAR"),
        ("status", "VARCHAR"),
        ("started_at", "DOUBLE"),
    ),
    or_ignore=True,
)
_LM_CALLS = _Table(
    "lm_calls",
    (
        ("run_id", "VARCHAR"),
        ("call_id", "VARCHAR"),
        ("agent_id", "VARCHAR"),
        ("ts", "DOUBLE"),
        ("model", "VARCHAR"),
        ("role", "VARCHAR"),
        ("purpose", "VARCHAR"),
        ("input_tokens", "BIGINT"),
        ("output_tokens", "BIGINT"),
        ("cost_usd", "DOUBLE"),
        ("latency_s", "DOUBLE"),
        ("ok", "BOOLEAN"),
        ("error", "VARCHAR"),
        ("prompt_preview", "VARCHAR"),
        ("response_preview", "VARCHAR"),
    ),
)
_CELLS = _Table(
    "cells",
    (
        ("run_id", "VARCHAR"),
        ("agent_id", "VARCHAR"),
        ("ts", "DOUBLE"),
        ("iteration", "INTEGER"),
        ("cell_index", "INTEGER"),
        ("code", "VARCHAR"),
        ("stdout", "VARCHAR"),
        ("stderr", "VARCHAR"),
        ("error", "VARCHAR"),
        ("duration_s", "DOUBLE"),
        ("final", "BOOLEAN"),
        ("restarted", "BOOLEAN"),
    ),
)
_EVENTS = _Table(
    "events",
    (
        ("run_id", "VARCHAR"),
        ("seq", "BIGINT"),
        ("ts", "DOUBLE"),
        ("agent_id", "VARCHAR"),
        ("type", "VARCHAR"),
        ("payload", "VARCHAR"),
    ),
)
_INSERT_ORDER = (_EVENTS, _RUNS, _AGENTS, _LM_CALLS, _CELLS)

_UPDATE_RUN = """
    UPDATE runs SET finished_at = ?, status = ?, answer = ?, input_tokens = ?, output_tokens = ?,
        llm_calls = ?, cost_usd = ?, iterations = ?, depth_reached = ?, duration_s = ?, error = ?
    WHERE run_id = ?
"""
_UPDATE_AGENT = """
    UPDATE agents SET finished_at = ?, status = ?, answer = ?, iterations = ?, input_tokens = ?,
        output_tokens = ?, llm_calls = ?, duration_s = ?, error = ?
    WHERE run_id = ? AND agent_id = ?
"""


_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)


def _json_bytes(value: Any) -> bytes:
    """UTF-8 JSON DuckDB accepts: non-ASCII kept, lone surrogates replaced, odd objects as str."""
    return _ENCODER.encode(value).encode("utf-8", "replace")


def _json(value: Any) -> str:
    """:func:`_json_bytes` as text."""
    return _json_bytes(value).decode("utf-8")


@dataclass
class _Update:
    """A finishing event: UPDATE its row, or INSERT a minimal one first if missing."""

    sql: str
    params: list[Any]
    fallback_table: _Table
    fallback_row: dict[str, Any]


@dataclass
class _Batch:
    """What one transaction writes: rows per table, then updates in event order."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    updates: list[_Update] = field(default_factory=list)

    def add_row(self, table: _Table, row: dict[str, Any]) -> None:
        self.rows.setdefault(table.name, []).append(row)


def _event_row(seq: int, event: Event, payload: str) -> dict[str, Any]:
    return {
        "run_id": event.run_id,
        "seq": seq,
        "ts": event.ts,
        "agent_id": event.agent_id,
        "type": type(event).__name__,
        "payload": payload,
    }


def _plan_run_started(batch: _Batch, e: RunStarted) -> None:
    batch.add_row(
        _RUNS,
        {
            "run_id": e.run_id,
            "started_at": e.ts,
            "question": e.question,
            "model": e.model,
            "sub_model": e.sub_model,
            "status": "running",
            "config": _json(e.config),
            "context_info": _json(e.context_info),
        },
    )


def _plan_run_finished(batch: _Batch, e: RunFinished) -> None:
    params = [e.ts, e.status, e.answer, e.input_tokens, e.output_tokens, e.llm_calls, e.cost_usd]
    params += [e.iterations, e.depth_reached, e.duration_s, e.error, e.run_id]
    row = {"run_id": e.run_id, "status": e.status}
    batch.updates.append(_Update(_UPDATE_RUN, params, _RUNS, row))


def _plan_agent_started(batch: _Batch, e: AgentStarted) -> None:
    batch.add_row(
        _AGENTS,
        {
            "run_id": e.run_id,
            "agent_id": e.agent_id,
            "parent_id": e.parent_id,
            "depth": e.depth,
            "model": e.model,
            "prompt": e.prompt,
            "node_id": e.node_id,
            "status": "running",
            "started_at": e.ts,
        },
    )


def _plan_agent_finished(batch: _Batch, e: AgentFinished) -> None:
    if e.agent_id is None:
        return
    params = [e.ts, e.status, e.answer, e.iterations, e.input_tokens, e.output_tokens, e.llm_calls]
    params += [e.duration_s, e.error, e.run_id, e.agent_id]
    row = {"run_id": e.run_id, "agent_id": e.agent_id, "status": e.status}
    batch.updates.append(_Update(_UPDATE_AGENT, params, _AGENTS, row))


def _plan_lm_called(batch: _Batch, e: LMCalled) -> None:
    row = {name: getattr(e, name) for name, _ in _LM_CALLS.columns}
    batch.add_row(_LM_CALLS, row)


def _plan_cell_executed(batch: _Batch, e: CellExecuted) -> None:
    row = {name: getattr(e, name) for name, _ in _CELLS.columns if name != "cell_index"}
    batch.add_row(_CELLS, {**row, "cell_index": e.index})


_PLANNERS: dict[type[Event], Callable[[_Batch, Any], None]] = {
    RunStarted: _plan_run_started,
    RunFinished: _plan_run_finished,
    AgentStarted: _plan_agent_started,
    AgentFinished: _plan_agent_finished,
    LMCalled: _plan_lm_called,
    CellExecuted: _plan_cell_executed,
}


#: What the writer gets per event: its sequence number, the event, and its JSON
#: (``_json_bytes(event.to_dict())``, as bytes from :meth:`RunLog.record` and as text from a journal).
_Entry = tuple[int, Event, "bytes | str"]


def _plan(entries: Iterable[_Entry]) -> _Batch:
    batch = _Batch()
    for seq, event, payload in entries:
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
        batch.add_row(_EVENTS, _event_row(seq, event, text))
        planner = _PLANNERS.get(type(event))
        if planner is not None:
            planner(batch, event)
    return batch


def _insert_rows(cur: Connection, table: _Table, rows: list[dict[str, Any]]) -> None:
    # One JSON parameter per batch: DuckDB converts Python values one by one
    # (slow), but parses a JSON document fast.
    cur.execute(table.insert_sql(), [_json(rows)])


def _apply_update(cur: Connection, update: _Update) -> None:
    (changed,) = cur.execute(update.sql, update.params).fetchone() or (0,)
    if changed == 0:  # a finish without its start: keep what we know
        _insert_rows(cur, update.fallback_table, [update.fallback_row])
        cur.execute(update.sql, update.params)


def _write_batch(cur: Connection, batch: _Batch) -> None:
    cur.execute("BEGIN TRANSACTION")
    try:
        for table in _INSERT_ORDER:
            rows = batch.rows.get(table.name)
            if rows:
                _insert_rows(cur, table, rows)
        for update in batch.updates:
            _apply_update(cur, update)
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------

_SUMMARY_FIELDS = (
    "run_id", "started_at", "finished_at", "question", "model", "sub_model", "status", "answer",
    "input_tokens", "output_tokens", "llm_calls", "cost_usd", "iterations", "depth_reached",
    "duration_s", "error", "config", "context_info", "agents",
)  # fmt: skip
_SUMMARY_SELECT = (
    f"SELECT {', '.join(_SUMMARY_FIELDS[:-1])}, "
    "(SELECT count(*) FROM agents a WHERE a.run_id = r.run_id) AS agents FROM runs r"
)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One row of the ``runs`` table (plus its agent count).

    Counters are 0 and ``status`` is ``"running"`` while the run is in progress;
    ``cost_usd`` is ``None`` when any provider's price was unknown.
    """

    run_id: str
    started_at: float | None
    finished_at: float | None
    question: str | None
    model: str | None
    sub_model: str | None
    status: str
    answer: str | None
    input_tokens: int
    output_tokens: int
    llm_calls: int
    cost_usd: float | None
    iterations: int
    depth_reached: int
    duration_s: float | None
    error: str | None
    config: dict[str, Any]
    context_info: dict[str, Any]
    agents: int

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> RunSummary:
        """Build from a ``_SUMMARY_SELECT`` row (JSON columns arrive as text)."""
        data = dict(zip(_SUMMARY_FIELDS, row, strict=True))
        for name in ("config", "context_info"):
            data[name] = json.loads(data[name]) if data[name] else {}
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of all fields."""
        return asdict(self)


# --------------------------------------------------------------------------
# The log
# --------------------------------------------------------------------------

_STOP = object()

#: Closes still running in the background (:meth:`RunLog.close_in_background`), by resolved path.
_closing: dict[Path, list[threading.Thread]] = {}
_closing_lock = threading.Lock()


def wait_for_closes(path: Path) -> None:
    """Wait until this process's background closes of ``path`` are done (one DuckDB owner at a time)."""
    with _closing_lock:
        threads = list(_closing.get(path.resolve(), ()))
    for thread in threads:
        thread.join()
_MAX_BATCH = 5000
#: How long the writer gathers events before it writes them in one transaction
#: (a flush, a read or close writes at once). The journal keeps them meanwhile.
BATCH_WINDOW_S = 1.0
_JOURNAL_SUFFIX = ".journal"


def _open_error(path: Path, exc: BaseException) -> RunLogError:
    cause = str(exc).strip() or type(exc).__name__
    if "lock" in cause.lower():
        hint = (
            "another process has it open (DuckDB allows one read-write process per file); "
            "wait for that rlm process to finish or use another RLM_HOME"
        )
    elif "not a valid duckdb database" in cause.lower():
        hint = "the file is not a DuckDB database; move it away or use another RLM_HOME"
    else:
        hint = "see the cause above"
    return RunLogError(f"cannot open run log {path}: {cause} ({hint})")


def _connect(path: Path, read_only: bool) -> Connection:
    if read_only and not path.exists():
        raise RunLogError(f"cannot open run log {path}: no such file")
    try:
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        return duckdb.connect(str(path), read_only=read_only)
    except (duckdb.Error, OSError) as exc:
        raise _open_error(path, exc) from exc


def _journal_entries(data: bytes) -> list[_Entry]:
    """Parse a journal; a torn last line (the process died mid-write) or an unknown event is skipped."""
    entries: list[_Entry] = []
    for line in data.split(b"\n"):
        seq_text, _, payload = line.partition(b" ")
        try:
            text = payload.decode("utf-8")
            entries.append((int(seq_text), event_from_dict(json.loads(text)), text))
        except (ValueError, KeyError, TypeError, RecursionError):
            continue
    return entries


class RunLog:
    """The run log in one DuckDB file; thread-safe; see the module docstring.

    Args:
        path: the database file (usually ``$RLM_HOME/rlm.duckdb``); created with
            its parent directories if missing.
        read_only: open without write access (several processes may do so at
            once); :meth:`record` then raises.

    Attributes:
        path: the database file.
        read_only: whether it was opened read-only.
        migrations_applied: names of the migrations this open applied (empty
            if the schema was already current).
        write_errors: events the writer could not store (each is logged as a
            warning; the others in its batch are still written).
        recovered: events this open replayed from the journals of processes
            that died before their writer caught up.

    Raises:
        RunLogError: the file is not a DuckDB database, is locked by another
            process, or cannot be created or migrated.
    """

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        wait_for_closes(self.path)
        self._conn = _connect(self.path, read_only)
        try:
            self.migrations_applied = self._prepare_schema()
        except BaseException:
            self._conn.close()
            raise
        self._read_cursor = self._conn.cursor()
        self._read_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._closed = False
        # What the writer has still to do, in order: entries, flush markers (threading.Event), _STOP.
        # Appended under _state_lock; the writer is woken once per batch, not per event (a wake-up
        # costs ~40 us of CPU and a GIL hand-off).
        self._pending: list[Any] = []
        self._wake = threading.Event()  # something is pending
        self._urgent = threading.Event()  # a flush or close waits: write without gathering more
        self._seqs: dict[str, int] = {}
        self.write_errors = 0
        self.recovered = 0
        self._writer: threading.Thread | None = None
        self._journal_fd: int | None = None
        self._journal_path: Path | None = None
        self._journal_failed = False
        self._journaled = 0  # events appended to the journal since it was last emptied
        self._written = 0  # of those, how many the writer has handled
        if not read_only:
            self._recover_journals()
            self._start_writer()
            atexit.register(self.close)

    # -- setup --------------------------------------------------------------

    def _prepare_schema(self) -> list[str]:
        try:
            if self.read_only:
                _check_schema_current(self._conn, self.path)
                return []
            return migrate(self._conn)
        except duckdb.Error as exc:
            raise RunLogError(f"cannot migrate run log {self.path}: {exc}") from exc

    def _start_writer(self) -> None:
        cursor = self._conn.cursor()
        self._writer = threading.Thread(target=self._writer_loop, args=(cursor,), name="rlm-runlog-writer", daemon=True)
        self._writer.start()

    # -- the journal ----------------------------------------------------------

    def _recover_journals(self) -> None:
        """Replay the journals of dead writers (their flock is free), then delete them."""
        for path in sorted(self.path.parent.glob(f"{self.path.name}.*{_JOURNAL_SUFFIX}")):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # its writer is alive (another process, or another RunLog of this one)
                with os.fdopen(os.dup(fd), "rb") as handle:
                    entries = _journal_entries(handle.read())
                missing = self._not_stored(entries)
                if missing:
                    cur = self._conn.cursor()
                    try:
                        self._write(cur, missing)
                    finally:
                        cur.close()
                    self.recovered += len(missing)
                    log.warning("run log %s: recovered %d events from %s", self.path, len(missing), path.name)
                path.unlink(missing_ok=True)
            except (OSError, duckdb.Error) as exc:
                log.warning("run log %s: could not recover %s: %s", self.path, path.name, exc)
            finally:
                os.close(fd)

    def _not_stored(self, entries: list[_Entry]) -> list[_Entry]:
        stored: dict[str, set[int]] = {}
        for run_id in {event.run_id for _, event, _ in entries}:
            rows = self._conn.execute("SELECT seq FROM events WHERE run_id = ?", [run_id]).fetchall()
            stored[run_id] = {row[0] for row in rows}
        return sorted((e for e in entries if e[0] not in stored[e[1].run_id]), key=lambda e: (e[1].run_id, e[0]))

    def _journal(self, line: bytes) -> None:
        """Append one line to this log's journal (under ``_state_lock``); never fails the caller."""
        if self._journal_failed:
            return
        try:
            if self._journal_fd is None:
                path = self.path.with_name(f"{self.path.name}.{os.getpid()}-{secrets.token_hex(4)}{_JOURNAL_SUFFIX}")
                # Locked before it gets a name recovery looks for, so no other open takes it for a dead one's.
                fresh = path.with_name(path.name + ".new")
                fd = os.open(fresh, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.rename(fresh, path)
                self._journal_fd, self._journal_path = fd, path
            os.write(self._journal_fd, line)
            self._journaled += 1
        except OSError as exc:  # e.g. a full disk: keep running, the writer still writes the database
            self._journal_failed = True
            log.warning("run log %s: journal disabled: %s", self.path, exc)

    def _handled(self, count: int) -> None:
        """The writer is done with ``count`` more events: empty the journal once it has caught up."""
        with self._state_lock:
            self._written += count
            if self._journal_fd is not None and self._written >= self._journaled:
                try:
                    os.ftruncate(self._journal_fd, 0)
                except OSError:
                    pass
                self._written = self._journaled = 0

    def _close_journal(self) -> None:
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None
            if self._journal_path is not None:
                self._journal_path.unlink(missing_ok=True)

    # -- writing ------------------------------------------------------------

    def record(self, event: Event) -> None:
        """Number ``event``, append it to the journal, queue it for writing, and return. Thread-safe.

        Raises:
            RunLogError: the log is closed or read-only.
        """
        payload = _json_bytes(event.to_dict())  # decoded by the writer, off the caller's thread
        with self._state_lock:
            if self._closed or self._writer is None:
                raise RunLogError(f"run log {self.path} is {'closed' if self._closed else 'read-only'}")
            seq = self._next_seq(event.run_id)
            self._journal(b"%d %b\n" % (seq, payload))
            self._enqueue((seq, event, payload), urgent=len(self._pending) >= _MAX_BATCH)

    def _enqueue(self, item: Any, *, urgent: bool) -> None:
        """Hand ``item`` to the writer (under ``_state_lock``)."""
        self._pending.append(item)
        if len(self._pending) == 1:
            self._wake.set()
        if urgent:
            self._urgent.set()

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every event recorded before this call is written.

        Returns ``False`` only if ``timeout`` (seconds) expired first. A no-op
        on a closed or read-only log.
        """
        done = threading.Event()
        with self._state_lock:
            if self._closed or self._writer is None:
                return True
            self._enqueue(done, urgent=True)
        return done.wait(timeout)

    def close(self) -> None:
        """Write everything recorded, stop the writer and close the file. Idempotent."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            if self._writer is not None:
                self._enqueue(_STOP, urgent=True)
        if self._writer is not None:
            self._writer.join()
            atexit.unregister(self.close)
        with self._state_lock:
            self._close_journal()
        with self._read_lock:
            self._read_cursor.close()
            self._conn.close()

    def close_in_background(self) -> None:
        """:meth:`close` on a thread: the caller goes on while the last batch and checkpoint are written.

        Safe because every event is already in the journal; the thread is not a daemon, so
        the process does not exit before it is done, and a later open of the same file in
        this process waits for it.
        """
        key = self.path.resolve()

        def close() -> None:
            try:
                self.close()
            finally:
                with _closing_lock:
                    _closing[key].remove(thread)
                    if not _closing[key]:
                        del _closing[key]

        thread = threading.Thread(target=close, name="rlm-runlog-close")
        with _closing_lock:
            _closing.setdefault(key, []).append(thread)
        thread.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _writer_loop(self, cur: Connection) -> None:
        try:
            while True:
                items = self._next_items()
                entries = [item for item in items if isinstance(item, tuple)]
                for start in range(0, len(entries), _MAX_BATCH):
                    chunk = entries[start:start + _MAX_BATCH]
                    self._write(cur, chunk)
                    self._handled(len(chunk))
                for item in items:
                    if isinstance(item, threading.Event):
                        item.set()
                if any(item is _STOP for item in items):
                    return
        finally:
            cur.close()

    def _next_items(self) -> list[Any]:
        """The next batch: what arrives within :data:`BATCH_WINDOW_S` of the first item, cut short by a flush."""
        self._wake.wait()
        self._urgent.wait(BATCH_WINDOW_S)
        with self._state_lock:
            items, self._pending = self._pending, []
            self._wake.clear()
            self._urgent.clear()
        return items

    def _next_seq(self, run_id: str) -> int:
        """The next sequence number of ``run_id`` (under ``_state_lock``); continues what the file holds."""
        seq = self._seqs.get(run_id)
        if seq is None:
            try:
                with self._read_lock:
                    row = self._read_cursor.execute(
                        "SELECT coalesce(max(seq), 0) FROM events WHERE run_id = ?", [run_id]).fetchone()
                seq = int(row[0]) if row else 0
            except duckdb.Error as exc:  # the log must never take a run down
                log.warning("run log %s: cannot read the last sequence number of %s: %s", self.path, run_id, exc)
                seq = 0
        self._seqs[run_id] = seq + 1
        return seq + 1

    def _write(self, cur: Connection, entries: list[_Entry]) -> None:
        try:
            _write_batch(cur, _plan(entries))
        except Exception as exc:  # noqa: BLE001 -- the log must never take a run down
            if len(entries) == 1:
                self.write_errors += 1
                log.warning("run log %s: could not store %s event: %s", self.path, type(entries[0][1]).__name__, exc)
                return
            half = len(entries) // 2  # bisect to isolate the bad event(s) and keep the others
            self._write(cur, entries[:half])
            self._write(cur, entries[half:])

    # -- reading ------------------------------------------------------------

    def _query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        self.flush()
        with self._read_lock:
            if self._closed:
                raise RunLogError(f"run log {self.path} is closed")
            try:
                return self._read_cursor.execute(sql, params or []).fetchall()
            except duckdb.Error as exc:
                raise RunLogError(f"cannot read run log {self.path}: {exc}") from exc

    def resolve_run_id(self, run_id: str) -> str:
        """Return the full run id that equals or uniquely starts with ``run_id``.

        Raises:
            RunLogError: no run matches, or the prefix matches several runs.
        """
        if not run_id:
            raise RunLogError("empty run id")
        if self._query("SELECT 1 FROM runs WHERE run_id = ?", [run_id]):
            return run_id
        rows = self._query(
            "SELECT run_id FROM runs WHERE starts_with(run_id, ?) ORDER BY started_at DESC LIMIT 6", [run_id]
        )
        if not rows:
            raise RunLogError(f"no run with id {run_id!r} in {self.path}")
        if len(rows) > 1:
            shown = ", ".join(row[0] for row in rows[:5]) + (", ..." if len(rows) > 5 else "")
            raise RunLogError(f"run id prefix {run_id!r} is ambiguous: it matches {shown}; give more characters")
        return str(rows[0][0])

    def list_runs(self, limit: int = 50) -> list[RunSummary]:
        """The ``limit`` most recently started runs, newest first."""
        rows = self._query(f"{_SUMMARY_SELECT} ORDER BY started_at DESC NULLS LAST, run_id LIMIT ?", [limit])
        return [RunSummary.from_row(row) for row in rows]

    def get_run(self, run_id: str) -> RunSummary:
        """The run whose id is ``run_id`` or uniquely starts with it.

        Raises:
            RunLogError: unknown or ambiguous id.
        """
        full_id = self.resolve_run_id(run_id)
        rows = self._query(f"{_SUMMARY_SELECT} WHERE run_id = ?", [full_id])
        return RunSummary.from_row(rows[0])

    def events(self, run_id: str) -> list[Event]:
        """Every event of a run (id or unique prefix) in the order recorded.

        Events of a type this version of rlm does not know are skipped.

        Raises:
            RunLogError: unknown or ambiguous id.
        """
        full_id = self.resolve_run_id(run_id)
        rows = self._query("SELECT payload FROM events WHERE run_id = ? ORDER BY seq", [full_id])
        events: list[Event] = []
        for (payload,) in rows:
            try:
                events.append(event_from_dict(json.loads(payload)))
            except (KeyError, TypeError) as exc:
                log.debug("run log %s: skipping unreadable event %.200s (%s)", self.path, payload, exc)
        return events
