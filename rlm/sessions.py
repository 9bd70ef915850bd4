"""Sessions: a conversation over one input, each question a turn that keeps the root's REPL and history.

A turn is a run (its own run id, its ``RunStarted`` naming the session, the turn
number and the previous turn's run). The root of turn k+1 continues turn k's
:class:`~rlm.conversation.Conversation`: the same REPL (every variable the model
made), the same message history, plus ``answers[k]`` and ``history[k]``.

Where the conversation lives:

* in a process that keeps the :class:`Session` (``rlm chat``, the TUI, the
  resident service, ``rlm.run(..., session=...)`` in one Python process) the
  root's sandbox and messages stay alive between turns: nothing is redone;
* a process that finds the session on disk only (``rlm ask --session NAME``
  twice without a service) rebuilds it by replaying the earlier turns from
  their records (:mod:`rlm.reruns`): the cells run again in a fresh sandbox, the
  model calls are answered from the log (zero calls). What does not survive:
  anything a cell got from outside the REPL's determinism (the time, random
  numbers without a seed, object addresses printed): such a turn does not
  replay, and the session says at which call.

The session's state is ``$RLM_HOME/sessions/<name>.json`` (mode 0600, written
whole): its input's identity, its config (never the API key) and its turns.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm.config import RLMConfig
from rlm.contexts import identify, restore
from rlm.conversation import Conversation, RunPlan
from rlm.errors import InputError
from rlm.inputs import ContextPayload
from rlm.records import Lookup
from rlm.results import RunResult
from rlm.reruns import Chain, RecordedRun, Step, load_chain, rebuild
from rlm.runner import payload_of
from rlm.runner import run as run_once

if TYPE_CHECKING:
    from rlm.runlog.queries import RunQueries

__all__ = ["Session", "SessionState", "run", "state_path", "load_state", "list_sessions", "SESSIONS_DIR",
           "new_session_name", "local"]

SESSIONS_DIR = "sessions"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: Opens the run log for reading while a conversation is rebuilt.
RunsOpener = Callable[[], AbstractContextManager["RunQueries"]]


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(f"a session name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
                         f"digit: not {name!r}")
    return name


def new_session_name() -> str:
    """A fresh name: ``chat-YYYYmmdd-HHMMSS-xxxx``."""
    return time.strftime("chat-%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def state_path(home: Path, name: str) -> Path:
    return home / SESSIONS_DIR / f"{_check_name(name)}.json"


@dataclasses.dataclass
class SessionState:
    """What ``$RLM_HOME/sessions/<name>.json`` holds."""

    name: str
    context: dict[str, Any]
    config: dict[str, Any]
    turns: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    created_at: float = dataclasses.field(default_factory=time.time)
    updated_at: float = dataclasses.field(default_factory=time.time)

    def save(self, home: Path) -> None:
        """Write the file whole (a reader never sees half of it), 0600, on disk before it replaces the old one
        (once per turn: power loss leaves the old file or the new one, never an empty one)."""
        path = state_path(home, self.name)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.updated_at = time.time()
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(dataclasses.asdict(self), handle, ensure_ascii=False, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)


def load_state(home: Path, name: str) -> SessionState | None:
    """The saved state of session ``name``, or ``None``; a damaged file raises :class:`InputError`."""
    path = state_path(home, name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return SessionState(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"session file {path} is unreadable: {exc}") from None


def list_sessions(home: Path) -> list[SessionState]:
    """Every saved session, most recently used first."""
    states = []
    for path in sorted((home / SESSIONS_DIR).glob("*.json")):
        state = load_state(home, path.stem) if _NAME.match(path.stem) else None
        if state is not None:
            states.append(state)
    return sorted(states, key=lambda s: -s.updated_at)


@contextmanager
def _own_log(config: RLMConfig) -> Iterator[RunQueries]:
    from rlm.runlog import RunLog

    with RunLog(config.runlog_path) as log:
        yield log


class Session:
    """A conversation over one input (see the module docstring). One turn at a time.

    Args:
        name: the session's name (``$RLM_HOME/sessions/<name>.json``).
        context: the input for a new session (a path, text or documents); for an existing one, ``None``
            or the same input (another one is an error).
        config: the config of the next turns (the API key is never saved).
        open_runs: opens the run log to rebuild the conversation from (default: ``config``'s, briefly).
        lookup: earlier runs' calls for the cache (a service passes its run log's).
    """

    def __init__(self, name: str, context: Any = None, config: RLMConfig | None = None, *,
                 open_runs: RunsOpener | None = None, lookup: Lookup | None = None) -> None:
        self.name = _check_name(name)
        self.config = config or RLMConfig()
        self.home = self.config.home
        self.open_runs = open_runs or (lambda: _own_log(self.config))
        self.lookup = lookup
        self.workdir = self.home / "tmp" / f"session-{self.name}-{secrets.token_hex(3)}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._busy = threading.Lock()
        self.conversation: Conversation | None = None
        try:
            self.state = load_state(self.home, self.name)
            self.payload = self._payload(context)
        except BaseException:
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise

    # -- the input ----------------------------------------------------------------------
    def _payload(self, context: Any) -> ContextPayload:
        if self.state is None:
            if context is None:
                raise InputError(f"there is no session {self.name!r}: give its input to start it")
            payload = self._load(context)
            self.state = SessionState(self.name, identify(payload, self.home), _saved(self.config))
            return payload
        if context is not None:
            self.check_input(context)
        return restore(self.state.context, self.home, self.workdir, run_id=f"of session {self.name}")

    def _load(self, context: Any) -> ContextPayload:
        """The input as a payload; a client's private copy (under ``$RLM_HOME/tmp``, deleted after its
        request) is copied into the session, so the session keeps it (and can be rebuilt from it)."""
        payload = payload_of(context, self.workdir)
        if isinstance(context, Path) and not payload.owned and self._private(context):
            copy = self.workdir / f"input-{secrets.token_hex(4)}"
            shutil.copyfile(payload.path, copy)
            payload = dataclasses.replace(payload, path=copy, owned=True, source="a client's input")
        return payload

    def _private(self, path: Path) -> bool:
        return path.resolve().is_relative_to((self.home / "tmp").resolve())

    def check_input(self, context: Any) -> None:
        """Raise :class:`InputError` unless ``context`` is this session's input (same file, or same content)."""
        assert self.state is not None
        saved = self.state.context
        if isinstance(context, Path) and not self._private(context) and saved.get("path"):
            if not _same_file(context, saved):
                raise InputError(f"session {self.name!r} is about {saved.get('path')} as it was then, not "
                                 f"{context}: start another session for it")
            return
        payload = payload_of(context, self.workdir)
        try:
            if identify(payload, self.home, keep=False).get("sha256") != saved.get("sha256") or \
                    not saved.get("sha256"):
                raise InputError(f"session {self.name!r} is about {saved.get('source') or 'another input'}, "
                                 f"not {payload.source or 'this input'}: start another session for it")
        finally:
            if payload.owned:
                payload.cleanup()

    # -- turns ---------------------------------------------------------------------------
    @property
    def turns(self) -> list[dict[str, Any]]:
        assert self.state is not None
        return self.state.turns

    def ask(self, question: str, *, config: RLMConfig | None = None, **run_options: Any) -> RunResult:
        """Ask the next question: a turn (a run). ``run_options`` go to :func:`rlm.runner.run`.

        Raises :class:`InputError` while another turn of this session is in progress.
        """
        if not question or not question.strip():
            raise InputError("the question is empty")
        if not self._busy.acquire(blocking=False):
            raise InputError(f"session {self.name!r} has a question in progress; ask again when it is answered")
        try:
            conversation = self._conversation()
            config = local(config or self.config)
            turns = self.turns
            plan = RunPlan(origin="turn", parent_run_id=turns[-1]["run_id"] if turns else None, session=self.name,
                           turn=conversation.next_turn, conversation=conversation, lookup=self.lookup)
            try:
                result = run_once(question, self.payload, config, plan=plan, **run_options)
            except BaseException:
                self._drop()  # half a turn: the next question rebuilds from the records
                raise
            self._append(question, result, conversation.next_turn - 1)
            return result
        finally:
            self._busy.release()

    def _conversation(self) -> Conversation:
        """The live conversation, or one rebuilt from the records of the saved turns (zero model calls)."""
        if self.conversation is not None:
            return self.conversation
        turns = self.turns
        if not turns:
            self.conversation = Conversation()
            return self.conversation
        with self.open_runs() as runs:
            chain = load_chain(runs, str(turns[-1]["run_id"]))
        last: RecordedRun = chain.target
        full = Chain(last, (*chain.steps, Step(last)), True)
        self.conversation = rebuild(full, self.config, lambda _run: self.payload) or Conversation()
        return self.conversation

    def _append(self, question: str, result: RunResult, turn: int) -> None:
        assert self.state is not None
        self.state.turns.append({"turn": turn, "run_id": result.run_id, "question": question,
                                 "answer": result.answer, "status": result.status})
        self.state.save(self.home)

    def _drop(self) -> None:
        conversation, self.conversation = self.conversation, None
        if conversation is not None:
            conversation.close()

    def close(self) -> None:
        """Stop the REPL (the saved state and the records stay: the session can be rebuilt)."""
        self._drop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def local(config: RLMConfig) -> RLMConfig:
    """``config`` on the local executor: a conversation's root and its records live in this process (on Ray,
    the agents on the cluster's hosts would call the model past the records)."""
    return config if config.executor == "local" else dataclasses.replace(config, executor="local", ray_address=None)


def _same_file(path: Path, saved: dict[str, Any]) -> bool:
    """``path`` is the saved file, unchanged (its size and modification time)."""
    try:
        stat = path.stat()
    except OSError:
        return False
    return (str(path.resolve()) == saved.get("path") and stat.st_size == saved.get("size")
            and stat.st_mtime_ns == saved.get("mtime_ns"))


def _saved(config: RLMConfig) -> dict[str, Any]:
    data = config.to_dict()
    data.pop("home", None)
    return data


# -- sessions kept by this process (``rlm.run(..., session=...)``) ------------------------------------

_live: dict[tuple[str, str], Session] = {}
_live_lock = threading.Lock()


def run(question: str, context: Any = None, config: RLMConfig | None = None, *, session: str | None = None,
        **run_options: Any) -> RunResult:
    """:func:`rlm.runner.run`, or with ``session`` the next turn of that session (kept alive in this process;
    rebuilt from the run log when another process asked its earlier turns)."""
    if session is None:
        if context is None:
            raise InputError("rlm.run needs a context (or a session that has one)")
        return run_once(question, context, config, **run_options)
    config = config or RLMConfig()
    key = (str(config.home.resolve()), _check_name(session))
    with _live_lock:
        live = _live.get(key)
        if live is None:
            live = _live[key] = Session(session, context, config)
    return live.ask(question, config=config, **run_options)


@atexit.register
def _close_live() -> None:
    with _live_lock:
        sessions = list(_live.values())
        _live.clear()
    for live in sessions:
        live.close()
