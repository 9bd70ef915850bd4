"""``rlm models``: the model groups and deployments, their health, and Serve deployments on the cluster.

::

    rlm models [list] [--models FILE] [--json] [--no-check] [--days N]
        groups, deployments (window, order, tokenizer, node), health, per-deployment totals over recent runs
    rlm models status [--models FILE] [--ray-address A] [--json]
        the Serve deployments of a cluster: status, replicas, node of each, queue
    rlm models serve [NAME ...] [--models FILE] [--ray-address A]
        start the models file's [serve.NAME] deployments on the cluster (without an address: an embedded
        cluster, served until Ctrl-C)

Registered through ``rlm.cli.COMMAND_MODULES``; the work is in :mod:`rlm.routing.report`
and :mod:`rlm.agents.serving`. Exit codes: 0 ok, 2 a bad models file, 1 other errors.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from rlm.config import RLMConfig
from rlm.errors import ConfigError, RLMError

__all__ = ["register"]


def register(subparsers: Any, add_model_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``rlm models`` and its sub-commands."""
    models = subparsers.add_parser("models", help="model groups and deployments: list, status, serve")
    _list_options(models)
    models.set_defaults(func=cmd_list)
    actions = models.add_subparsers(dest="models_command")
    _list_options(actions.add_parser("list", help="groups, deployments, health, totals over recent runs"))
    status = actions.add_parser("status", help="Serve deployments on the cluster: replicas, nodes, queues")
    _common(status)
    status.add_argument("--ray-address", help="the cluster (env RAY_ADDRESS)")
    status.set_defaults(func=cmd_status)
    serve = actions.add_parser("serve", help="start the models file's [serve.NAME] deployments on the cluster")
    _common(serve)
    serve.add_argument("names", nargs="*", help="only these deployments (default: all)")
    serve.add_argument("--ray-address", help="the cluster (env RAY_ADDRESS); without one, an embedded cluster "
                                             "serves until Ctrl-C")
    serve.set_defaults(func=cmd_serve)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", metavar="FILE", help="the models file (default: $RLM_HOME/models.toml)")
    parser.add_argument("--json", action="store_true")


def _list_options(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--no-check", action="store_true", help="do not probe the deployments")
    parser.add_argument("--days", type=float, default=7.0, help="totals over the runs of the last N days (7)")
    parser.set_defaults(func=cmd_list)


def _load(args: argparse.Namespace, env: dict[str, str]) -> tuple[RLMConfig, Any]:
    """The config (with the models file's groups) and the file's ``[serve]`` options."""
    from rlm.routing.spec import ServeOptions, load_models, models_file

    base = RLMConfig.from_env(env)
    path = models_file(getattr(args, "models", None), base.home)
    if path is None:
        return base, ServeOptions()
    spec, serve = load_models(path)
    return RLMConfig.from_env(env, models=spec), serve


def cmd_list(args: argparse.Namespace, env: dict[str, str]) -> int:
    from rlm.routing.report import models_view

    config, _ = _load(args, env)
    stdout, stderr = models_view(config, _totals(config, args.days), as_json=args.json, check=not args.no_check,
                                 days=args.days)
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    return 0


def _totals(config: RLMConfig, days: float) -> list[Any] | None:
    """Per-deployment totals from the run log (``None`` when it cannot be opened, e.g. a service holds it)."""
    from rlm.runlog import RunLog
    from rlm.runlog.journal import journal_paths

    if not config.runlog_path.exists() and not journal_paths(config.runlog_path):
        return []
    try:
        with RunLog(config.runlog_path) as log:
            return log.deployment_totals(time.time() - days * 86400)
    except RLMError:
        return None


def _connect(args: argparse.Namespace, env: dict[str, str], config: RLMConfig, *, embedded_ok: bool) -> Any:
    import dataclasses

    from rlm.agents.cluster import ensure_ray

    address = args.ray_address or env.get("RAY_ADDRESS") or None
    if address is None and not embedded_ok:
        raise ConfigError("give the cluster that runs the deployments: --ray-address ADDRESS (or RAY_ADDRESS)")
    return ensure_ray(dataclasses.replace(config, ray_address=address))


def cmd_status(args: argparse.Namespace, env: dict[str, str]) -> int:
    from rlm.agents.serving import serve_status
    from rlm.routing.report import serve_view

    config, serve = _load(args, env)
    _connect(args, env, config, embedded_ok=False)
    rows = serve_status()
    stats = {row["deployment"]: _sample_stats(serve.api_base(row["deployment"]), len(row["replicas"]))
             for row in rows}
    stdout, stderr = serve_view(rows, stats, args.json)
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    return 0


def _sample_stats(api_base: str, replicas: int) -> list[dict[str, Any]]:
    """The replicas' own stats (node, queue, served), sampled through the proxy: each request reaches one replica."""
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(max(1, 3 * replicas)):
        try:
            import urllib.request  # only this command needs it: every other command builds this parser too

            with urllib.request.urlopen(api_base + "/rlm/stats", timeout=2) as response:
                data = json.load(response)
        except (OSError, ValueError):  # urllib's URLError is an OSError
            break  # a vLLM deployment has no such route; a down one does not answer
        if isinstance(data, dict) and data.get("replica"):
            seen[str(data["replica"])] = data
        if len(seen) >= replicas:
            break
    return list(seen.values())


def cmd_serve(args: argparse.Namespace, env: dict[str, str]) -> int:
    from rlm.agents.serving import serve_models, wait_running

    config, serve = _load(args, env)
    address = args.ray_address or env.get("RAY_ADDRESS")
    _connect(args, env, config, embedded_ok=True)
    started = serve_models(serve, args.names or None)
    wait_running([entry["name"] for entry in started])  # their addresses are printed once they answer
    for entry in started:
        print(f"{entry['name']}: {entry['engine']} at {entry['api_base']}", flush=True)
    if address:
        return 0  # the deployments live on in the cluster
    print("serving on an embedded cluster until Ctrl-C", file=sys.stderr, flush=True)
    return _wait_for_signal()


def _wait_for_signal() -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    from ray import serve

    serve.shutdown()  # type: ignore[no-untyped-call]  # Ray Serve leaves shutdown() unannotated
    return 0
