"""The continual-learning harness proves its mechanics with the scripted model (a short stream)."""

from __future__ import annotations

import pytest

from rlm.benchmarks.continual import make_stream, measure, render_report


def test_stream_mixes_a_family_with_dissimilar_tasks():
    stream = make_stream(seed=3, family_tasks=4, other_tasks=2)
    assert [t.family for t in stream].count("harbour") == 4 and stream[0].family == "harbour"
    assert all(t.answer in t.context or t.family == "errors" for t in stream)
    assert make_stream(seed=3, family_tasks=4, other_tasks=2) == stream  # seeded, reproducible


@pytest.mark.slow
def test_memory_on_beats_the_wiped_control_only_through_stored_memories(tmp_path):
    data = measure(orders=1, family_tasks=3, other_tasks=1, seed=1, home=tmp_path)
    records = data["records"]
    on = [r for r in records if r["arm"] == "on" and r["family"] == "harbour"]
    wiped = [r for r in records if r["arm"] == "wiped" and r["family"] == "harbour"]
    assert all(r["score"] == 1.0 for r in records)
    assert on[0]["memory_tokens"] == 0 and all(r["memory_tokens"] > 0 for r in on[1:])  # learned after task 1
    assert all(r["memory_tokens"] == 0 for r in wiped)  # the control never sees a memory
    assert all(a["llm_calls"] < b["llm_calls"] for a, b in zip(on[1:], wiped[1:], strict=True))
    errors_on = [r for r in records if r["arm"] == "on" and r["family"] == "errors"]
    assert errors_on and all(r["llm_calls"] == 2 for r in errors_on)  # the foreign memory changes nothing
    report = render_report(data, "test")
    assert "| on | harbour |" in report and "What this run shows, and what it cannot" in report
