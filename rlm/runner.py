"""One run of the recursion tree: the public entry point :func:`run`.

``run(question, context, config)`` resolves the context into a payload, starts
the embedded model if it is the one configured, opens the run log, runs the
root :class:`~rlm.agent.Agent`, and returns a :class:`RunResult`. Bad input and
configuration raise (:class:`~rlm.errors.InputError`,
:class:`~rlm.errors.ConfigError`, :class:`~rlm.errors.SandboxUnavailable`);
once the run has started, its end is reported in ``RunResult.status`` (``"ok"``,
a limit name, ``"cancelled"`` or ``"error"``) and recorded in the run log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from rlm.agent import Agent, AgentResult, RunServices
from rlm.budget import Budget, Usage
from rlm.config import RLMConfig
from rlm.errors import ConfigError, RLMError
from rlm.events import Event, EventBus, RunFinished, RunStarted
from rlm.inputs import ContextPayload, load_context, payload_from_documents, payload_from_text
from rlm.lm import LM, LiteLLMClient
from rlm.sandbox.jail import check_bwrap


class RunExtension(Protocol):
    """A feature that plugs into every run (swarm memory is one).

    ``setup`` runs before the root agent starts and may add host functions and
    prompt text to ``services``; ``finish`` runs after the root agent ended (e.g.
    to reflect on the run). Both run on the driver, in the run's thread.
    """

    def setup(self, services: RunServices, question: str) -> None: ...

    def finish(self, services: RunServices, result: "RunResult") -> None: ...

    def close(self) -> None: ...


class RunExecutor(Protocol):
    """Where a run's agents execute: this process (:class:`LocalExecutor`) or a Ray cluster.

    ``budget`` makes the run's tree-wide ledger, ``run_root`` runs the root agent
    (children follow through ``RunServices.spawn``), ``close`` releases what the
    run held. ``RLMConfig.executor`` picks one; the Ray one lives in ``rlm.agents``.
    """

    def budget(self, config: RLMConfig, run_id: str) -> Budget: ...

    def run_root(self, services: RunServices, root: Agent) -> "AgentResult": ...

    def close(self) -> None: ...


class LocalExecutor:
    """Every agent in this process: children run on the parent's threads."""

    def budget(self, config: RLMConfig, run_id: str) -> Budget:
        return Budget(max_llm_calls=config.max_llm_calls, max_tokens=config.max_tokens,
                      max_cost_usd=config.max_cost_usd, timeout_s=config.timeout_s)

    def run_root(self, services: RunServices, root: Agent) -> "AgentResult":
        return root.run()

    def close(self) -> None:
        pass


def _executor(config: RLMConfig) -> RunExecutor:
    if config.executor == "ray":
        from rlm.agents.executor import RayExecutor  # Ray is imported only for Ray runs

        return RayExecutor(config)
    return LocalExecutor()


#: Factories consulted for every run: each returns an extension for this config, or None.
EXTENSION_FACTORIES: list[Callable[[RLMConfig], RunExtension | None]] = []


def _memory_extension(config: RLMConfig) -> RunExtension | None:
    if not config.memory_namespace:
        return None
    from rlm.memory.extension import MemoryExtension  # swarm memory, imported only when used

    return MemoryExtension(config)


EXTENSION_FACTORIES.append(_memory_extension)


@dataclass(frozen=True)
class RunResult:
    """The outcome of a run. ``cost_usd`` is ``None`` when any call's price was unknown."""

    answer: str | None
    run_id: str
    status: str
    usage: Usage
    iterations: int
    depth_reached: int
    duration_s: float
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def cost_usd(self) -> float | None:
        return self.usage.cost_usd

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "run_id": self.run_id,
            "status": self.status,
            "usage": self.usage.to_dict(),
            "cost_usd": self.cost_usd,
            "iterations": self.iterations,
            "depth_reached": self.depth_reached,
            "duration_s": round(self.duration_s, 3),
            "error": self.error,
            "warnings": self.warnings,
        }


def new_run_id() -> str:
    """Time-sortable and unique: ``20261122-030814-3f9a1c``."""
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def run(
    question: str,
    context: str | Path | ContextPayload | list[dict[str, Any]],
    config: RLMConfig | None = None,
    *,
    bus: EventBus | None = None,
    lm: LM | None = None,
    budget: Budget | None = None,
    on_start: Callable[[str, Budget], None] | None = None,
) -> RunResult:
    """Answer ``question`` about ``context`` (a path, text, documents, or a payload).

    ``bus`` receives every event live; ``lm`` replaces the litellm client (tests
    of the loop itself); ``on_start(run_id, budget)`` is called once the run has
    an id, e.g. so a UI can cancel it with ``budget.stop("cancelled")``.
    """
    config = config or RLMConfig()
    if not question or not question.strip():
        raise RLMError("the question is empty")
    if config.sandbox.mode == "bwrap":
        check_bwrap()
    run_id = new_run_id()
    workdir = config.home / "tmp" / run_id
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        payload = _payload(context, workdir)
        with _model_endpoint(config) as config, _run_log(config) as record:
            return _run(question, payload, config, run_id, workdir, bus or EventBus(), record, lm, budget, on_start)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _payload(context: Any, workdir: Path) -> ContextPayload:
    if isinstance(context, ContextPayload):
        return context
    if isinstance(context, Path):
        return load_context(context, workdir=workdir)
    if isinstance(context, list):
        return payload_from_documents(context, workdir=workdir)
    if isinstance(context, str):
        return payload_from_text(context, workdir=workdir)
    raise RLMError(f"context must be a path, a str or a list of documents, not {type(context).__name__}")


@contextlib.contextmanager
def _model_endpoint(config: RLMConfig) -> Iterator[RLMConfig]:
    """Start the embedded model server when it is the configured model."""
    from rlm import local_model

    if not local_model.uses_local_model(config):
        yield config
        return
    config.home.mkdir(parents=True, exist_ok=True)
    with local_model.LocalModelServer(log_path=config.home / "local-model.log") as server:
        yield local_model.point_at(config, server)


@contextlib.contextmanager
def _run_log(config: RLMConfig) -> Iterator[Callable[[Event], None] | None]:
    if not config.record_run:
        yield None
        return
    from rlm.runlog import RunLog

    log = RunLog(config.runlog_path)
    try:
        yield log.record
    finally:
        log.close_in_background()  # every event is journaled already: the answer need not wait


def _run(question: str, payload: ContextPayload, config: RLMConfig, run_id: str, workdir: Path, bus: EventBus,
         record: Callable[[Event], None] | None, lm: LM | None, budget: Budget | None,
         on_start: Callable[[str, Budget], None] | None) -> RunResult:
    if budget is not None and config.executor != "local":
        raise ConfigError("a caller-made Budget works only with executor='local'")
    # Set-up that may be slow (importing litellm) or fail (a locked memory file) happens
    # before the run's clock starts and before anything is recorded as running.
    own_lm = lm is None
    lm = lm or LiteLLMClient(config)
    extensions = [ext for factory in EXTENSION_FACTORIES if (ext := factory(config)) is not None]
    executor = _executor(config)
    try:
        return _execute(question, payload, config, run_id, workdir, bus, record, lm,
                        budget or executor.budget(config, run_id), on_start, executor, extensions)
    finally:
        for extension in extensions:
            extension.close()
        executor.close()
        if own_lm:
            lm.close()  # unhook its Router from litellm's global callback lists


def _execute(question: str, payload: ContextPayload, config: RLMConfig, run_id: str, workdir: Path, bus: EventBus,
             record: Callable[[Event], None] | None, lm: LM, budget: Budget,
             on_start: Callable[[str, Budget], None] | None, executor: RunExecutor,
             extensions: list[RunExtension]) -> RunResult:
    def emit(event: Event) -> None:
        if record is not None:
            record(event)
        bus.emit(event)

    if on_start is not None:
        on_start(run_id, budget)
    started = time.monotonic()
    emit(RunStarted(run_id=run_id, question=question, model=config.model, sub_model=config.effective_sub_model,
                    config=config.to_dict(), context_info=payload.info()))
    services = RunServices(run_id=run_id, config=config, lm=lm, budget=budget, emit=emit, workdir=workdir)
    try:
        for extension in extensions:
            extension.setup(services, question)
        root = Agent(services, prompt=question, payload=payload)
        outcome = executor.run_root(services, root)
    except BaseException as exc:  # recorded as ended, never left "running" in the run log
        spent = budget.usage()  # the calls made before the end were made: keep their count
        emit(RunFinished(run_id=run_id, status="cancelled" if isinstance(exc, KeyboardInterrupt) else "error",
                         answer=None, input_tokens=spent.input_tokens, output_tokens=spent.output_tokens,
                         llm_calls=spent.llm_calls, cost_usd=spent.cost_usd, duration_s=time.monotonic() - started,
                         error=f"{type(exc).__name__}: {exc}"))
        raise
    usage = budget.usage()
    result = RunResult(answer=outcome.answer, run_id=run_id, status=outcome.status, usage=usage,
                       iterations=outcome.iterations, depth_reached=services.depth_reached,
                       duration_s=time.monotonic() - started, error=outcome.error,
                       warnings=list(payload.warnings))
    for extension in extensions:
        extension.finish(services, result)
    if extensions:  # e.g. reflection's model calls: they are the run's too
        usage = budget.usage()
        result = dataclasses.replace(result, usage=usage)
    emit(RunFinished(run_id=run_id, status=result.status, answer=result.answer, input_tokens=usage.input_tokens,
                     output_tokens=usage.output_tokens, llm_calls=usage.llm_calls, cost_usd=usage.cost_usd,
                     iterations=result.iterations, depth_reached=result.depth_reached,
                     duration_s=result.duration_s, error=result.error))
    return result
