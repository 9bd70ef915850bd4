"""Journals: the events of a run as lines in a file next to the run log, and the writer that keeps only them.

A journal is ``<db>.<pid>-<token>.journal`` next to the database file: one line
``<seq> <event JSON>`` per event, appended with one ``write`` system call, held
under an exclusive ``flock`` for as long as its writer lives. A line is in the
kernel's page cache the moment ``write`` returns, so it survives the death of its
process (``kill -9``, a segfault, the OOM killer); the next read-write
:class:`~rlm.runlog.RunLog` open replays the journals whose lock is free and
deletes them, and readers merge the ones still there (:mod:`rlm.runlog.live`).

Durability: a journal is ``fsync``-ed (with its directory, the first time) after
each ``RunFinished`` line, so a finished run also survives power loss; the lines
of a run in progress are not, so power loss may lose the last ones of a run that
was still running (``benchmarks/journal_fsync.py`` measured what an fsync per
event would cost; see ``benchmarks/reports/journal_fsync.md``).

:class:`RunJournal` writes journals only: it never imports or opens DuckDB, so a
short-lived process (a command line) records a run for the price of a few
``write`` calls and leaves the database to the next read-write open.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from rlm.errors import RunLogError
from rlm.events import Event, RunFinished, event_from_dict

__all__ = [
    "JOURNAL_SUFFIX",
    "ClosedOnExit",
    "Entry",
    "JournalFile",
    "RunJournal",
    "journal_paths",
    "json_bytes",
    "json_text",
    "parse_journal",
    "read_journal",
    "try_lock",
]

log = logging.getLogger("rlm.runlog")

JOURNAL_SUFFIX = ".journal"
#: Events after which the journal is fsync-ed: the end of a run must survive power loss.
SYNC_AFTER: tuple[type[Event], ...] = (RunFinished,)

_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)

#: What the database writer gets per event: its sequence number, the event, and its JSON
#: (:func:`json_bytes` of ``event.to_dict()``, as bytes when just recorded and as text from a journal).
Entry = tuple[int, Event, "bytes | str"]


def json_bytes(value: Any) -> bytes:
    """UTF-8 JSON DuckDB accepts: non-ASCII kept, lone surrogates replaced, odd objects as str."""
    return _ENCODER.encode(value).encode("utf-8", "replace")


def json_text(value: Any) -> str:
    """:func:`json_bytes` as text."""
    return json_bytes(value).decode("utf-8")


def journal_paths(db_path: Path) -> list[Path]:
    """The journals next to the database ``db_path`` (of live and of dead writers), sorted."""
    return sorted(db_path.parent.glob(f"{db_path.name}.*{JOURNAL_SUFFIX}"))


def parse_journal(data: bytes) -> list[Entry]:
    """Parse a journal; a torn last line (the process died mid-write) or an unknown event is skipped."""
    entries: list[Entry] = []
    for line in data.split(b"\n"):
        seq_text, _, payload = line.partition(b" ")
        try:
            text = payload.decode("utf-8")
            entries.append((int(seq_text), event_from_dict(json.loads(text)), text))
        except (ValueError, KeyError, TypeError, RecursionError):
            continue
    return entries


def read_journal(path: Path) -> list[Entry]:
    """The entries of a journal, read without its lock (its writer may be appending); [] if it is gone."""
    try:
        return parse_journal(path.read_bytes())
    except OSError:  # replayed and deleted by another open meanwhile, or unreadable: nothing to merge
        return []


def try_lock(fd: int) -> bool:
    """Take the journal's exclusive lock without waiting: False while its writer lives."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


class JournalFile:
    """One journal being written: created locked, appended line by line, fsync-ed on demand."""

    def __init__(self, db_path: Path) -> None:
        path = db_path.with_name(f"{db_path.name}.{os.getpid()}-{secrets.token_hex(4)}{JOURNAL_SUFFIX}")
        # Locked before it gets a name recovery looks for, so no other open takes it for a dead one's.
        fresh = path.with_name(path.name + ".new")
        fd = os.open(fresh, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(fresh, path)
        except BaseException:
            os.close(fd)
            fresh.unlink(missing_ok=True)
            raise
        self.fd, self.path = fd, path
        self._dir_synced = False

    def append(self, line: bytes) -> None:
        """Append one line (one ``write`` system call: it lands whole or, if the process dies, torn)."""
        os.write(self.fd, line)

    def sync(self) -> None:
        """Make what was appended survive power loss (and, the first time, the file's name)."""
        os.fsync(self.fd)
        if not self._dir_synced:
            directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
            self._dir_synced = True

    def truncate(self) -> None:
        """Empty the journal (its events are all in the database)."""
        os.ftruncate(self.fd, 0)

    def close(self, *, delete: bool) -> None:
        """Release the lock; ``delete`` the file too (only when the database holds every line)."""
        os.close(self.fd)
        if delete:
            self.path.unlink(missing_ok=True)


def line_of(seq: int, payload: bytes) -> bytes:
    """The journal line of an event numbered ``seq`` whose JSON is ``payload``."""
    return b"%d %b\n" % (seq, payload)


class ClosedOnExit:
    """A context manager that calls the object's ``close()`` on exit."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class RunJournal(ClosedOnExit):
    """Records events to a journal next to the run log without DuckDB: for runs this writer started itself.

    It has the writing surface of :class:`~rlm.runlog.RunLog` (:meth:`record`,
    :meth:`flush`, :meth:`close`, :meth:`close_in_background`, a context
    manager) but never imports or opens DuckDB: each event is one line appended
    to its own journal (created, locked, when the writer is made). The database
    learns of them at the next read-write ``RunLog`` open, which replays the
    journals whose writer is gone; until then every reader merges them
    (``rlm runs`` lists such a run, ``rlm show`` shows it).

    Sequence numbers start at 1 for every run id and are never read from the
    database, so use it only for runs it starts itself (new run ids): events of a
    run the database already holds would repeat its numbers and be dropped on
    replay. One writer per run: two writers recording one run id would repeat
    numbers too.

    :meth:`close` keeps the file (it holds the events) and releases its lock.

    Args:
        path: the database file the journal goes next to (it need not exist).

    Attributes:
        path: the database file.
        journal_path: the journal file.
        write_errors: events that could not be appended (each failure is logged).

    Raises:
        RunLogError: the journal cannot be created.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: JournalFile | None = JournalFile(self.path)
        except OSError as exc:
            raise RunLogError(f"cannot create a journal next to run log {self.path}: {exc}") from exc
        self.journal_path = self._file.path
        self._lock = threading.Lock()
        self._seqs: dict[str, int] = {}
        self.write_errors = 0

    def record(self, event: Event) -> None:
        """Number ``event`` and append it to the journal. Thread-safe.

        A failed write (e.g. a full disk) is logged and counted in
        :attr:`write_errors`, never raised: the log must not take a run down.

        Raises:
            RunLogError: the journal is closed.
        """
        payload = json_bytes(event.to_dict())
        with self._lock:
            if self._file is None:
                raise RunLogError(f"journal of run log {self.path} is closed")
            seq = self._seqs.get(event.run_id, 0) + 1
            self._seqs[event.run_id] = seq
            try:
                self._file.append(line_of(seq, payload))
                if isinstance(event, SYNC_AFTER):
                    self._file.sync()
            except OSError as exc:
                self.write_errors += 1
                log.warning("run log %s: could not journal %s event: %s", self.path, type(event).__name__, exc)

    def flush(self, timeout: float | None = None) -> bool:
        """Every recorded event is in the journal already (a read sees it): returns True at once."""
        return True

    def close(self) -> None:
        """Release the journal (the file stays, for the next read-write open to replay). Idempotent."""
        with self._lock:
            if self._file is not None:
                self._file.close(delete=False)
                self._file = None

    def close_in_background(self) -> None:
        """The same as :meth:`close`: nothing is left to write."""
        self.close()


@contextlib.contextmanager
def opened(path: Path) -> Iterator[int]:
    """An ``O_RDWR`` descriptor of an existing journal, closed on exit (skipped by callers if it is gone)."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)
