"""What a client and the service say to each other: one JSON object per line, both ways.

A client connects to the service's Unix socket, sends one **request** line and
reads **replies** until the service closes the connection:

``{"op": "ask", "question", "context_path", "config", "detach", "session", "events"}``
    ``accepted`` (with the run id, once the run started), then ``event`` lines
    as the run goes (the events of :mod:`rlm.events` as dicts), then ``result``
    (the :class:`~rlm.results.RunResult` as a dict). With ``detach`` the
    connection ends after ``accepted`` and the run goes on; otherwise a client
    that disconnects cancels its run. With ``session`` (a name) the run is that
    session's next turn, in the session the service keeps live. With ``events``
    false no ``event`` lines are sent.
``{"op": "cli", "command": "ask", "args", "env"}``
    What ``rlm ask`` sends when it finds a service: the options it parsed
    (paths made absolute) and its environment. The service builds and checks
    the config, runs, and renders what the command prints: ``stdout`` and
    ``stderr`` lines (``text``) as the command would print them, ``accepted``
    once the run started, then ``exit`` (``code``). The run's events do not
    cross the socket (:mod:`rlm.service.commands`).
``{"op": "rerun", "run_id", "mode", "question", "at", "config"}``
    ``recorded`` (the run's recorded answer, status and cells), then as ``ask``:
    a replay (``mode`` ``"replay"``), resume or fork (``question``, ``at``) of a
    logged run (:mod:`rlm.reruns`).
``{"op": "runs", "limit", "json"}`` / ``{"op": "show", "run_id", "max_output", "json"}``
    ``output``: the text ``rlm runs`` / ``rlm show`` print.
``{"op": "memory", "command", ...}``
    ``output``: what ``rlm memory COMMAND`` prints, executed on the service's
    memory store (:func:`rlm.memory_cli.execute`; the request carries the
    parsed options, and the client has already read stdin and import files).
``{"op": "events", "run_id"}``
    ``events``: the run's events as dicts (a client rebuilds its tree from them).
``{"op": "status"}``
    ``status``: pid, uptime, runs running and queued, the executor.
``{"op": "stop"}``
    ``output``, then the service cancels its runs and exits.
``{"op": "mcp", "config", "allow_paths"}``
    ``mcp``, then the connection is an MCP session in the stdio framing (one
    JSON-RPC message per line, both ways) until either side closes it: what
    ``rlm mcp`` relays (:func:`rlm.service.mcp_server.serve_socket`).

Any request may instead get ``error`` (``kind`` is the exception's class name,
``exit`` the exit code the command should end with) or ``busy`` (too many runs
running and queued; ``retry_after`` seconds). A line is at most
:data:`MAX_LINE` bytes.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

__all__ = ["MAX_LINE", "PROTOCOL", "WireError", "send", "lines", "error_reply"]

MAX_LINE = 64 * 1024 * 1024
#: The requests this version speaks, written in ``service.json``; raised when a request changes so that
#: another version would misread it (2: ``rlm ask`` sends ``cli``). A command refuses a service speaking
#: another, with the fix (restart it), instead of failing on a request it does not know.
PROTOCOL = 2


class WireError(Exception):
    """The other side sent something that is not a line of JSON, or a line too long."""


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    """Write one message as a line (raises ``OSError`` when the other side is gone)."""
    sock.sendall(json.dumps(message, ensure_ascii=False, default=str).encode("utf-8") + b"\n")


def lines(sock: socket.socket) -> Iterator[dict[str, Any]]:
    """The messages arriving on ``sock``, one per line, until it is closed."""
    reader = sock.makefile("rb")
    try:
        while True:
            line = reader.readline(MAX_LINE + 1)
            if not line:
                return
            if len(line) > MAX_LINE:
                raise WireError(f"a message over {MAX_LINE:,} bytes")
            try:
                message = json.loads(line)
            except ValueError as exc:
                raise WireError(f"a message that is not JSON ({exc})") from None
            if not isinstance(message, dict):
                raise WireError("a message that is not a JSON object")
            yield message
    finally:
        reader.close()


def error_reply(exc: BaseException) -> dict[str, Any]:
    """The ``error`` reply for ``exc`` (exit 2 for bad input or options, as the command line)."""
    from rlm.errors import ConfigError, InputError, SandboxUnavailable

    bad_input = isinstance(exc, (InputError, ConfigError, SandboxUnavailable))
    return {"type": "error", "kind": type(exc).__name__, "message": str(exc), "exit": 2 if bad_input else 1}
