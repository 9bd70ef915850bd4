"""s-niah: RULER's single needle-in-a-haystack task, regenerated offline.

Recipe (RULER ``niah_single``): one needle sentence ``One of the special magic
numbers for {key} is: {value}.`` is inserted at a seeded depth into a haystack of
the target length; ``key`` is an English adjective-noun pair (``hollow-lantern``),
``value`` a 7-digit number. Two haystacks, alternating by task index: ``noise``
(RULER's repeated filler, "The grass is green. The sky is blue. ...") and
``essay`` (templated essay-like prose standing in for RULER's Paul Graham essays,
which cannot be downloaded here). The question is RULER's: "What is the special
magic number for {key} mentioned in the provided text?". Scoring is RULER's
``string_match_all``: the share of gold strings (here one) found in the reply,
case-insensitive.
"""

from __future__ import annotations

import random

from rlm.benchmarks.scoring import string_match_all
from rlm.benchmarks.tasks import CHARS_PER_TOKEN, Task

NAME = "s-niah"
DEFAULT_LENGTHS = [2 ** k for k in range(13, 21)]

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
PREAMBLE = ("Some special magic numbers are hidden within the following text. Make sure to memorize it. "
            "I will quiz you about the numbers afterwards.")
NEEDLE = "One of the special magic numbers for {key} is: {value}. "
QUESTION = "What is the special magic number for {key} mentioned in the provided text?"
ANSWER_PREFIX = "The special magic number for {key} mentioned in the provided text is"

ADJECTIVES = (
    "amber ancient brave brittle calm clever crimson curious daring dusty eager electric elegant faded fierce "
    "gentle gilded glassy hidden hollow humble icy jagged jolly lively lonely lucky marble mellow misty "
    "nimble noble odd pale patient quiet rapid restless rusty scarlet secret silent silver sleepy smooth "
    "solemn spotted steady stormy sturdy swift tender tidy velvet vivid wandering wild wooden zealous"
).split()
NOUNS = (
    "anchor badger bakery banner beacon bishop blanket bottle bridge bucket cabinet canyon castle cellar "
    "chimney compass cottage dinosaur dolphin engine falcon feather fountain garden glacier hammer harbor "
    "helmet island jacket kettle ladder lantern library meadow mirror monastery needle orchard otter "
    "painter parrot pebble pencil pigeon pillow planet quarry quilt rabbit ribbon saddle satchel scarecrow "
    "teapot thimble tractor trumpet tunnel umbrella violin walrus window wizard"
).split()

# Word banks of the essay haystack; none of them is a key word, so the key occurs once.
_SUBJECTS = ("Most founders", "A good teacher", "The best essays", "Young programmers", "Every startup",
             "A careful reader", "Some investors", "Small companies", "Ambitious people", "The early web")
_VERBS = ("underestimate", "discover", "learn to value", "tend to ignore", "eventually rediscover",
          "rarely question", "quietly depend on", "often misjudge", "slowly understand", "argue about")
_OBJECTS = ("the cost of distraction", "how hard simple things are", "the power of habit",
            "what users actually want", "the value of writing things down", "the limits of planning",
            "the role of luck", "the speed of small teams", "the weight of old assumptions",
            "why curiosity compounds")
_TAILS = ("in their first year", "when the stakes are high", "until it is too late", "more than they admit",
          "without noticing", "in hindsight", "once they have shipped something", "after a long winter",
          "at the worst possible moment", "for reasons that are easy to miss")


def _essay_sentence(rng: random.Random) -> str:
    return f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}. "


def _haystack(kind: str, chars: int, rng: random.Random) -> list[str]:
    """Sentences adding up to at least ``chars`` characters."""
    sentences: list[str] = []
    total = 0
    while total < chars:
        sentence = NOISE if kind == "noise" else _essay_sentence(rng)
        sentences.append(sentence)
        total += len(sentence)
    return sentences


def make_task(index: int, length_tokens: int, rng: random.Random) -> Task:
    """One task of ``length_tokens`` tokens (chars / 4) with the needle at a seeded depth."""
    key = f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"
    value = str(rng.randint(1_000_000, 9_999_999))
    depth = rng.choice(range(0, 101, 10))
    kind = "noise" if index % 2 == 0 else "essay"
    needle = NEEDLE.format(key=key, value=value)
    sentences = _haystack(kind, length_tokens * CHARS_PER_TOKEN - len(needle), rng)
    position = round(len(sentences) * depth / 100)
    sentences.insert(position, needle)
    context = "".join(sentences)[: length_tokens * CHARS_PER_TOKEN].rstrip() + "\n"
    if needle.strip() not in context:  # a needle at 100% depth must survive the cut
        context = context[: len(context) - len(needle) - 1] + needle.strip() + "\n"
    return Task(id=f"{NAME}-{length_tokens}-{index}", suite=NAME, question=QUESTION.format(key=key),
                answer=[value], context=context, length_tokens=length_tokens,
                meta={"key": key, "depth_percent": depth, "haystack": kind, "preamble": PREAMBLE,
                      "answer_prefix": ANSWER_PREFIX.format(key=key)})


def generate(n: int, lengths: list[int], seed: int) -> list[Task]:
    """``n`` tasks per length; one ``random.Random`` per (seed, length, index), so tasks are independent."""
    return [make_task(i, length, random.Random(f"{NAME}/{seed}/{length}/{i}"))
            for length in lengths for i in range(n)]


def score(task: Task, prediction: str | None) -> float:
    """RULER string_match_all over the task's gold values."""
    gold = task.answer if isinstance(task.answer, list) else [task.answer]
    return string_match_all(prediction, gold)
