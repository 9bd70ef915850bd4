"""The sub-call cache: recorded calls answer identical requests, within a run and across runs.

Against the scripted server over HTTP, the real sandbox and the real run log: a request
the server received once is not received again while the cache is on, and a change of
deployment, temperature or system prompt is a miss.
"""

from __future__ import annotations

import dataclasses

from conftest import is_agent_prompt, repl, turn

from rlm.events import EventBus, LMCalled
from rlm.records import canonical_json, messages_digest, request_key
from rlm.runlog import RunLog
from rlm.runner import run
from rlm.views import show_view

DOC = "line one\nline two\nthe answer is 42\n" * 20


def policy(messages):
    """Root: two identical sub-calls in one cell, then FINAL; sub-calls answer by their prompt."""
    if not is_agent_prompt(messages):
        return f"read:{messages[-1]['content'][:20]}"
    if turn(messages) == 0:
        return repl("a = llm_query('what is the answer?')\nb = llm_query('what is the answer?')\nprint(a, a == b)")
    return repl("FINAL(a)")


def ask(config, text_file):
    calls: list[LMCalled] = []
    bus = EventBus()
    bus.subscribe(lambda e: calls.append(e) if isinstance(e, LMCalled) else None)
    result = run("What is the answer?", text_file(DOC), config, bus=bus)
    return result, calls


def test_a_repeated_request_in_a_run_is_a_hit_with_no_tokens(server_factory, make_config, text_file):
    server = server_factory(policy=policy)
    result, calls = ask(make_config(server, temperature=0.0), text_file)
    assert result.answer == "read:what is the answer?"
    sub = [c for c in calls if c.purpose == "llm_query"]
    assert [c.cache_hit for c in sub] == [False, True]
    assert sub[0].request_key == sub[1].request_key and sub[1].response == sub[0].response
    assert sub[1].input_tokens == sub[1].output_tokens == 0 and sub[1].cost_usd == 0.0
    assert len(server.requests) == 3  # two root turns, one sub-call: the repeat never left
    assert result.usage.llm_calls == 4 and result.usage.cache_hits == 1 and result.usage.paid_calls == 3
    assert result.usage.input_tokens == sum(c.input_tokens for c in calls if not c.cache_hit)


def test_the_cache_is_off_by_default_above_temperature_zero(server_factory, make_config, text_file):
    server = server_factory(policy=policy)
    result, calls = ask(make_config(server), text_file)
    assert not any(c.cache_hit for c in calls) and len(server.requests) == 4
    assert result.usage.cache_hits == 0 and all(c.request_key for c in calls)


def test_a_second_run_is_answered_from_the_run_log(server_factory, make_config, text_file, rlm_home):
    server = server_factory(policy=policy)
    config = make_config(server, temperature=0.0)
    first, _ = ask(config, text_file)
    RunLog(config.runlog_path).close()  # stores the first run's journal: the second finds it in the database
    assert not list(config.home.glob("rlm.duckdb.*.journal"))
    sent = len(server.requests)
    second, calls = ask(config, text_file)
    assert len(server.requests) == sent  # nothing reached the server
    assert second.answer == first.answer and second.usage.cache_hits == second.usage.llm_calls == 4
    assert second.usage.input_tokens == 0 and second.usage.cost_usd == 0.0
    assert {c.route_reason.rsplit("; ", 1)[-1] for c in calls if c.purpose == "iteration"} == {
        f"answered from run {first.run_id}"}
    with RunLog(config.runlog_path) as log:
        rows = log.lm_calls(second.run_id)
        summary = log.get_run(second.run_id)
        shown, _ = show_view(log, second.run_id, 400, False)
    assert all(r.cache_hit for r in rows) and all(r.response for r in rows)
    assert summary.cache_hits == 4 and summary.llm_calls == 4
    assert "llm_calls=4 (4 from records)" in shown  # rlm show
    assert "iteration 1  (" in shown and "1 model call, 1 from records" in shown
    assert f"answered from run {first.run_id}" in shown


def test_a_change_of_deployment_temperature_or_system_prompt_is_a_miss(server_factory, make_config, text_file):
    server = server_factory(policy=policy)
    config = make_config(server, temperature=0.0)
    ask(config, text_file)
    changes = {
        "temperature": dataclasses.replace(config, temperature=0.5, cache=True),
        "system prompt": dataclasses.replace(config, max_iterations=7),  # the prompt states the turns
        "deployment": dataclasses.replace(config, api_base=server_factory(policy=policy).base_url),
    }
    # A sub-call's request is its prompt alone: another system prompt for the root does not change it.
    hits = {"temperature": 1, "system prompt": 2, "deployment": 1}
    for name, changed in changes.items():
        result, calls = ask(changed, text_file)
        roots = [c for c in calls if c.purpose == "iteration"]
        assert not any(c.cache_hit for c in roots), name
        assert result.usage.cache_hits == hits[name], name


def test_the_key_names_the_deployment_the_messages_and_the_sampling():
    deployment = {"name": "a", "model": "openai/x", "api_base": "http://127.0.0.1:1/v1"}
    digest = messages_digest([{"role": "user", "content": "hi"}])
    key = request_key(deployment, digest, {"temperature": 0.0})
    assert key == request_key(dict(reversed(deployment.items())), digest, {"temperature": 0.0})
    assert key != request_key({**deployment, "api_base": "http://127.0.0.1:2/v1"}, digest, {"temperature": 0.0})
    assert key != request_key(deployment, digest, {"temperature": 0.0, "max_tokens": 10})
    assert key != request_key(deployment, messages_digest([{"role": "user", "content": "hi!"}]), {"temperature": 0.0})
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


def _sub_requests(server) -> list[str]:
    return [r.messages[-1]["content"] for r in server.requests if not is_agent_prompt(r.messages)]


def test_identical_calls_in_flight_together_are_sent_once(server_factory, make_config, text_file):
    def slow(messages):
        if not is_agent_prompt(messages):
            return {"content": f"read:{messages[-1]['content']}", "delay_ms": 300}
        if turn(messages) == 0:
            return repl("r = llm_query_batched(['same'] * 6 + ['other'])\nprint(r)")
        return repl("FINAL(r)")

    server = server_factory(policy=slow)
    result, calls = ask(make_config(server, temperature=0.0), text_file)
    assert result.answer == str(["read:same"] * 6 + ["read:other"])
    assert sorted(_sub_requests(server)) == ["other", "same"]  # six identical prompts in flight: one request
    sub = [c for c in calls if not c.purpose.startswith(("iteration", "final"))]
    assert sorted(c.cache_hit for c in sub) == [False, False] + [True] * 5
    assert all("an identical call of this run" in c.route_reason for c in sub if c.cache_hit)
    assert result.usage.cache_hits == 5 and result.usage.paid_calls == 4


def test_when_the_call_in_flight_fails_the_identical_ones_are_sent(server_factory, make_config, text_file):
    sent: list[str] = []

    def first_fails(messages):
        if not is_agent_prompt(messages):
            sent.append(messages[-1]["content"])
            if len(sent) == 1:
                return {"status": 400, "content": "refused", "delay_ms": 300}
            return {"content": f"read:{messages[-1]['content']}"}
        if turn(messages) == 0:
            return repl("r = llm_query_batched(['same'] * 3)\nprint(r)")
        return repl("FINAL(r[1:])")

    server = server_factory(policy=first_fails)
    result, _ = ask(make_config(server, temperature=0.0), text_file)
    assert sent == ["same"] * 3  # the failure answered nobody else: each waiter asked for itself
    assert result.answer == str(["read:same"] * 2)
