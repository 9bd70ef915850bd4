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
is ``"running"`` (a process that died mid-run leaves it so). Read them as typed
records: :meth:`RunLog.list_runs` / :meth:`~RunLog.get_run` (:class:`RunSummary`),
:meth:`~RunLog.agents` (:class:`AgentRecord`), :meth:`~RunLog.lm_calls`
(:class:`LMCallRecord`), :meth:`~RunLog.cells` (:class:`CellRecord`) and
:meth:`~RunLog.events` (the events themselves).

Writing is cheap for the caller: :meth:`RunLog.record` numbers the event, appends
it as one line to a journal file next to the database (one ``write`` system call)
and enqueues it; one background thread gathers what arrives within
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
own journal. Power loss is survived by finished runs only: the journal is
``fsync``-ed after each ``RunFinished`` (an fsync per event would cost more than
the event; ``benchmarks/reports/journal_fsync.md``), so the last events of a run
still going may be lost with the page cache.

:class:`RunJournal` is a writer that keeps journals only: it never imports or
opens DuckDB (nothing in this package imports it before it is needed), so a short
command-line process records its run for a few ``write`` calls; the database
learns of the run at the next read-write open. It numbers each run's events from
1 itself: use it only for runs it starts.

Readers see runs in progress elsewhere: every query merges the journals next to
the database (read without their lock, deleting nothing) whose events the
database lacks, so a run another process is recording with a ``RunJournal`` is
listed (status ``"running"`` until its ``RunFinished``) and its events, agents,
calls and cells can be read (:mod:`rlm.runlog.live`).

The schema is created and evolved by append-only migrations (``m001_initial``,
...), each applied once, in order, inside a transaction, and recorded in the
``_migrations`` table; each table is described once, by its record class
(:mod:`rlm.runlog.schema`). Never edit a released migration: add a new one.

Concurrency: **DuckDB allows only one read-write process per database file.**
While a process (e.g. a running ``rlm run``) holds the log open, opening it from
another process fails with :class:`~rlm.errors.RunLogError` naming the lock
holder; read-only opens (``RunLog(path, read_only=True)``) can be shared by many
processes but not with a writer. Within one process, share one ``RunLog``
between threads: it is thread-safe. Journal writers hold no database lock.

Modules: :mod:`~rlm.runlog.schema` (tables, records, migrations),
:mod:`~rlm.runlog.journal` (journal files, :class:`RunJournal`),
:mod:`~rlm.runlog.batch` (events to one transaction), :mod:`~rlm.runlog.writer`
(:class:`RunLog`), :mod:`~rlm.runlog.queries` (the read API) and
:mod:`~rlm.runlog.live` (merging journals into reads).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlm.runlog.journal import RunJournal
    from rlm.runlog.schema import MIGRATIONS, AgentRecord, CellRecord, LMCallRecord, RunSummary, migrate
    from rlm.runlog.writer import BATCH_WINDOW_S, RunLog, wait_for_closes

__all__ = [
    "BATCH_WINDOW_S",
    "MIGRATIONS",
    "AgentRecord",
    "CellRecord",
    "LMCallRecord",
    "RunJournal",
    "RunLog",
    "RunSummary",
    "migrate",
    "wait_for_closes",
]

#: Where each name lives: the package imports a module when one of its names is first used, so that a
#: process which only journals (:class:`RunJournal`) loads neither the schema's records nor the writer.
_LAZY = {"RunJournal": "rlm.runlog.journal", "BATCH_WINDOW_S": "rlm.runlog.writer", "RunLog": "rlm.runlog.writer",
         "wait_for_closes": "rlm.runlog.writer", **{name: "rlm.runlog.schema" for name in (
             "MIGRATIONS", "AgentRecord", "CellRecord", "LMCallRecord", "RunSummary", "migrate")}}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'rlm.runlog' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
