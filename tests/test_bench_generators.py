"""Generators: deterministic bytes, the documented sizes, and gold answers re-derived independently.

The re-derivations below parse the generated *text* (and, for OOLONG, the hidden labels kept in
``meta["record_labels"]``) with code written here, not the generators' own gold functions.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import itertools
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from rlm.benchmarks.tasks import ALIASES, SUITES, context_text, dumps_task, generate, preset, read_tasks, write_tasks
from rlm.benchmarks.tokens import count_tokens

LABELS = ["abbreviation", "entity", "description and abstract concept", "human being", "location", "numeric value"]
SMALL = {"s-niah": [2048, 8192], "oolong": [2048, 8192], "oolong-pairs": [4096, 8192],
         "browsecomp-plus-like": [4096, 8192], "codeqa-like": [4096, 8192]}


def digest(tasks) -> str:
    return hashlib.sha256("\n".join(dumps_task(t) for t in tasks).encode()).hexdigest()


def oolong_records(length: int) -> int:
    return int((length * 0.95 - 418) // 39)


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_same_seed_same_bytes_other_seed_other_bytes(suite):
    first = generate(suite, 2, SMALL[suite], seed=7)
    assert digest(first) == digest(generate(suite, 2, SMALL[suite], seed=7))
    assert digest(first) != digest(generate(suite, 2, SMALL[suite], seed=8))
    assert [t.length_tokens for t in first] == [n for n in SMALL[suite] for _ in range(2)]
    assert len({t.id for t in first}) == len(first) and {t.suite for t in first} == {suite}
    for task in first:
        if suite == "s-niah":  # RULER: the whole prompt plus 128 reply tokens fits, in real tokens
            assert task.length_tokens - 200 <= task.meta["prompt_tokens"] + 128 <= task.length_tokens
        elif suite.startswith("oolong"):  # OOLONG: the record count of the window
            assert task.meta["n_records"] == oolong_records(task.length_tokens)
            assert task.meta["context_tokens"] == count_tokens(task.context)
        else:  # -like suites: chars / 4, within 12%
            assert abs(len(context_text(task.context)) / 4 - task.length_tokens) <= 0.12 * task.length_tokens


@pytest.mark.parametrize("alias, name", sorted(ALIASES.items()))
def test_former_suite_names_still_generate(alias, name):
    assert [t.suite for t in generate(alias, 1, [4096], seed=1)] == [name]


def test_paper_preset_sizes():
    runs = {r.suite: (r.n, r.lengths) for r in preset("paper")}
    assert runs == {"s-niah": (50, [8192, 16384, 32768, 65536, 131072, 262144]), "oolong": (50, [131072]),
                    "oolong-pairs": (20, [32768])}


def test_task_file_round_trip_and_side_files(tmp_path: Path):
    tasks = generate("s-niah", 1, [1024, 90_000], seed=1)
    path = write_tasks(tasks, tmp_path / "t.jsonl")
    again = write_tasks(generate("s-niah", 1, [1024, 90_000], seed=1), tmp_path / "u.jsonl")
    assert path.read_bytes().replace(b"t.contexts", b"u.contexts") == again.read_bytes()
    loaded = read_tasks(path)
    assert loaded[0].context is not None and loaded[1].context is None  # ~340 KB goes to a side file
    assert loaded[1].context_path == "t.contexts/s-niah-90000-0.txt"
    assert [t.load_context() for t in loaded] == [t.context for t in tasks]


DEPTHS = [round(x) for x in (100 * i / 39 for i in range(40))]  # np.round(np.linspace(0, 100, 40))


def test_sniah_is_rulers_single_needle_task():
    for task in generate("s-niah", 6, [2048, 16384], seed=5):
        key = re.fullmatch(r"What is the special magic number for ([\w-]+) mentioned in the provided text\?",
                           task.question).group(1)
        assert task.meta["preamble"] == ("A special magic number is hidden within the following text. Make sure to "
                                         "memorize it. I will quiz you about the number afterwards.")
        assert task.meta["answer_prefix"] == f"The special magic number for {key} mentioned in the provided text is"
        needle = re.findall(rf"One of the special magic numbers for {re.escape(key)} is: (\d+)\.", task.context)
        assert needle == task.answer and len(needle[0]) == 7 and task.context.count("special magic") == 1
        full = f"{task.meta['preamble']}\n{task.context}\n{task.question} {task.meta['answer_prefix']}"
        assert count_tokens(full) == task.meta["prompt_tokens"]
        if task.meta["haystack"] == "noise":  # RULER's repeat haystack: one sentence per line, needle a line
            lines = task.context.split("\n")
            assert set(lines) - {lines[0]} == {f"One of the special magic numbers for {key} is: {needle[0]}."}
            assert lines[0] == ("The grass is green. The sky is blue. The sun is yellow. Here we go. "
                                "There and back again.")
        else:  # essay: the needle sits at one of RULER's 40 depths of the sentence list
            assert task.meta["depth_percent"] in DEPTHS and "\n" not in task.context
            sentences = re.split(r"(?<=\.) ", task.context)
            index = next(i for i, s in enumerate(sentences) if "special magic" in s)
            assert index == int((len(sentences) - 1) * task.meta["depth_percent"] / 100)


def test_sniah_documented_sizes():
    for task in generate("s-niah", 2, [32768, 131072], seed=2):
        assert task.length_tokens - 200 <= task.meta["prompt_tokens"] + 128 <= task.length_tokens


def _oolong_rows(task):
    rows = []
    pattern = re.compile(r"Date: (\w{3} \d{2}, \d{4}) \|\| User: (\d+) \|\| Instance: (.+)")
    lines = [line for line in task.context.splitlines() if line.startswith("Date: ")]
    for line, code in zip(lines, task.meta["record_labels"], strict=True):
        date, user, _ = pattern.fullmatch(line).groups()
        rows.append((dt.datetime.strptime(date, "%b %d, %Y").date(), user, LABELS[int(code)]))
    return rows


def _date(text):
    return dt.datetime.strptime(text, "%b %d, %Y").date()


def _oolong_expected(task) -> str:
    rows, q = _oolong_rows(task), task.question
    quoted = re.findall(r"label '([a-z ]+)'", q)
    date = re.search(r"dated (after|before) (\w{3} \d{2}, \d{4})", q)
    user = re.search(r"of user (\d+)", q)
    if date:
        day, after = _date(date.group(2)), date.group(1) == "after"
        rows = [r for r in rows if (r[0] > day if after else r[0] < day)]
    if user:
        rows = [r for r in rows if r[1] == user.group(1)]
    counts = Counter(label for _, _, label in rows)
    ranked = sorted(LABELS, key=lambda label: -counts[label])
    kind = task.meta["kind"]
    if kind in ("count", "user_count", "count_after_date"):
        return str(counts[quoted[0]])
    if kind in ("compare", "compare_before_date"):
        assert abs(counts[quoted[0]] - counts[quoted[1]]) > 0.02 * task.meta["n_records"]  # OOLONG's gap filter
        return "more common than" if counts[quoted[0]] > counts[quoted[1]] else "less common than"
    if kind in ("most_common", "second_most_common", "least_common"):
        rank = {"most_common": 0, "second_most_common": 1, "least_common": 5}[kind]
        for other in (rank - 1, rank + 1):
            if 0 <= other < 6:
                assert abs(counts[ranked[rank]] - counts[ranked[other]]) > 0.02 * task.meta["n_records"]
        return ranked[rank]
    if kind == "top_user":
        return Counter(u for _, u, label in rows if label == quoted[0]).most_common(1)[0][0]
    if kind == "user_first_date":
        return min(d for d, _, label in rows if label == quoted[0]).isoformat()
    raise AssertionError(kind)


def test_oolong_gold_rederived():
    tasks = generate("oolong", 20, [8192], seed=11)
    assert {t.meta["kind"] for t in tasks} >= {"count", "compare", "count_after_date", "top_user", "user_first_date"}
    for task in tasks:
        assert task.question.startswith("Answer the following: In the above data")
        assert _oolong_expected(task) == task.answer, task.question


def test_oolong_window_has_the_introduction_and_closing_line():
    task = generate("oolong", 1, [4096], seed=3)[0]
    first, *_, last = task.context.strip().split("\n")
    assert first.startswith("The following lines contain thousands of general-knowledge questions, one per line.")
    assert first.endswith("Do not try to guess, estimate, or approximate the result.")
    assert last.startswith("Recall:")
    assert task.meta["oolong_task"] in {"NUMERIC_ONE_CLASS", "MOST_FREQ", "SECOND_MOST_FREQ", "LEAST_FREQ",
                                        "RELATIVE_FREQ", "USER_MOST_FREQ", "USER_NUMERIC_ONE_CLASS",
                                        "TIMELINE_NUMERIC_ONE_CLASS", "TIMELINE_USER_FIRST"}


@pytest.mark.parametrize("length, records", [(32768, 787), (131072, 3182)])
def test_oolong_documented_sizes_and_users(length, records):
    task = generate("oolong", 1, [length], seed=2)[0]
    rows = _oolong_rows(task)
    assert len(rows) == records == task.meta["n_records"]
    per_user = sorted(Counter(u for _, u, _ in rows).values(), reverse=True)
    pool = round(records * 0.64)
    assert sum(per_user[: pool // 5]) >= 0.75 * records  # 80% of the records belong to the top 20% of ids
    if length == 32768:
        assert 200 <= len(per_user) <= 260  # the paper's 32K windows have about 230 users


_LABEL = "|".join(sorted(map(re.escape, LABELS), key=len, reverse=True))
_CLAUSE = re.compile(rf"(at least one|at least two|exactly one|exactly two|one) (?:instances? )?with ({_LABEL})")
_NEED = {"at least one": (1, None), "one": (1, None), "at least two": (2, None), "exactly one": (1, 1),
         "exactly two": (2, 2)}


def _role(text):
    """A user predicate from the paper's clause list ("at least one instance with X and exactly one with Y")."""
    clauses = [(label, *_NEED[need]) for need, label in _CLAUSE.findall(text)]
    assert clauses, text
    return lambda c: all(c[label] >= low and (high is None or c[label] == high) for label, low, high in clauses)


def _pairs_expected(task):
    by_user, dates = defaultdict(Counter), defaultdict(lambda: defaultdict(list))
    for day, user, label in _oolong_rows(task):
        by_user[int(user)][label] += 1
        dates[int(user)][label].append(day)
    q = task.question
    if m := re.search(rf"where both users have at least one instance with an? ({_LABEL}) or ({_LABEL})"
                      rf"(?:, and all instances that are an? ({_LABEL}) for both users must be (after|before) "
                      r"(\w+ \d+, \d{4}))?\. Each", q):
        cut = dt.datetime.strptime(m.group(5), "%B %d, %Y").date() if m.group(5) else None

        def ok(u):
            if not (by_user[u][m.group(1)] or by_user[u][m.group(2)]):
                return False
            days = dates[u][m.group(3)] if cut else []
            return all(d > cut if m.group(4) == "after" else d < cut for d in days)

        good = sorted(u for u in by_user if ok(u))
        return [f"({a}, {b})" for a, b in itertools.combinations(good, 2)]
    m = re.search(r"such that one user has (.+?), and the other user has (.+?)\. Each", q)
    first, second = _role(m.group(1)), _role(m.group(2))
    return [f"({a}, {b})" for a, b in itertools.combinations(sorted(by_user), 2)
            if (first(by_user[a]) and second(by_user[b])) or (second(by_user[a]) and first(by_user[b]))]


SUFFIX = ("Each of the questions can be labelled as one of the labels (the data does not provide the labels, you need "
          "to figure out the label from the semantics of the question): description and abstract concept, entity, "
          "human being, numeric value, location, abbreviation. In your answer, list all pairs in the format "
          "(user_id_1, user_id_2), separated by newlines.")
# Phrases of the paper's Appendix E.1 that this suite once got wrong (dates, swapped labels, missing tasks).
PAPER_PHRASES = {
    5: "all instances that are an entity for both users must be before March 15, 2023",
    7: "all instances that are a numeric value for both users must be after February 1, 2023",
    9: "all instances that are a location for both users must be after April 10, 2023",
    10: "all instances that are an abbreviation for both users must be before May 20, 2023",
    11: "one user has at least one instance with entity and one with abbreviation, and the other user has exactly "
        "one instance with entity",
    16: "the other user has at least two instances with entity and exactly one instance with abbreviation",
    17: "one user has exactly one instance with numeric value, and the other user has at least one instance with "
        "location and at least one instance with description and abstract concept",
    20: "the other user has at least one instance with location, at least one instance with entity, and exactly one "
        "instance with abbreviation",
}


def test_oolong_pairs_asks_the_papers_20_queries_in_order():
    tasks = generate("oolong-pairs", 20, [2048], seed=4)
    assert [t.meta["query"] for t in tasks] == list(range(1, 21))
    for task in tasks:
        assert task.question.startswith("Answer the following: In the above data, list all pairs of user IDs (no "
                                        "duplicate pairs, list lower ID first) ")
        assert task.question.endswith(SUFFIX)
        assert PAPER_PHRASES.get(task.meta["query"], "") in task.question


def test_oolong_pairs_gold_rederived_for_all_20_queries():
    tasks = generate("oolong-pairs", 20, [8192], seed=4)
    for task in tasks:
        assert _pairs_expected(task) == task.answer, task.meta["query"]
    assert sum(len(t.answer) > 10 for t in tasks) >= 10


def test_oolong_pairs_paper_window():
    task = generate("oolong-pairs", 1, [32768], seed=1)[0]
    assert task.meta["n_records"] == 787 and 200 <= task.meta["n_users"] <= 260


FACT_PATTERNS = {
    "founder": r"^{x} was founded by ([A-Z][\w ]+?)\.", "headquarters": r"^{x} has its headquarters in (\w+)\.",
    "birthplace": r"^{x} was born in ([A-Z]\w+)\.", "employer": r"^{x} works for ([A-Z][\w ]+?)\.",
    "author": r"^{x} is a novel written by ([A-Z][\w ]+?)\.", "river": r"^The ([\w ]+ River) flows through {x}\.",
    "country": r"^{x} is a city in (\w+)\.", "founded_year": r"^{x} was founded in (\d+)\.",
    "birth_year": r"^{x} was born in the year (\d+)\.", "profession": r"^{x}'s profession is (\w+)\.",
}


def _fact(pages: dict[str, str], entity: str, fact: str) -> str:
    sentences = re.split(r"(?<=\.) ", pages[entity].split("\n\n", 1)[1].strip())
    found = [m.group(1) for s in sentences if (m := re.match(FACT_PATTERNS[fact].format(x=re.escape(entity)), s))]
    assert len(found) == 1, (entity, fact, found)
    return found[0]


def test_browsecomp_like_gold_by_reading_the_documents():
    for task in generate("browsecomp-plus-like", 6, [8192], seed=9):
        pages = {doc["text"].split("\n", 1)[0]: doc["text"] for doc in task.context}
        q = task.question
        if m := re.search(r"the novel that won the ([\w ]+?) in (\d{4})", q):
            won = f" won the {m.group(1)} in {m.group(2)}."
            winners = [title for title, text in pages.items() if f"{title}{won}" in text]
            assert len(winners) == 1
            entity = winners[0]
        else:
            entity = task.meta["start"]
        for relation in task.meta["relations"]:
            entity = _fact(pages, entity, relation)
        assert _fact(pages, entity, task.meta["attribute"]) == task.answer
        assert task.meta["hops"] == len(task.meta["relations"]) + 1
        assert task.answer not in task.meta["distractors"] and task.meta["distractors"]
        assert task.meta["grading"] == "judge"


def _tree(doc):
    return ast.parse(doc["text"])


def _module(path: str) -> str:
    return path[:-3].replace("/", ".").removesuffix(".__init__")


def _callers(trees, name):
    """Every def whose own body (nested defs excluded) calls name(...), by qualified name."""
    callers = set()

    def calls(fn):
        stack = list(ast.iter_child_nodes(fn))
        while stack:
            node = stack.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == name:
                return True
            stack.extend(ast.iter_child_nodes(node))
        return False

    def walk(node, path):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = path + [child.name]
                if not isinstance(child, ast.ClassDef) and calls(child):
                    callers.add(".".join(inner))
                walk(child, inner)

    for module, tree in trees.items():
        walk(tree, [module])
    return callers


def _right_choices(task):
    """The choices that an independent AST walk finds correct."""
    trees = {_module(d["path"]): _tree(d) for d in task.context}
    name = re.findall(r"`([\w.]+)`", task.question)[0]
    kind, choices = task.meta["kind"], task.meta["choices"]
    funcs = (ast.FunctionDef, ast.AsyncFunctionDef)
    if kind == "defines_function":
        return [c for c in choices if any(isinstance(n, funcs) and n.name == name for n in trees[c].body)]
    if kind == "count_subclasses":
        count = sum(1 for t in trees.values() for n in ast.walk(t) if isinstance(n, ast.ClassDef)
                    for b in n.bases if (isinstance(b, ast.Name) and b.id == name)
                    or (isinstance(b, ast.Attribute) and b.attr == name))
        return [c for c in choices if c == str(count)]
    if kind == "count_functions":
        module = re.findall(r"`([\w.]+)`", task.question)[-1]
        return [c for c in choices if c == str(sum(isinstance(x, funcs) for x in trees[module].body))]
    if kind == "method_class":
        owners = {f"{m}.{c.name}" for m, t in trees.items() for c in ast.walk(t) if isinstance(c, ast.ClassDef)
                  if any(isinstance(f, funcs) and f.name == name for f in c.body)}
        return [c for c in choices if c in owners]
    return [c for c in choices if c in _callers(trees, name)]


def test_codeqa_like_is_longbench_multiple_choice_with_one_right_answer():
    tasks = generate("codeqa-like", 10, [8192], seed=3)
    assert {t.meta["kind"] for t in tasks} >= {"defines_function", "count_subclasses", "caller", "count_functions"}
    for task in tasks:
        choices = task.meta["choices"]
        assert len(set(choices)) == 4 and task.answer in "ABCD"
        assert task.question.startswith("What is the correct answer to this question: ")
        assert all(f"({letter}) {choice}" in task.question for letter, choice in zip("ABCD", choices, strict=True))
        assert task.question.endswith('Format your response as follows: "The correct answer is (insert answer here)".')
        assert _right_choices(task) == [choices["ABCD".index(task.answer)]] == [task.meta["answer_text"]]
    assert len({t.answer for t in tasks}) >= 3  # the right letter moves around


def test_sizes_report_measures_the_preset(tmp_path: Path):
    from rlm.benchmarks.sizes import write_sizes

    text = write_sizes(tmp_path / "sizes.md", seed=0).read_text()
    assert "| oolong | 131,072 | 5 | 3,182 |" in text and "| oolong-pairs | 32,768 | 20 | 787 |" in text
    assert text.count("| 262,144 |") == 2 and "| 20 |" in text
