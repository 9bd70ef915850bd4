"""Typed event records emitted at every step of a run.

Every event carries ``run_id``, ``ts`` (UNIX seconds) and, where it concerns one
agent, ``agent_id``. Events are plain frozen dataclasses with ``to_dict`` /
``from_dict``; ``to_dict`` adds a ``"type"`` key (the class name) so a stream of
dicts can be turned back into events with :func:`event_from_dict`.

They are appended to the run log (:mod:`rlm.runlog`) and pushed to live
subscribers (CLI progress, the TUI) through an :class:`EventBus`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar
from collections.abc import Callable

__all__ = [
    "Event",
    "RunStarted",
    "AgentStarted",
    "LMCalled",
    "CellExecuted",
    "IterationFinished",
    "AgentFinished",
    "RunFinished",
    "HistoryCompacted",
    "EventBus",
    "event_from_dict",
    "EVENT_TYPES",
]


def _now() -> float:
    return time.time()


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """Base of all events."""

    run_id: str
    ts: float = field(default_factory=_now)
    agent_id: str | None = None

    type_name: ClassVar[str] = "Event"

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _field_names(type(self))}
        data["type"] = type(self).__name__
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        names = _field_names(cls)
        return cls(**{k: v for k, v in data.items() if k in names})


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    """The dataclass field names of an event class, computed once per class (events are hot)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


@dataclass(frozen=True, kw_only=True, slots=True)
class RunStarted(Event):
    """A run began. ``config`` is the run's RLMConfig as a dict.

    ``context_info`` describes the input, with its identity (``context_info["identity"]``:
    path, size, mtime, a hash when small, a kept copy; :mod:`rlm.contexts`). ``origin`` says
    how the run came to be: ``"ask"``, ``"replay"``, ``"resume"``, ``"fork"`` or ``"turn"`` (a
    session's turn); ``parent_run_id`` is the run it repeats, continues or forks, or the
    session's previous turn; ``session`` and ``turn`` name a session's turn (from 1); a fork
    records the iteration it started from in ``fork_at``.
    """

    question: str
    model: str
    sub_model: str
    config: dict[str, Any] = field(default_factory=dict)
    context_info: dict[str, Any] = field(default_factory=dict)
    origin: str = "ask"
    parent_run_id: str | None = None
    session: str | None = None
    turn: int | None = None
    fork_at: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentStarted(Event):
    """An agent (root at depth 0, or a child) began. ``node_id`` names the host or Ray node."""

    parent_id: str | None
    depth: int
    model: str
    prompt: str
    context_info: dict[str, Any] = field(default_factory=dict)
    node_id: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class LMCalled(Event):
    """One language-model call finished (successfully or not).

    ``purpose`` is ``"iteration"`` (the agent's own turn), ``"llm_query"`` (a
    sub-call from the REPL), ``"final"`` (the forced final answer) or
    ``"fallback"`` (an ``rlm_query`` at max depth answered by a plain call).
    ``cost_usd`` is ``None`` when the provider's price is unknown. ``model_group``,
    ``deployment`` and ``node`` say where the call went (:mod:`rlm.routing`),
    ``route_reason`` why, ``queue_s`` how long it waited before its request left
    (for a batch item: its wait for a slot too); ``latency_s`` is from then to the reply.
    ``request_key`` identifies the request (:mod:`rlm.records`), ``response`` is the whole
    reply, and ``cache_hit`` says a record answered the call: no tokens, no cost. ``purpose``
    ``"summary"`` is the root summarising its history before compaction.
    """

    call_id: str
    model: str
    role: str
    purpose: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    latency_s: float = 0.0
    ok: bool = True
    error: str | None = None
    prompt_preview: str = ""
    response_preview: str = ""
    model_group: str | None = None
    deployment: str | None = None
    node: str | None = None
    route_reason: str = ""
    queue_s: float = 0.0
    request_key: str | None = None
    response: str = ""
    cache_hit: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class CellExecuted(Event):
    """One code block ran in the agent's sandbox."""

    iteration: int
    index: int
    code: str
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    duration_s: float = 0.0
    final: bool = False
    restarted: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class IterationFinished(Event):
    """An agent finished one iteration (one model reply and its cells)."""

    iteration: int
    reply: str
    n_cells: int
    duration_s: float = 0.0


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentFinished(Event):
    """An agent ended. ``status`` is ``"ok"``, a limit name, or ``"error"``."""

    status: str
    answer: str | None
    iterations: int
    input_tokens: int = 0
    output_tokens: int = 0
    llm_calls: int = 0
    duration_s: float = 0.0
    error: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class RunFinished(Event):
    """The run ended. Usage and cost are totals over the whole recursion tree; ``llm_calls`` counts
    every call, ``cache_hits`` those a record answered (tokens and cost are the paid calls')."""

    status: str
    answer: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    llm_calls: int = 0
    cache_hits: int = 0
    cost_usd: float | None = None
    iterations: int = 0
    depth_reached: int = 0
    duration_s: float = 0.0
    error: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class HistoryCompacted(Event):
    """The root's message history neared its model's window and was cut to the system prompt, the
    model's summary of its progress and a pointer to ``history[turn]``. ``messages`` is the whole
    segment that was cut (as the model saw it), so every segment stays in the run log."""

    iteration: int
    turn: int
    summary: str
    messages: list[dict[str, str]] = field(default_factory=list)
    chars_before: int = 0
    chars_after: int = 0


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (RunStarted, AgentStarted, LMCalled, CellExecuted, IterationFinished, AgentFinished, RunFinished,
                HistoryCompacted)
}


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from ``Event.to_dict()`` output; unknown types raise ``KeyError``."""
    return EVENT_TYPES[data["type"]].from_dict(data)


Subscriber = Callable[[Event], None]


class EventBus:
    """Fan-out of events to subscribers. Thread-safe; a failing subscriber is dropped, not fatal."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Register ``callback``; returns a function that unsubscribes it."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:  # noqa: BLE001 - a broken progress bar must not kill a run
                with self._lock:
                    if callback in self._subscribers:
                        self._subscribers.remove(callback)
