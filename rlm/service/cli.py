"""``rlm serve`` and ``rlm service start|status|stop|token`` (registered through ``rlm.cli.COMMAND_MODULES``).

``rlm serve`` runs the service in the foreground (logs on stderr). ``rlm
service start`` starts it in the background (its output goes to
``$RLM_HOME/service.log``) and returns once it answers; it is idempotent.
With ``--http HOST:PORT`` the service also serves the OpenAI-compatible
endpoint and MCP over HTTP (docs/endpoints.md); the model options give the run
config of those requests.
``rlm ask`` never starts a service by itself: a resident process that holds the
run log, sandboxes and model connections is the user's choice; with one running,
``rlm ask``, ``rlm runs`` and ``rlm show`` use it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlm.errors import ConfigError

__all__ = ["register"]

START_TIMEOUT_S = 60.0


def register(subparsers: Any, add_model_options: Callable[[argparse.ArgumentParser], None]) -> None:
    serve = subparsers.add_parser("serve", help="run the resident service for RLM_HOME in the foreground")
    _serve_options(serve, add_model_options)
    serve.set_defaults(func=cmd_serve)
    service = subparsers.add_parser("service", help="start, stop or look at the resident service")
    actions = service.add_subparsers(dest="action", required=True)
    start = actions.add_parser("start", help="start the service in the background (no-op if it runs)")
    _serve_options(start, add_model_options)
    start.set_defaults(func=lambda args, env: cmd_start(args, env, _serve_argv(start, args)))
    for name, handler, text in (("status", cmd_status, "is a service running, and what is it doing"),
                                ("stop", cmd_stop, "stop the service (its runs are cancelled)"),
                                ("token", cmd_token, "print the bearer token HTTP clients send")):
        action = actions.add_parser(name, help=text)
        action.add_argument("--json", action="store_true")
        action.set_defaults(func=handler)


def _serve_options(parser: argparse.ArgumentParser,
                   add_model_options: Callable[[argparse.ArgumentParser], None]) -> None:
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="where runs' agents execute: local (threads of the service; default) or ray")
    parser.add_argument("--ray-address", help="with --executor ray: join this cluster instead of an embedded one")
    parser.add_argument("--max-running", type=int, default=8, help="runs at once (default 8)")
    parser.add_argument("--max-queued", type=int, default=64,
                        help="runs waiting beyond those; more are refused as busy (default 64)")
    parser.add_argument("--idle-timeout", type=float, help="stop after this many seconds without a request")
    http = parser.add_argument_group("HTTP endpoints (OpenAI-compatible /v1 and MCP at /mcp)")
    http.add_argument("--http", metavar="HOST:PORT", help="serve them on this address (e.g. 127.0.0.1:8765); "
                                                          "clients send the bearer token of `rlm service token`")
    http.add_argument("--http-any-interface", action="store_true",
                      help="allow --http on an address other than loopback")
    http.add_argument("--allow-path", action="append", default=[], metavar="DIR",
                      help="a directory whose files HTTP requests may name (repeatable; default: none)")
    http.add_argument("--memory", metavar="NAMESPACE", help="swarm memory namespace of HTTP and MCP runs")
    parser.add_argument("--serve-models", nargs="*", metavar="NAME",
                        help="start the models file's [serve.NAME] deployments (all, or these) on the Ray cluster "
                             "(--ray-address, else an embedded one) before taking requests; they stop with the "
                             "service")
    add_model_options(parser)


def _serve_argv(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The ``rlm serve`` options that give ``args`` again (for the background service)."""
    argv: list[str] = []
    for action in parser._actions:  # noqa: SLF001 - argparse has no public list of a parser's options
        value = getattr(args, action.dest, None)
        if not action.option_strings or value is None or value == action.default or action.dest == "help":
            continue
        flag = action.option_strings[-1] if action.option_strings[-1].startswith("--") else action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):  # noqa: SLF001
            argv.append(flag)
        elif isinstance(action, argparse._AppendAction):  # noqa: SLF001
            argv += [item for v in value for item in (flag, str(v))]
        elif isinstance(value, list):  # nargs="*": the flag, then its values (none: all)
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def _home(env: dict[str, str]) -> Path:
    from rlm.config import RLMConfig

    return RLMConfig.from_env(env).home


def _settings(args: argparse.Namespace, env: dict[str, str]) -> Any:
    from rlm.cli import config_from_args
    from rlm.service.server import ServiceSettings

    return ServiceSettings(home=_home(env), executor=args.executor,
                           ray_address=args.ray_address or env.get("RAY_ADDRESS") or None,
                           max_running=args.max_running, max_queued=args.max_queued,
                           idle_timeout_s=args.idle_timeout, http=args.http,
                           http_any_interface=args.http_any_interface,
                           allow_paths=tuple(Path(p) for p in args.allow_path),
                           run_config=config_from_args(args, env), **_serve_settings(args, env))


def _serve_settings(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """``--serve-models``: the models file's ``[serve]`` options and the names to start."""
    if args.serve_models is None:
        return {}
    from rlm.routing.spec import load_models, models_file

    path = models_file(getattr(args, "models", None), _home(env))
    if path is None:
        raise ConfigError("--serve-models needs a models file with [serve.NAME] deployments (--models FILE or "
                          "$RLM_HOME/models.toml)")
    _, options = load_models(path)
    unknown = sorted(set(args.serve_models) - set(options.deployments))
    if not options.deployments or unknown:
        raise ConfigError(f"{path}: no [serve.NAME] deployment " + (", ".join(unknown) if unknown else "to start")
                          + f" (it has: {', '.join(options.deployments) or 'none'})")
    return {"serve": options, "serve_names": tuple(args.serve_models)}


def cmd_serve(args: argparse.Namespace, env: dict[str, str]) -> int:
    import logging
    import signal

    from rlm.service.server import Service

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = _settings(args, env)
    if settings.http is not None:  # the HTTP front ends' model: a mistake fails now, not at the first request
        from rlm.preflight import check

        check(settings.run_config, env)
        if settings.run_config.sandbox.mode == "unsafe":
            print("rlm: WARNING: --unsafe-no-sandbox: code written by the model for HTTP and MCP requests runs on "
                  "this machine WITHOUT isolation", file=sys.stderr)
    service = Service(settings)
    state = service.start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: service.stop())
    http = f" and {state.http}/v1" if state.http else ""
    print(f"rlm: service {state.pid} serving {service.settings.home} on {state.socket}{http}", file=sys.stderr,
          flush=True)
    try:  # requests wait in the socket's backlog meanwhile: the first run finds its models up
        for entry in service.serve_models():
            print(f"rlm: model {entry['name']}: {entry['engine']} at {entry['api_base']}", file=sys.stderr,
                  flush=True)
    except BaseException:
        service.stop()
        service.serve_forever()  # returns at once: the service shuts down what it started
        raise
    service.serve_forever()
    print("rlm: service stopped", file=sys.stderr)
    return 0


def cmd_start(args: argparse.Namespace, env: dict[str, str], serve_argv: list[str]) -> int:
    from rlm.service.client import connect
    from rlm.service.paths import ServicePaths

    home = _home(env)
    if connect(home) is not None:
        return cmd_status(argparse.Namespace(json=False), env)
    home.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "rlm.cli", "serve", *serve_argv]
    log = ServicePaths(home).log
    with open(log, "ab") as sink:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
                                   env={**env, "RLM_HOME": str(home)}, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if connect(home) is not None:
            return cmd_status(argparse.Namespace(json=False), env)
        if process.poll() is not None:
            print(f"rlm: the service did not start (exit {process.returncode}); see {log}", file=sys.stderr)
            return 1
        time.sleep(0.05)
    print(f"rlm: the service did not answer within {START_TIMEOUT_S:g} s; see {log}", file=sys.stderr)
    return 1


def cmd_status(args: argparse.Namespace, env: dict[str, str]) -> int:
    from rlm.service.client import connect

    client = connect(_home(env))
    if client is None:
        print(json.dumps({"running": False}) if args.json else "rlm: no service running",
              file=sys.stdout if args.json else sys.stderr)
        return 3
    status = client.call({"op": "status"})
    if args.json:
        print(json.dumps({"running": True, **{k: v for k, v in status.items() if k != "type"}}))
    else:
        http = f" and {status['http']}/v1" if status.get("http") else ""
        print(f"rlm: service {status['pid']} up {status['uptime_s']:.0f} s on {status['socket']}{http}: "
              f"{status['running']} running, {status['queued']} queued ({status['executor']} executor)")
    return 0


def cmd_stop(args: argparse.Namespace, env: dict[str, str]) -> int:
    from rlm.service.client import connect
    from rlm.service.paths import ServicePaths, lock_is_held

    home = _home(env)
    client = connect(home)
    if client is None:
        print("rlm: no service running", file=sys.stderr)
        return 0
    client.call({"op": "stop"})
    deadline = time.monotonic() + 30
    while lock_is_held(ServicePaths(home).lock) and time.monotonic() < deadline:
        time.sleep(0.05)
    print(f"rlm: service {client.state.pid} stopped", file=sys.stderr)
    return 0


def cmd_token(args: argparse.Namespace, env: dict[str, str]) -> int:
    from rlm.service.paths import read_token

    token = read_token(_home(env), create=True)
    print(json.dumps({"token": token}) if args.json else token)
    return 0
