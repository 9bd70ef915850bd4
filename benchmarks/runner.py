"""Running benchmark tasks with several methods, through the public API, concurrently.

Methods (registry :data:`METHODS`):

* ``base`` -- the model reads the context directly, truncated to its window
  (``base_window_tokens``; the head is kept, as a model with that window would see it);
* ``rlm`` -- :func:`rlm.run` with the configured limits;
* ``rlm-no-sub`` -- :func:`rlm.run` with ``max_depth=0`` and ``sub_calls=False``: the
  model is told sub-calls are off, and any ``llm_query``/``rlm_query`` it still makes
  fails with that message (the core honours `RLMConfig.sub_calls`);
* ``peer-rlms`` -- the official ``rlms`` library in its own venv (:mod:`rlm.benchmarks.peers`),
  pointed at the same endpoint.

:func:`run_benchmark` runs every (task, method) pair on an executor (a thread pool by
default; any :class:`concurrent.futures.Executor` fits, e.g. one backed by Ray) and
appends one :class:`BenchResult` per pair to ``results.jsonl``. Our ``rlm`` methods record
their runs in the run log as every run does; ``base`` and ``peer-rlms`` runs are recorded
there too, as a ``RunStarted``/``RunFinished`` pair whose question starts with
``[bench SUITE/METHOD]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from rlm.benchmarks.tasks import Context, Task, context_text, extra_scores, score_task
from rlm.config import RLMConfig
from rlm.errors import RLMError


@dataclass(frozen=True)
class BenchSettings:
    """What every method of one benchmark run shares."""

    config: RLMConfig
    base_window_tokens: int = 128_000
    base_output_tokens: int = 2_000  # reserved in the window for the reply
    peer_cache: Path | None = None
    peer_timeout_s: float = 1800.0
    log: TextIO | None = None  # where peer installation notes go
    judge_model: str | None = None  # grades tasks with meta["grading"] == "judge" (same endpoint as config)


@dataclass(frozen=True)
class MethodOutcome:
    """What one method returned for one task."""

    answer: str | None
    status: str
    input_tokens: int = 0
    output_tokens: int = 0
    llm_calls: int = 0
    cost_usd: float | None = None
    seconds: float = 0.0
    error: str | None = None
    run_id: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchResult:
    """One line of ``results.jsonl``."""

    suite: str
    id: str
    length: int
    method: str
    score: float
    answer: str | None
    gold: Any
    input_tokens: int
    output_tokens: int
    llm_calls: int
    cost_usd: float | None
    seconds: float
    status: str
    error: str | None = None
    run_id: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    #: Secondary scores, by name (oolong's ``lenient``, a judged suite's ``code_match``); never the official one.
    scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class Method(Protocol):
    """A way of answering a task."""

    name: str

    def run(self, task: Task, context: Context, settings: BenchSettings) -> MethodOutcome: ...


# -- base ------------------------------------------------------------------------------
def base_prompt(task: Task, context: Context, window_tokens: int, output_tokens: int) -> tuple[str, bool]:
    """The direct prompt (preamble, context cut to fit the window, question) and whether it was cut.

    The window is counted in ``o200k_base`` tokens (:mod:`rlm.benchmarks.tokens`), the
    tokenizer of the paper's GPT-5; the head of the context is kept.
    """
    from rlm.benchmarks.tokens import count_tokens, encoding

    preamble, prefix = task.meta.get("preamble", ""), task.meta.get("answer_prefix", "")
    text = context_text(context)
    reserve = min(output_tokens, window_tokens // 4)  # room for the reply
    room = max(window_tokens - reserve - count_tokens("\n\n".join((preamble, task.question, prefix))) - 16, 0)
    tokens = encoding().encode(text, disallowed_special=())
    truncated = len(tokens) > room
    if truncated:
        text = encoding().decode(tokens[:room])
    parts = [p for p in (preamble, text, task.question, prefix) if p]
    return "\n\n".join(parts), truncated


class BaseMethod:
    """The model reads the (truncated) context directly: one LM call.

    The model is reached as a run reaches it: the embedded one's server is started for it
    (:func:`rlm.local_model.serving`), and the context is cut to the smaller of
    ``base_window_tokens`` and the model's own window, counted with the model's tokenizer
    where rlm knows it (:mod:`rlm.routing`), so the size guard never refuses the call.
    """

    name = "base"

    def __init__(self) -> None:
        self._clients: dict[int, Any] = {}
        self._servers = contextlib.ExitStack()
        self._lock = threading.Lock()

    def _client(self, config: RLMConfig) -> Any:
        from rlm.lm import LMClient
        from rlm.local_model import serving

        with self._lock:
            client = self._clients.get(id(config))
            if client is None:
                client = self._clients[id(config)] = LMClient(self._servers.enter_context(serving(config)))
            return client

    def close(self) -> None:
        for client in self._clients.values():
            if hasattr(client, "close"):
                client.close()
        self._clients.clear()
        self._servers.close()

    def run(self, task: Task, context: Context, settings: BenchSettings) -> MethodOutcome:
        started = time.monotonic()
        try:
            client = self._client(settings.config)
            prompt, truncated = fitted_prompt(task, context, settings, client)
            completion = client.complete([{"role": "user", "content": prompt}], role="root")
        except RLMError as exc:  # LMError, or the embedded model that could not start
            return MethodOutcome(None, "error", seconds=time.monotonic() - started, error=str(exc))
        return MethodOutcome(completion.text, "ok", completion.input_tokens, completion.output_tokens, 1,
                             completion.cost_usd, time.monotonic() - started, notes={"truncated": truncated})


def fitted_prompt(task: Task, context: Context, settings: BenchSettings, client: Any) -> tuple[str, bool]:
    """:func:`base_prompt` cut to fit the root model's window under its own tokenizer (shrunk until it does)."""
    from rlm.routing.tokens import PromptSize

    table = client.routes.table
    target = table.groups[table.resolve(table.spec.routing.root)][0]
    window = min(settings.base_window_tokens, target.window or settings.base_window_tokens)
    while True:
        prompt, truncated = base_prompt(task, context, window, settings.base_output_tokens)
        if target.room is None or window <= 256 or PromptSize([{"role": "user", "content": prompt}]).fits(
                target.room, target.tokenizer):
            return prompt, truncated
        window = int(window * 0.85)


# -- ours --------------------------------------------------------------------------------
class RLMMethod:
    """Our :func:`rlm.run`, with ``overrides`` applied to the benchmark's config."""

    def __init__(self, name: str = "rlm", **overrides: Any) -> None:
        self.name = name
        self.overrides = overrides

    def run(self, task: Task, context: Context, settings: BenchSettings) -> MethodOutcome:
        from rlm.runner import run

        config = dataclasses.replace(settings.config, **self.overrides)
        started = time.monotonic()
        try:
            result = run(task.question, context, config)
        except RLMError as exc:
            return MethodOutcome(None, "error", seconds=time.monotonic() - started, error=str(exc))
        usage = result.usage
        return MethodOutcome(result.answer, result.status, usage.input_tokens, usage.output_tokens,
                             usage.llm_calls, result.cost_usd, result.duration_s, result.error, result.run_id,
                             notes={"iterations": result.iterations, "depth_reached": result.depth_reached})


class RLMNoSubMethod(RLMMethod):
    """``rlm`` with no sub-calls: max_depth 0 and ``sub_calls=False``."""

    def __init__(self) -> None:
        super().__init__("rlm-no-sub", max_depth=0, sub_calls=False)


# -- peers -------------------------------------------------------------------------------
class PeerRLMSMethod:
    """The official ``rlms`` library (own venv), pointed at the same OpenAI-compatible endpoint."""

    name = "peer-rlms"

    def __init__(self) -> None:
        self._python: Path | None = None
        self._lock = threading.Lock()

    def _ensure(self, settings: BenchSettings) -> Path:
        from rlm.benchmarks import peers

        with self._lock:
            if self._python is None:
                self._python = peers.ensure_peer("rlms", settings.peer_cache, log=settings.log)
            return self._python

    def run(self, task: Task, context: Context, settings: BenchSettings) -> MethodOutcome:
        from rlm.benchmarks import peers

        config = settings.config
        if not config.api_base:
            return MethodOutcome(None, "error", error="peer-rlms needs --api-base (an OpenAI-compatible endpoint)")
        started = time.monotonic()
        try:
            python = self._ensure(settings)
            with tempfile.TemporaryDirectory(prefix="rlm-bench-peer-") as tmp:
                path = Path(tmp) / ("context.jsonl" if isinstance(context, list) else "context.txt")
                path.write_text(context if isinstance(context, str)
                                else "".join(json.dumps(d) + "\n" for d in context), encoding="utf-8")
                result = peers.run_driver(python, peers.driver_path("rlms"), {
                    "model": peers.openai_model_name(config.model), "api_base": config.api_base,
                    "api_key": config.api_key, "question": task.question, "context_path": str(path),
                    "max_iterations": config.max_iterations, "max_depth": config.max_depth,
                    "max_timeout": config.timeout_s}, timeout=settings.peer_timeout_s, cwd=Path(tmp))
        except peers.PeerError as exc:
            return MethodOutcome(None, "error", seconds=time.monotonic() - started, error=str(exc))
        return MethodOutcome(result.get("answer"), result.get("status", "error"), int(result.get("input_tokens") or 0),
                             int(result.get("output_tokens") or 0), int(result.get("llm_calls") or 0),
                             result.get("cost_usd"), float(result.get("seconds") or time.monotonic() - started),
                             result.get("error"))


METHODS: dict[str, Callable[[], Method]] = {
    "base": BaseMethod,
    "rlm": RLMMethod,
    "rlm-no-sub": RLMNoSubMethod,
    "peer-rlms": PeerRLMSMethod,
}


def make_methods(names: Iterable[str]) -> list[Method]:
    methods = []
    for name in names:
        if name not in METHODS:
            raise RLMError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
        methods.append(METHODS[name]())
    return methods


# -- the run -----------------------------------------------------------------------------
def run_one(task: Task, method: Method, settings: BenchSettings) -> BenchResult:
    """Run and score one (task, method) pair; never raises for a method's failure."""
    context = task.load_context()
    try:
        outcome = method.run(task, context, settings)
    except Exception as exc:  # noqa: BLE001 - a broken method must not lose the other results
        outcome = MethodOutcome(None, "error", error=f"{type(exc).__name__}: {exc}")
    if method.name in ("base", "peer-rlms"):
        _record_external_run(task, method.name, outcome, settings.config)
    score, extra, notes = grade(task, outcome.answer, settings)
    return BenchResult(suite=task.suite, id=task.id, length=task.length_tokens, method=method.name,
                       score=round(score, 6), answer=outcome.answer, gold=task.answer,
                       input_tokens=outcome.input_tokens, output_tokens=outcome.output_tokens,
                       llm_calls=outcome.llm_calls, cost_usd=outcome.cost_usd, seconds=round(outcome.seconds, 3),
                       status=outcome.status, error=outcome.error, run_id=outcome.run_id,
                       notes={**outcome.notes, **notes}, scores={k: round(v, 6) for k, v in extra.items()})


def grade(task: Task, answer: str | None, settings: BenchSettings) -> tuple[float, dict[str, float], dict[str, Any]]:
    """(official score, secondary scores, notes): a judge model for judged suites when configured, else code."""
    code_score = score_task(task, answer)
    extra = extra_scores(task, answer)
    if task.meta.get("grading") != "judge" or not settings.judge_model:
        return code_score, extra, {}
    from rlm.benchmarks.judge import judge

    verdict = judge(task.question, answer, str(task.answer), settings.config, settings.judge_model)
    notes = {"judge_model": settings.judge_model, "judge_reply": verdict.reply, "judge_error": verdict.error}
    return verdict.score, {**extra, "code_match": code_score}, notes


_runlog_lock = threading.Lock()


def _record_external_run(task: Task, method: str, outcome: MethodOutcome, config: RLMConfig) -> None:
    """A RunStarted/RunFinished pair in the run log for a run that did not go through rlm.run."""
    if not config.record_run:
        return
    from rlm.events import RunFinished, RunStarted
    from rlm.runlog import RunJournal
    from rlm.runner import new_run_id

    run_id = new_run_id()
    with _runlog_lock:
        log = RunJournal(config.runlog_path)  # as rlm.run records: no DuckDB open beside other writers
        try:
            log.record(RunStarted(run_id=run_id, question=f"[bench {task.suite}/{method}] {task.question}",
                                  model=config.model, sub_model=config.effective_sub_model,
                                  config={"bench_method": method, "task_id": task.id}))
            log.record(RunFinished(run_id=run_id, status=outcome.status, answer=outcome.answer,
                                   input_tokens=outcome.input_tokens, output_tokens=outcome.output_tokens,
                                   llm_calls=outcome.llm_calls, cost_usd=outcome.cost_usd,
                                   duration_s=outcome.seconds, error=outcome.error))
        finally:
            log.close()


class ProgressBar:
    """``[#####.....] 12/40  s-niah rlm 8192  mean 0.83`` on a stream (redrawn in place on a terminal)."""

    def __init__(self, total: int, stream: TextIO | None, width: int = 30) -> None:
        self.total, self.stream, self.width = total, stream, width
        self.done = 0
        self.score_sum = 0.0
        self._lock = threading.Lock()
        self._tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())

    def update(self, result: BenchResult) -> None:
        with self._lock:
            self.done += 1
            self.score_sum += result.score
            if self.stream is None:
                return
            filled = self.width * self.done // max(self.total, 1)
            line = (f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total}  "
                    f"{result.suite} {result.method} {result.length}  score {result.score:.2f}  "
                    f"mean {self.score_sum / self.done:.2f}")
            self.stream.write(("\r" + line) if self._tty else line + "\n")
            if self._tty and self.done == self.total:
                self.stream.write("\n")
            self.stream.flush()


def run_benchmark(tasks: list[Task], methods: list[Method], settings: BenchSettings, out_dir: Path, *,
                  executor: Executor | None = None, concurrency: int = 2,
                  progress: TextIO | None = sys.stderr) -> list[BenchResult]:
    """Run every (task, method) pair; append each result to ``out_dir/results.jsonl`` as it arrives.

    ``executor``: where pairs run (default: a thread pool of ``concurrency`` threads). Any
    :class:`concurrent.futures.Executor` works, e.g. one that submits to Ray.
    Results come back in (task, method) order.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "results.jsonl"
    bar = ProgressBar(len(tasks) * len(methods), progress)
    write_lock = threading.Lock()
    own_executor = executor is None
    pool = executor or ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="rlm-bench")

    def job(task: Task, method: Method) -> BenchResult:
        result = run_one(task, method, settings)
        with write_lock, results_path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(result.to_dict(), ensure_ascii=False, default=str) + "\n")
        bar.update(result)
        return result

    try:
        futures: list[Future[BenchResult]] = [pool.submit(job, task, method) for task in tasks for method in methods]
        return [future.result() for future in futures]
    finally:
        if own_executor:
            pool.shutdown(wait=True)
        for method in methods:
            if hasattr(method, "close"):
                method.close()


def read_results(path: Path) -> list[BenchResult]:
    with Path(path).open(encoding="utf-8") as fh:
        return [BenchResult.from_dict(json.loads(line)) for line in fh if line.strip()]
