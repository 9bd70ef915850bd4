"""The scripted server's fault model: seeded draws of 429s, 500s, hangs and malformed bodies.

Each chat-completion request draws one number from a ``random.Random(seed)``;
the cumulative rates (whose sum must not exceed 1) decide whether it gets a
fault, and which. Draws happen in arrival order, so a sequential client sees the
same faults on every run with the same seed.
"""

from __future__ import annotations

import asyncio
import random
import threading

from rlm.errors import ConfigError
from rlm.testing.openai_api import ApiError, Response

__all__ = ["FAULTS", "FaultModel"]

#: The faults, in the order their rates are stacked in [0, 1).
FAULTS = ("error_429", "error_500", "timeout", "malformed")


class FaultModel:
    """Draws a fault (or none) per request and renders it.

    Args:
        rates: the rate in [0, 1] of each fault named in :data:`FAULTS`.
        seed: seed of the random generator (:meth:`reset` goes back to it).
        hang_s: how long a ``timeout`` fault hangs before answering 504.

    Raises:
        ConfigError: a rate outside [0, 1], or rates summing to more than 1.
    """

    def __init__(self, rates: dict[str, float], seed: int, hang_s: float) -> None:
        self._table = _fault_table(rates)
        self.seed, self.hang_s = seed, hang_s
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def reset(self) -> None:
        """Reseed: the next draws repeat the first ones."""
        with self._lock:
            self._rng = random.Random(self.seed)

    def draw(self) -> str | None:
        """The fault of the next request, or None. Thread-safe."""
        with self._lock:
            draw = self._rng.random()
        for name, upper in self._table:
            if draw < upper:
                return name
        return None

    async def respond(self, fault: str, stream: bool) -> Response:
        """The response of a drawn fault (a ``timeout`` first hangs :attr:`hang_s`).

        Raises:
            ApiError: for the faults that are HTTP errors.
        """
        if fault == "error_429":
            raise ApiError(429, "Rate limit reached for requests (injected by the scripted server).",
                           "requests", "rate_limit_exceeded", headers=[("retry-after", "0")])
        if fault == "error_500":
            raise ApiError(500, "The server had an error while processing your request (injected by the "
                           "scripted server).", "server_error", "server_error")
        if fault == "timeout":
            await asyncio.sleep(self.hang_s)
            raise ApiError(504, f"injected timeout: no answer for {self.hang_s}s", "timeout", "timeout")
        if stream:
            chunks = [b'data: {"id": "chatcmpl-malformed", "choi\n\n', b"data: [DONE]\n\n"]
            return Response(200, content_type="text/event-stream; charset=utf-8", chunks=chunks)
        return Response(200, b'{"id": "chatcmpl-malformed", "object": "chat.completion", "choices": [{')


def _fault_table(rates: dict[str, float]) -> list[tuple[str, float]]:
    """Cumulative upper bounds for one uniform draw, in the order of :data:`FAULTS`."""
    table = []
    upper = 0.0
    for name in FAULTS:
        rate = rates.get(name, 0.0)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ConfigError(f"fault rate for {name} must be in [0, 1], got {rate!r}")
        if rate > 0:
            upper += rate
            table.append((name, upper))
    if upper > 1 + 1e-9:
        raise ConfigError(f"fault rates sum to {upper:g}; the sum must not exceed 1")
    return table
