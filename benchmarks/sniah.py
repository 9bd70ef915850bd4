"""s-niah: RULER's single needle-in-a-haystack task (``niah_single_1`` / ``niah_single_2``), offline.

Source: RULER (Hsieh et al. 2024), github.com/hsiehjackson/RULER at
``e40fae14df4e439bb355d395b574ac4e7398036d``: ``scripts/data/synthetic/niah.py`` and
the ``niah`` entries of ``scripts/data/synthetic/constants.py`` and
``scripts/eval/synthetic/constants.py`` (facts transcribed, code written here).

Recipe: one needle ``One of the special magic numbers for {key} is: {value}.``
(``key`` an adjective-noun pair such as ``hollow-lantern``, ``value`` a 7-digit
number). With one needle and one query RULER turns its plural template singular:
"A special magic number is hidden within the following text. Make sure to memorize
it. I will quiz you about the number afterwards." / "What is the special magic number
for {key} mentioned in the provided text?" / answer prefix "The special magic number
for {key} mentioned in the provided text is". Two haystacks alternate by task index:

* ``noise`` (``niah_single_1``): RULER's repeated sentence, one per line (joined with
  newlines), the needle inserted as a line at a random position;
* ``essay`` (``niah_single_2``): sentences joined with spaces, the needle inserted at a
  depth drawn from RULER's 40 depths (``linspace(0, 100, 40)`` rounded). RULER uses
  Paul Graham's essays, which cannot be downloaded here; ours are templated essay-like
  sentences.

Length: the whole prompt (preamble, haystack, question, answer prefix) plus RULER's
128 tokens to generate fits the target length, counted with the ``o200k_base``
tokenizer (:mod:`rlm.benchmarks.tokens`). Scoring is RULER's ``string_match_all``.
"""

from __future__ import annotations

import random

from rlm.benchmarks.scoring import string_match_all
from rlm.benchmarks.tasks import Task
from rlm.benchmarks.tokens import count_tokens

NAME = "s-niah"
DEFAULT_LENGTHS = [2 ** k for k in range(13, 21)]
#: The RLM paper's S-NIAH setting: 50 tasks per length, 2^13 .. 2^18 tokens (Figure 1 of arXiv:2512.24601v1).
PAPER_LENGTHS = [2 ** k for k in range(13, 19)]
PAPER_TASKS = 50

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
PREAMBLE = ("A special magic number is hidden within the following text. Make sure to memorize it. "
            "I will quiz you about the number afterwards.")
NEEDLE = "One of the special magic numbers for {key} is: {value}."
QUESTION = "What is the special magic number for {key} mentioned in the provided text?"
ANSWER_PREFIX = "The special magic number for {key} mentioned in the provided text is"
#: RULER's ``tokens_to_generate`` for niah: room kept for the reply.
TOKENS_TO_GENERATE = 128
#: RULER's needle depths: ``np.round(np.linspace(0, 100, num=40)).astype(int)`` (no value is a rounding tie).
DEPTHS = tuple(round(100 * i / 39) for i in range(40))

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
    return f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}."


def full_prompt(context: str, key: str) -> str:
    """What a model reading the task directly gets (RULER's template with the answer prefix)."""
    return f"{PREAMBLE}\n{context}\n{QUESTION.format(key=key)} {ANSWER_PREFIX.format(key=key)}"


def _budget(length_tokens: int, key: str, needle: str) -> int:
    """Tokens left for the haystack once the template, the needle and the reply are counted."""
    return length_tokens - TOKENS_TO_GENERATE - count_tokens(full_prompt(needle, key)) - 2


def _noise(budget: int, needle: str, rng: random.Random) -> tuple[list[str], int]:
    lines = [NOISE] * max(0, budget // count_tokens(NOISE + "\n"))
    position = rng.randrange(len(lines) + 1)
    lines.insert(position, needle)
    return lines, round(100 * position / max(len(lines) - 1, 1))


def _essay(budget: int, needle: str, rng: random.Random) -> tuple[list[str], int]:
    sentences, used = [], 0
    sizes: dict[str, int] = {}
    while True:
        sentence = _essay_sentence(rng)
        size = sizes.setdefault(sentence, count_tokens(" " + sentence))
        if used + size > budget:
            break
        sentences.append(sentence)
        used += size
    depth = rng.choice(DEPTHS)
    sentences.insert(int(len(sentences) * depth / 100), needle)
    return sentences, depth


def _fit(joiner: str, units: list[str], needle: str, key: str, length_tokens: int) -> tuple[str, int]:
    """Join the haystack; while the prompt is over budget (token counts are not additive), drop its tail."""
    while True:
        context = joiner.join(units)
        tokens = count_tokens(full_prompt(context, key))
        over = tokens + TOKENS_TO_GENERATE - length_tokens
        if over <= 0 or len(units) <= 1:
            return context, tokens
        for _ in range(max(1, over // 8)):
            del units[len(units) - (2 if units[-1] == needle else 1)]


def make_task(index: int, length_tokens: int, rng: random.Random) -> Task:
    """One task whose full prompt plus 128 reply tokens fits ``length_tokens`` (o200k_base)."""
    key = f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"
    value = str(rng.randint(1_000_000, 9_999_999))
    kind = "noise" if index % 2 == 0 else "essay"
    needle = NEEDLE.format(key=key, value=value)
    budget = _budget(length_tokens, key, needle)
    units, depth = (_noise if kind == "noise" else _essay)(budget, needle, rng)
    context, tokens = _fit("\n" if kind == "noise" else " ", units, needle, key, length_tokens)
    return Task(id=f"{NAME}-{length_tokens}-{index}", suite=NAME, question=QUESTION.format(key=key),
                answer=[value], context=context, length_tokens=length_tokens,
                meta={"key": key, "depth_percent": depth, "haystack": kind, "preamble": PREAMBLE,
                      "answer_prefix": ANSWER_PREFIX.format(key=key), "prompt_tokens": tokens})


def generate(n: int, lengths: list[int], seed: int) -> list[Task]:
    """``n`` tasks per length; one ``random.Random`` per (seed, length, index), so tasks are independent."""
    return [make_task(i, length, random.Random(f"{NAME}/{seed}/{length}/{i}"))
            for length in lengths for i in range(n)]


def score(task: Task, prediction: str | None) -> float:
    """RULER string_match_all over the task's gold values."""
    gold = task.answer if isinstance(task.answer, list) else [task.answer]
    return string_match_all(prediction, gold)
