"""What the service keeps for conversations: live sessions, and reruns of logged runs.

:class:`SessionHost` holds the sessions the service's clients talk to (``rlm ask
--session``, ``rlm chat``, the OpenAI endpoint's ``rlm.session``): each one's root
REPL and history stay alive between turns, so a turn starts where the last one
ended. At most :data:`LIVE_SESSIONS` are kept running; the least recently used
one beyond that is closed (its records rebuild it when it is asked again). Its
calls look earlier runs up in the service's run log (:class:`LogLookup`).

:func:`rerun_work` turns a ``rerun`` request (replay, resume, fork) into work for
the service's run pool, reading the chain from the service's own log.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm.budget import Ledger
from rlm.config import RLMConfig
from rlm.events import Event, EventBus
from rlm.results import RunResult

if TYPE_CHECKING:
    from rlm.runlog import RunLog
    from rlm.runlog.queries import RunQueries
    from rlm.sessions import Session

__all__ = ["RunHooks", "SessionHost", "rerun_work", "LIVE_SESSIONS"]

#: Sessions kept running (each holds a sandbox); older ones are closed and rebuilt on their next turn.
LIVE_SESSIONS = 16


@dataclass(frozen=True)
class RunHooks:
    """What the service gives every run it executes: its event bus, start callback, run log, executor, extensions."""

    bus: EventBus
    on_start: Callable[[str, Ledger], None]
    record: Callable[[Event], None]
    executor_for: Callable[[RLMConfig], Any]
    extensions_for: Callable[[RLMConfig], list[Any]]

    def options(self, config: RLMConfig) -> dict[str, Any]:
        """Keyword arguments of :func:`rlm.runner.run` for a run with ``config``."""
        return {"bus": self.bus, "on_start": self.on_start, "record": self.record,
                "executor": self.executor_for(config), "extensions": self.extensions_for(config)}


class SessionHost:
    """The service's live sessions (see the module docstring)."""

    def __init__(self, log: RunLog, limit: int = LIVE_SESSIONS) -> None:
        from rlm.runlog.recorded import LogLookup

        self.log = log
        self.limit = limit
        self.lookup = LogLookup(log)
        self._lock = threading.Lock()
        self._live: collections.OrderedDict[str, Session] = collections.OrderedDict()

    @contextmanager
    def _runs(self) -> Iterator[RunQueries]:
        yield self.log

    def session(self, name: str, context: Any, config: RLMConfig) -> Session:
        """Session ``name``, live (started, or rebuilt on its next turn from the log). A file given for a
        session that exists must be its input; other contexts (an OpenAI client's earlier messages) are
        the conversation the session already holds, and are not looked at."""
        from rlm.sessions import Session, load_state

        with self._lock:
            live = self._live.get(name)
            if live is None:
                exists = load_state(Path(config.home), name) is not None
                given = context if not exists or isinstance(context, Path) else None
                live = Session(name, given, config, open_runs=self._runs, lookup=self.lookup)
                self._live[name] = live
            elif isinstance(context, Path):
                live.check_input(context)
            self._live.move_to_end(name)
            retired = [self._live.popitem(last=False)[1] for _ in range(max(0, len(self._live) - self.limit))]
        for old in retired:
            old.close()
        return live

    def ask(self, name: str, question: str, context: Any, config: RLMConfig, hooks: RunHooks) -> RunResult:
        """The next turn of session ``name`` (``context``: its input; see :meth:`session`)."""
        from rlm.sessions import local

        config = local(config)
        return self.session(name, context, config).ask(question, config=config, **hooks.options(config))

    def close(self) -> None:
        with self._lock:
            sessions = list(self._live.values())
            self._live.clear()
        for live in sessions:
            live.close()


def rerun_work(log: RunLog, request: dict[str, Any],
               config: RLMConfig) -> tuple[Callable[[RunHooks], RunResult], dict[str, Any]]:
    """The work of a ``rerun`` request for the run pool, and the recorded outcome a replay is compared with."""
    from rlm.reruns import load_chain, recorded_outcome, rerun, workspace
    from rlm.sessions import local

    config = local(config)
    chain = load_chain(log, str(request.get("run_id") or ""))
    recorded = recorded_outcome(log, chain.target.run_id)

    def work(hooks: RunHooks) -> RunResult:
        with workspace(Path(config.home)) as workdir:
            return rerun(chain, str(request.get("mode")), config, workdir, question=request.get("question"),
                         at=request.get("at"), **hooks.options(config))

    return work, recorded
