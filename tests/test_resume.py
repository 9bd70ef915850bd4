"""``kill -9`` mid-run, then ``rlm resume``: the same answer, and no finished work asked for again.

Each case runs ``rlm ask`` as a real process against the scripted server, kills it with SIGKILL
at a chosen moment (the root mid-cell, a child mid-cell, a fan-out half answered), then runs
``rlm resume RUN_ID`` as another process. The answer must equal an uninterrupted run's, and no
request the server had answered before the kill may reach it again (a request still in flight
when the process died was never recorded: it is made again).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import first_user, is_agent_prompt, repl, turn

from rlm import prompts
from rlm.records import canonical_json
from rlm.runlog import RunLog
from rlm.runner import run

DOC = "".join(f"line {i} {'x' * (i % 5)}\n" for i in range(80))
SLEEP = "import time\ntime.sleep(4)\nprint('slept')"


def root_mid_cell(messages):
    if not is_agent_prompt(messages):
        return "sub"
    steps = [repl("n = len(context)\nprint(n)"), repl(f"{SLEEP}\nm = n * 2"), repl("print(m)"), repl("FINAL(str(m))")]
    return steps[min(turn(messages), 3)]


def child_mid_cell(messages):
    if not is_agent_prompt(messages):
        return "sub"
    if prompts.CHILD_NOTE in str(messages[0]["content"]):
        steps = [repl("k = context.count('x')\nprint(k)"), repl(f"{SLEEP}\nk += 1"), repl("FINAL(str(k))")]
        return steps[min(turn(messages), 2)]
    steps = [repl("a = rlm_query('count the x', context=context[:300])\nprint(a)"), repl("FINAL('child: ' + a)")]
    return steps[min(turn(messages), 1)]


def mid_fan_out(slow: dict[str, bool]):
    def policy(messages):
        if not is_agent_prompt(messages):
            prompt = first_user(messages) or messages[-1]["content"]
            if prompt == "item 5" and not slow.get("done"):
                slow["done"] = True  # the first time only: the resumed run gets it at once
                return {"content": "five", "delay_ms": 20_000}
            return f"{prompt} ok"
        steps = [repl("r = llm_query_batched([f'item {i}' for i in range(8)])\nprint(r)"),
                 repl("FINAL(' | '.join(r))")]
        return steps[min(turn(messages), 1)]

    return policy


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def answered(server):
    return [r for r in server.requests if r.responded_at is not None and r.status == 200]


CASES = {
    # the root's second cell is sleeping: its two answered calls must not be asked for again
    "root mid-cell": (root_mid_cell, lambda server: len(answered(server)) >= 2),
    # the child's second cell is sleeping: the root's call and the child's two calls are done
    "child mid-cell": (child_mid_cell, lambda server: len(answered(server)) >= 3),
    # seven of eight sub-calls of a batch answered, the eighth still in flight
    "mid fan-out": (None, lambda server: len(answered(server)) >= 8),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_kill_9_then_resume_repeats_no_finished_work(case, server_factory, make_config, text_file, rlm_home):
    make_policy, ready = CASES[case]
    path = text_file(DOC)
    reference = server_factory(policy=make_policy or mid_fan_out({"done": True}))
    expected = run("What is it?", path, make_config(reference, max_depth=1)).answer
    server = server_factory(policy=make_policy or mid_fan_out({}))
    env = {**os.environ, "RLM_HOME": str(rlm_home), "RLM_NO_SERVICE": "1", "RLM_MODEL": "openai/scripted",
           "RLM_API_BASE": server.base_url, "RLM_API_KEY": "sk-test"}
    asked = subprocess.Popen([sys.executable, "-m", "rlm.cli", "ask", str(path), "What is it?", "--quiet"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: ready(server))
        time.sleep(1.0)  # the client has recorded what it received; the cell (or the slow item) goes on
    finally:
        asked.send_signal(signal.SIGKILL)
        asked.wait()
    finished = {canonical_json(r.messages) for r in answered(server)}
    before = len(server.requests)
    with RunLog(rlm_home / "rlm.duckdb") as log:  # the open stores the dead process's journal
        killed = [r for r in log.list_runs() if r.status == "running"]
    assert len(killed) == 1
    done = subprocess.run([sys.executable, "-m", "rlm.cli", "resume", killed[0].run_id, "--json", "--quiet"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["answer"] == expected
    again = [r for r in server.requests[before:] if canonical_json(r.messages) in finished]
    assert again == []
    assert len(server.requests) > before  # the unfinished part was made live
    with RunLog(rlm_home / "rlm.duckdb") as log:
        resumed = log.get_run(json.loads(done.stdout)["run_id"])
    assert (resumed.origin, resumed.parent_run_id) == ("resume", killed[0].run_id)
    assert resumed.cache_hits == len(finished)  # every finished call answered from its record
