"""oolong: OOLONG-synth's trec_coarse task, regenerated offline (the RLM paper's OOLONG column).

Sources (facts transcribed, code written here):

* OOLONG, Bertsch et al. 2025 (arXiv:2511.02817) and its harness
  (github.com/abertsch72/oolong at ``adbf1cb56a0b0c7885649ac12589f7d6e215c841``). The
  synth construction code is not published there (its README lists it as not yet
  released); what is known of it: a window of ``L`` tokens holds
  ``(L * 0.95 - 418) // 39`` records (95% of the length, room for the instructions,
  ~39 tokens per trec_coarse record: 787 records at 32K, 3,182 at 131K); 80% of the
  records belong to the 20% most common user ids; each record has a date and a user id;
  the question kinds are OOLONG's task types (``MOST_FREQ``, ``LEAST_FREQ``,
  ``SECOND_MOST_FREQ``, ``RELATIVE_FREQ``, ``NUMERIC_ONE_CLASS`` and the user and
  timeline questions); "most common" and comparison questions are only asked when the
  counts involved differ by more than 2% of the records.
* The RLM paper (Zhang, Kraska, Khattab; arXiv:2512.24601v1, Appendix B.3) quotes an
  OOLONG trec_coarse prompt verbatim: the introduction in :data:`INTRO` and the
  comparison question with its answer format ``Answer: A is [X] B``.

How it is built: the context is :data:`INTRO`, one record per line
(``Date: Mar 04, 2023 || User: 48213 || Instance: What does KVR stand for?``) and a
closing line reminding that labels must be inferred (:data:`CLOSING`, our wording).
The question is ``Answer the following: In the above data, ...`` with an answer
format of OOLONG's kinds: ``Label: ...``, ``User: ...``, ``Date: ...`` or
``Answer: ...``. Gold answers are computed in code; ``meta["record_labels"]`` keeps
every record's hidden label so anyone can recompute them. Scoring is OOLONG's
official rule (:func:`rlm.benchmarks.scoring.oolong_official_score`); the older
lenient rule is reported beside it as ``lenient``.

Differences from OOLONG that remain: the instances are templated questions (one
family per trec_coarse class) rather than the TREC questions themselves, which
cannot be downloaded here; and the wording of the question kinds other than the
comparison, and of the closing line, is ours.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from rlm.benchmarks.scoring import oolong_lenient_score, oolong_official_score
from rlm.benchmarks.tasks import Task

NAME = "oolong"
DEFAULT_LENGTHS = [2 ** k for k in range(13, 18)]
#: The RLM paper's OOLONG setting (Table 1): 50 tasks over 131K-token windows.
PAPER_LENGTHS = [131_072]
PAPER_TASKS = 50

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


def records_for(length_tokens: int) -> int:
    """OOLONG's record count for an ``L``-token window: ``(L * 0.95 - 418) // 39`` (at least 8)."""
    return max(8, int((length_tokens * 0.95 - 418) // 39))


def make_users(rng: random.Random, n_records: int) -> tuple[list[int], list[int]]:
    """(heavy users, light users): a pool of ``0.64 * n_records`` distinct 5-digit ids, the first 20% heavy.

    Heavy users get 80% of the records (OOLONG's 80/20 rule). The pool size is set so that
    a 32K window (787 records) shows about 230 distinct users, as the RLM paper's
    OOLONG-Pairs windows do.
    """
    pool = rng.sample(range(10_000, 100_000), max(5, round(n_records * 0.64)))
    heavy = max(1, len(pool) // 5)
    return pool[:heavy], pool[heavy:]


def make_records(rng: random.Random, n_records: int) -> list[Record]:
    """``n_records`` records: per-task label weights, 80/20 users, dates over three years."""
    label_weights = [rng.uniform(0.3, 2.0) for _ in LABELS]
    heavy, light = make_users(rng, n_records)
    records = []
    for _ in range(n_records):
        label = rng.choices(LABELS, label_weights)[0]
        user = rng.choice(heavy if rng.random() < 0.8 or not light else light)
        records.append(Record(FIRST_DATE + dt.timedelta(days=rng.randrange(DAYS)), user, label,
                              _instance(label, rng)))
    return records


#: The data's introduction, as quoted from an OOLONG trec_coarse prompt in the RLM paper (App. B.3).
INTRO = ("The following lines contain thousands of general-knowledge questions, one per line. Each line has a "
         "User ID, which is not necessarily unique, i.e. each User ID can be associated with multiple questions. "
         "Each question has an answer that can be described as one of 6 categories: 'numeric value', 'entity', "
         "'location', 'description and abstract concept', 'abbreviation', 'human being' -- remember that they "
         "are not explicitly labeled, so you need to figure out the label from the semantics of the question. "
         "You will be asked to answer questions about the aggregate label statistics across all examples in "
         "this dataset. Do not try to guess, estimate, or approximate the result.")
#: The closing recall line (our wording: OOLONG's own is not published).
CLOSING = ("Recall: each question above has exactly one of the 6 category labels, which is not shown and must "
           "be figured out from the semantics of the question.")


def render_records(records: list[Record]) -> str:
    return "".join(record.render() + "\n" for record in records)


def render_context(records: list[Record]) -> str:
    """The whole context: introduction, one record per line, closing line."""
    return f"{INTRO}\n\n{render_records(records)}\n{CLOSING}\n"


def labels_code(records: list[Record]) -> str:
    """Every record's label as one digit (index into :data:`LABELS`), in order."""
    return "".join(str(LABELS.index(r.label)) for r in records)


# -- questions -------------------------------------------------------------------------
@dataclass(frozen=True)
class Question:
    """A question, its gold answer, OOLONG answer type and OOLONG task type."""

    kind: str
    text: str
    answer: str
    answer_type: str  # number, label, comparison, user, date
    oolong_task: str


def _gap_ok(a: int, b: int, n_records: int) -> bool:
    """OOLONG's filter: counts must differ by more than 2% of the records."""
    return abs(a - b) > 0.02 * n_records


def _label_counts(records: list[Record]) -> list[tuple[str, int]]:
    """Every label with its count, most common first (ties in :data:`LABELS` order)."""
    counts = Counter(r.label for r in records)
    return sorted(((label, counts[label]) for label in LABELS), key=lambda item: -item[1])


_LABEL_FORM = ("Give your final answer in the form 'Label: answer', where answer is one of the labels: "
               + ", ".join(LABELS) + ".")


def _ranked(records: list[Record], rank: int, kind: str, task: str, word: str) -> Question | None:
    ranked = _label_counts(records)
    n = len(records)
    neighbours = [ranked[i][1] for i in (rank - 1, rank + 1) if 0 <= i < len(ranked)]
    if not all(_gap_ok(ranked[rank][1], other, n) for other in neighbours):
        return None
    return Question(kind, f"In the above data, which of the labels is the {word}? {_LABEL_FORM}",
                    ranked[rank][0], "label", task)


def _q_most(records: list[Record], rng: random.Random) -> Question | None:
    return _ranked(records, 0, "most_common", "MOST_FREQ", "most common")


def _q_second(records: list[Record], rng: random.Random) -> Question | None:
    return _ranked(records, 1, "second_most_common", "SECOND_MOST_FREQ", "second most common")


def _q_least(records: list[Record], rng: random.Random) -> Question | None:
    return _ranked(records, len(LABELS) - 1, "least_common", "LEAST_FREQ", "least common")


def _comparison(a: str, b: str, na: int, nb: int, n: int, where: str, kind: str) -> Question | None:
    if not _gap_ok(na, nb, n):
        return None
    text = (f"In the above data{where}, is label '{a}' more common, less common, or the same frequency as label "
            f"'{b}'? Give your final answer in the form 'Answer: {a} is [X] {b}', where [X] is 'more common "
            "than', 'less common than', or 'same frequency as'.")
    return Question(kind, text, "more common than" if na > nb else "less common than", "comparison",
                    "RELATIVE_FREQ")


def _q_compare(records: list[Record], rng: random.Random) -> Question | None:
    a, b = rng.sample(LABELS, 2)
    counts = Counter(r.label for r in records)
    return _comparison(a, b, counts[a], counts[b], len(records), "", "compare")


def _q_count(records: list[Record], rng: random.Random) -> Question | None:
    label = rng.choice(LABELS)
    count = sum(1 for r in records if r.label == label)
    return Question("count", f"In the above data, how many data points should be classified as label '{label}'? "
                    "Give your final answer in the form 'Answer: number'.", str(count), "number",
                    "NUMERIC_ONE_CLASS")


def _q_top_user(records: list[Record], rng: random.Random) -> Question | None:
    label = rng.choice(LABELS)
    ranked = Counter(r.user for r in records if r.label == label).most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return Question("top_user", f"In the above data, which user has the most data points with label '{label}'? "
                    "Give your final answer in the form 'User: user_id'.", str(ranked[0][0]), "user", "USER_MOST_FREQ")


def _q_user_count(records: list[Record], rng: random.Random) -> Question | None:
    user, label = rng.choice(records).user, rng.choice(LABELS)
    count = sum(1 for r in records if r.user == user and r.label == label)
    return Question("user_count", f"In the above data, how many data points of user {user} should be classified "
                    f"as label '{label}'? Give your final answer in the form 'Answer: number'.", str(count),
                    "number", "USER_NUMERIC_ONE_CLASS")


def _cut_date(rng: random.Random) -> dt.date:
    return FIRST_DATE + dt.timedelta(days=rng.randrange(DAYS // 4, 3 * DAYS // 4))


def _q_after(records: list[Record], rng: random.Random) -> Question | None:
    cut, label = _cut_date(rng), rng.choice(LABELS)
    count = sum(1 for r in records if r.date > cut and r.label == label)
    return Question("count_after_date", f"In the above data, how many data points dated after "
                    f"{format_date(cut)} should be classified as label '{label}'? Give your final answer in the "
                    "form 'Answer: number'.", str(count), "number", "TIMELINE_NUMERIC_ONE_CLASS")


def _q_before_compare(records: list[Record], rng: random.Random) -> Question | None:
    cut = _cut_date(rng)
    a, b = rng.sample(LABELS, 2)
    early = Counter(r.label for r in records if r.date < cut)
    return _comparison(a, b, early[a], early[b], len(records), f" dated before {format_date(cut)}",
                       "compare_before_date")


def _q_first_date(records: list[Record], rng: random.Random) -> Question | None:
    user, label = rng.choice(records).user, rng.choice(LABELS)
    dates = [r.date for r in records if r.user == user and r.label == label]
    if not dates:
        return None
    return Question("user_first_date", f"In the above data, what is the earliest date of a data point of user "
                    f"{user} that should be classified as label '{label}'? Give your final answer in the form "
                    "'Date: answer'.", min(dates).isoformat(), "date", "TIMELINE_USER_FIRST")


QUESTION_KINDS: tuple[Callable[[list[Record], random.Random], Question | None], ...] = (
    _q_count, _q_most, _q_compare, _q_second, _q_top_user, _q_after, _q_least, _q_user_count,
    _q_before_compare, _q_first_date,
)


def make_question(records: list[Record], index: int, rng: random.Random, draws: int = 12) -> Question:
    """The ``index``-th kind (up to ``draws`` draws of its labels, users and dates), else the next kind."""
    for step in range(len(QUESTION_KINDS)):
        kind = QUESTION_KINDS[(index + step) % len(QUESTION_KINDS)]
        for _ in range(draws):
            if (question := kind(records, rng)) is not None:
                return question
    raise AssertionError("the count question always has an answer")


def make_task(index: int, length_tokens: int, rng: random.Random) -> Task:
    from rlm.benchmarks.tokens import count_tokens

    records = make_records(rng, records_for(length_tokens))
    question = make_question(records, index, rng)
    context = render_context(records)
    return Task(id=f"{NAME}-{length_tokens}-{index}", suite=NAME, question=f"Answer the following: {question.text}",
                answer=question.answer, context=context, length_tokens=length_tokens,
                meta={"kind": question.kind, "oolong_task": question.oolong_task, "answer_type": question.answer_type,
                      "labels": list(LABELS), "n_records": len(records), "n_users": len({r.user for r in records}),
                      "context_tokens": count_tokens(context), "record_labels": labels_code(records)})


def generate(n: int, lengths: list[int], seed: int) -> list[Task]:
    return [make_task(i, length, random.Random(f"{NAME}/{seed}/{length}/{i}"))
            for length in lengths for i in range(n)]


def score(task: Task, prediction: str | None) -> float:
    """OOLONG's official rule for the task's answer type."""
    return oolong_official_score(prediction, str(task.answer), task.meta["answer_type"])


def extra_scores(task: Task, prediction: str | None) -> dict[str, float]:
    """The lenient rule as a second, clearly named column (not comparable with OOLONG's numbers)."""
    return {"lenient": oolong_lenient_score(prediction, str(task.answer), task.meta["answer_type"],
                                            task.meta.get("labels", LABELS))}
