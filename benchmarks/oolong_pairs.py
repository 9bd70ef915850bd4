"""oolong-pairs: the RLM paper's OOLONG-Pairs, its 20 queries over OOLONG trec_coarse windows.

Source: Zhang, Kraska, Khattab, "Recursive Language Models", arXiv:2512.24601v1
(31 Dec 2025), Appendix E.1 lists the 20 tasks; §2.1 and Table 1 evaluate them over
32K-token windows and report F1. :data:`QUERIES` transcribes the 20 conditions in the
paper's order and wording, and every question ends with the paper's fixed suffix
(:data:`SUFFIX`; the appendix's PDF text shows the format as "(user id 1, user id
2)", which its Appendix B.2 trajectory prints as ``(user_id_1, user_id_2)``).

How it is built: the window is :mod:`rlm.benchmarks.oolong`'s for the same length
(``(L * 0.95 - 418) // 39`` records, 787 at 32K, about 230 distinct users, no cap),
with the same introduction and closing line; the question is ``Answer the
following: In the above data, list all pairs ... <suffix>``. Task ``i`` asks query
``i % 20 + 1``. A condition "all instances that are X ... must be after D" holds
vacuously for a user with no X instance (the paper does not say otherwise);
"after"/"before" are strict. Answers are pairs ``(lower id, higher id)``; the gold
answer is the sorted list of such strings (possibly empty). Scoring: F1 over the set
of unordered pairs (:func:`rlm.benchmarks.scoring.pairs_f1`).

Differences that remain: the instances are :mod:`~rlm.benchmarks.oolong`'s templated
questions, not TREC's; the paper does not publish its windows, so gold pair counts
differ from the paper's (its Appendix B.2 example has 406 gold pairs).
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from rlm.benchmarks import oolong
from rlm.benchmarks.oolong import LABELS, Record
from rlm.benchmarks.scoring import pairs_f1
from rlm.benchmarks.tasks import Task

NAME = "oolong-pairs"
DEFAULT_LENGTHS = [2 ** k for k in range(13, 18)]
#: The RLM paper's OOLONG-Pairs setting (Table 1): the 20 queries over 32K-token windows.
PAPER_LENGTHS = [32_768]
PAPER_TASKS = 20

ABBR, ENTITY, DESC, HUMAN, LOC, NUM = LABELS


@dataclass(frozen=True)
class UserProfile:
    """What the queries look at: a user's label counts and the dates of each label."""

    counts: Counter[str]
    dates: dict[str, list[dt.date]]


Predicate = Callable[[UserProfile], bool]


def at_least(label: str, k: int = 1) -> Predicate:
    return lambda u: u.counts[label] >= k


def exactly(label: str, k: int) -> Predicate:
    return lambda u: u.counts[label] == k


def none_of(label: str) -> Predicate:
    return lambda u: u.counts[label] == 0


def any_of(*labels: str) -> Predicate:
    return lambda u: any(u.counts[label] >= 1 for label in labels)


def all_after(label: str, day: dt.date) -> Predicate:
    return lambda u: all(d > day for d in u.dates.get(label, []))


def all_before(label: str, day: dt.date) -> Predicate:
    return lambda u: all(d < day for d in u.dates.get(label, []))


def both(*predicates: Predicate) -> Predicate:
    return lambda u: all(p(u) for p in predicates)


@dataclass(frozen=True)
class PairQuery:
    """A condition on a pair: ``first`` holds for both users, or (asymmetric) ``first`` for one and ``second``
    for the other."""

    text: str
    first: Predicate
    second: Predicate | None = None

    def holds(self, a: UserProfile, b: UserProfile) -> bool:
        if self.second is None:
            return self.first(a) and self.first(b)
        return (self.first(a) and self.second(b)) or (self.second(a) and self.first(b))


def _day(month: int, day: int) -> dt.date:
    return dt.date(2023, month, day)


def _f(day: dt.date) -> str:
    """The paper's date style: ``January 6, 2023``."""
    return f"{day:%B} {day.day}, {day.year}"


#: The paper's fixed suffix after each condition (Appendix E.1).
SUFFIX = ("Each of the questions can be labelled as one of the labels (the data does not provide the labels, you "
          "need to figure out the label from the semantics of the question): description and abstract concept, "
          "entity, human being, numeric value, location, abbreviation. In your answer, list all pairs in the format "
          "(user_id_1, user_id_2), separated by newlines.")
_BOTH = "where both users have at least one instance with"
_ONE = "such that one user has"

#: The paper's 20 OOLONG-Pairs conditions, in its order (Appendix E.1).
QUERIES: tuple[PairQuery, ...] = (
    PairQuery(f"{_BOTH} a numeric value or location", any_of(NUM, LOC)),
    PairQuery(f"{_BOTH} an entity or human being", any_of(ENTITY, HUMAN)),
    PairQuery(f"{_BOTH} a description and abstract concept or abbreviation", any_of(DESC, ABBR)),
    PairQuery(f"{_BOTH} a human being or location, and all instances that are a human being for both users must "
              f"be after {_f(_day(1, 6))}", both(any_of(HUMAN, LOC), all_after(HUMAN, _day(1, 6)))),
    PairQuery(f"{_BOTH} an entity or numeric value, and all instances that are an entity for both users must be "
              f"before {_f(_day(3, 15))}", both(any_of(ENTITY, NUM), all_before(ENTITY, _day(3, 15)))),
    PairQuery(f"{_BOTH} a location or abbreviation", any_of(LOC, ABBR)),
    PairQuery(f"{_BOTH} a description and abstract concept or numeric value, and all instances that are a numeric "
              f"value for both users must be after {_f(_day(2, 1))}",
              both(any_of(DESC, NUM), all_after(NUM, _day(2, 1)))),
    PairQuery(f"{_BOTH} a human being or description and abstract concept", any_of(HUMAN, DESC)),
    PairQuery(f"{_BOTH} an entity or location, and all instances that are a location for both users must be after "
              f"{_f(_day(4, 10))}", both(any_of(ENTITY, LOC), all_after(LOC, _day(4, 10)))),
    PairQuery(f"{_BOTH} a numeric value or abbreviation, and all instances that are an abbreviation for both users "
              f"must be before {_f(_day(5, 20))}", both(any_of(NUM, ABBR), all_before(ABBR, _day(5, 20)))),
    PairQuery(f"{_ONE} at least one instance with entity and one with abbreviation, and the other user has exactly "
              "one instance with entity", both(at_least(ENTITY), at_least(ABBR)), exactly(ENTITY, 1)),
    PairQuery(f"{_ONE} at least two instances with numeric value, and the other user has at least one instance "
              "with location and at least one instance with human being",
              at_least(NUM, 2), both(at_least(LOC), at_least(HUMAN))),
    PairQuery(f"{_ONE} exactly one instance with description and abstract concept, and the other user has at least "
              "one instance with abbreviation and at least one instance with entity",
              exactly(DESC, 1), both(at_least(ABBR), at_least(ENTITY))),
    PairQuery(f"{_ONE} at least one instance with human being and at least one instance with numeric value, and "
              "the other user has exactly two instances with location",
              both(at_least(HUMAN), at_least(NUM)), exactly(LOC, 2)),
    PairQuery(f"{_ONE} at least one instance with entity, at least one instance with location, and at least one "
              "instance with abbreviation, and the other user has exactly one instance with numeric value",
              both(at_least(ENTITY), at_least(LOC), at_least(ABBR)), exactly(NUM, 1)),
    PairQuery(f"{_ONE} at least one instance with description and abstract concept and at least one instance with "
              "human being, and the other user has at least two instances with entity and exactly one instance "
              "with abbreviation", both(at_least(DESC), at_least(HUMAN)), both(at_least(ENTITY, 2), exactly(ABBR, 1))),
    PairQuery(f"{_ONE} exactly one instance with numeric value, and the other user has at least one instance with "
              "location and at least one instance with description and abstract concept",
              exactly(NUM, 1), both(at_least(LOC), at_least(DESC))),
    PairQuery(f"{_ONE} at least one instance with abbreviation and exactly one instance with human being, and the "
              "other user has at least one instance with entity and at least one instance with numeric value",
              both(at_least(ABBR), exactly(HUMAN, 1)), both(at_least(ENTITY), at_least(NUM))),
    PairQuery(f"{_ONE} at least two instances with location and at least one instance with entity, and the other "
              "user has exactly one instance with description and abstract concept and exactly one instance with "
              "abbreviation", both(at_least(LOC, 2), at_least(ENTITY)), both(exactly(DESC, 1), exactly(ABBR, 1))),
    PairQuery(f"{_ONE} at least one instance with numeric value and at least one instance with human being, and the "
              "other user has at least one instance with location, at least one instance with entity, and exactly "
              "one instance with abbreviation", both(at_least(NUM), at_least(HUMAN)),
              both(at_least(LOC), at_least(ENTITY), exactly(ABBR, 1))),
)


def profiles(records: list[Record]) -> dict[int, UserProfile]:
    """Each user's label counts and label dates."""
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    dates: dict[int, dict[str, list[dt.date]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        counts[record.user][record.label] += 1
        dates[record.user][record.label].append(record.date)
    return {user: UserProfile(counts[user], dict(dates[user])) for user in counts}


def gold_pairs(records: list[Record], query: PairQuery) -> list[str]:
    """Sorted ``"(a, b)"`` strings, ``a < b``, for every pair of users satisfying ``query``."""
    users = profiles(records)
    return [f"({a}, {b})" for a, b in itertools.combinations(sorted(users), 2) if query.holds(users[a], users[b])]


def question_text(query: PairQuery) -> str:
    """The paper's question: the pairs request, the condition and the fixed suffix."""
    return ("Answer the following: In the above data, list all pairs of user IDs (no duplicate pairs, list lower ID "
            f"first) {query.text}. {SUFFIX}")


def make_task(index: int, length_tokens: int, rng: random.Random) -> Task:
    from rlm.benchmarks.tokens import count_tokens

    records = oolong.make_records(rng, oolong.records_for(length_tokens))
    number = index % len(QUERIES)
    query = QUERIES[number]
    context = oolong.render_context(records)
    return Task(id=f"{NAME}-{length_tokens}-{index}", suite=NAME, question=question_text(query),
                answer=gold_pairs(records, query), context=context, length_tokens=length_tokens,
                meta={"query": number + 1, "n_records": len(records), "n_users": len({r.user for r in records}),
                      "context_tokens": count_tokens(context), "labels": list(LABELS),
                      "record_labels": oolong.labels_code(records)})


def generate(n: int, lengths: list[int], seed: int) -> list[Task]:
    """Task ``i`` asks query ``i % 20 + 1``: ``--n 20`` covers all twenty, in the paper's order."""
    return [make_task(i, length, random.Random(f"{NAME}/{seed}/{length}/{i}"))
            for length in lengths for i in range(n)]


def score(task: Task, prediction: str | None) -> float:
    """F1 over unordered user-id pairs."""
    return pairs_f1(prediction, task.answer)
