"""Append-only schema migrations for rlm's DuckDB files (the run log and swarm memory).

A migration is a function ``m00N_name(conn)``; each database records the ones it
has in a ``_migrations`` table (name, applied_at). :func:`apply_migrations` runs
the missing ones in order, each in its own transaction. Never edit a released
migration: add a new one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ['applied_migrations', 'apply_migrations']

Migration = Callable[[Any], None]
_LOCK = threading.Lock()


def applied_migrations(conn: Any) -> set[str]:
    """Names of the migrations this database already has (the table must exist)."""
    return {row[0] for row in conn.execute("SELECT name FROM _migrations").fetchall()}


def apply_migrations(conn: Any, migrations: Sequence[Migration]) -> list[str]:
    """Apply the migrations ``conn``'s database lacks, in order; return the names applied now."""
    with _LOCK:
        conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name VARCHAR PRIMARY KEY, applied_at DOUBLE NOT NULL)")
        done = applied_migrations(conn)
        pending = [m for m in migrations if m.__name__ not in done]
        for migration in pending:
            conn.execute("BEGIN TRANSACTION")
            try:
                migration(conn)
                conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                             [migration.__name__, time.time()])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return [m.__name__ for m in pending]
