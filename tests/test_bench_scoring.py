"""Scorers against hand-worked cases of the published rules (RULER, OOLONG, OOLONG-Pairs, ours)."""

from __future__ import annotations

import pytest

from rlm.benchmarks.oolong import LABELS
from rlm.benchmarks.scoring import (
    integer_match,
    module_match,
    oolong_score,
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
    ("Answer: Jan 05, 2023", "Jan 05, 2023", "date", 1.0),
    (None, "5", "number", 0.0),
])
def test_oolong_rules(prediction, gold, kind, expected):
    assert oolong_score(prediction, gold, kind, LABELS) == pytest.approx(expected)


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
