"""Runs sent to the service, with the signature of :func:`rlm.runner.run`: the CLI, ``rlm batch`` and the TUI use it.

:func:`remote_run` sends the question, the context and the whole run config
(built from the caller's own options and environment, API key included: the
socket only admits this user) and returns the run's
:class:`~rlm.results.RunResult`. The run's events arrive on the caller's
:class:`~rlm.events.EventBus` as they happen, and ``on_start(run_id, budget)``
hands the caller a :class:`RemoteBudget`: its ``stop()`` cancels the run in the
service (by hanging up), its ``usage()`` follows the run's model calls. A
context given as text (or standard input) is written to a private file under
``$RLM_HOME/tmp`` first: the service reads contexts from files, as a run
always does.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm.budget import Usage
from rlm.config import RLMConfig
from rlm.errors import ConfigError
from rlm.events import EventBus, LMCalled, event_from_dict
from rlm.results import RunResult
from rlm.service.client import ServiceClient, context_file

if TYPE_CHECKING:
    from rlm.cli import Writer

__all__ = ["remote_run", "remote_rerun", "RemoteBudget", "print_detached"]


class RemoteBudget:
    """What a caller of :func:`remote_run` holds of the run's budget: stop it, look at its usage."""

    def __init__(self, config: RLMConfig) -> None:
        self.max_llm_calls = config.max_llm_calls
        self.max_tokens = config.max_tokens
        self.max_cost_usd = config.max_cost_usd
        self.stop_reason: str | None = None
        self._deadline = None if config.timeout_s is None else time.monotonic() + config.timeout_s
        self._lock = threading.Lock()
        self._counts = [0, 0, 0, 0]  # input tokens, output tokens, calls, cache hits
        self._cost: float | None = 0.0  # None once a call's price was unknown
        self._cancel: Callable[[], None] | None = None

    def stop(self, reason: str) -> None:
        """Cancel the run in the service (it ends with status ``cancelled``; its result still comes back)."""
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason
            cancel = self._cancel
        if cancel is not None:
            cancel()

    def connected(self, cancel: Callable[[], None]) -> None:
        with self._lock:
            self._cancel = cancel
            stopped = self.stop_reason is not None
        if stopped:  # stopped before the request went out
            cancel()

    def usage(self) -> Usage:
        with self._lock:
            input_tokens, output_tokens, calls, hits = self._counts
            return Usage(input_tokens=input_tokens, output_tokens=output_tokens, llm_calls=calls,
                         cost_usd=self._cost, cache_hits=hits)

    def remaining_time(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def count(self, event: LMCalled) -> None:
        with self._lock:
            self._counts[0] += event.input_tokens
            self._counts[1] += event.output_tokens
            self._counts[2] += 1
            self._counts[3] += int(event.cache_hit)
            self._cost = None if event.cost_usd is None or self._cost is None else self._cost + event.cost_usd


def remote_run(client: ServiceClient, question: str, context: Any, config: RLMConfig, *,
               bus: EventBus | None = None, on_start: Callable[[str, RemoteBudget], None] | None = None,
               detach: bool = False, session: str | None = None, events: bool = True) -> RunResult | str:
    """Run ``question`` about ``context`` (a path, ``"-"`` for stdin, or text) in the service.

    Returns the result, or, with ``detach``, the run id once the run has started. With ``session``
    the run is that session's next turn, in the session the service keeps live. With ``events``
    false the service sends none of the run's events (nothing reaches ``bus``, and the budget's
    ``usage()`` stays empty; its ``stop()`` still cancels): what a caller that only wants results saves.
    """
    if detach and (not isinstance(context, Path) or str(context) == "-"):
        raise ConfigError("--detach needs the context in a file")
    budget = RemoteBudget(config)
    with context_file(context, config.home) as path:
        request = {"question": question, "context_path": str(path), "detach": detach,
                   "context_documents": isinstance(context, list), "session": session, "events": events,
                   "config": {**config.to_dict(), "api_key": config.api_key}}
        reply = client.ask(request, _replies(budget, bus, on_start), on_connect=budget.connected)
    if detach:
        return str(reply["run_id"])
    return RunResult.from_dict(reply["result"])


def remote_rerun(client: ServiceClient, request: dict[str, Any], config: RLMConfig, *,
                 bus: EventBus | None = None) -> tuple[RunResult, dict[str, Any]]:
    """Replay, resume or fork a run in the service (``request``: ``run_id``, ``mode``, ``question``, ``at``);
    the result, and the recorded outcome a replay is compared with."""
    budget = RemoteBudget(config)
    recorded: dict[str, Any] = {}
    forward = _replies(budget, bus, None)

    def on_reply(reply: dict[str, Any]) -> None:
        if reply["type"] == "recorded":
            recorded.update(reply["recorded"])
        forward(reply)

    reply = client.ask({**request, "op": "rerun", "config": {**config.to_dict(), "api_key": config.api_key}},
                       on_reply, on_connect=budget.connected)
    return RunResult.from_dict(reply["result"]), recorded


def _replies(budget: RemoteBudget, bus: EventBus | None,
             on_start: Callable[[str, RemoteBudget], None] | None) -> Callable[[dict[str, Any]], None]:
    """What a run's replies do: events to ``bus`` (and the budget's usage), the start to ``on_start``."""

    def on_reply(reply: dict[str, Any]) -> None:
        if reply["type"] == "event":
            event = event_from_dict(reply["event"])
            if isinstance(event, LMCalled) and event.ok:
                budget.count(event)
            if bus is not None:
                bus.emit(event)
        elif reply["type"] == "accepted" and on_start is not None:
            on_start(reply["run_id"], budget)

    return on_reply


def print_detached(run_id: str, out: Writer | None = None, err: Writer | None = None) -> None:
    """What ``rlm ask --detach`` prints once its run started in the service."""
    print(run_id, file=out or sys.stdout)
    print(f"[rlm] run {run_id} goes on in the service; `rlm show {run_id}` shows where it is", file=err or sys.stderr)
