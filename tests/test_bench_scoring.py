"""Scorers against hand-worked cases of the published rules (RULER, OOLONG, LongBench-v2, OOLONG-Pairs, ours)."""

from __future__ import annotations

import pytest

from rlm.benchmarks.oolong import LABELS
from rlm.benchmarks.judge import parse_verdict
from rlm.benchmarks.scoring import (
    integer_match,
    longbench_choice_score,
    longbench_extract_choice,
    module_match,
    oolong_lenient_score,
    oolong_official_score,
    oolong_parse_answer,
    pairs_f1,
    parse_name_list,
    parse_pairs,
    set_f1,
    short_answer_match,
    string_match_all,
)


@pytest.mark.parametrize("prediction, refs, expected", [
    ("The special magic number is 1234567.", ["1234567"], 1.0),
    ("1234567", ["1234567"], 1.0),
    ("the number is 123456", ["1234567"], 0.0),
    ("12345678", ["1234567"], 1.0),  # RULER's rule is substring match: a longer number contains it
    ("", ["1234567"], 0.0),
    (None, ["1234567"], 0.0),
    ("ABC-def", ["abc-DEF"], 1.0),  # case-insensitive
    ("1234567 and 7654321", ["1234567", "7654321"], 1.0),
    ("only 1234567", ["1234567", "7654321"], 0.5),
    ("none here", ["1234567", "7654321"], 0.0),
    ("a 1 b 2 c", ["1", "2", "3"], 2 / 3),
    ("123\x004567", ["1234567"], 0.0),  # a control character becomes a newline, breaking the number
    ("  1234567\n", ["1234567"], 1.0),
    ("number: 1,234,567", ["1234567"], 0.0),
    ("7654321", ["1234567"], 0.0),
    ("The special magic number for hollow-lantern is 9999999", ["9999999"], 1.0),
    ("9999999 9999999", ["9999999"], 1.0),
    ("x" * 1000 + "5555555", ["5555555"], 1.0),
    ("Uuid: 3F2A", ["3f2a"], 1.0),
    ("one two", ["two", "three", "four", "one"], 0.5),
])
def test_ruler_string_match_all(prediction, refs, expected):
    assert string_match_all(prediction, refs) == pytest.approx(expected)


@pytest.mark.parametrize("prediction, gold, kind, expected", [
    ("Answer: 12", "12", "number", 1.0),
    ("Answer: 14", "12", "number", 0.5625),  # off by 2: 0.75 ** 2
    ("Answer: 10", "12", "number", 0.5625),
    ("Answer: 13", "12", "number", 0.75),
    ("Answer: 9", "12", "number", 0.421875),
    ("12", "12", "number", 1.0),
    ("I counted 1,204 of them. Answer: 1,205", "1205", "number", 1.0),  # the last Answer: wins
    ("Answer: none", "3", "number", 0.0),
    ("Answer: 0", "0", "number", 1.0),
    ("Answer: location", "location", "label", 1.0),
    ("Answer: 'Location'.", "location", "label", 1.0),
    ("Answer: human being", "location", "label", 0.0),
    ("The most common label is numeric value.", "numeric value", "label", 1.0),
    ("Answer: numeric value or location", "numeric value", "label", 0.0),  # two labels named: no answer
    ("Answer: description and abstract concept", "description and abstract concept", "label", 1.0),
    ("Answer: more common than", "more common than", "comparison", 1.0),
    ("Answer: 'entity' is less common than 'location'", "less common than", "comparison", 1.0),
    ("Answer: same frequency as", "more common than", "comparison", 0.0),
    ("more common than or less common than", "more common than", "comparison", 0.0),
    ("Answer: User 48213", "48213", "user", 1.0),
    ("Answer: 48213", "48214", "user", 0.0),
    ("Answer: Jan 05, 2023", "2023-01-05", "date", 1.0),
    (None, "5", "number", 0.0),
])
def test_oolong_lenient_rules(prediction, gold, kind, expected):
    assert oolong_lenient_score(prediction, gold, kind, LABELS) == pytest.approx(expected)


# OOLONG's official rule (src/eval/eval_helpers.py of abertsch72/oolong @ adbf1cb): the candidate is
# what follows the LAST colon (stripped, then '*', '[' and ']' removed), or a colon-less reply whole
# when shorter than 20 characters, else its last word; a long candidate containing a comparison stem
# becomes the stem; then exact string match, stem-in-gold, int() of the whole candidate, dateutil.
@pytest.mark.parametrize("prediction, gold, kind, expected", [
    # numbers: 0.75 ** |diff| only when int() takes the whole candidate
    ("Answer: 72", "72", "number", 1.0),
    ("Answer: 74", "72", "number", 0.5625),
    ("Answer: 69", "72", "number", 0.421875),
    ("Answer: 72 instances", "72", "number", 0.0),  # lenient: 1.0
    ("Answer: 72.", "72", "number", 0.0),  # lenient: 1.0
    ("Answer: 1,205", "1205", "number", 0.0),  # thousands separator: int() fails
    ("**Answer:** 72", "72", "number", 1.0),  # candidate ' 72' (leading space) still int()s
    ("72", "72", "number", 1.0),  # short, no colon: taken whole
    ("There are 72", "72", "number", 0.0),  # short, no colon: the whole reply, not a number
    ("After counting every line carefully the total is 72", "72", "number", 1.0),  # long: last word
    ("After counting every line carefully the total is 72.", "72", "number", 0.0),
    ("I counted: 70. Answer: 72", "72", "number", 1.0),  # the last colon wins
    ("Answer: 72\nTime taken: 5s", "72", "number", 0.0),  # ... even in a trailing line
    ("Answer: none", "3", "number", 0.0),
    (None, "3", "number", 0.0),
    # labels: case-sensitive exact match
    ("Label: abbreviation", "abbreviation", "label", 1.0),
    ("Answer: ABBREVIATION", "abbreviation", "label", 0.0),  # lenient: 1.0
    ("Label: Abbreviation", "abbreviation", "label", 0.0),
    ("Label: [abbreviation]", "abbreviation", "label", 1.0),  # brackets are removed
    ("Label: 'abbreviation'", "abbreviation", "label", 0.0),  # quotes are not
    ("**Label:** abbreviation", "abbreviation", "label", 0.0),  # ' abbreviation' keeps its space
    ("The most common label overall is abbreviation", "abbreviation", "label", 1.0),  # last word
    ("The most common label overall is abbreviation.", "abbreviation", "label", 0.0),
    ("Label: description and abstract concept", "description and abstract concept", "label", 1.0),
    ("Label: **description and abstract concept**", "description and abstract concept", "label", 1.0),
    # comparisons: a stem on its own, or a long answer collapsed to its stem, matched inside the gold
    ("more common", "more common than", "comparison", 1.0),  # lenient: 0.0
    ("Answer: more common than", "more common than", "comparison", 1.0),
    ("Answer: description and abstract concept is more common than numeric value", "more common than",
     "comparison", 1.0),
    ("Answer: entity is less common than location", "less common than", "comparison", 1.0),
    ("Answer: entity is less common than location", "more common than", "comparison", 0.0),
    ("Answer: less common than", "more common than", "comparison", 0.0),
    ("Answer: it is more common", "more common than", "comparison", 0.0),  # short, not a stem: no match
    ("Answer: abbreviation is More common than entity", "more common than", "comparison", 0.0),  # case
    # user ids: exact string
    ("User: 48213", "48213", "user", 1.0),
    ("User: 48213.", "48213", "user", 0.0),
    ("Answer: User 48213", "48213", "user", 0.0),  # lenient: 1.0
    ("The user with the most of them is 48213", "48213", "user", 1.0),
    # dates: dateutil on the candidate, equal to the gold day at midnight
    ("Date: Mar 04, 2023", "2023-03-04", "date", 1.0),
    ("Date: March 4, 2023", "2023-03-04", "date", 1.0),
    ("Date: 2023-03-04", "2023-03-04", "date", 1.0),
    ("Date: 03/04/2023", "2023-03-04", "date", 1.0),  # month first
    ("Date: 2023-03-05", "2023-03-04", "date", 0.0),
    ("Date: the fourth of March", "2023-03-04", "date", 0.0),
])
def test_oolong_official_rules(prediction, gold, kind, expected):
    assert oolong_official_score(prediction, gold, kind) == pytest.approx(expected)


def test_oolong_official_and_lenient_disagree_on_plausible_replies():
    """The issue's examples: the lenient rule scored these 1 where OOLONG scores 0, and the reverse."""
    cases = [("Answer: 72 instances", "72", "number"), ("Answer: 72.", "72", "number"),
             ("Answer: ABBREVIATION", "abbreviation", "label"), ("more common", "more common than", "comparison")]
    official = [oolong_official_score(p, g, k) for p, g, k in cases]
    lenient = [oolong_lenient_score(p, g, k, LABELS) for p, g, k in cases]
    assert official == [0.0, 0.0, 0.0, 1.0] and lenient == [1.0, 1.0, 1.0, 0.0]


def test_oolong_parse_reports_confidence_and_rejects_unknown_types():
    assert oolong_parse_answer("Answer: location") == ("location", "vhigh")
    assert oolong_parse_answer("so: a long answer that is not a comparison") == (
        "a long answer that is not a comparison", "med")
    assert oolong_parse_answer("User: " + "x" * 30)[1] == "high"
    assert oolong_parse_answer("   " * 10) == ("", "low")
    with pytest.raises(ValueError):
        oolong_official_score("Answer: 1", "1", "float")


# LongBench-v2 pred.py extract_answer: '*' removed, then "The correct answer is (X)", else "... is X".
@pytest.mark.parametrize("prediction, gold, expected", [
    ("The correct answer is (B)", "B", 1.0),
    ("The correct answer is B", "B", 1.0),
    ("**The correct answer is (B)**", "B", 1.0),
    ("Reasoning first.\nThe correct answer is (C).", "C", 1.0),
    ("The correct answer is B) because", "B", 1.0),  # the bare pattern catches it
    ("The correct answer is (b)", "B", 0.0),  # letters are upper-case only
    ("the correct answer is (B)", "B", 0.0),  # case-sensitive phrase
    ("The correct answer is: (B)", "B", 0.0),
    ("Answer: B", "B", 0.0),
    ("(B)", "B", 0.0),
    ("The correct answer is (E)", "B", 0.0),
    ("The correct answer is (A). On reflection, the correct answer is (B)", "B", 0.0),  # first match
    ("The correct answer is (A)", "B", 0.0),
    (None, "B", 0.0),
])
def test_longbench_choice(prediction, gold, expected):
    assert longbench_choice_score(prediction, gold) == expected


def test_longbench_extract_returns_none_without_the_phrase():
    assert longbench_extract_choice("I think B") is None
    assert longbench_extract_choice("The correct answer is (D)") == "D"


@pytest.mark.parametrize("reply, expected", [
    ("extracted_final_answer: Halce River\nreasoning: same river\ncorrect: yes", 1.0),
    ("extracted_final_answer: Seltor River\nreasoning: another river\ncorrect: no", 0.0),
    ("**correct:** Yes", 1.0),
    ("Correct: NO", 0.0),
    ("correct: no\n... on reflection\ncorrect: yes", 1.0),  # the last verdict counts
    ("incorrect: yes", None),
    ("reasoning: it matches", None),
])
def test_judge_verdicts(reply, expected):
    assert parse_verdict(reply) == expected


@pytest.mark.parametrize("prediction, gold, expected", [
    ("(1, 2)\n(3, 4)", ["(1, 2)", "(3, 4)"], 1.0),
    ("(2, 1)\n(4, 3)", ["(1, 2)", "(3, 4)"], 1.0),  # unordered
    ("(1, 2)", ["(1, 2)", "(3, 4)"], 2 / 3),  # P=1, R=1/2
    ("(1, 2)\n(5, 6)", ["(1, 2)", "(3, 4)"], 0.5),  # P=1/2, R=1/2
    ("(1, 2)\n(1, 2)\n(2, 1)", ["(1, 2)"], 1.0),  # duplicates count once
    ("(5, 6)", ["(1, 2)"], 0.0),
    ("", ["(1, 2)"], 0.0),
    ("none", [], 1.0),  # empty gold, no pair predicted
    ("", [], 1.0),
    ("(1, 2)", [], 0.0),  # empty gold, a pair predicted
    ("Here are the pairs:\n(1, 2)\nthat is all", ["(1, 2)"], 1.0),  # lines without a pair are ignored
    ("1, 2\n3,4", ["(1, 2)", "(3, 4)"], 1.0),  # bare pairs on their own line
    ("(1, 2), (3, 4), (5, 6)", ["(1, 2)", "(3, 4)", "(5, 6)"], 1.0),  # several on one line
    ("(7, 7)", ["(7, 8)"], 0.0),  # a user paired with itself is ignored
    ("(1,2)\n(3 ,4)\n( 5 , 6 )", ["(1, 2)", "(3, 4)", "(5, 6)", "(7, 8)"], 6 / 7),  # P=1, R=3/4
    ("(1, 2)\n(3, 4)\n(5, 6)\n(7, 8)", ["(1, 2)"], 0.4),  # P=1/4, R=1
    ("user 1 and user 2", ["(1, 2)"], 0.0),  # prose is not a pair
    ("(10001, 10002)", [[10002, 10001]], 1.0),  # gold as id lists works too
    ("(1, 2)\n(3, 4)", ["(1, 2)", "(3, 4)", "(5, 6)", "(7, 8)", "(9, 10)", "(11, 12)"], 0.5),  # P=1, R=1/3
    ("(1, 2, 3)", ["(1, 2)"], 0.0),  # malformed triple
])
def test_pairs_f1(prediction, gold, expected):
    assert pairs_f1(prediction, gold) == pytest.approx(expected)


def test_parse_pairs_counts_malformed_lines():
    pairs, malformed = parse_pairs("Pairs:\n(1, 2)\n\n(3, x)\n4, 5")
    assert pairs == {(1, 2), (4, 5)} and malformed == 2


@pytest.mark.parametrize("prediction, gold, distractors, expected", [
    ("Halce River", "Halce River", [], 1.0),
    ("halce river.", "Halce River", [], 1.0),
    ("The Halce River", "Halce River", [], 1.0),  # articles dropped
    ("Answer: Halce River", "Halce River", [], 1.0),
    ("It flows through Lorzel; the river is the Halce River.", "Halce River", [], 1.0),
    ("Either the Halce River or the Seltor River", "Halce River", ["Seltor River"], 0.0),
    ("Seltor River", "Halce River", ["Seltor River"], 0.0),
    ("Halce", "Halce River", [], 0.0),
    ("1916", "1916", [], 1.0),
    ("It was founded in 1916.", "1916", ["2006"], 1.0),
    ("19160", "1916", [], 0.0),
    ("1916 or 2006", "1916", ["2006"], 0.0),
    ("Kelmuia", "Kelmuia", ["Ceisia"], 1.0),
    ("KELMUIA", "Kelmuia", [], 1.0),
    ("geologist", "geologist", ["engineer"], 1.0),
    ("a geologist", "geologist", [], 1.0),
    ("an engineer", "geologist", ["engineer"], 0.0),
    ("", "geologist", [], 0.0),
    (None, "geologist", [], 0.0),
    ("geologists", "geologist", [], 0.0),
])
def test_multihop_short_answer(prediction, gold, distractors, expected):
    assert short_answer_match(prediction, gold, distractors) == expected


@pytest.mark.parametrize("prediction, gold, expected", [
    ("json.decoder", "json.decoder", 1.0),
    ("json/decoder.py", "json.decoder", 1.0),
    ("`json.decoder`", "json.decoder", 1.0),
    ("It is defined in json/decoder.py.", "json.decoder", 1.0),
    ("json", "json.decoder", 0.0),
    ("json/__init__.py", "json", 1.0),
    ("json.encoder", "json.decoder", 0.0),
    ("json.decoder or json.encoder", "json.decoder", 0.0),
    ("The function lives in shlex.", "shlex", 1.0),
    ("wave.Wave_write", "wave.Wave_write", 1.0),
    ("Answer: wave.Wave_read", "wave.Wave_write", 0.0),
])
def test_codeqa_module_match(prediction, gold, expected):
    assert module_match(prediction, gold) == expected


@pytest.mark.parametrize("prediction, gold, expected", [
    ("3", "3", 1.0), ("Answer: 3 classes", "3", 1.0), ("There are 4.", "3", 0.0), ("none", "0", 0.0),
    ("0", "0", 1.0), ("1,024", "1024", 1.0),
])
def test_codeqa_integer_match(prediction, gold, expected):
    assert integer_match(prediction, gold) == expected


def test_codeqa_name_lists_by_f1():
    gold = {"a.f", "a.C.m", "b.g"}
    assert set_f1(parse_name_list("a.f, a.C.m, b.g"), gold) == 1.0
    assert set_f1(parse_name_list("- `a.f`\n- `a.C.m()`\n- b.g"), gold) == 1.0
    assert set_f1(parse_name_list("a.f and b.g"), gold) == pytest.approx(0.8)  # P=1, R=2/3
    assert set_f1(parse_name_list("a.f, x.y"), gold) == pytest.approx(0.4)  # P=1/2, R=1/3
    assert set_f1(parse_name_list("no idea at all!"), gold) == 0.0
