"""The command line's side of the service: find it, send one request, read what comes back.

Kept to the standard library and :mod:`rlm.service.wire`, so that a command
talking to a warm service starts in the time of a bare interpreter.
:meth:`ServiceClient.command` is all ``rlm ask`` does when a service runs: it
sends the parsed options and the environment, and writes what the service
renders to its own stdout and stderr.
:func:`connect` returns ``None`` when no service runs for the RLM_HOME (no
state file, a stale one, or a socket nobody answers): the command then runs in
its own process, as it would without a service.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from rlm.errors import ConfigError, InputError, RLMError
from rlm.service import wire
from rlm.service.paths import ServiceState, find_service

__all__ = ["ServiceClient", "ServiceError", "ServiceBusy", "ServiceGone", "connect", "context_file"]


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
    client = ServiceClient(state, home)
    try:
        client.ping()
    except OSError:
        return None  # a stale socket: behave as if no service ran
    return client


class ServiceClient:
    """Requests to one service; each request is a connection of its own."""

    def __init__(self, state: ServiceState, home: Path) -> None:
        self.state = state
        self.home = home

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
        raise _gone_mid_run(run_id)

    def command(self, command: str, args: argparse.Namespace, env: dict[str, str], out: TextIO, err: TextIO) -> int:
        """Run ``rlm COMMAND`` (parsed as ``args``, with ``env``) in the service, writing what it prints to
        ``out`` and ``err``; the command's exit code. Paths are made absolute here (the service has its own
        working directory); a context on standard input goes to a private file the service reads."""
        options = dict(vars(args))
        env = {**env, "RLM_HOME": str(self.home.expanduser().absolute())}
        if options.get("models"):
            options["models"] = str(Path(options["models"]).expanduser().absolute())
        if options.get("detach") and options["context_path"] == "-":
            raise ConfigError("--detach needs the context in a file")
        run_id = None
        with context_file(Path(options.pop("context_path")), Path(env["RLM_HOME"])) as path:
            request = {"op": "cli", "command": command, "args": {**options, "context_path": str(path)}, "env": env}
            for reply in self.stream(request):
                kind = reply["type"]
                if kind in ("stdout", "stderr"):
                    stream = out if kind == "stdout" else err
                    stream.write(str(reply["text"]))
                    stream.flush()
                elif kind == "accepted":
                    run_id = reply.get("run_id")
                elif kind == "exit":
                    return int(reply["code"])
        raise _gone_mid_run(run_id)

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


def _gone_mid_run(run_id: str | None) -> ServiceGone:
    """The error of a run whose service went away before its end (with where to look, once it had an id)."""
    where = f" (run {run_id}: `rlm show {run_id}` has what it recorded)" if run_id else ""
    return ServiceGone(f"the service stopped before the run ended{where}")


def _raise_for(reply: dict[str, Any]) -> None:
    kind = reply.get("type")
    if kind == "error":
        raise ServiceError(str(reply.get("message")), kind=str(reply.get("kind") or ""),
                           exit_code=int(reply.get("exit") or 1))
    if kind == "busy":
        raise ServiceBusy(f"the service is busy ({reply.get('running')} runs running, {reply.get('queued')} "
                          f"queued); try again in {reply.get('retry_after', 5)} s", exit_code=1)


@contextmanager
def context_file(context: Any, home: Path) -> Iterator[Path]:
    """The file a run in the service reads its context from: ``context``'s own (a path), else a private
    file under ``home/tmp`` holding standard input (``"-"``), the text or the documents (as JSON),
    removed afterwards."""
    if isinstance(context, Path) and str(context) != "-":
        yield context.expanduser().resolve()
        return
    directory = home / "tmp"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"context-{os.urandom(6).hex()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(context, Path):  # "-": standard input
                while chunk := sys.stdin.buffer.read(1 << 20):
                    handle.write(chunk)
            elif isinstance(context, str):
                handle.write(context.encode("utf-8"))
            elif isinstance(context, list):
                handle.write(json.dumps(context, ensure_ascii=False).encode("utf-8"))
            else:
                raise InputError(f"context must be a path, a str or a list of documents, not {type(context).__name__}")
        yield path
    finally:
        path.unlink(missing_ok=True)
