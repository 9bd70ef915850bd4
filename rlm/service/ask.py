"""``rlm ask`` through the service: the same progress lines, result, ``--json`` and exit codes as in-process.

The question, the absolute context path and the whole run config (built from
the command's own options and environment, API key included: the socket only
admits this user) go to the service; its replies are rendered as the
in-process command renders a run: events through the same progress printer,
the result as the same :class:`~rlm.results.RunResult`. Standard input is
written to a private file under ``$RLM_HOME/tmp`` first (the service reads the
context from a file, as a run always does) and removed afterwards.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rlm.config import RLMConfig
from rlm.errors import ConfigError
from rlm.events import Event, event_from_dict
from rlm.results import RunResult
from rlm.service.client import ServiceClient

__all__ = ["ask_service"]


def ask_service(client: ServiceClient, question: str, context_path: str, config: RLMConfig,
                progress: Callable[[Event], None] | None, *, detach: bool = False) -> RunResult | None:
    """Run the question in the service; the result, or ``None`` for a detached run (its id is printed)."""
    if detach and context_path == "-":
        raise ConfigError("--detach needs the context in a file, not standard input")
    with _context_file(context_path, config.home) as path:
        request = {"question": question, "context_path": str(path), "detach": detach,
                   "config": {**config.to_dict(), "api_key": config.api_key}}

        def on_reply(reply: dict[str, Any]) -> None:
            if reply["type"] == "event" and progress is not None:
                progress(event_from_dict(reply["event"]))
            elif reply["type"] == "accepted" and detach:
                print(reply["run_id"])
                print(f"[rlm] run {reply['run_id']} goes on in the service; `rlm show {reply['run_id']}` "
                      "shows where it is", file=sys.stderr)

        reply = client.ask(request, on_reply)
    if detach:
        return None
    return RunResult.from_dict(reply["result"])


@contextmanager
def _context_file(context_path: str, home: Path) -> Iterator[Path]:
    if context_path != "-":
        yield Path(context_path).expanduser().resolve()
        return
    directory = home / "tmp"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"stdin-{secrets.token_hex(6)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            while chunk := sys.stdin.buffer.read(1 << 20):
                handle.write(chunk)
        yield path
    finally:
        path.unlink(missing_ok=True)
