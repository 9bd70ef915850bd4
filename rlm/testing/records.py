"""What the scripted server remembers of each request: :class:`RequestRecord`, and the concurrency they show."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rlm.testing.scripts import Message

__all__ = ["RequestRecord", "max_concurrency"]


@dataclass
class RequestRecord:
    """One HTTP request the server received.

    Records are appended when a request has been read; until it is answered
    ``responded_at`` is ``None`` and ``status`` is 0.

    Attributes:
        index: position among all requests since start/reset (0-based).
        connection: sequence number of the TCP connection it came on (keep-alive
            requests share one).
        method: HTTP method.
        path: request path without the query string.
        received_at: ``time.monotonic()`` when the request head was read.
        responded_at: ``time.monotonic()`` when the response was handed to the socket.
        body: the parsed JSON body (``None`` if absent or invalid).
        model: the ``model`` field of the body.
        messages: the ``messages`` field of the body.
        stream: whether a streamed response was asked for.
        status: the HTTP status sent.
        reply: the completion text sent (``None`` for errors and non-chat requests).
        error: the error message sent, for error statuses.
        fault: the injected fault: ``"error_429"``, ``"error_500"``, ``"timeout"``,
            ``"malformed"``, ``"context_window"`` (a prompt over the server's window), or ``None``.
    """

    index: int
    connection: int
    method: str
    path: str
    received_at: float
    responded_at: float | None = None
    body: Any = None
    model: str | None = None
    messages: list[Message] = field(default_factory=list)
    stream: bool = False
    status: int = 0
    reply: str | None = None
    error: str | None = None
    fault: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds between receiving and answering, or ``None`` while in flight."""
        return None if self.responded_at is None else self.responded_at - self.received_at


def max_concurrency(records: Iterable[RequestRecord]) -> int:
    """Largest number of requests in flight at once (requests not yet answered count as open).

    Intervals are half-open: a request answered at the instant another arrives
    does not overlap it.
    """
    events: list[tuple[float, int]] = []
    for record in records:
        end = record.responded_at if record.responded_at is not None else math.inf
        events.append((record.received_at, 1))
        events.append((end, -1))
    events.sort()  # at equal times -1 (an end) sorts before +1 (a start)
    current = best = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best

