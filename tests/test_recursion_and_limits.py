"""rlm_query trees and the tree-wide limits, against the scripted server and the real sandbox."""

from __future__ import annotations

import pytest
from conftest import first_user, is_agent_prompt, repl, turn

from rlm.events import AgentStarted, EventBus
from rlm.runner import run

DOC = "root document: apples and oranges\n" * 20


def tree_policy(messages):
    """Root (depth 0) -> child (depth 1) -> grandchild (depth 2); each proves its own context and sandbox."""
    if not is_agent_prompt(messages):
        return "plain:" + first_user(messages)[:40]
    question = first_user(messages)
    if "Question: LEVEL2" in question:
        return repl("FINAL('L2 saw ' + context + ' secret=' + str('secret' in globals()))")
    if "Question: LEVEL1" in question:
        if turn(messages) == 0:
            return repl("secret = 1\nsub = rlm_query('LEVEL2', context='grandchild-ctx')\nprint(sub)")
        return repl("FINAL('L1 saw ' + context[:9] + ' / ' + sub)")
    if turn(messages) == 0:
        return repl("secret = 1\nanswers = rlm_query_batched(['LEVEL1', 'LEVEL1'], ['child-ctx-A', 'child-ctx-B'])\n"
                    "print(answers)")
    return repl("FINAL(' | '.join(answers))")


def test_depth_two_tree_with_own_sandboxes_and_contexts(server_factory, make_config, text_file):
    server = server_factory(policy=tree_policy)
    bus = EventBus()
    started = []
    bus.subscribe(lambda e: started.append(e) if isinstance(e, AgentStarted) else None)
    result = run("ROOT", text_file(DOC), make_config(server, max_depth=2), bus=bus)
    assert result.status == "ok"
    assert result.depth_reached == 2
    parts = result.answer.split(" | ")
    assert parts == [
        "L1 saw child-ctx / L2 saw grandchild-ctx secret=False",
        "L1 saw child-ctx / L2 saw grandchild-ctx secret=False",
    ]
    assert sorted(e.depth for e in started) == [0, 1, 1, 2, 2]
    root = next(e for e in started if e.depth == 0)
    assert {e.parent_id for e in started if e.depth == 1} == {root.agent_id}
    # children answer to the sub model group, the root to the root group
    assert result.usage.llm_calls == 2 + 2 * 2 + 2


def test_child_without_context_shares_the_parents(server_factory, make_config, text_file):
    def policy(messages):
        if "Question: CHILD" in first_user(messages):
            return repl("FINAL(str(len(context)))")
        if turn(messages) == 0:
            return repl("n = rlm_query('CHILD')")
        return repl("FINAL(n)")

    server = server_factory(policy=policy)
    result = run("ROOT", text_file(DOC), make_config(server, max_depth=1))
    assert result.answer == str(len(DOC))


def test_rlm_query_at_max_depth_falls_back_to_a_plain_call(server_factory, make_config, text_file):
    def policy(messages):
        if not is_agent_prompt(messages):
            return "fallback answered: " + first_user(messages).splitlines()[0]
        if turn(messages) == 0:
            return repl("r = rlm_query('SUBTASK', context='chunk text')\nprint(r)")
        return repl("FINAL(r)")

    server = server_factory(policy=policy)
    result = run("ROOT", text_file(DOC), make_config(server, max_depth=0))
    assert result.answer == "fallback answered: SUBTASK"
    assert result.depth_reached == 0
    plain = [r for r in server.requests if not is_agent_prompt(r.messages)]
    assert len(plain) == 1 and "chunk text" in first_user(plain[0].messages)


def looping(messages):
    """A model that never answers: prints a running count forever."""
    if not is_agent_prompt(messages):
        return "sub"
    return repl(f"print('progress {turn(messages)}')")


def test_max_llm_calls_ends_the_run_with_partial_answer(server_factory, make_config, text_file):
    server = server_factory(policy=looping)
    result = run("q", text_file(DOC), make_config(server, max_llm_calls=3))
    assert result.status == "max_llm_calls"
    assert result.usage.llm_calls == 3
    assert result.answer == "progress 2"  # the last output the agent produced


def test_max_iterations_asks_once_for_a_final_answer(server_factory, make_config, text_file):
    def policy(messages):
        last = str(messages[-1].get("content"))
        if "You have used all 3 turns. Question: q" in last:  # the question is restated
            return repl("FINAL('best effort')")
        return looping(messages)

    server = server_factory(policy=policy)
    result = run("q", text_file(DOC), make_config(server, max_iterations=3))
    assert result.status == "max_iterations"
    assert result.answer == "best effort"
    assert result.usage.llm_calls == 4 and result.iterations == 3


def test_max_tokens_ends_the_run(server_factory, make_config, text_file):
    server = server_factory(policy=looping)
    result = run("q", text_file(DOC), make_config(server, max_tokens=1500))
    assert result.status == "max_tokens"
    assert result.usage.input_tokens + result.usage.output_tokens >= 1500
    assert result.answer and result.answer.startswith("progress")


def test_max_cost_ends_the_run(server_factory, make_config, text_file):
    server = server_factory(policy=looping)
    # a model with a known price, served by the scripted server
    result = run("q", text_file(DOC), make_config(server, model="openai/gpt-4.1-mini", max_cost_usd=0.0008))
    assert result.status == "max_cost"
    assert result.cost_usd is not None and result.cost_usd >= 0.0008


def test_timeout_ends_the_run_and_never_hangs(server_factory, make_config, text_file):
    server = server_factory(policy=looping, latency_ms=400)
    result = run("q", text_file(DOC), make_config(server, timeout_s=1.0))
    assert result.status == "timeout"
    assert result.duration_s < 5


def test_timeout_interrupts_a_long_cell(server_factory, make_config, text_file):
    server = server_factory(script=[repl("import time\ntime.sleep(30)")])
    result = run("q", text_file(DOC), make_config(server, timeout_s=2.0))
    assert result.status == "timeout"
    assert result.duration_s < 10


def test_limit_inside_a_batched_fan_out_stops_the_tree(server_factory, make_config, text_file):
    def policy(messages):
        if not is_agent_prompt(messages):
            return "x"
        if turn(messages) == 0:
            return repl("out = llm_query_batched(['p'] * 20)\nprint('not reached')")
        return repl("FINAL('no')")

    server = server_factory(policy=policy)
    result = run("q", text_file(DOC), make_config(server, max_llm_calls=6, max_concurrency=2))
    assert result.status == "max_llm_calls"
    assert result.usage.llm_calls == 6
    assert len(server.requests) == 6


def test_cell_timeout_restarts_the_worker_and_tells_the_model(server_factory, make_config, text_file):
    from rlm.config import SandboxConfig

    server = server_factory(script=[
        repl("kept = 1\nwhile True:\n    pass"),
        repl("print('kept' in globals(), len(context))"),
        repl("FINAL('recovered')"),
    ])
    result = run("q", text_file(DOC), make_config(server, sandbox=SandboxConfig(cell_timeout_s=1.0)))
    assert result.answer == "recovered"
    timed_out = server.requests[1].messages[-1]["content"]
    assert "timed out" in timed_out and "variables are gone" in timed_out
    assert f"False {len(DOC)}" in server.requests[2].messages[-1]["content"]


@pytest.mark.parametrize("bad", ["'not a list'", "[1, 2]"])
def test_bad_arguments_to_host_functions_are_model_errors(server_factory, make_config, text_file, bad):
    server = server_factory(script=[repl(f"llm_query_batched({bad})"), repl("FINAL('ok')")])
    result = run("q", text_file(DOC), make_config(server))
    assert result.answer == "ok"
    assert "TypeError" in server.requests[1].messages[-1]["content"]


def test_cancel_kills_a_running_cell_promptly(server_factory, make_config, text_file):
    import threading

    server = server_factory(script=[repl("import time\ntime.sleep(60)\nprint('not reached')")])

    def cancel_soon(run_id, budget):
        threading.Timer(1.0, budget.stop, args=("cancelled",)).start()

    result = run("q", text_file(DOC), make_config(server), on_start=cancel_soon)
    assert result.status == "cancelled"
    assert result.duration_s < 5  # the 60 s cell was killed, not waited for
