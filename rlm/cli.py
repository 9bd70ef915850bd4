"""The ``rlm`` command line. It only parses, renders and calls library functions.

Commands: ``ask`` (answer a question about a file, directory or stdin),
``runs`` (past runs, newest first), ``show`` (one run's tree).
Exit codes: 0 ok, 1 the run ended without an answer or with an error,
2 bad usage or input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from rlm.config import LOCAL_MODEL, RLMConfig, SandboxConfig
from rlm.errors import ConfigError, InputError, RLMError, SandboxUnavailable
from rlm.events import AgentStarted, CellExecuted, Event, LMCalled
from rlm.textutil import sanitize_for_terminal


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and limits")
    group.add_argument("--model", help=f"litellm model string (env RLM_MODEL; default: the embedded {LOCAL_MODEL})")
    group.add_argument("--sub-model", help="model for llm_query and child agents (env RLM_SUB_MODEL; default: --model)")
    group.add_argument("--api-base", help="base URL of an OpenAI-compatible server (env RLM_API_BASE)")
    group.add_argument("--models", metavar="FILE",
                       help="model groups and routing rules (TOML; default: $RLM_HOME/models.toml if it exists)")
    group.add_argument("--max-depth", type=int, help="deepest rlm_query recursion (default 1)")
    group.add_argument("--max-iterations", type=int, help="iterations per agent (default 20)")
    group.add_argument("--max-llm-calls", type=int, help="LM calls over the whole tree (default 200)")
    group.add_argument("--max-tokens", type=int, help="input+output tokens over the whole tree")
    group.add_argument("--max-cost", type=_positive_float, help="USD over the whole tree (known prices only)")
    group.add_argument("--timeout", type=_positive_float, help="wall-clock seconds for the whole run")
    group.add_argument("--cell-timeout", type=_positive_float, help="wall-clock seconds per REPL cell (default 120)")
    group.add_argument("--max-concurrency", type=int, help="in-flight sub-calls per batched call (default 16)")
    group.add_argument("--temperature", type=float, help="sampling temperature of every model call (default: the "
                                                         "provider's)")
    cache = group.add_mutually_exclusive_group()
    cache.add_argument("--cache", dest="cache", action="store_true", default=None,
                       help="answer a call made before (same deployment, messages, sampling) from its record; "
                            "the default at --temperature 0")
    cache.add_argument("--no-cache", dest="cache", action="store_false", help="every call goes to the model")
    group.add_argument("--unsafe-no-sandbox", action="store_true",
                       help="run model code WITHOUT bubblewrap isolation (rlimits only); dangerous")


def memory_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("swarm memory")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument("--memory", metavar="NAMESPACE", help="use (and learn into) this memory namespace")
    choice.add_argument("--no-memory", action="store_true", help="no swarm memory for this run")
    group.add_argument("--reflect", choices=("always", "success", "never"),
                       help="when to update the namespace's memories after the run (default: success)")


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    """``--executor`` (env RLM_EXECUTOR) and ``--ray-address`` (env RAY_ADDRESS)."""
    group = parser.add_argument_group("execution")
    group.add_argument("--executor", choices=("ray", "local"),
                       help="where agents run: local (threads and sandboxes of this process; the default) or ray "
                            "(a Ray cluster: the one --ray-address names, else an embedded one); default: ray "
                            "when a cluster address is given, else local; env RLM_EXECUTOR")
    group.add_argument("--ray-address", help="run on this Ray cluster (env RAY_ADDRESS)")


def service_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-service", action="store_true",
                        help="run in this process even if a service runs for RLM_HOME (env RLM_NO_SERVICE=1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlm", description="Recursive language models over inputs of any size.")
    sub = parser.add_subparsers(dest="command", required=True)
    ask = sub.add_parser("ask", help="answer a question about a file, directory, or - for stdin")
    ask.add_argument("context_path", help="file, directory, or - (stdin)")
    ask.add_argument("question")
    _model_options(ask)
    memory_options(ask)
    add_executor_options(ask)
    ask.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    ask.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    ask.add_argument("--detach", action="store_true",
                     help="with a running service: print the run id and leave the run to the service "
                          "(`rlm show RUN_ID` follows it)")
    ask.add_argument("--session", metavar="NAME",
                     help="a turn of session NAME: the REPL variables and history of its earlier questions "
                          "carry over (the service keeps it live; without one it is rebuilt from the run log)")
    service_option(ask)
    runs = sub.add_parser("runs", help="list past runs, newest first")
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument("--json", action="store_true")
    service_option(runs)
    show = sub.add_parser("show", help="show a run's tree of agents, iterations, code and outputs")
    show.add_argument("run_id", help="a run id or a unique prefix of one")
    show.add_argument("--json", action="store_true")
    show.add_argument("--max-output", type=int, default=400, help="characters of each output to show")
    service_option(show)
    for module in _command_modules():
        module.register(sub, _model_options)
    return parser


#: Modules that add sub-commands: each has ``register(subparsers, add_model_options)`` that adds its
#: parsers and sets ``func=handler(args, env) -> exit code`` on them with ``set_defaults``.
COMMAND_MODULES = ("rlm.service.cli", "rlm.service.mcp_cli", "rlm.agents.cli", "rlm.memory_cli", "rlm.models_cli",
                   "rlm.sessions_cli", "rlm.benchmarks.cli",
                   "rlm.tui.cli")


def _command_modules() -> list[Any]:
    import importlib

    modules = []
    for name in COMMAND_MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:  # the module exists but one of its imports is missing
                raise
    return modules


def config_from_args(args: argparse.Namespace, env: dict[str, str]) -> RLMConfig:
    """The run config: environment first, then command-line options."""
    sandbox = SandboxConfig(
        mode="unsafe" if getattr(args, "unsafe_no_sandbox", False) else "bwrap",
        **({"cell_timeout_s": args.cell_timeout} if getattr(args, "cell_timeout", None) else {}),
    )
    return RLMConfig.from_env(
        env, model=args.model, sub_model=args.sub_model, api_base=args.api_base, max_depth=args.max_depth,
        max_iterations=args.max_iterations, max_llm_calls=args.max_llm_calls, max_tokens=args.max_tokens,
        max_cost_usd=args.max_cost, timeout_s=args.timeout, max_concurrency=args.max_concurrency, sandbox=sandbox,
        temperature=getattr(args, "temperature", None), cache=getattr(args, "cache", None),
        memory_namespace=None if getattr(args, "no_memory", False) else getattr(args, "memory", None),
        reflect=getattr(args, "reflect", None),
        models=_models(args, env),
        **_executor_overrides(args, env),
    )


def _models(args: argparse.Namespace, env: dict[str, str]) -> Any:
    """The models file's groups (``--models``, else ``$RLM_HOME/models.toml``), or ``None``."""
    from rlm.routing.spec import load_models, models_file

    path = models_file(getattr(args, "models", None), RLMConfig.from_env(env).home)
    return load_models(path)[0] if path is not None else None


def _executor_overrides(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """In-process unless told otherwise: Ray is started or joined only when asked for or given an address."""
    if not hasattr(args, "executor"):
        return {}
    address = args.ray_address or env.get("RAY_ADDRESS") or None
    executor = args.executor or env.get("RLM_EXECUTOR") or ("ray" if address else "local")
    if executor not in ("ray", "local"):
        raise ConfigError(f"RLM_EXECUTOR must be 'ray' or 'local', not {executor!r}")
    return {"executor": executor, "ray_address": address}


class Progress:
    """One short stderr line per notable event."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __call__(self, event: Event) -> None:
        line = self._line(event)
        if line:
            print(f"[rlm] {sanitize_for_terminal(line)}", file=self.stream, flush=True)

    @staticmethod
    def _line(event: Event) -> str | None:
        if isinstance(event, AgentStarted):
            return f"agent {event.agent_id} started (depth {event.depth}, {event.model})"
        if isinstance(event, LMCalled) and not event.ok:
            return f"{event.agent_id}: LM call failed: {event.error}"
        if isinstance(event, LMCalled) and event.purpose in ("iteration", "final"):
            return f"{event.agent_id}: model replied ({event.output_tokens} tokens, {event.latency_s:.1f}s)"
        if isinstance(event, CellExecuted):
            first = event.code.strip().splitlines()[0] if event.code.strip() else ""
            status = "FINAL" if event.final else ("error" if event.error else "ok")
            return f"{event.agent_id}: ran cell [{status}] {first[:70]}"
        return None


def summary_line(result: Any) -> str:
    usage = result.usage
    cost = "unknown" if result.cost_usd is None else f"${result.cost_usd:.4f}"
    hits = f" ({usage.cache_hits} from records)" if usage.cache_hits else ""
    return (f"{result.status} | {result.iterations} iterations | {usage.llm_calls} LM calls{hits} | "
            f"{usage.input_tokens + usage.output_tokens:,} tokens ({usage.input_tokens:,} in, "
            f"{usage.output_tokens:,} out) | cost {cost} | depth {result.depth_reached} | "
            f"{result.duration_s:.1f}s | run {result.run_id}")


def cmd_ask(args: argparse.Namespace, env: dict[str, str]) -> int:
    from rlm.preflight import check

    config = config_from_args(args, env)
    check(config, env)
    if config.sandbox.mode == "unsafe":
        print("[rlm] WARNING: --unsafe-no-sandbox: model-written code runs on this machine WITHOUT isolation "
              "(no namespaces, only rlimits). Never use it with untrusted input.", file=sys.stderr)
    from rlm.local_model import uses_local_model

    if uses_local_model(config) and not args.quiet:
        from rlm.local_model import NOTICE

        print(f"[rlm] {NOTICE}", file=sys.stderr)
    from rlm.events import EventBus

    bus = EventBus()
    if not args.quiet:
        bus.subscribe(Progress(sys.stderr))
    client = service_for(args, env, config.home)
    session = getattr(args, "session", None)
    if client is not None:
        from rlm.service.ask import print_detached, remote_run

        outcome = remote_run(client, args.question, Path(args.context_path), config, bus=bus, detach=args.detach,
                             session=session)
        if isinstance(outcome, str):  # detached: the run goes on in the service
            print_detached(outcome)
            return 0
        result = outcome
    elif args.detach:
        raise ConfigError("--detach needs a running service (`rlm service start`)")
    elif session is not None:
        from rlm.sessions import Session

        with Session(session, Path(args.context_path), config) as live:
            result = live.ask(args.question, bus=bus)
    else:
        from rlm.runner import run

        result = run(args.question, Path(args.context_path), config, bus=bus)
    _print_result(result, args.json)
    return 0 if result.status == "ok" else 1


def _print_result(result: Any, as_json: bool) -> None:
    for warning in result.warnings:
        print(f"[rlm] warning: {warning}", file=sys.stderr)
    if as_json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    print(sanitize_for_terminal(result.answer or "(no answer)"))
    print(f"[rlm] {summary_line(result)}", file=sys.stderr)
    if result.error:
        print(f"[rlm] error: {sanitize_for_terminal(result.error)}", file=sys.stderr)


def service_for(args: argparse.Namespace, env: dict[str, str], home: Path) -> Any:
    """The running service of ``home`` to send this command to, unless ``--no-service``; else ``None``."""
    if getattr(args, "no_service", False) or env.get("RLM_NO_SERVICE"):
        return None
    from rlm.service.client import connect

    return connect(home)


def _open_log(env: dict[str, str]) -> Any:
    """The run log (runs still only in journals are stored or merged by the open), or None if there is none."""
    from rlm.runlog import RunLog
    from rlm.runlog.journal import journal_paths

    config = RLMConfig.from_env(env)
    if not config.runlog_path.exists() and not journal_paths(config.runlog_path):
        return None
    return RunLog(config.runlog_path)


def cmd_runs(args: argparse.Namespace, env: dict[str, str]) -> int:
    return _view(args, env, {"op": "runs", "limit": args.limit, "json": args.json})


def cmd_show(args: argparse.Namespace, env: dict[str, str]) -> int:
    return _view(args, env, {"op": "show", "run_id": args.run_id, "max_output": args.max_output, "json": args.json})


def _view(args: argparse.Namespace, env: dict[str, str], request: dict[str, Any]) -> int:
    """``rlm runs`` / ``rlm show``: from the service's log while one runs, else from the log itself."""
    client = service_for(args, env, RLMConfig.from_env(env).home)
    if client is not None:
        reply = client.call(request)
        stdout, stderr = str(reply.get("stdout") or ""), str(reply.get("stderr") or "")
    else:
        from rlm.views import runs_view, show_view

        log = _open_log(env)
        try:
            if request["op"] == "runs":
                stdout, stderr = runs_view(log, request["limit"], request["json"])
            else:
                stdout, stderr = show_view(log, request["run_id"], request["max_output"], request["json"])
        finally:
            if log is not None:
                log.close()
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    return 0


COMMANDS = {"ask": cmd_ask, "runs": cmd_runs, "show": cmd_show}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that a run ends as on Ctrl-C (recorded, cleaned up)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = dict(os.environ)
    handler = getattr(args, "func", None) or COMMANDS[args.command]
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return handler(args, env)
    except RLMError as exc:
        print(f"rlm: error: {exc}", file=sys.stderr)
        if getattr(args, "json", False) and args.command == "ask":
            print(json.dumps({"answer": None, "run_id": None, "status": "error", "error": str(exc)}))
        code = getattr(exc, "exit_code", None)  # an error the service reported carries the command's code
        if isinstance(code, int):
            return code
        return 2 if isinstance(exc, (InputError, ConfigError, SandboxUnavailable)) else 1
    except Terminated:
        print("rlm: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("rlm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
