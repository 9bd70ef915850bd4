"""The tree-wide budget ledger.

Every LM call anywhere in the recursion tree draws from one :class:`Budget`:
a call is *reserved* before it is sent (so the call cap is never exceeded) and
its tokens and cost are *recorded* when it returns. Token and cost caps are
checked before each call, so they are exceeded by at most the calls already in
flight. Once any limit trips, :attr:`Budget.stop_reason` is set and every agent
of the tree winds down with that status.

:class:`Ledger` is what the agent loop needs of a budget; :class:`Budget` is the
in-process ledger, and the Ray executor's ``LeasedBudget`` (``rlm.agents``)
implements the same protocol over a cluster-wide one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

from rlm.errors import LimitReached

__all__ = ["Usage", "Ledger", "Budget"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token and call totals; ``cost_usd`` is ``None`` when any call's price was unknown.

    ``llm_calls`` counts every call, ``cache_hits`` those a record answered (rlm.records): tokens
    and cost are those of the paid calls only.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    llm_calls: int = 0
    cost_usd: float | None = 0.0
    cache_hits: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def paid_calls(self) -> int:
        """Calls the provider answered."""
        return self.llm_calls - self.cache_hits

    def to_dict(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "llm_calls": self.llm_calls,
                "cache_hits": self.cache_hits}


class Ledger(Protocol):
    """The tree-wide budget as the agent loop uses it (in-process or across a cluster)."""

    max_llm_calls: int
    max_tokens: int | None
    max_cost_usd: float | None
    stop_reason: str | None

    def remaining_time(self) -> float | None:
        """Seconds left before the run's deadline, or ``None`` without a timeout."""
        ...

    def check(self) -> None:
        """Raise :class:`LimitReached` if the run must stop."""
        ...

    def stop(self, reason: str) -> None:
        """Stop the whole tree with ``reason``; the first reason wins."""
        ...

    def reserve_call(self) -> None:
        """Claim one LM call; raises :class:`LimitReached` when none may be made."""
        ...

    def record(self, input_tokens: int, output_tokens: int, cost_usd: float | None) -> None:
        """Add a finished call's tokens and cost (``None``: price unknown)."""
        ...

    def usage(self) -> Usage:
        """The run's totals so far."""
        ...


class Budget:
    """Thread-safe ledger of LM calls, tokens, cost and wall-clock time for one run."""

    def __init__(
        self,
        *,
        max_llm_calls: int,
        max_tokens: int | None = None,
        max_cost_usd: float | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.max_llm_calls = max_llm_calls
        self.max_tokens = max_tokens
        self.max_cost_usd = max_cost_usd
        self.started = time.monotonic()
        self.deadline = None if timeout_s is None else self.started + timeout_s
        self._lock = threading.Lock()
        self._calls = 0
        self._input = 0
        self._output = 0
        self._cost = 0.0
        self._cost_known = True
        self.stop_reason: str | None = None

    # -- checks --------------------------------------------------------------
    def remaining_time(self) -> float | None:
        """Seconds left before the run's deadline, or ``None`` without a timeout."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        """Raise :class:`LimitReached` if the run must stop (any limit tripped)."""
        with self._lock:
            self._check_locked()

    def _trip(self, limit: str) -> LimitReached:
        if self.stop_reason is None:
            self.stop_reason = limit
        return LimitReached(self.stop_reason)

    def _check_locked(self) -> None:
        if self.stop_reason is not None:
            raise LimitReached(self.stop_reason)
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise self._trip("timeout")
        if self.max_tokens is not None and self._input + self._output >= self.max_tokens:
            raise self._trip("max_tokens")
        if self.max_cost_usd is not None and self._cost >= self.max_cost_usd:
            raise self._trip("max_cost")

    def stop(self, reason: str) -> None:
        """Stop the whole tree with ``reason`` (e.g. ``"cancelled"``); the first reason wins."""
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason

    # -- accounting ------------------------------------------------------------
    def reserve_call(self) -> None:
        """Claim one LM call; raises :class:`LimitReached` when none may be made."""
        with self._lock:
            self._check_locked()
            if self._calls >= self.max_llm_calls:
                raise self._trip("max_llm_calls")
            self._calls += 1

    def reserve_calls(self, count: int) -> int:
        """Claim up to ``count`` calls at once (a lease); returns how many were granted (>= 1).

        Raises :class:`LimitReached` when none may be made. Unused ones go back with
        :meth:`release_calls`, so the cap is never exceeded and usage counts only calls made.
        """
        with self._lock:
            self._check_locked()
            granted = min(count, self.max_llm_calls - self._calls)
            if granted <= 0:
                raise self._trip("max_llm_calls")
            self._calls += granted
            return granted

    def release_calls(self, count: int) -> None:
        """Give back calls reserved with :meth:`reserve_calls` and never made."""
        with self._lock:
            self._calls = max(0, self._calls - count)

    def record(self, input_tokens: int, output_tokens: int, cost_usd: float | None) -> None:
        """Add a finished call's tokens and cost (``None``: price unknown)."""
        with self._lock:
            self._input += input_tokens
            self._output += output_tokens
            if cost_usd is None:
                self._cost_known = False
            else:
                self._cost += cost_usd

    def usage(self) -> Usage:
        with self._lock:
            return Usage(
                input_tokens=self._input,
                output_tokens=self._output,
                llm_calls=self._calls,
                cost_usd=self._cost if self._cost_known else None,
            )
