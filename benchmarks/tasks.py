"""Benchmark tasks: the record, its JSONL file format, and the suite registry.

Task file format (JSONL, one task per line, keys in this order)::

    {"id": "s-niah-8192-0", "suite": "s-niah", "question": "...",
     "answer": "1234567" | ["...", ...], "context": "..." | [{"path", "text"}, ...],
     "context_path": null | "relative/or/absolute/path", "length_tokens": 8192,
     "meta": {...}}

Exactly one of ``context`` and ``context_path`` is non-null. ``context`` is a
string, or a list of ``{"path", "text"}`` documents. ``context_path`` (used
when a context is larger than ``inline_limit`` characters) is resolved
relative to the JSONL file's folder; a ``.txt`` file holds a string context,
a ``.jsonl`` file one ``{"path", "text"}`` document per line. ``answer`` is the
gold answer: a string, or a list for pair/multi answers. ``length_tokens`` is
the target length in tokens: the paper suites (s-niah, oolong, oolong-pairs) size
their contexts as their sources do (a real tokenizer, or OOLONG's record count) and
record measured ``o200k_base`` counts in ``meta``; the ``-like`` suites use
``ceil(characters / 4)`` (the scripted server's rule). Files are written with a fixed key
order and ``ensure_ascii=False``, so the same tasks give the same bytes.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from rlm.errors import InputError

#: Characters per token used to size contexts (ceil(chars / 4), as rlm.testing estimates).
CHARS_PER_TOKEN = 4
#: Contexts larger than this many characters go to a side file next to the task file.
INLINE_LIMIT = 256 * 1024

Context = str | list[dict[str, str]]


def estimate_tokens(text: str) -> int:
    """Tokens of ``text`` by the benchmark's rule: ``ceil(len(text) / 4)``."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def context_text(context: Context) -> str:
    """A context as one string (documents joined with a header line each)."""
    if isinstance(context, str):
        return context
    return "".join(f"=== {doc['path']} ===\n{doc['text']}\n" for doc in context)


@dataclass(frozen=True)
class Task:
    """One benchmark task; see the module docstring for the file format."""

    id: str
    suite: str
    question: str
    answer: str | list[str]
    context: Context | None = None
    context_path: str | None = None
    length_tokens: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    #: Folder that a relative ``context_path`` is resolved against (not serialised).
    base_dir: Path | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "suite": self.suite, "question": self.question, "answer": self.answer,
                "context": self.context, "context_path": self.context_path,
                "length_tokens": self.length_tokens, "meta": self.meta}

    @classmethod
    def from_dict(cls, data: dict[str, Any], base_dir: Path | None = None) -> Task:
        missing = {"id", "suite", "question", "answer"} - set(data)
        if missing:
            raise InputError(f"task is missing {sorted(missing)}")
        if (data.get("context") is None) == (data.get("context_path") is None):
            raise InputError(f"task {data['id']}: exactly one of context and context_path must be set")
        return cls(id=data["id"], suite=data["suite"], question=data["question"], answer=data["answer"],
                   context=data.get("context"), context_path=data.get("context_path"),
                   length_tokens=int(data.get("length_tokens") or 0), meta=dict(data.get("meta") or {}),
                   base_dir=base_dir)

    def load_context(self) -> Context:
        """The context itself (read from ``context_path`` when it is not inline)."""
        if self.context is not None:
            return self.context
        path = Path(self.context_path or "")
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        if path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as fh:
                return [json.loads(line) for line in fh if line.strip()]
        return path.read_text(encoding="utf-8")


def dumps_task(task: Task) -> str:
    """One JSONL line (without the newline)."""
    return json.dumps(task.to_dict(), ensure_ascii=False, separators=(", ", ": "))


def write_tasks(tasks: Iterable[Task], path: Path, *, inline_limit: int = INLINE_LIMIT) -> Path:
    """Write ``tasks`` to ``path``; contexts over ``inline_limit`` chars go to ``<path stem>.contexts/``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    side_dir = path.parent / f"{path.stem}.contexts"
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for task in tasks:
            out.write(dumps_task(_externalise(task, side_dir, inline_limit)) + "\n")
    return path


def _externalise(task: Task, side_dir: Path, inline_limit: int) -> Task:
    context = task.context
    if context is None or len(context_text(context)) <= inline_limit:
        return task
    side_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(context, str):
        target = side_dir / f"{task.id}.txt"
        target.write_text(context, encoding="utf-8", newline="\n")
    else:
        target = side_dir / f"{task.id}.jsonl"
        target.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in context), encoding="utf-8")
    return Task(id=task.id, suite=task.suite, question=task.question, answer=task.answer, context=None,
                context_path=f"{side_dir.name}/{target.name}", length_tokens=task.length_tokens, meta=task.meta)


def read_tasks(path: Path) -> list[Task]:
    """Read a task file written by :func:`write_tasks` (or by hand, same format)."""
    path = Path(path)
    tasks = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                tasks.append(Task.from_dict(json.loads(line), base_dir=path.parent))
            except (json.JSONDecodeError, TypeError) as exc:
                raise InputError(f"{path}:{number}: not a task: {exc}") from None
    return tasks


class Suite(Protocol):
    """What a suite module provides."""

    NAME: str
    DEFAULT_LENGTHS: list[int]

    def generate(self, n: int, lengths: list[int], seed: int) -> list[Task]:
        """``n`` tasks per length, deterministic in ``seed``."""
        ...

    def score(self, task: Task, prediction: str | None) -> float:
        """The task's score in [0, 1] for ``prediction`` (``None``: no answer, 0)."""
        ...


#: Suite name -> module implementing :class:`Suite`.
SUITES: dict[str, str] = {
    "s-niah": "rlm.benchmarks.sniah",
    "oolong": "rlm.benchmarks.oolong",
    "oolong-pairs": "rlm.benchmarks.oolong_pairs",
    "browsecomp-plus-like": "rlm.benchmarks.browsecomp_like",
    "codeqa-like": "rlm.benchmarks.codeqa",
}
#: Former suite names, still accepted (and still found in older task files).
ALIASES: dict[str, str] = {"multihop": "browsecomp-plus-like", "codeqa": "codeqa-like"}
#: The suites that regenerate the RLM paper's own tasks; "-like" suites are never compared with the paper.
PAPER_SUITES: tuple[str, ...] = ("s-niah", "oolong", "oolong-pairs")


def canonical(name: str) -> str:
    """The suite's current name (an alias resolved); :class:`InputError` for an unknown name."""
    name = ALIASES.get(name, name)
    if name not in SUITES:
        raise InputError(f"unknown suite {name!r}; choose from {', '.join(SUITES)}")
    return name


def get_suite(name: str) -> ModuleType:
    """The suite module called ``name`` (or a former name of it)."""
    return importlib.import_module(SUITES[canonical(name)])


@dataclass(frozen=True)
class PresetRun:
    """One suite of a preset: which tasks at which lengths."""

    suite: str
    n: int
    lengths: list[int]


def preset(name: str) -> list[PresetRun]:
    """``paper``: each of :data:`PAPER_SUITES` at the RLM paper's task counts and lengths (``PAPER_*`` of
    its module)."""
    if name != "paper":
        raise InputError(f"unknown preset {name!r}; choose from paper")
    return [PresetRun(suite, get_suite(suite).PAPER_TASKS, list(get_suite(suite).PAPER_LENGTHS))
            for suite in PAPER_SUITES]


def generate(suite: str, n: int, lengths: list[int] | None, seed: int) -> list[Task]:
    """Generate ``n`` tasks per length for ``suite`` (its default lengths when ``lengths`` is empty)."""
    if n < 1:
        raise InputError("--n must be >= 1")
    module = get_suite(suite)
    return module.generate(n, list(lengths or module.DEFAULT_LENGTHS), seed)


def score_task(task: Task, prediction: str | None) -> float:
    """Score ``prediction`` with the task's own suite scorer."""
    return float(get_suite(task.suite).score(task, prediction))


def extra_scores(task: Task, prediction: str | None) -> dict[str, float]:
    """Secondary scores a suite reports beside its official one (e.g. oolong's ``lenient``)."""
    module = get_suite(task.suite)
    extra = getattr(module, "extra_scores", None)
    return {name: float(value) for name, value in extra(task, prediction).items()} if extra else {}
