"""oolong-pairs: pair-of-users queries over OOLONG-style records (the RLM paper's OOLONG-Pairs).

How it is built: the records are :mod:`rlm.benchmarks.oolong`'s (date, user id,
a templated instance whose trec_coarse label is hidden), with a smaller user
pool so that pairs stay countable. Each task asks one of the 20 queries in
:data:`QUERIES`: list every pair of user ids that satisfies a condition on the
two users' labels (and sometimes dates). The RLM paper's appendix lists 20 such
queries; we could not reproduce their exact wording here, so these are 20
templates written in the same style and covering the same shapes: symmetric
conditions ("both users have at least one ... or ..."), symmetric conditions with a
date restriction ("... and all of their 'human being' instances are after ..."),
and asymmetric ones ("one user has ..., and the other has exactly ..."). A
condition "all X instances are after D" holds vacuously for a user with none.

Answers are pairs ``(lower id, higher id)``, one per line; the gold answer is the
sorted list of such strings (possibly empty). Scoring: F1 over the set of
unordered pairs (:func:`rlm.benchmarks.scoring.pairs_f1`: an empty gold set scores
1.0 for an answer with no pair and 0.0 otherwise; lines without a pair are ignored).
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Callable

from rlm.benchmarks import oolong
from rlm.benchmarks.oolong import LABELS, Record
from rlm.benchmarks.scoring import pairs_f1
from rlm.benchmarks.tasks import CHARS_PER_TOKEN, Task

NAME = "oolong-pairs"
DEFAULT_LENGTHS = [2 ** k for k in range(13, 18)]

ABBR, ENTITY, DESC, HUMAN, LOC, NUM = LABELS


@dataclass(frozen=True)
class UserProfile:
    """What the queries look at: a user's label counts and the dates of each label."""

    counts: Counter
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
    """A condition on a pair: ``first`` holds for both users, or (asymmetric) ``first`` for one and ``second`` for the other."""

    text: str
    first: Predicate
    second: Predicate | None = None

    def holds(self, a: UserProfile, b: UserProfile) -> bool:
        if self.second is None:
            return self.first(a) and self.first(b)
        return (self.first(a) and self.second(b)) or (self.second(a) and self.first(b))


D1, D2, D3, D4 = dt.date(2023, 1, 6), dt.date(2023, 3, 15), dt.date(2023, 7, 1), dt.date(2023, 10, 20)
_F = oolong.format_date

#: The 20 pair queries (our wording; see the module docstring).
QUERIES: tuple[PairQuery, ...] = (
    PairQuery(f"both users have at least one instance with a '{NUM}' or '{LOC}' label", any_of(NUM, LOC)),
    PairQuery(f"both users have at least one instance with an '{ENTITY}' or '{HUMAN}' label", any_of(ENTITY, HUMAN)),
    PairQuery(f"both users have at least one instance with a '{DESC}' or '{ABBR}' label", any_of(DESC, ABBR)),
    PairQuery(f"both users have at least one instance with a '{HUMAN}' or '{LOC}' label, and all instances "
              f"labelled '{HUMAN}' of both users are dated after {_F(D1)}",
              both(any_of(HUMAN, LOC), all_after(HUMAN, D1))),
    PairQuery(f"both users have at least one instance with an '{ENTITY}' or '{NUM}' label, and all instances "
              f"labelled '{ENTITY}' of both users are dated before {_F(D3)}",
              both(any_of(ENTITY, NUM), all_before(ENTITY, D3))),
    PairQuery(f"both users have at least one instance with a '{LOC}' or '{ABBR}' label", any_of(LOC, ABBR)),
    PairQuery(f"both users have at least one instance with a '{DESC}' or '{NUM}' label, and all instances "
              f"labelled '{NUM}' of both users are dated after {_F(D2)}",
              both(any_of(DESC, NUM), all_after(NUM, D2))),
    PairQuery(f"both users have at least one instance with a '{HUMAN}' or '{DESC}' label", any_of(HUMAN, DESC)),
    PairQuery(f"both users have at least one instance with an '{ENTITY}' or '{LOC}' label, and all instances "
              f"labelled '{LOC}' of both users are dated after {_F(D1)}",
              both(any_of(ENTITY, LOC), all_after(LOC, D1))),
    PairQuery(f"both users have at least one instance with a '{NUM}' or '{ABBR}' label, and all instances "
              f"labelled '{ABBR}' of both users are dated before {_F(D4)}",
              both(any_of(NUM, ABBR), all_before(ABBR, D4))),
    PairQuery(f"both users have exactly one instance labelled '{HUMAN}'", exactly(HUMAN, 1)),
    PairQuery(f"both users have at least one instance labelled '{NUM}' and no instance labelled '{LOC}'",
              both(at_least(NUM), none_of(LOC))),
    PairQuery(f"one user has at least one instance labelled '{ENTITY}' and at least one labelled '{ABBR}', and "
              f"the other user has exactly one instance labelled '{ENTITY}'",
              both(at_least(ENTITY), at_least(ABBR)), exactly(ENTITY, 1)),
    PairQuery(f"one user has at least two instances labelled '{NUM}', and the other user has at least one "
              f"instance labelled '{LOC}' and at least one labelled '{HUMAN}'",
              at_least(NUM, 2), both(at_least(LOC), at_least(HUMAN))),
    PairQuery(f"one user has exactly one instance labelled '{DESC}', and the other user has at least one "
              f"instance labelled '{ABBR}' and at least one labelled '{ENTITY}'",
              exactly(DESC, 1), both(at_least(ABBR), at_least(ENTITY))),
    PairQuery(f"one user has at least one instance labelled '{HUMAN}' and at least one labelled '{NUM}', and "
              f"the other user has exactly two instances labelled '{LOC}'",
              both(at_least(HUMAN), at_least(NUM)), exactly(LOC, 2)),
    PairQuery(f"one user has at least one instance labelled '{ENTITY}', one labelled '{LOC}' and one labelled "
              f"'{ABBR}', and the other user has exactly one instance labelled '{NUM}'",
              both(at_least(ENTITY), at_least(LOC), at_least(ABBR)), exactly(NUM, 1)),
    PairQuery(f"one user has at least one instance labelled '{DESC}' and at least one labelled '{HUMAN}', and "
              f"the other user has at least two instances labelled '{ABBR}' and exactly one labelled '{ENTITY}'",
              both(at_least(DESC), at_least(HUMAN)), both(at_least(ABBR, 2), exactly(ENTITY, 1))),
    PairQuery(f"one user has at least one instance labelled '{LOC}', all of them dated after {_F(D2)}, and the "
              f"other user has at least one instance labelled '{ENTITY}', all of them dated before {_F(D3)}",
              both(at_least(LOC), all_after(LOC, D2)), both(at_least(ENTITY), all_before(ENTITY, D3))),
    PairQuery(f"one user has no instance labelled '{ABBR}', and the other user has at least three instances "
              f"labelled '{DESC}'", none_of(ABBR), at_least(DESC, 3)),
)


def profiles(records: list[Record]) -> dict[int, UserProfile]:
    """Each user's label counts and label dates."""
    counts: dict[int, Counter] = defaultdict(Counter)
    dates: dict[int, dict[str, list[dt.date]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        counts[record.user][record.label] += 1
        dates[record.user][record.label].append(record.date)
    return {user: UserProfile(counts[user], dict(dates[user])) for user in counts}


def gold_pairs(records: list[Record], query: PairQuery) -> list[str]:
    """Sorted ``"(a, b)"`` strings, ``a < b``, for every pair of users satisfying ``query``."""
    users = profiles(records)
    return [f"({a}, {b})" for a, b in itertools.combinations(sorted(users), 2) if query.holds(users[a], users[b])]


def question_text(query: PairQuery, n_records: int) -> str:
    return (f"{oolong.context_preamble(n_records)}\n\nIn the data, list all pairs of user IDs (no duplicate "
            f"pairs, list the lower ID first) where {query.text}. List one pair per line in the format "
            "(user_id_1, user_id_2). If no pair qualifies, answer 'none'.")


def make_task(index: int, length_tokens: int, rng: random.Random) -> Task:
    chars = length_tokens * CHARS_PER_TOKEN
    records = oolong.make_records(rng, chars, n_users=max(8, min(60, chars // 85 // 30)))
    number = index % len(QUERIES)
    query = QUERIES[number]
    return Task(id=f"{NAME}-{length_tokens}-{index}", suite=NAME, question=question_text(query, len(records)),
                answer=gold_pairs(records, query), context=oolong.render_records(records),
                length_tokens=length_tokens,
                meta={"query": number + 1, "n_records": len(records), "labels": list(LABELS),
                      "record_labels": oolong.labels_code(records)})


def generate(n: int, lengths: list[int], seed: int) -> list[Task]:
    """Task ``i`` asks query ``i % 20 + 1``: ``--n 20`` covers all twenty."""
    return [make_task(i, length, random.Random(f"{NAME}/{seed}/{length}/{i}"))
            for length in lengths for i in range(n)]


def score(task: Task, prediction: str | None) -> float:
    """F1 over unordered user-id pairs."""
    return pairs_f1(prediction, task.answer)
