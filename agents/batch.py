"""Batch jobs: many questions, each a run, concurrently on the cluster.

Task file (JSONL, one task per line; blank lines are skipped)::

    {"id": "q1", "question": "...", "context_path": "docs/"}
    {"id": "q2", "question": "...", "context": "inline text", "max_llm_calls": 50}

``id`` (a string or an integer, unique in the file) and ``question`` are
required, and exactly one of ``context_path`` (a file or a directory) and
``context`` (a string, or a list of ``{"path", "text"}`` documents). Any key of
:data:`OVERRIDES` replaces the batch's setting for that task. An optional
``expected`` answer scores the task: 1 when the answer equals it (whitespace
and case aside), else 0.

With a memory namespace (``rlm batch --memory NS``) every task of the batch
shares one memory store (this process's, or the resident service's) and, after
each task, reflects into it (``--reflect``): a batch of similar tasks learns as
it goes. ``--report FILE`` writes score, tokens and calls per position in the
task file (see :mod:`rlm.agents.batch_report`).

Result file (JSONL, one line per finished task, appended and flushed as each
finishes, in completion order)::

    {"id": "q1", "answer": "...", "status": "ok", "usage": {"input_tokens": ..., "output_tokens": ...,
     "llm_calls": ...}, "cost_usd": 0.0012, "run_id": "...", "error": null, "duration_s": 3.2,
     "position": 0, "score": 1.0}

``position`` is the task's index in the task file; ``score`` is null without ``expected``.

``status`` is a run's status (``ok``, a limit name, ``error``) or ``error``
for a task that could not start (e.g. its context file is missing; then
``run_id`` is null). Re-running with the same result file skips the ids
already in it, so an interrupted batch resumes where it stopped; a task stopped
by Ctrl-C is not written, and runs again on resume.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rlm.config import RLMConfig
from rlm.errors import InputError, RLMError

#: Task keys that override the batch's config for one task -> RLMConfig field.
OVERRIDES = {
    "model": "model", "sub_model": "sub_model", "max_depth": "max_depth", "max_iterations": "max_iterations",
    "max_llm_calls": "max_llm_calls", "max_tokens": "max_tokens", "max_cost_usd": "max_cost_usd",
    "timeout_s": "timeout_s", "max_concurrency": "max_concurrency", "temperature": "temperature",
}
_KNOWN = {"id", "question", "context_path", "context", "expected", *OVERRIDES}


@dataclass(frozen=True)
class Task:
    """One line of the task file."""

    id: str
    question: str
    line: int
    context_path: Path | None = None
    context: Any = None
    overrides: dict[str, Any] = field(default_factory=dict)
    expected: str | None = None
    position: int = 0

    def resolved_context(self) -> Any:
        return self.context_path if self.context_path is not None else self.context

    def score(self, answer: str | None) -> float | None:
        """1.0 when ``answer`` is the expected one (whitespace and case aside), 0.0 if not, None without one."""
        if self.expected is None:
            return None
        return float(" ".join(str(answer or "").split()).lower() == " ".join(self.expected.split()).lower())


def read_tasks(path: Path) -> list[Task]:
    """Parse and check the task file; errors name the line (:class:`InputError`)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read the task file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        task = dataclasses.replace(_parse_task(text, number, path.parent), position=len(tasks))
        if task.id in seen:
            raise InputError(f"{path}:{number}: duplicate task id {task.id!r} (first on line {seen[task.id]})")
        seen[task.id] = number
        tasks.append(task)
    return tasks


def _parse_task(text: str, number: int, base: Path) -> Task:
    where = f"line {number}"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: a task must be a JSON object")
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise InputError(f"{where}: unknown keys {unknown} (known: {sorted(_KNOWN)})")
    task_id = data.get("id")
    if isinstance(task_id, bool) or not isinstance(task_id, (str, int)) or str(task_id) == "":
        raise InputError(f"{where}: 'id' must be a non-empty string or an integer")
    question = data.get("question")
    if not isinstance(question, str) or not question.strip():
        raise InputError(f"{where}: 'question' must be a non-empty string")
    has_path, has_inline = "context_path" in data, "context" in data
    if has_path == has_inline:
        raise InputError(f"{where}: give exactly one of 'context_path' and 'context'")
    context_path = None
    if has_path:
        if not isinstance(data["context_path"], str) or not data["context_path"]:
            raise InputError(f"{where}: 'context_path' must be a path string")
        context_path = Path(data["context_path"]).expanduser()
        context_path = context_path if context_path.is_absolute() else base / context_path
    elif not isinstance(data["context"], (str, list)):
        raise InputError(f"{where}: 'context' must be a string or a list of {{\"path\", \"text\"}} documents")
    expected = data.get("expected")
    if expected is not None and not isinstance(expected, (str, int, float)):
        raise InputError(f"{where}: 'expected' must be a string or a number")
    overrides = {OVERRIDES[k]: v for k, v in data.items() if k in OVERRIDES}
    return Task(id=str(task_id), question=question, line=number, context_path=context_path,
                context=data.get("context"), overrides=overrides,
                expected=None if expected is None else str(expected))


def finished_ids(results: Path) -> set[str]:
    """Ids already in the result file (lines that do not parse — a torn last line — are ignored)."""
    if not results.exists():
        return set()
    done = set()
    for text in results.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and "id" in data:
            done.add(str(data["id"]))
    return done


@dataclass
class BatchStats:
    """What the progress line shows."""

    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0
    running: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    cost_known: bool = True
    interrupted: bool = False


Runner = Callable[..., Any]


class BatchJob:
    """Runs tasks concurrently, writing each result as it finishes. ``run_fn`` defaults to :func:`rlm.runner.run`."""

    def __init__(self, tasks: list[Task], config: RLMConfig, out: Path, *, concurrency: int = 4,
                 progress: Callable[[BatchStats], None] | None = None, run_fn: Runner | None = None) -> None:
        if concurrency < 1:
            raise InputError("--concurrency must be >= 1")
        self.config = config
        self.out = out
        self.concurrency = concurrency
        self.progress = progress or (lambda stats: None)
        self.run_fn = run_fn
        self._own_runner = run_fn is None
        done = finished_ids(out)
        self.pending = [task for task in tasks if task.id not in done]
        self.stats = BatchStats(total=len(tasks), skipped=len(tasks) - len(self.pending))
        self._budgets: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._memory: Any = None  # the store every task shares, when the batch has a memory namespace

    def run(self) -> BatchStats:
        """Run every pending task; on KeyboardInterrupt stop the running ones and re-raise."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        with open(self.out, "a+", encoding="utf-8") as sink:
            _end_with_newline(sink)
            pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="rlm-batch")
            running: dict[Future[dict[str, Any] | None], Task] = {}
            try:
                self._drive(pool, sink, running)
            except KeyboardInterrupt:
                self._interrupt()
                pool.shutdown(wait=True, cancel_futures=True)
                # Tasks that finished while we were stopping are results too: keep them.
                for future in running:
                    if future.done() and not future.cancelled() and future.exception() is None:
                        row = future.result()
                        if row is not None:
                            self._write(sink, row)
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
                self.close()
                self.progress(self.stats)
        return self.stats

    def _drive(self, pool: ThreadPoolExecutor, sink: IO[str], running: dict[Future[Any], Task]) -> None:
        queue = list(reversed(self.pending))
        while queue or running:
            while queue and len(running) < self.concurrency:
                task = queue.pop()
                running[pool.submit(self._one, task)] = task
            self._update(running=len(running))
            finished, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in finished:
                running.pop(future)
                row = future.result()
                if row is not None:
                    self._write(sink, row)

    def _one(self, task: Task) -> dict[str, Any] | None:
        if self._stopping.is_set():
            return None
        started = time.monotonic()
        row: dict[str, Any] = {"id": task.id, "answer": None, "status": "error", "usage": None, "cost_usd": None,
                               "run_id": None, "error": None, "position": task.position, "score": None}
        try:
            config = dataclasses.replace(self.config, **task.overrides) if task.overrides else self.config
            result = self._run_fn()(task.question, task.resolved_context(), config,
                                    on_start=lambda run_id, budget: self._started(task, budget),
                                    **self._extensions(config))
        except RLMError as exc:  # a bad task (missing file, bad override): recorded, the batch goes on
            row["error"] = str(exc)
        except Exception as exc:  # noqa: BLE001 - whatever ends one task must not end the batch
            row["error"] = f"{type(exc).__name__}: {exc}"
        else:
            if self._stopping.is_set() and result.status == "cancelled":
                return None  # interrupted: not a result; it runs again on resume
            row.update(answer=result.answer, status=result.status, usage=result.usage.to_dict(),
                       cost_usd=result.cost_usd, run_id=result.run_id, error=result.error,
                       score=task.score(result.answer))
        finally:
            with self._lock:
                self._budgets.pop(task.id, None)
        row["duration_s"] = round(time.monotonic() - started, 3)
        return row

    def _run_fn(self) -> Runner:
        if self.run_fn is None:
            from rlm.runner import run

            self.run_fn = run
        return self.run_fn

    def _extensions(self, config: RLMConfig) -> dict[str, Any]:
        """For in-process runs with a memory namespace: the memory extension on the batch's one store.

        (Runs sent to the service use the service's store; a custom ``run_fn`` gets nothing extra.)
        """
        if not config.memory_namespace or self.run_fn is not None and not self._own_runner:
            return {}
        from rlm.memory.extension import MemoryExtension
        from rlm.memory.store import MemoryStore, memory_path

        with self._lock:
            if self._memory is None:
                self._memory = MemoryStore(memory_path(config.home))
        return {"extensions": [MemoryExtension(config, store=self._memory)]}  # a lent store is not closed by it

    def close(self) -> None:
        """Close the batch's memory store, if it opened one."""
        if self._memory is not None:
            self._memory.close()
            self._memory = None

    def _started(self, task: Task, budget: Any) -> None:
        with self._lock:
            self._budgets[task.id] = budget
        if self._stopping.is_set():
            budget.stop("cancelled")

    def _write(self, sink: IO[str], row: dict[str, Any]) -> None:
        sink.write(json.dumps(row, ensure_ascii=False) + "\n")
        sink.flush()
        with self._lock:
            stats = self.stats
            stats.done += 1
            stats.failed += row["status"] != "ok"
            usage = row.get("usage") or {}
            stats.tokens += int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))
            if row.get("cost_usd") is None and row.get("run_id") is not None:
                stats.cost_known = False
            stats.cost_usd += row.get("cost_usd") or 0.0
        self.progress(self.stats)

    def _update(self, *, running: int) -> None:
        if running != self.stats.running:
            self.stats.running = running
            self.progress(self.stats)

    def _interrupt(self) -> None:
        self._stopping.set()
        self.stats.interrupted = True
        with self._lock:
            budgets = list(self._budgets.values())
        for budget in budgets:
            budget.stop("cancelled")


def _end_with_newline(sink: IO[str]) -> None:
    """A torn last line (a crash mid-write) must not glue itself to the next result."""
    sink.seek(0, 2)
    if sink.tell() == 0:
        return
    sink.seek(sink.tell() - 1)
    if sink.read(1) != "\n":
        sink.write("\n")


class ProgressLine:
    """``[batch] 12/100 done · 1 failed · 4 running · 123,456 tokens · $0.0123`` on stderr."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._last = ""

    def __call__(self, stats: BatchStats) -> None:
        line = self.render(stats)
        if line == self._last:
            return
        self._last = line
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    @staticmethod
    def render(stats: BatchStats) -> str:
        todo = stats.total - stats.skipped
        width = 20
        filled = width * stats.done // todo if todo else width
        cost = f"${stats.cost_usd:.4f}" + ("" if stats.cost_known else "+unknown")
        skipped = f" ({stats.skipped} already done)" if stats.skipped else ""
        return (f"[batch] [{'#' * filled}{'.' * (width - filled)}] {stats.done}/{todo} done{skipped} · "
                f"{stats.failed} failed · {stats.running} running · {stats.tokens:,} tokens · {cost}")

    def close(self) -> None:
        if self.tty and self._last:
            self.stream.write("\n")
            self.stream.flush()
