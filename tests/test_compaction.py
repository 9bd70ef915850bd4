"""Compaction: a root whose history nears its model's window summarises its progress and continues from
the summary, with the whole history in ``history[turn]`` and every cut segment in the run log.

The root's deployment gets a small window through a models file (counted in bytes, so the test
knows exactly where the line is); the scripted server refuses any request over that window, as a
real server would.
"""

from __future__ import annotations

from conftest import is_agent_prompt, repl

from rlm import prompts
from rlm.events import EventBus, HistoryCompacted, LMCalled
from rlm.routing.spec import Deployment, Group, ModelsSpec
from rlm.runlog import RunLog
from rlm.runner import run
from rlm.sessions import Session

WINDOW = 10_000  # tokens; the bytes tokenizer counts a byte as a token
OUTPUT = "the quick brown fox jumps over the lazy dog; " * 14  # ~630 characters per observation


def small_window(server) -> ModelsSpec:
    return ModelsSpec(groups=(Group("root", (Deployment(model="openai/scripted", api_base=server.base_url,
                                                        context_window=WINDOW, tokenizer="bytes"),)),))


def policy(messages):
    if not is_agent_prompt(messages):
        return "sub"
    last = str(messages[-1]["content"])
    if last.endswith(prompts.SUMMARY_REQUEST):
        return "I printed the same sentence in every turn and set v0, v1, ... to the turn numbers."
    if any(str(m["content"]).startswith("[The conversation was cut") for m in messages):
        return repl("FINAL(f'{len(history[1])} messages before the cut; v0={v0}')")
    step = sum(1 for m in messages if m["role"] == "assistant")
    return repl(f"v{step} = {step}\nprint({OUTPUT!r})")


def test_the_root_compacts_near_its_window_and_continues_from_its_summary(server_factory, make_config, text_file):
    server = server_factory(policy=policy, context_window=WINDOW)
    config = make_config(server, models=small_window(server), compact_at=0.75)
    events = []
    bus = EventBus()
    bus.subscribe(events.append)
    result = run("Print the sentence until told otherwise", text_file("some input"), config, bus=bus)
    compactions = [e for e in events if isinstance(e, HistoryCompacted)]
    assert len(compactions) == 1
    cut = compactions[0]
    assert cut.summary.startswith("I printed the same sentence") and cut.chars_after < cut.chars_before
    assert result.status == "ok" and result.answer == f"{len(cut.messages)} messages before the cut; v0=0"
    summary_calls = [e for e in events if isinstance(e, LMCalled) and e.purpose == "summary"]
    assert len(summary_calls) == 1
    after = server.requests[-1].messages
    assert [m["role"] for m in after] == ["system", "user"]
    assert after[1]["content"].startswith("[The conversation was cut") and "history[1]" in after[1]["content"]
    assert all(r.status == 200 for r in server.requests)  # nothing went over the window
    sizes = [sum(len(m["content"].encode()) for m in r.messages) for r in server.requests]
    assert max(sizes) < WINDOW
    with RunLog(config.runlog_path) as log:
        stored = [e for e in log.events(result.run_id) if isinstance(e, HistoryCompacted)]
    assert stored[0].messages == cut.messages and len(cut.messages) >= 5  # the segment, whole, in the log


def test_a_session_compacts_too_and_its_later_turns_read_the_cut_turn(server_factory, make_config, text_file):
    def session_policy(messages):
        if is_agent_prompt(messages) and str(messages[-1]["content"]).startswith("Next question"):
            return repl("FINAL(str(sorted(history)) + ' ' + str(v0))")
        return policy(messages)

    server = server_factory(policy=session_policy, context_window=WINDOW)
    config = make_config(server, models=small_window(server), compact_at=0.75)
    with Session("compacting", text_file("some input"), config) as session:
        first = session.ask("Print the sentence until told otherwise")
        second = session.ask("Which turns are recorded?")
    assert first.status == "ok" and second.answer == "[1] 0"
