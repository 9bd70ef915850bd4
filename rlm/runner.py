"""One run of the recursion tree: the public entry point :func:`run`.

``run(question, context, config)`` resolves the context into a payload, starts
the embedded model if it is the one configured, opens the run log, runs the
root :class:`~rlm.agent.Agent`, and returns a :class:`RunResult`. Bad input and
configuration raise (:class:`~rlm.errors.InputError`,
:class:`~rlm.errors.ConfigError`, :class:`~rlm.errors.SandboxUnavailable`);
once the run has started, its end is reported in ``RunResult.status`` (``"ok"``,
a limit name, ``"cancelled"`` or ``"error"``) and recorded in the run log.

A :class:`~rlm.conversation.RunPlan` makes the run a replay, a resume, a fork or
a session's turn: records that answer its calls first, the conversation its
root continues, and where it comes from (recorded in ``RunStarted``). With the
cache on (``RLMConfig.cache_enabled``) its calls are also answered from its own
earlier identical calls and from earlier runs in the run log (opened only then:
the cold path of a plain run never imports DuckDB).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rlm.agent import Agent
from rlm.budget import Ledger
from rlm.config import RLMConfig
from rlm.contexts import identify
from rlm.conversation import RunPlan
from rlm.errors import InputError
from rlm.events import Event, EventBus, LMCalled, RunFinished, RunStarted
from rlm.executors import Executor, executor_for
from rlm.extensions import Contribution, RunExtension
from rlm.inputs import ContextPayload, load_context, payload_from_documents, payload_from_text
from rlm.lm import LM, LMClient
from rlm.records import CallRecords, Lookup
from rlm.results import RunResult
from rlm.sandbox.jail import check_bwrap
from rlm.services import RunServices

__all__ = ["run", "RunResult", "new_run_id", "default_extensions", "payload_of"]


def default_extensions(config: RLMConfig) -> list[RunExtension]:
    """The built-in extensions ``config`` asks for: swarm memory when it names a namespace."""
    if not config.memory_namespace:
        return []
    from rlm.memory.extension import MemoryExtension  # swarm memory, imported only when used

    return [MemoryExtension(config)]


def new_run_id() -> str:
    """Time-sortable and unique: ``20261122-030814-3f9a1c``."""
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def run(
    question: str,
    context: str | Path | ContextPayload | list[dict[str, Any]],
    config: RLMConfig | None = None,
    *,
    bus: EventBus | None = None,
    on_start: Callable[[str, Ledger], None] | None = None,
    executor: Executor | None = None,
    extensions: Sequence[RunExtension] | None = None,
    record: Callable[[Event], None] | None = None,
    plan: RunPlan | None = None,
) -> RunResult:
    """Answer ``question`` about ``context`` (a path, text, documents, or a payload).

    ``bus`` receives every event live; ``on_start(run_id, budget)`` is called once the
    run has an id, e.g. so a UI can cancel it with ``budget.stop("cancelled")``.
    ``executor`` overrides the one ``config.executor`` names; ``extensions`` replaces the
    built-in extensions the config asks for (:func:`default_extensions`). ``record`` receives
    every event for the run log (e.g. a long-lived process's :class:`~rlm.runlog.RunLog`);
    by default they go to a journal of their own next to ``config.runlog_path``. ``plan``
    relates the run to recorded ones (replay, resume, fork, a session's turn; see
    :mod:`rlm.conversation`); ``rlm.sessions`` and ``rlm.reruns`` build it.
    """
    config = config or RLMConfig()
    if not question or not question.strip():
        raise InputError("the question is empty")
    if config.sandbox.mode == "bwrap":
        check_bwrap()
    run_id = new_run_id()
    workdir = config.home / "tmp" / run_id
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        payload = payload_of(context, workdir)
        with _model_endpoint(config) as config, _run_log(config, record) as record:
            parts = _RunParts(executor or executor_for(config),
                              list(default_extensions(config) if extensions is None else extensions),
                              plan or RunPlan())
            return _run(question, payload, config, run_id, workdir, bus or EventBus(), record, on_start, parts)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def payload_of(context: Any, workdir: Path) -> ContextPayload:
    """The payload of what :func:`run` takes as ``context`` (files it writes go to ``workdir``)."""
    if isinstance(context, ContextPayload):
        return context
    if isinstance(context, Path):
        return load_context(context, workdir=workdir)
    if isinstance(context, list):
        return payload_from_documents(context, workdir=workdir)
    if isinstance(context, str):
        return payload_from_text(context, workdir=workdir)
    raise InputError(f"context must be a path, a str or a list of documents, not {type(context).__name__}")


def _model_endpoint(config: RLMConfig) -> contextlib.AbstractContextManager[RLMConfig]:
    """Start the embedded model server when a group the config routes to uses it."""
    from rlm import local_model

    return local_model.serving(config)


@contextlib.contextmanager
def _run_log(config: RLMConfig, record: Callable[[Event], None] | None) -> Iterator[Callable[[Event], None] | None]:
    """The run's event sink: the caller's, or a journal next to the run log (no DuckDB in this process:
    the next read-write open of the log stores the run, and readers see it before that)."""
    if record is not None or not config.record_run:
        yield record
        return
    from rlm.runlog import RunJournal

    journal = RunJournal(config.runlog_path)
    try:
        yield journal.record
    finally:
        journal.close()


@dataclasses.dataclass
class _RunParts:
    executor: Executor
    extensions: list[RunExtension]
    plan: RunPlan


def _records(config: RLMConfig, plan: RunPlan) -> CallRecords:
    """What answers the run's calls before the provider: the plan's prior records, and with the cache on
    this run's own calls and the run log's (a lookup opened only then)."""
    lookup: Lookup | None = plan.lookup
    if lookup is None and config.cache_enabled and config.record_run:
        from rlm.runlog.recorded import FileLookup  # DuckDB only once a call is looked up

        lookup = FileLookup(config.runlog_path)
    return CallRecords(prior=plan.prior, strict=plan.strict, cache=config.cache_enabled, lookup=lookup)


class _HitCounter:
    """Counts the run's calls a record answered (its cache hits)."""

    def __init__(self) -> None:
        self.hits = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, LMCalled) and event.cache_hit:
            self.hits += 1


def _run(question: str, payload: ContextPayload, config: RLMConfig, run_id: str, workdir: Path, bus: EventBus,
         record: Callable[[Event], None] | None, on_start: Callable[[str, Ledger], None] | None,
         parts: _RunParts) -> RunResult:
    # Set-up that may be slow (the LM client) or fail (a locked memory file) happens
    # before the run's clock starts and before anything is recorded as running.
    lm: LM = LMClient(config)
    records = _records(config, parts.plan)
    try:
        return _execute(question, payload, config, run_id, workdir, bus, record, lm, on_start, parts, records)
    finally:
        parts.plan.unused = records.unused()
        if parts.plan.lookup is None:  # a lookup the caller gave stays the caller's
            records.close()
        for extension in parts.extensions:
            extension.close()
        parts.executor.close()
        lm.close()


def _sink(record: Callable[[Event], None] | None, bus: EventBus,
          observers: list[Callable[[Event], None]]) -> Callable[[Event], None]:
    """Where every event of the run goes: the extensions' observers, the run log, the bus."""

    def emit(event: Event) -> None:
        for observe in observers:
            observe(event)
        if record is not None:
            record(event)
        bus.emit(event)

    return emit


def _services(config: RLMConfig, run_id: str, workdir: Path, lm: LM, budget: Ledger,
              emit: Callable[[Event], None], executor: Executor, contributions: list[Contribution],
              records: CallRecords) -> RunServices:
    functions = {f.name: f for c in contributions for f in c.host_functions}
    from rlm.routing.notes import groups_note  # the model groups model= may name (empty without a models file)

    extras = [groups_note(config), *(c.prompt_extra for c in contributions)]
    return RunServices(run_id=run_id, config=config, lm=lm, budget=budget, emit=emit, workdir=workdir,
                       placement=executor.placement(), host_functions=functions,
                       prompt_extra="\n\n".join(extra for extra in extras if extra),
                       root_prompt_extra="\n\n".join(c.root_prompt_extra for c in contributions
                                                      if c.root_prompt_extra), records=records)


def _started(question: str, payload: ContextPayload, config: RLMConfig, run_id: str, plan: RunPlan) -> RunStarted:
    """The run's first event: the question, the config, the input and its identity, where the run comes from."""
    info = {**payload.info(), "identity": identify(payload, config.home, keep=config.record_run)}
    return RunStarted(run_id=run_id, question=question, model=config.model, sub_model=config.effective_sub_model,
                      config=config.to_dict(), context_info=info, origin=plan.origin,
                      parent_run_id=plan.parent_run_id, session=plan.session, turn=plan.turn, fork_at=plan.fork_at)


def _execute(question: str, payload: ContextPayload, config: RLMConfig, run_id: str, workdir: Path, bus: EventBus,
             record: Callable[[Event], None] | None, lm: LM, on_start: Callable[[str, Ledger], None] | None,
             parts: _RunParts, records: CallRecords) -> RunResult:
    budget = parts.executor.budget(config, run_id)
    contributions = [extension.setup(run_id, question) for extension in parts.extensions]
    hits = _HitCounter()
    emit = _sink(record, bus, [hits, *(c.observer for c in contributions if c.observer is not None)])
    if on_start is not None:
        on_start(run_id, budget)
    started = time.monotonic()
    emit(_started(question, payload, config, run_id, parts.plan))
    services = _services(config, run_id, workdir, lm, budget, emit, parts.executor, contributions, records)
    try:
        root = Agent(services, prompt=question, payload=payload, conversation=parts.plan.conversation,
                     stop_after=parts.plan.stop_after)
        outcome = parts.executor.run_root(services, root)
    except BaseException as exc:  # recorded as ended, never left "running" in the run log
        spent = budget.usage()  # the calls made before the end were made: keep their count
        emit(RunFinished(run_id=run_id, status="cancelled" if isinstance(exc, KeyboardInterrupt) else "error",
                         answer=None, input_tokens=spent.input_tokens, output_tokens=spent.output_tokens,
                         llm_calls=spent.llm_calls, cache_hits=hits.hits, cost_usd=spent.cost_usd,
                         duration_s=time.monotonic() - started, error=f"{type(exc).__name__}: {exc}"))
        raise
    result = RunResult(answer=outcome.answer, run_id=run_id, status=outcome.status,
                       usage=dataclasses.replace(budget.usage(), cache_hits=hits.hits),
                       iterations=outcome.iterations, depth_reached=services.tracker.depth_reached,
                       duration_s=time.monotonic() - started, error=records.divergence or outcome.error,
                       warnings=list(payload.warnings))
    for extension in parts.extensions:
        extension.finish(services, result)
    if parts.extensions:  # e.g. reflection's model calls: they are the run's too
        result = dataclasses.replace(result, usage=dataclasses.replace(budget.usage(), cache_hits=hits.hits))
    usage = result.usage
    emit(RunFinished(run_id=run_id, status=result.status, answer=result.answer, input_tokens=usage.input_tokens,
                     output_tokens=usage.output_tokens, llm_calls=usage.llm_calls, cache_hits=usage.cache_hits,
                     cost_usd=usage.cost_usd, iterations=result.iterations, depth_reached=result.depth_reached,
                     duration_s=result.duration_s, error=result.error))
    return result
