"""The ``rlm`` command line. It only parses, renders and calls library functions.

Commands: ``ask`` (answer a question about a file, directory or stdin),
``runs`` (past runs, newest first), ``show`` (one run's tree).
Exit codes: 0 ok, 1 the run ended without an answer or with an error,
2 bad usage or input.

With a service running for RLM_HOME, ``ask``, ``runs`` and ``show`` only parse
and relay: the service builds the config, checks it, runs, and renders what
the command prints (:mod:`rlm.service.commands`). So this module imports only
the standard library and :mod:`rlm.errors` at the top; everything a command
run in this process needs is imported where it is used.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rlm.defaults import LOCAL_MODEL, home_from_env
from rlm.errors import ConfigError, InputError, RLMError, SandboxUnavailable

if TYPE_CHECKING:
    from rlm.config import RLMConfig
    from rlm.events import Event
    from rlm.results import RunResult
    from rlm.service.client import ServiceClient


class Writer(Protocol):
    """Where a command prints: ``sys.stdout``/``sys.stderr``, or the service's relay to a client."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


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


def build_parser(*, core_only: bool = False) -> argparse.ArgumentParser:
    """The whole command line; with ``core_only``, only ``ask``, ``runs`` and ``show`` (what :func:`main` parses
    those commands with: the other commands' modules are not imported)."""
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
    for module in [] if core_only else _command_modules():
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
    from rlm.config import RLMConfig, SandboxConfig

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

    path = models_file(getattr(args, "models", None), home_from_env(env))
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
            from rlm.textutil import sanitize_for_terminal

            print(f"[rlm] {sanitize_for_terminal(line)}", file=self.stream, flush=True)

    @staticmethod
    def _line(event: Event) -> str | None:
        from rlm.events import AgentStarted, CellExecuted, LMCalled

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


def prepare_ask(args: argparse.Namespace, env: dict[str, str], err: Writer | None = None) -> RLMConfig:
    """``rlm ask``'s config, checked before the run (:mod:`rlm.preflight`), with its warnings printed to ``err``."""
    from rlm.local_model import NOTICE, uses_local_model
    from rlm.preflight import check

    err = err or sys.stderr
    config = config_from_args(args, env)
    check(config, env)
    if config.sandbox.mode == "unsafe":
        print("[rlm] WARNING: --unsafe-no-sandbox: model-written code runs on this machine WITHOUT isolation "
              "(no namespaces, only rlimits). Never use it with untrusted input.", file=err)
    if uses_local_model(config) and not args.quiet:
        print(f"[rlm] {NOTICE}", file=err)
    return config


def cmd_ask(args: argparse.Namespace, env: dict[str, str]) -> int:
    client = service_for(args, env, home_from_env(env))
    if client is not None:  # the service checks, runs and renders; this process relays
        return client.command("ask", args, env, sys.stdout, sys.stderr)
    if args.detach:
        raise ConfigError("--detach needs a running service (`rlm service start`)")
    config = prepare_ask(args, env)
    from rlm.events import EventBus

    bus = EventBus()
    if not args.quiet:
        bus.subscribe(Progress(sys.stderr))
    session = getattr(args, "session", None)
    freeze_imports()
    if session is not None:
        from rlm.sessions import Session

        with Session(session, Path(args.context_path), config) as live:
            result = live.ask(args.question, bus=bus)
    else:
        from rlm.runner import run

        result = run(args.question, Path(args.context_path), config, bus=bus)
    return print_result(result, args.json)


def freeze_imports() -> None:
    """Before a run in this process: the run's modules imported, and everything loaded so far frozen out of the
    cyclic garbage collector (it lives until the process exits). A collection during a big fan-out then walks
    only the run's own objects; walking them all stalled every call in flight, and a fan-out's waves drifted
    apart."""
    import gc

    import rlm.runner  # noqa: F401 - imported for its side effect: loaded before the freeze

    gc.freeze()


def print_result(result: RunResult, as_json: bool, out: Writer | None = None, err: Writer | None = None) -> int:
    """Print a run's answer (or its JSON) and summary as ``rlm ask`` does; the command's exit code."""
    from rlm.textutil import sanitize_for_terminal

    out, err = out or sys.stdout, err or sys.stderr
    for warning in result.warnings:
        print(f"[rlm] warning: {warning}", file=err)
    if as_json:
        import json

        print(json.dumps(result.to_dict(), ensure_ascii=False), file=out)
    else:
        print(sanitize_for_terminal(result.answer or "(no answer)"), file=out)
        print(f"[rlm] {summary_line(result)}", file=err)
        if result.error:
            print(f"[rlm] error: {sanitize_for_terminal(result.error)}", file=err)
    return 0 if result.status == "ok" else 1


def service_for(args: argparse.Namespace, env: dict[str, str], home: Path) -> ServiceClient | None:
    """The running service of ``home`` to send this command to, unless ``--no-service``; else ``None``."""
    if getattr(args, "no_service", False) or env.get("RLM_NO_SERVICE"):
        return None
    from rlm.service.client import connect
    from rlm.service.wire import PROTOCOL

    client = connect(home)
    if client is not None and client.state.protocol != PROTOCOL:
        raise ConfigError(f"the service running for {home} (pid {client.state.pid}) is from another version of rlm "
                          f"(protocol {client.state.protocol}; this command speaks {PROTOCOL}): restart it "
                          "(`rlm service stop`, then `rlm service start`), or add --no-service")
    return client


def _open_log(env: dict[str, str]) -> Any:
    """The run log (runs still only in journals are stored or merged by the open), or None if there is none."""
    from rlm.config import RLMConfig
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
    client = service_for(args, env, home_from_env(env))
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
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(core_only=bool(argv) and argv[0] in COMMANDS).parse_args(argv)
    env = dict(os.environ)
    handler = getattr(args, "func", None) or COMMANDS[args.command]
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return handler(args, env)
    except RLMError as exc:
        print(f"rlm: error: {exc}", file=sys.stderr)
        if getattr(args, "json", False) and args.command == "ask":
            import json

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
