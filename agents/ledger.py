"""The tree-wide budget as seen from one process of a Ray run.

:class:`LeasedBudget` has the interface of :class:`rlm.budget.Budget` (the agent
loop cannot tell them apart) over the hub's ledger:

* ``reserve_call`` spends a local lease of calls; an empty lease is refilled
  from the hub, asking for twice the last size (up to :data:`MAX_LEASE`) — the
  hub shrinks leases to one call near the cap. The cap is never exceeded: every
  call spent was reserved centrally. Unused calls go back with :meth:`release`.
* ``record`` adds tokens and cost to a local delta, sent with the next lease or
  sync — at once when a token or cost cap is set, at least every
  :data:`SYNC_INTERVAL_S` otherwise (so those caps are exceeded by at most the
  calls in flight, as in-process).
* ``check`` looks at the local stop reason and deadline, and syncs with the hub
  every :data:`SYNC_INTERVAL_S` to learn about stops from elsewhere (a limit
  tripped in another process, a cancel from the UI). A periodic sync runs on a
  background thread of the process: no agent waits for the hub's round trip.

The deadline is a wall-clock epoch, the same on every node.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rlm.agents.queue_thread import QueueThread

from rlm.budget import Usage
from rlm.errors import LimitReached

MAX_LEASE = 64
SYNC_INTERVAL_S = 0.1


class LeasedBudget:
    """Budget-compatible client of the hub's ledger for one run, shared by the threads of one process."""

    def __init__(self, hub: Any, run_id: str, limits: dict[str, Any]) -> None:
        self.hub = hub
        self.run_id = run_id
        self.max_llm_calls: int = limits["max_llm_calls"]
        self.max_tokens: int | None = limits.get("max_tokens")
        self.max_cost_usd: float | None = limits.get("max_cost_usd")
        self.deadline_epoch: float | None = limits.get("deadline_epoch")
        self.stop_reason: str | None = None
        self._lock = threading.Lock()
        self._lease = 0
        self._lease_size = 1
        self._delta: dict[str, Any] = {}
        self._last_sync = time.monotonic()
        self._usage: list[Any] = [0, 0, 0, 0.0]
        self._eager = self.max_tokens is not None or self.max_cost_usd is not None
        self._syncing = False

    # -- the Budget interface ------------------------------------------------------------
    def remaining_time(self) -> float | None:
        if self.deadline_epoch is None:
            return None
        return max(0.0, self.deadline_epoch - time.time())

    def check(self) -> None:
        with self._lock:
            self._check_locked()
        if self._sync_due():
            _background.submit(self)

    def stop(self, reason: str) -> None:
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason
            self._delta["stop"] = reason
            self._sync_locked()

    def reserve_call(self) -> None:
        with self._lock:
            self._check_locked()
            if self._lease == 0:
                self._refill_locked()
            if self._lease == 0:  # the hub refused: its stop reason says why
                raise self._trip(self.stop_reason or "max_llm_calls")
            self._lease -= 1

    def record(self, input_tokens: int, output_tokens: int, cost_usd: float | None) -> None:
        with self._lock:
            delta = self._delta
            delta["input_tokens"] = delta.get("input_tokens", 0) + input_tokens
            delta["output_tokens"] = delta.get("output_tokens", 0) + output_tokens
            if cost_usd is None:
                delta["unpriced"] = True
            else:
                delta["cost_usd"] = delta.get("cost_usd", 0.0) + cost_usd
            if self._eager:  # a token or cost cap: the hub must see every call at once
                self._sync_locked()
                return
        if self._sync_due():
            _background.submit(self)

    def usage(self) -> Usage:
        with self._lock:
            self._sync_locked()
            input_tokens, output_tokens, calls, cost = self._usage
            return Usage(input_tokens=input_tokens, output_tokens=output_tokens, llm_calls=calls, cost_usd=cost)

    # -- leases ----------------------------------------------------------------------------
    def release(self) -> None:
        """Give unused leased calls back and flush the delta (when this process goes idle for the run)."""
        with self._lock:
            if self._lease:
                self._delta["returned"] = self._delta.get("returned", 0) + self._lease
                self._lease = 0
            self._lease_size = 1
            self._sync_locked()

    def _refill_locked(self) -> None:
        reply = self._call("lease", self._lease_size)
        self._lease += reply["granted"]
        self._lease_size = min(MAX_LEASE, self._lease_size * 2)

    def _sync_locked(self) -> None:
        self._call("sync")

    def _sync_due(self) -> bool:
        """True (and this thread owns the sync) when a periodic sync is due and nobody is making it."""
        with self._lock:
            if self._syncing or time.monotonic() - self._last_sync < SYNC_INTERVAL_S:
                return False
            self._syncing = True
            return True

    def _sync_unlocked(self) -> None:
        """A periodic sync without holding the lock across the round trip (the caller owns ``_syncing``)."""
        import ray

        try:
            with self._lock:
                delta, self._delta = self._delta, {}
            try:
                reply = ray.get(self.hub.sync.remote(self.run_id, delta))
            except Exception:
                with self._lock:
                    self._merge_back(delta)
                    self._last_sync = time.monotonic()  # try again an interval later, not at every check
                raise
            with self._lock:
                self._apply_reply(reply)
        finally:
            with self._lock:
                self._syncing = False

    def _call(self, method: str, *args: Any) -> dict[str, Any]:
        import ray

        delta, self._delta = self._delta, {}
        try:
            reply = ray.get(getattr(self.hub, method).remote(self.run_id, *args, delta))
        except Exception:
            self._merge_back(delta)
            raise
        self._apply_reply(reply)
        return reply

    def _apply_reply(self, reply: dict[str, Any]) -> None:
        self._last_sync = time.monotonic()
        self._usage = reply["usage"]
        if reply["stop_reason"] and self.stop_reason is None:
            self.stop_reason = reply["stop_reason"]

    def _merge_back(self, delta: dict[str, Any]) -> None:
        for key, value in delta.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._delta[key] = self._delta.get(key, 0) + value
            else:
                self._delta[key] = value

    def _check_locked(self) -> None:
        if self.stop_reason is not None:
            raise LimitReached(self.stop_reason)
        if self.deadline_epoch is not None and time.time() >= self.deadline_epoch:
            raise self._trip("timeout")

    def _trip(self, limit: str) -> LimitReached:
        if self.stop_reason is None:
            self.stop_reason = limit
            self._delta["stop"] = limit
        return LimitReached(self.stop_reason)


def _sync_quietly(budget: LeasedBudget) -> None:
    try:
        budget._sync_unlocked()  # noqa: SLF001 - the budget's own background sync, queued by the budget
    except Exception:  # noqa: BLE001, S110 - the hub is gone or busy: the delta was kept, the next sync sends it
        pass


#: One thread per process makes the periodic syncs of every :class:`LeasedBudget`.
_background: QueueThread[LeasedBudget] = QueueThread("rlm-ledger-sync", _sync_quietly)
