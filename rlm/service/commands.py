"""The service's side of ``rlm ask``: the command line parses and relays, the service does the rest.

A client sends ``{"op": "cli", "command": "ask", "args", "env"}``: the options
it parsed (paths already absolute) and its environment (the socket admits only
this user, so the environment, API keys included, is the user's own). Here the
config is built and checked (:func:`rlm.cli.prepare_ask`), the run submitted,
its progress rendered as :class:`rlm.cli.Progress` renders it, and its result
printed as :func:`rlm.cli.print_result` prints it, into ``stdout`` and
``stderr`` replies; ``exit`` ends the command with its exit code. So a command
that finds a service imports almost nothing of rlm and receives only text: the
run's events never cross the socket (a quiet run sends none at all).
"""

from __future__ import annotations

import argparse
import socket
from typing import TYPE_CHECKING, Any

from rlm.errors import ConfigError
from rlm.service import wire

if TYPE_CHECKING:
    from rlm.service.server import Relay, Service

__all__ = ["serve_command"]


class _Stream:
    """A text stream whose flushed lines go to the client as ``stdout`` or ``stderr`` replies."""

    def __init__(self, sender: Relay, name: str) -> None:
        self.sender, self.name = sender, name
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        if self.parts:
            text, self.parts = "".join(self.parts), []
            self.sender.send({"type": self.name, "text": text})


def serve_command(service: Service, conn: socket.socket, request: dict[str, Any]) -> None:
    """Run the command ``request`` names for the client on ``conn`` (only ``ask`` so far)."""
    if request.get("command") != "ask":
        raise ConfigError(f"the service runs no command {request.get('command')!r}")
    from pathlib import Path

    from rlm.cli import Progress, prepare_ask, print_result
    from rlm.service.ask import print_detached
    from rlm.service.server import Relay, drop_event

    args = argparse.Namespace(**dict(request.get("args") or {}))
    env = {str(k): str(v) for k, v in dict(request.get("env") or {}).items()}
    sender = Relay(lambda message: wire.send(conn, message))
    out, err = _Stream(sender, "stdout"), _Stream(sender, "stderr")
    try:
        config = service.run_config(prepare_ask(args, env, err))
    finally:
        err.flush()
    progress = None if args.quiet else Progress(err)
    submitted = service.submit(args.question, Path(args.context_path), config, sender, detach=args.detach,
                               session=args.session, on_event=progress or drop_event)
    if submitted is None:
        sender.send(service.busy_reply())
        return
    run, future = submitted
    service.watch_client(run, conn, future)
    outcome = service.outcome(run, future)
    if outcome is None:  # cancelled before it started, or the error was sent
        return
    if isinstance(outcome, str):
        print_detached(outcome, out, err)
        code = 0
    else:
        code = print_result(outcome, args.json, out, err)
    err.flush()
    out.flush()
    sender.send({"type": "exit", "code": code})

