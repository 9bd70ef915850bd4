""":class:`RunLog`: the run log in one DuckDB file, written in batches by a background thread.

:meth:`RunLog.record` numbers the event, appends it to this log's journal
(:mod:`rlm.runlog.journal`) and queues it; one thread gathers what arrives
within :data:`BATCH_WINDOW_S` and writes it in a single transaction
(:mod:`rlm.runlog.batch`). Opening read-write first replays the journals of
writers that died. Reads (:class:`~rlm.runlog.queries.RunQueries`) flush first.
"""

from __future__ import annotations

import atexit
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm.errors import RunLogError
from rlm.events import Event
from rlm.runlog.batch import plan, write_batch
from rlm.runlog.journal import (
    SYNC_AFTER,
    ClosedOnExit,
    Entry,
    JournalFile,
    journal_paths,
    json_bytes,
    line_of,
    opened,
    parse_journal,
    try_lock,
)
from rlm.runlog.live import unstored
from rlm.runlog.queries import RunQueries
from rlm.runlog.schema import check_schema_current, migrate

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection as Connection

__all__ = ["BATCH_WINDOW_S", "RunLog", "wait_for_closes"]

log = logging.getLogger("rlm.runlog")

_STOP = object()
_MAX_BATCH = 5000
#: How long the writer gathers events before it writes them in one transaction
#: (a flush, a read or close writes at once). The journal keeps them meanwhile.
BATCH_WINDOW_S = 1.0

#: Closes still running in the background (:meth:`RunLog.close_in_background`), by resolved path.
_closing: dict[Path, list[threading.Thread]] = {}
_closing_lock = threading.Lock()


def wait_for_closes(path: Path) -> None:
    """Wait until this process's background closes of ``path`` are done (one DuckDB owner at a time)."""
    with _closing_lock:
        threads = list(_closing.get(path.resolve(), ()))
    for thread in threads:
        thread.join()


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
    import duckdb  # lazily: see the module docstring

    if read_only and not path.exists():
        raise RunLogError(f"cannot open run log {path}: no such file")
    try:
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        return duckdb.connect(str(path), read_only=read_only)
    except (duckdb.Error, OSError) as exc:
        raise _open_error(path, exc) from exc


class RunLog(RunQueries, ClosedOnExit):
    """The run log in one DuckDB file; thread-safe; see the package docstring.

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
        self._journal_file: JournalFile | None = None
        self._journal_failed = False
        self._journaled = 0  # events appended to the journal since it was last emptied
        self._written = 0  # of those, how many the writer has handled
        if not read_only:
            self._recover_journals()
            self._start_writer()
            atexit.register(self.close)

    # -- setup --------------------------------------------------------------

    def _prepare_schema(self) -> list[str]:
        import duckdb

        try:
            if self.read_only:
                check_schema_current(self._conn, self.path)
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
        import duckdb

        for path in journal_paths(self.path):
            try:
                with opened(path) as fd:
                    if not try_lock(fd):
                        continue  # its writer is alive (another process, or another RunLog of this one)
                    self._replay(path, fd)
            except (OSError, duckdb.Error) as exc:
                log.warning("run log %s: could not recover %s: %s", self.path, path.name, exc)

    def _replay(self, path: Path, fd: int) -> None:
        """Write the events of a dead writer's journal the database lacks, then delete the journal."""
        with open(fd, "rb", closefd=False) as handle:
            entries = parse_journal(handle.read())
        missing = unstored(entries, lambda sql, params: self._conn.execute(sql, params).fetchall()) if entries else []
        if missing:
            cur = self._conn.cursor()
            try:
                self._write(cur, missing)
            finally:
                cur.close()
            self.recovered += len(missing)
            log.debug("run log %s: recovered %d events from %s", self.path, len(missing), path.name)
        path.unlink(missing_ok=True)

    def _journal(self, line: bytes, event: Event) -> None:
        """Append one line to this log's journal (under ``_state_lock``); never fails the caller."""
        if self._journal_failed:
            return
        try:
            if self._journal_file is None:
                self._journal_file = JournalFile(self.path)
            self._journal_file.append(line)
            self._journaled += 1
            if isinstance(event, SYNC_AFTER):
                self._journal_file.sync()
        except OSError as exc:  # e.g. a full disk: keep running, the writer still writes the database
            self._journal_failed = True
            log.warning("run log %s: journal disabled: %s", self.path, exc)

    def _handled(self, count: int) -> None:
        """The writer is done with ``count`` more events: empty the journal once it has caught up."""
        with self._state_lock:
            self._written += count
            if self._journal_file is not None and self._written >= self._journaled:
                try:
                    self._journal_file.truncate()
                except OSError:
                    pass
                self._written = self._journaled = 0

    def _own_journal(self) -> Path | None:
        return None if self._journal_file is None else self._journal_file.path

    # -- writing ------------------------------------------------------------

    def record(self, event: Event) -> None:
        """Number ``event``, append it to the journal, queue it for writing, and return. Thread-safe.

        Raises:
            RunLogError: the log is closed or read-only.
        """
        payload = json_bytes(event.to_dict())  # decoded by the writer, off the caller's thread
        with self._state_lock:
            if self._closed or self._writer is None:
                raise RunLogError(f"run log {self.path} is {'closed' if self._closed else 'read-only'}")
            seq = self._next_seq(event.run_id)
            self._journal(line_of(seq, payload), event)
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
            if self._journal_file is not None:
                self._journal_file.close(delete=True)  # the writer has stored every line
                self._journal_file = None
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
        import duckdb

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

    def _write(self, cur: Connection, entries: list[Entry]) -> None:
        try:
            write_batch(cur, plan(entries))
        except Exception as exc:  # noqa: BLE001 -- the log must never take a run down
            if len(entries) == 1:
                self.write_errors += 1
                log.warning("run log %s: could not store %s event: %s", self.path, type(entries[0][1]).__name__, exc)
                return
            half = len(entries) // 2  # bisect to isolate the bad event(s) and keep the others
            self._write(cur, entries[:half])
            self._write(cur, entries[half:])

    # -- reading ------------------------------------------------------------

    def query_now_all(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` from what the database holds now, without waiting for the writer (the sub-call
        cache's lookups: a call must not wait for a transaction)."""
        import duckdb

        with self._read_lock:
            if self._closed:
                raise RunLogError(f"run log {self.path} is closed")
            try:
                return self._read_cursor.execute(sql, params).fetchall()
            except duckdb.Error as exc:
                raise RunLogError(f"cannot read run log {self.path}: {exc}") from exc

    def query_now(self, sql: str, params: list[Any]) -> tuple[Any, ...] | None:
        """The first row of :meth:`query_now_all`, or ``None``."""
        rows = self.query_now_all(sql, params)
        return rows[0] if rows else None

    def _query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        import duckdb

        self.flush()
        with self._read_lock:
            if self._closed:
                raise RunLogError(f"run log {self.path} is closed")
            try:
                return self._read_cursor.execute(sql, params or []).fetchall()
            except duckdb.Error as exc:
                raise RunLogError(f"cannot read run log {self.path}: {exc}") from exc
