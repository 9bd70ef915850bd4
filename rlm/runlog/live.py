"""What readers merge from journals: the events the database does not hold yet.

A run recorded by a :class:`~rlm.runlog.RunJournal` in another process (or by a
``RunLog`` whose writer has not caught up) exists only in a journal until the
next read-write open replays it. :func:`gather` reads every journal next to the
database (without taking its lock, deleting nothing), keeps the events the
database lacks, and applies them, with the same code the writer uses, to an
in-memory database that starts from a copy of those runs' rows. Queries about
those runs are answered from it: a run still going is listed with status
``"running"`` and its events can be read, exactly as they will be once replayed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm.runlog.batch import insert_rows, plan, write_batch
from rlm.runlog.journal import Entry, journal_paths, read_journal
from rlm.runlog.schema import TABLES, migrate

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection as Connection

__all__ = ["LiveRuns", "gather", "unstored"]

#: Runs a query on the database: ``(sql, params) -> rows``.
Query = Callable[[str, list[Any]], list[tuple[Any, ...]]]


class LiveRuns:
    """Runs with journaled events the database lacks, held whole in an in-memory database."""

    def __init__(self, conn: Connection, run_ids: frozenset[str]) -> None:
        self._conn = conn
        self.run_ids = run_ids

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` over these runs (the same tables as the run log)."""
        return self._conn.execute(sql, list(params)).fetchall()

    def close(self) -> None:
        self._conn.close()


def unstored(entries: list[Entry], query: Query) -> list[Entry]:
    """The entries whose ``(run_id, seq)`` the database lacks, one per key, by run and number."""
    run_ids = sorted({event.run_id for _, event, _ in entries})
    rows = query("SELECT run_id, seq FROM events WHERE list_contains(?, run_id)", [run_ids])
    seen = set(rows)
    missing = []
    for entry in entries:
        key = (entry[1].run_id, entry[0])
        if key not in seen:
            seen.add(key)
            missing.append(entry)
    return sorted(missing, key=lambda e: (e[1].run_id, e[0]))


def gather(db_path: Path, query: Query, *, skip: Path | None = None) -> LiveRuns | None:
    """Merge every journal next to ``db_path`` (but ``skip``); None when the database holds them all.

    Journals are read before the database, so an event a live ``RunLog`` writes and then
    truncates from its journal meanwhile is seen in one or the other.
    """
    entries = [entry for path in journal_paths(db_path) if path != skip for entry in read_journal(path)]
    if not entries:
        return None
    missing = unstored(entries, query)
    if not missing:
        return None
    run_ids = frozenset(event.run_id for _, event, _ in missing)
    return LiveRuns(_materialize(run_ids, missing, query), run_ids)


def _materialize(run_ids: frozenset[str], missing: list[Entry], query: Query) -> Connection:
    """An in-memory run log holding the stored rows of ``run_ids`` with ``missing`` applied on top."""
    import duckdb  # lazily: the journal-only writer must not load DuckDB

    conn = duckdb.connect(":memory:")
    try:
        migrate(conn)
        for table in TABLES:
            names = [col.name for col in table.columns]
            rows = query(f"SELECT {table.select_list()} FROM {table.name} WHERE list_contains(?, run_id)",
                         [sorted(run_ids)])
            if rows:
                insert_rows(conn, table, [dict(zip(names, row, strict=True)) for row in rows])
        write_batch(conn, plan(missing))
    except BaseException:
        conn.close()
        raise
    return conn
