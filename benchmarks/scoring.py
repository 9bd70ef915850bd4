"""Scorers: the published rules of each suite, as pure functions of (prediction, gold).

* RULER (s-niah): :func:`string_match_all` -- the fraction of gold strings found in
  the prediction, case-insensitive (RULER's ``string_match_all``,
  ``scripts/eval/synthetic/constants.py``; control characters in the prediction become
  newlines first, as RULER's post-processing does).
* OOLONG: :func:`oolong_official_score` -- the official rule of OOLONG's
  ``src/eval/eval_helpers.py`` (``synth_attempt_answer_parse`` and
  ``synth_process_response``, github.com/abertsch72/oolong at commit
  ``adbf1cb56a0b0c7885649ac12589f7d6e215c841``, 2025-11-09), re-written here from its
  description: see :func:`oolong_parse_answer`. :func:`oolong_lenient_score` is this
  project's earlier, more forgiving rule, kept as a clearly named second column; it is
  not comparable with published OOLONG numbers.
* OOLONG-Pairs: :func:`pairs_f1` -- F1 between the predicted and the gold sets of
  unordered user-id pairs. Rules (ours; the paper only says "F1 scores over the
  answer"): a pair is ``(a, b)`` anywhere in the text, or a line holding just
  ``a, b``; a pair is unordered, duplicates count once, ``(a, a)`` is ignored; lines
  that hold no pair are ignored (counted as ``malformed`` in :func:`parse_pairs`, never
  penalised beyond contributing nothing). An **empty gold set** scores 1.0 when the
  prediction has no pair and 0.0 otherwise.
* LongBench-v2 (codeqa-like): :func:`longbench_extract_choice` and
  :func:`longbench_choice_score` -- ``extract_answer`` of LongBench-v2's ``pred.py``
  (github.com/THUDM/LongBench at ``2e00731f8d0bff23dc4325161044d0ed8af94c1e``):
  ``*`` removed, then ``The correct answer is \\(([A-D])\\)``, else ``The correct
  answer is ([A-D])``; accuracy is exact equality with the gold letter.
* browsecomp-plus-like: :func:`short_answer_match` -- normalised exact match
  (lowercase, no punctuation or articles); a longer reply also scores when it contains
  the gold answer as whole words and none of the task's distractor answers. (With a
  judge model configured, the runner grades these answers with the judge instead.)
* legacy free-form codeqa tasks: :func:`module_match`, :func:`integer_match`, :func:`set_f1`.
"""

from __future__ import annotations

import datetime as dt
import re
import string
from collections.abc import Iterable, Set

__all__ = [
    "COMPARISON_PHRASES",
    "answer_part",
    "first_integer",
    "integer_match",
    "module_match",
    "longbench_choice_score",
    "longbench_extract_choice",
    "normalize_text",
    "oolong_lenient_score",
    "oolong_official_score",
    "oolong_parse_answer",
    "pairs_f1",
    "parse_name_list",
    "parse_pairs",
    "set_f1",
    "short_answer_match",
    "string_match_all",
]

COMPARISON_PHRASES = ("more common than", "less common than", "same frequency as")
_CONTROL = re.compile(r"[\x00-\x1f]")
_ANSWER_MARK = re.compile(r"answer\s*:", re.IGNORECASE)
_INT = re.compile(r"-?\d[\d,]*")
_PAIR = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)")
_BARE_PAIR_LINE = re.compile(r"^\s*(\d+)\s*[,;\t ]\s*(\d+)\s*$")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


# -- RULER ---------------------------------------------------------------------------
def string_match_all(prediction: str | None, references: Iterable[str]) -> float:
    """RULER's string_match_all for one prediction: share of references found (case-insensitive)."""
    refs = list(references)
    if not refs:
        raise ValueError("no reference strings")
    text = _CONTROL.sub("\n", prediction or "").strip().lower()
    return sum(1.0 for ref in refs if ref.lower() in text) / len(refs)


# -- OOLONG --------------------------------------------------------------------------
def answer_part(prediction: str | None) -> str:
    """The text after the last ``Answer:`` (or the whole reply), stripped of quotes and brackets."""
    text = prediction or ""
    marks = list(_ANSWER_MARK.finditer(text))
    if marks:
        text = text[marks[-1].end():]
    return text.strip().strip("\"'`*[]{}()<>").strip().rstrip(".").strip()


def normalize_text(text: str) -> str:
    """Lowercase, punctuation to spaces, articles dropped, whitespace collapsed."""
    text = text.lower()
    text = "".join(" " if ch in string.punctuation else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def first_integer(text: str) -> int | None:
    """The first integer in ``text`` (thousands separators allowed), or None."""
    match = _INT.search(text)
    if not match:
        return None
    digits = match.group(0).replace(",", "").rstrip(",")
    try:
        return int(digits)
    except ValueError:
        return None


#: OOLONG's three comparison stems; a long parsed answer collapses to the first one it contains.
OOLONG_COMPARISON_STEMS = ("more common", "less common", "same frequency")
#: Markers that make OOLONG call a parse "high" confidence (its own list, ``Label`` without a colon).
_OOLONG_MARKERS = ("User:", "Answer:", "Date:", "Label")


def oolong_parse_answer(reply: str) -> tuple[str, str]:
    """OOLONG's answer parse: ``(candidate, confidence)``.

    The rule (``synth_attempt_answer_parse``): a reply without ``:`` is taken whole when
    shorter than 20 characters, else its last whitespace-separated word. Otherwise the
    candidate is what follows the **last** colon, stripped of surrounding whitespace and
    then of every ``*``, ``[`` and ``]`` (so ``**Answer:** x`` leaves `` x`` with its
    leading space). A candidate of 20 characters or more that contains ``more common``,
    ``less common`` or ``same frequency`` becomes just that stem. Confidence is
    informational only (it never changes the score).
    """
    if ":" not in reply:
        if len(reply) < 20:
            return reply, "low"
        words = reply.split()
        return (words[-1] if words else ""), "low"
    candidate = reply.split(":")[-1].strip()
    candidate = candidate.replace("*", "").replace("[", "").replace("]", "")
    confidence = "high" if any(marker in reply for marker in _OOLONG_MARKERS) else "med"
    if len(candidate) < 20:
        return candidate, "vhigh"
    for stem in OOLONG_COMPARISON_STEMS:
        if stem in candidate:
            return stem, confidence
    return candidate, confidence


def oolong_official_score(prediction: str | None, gold: str, answer_type: str) -> float:
    """One OOLONG-synth answer's score by the official rule (``synth_process_response``).

    In order: the parsed candidate equal to the gold answer (as strings, case-sensitive)
    scores 1; a candidate that is exactly a comparison stem scores 1 when the stem occurs
    in the gold answer; for ``number`` answers, ``0.75 ** |gold - int(candidate)|`` when
    Python's ``int()`` accepts the whole candidate (``" 72"`` yes, ``"72."`` and
    ``"72 instances"`` no); for ``date`` answers (gold in ISO form), 1 when
    ``dateutil.parser.parse`` of the candidate equals the gold date at midnight. Anything
    else, and no reply at all, scores 0.
    """
    if answer_type not in ("number", "label", "comparison", "user", "date"):
        raise ValueError(f"unknown OOLONG answer type {answer_type!r}")
    if prediction is None:
        return 0.0
    candidate, _ = oolong_parse_answer(prediction)
    if candidate == str(gold):
        return 1.0
    if candidate in OOLONG_COMPARISON_STEMS:
        return 1.0 if candidate in str(gold) else 0.0
    if answer_type == "number":
        try:
            return 0.75 ** abs(int(gold) - int(candidate))
        except ValueError:
            return 0.0
    if answer_type == "date":
        return 1.0 if _parsed_date(candidate) == dt.datetime.fromisoformat(str(gold)) else 0.0
    return 0.0


def _parsed_date(text: str) -> dt.datetime | None:
    from dateutil import parser

    try:
        return parser.parse(text)
    except (ValueError, OverflowError, TypeError):
        return None


def oolong_lenient_score(prediction: str | None, gold: str, answer_type: str, labels: Iterable[str] = ()) -> float:
    """This project's older, lenient OOLONG rule (a second column; NOT comparable with OOLONG's numbers).

    The answer is the text after the last ``Answer:``; numbers are the first integer in
    it; labels are matched case-insensitively and any reply naming exactly one label
    counts; comparisons need the full phrase; user ids the first integer.
    """
    part = answer_part(prediction)
    if answer_type == "number":
        value = first_integer(part)
        return 0.0 if value is None else 0.75 ** abs(int(gold) - value)
    if answer_type == "comparison":
        found = [p for p in COMPARISON_PHRASES if p in normalize_text(part)]
        return 1.0 if found == [gold] else 0.0
    if answer_type == "label":
        return 1.0 if _label_in(part, list(labels)) == gold else 0.0
    if answer_type == "user":
        value = first_integer(part)
        return 1.0 if value is not None and str(value) == str(gold) else 0.0
    if answer_type == "date":
        parsed = _parsed_date(part)
        return 1.0 if parsed is not None and parsed.date() == dt.date.fromisoformat(str(gold)) else 0.0
    raise ValueError(f"unknown OOLONG answer type {answer_type!r}")


def _label_in(part: str, labels: list[str]) -> str | None:
    """The label the answer names: an exact label, or the only label mentioned."""
    norm = normalize_text(part)
    by_norm = {normalize_text(label): label for label in labels}
    if norm in by_norm:
        return by_norm[norm]
    mentioned = [label for key, label in by_norm.items() if re.search(rf"\b{re.escape(key)}\b", norm)]
    return mentioned[0] if len(mentioned) == 1 else None


# -- OOLONG-Pairs --------------------------------------------------------------------
def parse_pairs(prediction: str | None) -> tuple[set[tuple[int, int]], int]:
    """(unordered pairs found, number of non-empty lines holding no pair)."""
    pairs: set[tuple[int, int]] = set()
    malformed = 0
    for line in (prediction or "").splitlines():
        found = [(int(a), int(b)) for a, b in _PAIR.findall(line)]
        if not found and (bare := _BARE_PAIR_LINE.match(line)):
            found = [(int(bare.group(1)), int(bare.group(2)))]
        if not found and line.strip():
            malformed += 1
        pairs.update((min(a, b), max(a, b)) for a, b in found if a != b)
    return pairs, malformed


def _as_pairs(gold: Iterable[str | tuple[int, int] | list[int]]) -> set[tuple[int, int]]:
    result = set()
    for item in gold:
        if isinstance(item, str):
            parsed, _ = parse_pairs(item)
            result |= parsed
        else:
            a, b = int(item[0]), int(item[1])
            result.add((min(a, b), max(a, b)))
    return result


def pairs_f1(prediction: str | None, gold: Iterable[str | tuple[int, int] | list[int]]) -> float:
    """F1 between predicted and gold unordered pairs (empty gold: 1.0 only for an empty prediction)."""
    predicted, _ = parse_pairs(prediction)
    return set_f1(predicted, _as_pairs(gold))


def set_f1(predicted: Set[object], gold: Set[object]) -> float:
    """F1 of two sets; two empty sets score 1.0, one empty set 0.0."""
    if not gold:
        return 1.0 if not predicted else 0.0
    hits = len(predicted & gold)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(predicted), hits / len(gold)
    return 2 * precision * recall / (precision + recall)


# -- LongBench-v2 ---------------------------------------------------------------------
_LB_PAREN = re.compile(r"The correct answer is \(([A-D])\)")
_LB_BARE = re.compile(r"The correct answer is ([A-D])")


def longbench_extract_choice(prediction: str | None) -> str | None:
    """LongBench-v2's ``extract_answer``: the letter after "The correct answer is", or None."""
    text = (prediction or "").replace("*", "")
    match = _LB_PAREN.search(text) or _LB_BARE.search(text)
    return match.group(1) if match else None


def longbench_choice_score(prediction: str | None, gold: str) -> float:
    """1.0 when the extracted letter is the gold letter (LongBench-v2's ``judge``), else 0.0."""
    return 1.0 if longbench_extract_choice(prediction) == gold else 0.0


# -- browsecomp-plus-like ------------------------------------------------------------
def short_answer_match(prediction: str | None, gold: str, distractors: Iterable[str] = ()) -> float:
    """1.0 if the reply is the gold answer (normalised), or names it and no distractor answer."""
    part = normalize_text(answer_part(prediction))
    target = normalize_text(gold)
    if not target:
        raise ValueError("empty gold answer")
    if part == target:
        return 1.0
    if not _has_phrase(part, target):
        return 0.0
    others = [normalize_text(d) for d in distractors if normalize_text(d) != target]
    return 0.0 if any(_has_phrase(part, other) for other in others if other) else 1.0


def _has_phrase(text: str, phrase: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) is not None


# -- codeqa --------------------------------------------------------------------------
def _module_name(text: str) -> str:
    name = text.strip().strip("`'\"").strip()
    name = name.removesuffix(".py").replace("/", ".").replace("\\", ".")
    return name.removesuffix(".__init__").strip(".")


def module_match(prediction: str | None, gold: str) -> float:
    """1.0 when the reply names the gold module (``json.decoder`` or ``json/decoder.py``)."""
    part = answer_part(prediction)
    target = _module_name(gold)
    if _module_name(part) == target:
        return 1.0
    mentioned = {name for tok in re.findall(r"[\w./\\]+", part)
                 if (name := _module_name(tok)) == target or "." in name}
    return 1.0 if mentioned == {target} else 0.0


def integer_match(prediction: str | None, gold: str | int) -> float:
    """1.0 when the first integer of the answer equals the gold number."""
    value = first_integer(answer_part(prediction))
    return 1.0 if value is not None and value == int(gold) else 0.0


def parse_name_list(prediction: str | None) -> set[str]:
    """Identifiers (dotted allowed) listed in the answer, split on commas, newlines and 'and'."""
    part = answer_part(prediction)
    names = set()
    for item in re.split(r"[,\n;]|\band\b", part):
        item = item.strip().strip("-*`'\"[]() ").strip()
        item = item.removesuffix("()")
        if re.fullmatch(r"[A-Za-z_][\w.]*", item):
            names.add(item)
    return names
