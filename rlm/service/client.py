"""The command line's side of the service: find it, send one request, read what comes back.

Kept to the standard library and :mod:`rlm.service.wire`, so that a command
talking to a warm service starts in the time of a bare interpreter.
:func:`connect` returns ``None`` when no service runs for the RLM_HOME (no
state file, a stale one, or a socket nobody answers): the command then runs in
its own process, as it would without a service.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rlm.errors import RLMError
from rlm.service import wire
from rlm.service.paths import ServiceState, find_service

__all__ = ["ServiceClient", "ServiceError", "ServiceBusy", "ServiceGone", "connect"]


class ServiceError(RLMError):
    """The service refused a request; ``exit_code`` is the exit code the command ends with."""

    def __init__(self, message: str, *, kind: str = "", exit_code: int = 1) -> None:
        super().__init__(message)
        self.kind = kind
        self.exit_code = exit_code


class ServiceBusy(ServiceError):
    """The service has as many runs running and queued as it takes."""


class ServiceGone(ServiceError):
    """The service went away before it answered (it was stopped or killed)."""


def connect(home: Path) -> ServiceClient | None:
    """A client of the service running for ``home``, or ``None``."""
    state = find_service(home)
    if state is None:
        return None
    client = ServiceClient(state)
    try:
        client.ping()
    except OSError:
        return None  # a stale socket: behave as if no service ran
    return client


class ServiceClient:
    """Requests to one service; each request is a connection of its own."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state

    def ping(self) -> None:
        """Connect and hang up (raises ``OSError`` when nobody listens)."""
        with self._connect():
            pass

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """A request with one reply (``runs``, ``show``, ``status``, ``stop``)."""
        for reply in self.stream(request):
            return reply
        raise ServiceGone("the service closed the connection without answering")

    def ask(self, request: dict[str, Any], on_reply: Callable[[dict[str, Any]], None],
            on_connect: Callable[[Callable[[], None]], None] | None = None) -> dict[str, Any]:
        """An ``ask``: every reply goes to ``on_reply``; returns the ``result`` (or ``accepted`` when detached).

        ``on_connect(cancel)`` receives a function that asks the service to cancel the run (from any
        thread); the run then ends with status ``cancelled`` and its result still arrives.
        """
        run_id = None
        for reply in self.stream({"op": "ask", **request}, on_connect):
            on_reply(reply)
            if reply["type"] == "accepted":
                run_id = reply.get("run_id")
                if request.get("detach"):
                    return reply
            elif reply["type"] == "result":
                return reply
        where = f" (run {run_id}: `rlm show {run_id}` has what it recorded)" if run_id else ""
        raise ServiceGone(f"the service stopped before the run ended{where}")

    def stream(self, request: dict[str, Any],
               on_connect: Callable[[Callable[[], None]], None] | None = None) -> Iterator[dict[str, Any]]:
        """Send ``request``; yield the replies. ``error`` and ``busy`` replies raise."""
        try:
            sock = self._connect()
        except OSError as exc:
            raise ServiceGone(f"cannot reach the service at {self.state.socket}: {exc}") from None
        with sock:
            try:
                wire.send(sock, request)
                if on_connect is not None:
                    on_connect(lambda: _send_quietly(sock, {"op": "cancel"}))
                for reply in wire.lines(sock):
                    _raise_for(reply)
                    yield reply
            except (OSError, wire.WireError) as exc:
                raise ServiceGone(f"the connection to the service broke: {exc}") from None

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.state.socket)
        except BaseException:
            sock.close()
            raise
        return sock


def _send_quietly(sock: socket.socket, message: dict[str, Any]) -> None:
    try:
        wire.send(sock, message)
    except OSError:
        pass


def _raise_for(reply: dict[str, Any]) -> None:
    kind = reply.get("type")
    if kind == "error":
        raise ServiceError(str(reply.get("message")), kind=str(reply.get("kind") or ""),
                           exit_code=int(reply.get("exit") or 1))
    if kind == "busy":
        raise ServiceBusy(f"the service is busy ({reply.get('running')} runs running, {reply.get('queued')} "
                          f"queued); try again in {reply.get('retry_after', 5)} s", exit_code=1)
