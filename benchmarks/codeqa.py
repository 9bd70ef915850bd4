"""codeqa-like: LongBench-v2 CodeQA's protocol over the installed Python standard library.

The RLM paper's CodeQA column is LongBench-v2's code repository split (Bai et al.
2025): four-choice questions written by people over real repositories, answered in
the form ``The correct answer is (X)`` and scored by accuracy. Those repositories
cannot be downloaded here, so this suite keeps the protocol and changes the data,
hence the ``-like`` name (it is kept out of paper comparisons):

* the prompt is LongBench-v2's 0-shot one (``prompts/0shot.txt`` of
  github.com/THUDM/LongBench at ``2e00731f8d0bff23dc4325161044d0ed8af94c1e``): "Please
  read the following text and answer the question below." before the code, then
  "What is the correct answer to this question: Q", the four choices ``(A)``-``(D)``
  and 'Format your response as follows: "The correct answer is (insert answer
  here)".';
* the reply is read with LongBench-v2's ``extract_answer`` regex and scored 1 when the
  letter is right (:func:`rlm.benchmarks.scoring.longbench_choice_score`).

The code: the stdlib's ``.py`` files (tests, idlelib, turtledemo, ensurepip,
site-packages and the like left out), shuffled with the seed and taken while they fit
the target length (``chars / 4``); the context is the list of ``{"path", "text"}``
documents. Questions (one per task, cycling through the kinds) are answered from the
``ast`` of exactly those files, with three wrong choices drawn from the same files:
which module defines top-level function X, how many classes list Y among their bases,
which function calls Z, how many top-level functions module M defines, which class
defines method m. The same seed gives the same bytes only on the same Python version
(``meta["python"]``). Task files of the older free-form kind (no ``choices`` in
``meta``) are still scored by their original rules.
"""

from __future__ import annotations

import ast
import random
import sys
import sysconfig
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path

from rlm.benchmarks.scoring import integer_match, longbench_choice_score, module_match, parse_name_list, set_f1
from rlm.benchmarks.tasks import CHARS_PER_TOKEN, Task

NAME = "codeqa-like"
LETTERS = "ABCD"
#: LongBench-v2's 0-shot instruction before the document.
PREAMBLE = "Please read the following text and answer the question below."
DEFAULT_LENGTHS = [2 ** k for k in range(13, 18)]
EXCLUDED_DIRS = {"test", "tests", "idlelib", "turtledemo", "ensurepip", "site-packages", "dist-packages",
                 "lib2to3", "__pycache__", "__phello__", "tkinter", "pydoc_data"}
MAX_FILE_CHARS = 400_000


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


@lru_cache(maxsize=1)
def stdlib_files() -> tuple[str, ...]:
    """Relative paths of the stdlib's source files, sorted."""
    root = stdlib_dir()
    paths = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if any(part in EXCLUDED_DIRS or part.startswith("config-") for part in rel.parts[:-1]):
            continue
        paths.append(rel.as_posix())
    return tuple(sorted(paths))


def module_name(rel_path: str) -> str:
    """``json/decoder.py`` -> ``json.decoder``; ``json/__init__.py`` -> ``json``."""
    name = rel_path.removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__")


@cache
def _parses(rel: str) -> bool:
    try:
        ast.parse((stdlib_dir() / rel).read_text(encoding="utf-8"))
        return True
    except (UnicodeDecodeError, SyntaxError, ValueError, OSError):
        return False


def _source(rel: str) -> str | None:
    """The file's text, or None when it is not UTF-8 Python that this interpreter parses."""
    if not _parses(rel):
        return None
    return (stdlib_dir() / rel).read_text(encoding="utf-8")


def select_files(chars: int, rng: random.Random) -> list[dict[str, str]]:
    """Shuffled stdlib files taken while they fit in ``chars`` characters (parseable ones only)."""
    order = list(stdlib_files())
    rng.shuffle(order)
    docs: list[dict[str, str]] = []
    left = chars
    root = stdlib_dir()
    for rel in order:
        if (root / rel).stat().st_size > 2 * min(left, MAX_FILE_CHARS):  # bytes >= chars: a cheap pre-check
            continue
        text = _source(rel)
        if text is None or len(text) > min(left, MAX_FILE_CHARS) or not text.strip():
            continue
        docs.append({"path": rel, "text": text})
        left -= len(text)
        if left < chars * 0.02:
            break
    return sorted(docs, key=lambda d: d["path"])


# -- what the AST says ------------------------------------------------------------------
@dataclass
class CodeFacts:
    """Facts about a set of modules, gathered from their ASTs."""

    top_functions: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # module -> names
    subclass_counts: Counter[str] = field(default_factory=Counter)  # base name -> classes listing it
    callers: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # callee -> qualified callers
    method_classes: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # method -> module.Class
    functions: set[str] = field(default_factory=set)  # every qualified function and method
    classes: set[str] = field(default_factory=set)  # every qualified class


def _base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _call_name(node: ast.Call) -> str | None:
    return _base_name(node.func)


class _Collector(ast.NodeVisitor):
    """Walks one module; ``scope`` holds (kind, name) of the enclosing classes and functions."""

    def __init__(self, module: str, facts: CodeFacts) -> None:
        self.module, self.facts = module, facts
        self.scope: list[tuple[str, str]] = []

    def _qualified(self) -> str:
        return ".".join([self.module] + [name for _, name in self.scope])

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for base in node.bases:
            if (name := _base_name(base)) is not None:
                self.facts.subclass_counts[name] += 1
        self.scope.append(("class", node.name))
        self.facts.classes.add(self._qualified())
        self.generic_visit(node)
        self.scope.pop()

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if not self.scope:
            self.facts.top_functions[self.module].append(node.name)
        elif self.scope[-1][0] == "class":
            self.facts.method_classes[node.name].add(self._qualified())
        self.scope.append(("function", node.name))
        self.facts.functions.add(self._qualified())
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def visit_Call(self, node: ast.Call) -> None:
        name = _base_name(node.func)
        if name is not None and any(kind == "function" for kind, _ in self.scope):
            self.facts.callers[name].add(self._qualified())
        self.generic_visit(node)


def analyze(docs: list[dict[str, str]]) -> CodeFacts:
    """Facts about ``docs`` (each parsed with :mod:`ast`)."""
    facts = CodeFacts()
    for doc in docs:
        _Collector(module_name(doc["path"]), facts).visit(ast.parse(doc["text"]))
    return facts


# -- questions -------------------------------------------------------------------------
@dataclass(frozen=True)
class Question:
    """Question text, the right choice and the wrong ones."""

    kind: str
    text: str
    right: str
    wrong: tuple[str, ...]


def _others(pool: set[str] | list[str], exclude: set[str], rng: random.Random) -> tuple[str, ...] | None:
    """Three distinct wrong choices from ``pool`` (None when there are fewer than three)."""
    candidates = sorted(set(pool) - exclude)
    return tuple(rng.sample(candidates, 3)) if len(candidates) >= 3 else None


def _numbers(right: int, rng: random.Random) -> tuple[str, ...]:
    """Three wrong counts near ``right`` (never negative)."""
    near = [n for n in range(max(0, right - 4), right + 5) if n != right]
    return tuple(str(n) for n in rng.sample(near, 3))


def _q_defines(facts: CodeFacts, rng: random.Random) -> Question | None:
    owners: dict[str, set[str]] = defaultdict(set)
    for module, names in facts.top_functions.items():
        for name in names:
            owners[name].add(module)
    unique = sorted(name for name, modules in owners.items() if len(modules) == 1 and not name.startswith("__"))
    if not unique:
        return None
    name = rng.choice(unique)
    right = next(iter(owners[name]))
    wrong = _others(list(facts.top_functions), {right}, rng)
    if not wrong:
        return None
    return Question("defines_function", f"Which module defines the top-level function `{name}`?", right, wrong)


def _q_subclasses(facts: CodeFacts, rng: random.Random) -> Question | None:
    bases = sorted(name for name in facts.subclass_counts if name != "object")
    if not bases:
        return None
    base = rng.choice(bases)
    right = facts.subclass_counts[base]
    return Question("count_subclasses", f"How many class definitions in these files list `{base}` directly among "
                    f"their base classes (written as `{base}` or as `something.{base}`)?", str(right),
                    _numbers(right, rng))


def _q_callers(facts: CodeFacts, rng: random.Random) -> Question | None:
    callees = sorted(name for name, callers in facts.callers.items() if 1 <= len(callers) <= 6)
    if not callees:
        return None
    callee = rng.choice(callees)
    right = rng.choice(sorted(facts.callers[callee]))
    wrong = _others(facts.functions, facts.callers[callee], rng)
    if not wrong:
        return None
    return Question("caller", f"Which of these functions or methods calls `{callee}` (as `{callee}(...)` "
                    f"or `something.{callee}(...)`) directly in its body?", right, wrong)


def _q_count_functions(facts: CodeFacts, rng: random.Random) -> Question | None:
    modules = sorted(facts.top_functions)
    if not modules:
        return None
    module = rng.choice(modules)
    right = len(facts.top_functions[module])
    return Question("count_functions", f"How many top-level functions (`def` or `async def` at module level, "
                    f"counting every definition) does the module `{module}` define?", str(right),
                    _numbers(right, rng))


def _q_method_class(facts: CodeFacts, rng: random.Random) -> Question | None:
    unique = sorted(name for name, classes in facts.method_classes.items()
                    if len(classes) == 1 and not name.startswith("_"))
    if not unique:
        return None
    method = rng.choice(unique)
    right = next(iter(facts.method_classes[method]))
    wrong = _others(facts.classes, {right}, rng)
    if not wrong:
        return None
    return Question("method_class", f"Which class defines a method named `{method}`?", right, wrong)


QUESTION_KINDS: tuple[Callable[[CodeFacts, random.Random], Question | None], ...] = (
    _q_defines, _q_subclasses, _q_callers, _q_count_functions, _q_method_class)


def longbench_question(question: str, choices: list[str]) -> str:
    """LongBench-v2's 0-shot question block: the question, four choices and the answer format."""
    lines = [f"What is the correct answer to this question: {question}", "Choices:"]
    lines += [f"({letter}) {choice}" for letter, choice in zip(LETTERS, choices, strict=True)]
    return "\n".join(lines) + '\n\nFormat your response as follows: "The correct answer is (insert answer here)".'


def _pick(facts: CodeFacts, index: int, rng: random.Random, n_files: int) -> Question:
    for step in range(len(QUESTION_KINDS)):
        question = QUESTION_KINDS[(index + step) % len(QUESTION_KINDS)](facts, rng)
        if question is not None:
            return question
    raise ValueError(f"no question can be asked about {n_files} files")


def make_task(index: int, length_tokens: int, rng: random.Random) -> Task:
    docs = select_files(length_tokens * CHARS_PER_TOKEN, rng)
    question = _pick(analyze(docs), index, rng, len(docs))
    choices = [question.right, *question.wrong]
    rng.shuffle(choices)
    letter = LETTERS[choices.index(question.right)]
    return Task(id=f"{NAME}-{length_tokens}-{index}", suite=NAME, question=longbench_question(question.text, choices),
                answer=letter, context=docs, length_tokens=length_tokens,
                meta={"kind": question.kind, "answer_type": "choice", "choices": choices, "answer_text": question.right,
                      "preamble": PREAMBLE, "files": len(docs), "python": sys.version.split()[0]})


def generate(n: int, lengths: list[int], seed: int) -> list[Task]:
    return [make_task(i, length, random.Random(f"{NAME}/{seed}/{length}/{i}"))
            for length in lengths for i in range(n)]


def score(task: Task, prediction: str | None) -> float:
    """LongBench-v2 accuracy; older free-form task files keep their own rules."""
    kind = task.meta["answer_type"]
    if kind == "choice":
        return longbench_choice_score(prediction, str(task.answer))
    if kind == "number":
        return integer_match(prediction, str(task.answer))
    if kind == "names":
        return set_f1(parse_name_list(prediction), set(task.answer))
    return module_match(prediction, str(task.answer))
