"""Replay, resume and fork a recorded run: its question asked again, its recorded calls answering first.

One mechanism (:mod:`rlm.records`): a run's cells execute for real in fresh
sandboxes (that rebuilds the REPL state), and every model call, the root's own
turns, sub-calls and children's calls alike, is answered from the run's records
by its request key. What happens to a request without a record is the mode:

``replay``
    the run stops with status ``diverged`` and :attr:`RunResult.error` says at
    which call; nothing is sent (a replay makes zero model calls);
``resume``
    the call goes to the provider, and so does the rest of the run: a run killed
    at any point (``kill -9``, a crash) continues where its records end;
``fork``
    the run is replayed up to iteration ``at`` of its root, then the root is asked
    a new question with everything it had then (its messages and REPL).

A session's turn (``origin="turn"``) and a fork continue a conversation: to
replay one, its predecessors are rebuilt first, each replayed from its own
records without being recorded (:func:`rebuild`). Each rerun is a new run whose
``RunStarted`` names the run it comes from (``parent_run_id``, ``origin``).

The input must be the one the run had: :func:`rlm.contexts.restore` checks it.
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm.config import RLMConfig
from rlm.contexts import restore
from rlm.conversation import Conversation, RunPlan
from rlm.errors import InputError
from rlm.inputs import ContextPayload
from rlm.records import DIVERGED, Recorded, ReplayDiverged
from rlm.results import RunResult
from rlm.runner import run

if TYPE_CHECKING:
    from rlm.runlog.queries import RunQueries
    from rlm.runlog.schema import RunSummary

__all__ = ["RecordedRun", "Chain", "Step", "MODES", "load_chain", "rebuild", "rerun", "workspace", "recorded_outcome"]

#: What a rerun does with a request it has no record of (see the module docstring).
MODES = ("replay", "resume", "fork")


@dataclass(frozen=True)
class RecordedRun:
    """A run as the log holds it: its summary and its successful calls (key, reply), in order."""

    summary: RunSummary
    calls: tuple[tuple[str, Recorded], ...]

    @property
    def run_id(self) -> str:
        return self.summary.run_id

    def config(self, base: RLMConfig, *, record: bool) -> RLMConfig:
        """The run's recorded config, with ``base``'s home and API key (never recorded), on the local executor
        (every call must pass the records, which live in this process)."""
        recorded = RLMConfig.from_dict({**(self.summary.config or {}), "home": str(base.home)})
        return dataclasses.replace(recorded, api_key=base.api_key, executor="local", ray_address=None,
                                   record_run=record)


@dataclass(frozen=True)
class Step:
    """A predecessor replayed to rebuild a conversation (``stop_after``: a fork's parent, to that iteration)."""

    run: RecordedRun
    stop_after: int | None = None


@dataclass(frozen=True)
class Chain:
    """A run and what rebuilds the conversation its root continued: ``named`` is ``None`` for a run of its own."""

    target: RecordedRun
    steps: tuple[Step, ...] = ()
    named: bool | None = None


def _load(runs: RunQueries, run_id: str) -> RecordedRun:
    from rlm.runlog.recorded import prior_calls

    summary = runs.get_run(run_id)
    return RecordedRun(summary, tuple(prior_calls(runs, summary.run_id)))


def load_chain(runs: RunQueries, run_id: str) -> Chain:
    """The run ``run_id`` (or a unique prefix) with its predecessors, read from ``runs`` now."""
    target = _load(runs, run_id)
    steps, named = _predecessors(runs, target.summary)
    return Chain(target, tuple(steps), named)


def _predecessors(runs: RunQueries, summary: RunSummary) -> tuple[list[Step], bool | None]:
    """The runs to replay before ``summary``'s, oldest first, and whether its conversation was a session's."""
    origin, parent = summary.origin, summary.parent_run_id
    if origin in ("replay", "resume") and parent:
        return _predecessors(runs, runs.get_run(parent))
    if origin == "turn":
        if not parent or (summary.turn or 1) <= 1:
            return [], True
        previous = _load(runs, parent)
        steps, named = _predecessors(runs, previous.summary)
        return [*steps, Step(previous)], True if named is None else named
    if origin == "fork" and parent:
        forked = _load(runs, parent)
        steps, named = _predecessors(runs, forked.summary)
        return [*steps, Step(forked, summary.fork_at)], bool(named)
    return [], None


def recorded_outcome(runs: RunQueries, run_id: str) -> dict[str, Any]:
    """What a replay is compared with: the run's answer, status and cells (JSON-able)."""
    summary = runs.get_run(run_id)
    return {"answer": summary.answer, "status": summary.status,
            "cells": [{"agent_id": c.agent_id, "iteration": c.iteration, "index": c.cell_index, "code": c.code,
                       "stdout": c.stdout, "stderr": c.stderr, "error": c.error} for c in runs.cells(run_id)]}


@contextmanager
def workspace(home: Path) -> Iterator[Path]:
    """A directory for the inputs a rerun restores, removed afterwards."""
    path = home / "tmp" / f"rerun-{secrets.token_hex(6)}"
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class _Payloads:
    """Each recorded input restored once per rerun."""

    def __init__(self, home: Path, workdir: Path) -> None:
        self.home, self.workdir = home, workdir
        self._done: dict[str, ContextPayload] = {}

    def of(self, recorded: RecordedRun) -> ContextPayload:
        identity = (recorded.summary.context_info or {}).get("identity") or {}
        key = repr(sorted(identity.items()))
        if key not in self._done:
            self._done[key] = restore(identity, self.home, self.workdir, run_id=recorded.run_id)
        return self._done[key]


def rebuild(chain: Chain, base: RLMConfig, payloads: Callable[[RecordedRun], ContextPayload]) -> Conversation | None:
    """The conversation ``chain.target``'s root continued, rebuilt by replaying its predecessors (not recorded).

    Raises :class:`ReplayDiverged` when a predecessor does not replay.
    """
    if chain.named is None and not chain.steps:
        return None
    conversation = Conversation(named=bool(chain.named))
    try:
        for step in chain.steps:
            plan = RunPlan(origin="rebuild", parent_run_id=step.run.run_id, prior=step.run.calls, strict=True,
                           conversation=conversation, stop_after=step.stop_after)
            result = run(step.run.summary.question or "", payloads(step.run), step.run.config(base, record=False),
                         plan=plan)
            if result.status == DIVERGED:
                raise ReplayDiverged(f"rebuilding run {step.run.run_id}: {result.error}")
    except BaseException:
        conversation.close()
        raise
    return conversation


def rerun(chain: Chain, mode: str, base: RLMConfig, workdir: Path, *, question: str | None = None,
          at: int | None = None, **run_options: Any) -> RunResult:
    """Replay, resume or fork ``chain.target`` (see the module docstring); a new run, recorded.

    ``question`` and ``at`` are a fork's new question and the iteration of the root it starts from.
    ``run_options`` go to :func:`rlm.runner.run` (``bus``, ``on_start``, ``record``, ``executor``...).
    """
    target = chain.target
    if mode not in MODES:
        raise InputError(f"unknown rerun mode {mode!r} (one of {', '.join(MODES)})")
    if not target.calls and (target.summary.llm_calls or 0) > 0:
        raise InputError(f"run {target.run_id} has no recorded calls to answer from (it was recorded by an older "
                         "rlm, without request keys)")
    payloads = _Payloads(base.home, workdir).of
    if mode == "fork":
        if not question or not question.strip():
            raise InputError("a fork needs a new question")
        chain = Chain(target, (*chain.steps, Step(target, _fork_point(target, at))), bool(chain.named))
    conversation = rebuild(chain, base, payloads)
    try:
        plan = _plan(target, mode, conversation, at)
        asked = question if mode == "fork" and question else target.summary.question or ""
        return run(asked, payloads(target), _config(target, base, mode), plan=plan, **run_options)
    finally:
        if conversation is not None:
            conversation.close()


def _fork_point(target: RecordedRun, at: int | None) -> int:
    if at is None or at < 0:
        raise InputError("--at must be an iteration of the run's root, 0 or more")
    if at > (target.summary.iterations or 0):
        raise InputError(f"run {target.run_id}'s root has {target.summary.iterations or 0} iterations: "
                         f"--at {at} is past its end")
    return at


def _config(target: RecordedRun, base: RLMConfig, mode: str) -> RLMConfig:
    """A replay or resume runs with the recorded config; a fork with the caller's limits on the recorded models."""
    recorded = target.config(base, record=base.record_run)
    if mode != "fork":
        return recorded
    return dataclasses.replace(recorded, max_iterations=base.max_iterations, max_llm_calls=base.max_llm_calls,
                               max_tokens=base.max_tokens, max_cost_usd=base.max_cost_usd, timeout_s=base.timeout_s)


def _plan(target: RecordedRun, mode: str, conversation: Conversation | None, at: int | None) -> RunPlan:
    if mode == "fork":
        return RunPlan(origin="fork", parent_run_id=target.run_id, fork_at=at, conversation=conversation)
    return RunPlan(origin=mode, parent_run_id=target.run_id, prior=target.calls, strict=mode == "replay",
                   conversation=conversation)
