"""``rlm tui [PATH]``: the sub-command that starts the Textual app.

It takes the same model and limit options (and ``RLM_*`` environment
variables) as ``rlm ask``; they can be changed inside the app too (F2).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlm.config import RLMConfig


def register(subparsers: Any, add_model_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the ``tui`` sub-command to the ``rlm`` parser."""
    parser = subparsers.add_parser("tui", help="interactive terminal UI: a document, a question, the live agent tree")
    parser.add_argument("path", nargs="?", help="file or directory to open (optional: ctrl+o opens one in the app)")
    add_model_options(parser)
    memory = parser.add_argument_group("swarm memory").add_mutually_exclusive_group()
    memory.add_argument("--memory", metavar="NAMESPACE", help="use (and learn into) this memory namespace; "
                        "the memory tab shows it")
    memory.add_argument("--no-memory", action="store_true", help="no swarm memory for runs started here")
    from rlm.cli import service_option

    service_option(parser)
    parser.set_defaults(func=handle)


def config_for(args: argparse.Namespace, env: dict[str, str]) -> RLMConfig:
    """The config ``rlm ask`` would build from these options, with the memory namespace applied."""
    from rlm.cli import config_from_args

    config = config_from_args(args, env)
    namespace = None if args.no_memory else args.memory
    return dataclasses.replace(config, memory_namespace=namespace) if namespace != config.memory_namespace else config


def handle(args: argparse.Namespace, env: dict[str, str]) -> int:
    """Build the config like ``rlm ask`` does and run the app until the user quits."""
    from rlm.cli import service_for
    from rlm.tui.app import RLMApp

    config = config_for(args, env)
    app = RLMApp(config=config, path=Path(args.path) if args.path else None,
                 service=service_for(args, env, config.home))
    app.run()
    return 0
