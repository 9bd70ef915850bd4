"""``rlm mcp``: rlm as an MCP server on standard input and output (registered through ``rlm.cli.COMMAND_MODULES``).

For MCP clients that start their servers as commands (Claude Desktop, Claude
Code, Cursor, agent frameworks). With a service running for RLM_HOME the
session is relayed to it over its socket: runs use the service's warm
sandboxes, run log and memory, and this process imports nothing heavier than
the standard library. With none (or ``--no-service``) the server runs in this
process (:mod:`rlm.service.mcp_server`). Either way only MCP messages are
written to standard output; everything else goes to standard error.

The model options give the run config of the session's runs. Files: any file
the user can read may be named (as with ``rlm ask``), unless ``--allow-path``
restricts the session to some directories.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any
from collections.abc import Callable

__all__ = ["register"]


def register(subparsers: Any, add_model_options: Callable[[argparse.ArgumentParser], None]) -> None:
    parser = subparsers.add_parser("mcp", help="serve rlm to an MCP client on stdin/stdout "
                                               "(through the running service when there is one)")
    add_model_options(parser)
    parser.add_argument("--memory", metavar="NAMESPACE", help="swarm memory namespace of the session's runs "
                                                              "(also turns on the memory_search/memory_add tools)")
    parser.add_argument("--allow-path", action="append", metavar="DIR",
                        help="only files under this directory may be named (repeatable; default: any file you "
                             "can read)")
    parser.add_argument("--no-service", action="store_true",
                        help="serve in this process even if a service runs for RLM_HOME (env RLM_NO_SERVICE=1)")
    parser.set_defaults(func=cmd_mcp)


def cmd_mcp(args: argparse.Namespace, env: dict[str, str]) -> int:
    import logging

    from rlm.cli import config_from_args
    from rlm.preflight import check

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    config = config_from_args(args, env)
    check(config, env)
    if not (args.no_service or env.get("RLM_NO_SERVICE")):
        from rlm.service.client import connect

        client = connect(config.home)
        if client is not None:
            request = {"op": "mcp", "config": {**config.to_dict(), "api_key": config.api_key},
                       "allow_paths": None if args.allow_path is None else [str(p) for p in args.allow_path]}
            return relay(client.state.socket, request)
    from rlm.service.access import AllowedRoots
    from rlm.service.mcp_server import LocalBackend, serve_stdio

    roots = (AllowedRoots(everything=True) if args.allow_path is None
             else AllowedRoots.of([Path(p) for p in args.allow_path]))
    serve_stdio(LocalBackend(config, roots))
    return 0


def relay(socket_path: str, request: dict[str, Any]) -> int:
    """Open an MCP session in the service and copy bytes: stdin to it, it to stdout, until it ends."""
    from rlm.service import wire

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(socket_path)
        wire.send(sock, request)
        reply = _reply(sock)
        if reply.get("type") != "mcp":
            print(f"rlm: error: the service refused the MCP session: {reply.get('message') or reply}", file=sys.stderr)
            return int(reply.get("exit") or 1)
        threading.Thread(target=_copy_stdin, args=(sock,), name="rlm-mcp-stdin", daemon=True).start()
        while data := sock.recv(1 << 16):
            _write_all(sys.stdout.fileno(), data)
    return 0


def _reply(sock: socket.socket) -> dict[str, Any]:
    """The service's one-line answer, read byte by byte: what follows it is the session's."""
    import json

    line = bytearray()
    while not line.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            raise OSError("the service closed the connection")
        line += byte
    reply: dict[str, Any] = json.loads(line)
    return reply


def _copy_stdin(sock: socket.socket) -> None:
    try:
        while data := os.read(sys.stdin.fileno(), 1 << 16):
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)  # the client is done: the service ends the session
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
