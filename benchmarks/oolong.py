"""oolong: OOLONG-synth-style aggregation over many short labelled records.

How it is built: the context is one record per line,
``Date: Mar 04, 2023 || User: 48213 || Instance: What does KVR stand for?``.
Each instance is a short general-knowledge question made from templates, one
family per trec_coarse class (``abbreviation``, ``entity``, ``description and
abstract concept``, ``human being``, ``location``, ``numeric value``); as in
OOLONG-synth the label is *not* in the context and must be inferred from the
instance's meaning. Users follow a skewed (Zipf) distribution; label
frequencies are drawn per task. Questions (one per task, cycling through
:data:`QUESTION_KINDS`) ask for counts, the most/least frequent label, label
comparisons, per-user facts and timeline facts; gold answers are computed in
code from the generated records (``meta["record_labels"]`` keeps every record's
label index, so anyone can recompute them). Scoring follows OOLONG: numbers
``0.75 ** |gold - pred|``, labels and user ids exact match, comparisons by phrase.

Differences from OOLONG: the instances are templated rather than drawn from the
trec_coarse dataset (which cannot be downloaded here), so the classes are easier
to tell apart; token counts are ``chars / 4`` rather than a real tokenizer.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from rlm.benchmarks.scoring import oolong_score
from rlm.benchmarks.tasks import CHARS_PER_TOKEN, Task

NAME = "oolong"
DEFAULT_LENGTHS = [2 ** k for k in range(13, 18)]

LABELS = ("abbreviation", "entity", "description and abstract concept", "human being", "location",
          "numeric value")
FIRST_DATE = dt.date(2022, 1, 1)
DAYS = 3 * 365

_SYLLABLES = ("ka ri mo ve lan tor is ur en bel dra fin gal hes ost pra quen sil tam vor wen yel zan "
              "cor mir nad pel rus thi").split()
_THINGS = ("bridges", "lighthouses", "islands", "moons", "libraries", "rivers", "towers", "villages")
_DEVICES = ("barometer", "loom", "telescope", "printing press", "compass", "water clock", "kiln", "sextant")
_CONCEPTS = ("nostalgia", "irony", "entropy", "stoicism", "inflation", "democracy", "metaphor", "altruism")
_PHENOMENA = ("thunder", "rust", "the tide", "a rainbow", "frost", "an echo", "a mirage", "static electricity")
_CREATURES = ("axolotl", "pangolin", "quokka", "okapi", "narwhal", "tapir", "kinkajou", "saiga")

#: Instance templates per label; ``{name}``, ``{place}``, ``{acro}`` ... are filled from word banks.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "abbreviation": ("What does {acro} stand for?", "What is the full form of {acro}?",
                     "What does the acronym {acro} mean?", "What is {acro} short for?"),
    "entity": ("What kind of animal is a {creature}?", "What is the name of the ship in the novel {title}?",
               "Which instrument does {name} play?", "What breed of dog is {name}'s dog?",
               "What currency is used in {place}?"),
    "description and abstract concept": ("What is the meaning of {concept}?", "Why does {phenomenon} happen?",
                                         "How does a {device} work?", "What is the definition of {concept}?",
                                         "What is the origin of the festival of {place}?"),
    "human being": ("Who wrote {title}?", "Who invented the {device}?", "Who was the first mayor of {place}?",
                    "Who founded the company {company}?", "Who painted the portrait of {name}?"),
    "location": ("Where is {place} located?", "In which country is the city of {place}?",
                 "Where can you find the {title} monument?", "What river runs through {place}?"),
    "numeric value": ("How many {things} are there in {place}?", "When was {company} founded?",
                      "How tall is the tower of {place}?", "In what year was {title} published?",
                      "How far is {place} from the sea?"),
}


@dataclass(frozen=True)
class Record:
    """One line of the context; ``label`` is the hidden gold class."""

    date: dt.date
    user: int
    label: str
    text: str

    def render(self) -> str:
        return f"Date: {format_date(self.date)} || User: {self.user} || Instance: {self.text}"


def format_date(day: dt.date) -> str:
    """``Jan 05, 2023`` (OOLONG-synth's date style)."""
    return day.strftime("%b %d, %Y")


def _word(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(parts)).capitalize()


def _instance(label: str, rng: random.Random) -> str:
    slots = {
        "acro": "".join(rng.choice("BCDFGHJKLMNPRSTVWXZ") for _ in range(rng.randint(3, 4))),
        "name": f"{_word(rng, 2)} {_word(rng, 2)}", "place": _word(rng, 3), "company": f"{_word(rng, 2)} Works",
        "title": f"The {_word(rng, 2)} {rng.choice(('Letters', 'Garden', 'Voyage', 'Winter', 'Crown'))}",
        "things": rng.choice(_THINGS), "device": rng.choice(_DEVICES), "concept": rng.choice(_CONCEPTS),
        "phenomenon": rng.choice(_PHENOMENA), "creature": rng.choice(_CREATURES),
    }
    return rng.choice(TEMPLATES[label]).format(**slots)


def make_users(rng: random.Random, count: int) -> tuple[list[int], list[float]]:
    """``count`` distinct 5-digit user ids with Zipf(1.1) weights (a few users own most records)."""
    users = rng.sample(range(10_000, 100_000), count)
    return users, [1.0 / (rank + 1) ** 1.1 for rank in range(count)]


def make_records(rng: random.Random, chars: int, n_users: int | None = None) -> list[Record]:
    """Records whose rendered lines add up to about ``chars`` characters."""
    label_weights = [rng.uniform(0.3, 2.0) for _ in LABELS]
    expected = max(8, chars // 85)
    users, user_weights = make_users(rng, n_users or max(6, min(400, expected // 20)))
    records: list[Record] = []
    total = 0
    while total < chars:
        label = rng.choices(LABELS, label_weights)[0]
        record = Record(FIRST_DATE + dt.timedelta(days=rng.randrange(DAYS)), rng.choices(users, user_weights)[0],
                        label, _instance(label, rng))
        records.append(record)
        total += len(record.render()) + 1
    return records


def render_records(records: list[Record]) -> str:
    return "".join(record.render() + "\n" for record in records)


def labels_code(records: list[Record]) -> str:
    """Every record's label as one digit (index into :data:`LABELS`), in order."""
    return "".join(str(LABELS.index(r.label)) for r in records)


# -- questions -------------------------------------------------------------------------
@dataclass(frozen=True)
class Question:
    """A question, its gold answer and OOLONG answer type (``number``, ``label``, ``comparison``, ``user``)."""

    kind: str
    text: str
    answer: str
    answer_type: str


def _unique_extreme(counts: Counter, pick: Callable[..., int]) -> str | None:
    if not counts:
        return None
    best = pick(counts.values())
    winners = [key for key, value in counts.items() if value == best]
    return str(winners[0]) if len(winners) == 1 else None


def _compare(a: int, b: int) -> str:
    return "more common than" if a > b else "less common than" if a < b else "same frequency as"


def _full_label_counts(records: list[Record]) -> Counter:
    return Counter({label: sum(1 for r in records if r.label == label) for label in LABELS})


def _q_count(records: list[Record], rng: random.Random) -> Question | None:
    label = rng.choice(LABELS)
    count = sum(1 for r in records if r.label == label)
    return Question("count", f"How many instances should be labelled as '{label}'?", str(count), "number")


def _q_most(records: list[Record], rng: random.Random) -> Question | None:
    best = _unique_extreme(_full_label_counts(records), max)
    return best and Question("most_common", "Which label is the most common among all instances?", best, "label")


def _q_least(records: list[Record], rng: random.Random) -> Question | None:
    worst = _unique_extreme(_full_label_counts(records), min)
    return worst and Question("least_common", "Which label is the least common among all instances?", worst,
                              "label")


def _q_compare(records: list[Record], rng: random.Random) -> Question | None:
    a, b = rng.sample(LABELS, 2)
    counts = _full_label_counts(records)
    return Question("compare", f"Is the label '{a}' more common than, less common than, or the same frequency as "
                    f"the label '{b}'?", _compare(counts[a], counts[b]), "comparison")


def _busy_users(records: list[Record], minimum: int) -> list[int]:
    counts = Counter(r.user for r in records)
    return sorted(user for user, n in counts.items() if n >= minimum)


def _q_user_most(records: list[Record], rng: random.Random) -> Question | None:
    users = _busy_users(records, 3)
    for user in rng.sample(users, k=len(users)):
        best = _unique_extreme(Counter(r.label for r in records if r.user == user), max)
        if best:
            return Question("user_most_common", f"For user {user}, which label is the most common among that "
                            "user's instances?", best, "label")
    return None


def _q_user_count(records: list[Record], rng: random.Random) -> Question | None:
    users = _busy_users(records, 2)
    if not users:
        return None
    user, label = rng.choice(users), rng.choice(LABELS)
    count = sum(1 for r in records if r.user == user and r.label == label)
    return Question("user_count", f"How many instances of user {user} should be labelled as '{label}'?",
                    str(count), "number")


def _q_after(records: list[Record], rng: random.Random) -> Question | None:
    cut = FIRST_DATE + dt.timedelta(days=rng.randrange(DAYS // 4, 3 * DAYS // 4))
    label = rng.choice(LABELS)
    count = sum(1 for r in records if r.date > cut and r.label == label)
    return Question("count_after_date", f"How many instances dated after {format_date(cut)} should be labelled "
                    f"as '{label}'?", str(count), "number")


def _q_top_user(records: list[Record], rng: random.Random) -> Question | None:
    label = rng.choice(LABELS)
    best = _unique_extreme(Counter(r.user for r in records if r.label == label), max)
    return best and Question("top_user", f"Which user has the most instances labelled as '{label}'? "
                             "Answer with the user id.", best, "user")


def _q_before_compare(records: list[Record], rng: random.Random) -> Question | None:
    cut = FIRST_DATE + dt.timedelta(days=rng.randrange(DAYS // 4, 3 * DAYS // 4))
    a, b = rng.sample(LABELS, 2)
    early = [r for r in records if r.date < cut]
    na, nb = sum(r.label == a for r in early), sum(r.label == b for r in early)
    return Question("compare_before_date", f"Among instances dated before {format_date(cut)}, is the label '{a}' "
                    f"more common than, less common than, or the same frequency as the label '{b}'?",
                    _compare(na, nb), "comparison")


QUESTION_KINDS: tuple[Callable[[list[Record], random.Random], Question | None], ...] = (
    _q_count, _q_most, _q_compare, _q_user_most, _q_after, _q_least, _q_top_user, _q_user_count,
    _q_before_compare,
)


def context_preamble(n_records: int) -> str:
    """The part of every question that explains the data (OOLONG-synth states the labels in the question)."""
    return (f"The context holds {n_records} lines, each 'Date: ... || User: ... || Instance: <a question>'. "
            "Each instance can be labelled with exactly one of these labels: "
            + ", ".join(f"'{label}'" for label in LABELS)
            + ". The labels are not given: infer each instance's label from its meaning.")


def make_question(records: list[Record], index: int, rng: random.Random) -> Question:
    """The ``index``-th kind, or the next kind that has an unambiguous answer for these records."""
    for step in range(len(QUESTION_KINDS)):
        question = QUESTION_KINDS[(index + step) % len(QUESTION_KINDS)](records, rng)
        if question is not None:
            return question
    raise AssertionError("the count question always has an answer")


def make_task(index: int, length_tokens: int, rng: random.Random) -> Task:
    records = make_records(rng, length_tokens * CHARS_PER_TOKEN)
    question = make_question(records, index, rng)
    text = (f"{context_preamble(len(records))}\n\n{question.text}\n\n"
            + ("Answer with one of the phrases 'more common than', 'less common than' or 'same frequency as'. "
               if question.answer_type == "comparison" else "")
            + "Give your final answer in the form 'Answer: ...'.")
    return Task(id=f"{NAME}-{length_tokens}-{index}", suite=NAME, question=text, answer=question.answer,
                context=render_records(records), length_tokens=length_tokens,
                meta={"kind": question.kind, "answer_type": question.answer_type, "labels": list(LABELS),
                      "n_records": len(records), "record_labels": labels_code(records)})


def generate(n: int, lengths: list[int], seed: int) -> list[Task]:
    return [make_task(i, length, random.Random(f"{NAME}/{seed}/{length}/{i}"))
            for length in lengths for i in range(n)]


def score(task: Task, prediction: str | None) -> float:
    """OOLONG's rule for the task's answer type."""
    return oolong_score(prediction, str(task.answer), task.meta["answer_type"], task.meta.get("labels", LABELS))
