"""What the models are told: prompt snapshots, sizes from the windows, budget footers, reasoning never run.

The snapshots under ``tests/__snapshots__/test_prompts/`` are the rendered prompts:
every change to a prompt shows up as a diff of those files (update them with
``pytest tests/test_prompts.py --snapshot-update`` and review the diff).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO, first_user, is_agent_prompt, repl, turn
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from rlm import prompts
from rlm.capacity import DEFAULT_WINDOW, Capacity, capacity, window_for
from rlm.config import LOCAL_MODEL
from rlm.events import EventBus, IterationFinished
from rlm.runner import run

DOC = "alpha beta gamma\n" * 50 + "the secret code is ZEBRA-42\n" + "delta epsilon\n" * 50
PACKAGES = ("numpy 2.4.6", "pandas 3.1.1", "regex 2026.12.2")
SMALL = Capacity(8_192, 8_192)
UNKNOWN = Capacity(None, None)


class TextSnapshot(SingleFileSnapshotExtension):
    """One readable .txt file per snapshot."""

    _write_mode = WriteMode.TEXT
    _file_extension = "txt"


@pytest.fixture
def text_snapshot(snapshot):
    return snapshot.use_extension(TextSnapshot)


# -- snapshots -------------------------------------------------------------------------------------
SPECS = {
    "full": prompts.PromptSpec(capacity=UNKNOWN, packages=PACKAGES),
    "full_large_sub_model_no_packages": prompts.PromptSpec(capacity=Capacity(272_000, 272_000), max_iterations=30,
                                                           max_concurrency=8),
    "full_no_sub_calls": prompts.PromptSpec(capacity=UNKNOWN, sub_calls=False, packages=PACKAGES),
    "full_child_at_max_depth_with_extension": prompts.PromptSpec(capacity=UNKNOWN, child=True, children=False,
                                                                 packages=PACKAGES,
                                                    extra_functions=("`note(text)` — keep a note for later runs.",),
                                                    extra="Memories:\n- logs are in UTC"),
    "compact": prompts.PromptSpec(capacity=SMALL, packages=PACKAGES),
    "compact_no_sub_calls": prompts.PromptSpec(capacity=SMALL, sub_calls=False),
    "full_session": prompts.PromptSpec(capacity=UNKNOWN, packages=PACKAGES, session=True),
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_system_prompt_snapshot(name, text_snapshot):
    assert prompts.system_prompt(SPECS[name]) == text_snapshot


def test_turn_texts_snapshot(text_snapshot):
    spec = SPECS["compact"]
    parts = [
        "== example turns ==", *(f"[{role}]\n{text}" for role, text in prompts.example_turns(spec)),
        "== task ==", prompts.task_prompt(spec, "What is the launch code?", "`context` is a str of 1,234 characters."),
        "== task, full style ==",
        prompts.task_prompt(SPECS["full"], "What is the launch code?", "`context` is a str of 1,234 characters."),
        "== observation, cut ==", prompts.observation_header(50_063, 750, 250),
        "== footer ==", prompts.footer(prompts.TurnState(3, 20, "What is the launch code?", 187,
                                                         ("chunks (list, 12)", "total (int)"))),
        "== footer, two turns left ==", prompts.footer(prompts.TurnState(18, 20, "q " * 400, None)),
        "== forced answer ==", prompts.force_final(20, "What is the launch code?"),
        "== follow-up question ==", prompts.follow_up(3, "And the backup code?", [
            prompts.EarlierTurn(1, "What is the launch code?", "KESTREL-7", "ok"),
            prompts.EarlierTurn(2, "Who set it? " * 30, None, "max_iterations")]),
        "== summary request ==", prompts.summary_request("Output of your code (2 characters):\nok"),
        "== compacted history ==", prompts.compacted(3, "I found the code in line 812.", "And the backup code?"),
        "== footer without its timing, as a request key sees it ==", prompts.without_timing(
            prompts.footer(prompts.TurnState(3, 20, "What is the launch code?", 187))),
    ]
    assert "\n\n".join(parts) + "\n" == text_snapshot


# -- sizes from the windows ------------------------------------------------------------------------
def test_sizes_follow_the_windows():
    assert window_for(LOCAL_MODEL) == 8_192 and window_for("openai/smollm2-135m") == 8_192
    small = Capacity(8_192, 8_192)
    assert small.sub_call_chars == 12_000  # half of 8k tokens at 3 characters a token
    assert small.observation_chars == 1_900 and small.compact
    assert small.history_chars == (8_192 - 1_024) * 3
    unknown = Capacity(None, None)
    assert unknown.sub_call_chars == DEFAULT_WINDOW * 3 // 2 // 1_000 * 1_000 and not unknown.compact
    assert unknown.history_chars is None
    large = Capacity(272_000, 272_000)
    assert large.sub_call_chars == 408_000 and large.observation_chars == 20_000
    # a small root model with a large sub-model: short prompt, big sub-calls
    assert Capacity(8_192, 128_000).compact and Capacity(8_192, 128_000).sub_call_chars == 192_000


def test_window_lookup_never_imports_litellm():
    # litellm's map is read as a file: hosted windows are known without the seconds-long import
    code = ("import sys\nfrom rlm.capacity import window_for\n"
            "print(window_for('openai/gpt-4o'), window_for('local/smollm2-135m'), 'litellm' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.stdout.split() == ["128000", "8192", "False"], done.stderr


def test_window_lookup_of_unknown_models():
    assert window_for("openai/no-such-model-anywhere") is None
    assert capacity("openai/gpt-4o", "openai/gpt-4o").sub_call_chars == 192_000


# -- the loop: footers, question restated, style by window -----------------------------------------
def run_policy(server_factory, make_config, text_file, policy, question="What is the code?", **overrides):
    server = server_factory(policy=policy)
    bus = EventBus()
    iterations: list[IterationFinished] = []
    bus.subscribe(lambda e: iterations.append(e) if isinstance(e, IterationFinished) else None)
    result = run(question, text_file(DOC), make_config(server, **overrides), bus=bus)
    return result, server, iterations


def test_every_observation_reports_budget_variables_and_the_question(server_factory, make_config, text_file):
    def policy(messages):
        if turn(messages) < 3:
            return repl(f"step{turn(messages)} = list(range({turn(messages) + 2}))\nprint('ok')")
        return repl("FINAL('done')")

    result, server, _ = run_policy(server_factory, make_config, text_file, policy, max_iterations=5,
                                   max_llm_calls=50)
    assert result.answer == "done"
    first, third = server.requests[1].messages[-1]["content"], server.requests[3].messages[-1]["content"]
    assert first.startswith("Output of your code (2 characters):\nok\n")
    assert "[turn 1 of 5 done; 4 left; 49 LM calls left in this run]" in first
    assert "Variables: step0 (list, 2)" in first and first.endswith("Question: What is the code?")
    assert "Only" not in first
    assert "[turn 3 of 5 done; 2 left; 47 LM calls left in this run]" in third
    assert "Only 2 turns left" in third and "Variables: step0 (list, 2), step1 (list, 3), step2 (list, 4)" in third


def test_forced_answer_rides_on_the_last_observation(server_factory, make_config, text_file):
    def policy(messages):
        if "You have used all 2 turns" in str(messages[-1]["content"]):
            return repl("FINAL('forced')")
        return repl("print('looking')")

    result, server, _ = run_policy(server_factory, make_config, text_file, policy, max_iterations=2)
    assert result.status == "max_iterations" and result.answer == "forced"
    last = server.requests[-1].messages
    assert [m["role"] for m in last[-2:]] == ["assistant", "user"]  # no two user turns in a row
    assert last[-1]["content"].startswith("Output of your code")
    assert "Question: What is the code?" in last[-1]["content"]


def test_no_code_reply_also_gets_the_footer(server_factory, make_config, text_file):
    def policy(messages):
        return "I think I should look." if turn(messages) == 0 else repl("FINAL('x')")

    _, server, _ = run_policy(server_factory, make_config, text_file, policy)
    observation = server.requests[1].messages[-1]["content"]
    assert observation.startswith(prompts.NO_CODE) and "[turn 1 of 20 done; 19 left" in observation


def test_style_follows_the_root_window(server_factory, make_config, text_file):
    def policy(messages):
        return repl("FINAL('x')") if turn(messages) else repl("print(1)")

    _, unknown, _ = run_policy(server_factory, make_config, text_file, policy)
    _, small, _ = run_policy(server_factory, make_config, text_file, policy, model="openai/smollm2-135m")
    full_messages, compact_messages = unknown.requests[0].messages, small.requests[0].messages
    assert "## How to work" in full_messages[0]["content"] and len(full_messages) == 2  # system, task
    assert "## How to work" not in compact_messages[0]["content"]
    assert len(compact_messages) == 2 + len(prompts.EXAMPLE_TURNS)
    assert "12,000 characters" in compact_messages[0]["content"]  # SmolLM2's 8k window, halved
    for messages in (full_messages, compact_messages):
        assert is_agent_prompt(messages) and first_user(messages).count("What is the code?") == 1
        assert turn(messages) == 0


def test_old_outputs_are_trimmed_to_fit_a_small_window(server_factory, make_config, text_file):
    def policy(messages):
        return repl("FINAL('x')") if turn(messages) == 14 else repl("print('y' * 1_800)")

    # compact_at=None: this is about trimming alone (tests/test_compaction.py has the root compacting instead)
    result, server, _ = run_policy(server_factory, make_config, text_file, policy, model="openai/smollm2-135m",
                                   compact_at=None)
    assert result.answer == "x"
    room = Capacity(8_192, 8_192).history_chars
    sizes = [sum(len(m["content"]) for m in r.messages) for r in server.requests]
    assert max(sizes) <= room < 14 * 1_800  # without trimming the last request would not fit
    last = server.requests[-1].messages
    assert "trimmed to fit the model's window" in last[len(prompts.EXAMPLE_TURNS) + 3]["content"]
    assert last[-1]["content"].count("y" * 1_800) == 1  # the latest output stays whole


# -- reasoning is never executed -------------------------------------------------------------------
DRAFT = "```repl\nFINAL('wrong')\n```"
REAL = "```repl\nprint('checked')\n```"


@pytest.mark.parametrize("reply", [
    f"<think>The answer might be this:\n{DRAFT}\nNo, look first.</think>\n{REAL}",
    f"The answer might be this:\n{DRAFT}\nNo, look first.\n</think>\n\n{REAL}",  # opened by the chat template
    f"<|channel|>analysis<|message|>Maybe {DRAFT}<|end|><|start|>assistant<|channel|>final<|message|>{REAL}<|return|>",
])
def test_code_in_reasoning_is_not_run(server_factory, make_config, text_file, reply):
    def policy(messages):
        return reply if turn(messages) == 0 else repl("FINAL('right')")

    result, server, iterations = run_policy(server_factory, make_config, text_file, policy)
    assert result.answer == "right" and result.iterations == 2
    assert "checked" in server.requests[1].messages[-1]["content"]
    assert "FINAL('wrong')" in iterations[0].reply  # logged as the model wrote it ...
    assert "wrong" not in server.requests[1].messages[-2]["content"]  # ... but not fed back or run


def test_unclosed_reasoning_is_a_reply_without_code(server_factory, make_config, text_file):
    def policy(messages):
        return f"<think>Let me draft: {DRAFT} and keep thinking" if turn(messages) == 0 else repl("FINAL('right')")

    result, server, _ = run_policy(server_factory, make_config, text_file, policy)
    assert result.answer == "right"
    assert server.requests[1].messages[-1]["content"].startswith(prompts.NO_CODE)


def test_reasoning_content_field_is_not_run(server_factory, make_config, text_file):
    def policy(messages):
        if turn(messages) == 0:
            return {"content": REAL, "reasoning_content": f"Draft:\n{DRAFT}"}
        return repl("FINAL('right')")

    result, server, _ = run_policy(server_factory, make_config, text_file, policy)
    assert result.answer == "right" and result.iterations == 2


# -- the compact example's answer is not taken for this task's -------------------------------------
def test_the_examples_answer_is_refused_once_unless_an_output_showed_it(server_factory, make_config, text_file):
    def copying(messages):
        return [repl("print('nothing found')"), repl("FINAL('ZEBRA-42')"), repl("FINAL('ZEBRA-42')")][turn(messages)]

    result, server, _ = run_policy(server_factory, make_config, text_file, copying, model="openai/smollm2-135m")
    assert result.answer == "ZEBRA-42" and result.iterations == 3  # refused once, then the model insisted
    assert prompts.EXAMPLE_LEAK in server.requests[2].messages[-1]["content"]

    def reading(messages):
        return [repl("print(context[context.find('secret'):][:27])"), repl("FINAL('ZEBRA-42')")][turn(messages)]

    result, _, _ = run_policy(server_factory, make_config, text_file, reading, model="openai/smollm2-135m")
    assert result.answer == "ZEBRA-42" and result.iterations == 2  # DOC holds it and an output showed it
