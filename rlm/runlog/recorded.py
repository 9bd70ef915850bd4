"""Recorded model calls read back from the run log: a run's own (for replays) and any run's by key (the cache).

:func:`prior_calls` gives the successful calls of one run, in the order they
finished, as ``(request_key, Recorded)`` pairs for :class:`rlm.records.CallRecords`.

Two :class:`~rlm.records.Lookup` s answer "was this request made before?":

* :class:`LogLookup` asks an open :class:`~rlm.runlog.RunLog` (the resident
  service's): one indexed query per call, without waiting for its writer (a
  run's own calls are answered from memory; others' are written within
  :data:`~rlm.runlog.BATCH_WINDOW_S`).
* :class:`FileLookup` is for a process that does not hold the log (a command
  line run): at its first call it opens the database read-only for a moment to
  read the keys of every stored call, and reads the calls of every journal next
  to it (runs of processes that ended or died before a read-write open stored
  them, and runs going on elsewhere); a request whose key is stored is then
  fetched with another short read-only open. So it holds no lock while the run
  goes on (``rlm runs`` in another terminal still works) and writes nothing, and
  a miss costs a set lookup. A database another process holds read-write at
  that moment, or one an older rlm made (no keys yet), answers nothing; the
  journals still do.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm.events import LMCalled
from rlm.records import Recorded
from rlm.runlog.journal import journal_paths, read_journal

if TYPE_CHECKING:
    from rlm.runlog.queries import RunQueries
    from rlm.runlog.writer import RunLog

__all__ = ["prior_calls", "LogLookup", "FileLookup", "FIND_CALL"]

log = logging.getLogger("rlm.runlog")

#: The newest successful call recorded under a key.
FIND_CALL = ("SELECT response, model, run_id, model_group, deployment, node FROM lm_calls "
             "WHERE request_key = ? AND ok AND response IS NOT NULL ORDER BY ts DESC LIMIT 1")
_KEYS = "SELECT DISTINCT request_key FROM lm_calls WHERE ok AND request_key IS NOT NULL AND response IS NOT NULL"


def prior_calls(runs: RunQueries, run_id: str) -> list[tuple[str, Recorded]]:
    """The successful calls of ``run_id`` with their keys and replies, in the order they finished."""
    return [(c.request_key, Recorded(c.response, c.model or "", c.run_id, c.model_group, c.deployment, c.node))
            for c in runs.lm_calls(run_id) if c.ok and c.request_key and c.response is not None]


def _recorded(row: tuple[Any, ...] | None) -> Recorded | None:
    if row is None:
        return None
    response, model, run_id, group, deployment, node = row
    return Recorded(str(response), str(model or ""), run_id, group, deployment, node)


class LogLookup:
    """Calls looked up in a :class:`~rlm.runlog.RunLog` this process holds open (see the module docstring)."""

    def __init__(self, runlog: RunLog) -> None:
        self.runlog = runlog

    def find(self, key: str) -> Recorded | None:
        return _recorded(self.runlog.query_now(FIND_CALL, [key]))

    def close(self) -> None:
        """The log stays open: it is its holder's."""


class FileLookup:
    """Calls looked up in the run log file without holding it (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._keys: set[str] | None = None
        self._journaled: dict[str, Recorded] = {}

    def find(self, key: str) -> Recorded | None:
        with self._lock:
            if self._keys is None:
                self._keys = self._load()
            if key in self._journaled:
                return self._journaled[key]
            if key not in self._keys:
                return None
        return self._fetch(key)

    def close(self) -> None:
        """Nothing is held between calls."""

    def _load(self) -> set[str]:
        """The keys of every stored call, and the calls of every journal."""
        import duckdb  # only once a call is looked up

        keys: set[str] = set()
        if self.path.exists():
            try:
                with duckdb.connect(str(self.path), read_only=True) as conn:
                    keys = {str(row[0]) for row in conn.execute(_KEYS).fetchall()}
            except duckdb.Error as exc:
                log.info("the sub-call cache reads no stored calls from %s: %s", self.path, exc)
        for journal in journal_paths(self.path):
            for _, event, _ in read_journal(journal):
                if isinstance(event, LMCalled) and event.ok and event.request_key:
                    self._journaled[event.request_key] = Recorded(event.response, event.model, event.run_id,
                                                                  event.model_group, event.deployment, event.node)
        return keys

    def _fetch(self, key: str) -> Recorded | None:
        import duckdb

        try:
            with duckdb.connect(str(self.path), read_only=True) as conn:
                return _recorded(conn.execute(FIND_CALL, [key]).fetchone())
        except duckdb.Error as exc:  # another process holds it read-write right now: a miss
            log.debug("run log %s busy: %s", self.path, exc)
            return None
