"""The hub: one light actor per driver session that every agent host talks to.

It holds, for every run of the session (a batch runs many at once):

* the **ledger** — an :class:`rlm.budget.Budget` per run. Processes do not ask
  it once per LM call: they take *leases* of calls (:meth:`Hub.lease`), sized
  down to one call as the cap approaches, so the call cap is never exceeded
  (a lease is a reservation) and a 1,000-call fan-out costs a handful of
  round trips. Token and cost deltas ride along with every lease and sync.
* the **event queue** — hosts push batches of events; the driver's pump drains
  them (:meth:`Hub.drain`) and is the only writer of the run log.
* the **host-function relay** — extension host functions (swarm memory's
  ``note``/``recall``...) run on the driver, where the extension lives: hosts
  post calls here and the driver's relay answers them.

Kept free of litellm and the agent loop so that it starts fast. It is an
asyncio actor: every method runs on the actor's one event loop, so its state
needs no lock, and a waiting ``drain`` or ``host_call`` costs a coroutine, not a
thread (a threaded actor allowed thousands of concurrent calls by starting
thousands of threads up front, whose futex waits slowed every lock hand-off of the
process).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from typing import Any

from rlm.budget import Budget
from rlm.errors import LimitReached

#: Leases shrink to one call when fewer than this many leases' worth of calls remain.
LEASE_SAFETY = 8


class Hub:
    """Budgets, events and host-call relay of one driver session (run as an asyncio Ray actor)."""

    def __init__(self) -> None:
        self._budgets: dict[str, Budget] = {}
        self._events: deque[Any] = deque()
        self._events_ready = asyncio.Event()
        self._pushed = 0
        self._calls: deque[tuple[int, str, str, dict[str, Any], dict[str, Any]]] = deque()
        self._calls_ready = asyncio.Event()
        self._replies: dict[int, asyncio.Future[list[Any]]] = {}
        self._call_ids = itertools.count(1)

    async def ping(self) -> bool:
        return True

    # -- ledger ---------------------------------------------------------------------
    async def open_run(self, run_id: str, limits: dict[str, Any]) -> None:
        deadline = limits.get("deadline_epoch")
        timeout = None if deadline is None else max(0.001, deadline - time.time())
        self._budgets[run_id] = Budget(max_llm_calls=limits["max_llm_calls"], max_tokens=limits.get("max_tokens"),
                                       max_cost_usd=limits.get("max_cost_usd"), timeout_s=timeout)

    async def close_run(self, run_id: str) -> None:
        self._budgets.pop(run_id, None)

    async def lease(self, run_id: str, want: int, delta: dict[str, Any]) -> dict[str, Any]:
        """Apply ``delta`` (tokens, cost, returned calls), then grant up to ``want`` calls."""
        budget = self._budget(run_id)
        _apply(budget, delta)
        granted = 0
        if want > 0:
            remaining = budget.max_llm_calls - budget.usage().llm_calls
            size = want if remaining >= want * LEASE_SAFETY else 1
            try:
                granted = budget.reserve_calls(size)
            except LimitReached:
                granted = 0
        return {"granted": granted, **_state(budget)}

    async def stop(self, run_id: str, reason: str) -> None:
        budget = self._budgets.get(run_id)
        if budget is not None:
            budget.stop(reason)

    async def sync(self, run_id: str, delta: dict[str, Any]) -> dict[str, Any]:
        budget = self._budget(run_id)
        _apply(budget, delta)
        try:
            budget.check()
        except LimitReached:
            pass
        return _state(budget)

    def _budget(self, run_id: str) -> Budget:
        budget = self._budgets.get(run_id)
        if budget is None:
            raise KeyError(f"run {run_id} is not open on the hub")
        return budget

    # -- events -----------------------------------------------------------------------
    async def push_events(self, events: list[Any]) -> int:
        self._events.extend(events)
        self._pushed += len(events)
        self._events_ready.set()
        return self._pushed

    async def pushed(self) -> int:
        return self._pushed

    async def drain(self, timeout: float) -> tuple[list[Any], int]:
        """Every queued event (waiting up to ``timeout`` for one), and how many were ever pushed."""
        await _wait(self._events_ready, timeout)
        events = list(self._events)
        self._events.clear()
        self._events_ready.clear()
        return events, self._pushed

    # -- host-function relay ------------------------------------------------------------
    async def host_call(self, run_id: str, name: str, agent: dict[str, Any], args: dict[str, Any]) -> list[Any]:
        """Called by a host; returns once the driver answered: ``[ok, value_or_error]``."""
        call_id = next(self._call_ids)
        reply: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._replies[call_id] = reply
        self._calls.append((call_id, run_id, name, agent, args))
        self._calls_ready.set()
        try:
            return await reply
        finally:
            self._replies.pop(call_id, None)

    async def next_host_calls(self, timeout: float) -> list[tuple[int, str, str, dict[str, Any], dict[str, Any]]]:
        await _wait(self._calls_ready, timeout)
        calls = list(self._calls)
        self._calls.clear()
        self._calls_ready.clear()
        return calls

    async def host_reply(self, call_id: int, ok: bool, value: Any) -> None:
        reply = self._replies.pop(call_id, None)
        if reply is not None and not reply.done():
            reply.set_result([ok, value])


async def _wait(ready: asyncio.Event, timeout: float) -> None:
    """Wait up to ``timeout`` for ``ready`` (already set: return at once)."""
    if not ready.is_set():
        try:
            await asyncio.wait_for(ready.wait(), timeout)
        except TimeoutError:
            pass


def _apply(budget: Budget, delta: dict[str, Any]) -> None:
    if delta.get("input_tokens") or delta.get("output_tokens") or delta.get("cost_usd") or delta.get("unpriced"):
        cost = None if delta.get("unpriced") else float(delta.get("cost_usd") or 0.0)
        budget.record(int(delta.get("input_tokens") or 0), int(delta.get("output_tokens") or 0), cost)
        if delta.get("unpriced") and delta.get("cost_usd"):
            budget.record(0, 0, float(delta["cost_usd"]))
    if delta.get("returned"):
        budget.release_calls(int(delta["returned"]))
    if delta.get("stop"):
        budget.stop(str(delta["stop"]))


def _state(budget: Budget) -> dict[str, Any]:
    usage = budget.usage()
    return {"stop_reason": budget.stop_reason, "usage": [usage.input_tokens, usage.output_tokens, usage.llm_calls,
                                                          usage.cost_usd]}
