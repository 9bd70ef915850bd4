"""``rlm chat``, ``rlm sessions``, ``rlm replay``, ``rlm resume`` and ``rlm fork``: conversations and reruns.

``rlm chat FILE`` asks the questions typed on standard input, one per line, as
turns of one session (``--session NAME`` continues or names it; an empty line
or ``/quit`` ends). ``rlm replay RUN_ID`` re-executes a run from its records
(zero model calls) and says whether its cells, outputs and answer are the
recorded ones; ``rlm resume RUN_ID`` continues a run that was killed, its
finished work answered from the records; ``rlm fork RUN_ID --at N "question"``
asks a new question from iteration N of a run's root. With a service running
for the ``RLM_HOME`` they go through it (it keeps chat sessions live).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlm.config import RLMConfig
from rlm.errors import InputError
from rlm.events import CellExecuted, EventBus
from rlm.results import RunResult

__all__ = ["register", "cmd_chat", "cmd_rerun", "cmd_sessions", "compare_cells", "local_rerun"]

QUIT = ("/quit", "/exit")


def register(subparsers: Any, add_model_options: Callable[[argparse.ArgumentParser], None]) -> None:
    from rlm.cli import service_option

    chat = subparsers.add_parser("chat", help="ask questions about a file, one per line, as turns of a session")
    chat.add_argument("context_path", help="file, directory, or - (stdin: then questions come from the terminal)")
    chat.add_argument("--session", metavar="NAME", help="the session to continue or start (default: a new name)")
    add_model_options(chat)
    service_option(chat)
    chat.set_defaults(func=cmd_chat)
    sessions = subparsers.add_parser("sessions", help="list the saved sessions")
    sessions.add_argument("--json", action="store_true")
    sessions.set_defaults(func=cmd_sessions)
    for mode, text in (("replay", "re-execute a run from its records: zero model calls, same cells and answer"),
                       ("resume", "continue a killed run: its finished work answered from its records"),
                       ("fork", "ask a new question from an iteration of a run's root")):
        parser = subparsers.add_parser(mode, help=text)
        parser.add_argument("run_id", help="a run id or a unique prefix of one")
        if mode == "fork":
            parser.add_argument("question")
            parser.add_argument("--at", type=int, required=True, metavar="ITERATION",
                                help="the root's iteration to start from (0: before its first reply)")
            add_model_options(parser)
        parser.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
        parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
        service_option(parser)
        parser.set_defaults(func=cmd_rerun, mode=mode)


def _config(args: argparse.Namespace, env: dict[str, str]) -> RLMConfig:
    from rlm.cli import config_from_args

    return config_from_args(args, env) if hasattr(args, "max_depth") else RLMConfig.from_env(env)


def _bus(quiet: bool) -> EventBus:
    from rlm.cli import Progress

    bus = EventBus()
    if not quiet:
        bus.subscribe(Progress(sys.stderr))
    return bus


# -- rlm chat ------------------------------------------------------------------------------------
def cmd_chat(args: argparse.Namespace, env: dict[str, str]) -> int:
    from rlm.cli import print_result, service_for
    from rlm.sessions import new_session_name

    config = _config(args, env)
    name = args.session or new_session_name()
    print(f"[rlm] session {name}: one question per line; an empty line or /quit ends "
          f"(continue later with `rlm ask --session {name} ...`)", file=sys.stderr)
    client = service_for(args, env, config.home)
    ask = _remote_asker(client, name, Path(args.context_path), config) if client is not None else None
    live = None
    if ask is None:
        from rlm.sessions import Session

        live = Session(name, Path(args.context_path), config)
        ask = lambda question: live.ask(question, bus=_bus(False))  # noqa: E731
    try:
        for question in _questions(args.context_path == "-"):
            print_result(ask(question), False)
    finally:
        if live is not None:
            live.close()
    return 0


def _remote_asker(client: Any, name: str, context: Path, config: RLMConfig) -> Callable[[str], RunResult]:
    from rlm.service.ask import remote_run

    def ask(question: str) -> RunResult:
        result = remote_run(client, question, context, config, bus=_bus(False), session=name)
        assert isinstance(result, RunResult)
        return result

    return ask


def _questions(from_terminal: bool) -> Any:
    # Closed in the finally below, unless it is stdin (not ours to close).
    stream = open("/dev/tty", encoding="utf-8") if from_terminal else sys.stdin  # noqa: SIM115
    try:
        while True:
            print("? ", end="", file=sys.stderr, flush=True)
            line = stream.readline()
            question = line.strip()
            if not line or not question or question in QUIT:
                return
            yield question
    finally:
        if stream is not sys.stdin:
            stream.close()


# -- rlm sessions ---------------------------------------------------------------------------------
def cmd_sessions(args: argparse.Namespace, env: dict[str, str]) -> int:
    from rlm.sessions import list_sessions

    states = list_sessions(RLMConfig.from_env(env).home)
    if args.json:
        print(json.dumps([{"name": s.name, "turns": len(s.turns), "source": s.context.get("source"),
                           "updated_at": s.updated_at} for s in states], ensure_ascii=False))
        return 0
    for state in states:
        last = state.turns[-1]["question"] if state.turns else ""
        print(f"{state.name}  {len(state.turns):>3} turns  {state.context.get('source') or ''}  {last[:50]}")
    if not states:
        print("no sessions yet", file=sys.stderr)
    return 0


# -- rlm replay / resume / fork ------------------------------------------------------------------------
def cmd_rerun(args: argparse.Namespace, env: dict[str, str]) -> int:
    from rlm.cli import print_result, service_for

    config = _config(args, env)
    bus = _bus(args.quiet)
    cells: list[CellExecuted] = []
    bus.subscribe(lambda e: cells.append(e) if isinstance(e, CellExecuted) else None)
    client = service_for(args, env, config.home)
    request = {"run_id": args.run_id, "mode": args.mode, "question": getattr(args, "question", None),
               "at": getattr(args, "at", None)}
    if client is not None:
        from rlm.service.ask import remote_rerun

        result, recorded = remote_rerun(client, request, config, bus=bus)
    else:
        result, recorded = local_rerun(request, config, bus)
    report = compare_cells(recorded, cells, result) if args.mode == "replay" else None
    print_result(result, args.json)
    if report is not None and not args.json:
        print(f"[rlm] replay of {args.run_id}: {report}", file=sys.stderr)
    if report is not None:  # a replay succeeds when it matches the recorded run, however that run ended
        return 0 if report.startswith("identical") else 1
    return 0 if result.status == "ok" else 1


def local_rerun(request: dict[str, Any], config: RLMConfig, bus: EventBus) -> tuple[RunResult, dict[str, Any]]:
    """A rerun in this process: the run log read for a moment, then the run (recorded in a journal)."""
    from rlm.reruns import load_chain, recorded_outcome, rerun, workspace
    from rlm.runlog import RunLog

    if not config.runlog_path.exists():
        raise InputError("no run log yet: run `rlm ask` first")
    with RunLog(config.runlog_path) as log:
        chain = load_chain(log, str(request["run_id"]))
        recorded = recorded_outcome(log, chain.target.run_id)
    with workspace(config.home) as workdir:
        result = rerun(chain, str(request["mode"]), config, workdir, question=request.get("question"),
                       at=request.get("at"), bus=bus)
    return result, recorded


def compare_cells(recorded: dict[str, Any], cells: list[CellExecuted], result: RunResult) -> str:
    """``identical (...)`` when the replay ran the recorded cells with the recorded outputs and answer."""
    if result.status == "diverged":
        return f"diverged: {result.error}"
    now = {(c.agent_id, c.iteration, c.index): (c.code, c.stdout, c.stderr, c.error) for c in cells}
    then = {(c["agent_id"], c["iteration"], c["index"]): (c["code"], c["stdout"], c["stderr"], c["error"])
            for c in recorded["cells"]}
    differing = sorted(key for key in now.keys() | then.keys() if now.get(key) != then.get(key))
    if differing:
        agent, iteration, index = differing[0]
        return f"differs: {len(differing)} cell(s), the first {agent} iteration {iteration} block {index + 1}"
    if (result.answer, result.status) != (recorded["answer"], recorded["status"]):
        return f"differs: answer {result.answer!r} ({result.status}), recorded {recorded['answer']!r}"
    return (f"identical ({len(now)} cells, the same answer, {result.usage.paid_calls} model calls made, "
            f"{result.usage.cache_hits} answered from the records)")
