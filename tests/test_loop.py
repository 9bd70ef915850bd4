"""The agent loop end to end: scripted model server over HTTP, litellm, the real bwrap sandbox."""

from __future__ import annotations

import re

import pytest
from conftest import first_user, is_agent_prompt, repl, turn

from rlm.events import CellExecuted, EventBus, LMCalled
from rlm.runner import run

DOC = "alpha beta gamma\n" * 50 + "the secret code is ZEBRA-42\n" + "delta epsilon\n" * 50


def run_script(server_factory, make_config, text_file, replies, question="What is the code?", **overrides):
    server = server_factory(script=replies)
    result = run(question, text_file(DOC), make_config(server, **overrides))
    return result, server


def observation_sent(server, index: int) -> str:
    """The last user message of the index-th request (the observation the model saw)."""
    return server.requests[index].messages[-1]["content"]


def test_multi_iteration_run(server_factory, make_config, text_file):
    result, server = run_script(server_factory, make_config, text_file, [
        repl("print(len(context))"),
        repl("import re\npos = context.find('secret code')\nprint(context[pos:pos + 23])"),
        repl("code = context[pos + 15:pos + 23]\nFINAL(code)"),
    ])
    assert result.status == "ok"
    assert result.answer == "ZEBRA-42"
    assert result.iterations == 3
    assert result.usage.llm_calls == 3
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert str(len(DOC)) in observation_sent(server, 1)
    assert "secret code is ZEBRA-42" in observation_sent(server, 2)
    # the root never sees the whole input: only its description and a preview
    first_prompt = first_user(server.requests[0].messages)
    assert f"{len(DOC):,}" in first_prompt and DOC not in first_prompt


def test_exception_cell_is_fed_back_and_recovered(server_factory, make_config, text_file):
    result, server = run_script(server_factory, make_config, text_file, [
        repl("x = context.nonexistent_method()"),
        repl("x = len(context.split())\nFINAL(x)"),
    ])
    assert result.status == "ok" and result.answer == str(len(DOC.split()))
    observation = observation_sent(server, 1)
    assert "AttributeError" in observation and "nonexistent_method" in observation


def test_syntax_error_is_fed_back(server_factory, make_config, text_file):
    result, server = run_script(server_factory, make_config, text_file, [
        repl("print(("),
        repl("FINAL('fixed')"),
    ])
    assert result.answer == "fixed"
    assert "SyntaxError" in observation_sent(server, 1)


def test_reply_without_code_is_told_to_write_code(server_factory, make_config, text_file):
    result, server = run_script(server_factory, make_config, text_file, [
        "I think I should look at the context first. I will call FINAL(x) later.",
        repl("FINAL('done')"),
    ])
    assert result.answer == "done" and result.iterations == 2
    assert "no ```repl code block" in observation_sent(server, 1)


@pytest.mark.parametrize("code, expected", [
    ("try:\n    FINAL('caught?')\nexcept Exception:\n    print('swallowed')", "caught?"),
    ("try:\n    FINAL('bare except')\nexcept:\n    pass\nprint('after')", "bare except"),
    ("FINAL(6 * 7)", "42"),
    ("FINAL(['a', 1])", "['a', 1]"),
    ("answer = 'from a variable'\nFINAL_VAR('answer')", "from a variable"),
    ("FINAL('first')\nFINAL('second')", "first"),
    ("def helper():\n    FINAL('deep in a function')\nhelper()", "deep in a function"),
    ("FINAL('')", ""),
])
def test_final_in_code_edge_cases(server_factory, make_config, text_file, code, expected):
    result, _ = run_script(server_factory, make_config, text_file, [repl(code)])
    assert result.status == "ok"
    assert result.answer == expected
    assert result.iterations == 1


def test_final_in_second_block_runs_first_block(server_factory, make_config, text_file):
    reply = "```repl\nvalue = context.count('alpha')\n```\nthen\n```python\nFINAL(value)\n```"
    result, _ = run_script(server_factory, make_config, text_file, [reply])
    assert result.answer == "50"


def test_failed_block_skips_the_rest(server_factory, make_config, text_file):
    reply = "```repl\n1/0\n```\n```repl\nFINAL('should not run')\n```"
    result, server = run_script(server_factory, make_config, text_file, [reply, repl("FINAL('later')")])
    assert result.answer == "later"
    assert "were not run" in observation_sent(server, 1)


def test_overwriting_final_and_llm_query_is_undone(server_factory, make_config, text_file):
    result, _ = run_script(server_factory, make_config, text_file, [
        repl("FINAL = print\nllm_query = None\nFINAL('printed, not final')"),
        repl("FINAL('restored')"),
    ])
    assert result.answer == "restored" and result.iterations == 2


@pytest.mark.parametrize("reply, expected", [
    ('Found it.\nFINAL("ZEBRA-42")', "ZEBRA-42"),
    ("FINAL(The code is ZEBRA-42)", "The code is ZEBRA-42"),
    ("FINAL(6 * 7)", "42"),
])
def test_plain_text_final_without_code(server_factory, make_config, text_file, reply, expected):
    result, _ = run_script(server_factory, make_config, text_file, [reply])
    assert result.status == "ok" and result.answer == expected


def test_plain_text_final_resolves_a_variable(server_factory, make_config, text_file):
    result, _ = run_script(server_factory, make_config, text_file, [
        repl("code = 'ZEBRA-' + str(40 + 2)"),
        "I have it now.\nFINAL(code)",
    ])
    assert result.answer == "ZEBRA-42"


def test_ambiguous_plain_text_final_is_refused(server_factory, make_config, text_file):
    result, server = run_script(server_factory, make_config, text_file, [
        "FINAL(maybe A)\nor\nFINAL(maybe B)",
        repl("FINAL('B')"),
    ])
    assert result.answer == "B" and result.iterations == 2
    assert "ambiguous" in observation_sent(server, 1)


def test_plain_text_final_next_to_code_is_ignored(server_factory, make_config, text_file):
    # Written before the code's output was seen: the code runs, the prose FINAL does not count.
    result, server = run_script(server_factory, make_config, text_file, [
        repl("print(context.count('beta'))") + "\nFINAL(guess)",
        repl("FINAL('counted')"),
    ])
    assert result.answer == "counted" and result.iterations == 2
    assert "50" in observation_sent(server, 1)


def test_output_is_truncated_for_the_model(server_factory, make_config, text_file):
    result, server = run_script(server_factory, make_config, text_file, [
        repl("print('x' * 50_000)"),
        repl("FINAL('ok')"),
    ], max_observation_chars=1_000)
    observation, footer = observation_sent(server, 1).split("\n\n[turn 1 of", 1)
    header = observation.split("\n", 1)[0]
    # the model is told the output's true length (the sandbox kept 20,000 of it) and what it is shown
    assert header.startswith("Output of your code (50,") and "showing the first 750 and the last 250" in header
    assert len(observation) < 1_200 and "characters not shown" in observation


def test_llm_query_batched_is_concurrent_and_ordered(server_factory, make_config, text_file):
    def policy(messages):
        if is_agent_prompt(messages):
            if turn(messages) == 0:
                return repl("out = llm_query_batched([f'echo {i}' for i in range(12)])\nprint(out)")
            return repl("FINAL(out)")
        return "E" + first_user(messages).split()[-1]

    server = server_factory(policy=policy, latency_ms=300)
    result = run("q", text_file(DOC), make_config(server, max_concurrency=8))
    assert result.answer == str([f"E{i}" for i in range(12)])
    assert server.max_concurrency() == 8  # bounded by max_concurrency, measured server-side
    assert result.usage.llm_calls == 2 + 12


def test_batched_failure_marks_one_item_and_tells_the_model(server_factory, make_config, text_file):
    def policy(messages):
        if is_agent_prompt(messages):
            if turn(messages) == 0:
                return repl("out = llm_query_batched(['a', 'FAIL', 'c'])\n"
                            "print([isinstance(x, QueryError) for x in out])")
            return repl("FINAL('done')")
        prompt = first_user(messages)
        return {"status": 500, "content": "boom"} if prompt == "FAIL" else prompt.upper()

    server = server_factory(policy=policy)
    result = run("q", text_file(DOC), make_config(server, lm_retries=1))
    assert result.status == "ok"
    observation = server.requests[-1].messages[-1]["content"]
    assert "[False, True, False]" in observation
    assert "1 of 3 batched queries failed" in observation


def test_single_llm_query_failure_raises_in_the_cell(server_factory, make_config, text_file):
    def policy(messages):
        if is_agent_prompt(messages):
            if turn(messages) == 0:
                return repl("try:\n    llm_query('FAIL')\n"
                            "except RuntimeError as e:\n    print('caught', type(e).__name__)")
            return repl("FINAL('ok')")
        return {"status": 500, "content": "boom"}

    server = server_factory(policy=policy)
    result = run("q", text_file(DOC), make_config(server, lm_retries=0))
    assert result.answer == "ok"
    assert "caught RuntimeError" in server.requests[-1].messages[-1]["content"]


def test_429_and_500_are_retried(server_factory, make_config, text_file):
    result, server = run_script(server_factory, make_config, text_file, [
        {"status": 429, "content": "slow down"},
        {"status": 500, "content": "oops"},
        repl("FINAL('after retries')"),
    ], lm_retries=3)
    assert result.status == "ok" and result.answer == "after retries"
    assert [r.status for r in server.requests] == [429, 500, 200]


def test_a_failing_call_is_attempted_exactly_once_plus_lm_retries(server_factory, make_config, text_file):
    """The first attempt goes straight to the transport, the rest through the Router: 1 + lm_retries in all."""
    server = server_factory(policy=lambda messages: {"status": 503, "content": "down"})
    result = run("q", text_file(DOC), make_config(server, lm_retries=2))
    assert result.status == "error" and "503" in (result.error or "")
    assert [r.status for r in server.requests] == [503, 503, 503]


def test_a_bad_request_is_not_retried(server_factory, make_config, text_file):
    result, server = run_script(server_factory, make_config, text_file, [
        {"status": 400, "content": "bad field"},
        repl("FINAL('never')"),
    ], lm_retries=3)
    assert result.status == "error" and "bad field" in (result.error or "")
    assert [r.status for r in server.requests] == [400]


def test_injected_faults_at_a_rate_are_survived(server_factory, make_config, text_file):
    replies = [repl("x = 1"), repl("x += 1"), repl("FINAL(x + 1)")]
    server = server_factory(script=replies, error_rate_500=0.3, error_rate_429=0.2, seed=7)
    result = run("q", text_file(DOC), make_config(server, lm_retries=6))
    assert result.answer == "3"
    assert any(r.status != 200 for r in server.requests)


def test_model_unreachable_ends_with_error_status(make_config, text_file):
    class Down:
        base_url = "http://127.0.0.1:9/v1"

    result = run("q", text_file(DOC), make_config(Down(), lm_retries=0, lm_timeout_s=5))
    assert result.status == "error"
    assert "failed" in (result.error or "")


def test_events_cover_every_step(server_factory, make_config, text_file):
    server = server_factory(script=[repl("print(1)"), repl("FINAL(2)")])
    bus = EventBus()
    seen = []
    bus.subscribe(seen.append)
    run("q", text_file(DOC), make_config(server), bus=bus)
    names = [type(e).__name__ for e in seen]
    assert names[0] == "RunStarted" and names[-1] == "RunFinished"
    assert names.count("LMCalled") == 2 and names.count("CellExecuted") == 2
    cells = [e for e in seen if isinstance(e, CellExecuted)]
    assert cells[0].stdout == "1\n" and cells[1].final
    calls = [e for e in seen if isinstance(e, LMCalled)]
    assert all(c.cost_usd is None for c in calls)  # the scripted model has no known price


def test_cost_is_null_for_unknown_prices_and_computed_for_known(server_factory, make_config, text_file):
    server = server_factory(script=[repl("FINAL(1)")] * 2)
    unknown = run("q", text_file(DOC), make_config(server))
    assert unknown.cost_usd is None
    known = run("q", text_file(DOC), make_config(server, model="openai/gpt-4.1-mini"))
    assert known.cost_usd is not None and known.cost_usd > 0


def test_run_id_format(server_factory, make_config, text_file):
    result, _ = run_script(server_factory, make_config, text_file, [repl("FINAL(1)")])
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", result.run_id)


def test_malformed_bodies_and_hangs_are_retried(server_factory, make_config, text_file):
    replies = [repl("x = 2"), repl("FINAL(x * 21)")]
    server = server_factory(script=replies, malformed_rate=0.3, timeout_rate=0.2, hang_s=0.5, seed=3)
    result = run("q", text_file(DOC), make_config(server, lm_retries=8, lm_timeout_s=0.3))
    assert result.answer == "42"
    assert {r.fault for r in server.requests} >= {"malformed"}


def test_lean_transport_applies_to_openai_compatible_servers_only():
    """The lean transport sends the history as JSON as it is: no per-message typed walk."""
    from rlm.transport import is_lean

    assert is_lean("openai/my-model", "http://127.0.0.1:1/v1")
    assert not is_lean("openai/gpt-4.1-mini", None)  # the real OpenAI: litellm's own client
    assert not is_lean("anthropic/claude", "http://x")
