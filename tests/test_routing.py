"""Model groups and routing: real runs against several scripted deployments with different windows."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest
from conftest import first_user, is_agent_prompt, repl, turn

from rlm.config import RLMConfig
from rlm.errors import ConfigError
from rlm.lm import LMClient
from rlm.routing.router import CallSite, ContextTooLarge, ModelRouter, UnknownGroup
from rlm.routing.spec import ModelsSpec, load_models, parse_models
from rlm.routing.table import RouteTable
from rlm.routing.tokens import PromptSize, tokenizer
from rlm.runlog import RunLog
from rlm.runner import run

DOC = "line one\nline two\n"


def deployment(server, **extra):
    return {"model": "openai/scripted", "api_base": server.base_url, "name": extra.pop("name"), **extra}


def models(groups: dict, routing: dict | None = None) -> ModelsSpec:
    return parse_models({"groups": groups, **({"routing": routing} if routing else {})})[0]


def calls_of(config: RLMConfig, run_id: str):
    with RunLog(config.runlog_path) as log:
        return log.lm_calls(run_id)


def root_policy(code_turn0: str, final: str = "FINAL(out)"):
    """Root: runs ``code_turn0`` first, then ``final``; sub-calls answer ``<server>:<prompt head>``."""

    def policy(messages):
        if is_agent_prompt(messages):
            return repl(code_turn0) if turn(messages) == 0 else repl(final)
        return "sub:" + first_user(messages)[:12]

    return policy


# -- the models file ----------------------------------------------------------------------

def test_the_minimal_file_of_the_issue_parses_as_written(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text('''
[groups.root]
deployments = [{ model = "openai/small", api_base = "http://127.0.0.1:8001/v1", context_window = 8192 }]
[groups.heavy]
deployments = [
  { model = "openai/big", api_base = "http://gpu-node:8000/v1", context_window = 131072, order = 1 },
  { model = "openai/gpt-4.1-mini", context_window = 1047576, order = 2 },
]
''')
    spec, _ = load_models(path)
    table = RouteTable(RLMConfig(models=spec))
    assert list(table.groups) == ["root", "heavy"]
    heavy = table.groups["heavy"]
    assert [(t.name, t.window, t.order, t.endpoint is not None) for t in heavy] == [
        ("openai/big@gpu-node:8000", 131072, 1, True), ("openai/gpt-4.1-mini", 1047576, 2, False)]
    assert table.resolve("sub") == "root"  # no sub group: llm_query and children use root
    assert RLMConfig.from_dict(RLMConfig(models=spec).to_dict()).models == spec


@pytest.mark.parametrize("text, message", [
    ('[groups.root]\ndeployments = [{ api_base = "http://x/v1" }]', "needs a model"),
    ('[groups.root]\ndeployments = [{ model = "openai/x", api_key = "sk-1" }]', "api_key_env"),
    ('[groups.root]\ndeployments = [{ model = "openai/x", windw = 3 }]', "unknown key(s) windw"),
    ('[groups.root]\ndeployments = [{ model = "openai/x", context_window = "big" }]', "must be an integer"),
    ('[groups.root]\ndeployments = [{ model = "openai/x", tokenizer = "gpt9" }]', "unknown tokenizer"),
    ('[groups.root]\ndeployments = []', "non-empty list"),
    ('[groups.root]\ndeployments = [{ model = "openai/x" }]\n[routing.heavy]\nprompt_tokens = 5',
     "no group named 'heavy'"),
    ('[groups.root]\ndeployments = [{ model = "openai/x" }]\n[routing]\nchildren = "kids"', "no group named 'kids'"),
    ('[groups."9bad"]\ndeployments = [{ model = "openai/x" }]', "a name starts with a letter"),
    ('[groups.root]\ndeployments = [{ model = "a", name = "d" }, { model = "b", name = "d" }]', "names two different"),
    ('[groups.root\n', "models file"),
])
def test_a_bad_models_file_is_a_config_error_naming_the_problem(tmp_path, text, message):
    path = tmp_path / "models.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="models file") as caught:
        load_models(path)
    assert message in str(caught.value)


def test_without_a_file_model_and_sub_model_make_one_deployment_groups():
    table = RouteTable(RLMConfig(model="openai/a", sub_model="openai/b", api_base="http://127.0.0.1:1/v1"))
    assert {g: [t.deployment.model for t in ts] for g, ts in table.groups.items()} == {
        "root": ["openai/a"], "sub": ["openai/b"]}
    assert LMClient(RLMConfig(model="openai/a", sub_model="openai/b")).model_for("sub") == "openai/b"


# -- the decision --------------------------------------------------------------------------

def router(groups, routing=None) -> ModelRouter:
    return ModelRouter(RouteTable(RLMConfig(models=models(groups, routing))))


def local(name, window=None, **extra):
    return {"model": f"openai/{name}", "api_base": f"http://127.0.0.1:9/{name}/v1", "name": name,
            **({"context_window": window} if window else {}), "tokenizer": "bytes", **extra}


def test_role_and_depth_defaults_and_the_reasons_recorded():
    r = router({"root": {"deployments": [local("r")]}, "sub": {"deployments": [local("s")]},
                "deep": {"deployments": [local("d")]}}, {"depth": {"2": "deep"}})
    hi = [{"role": "user", "content": "hi"}]
    assert (r.decide(hi).group, r.decide(hi).reason) == ("root", "root agent")
    assert r.decide(hi, role="sub", site=CallSite()).reason == "sub-call"
    child = r.decide(hi, role="sub", site=CallSite(kind="agent", depth=1))
    assert (child.group, child.reason) == ("sub", "child agent at depth 1")
    assert r.decide(hi, role="sub", site=CallSite(kind="agent", depth=2)).group == "deep"
    asked = r.decide(hi, role="sub", ask="deep")
    assert (asked.group, asked.reason) == ("deep", "asked for deep")
    with pytest.raises(UnknownGroup, match="ask for one of: root, sub, deep"):
        r.decide(hi, ask="gpu")


def test_heavy_rules_send_big_prompts_deep_agents_and_big_batches_to_heavy():
    r = router({"root": {"deployments": [local("r")]}, "heavy": {"deployments": [local("h")]}},
               {"heavy": {"prompt_tokens": 1000, "batch_size": 50, "depth": 3}})
    assert r.decide([{"role": "user", "content": "word " * 100}], role="sub").group == "root"
    big = r.decide([{"role": "user", "content": "word " * 2000}], role="sub")
    assert big.group == "heavy" and re.fullmatch(r"heavy: prompt ~2,\d{3} tokens > 1,000", big.reason)
    own_turn = r.decide([{"role": "user", "content": "word " * 2000}], site=CallSite(kind="agent"))
    assert own_turn.group == "root"  # an agent's own turns keep their group as their history grows
    deep = r.decide([{"role": "user", "content": "x"}], site=CallSite(kind="agent", depth=3))
    assert (deep.group, deep.reason) == ("heavy", "heavy: depth 3 >= 3")
    assert r.batch_group(50) is None
    ruled = r.batch_group(51)
    assert ruled == "heavy" and ruled.reason == "heavy: batch of 51 > 50"
    via = r.decide([{"role": "user", "content": "x"}], role="sub", ask=ruled)
    assert (via.group, via.reason) == ("heavy", "heavy: batch of 51 > 50")
    asked = r.decide([{"role": "user", "content": "word " * 2000}], role="sub", ask="root")
    assert asked.group == "root"  # the model's own choice beats a heavy rule (both fit)


def test_the_size_guard_moves_a_prompt_to_the_smallest_window_that_fits_or_refuses_it():
    r = router({"root": {"deployments": [local("small", 2000)]}, "mid": {"deployments": [local("mid", 9000)]},
                "heavy": {"deployments": [local("big", 40000)]}})
    fits = r.decide([{"role": "user", "content": "a" * 1000}], role="sub")
    assert fits.group == "root"
    moved = r.decide([{"role": "user", "content": "a" * 5000}], role="sub")
    assert moved.group == "mid" and "do not fit root (window 2,000): moved to mid" in moved.reason
    asked = r.decide([{"role": "user", "content": "a" * 20000}], ask="root")
    assert asked.group == "heavy" and asked.reason.startswith("asked for root; ")
    with pytest.raises(ContextTooLarge, match="fits no model: the largest window is 40,000 tokens; split it"):
        r.decide([{"role": "user", "content": "a" * 50000}])


def test_inside_a_group_order_first_then_cooldowns_and_busy_deployments_are_skipped():
    r = router({"root": {"deployments": [local("gpu", order=1, max_in_flight=2), local("api", order=2)]}})
    hi = [{"role": "user", "content": "hi"}]
    first = r.decide(hi)  # each decision counts its call in flight until finished() says it ended
    assert first.target.name == "gpu" and [t.name for t in first.candidates] == ["gpu", "api"]
    assert r.decide(hi).target.name == "gpu"
    busy = r.decide(hi)
    assert busy.target.name == "api" and "gpu busy (2 in flight)" in busy.reason
    r.state.finished("gpu", ok=True)
    r.state.failed("gpu")
    cooling = r.decide(hi)
    assert cooling.target.name == "api" and "gpu cooling down" in cooling.reason
    assert [t.name for t in cooling.candidates] == ["api", "gpu"]


def test_the_estimate_never_undercounts_by_more_than_the_margin_on_mixed_text():
    """Step 2 of the guard: estimate * 1.25 >= exact, estimate * 0.8 <= exact (o200k_base)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blob = "".join(chr(33 + (i * 7919) % 90) for i in range(3000))
    for text in (readme[:20000], readme[:9000] + blob + readme[9000:18000], "12345 67 890 " * 2000,
                 "人工智能是计算机科学的一个分支。" * 400):
        size = PromptSize([{"role": "user", "content": text}])
        exact, estimate = size.exact("o200k_base"), size.estimate("o200k_base")
        assert estimate * 0.8 <= exact <= estimate * 1.25, (exact, estimate)
        room = exact - 1
        assert not size.fits(room, "o200k_base") and size.fits(exact, "o200k_base")
    assert tokenizer("o200k_base").count("hello world") == 2


def test_the_embedded_models_tokenizer_counts_without_writing_to_stderr():
    import subprocess
    import sys

    code = ("from rlm.routing.tokens import tokenizer\n"
            "print(tokenizer('embedded').count('hello world ' * 3000))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "6001"
    assert done.stderr == ""  # llama.cpp's log lines went to logging, not into the user's terminal


# -- whole runs against scripted deployments -------------------------------------------------

def test_a_run_routes_by_group_and_records_where_each_call_went(server_factory, make_config, text_file):
    code = ("a = llm_query('short question')\n"
            "b = llm_query('long ' * 3000)\n"
            "c = llm_query('asked for heavy', model='heavy')\n"
            "try:\n    llm_query('x', model='gpu')\nexcept Exception as e:\n    print('ERR', e)\n"
            "out = [a[:9], b[:9], c[:9]]")
    root = server_factory(policy=root_policy(code), context_window=100_000)
    small = server_factory(policy=lambda m: "small", context_window=4000)
    heavy = server_factory(policy=lambda m: "heavy", context_window=64_000)
    spec = models({"root": {"deployments": [deployment(root, name="root-srv", tokenizer="bytes")]},
                   "sub": {"deployments": [deployment(small, name="small-srv", context_window=4000,
                                                      tokenizer="bytes")]},
                   "heavy": {"deployments": [deployment(heavy, name="heavy-srv", context_window=64_000,
                                                        tokenizer="bytes")]}})
    config = make_config(root, models=spec, max_completion_tokens=200)
    result = run("q", text_file(DOC), config)
    assert result.status == "ok", result.error
    assert result.answer == str(["small", "heavy", "heavy"])
    assert "ERR there is no model group 'gpu'; ask for one of: root, sub, heavy" in root.requests[-1].messages[-1][
        "content"]
    rows = [(c.purpose, c.model_group, c.deployment, c.ok) for c in calls_of(config, result.run_id)]
    assert rows == [("iteration", "root", "root-srv", True), ("llm_query", "sub", "small-srv", True),
                    ("llm_query", "heavy", "heavy-srv", True), ("llm_query", "heavy", "heavy-srv", True),
                    ("llm_query", None, None, False), ("iteration", "root", "root-srv", True)]
    reasons = [c.route_reason for c in calls_of(config, result.run_id)]
    assert reasons[1] == "sub-call" and reasons[3] == "asked for heavy"
    assert reasons[2].startswith("sub-call; 15,0")
    assert reasons[2].endswith("do not fit sub (window 4,000): moved to heavy")
    assert all(c.node == "127.0.0.1" and c.queue_s is not None and c.queue_s >= 0
               for c in calls_of(config, result.run_id) if c.ok)
    for server in (root, small, heavy):  # the guard: no deployment ever saw a prompt it could not fit
        assert all(r.fault is None and r.status == 200 for r in server.requests)
    assert len(small.requests) == 1


def test_a_prompt_too_big_for_every_group_fails_fast_and_the_model_sees_it(server_factory, make_config, text_file):
    code = "try:\n    llm_query('x' * 50_000)\nexcept Exception as e:\n    print('ERR', e)\nout = 'done'"
    root = server_factory(policy=root_policy(code))
    small = server_factory(policy=lambda m: "small", context_window=4000)
    spec = models({"root": {"deployments": [deployment(root, name="root-srv", context_window=32_000)]},
                   "sub": {"deployments": [deployment(small, name="small-srv", context_window=4000,
                                                      tokenizer="bytes")]}})
    config = make_config(root, models=spec)
    result = run("q", text_file(DOC), config)
    assert result.status == "ok"
    assert "fits no model: the largest window is 32,000 tokens; split it" in root.requests[-1].messages[-1]["content"]
    assert small.requests == []  # nothing was sent, no paid attempt


def test_the_first_order_down_means_the_call_is_retried_on_the_next_order(server_factory, make_config, text_file):
    code = "out = llm_query('hello')"
    root = server_factory(policy=root_policy(code))
    backup = server_factory(policy=lambda m: "from backup")
    dead = "http://127.0.0.1:9/v1"  # nothing listens on port 9 (discard): refused at once
    spec = models({"root": {"deployments": [deployment(root, name="root-srv")]},
                   "sub": {"deployments": [{"model": "openai/gpu", "api_base": dead, "name": "gpu", "order": 1},
                                           deployment(backup, name="backup", order=2)]}})
    config = make_config(root, models=spec, lm_retries=2)
    result = run("q", text_file(DOC), config)
    assert result.status == "ok" and result.answer == "from backup"
    sub = [c for c in calls_of(config, result.run_id) if c.purpose == "llm_query"]
    assert [(c.model_group, c.deployment, c.ok) for c in sub] == [("sub", "backup", True)]
    assert sub[0].route_reason == "sub-call; gpu failed: retried on backup"
    assert len(backup.requests) == 1 and result.usage.llm_calls == 3  # counted once


def test_a_big_batch_goes_heavy_as_a_whole_and_items_record_their_wait(server_factory, make_config, text_file):
    code = "out = llm_query_batched([f'q{i}' for i in range(6)])\nout = sorted(set(out))"
    root = server_factory(policy=root_policy(code))
    heavy = server_factory(policy=lambda m: "heavy", latency_ms=100)
    spec = models({"root": {"deployments": [deployment(root, name="root-srv")]},
                   "heavy": {"deployments": [deployment(heavy, name="heavy-srv")]}},
                  {"heavy": {"batch_size": 4}})
    config = make_config(root, models=spec, max_concurrency=2)
    result = run("q", text_file(DOC), config)
    assert result.answer == "['heavy']"
    sub = [c for c in calls_of(config, result.run_id) if c.purpose == "llm_query"]
    assert {(c.model_group, c.route_reason) for c in sub} == {("heavy", "heavy: batch of 6 > 4")}
    waits = sorted(c.queue_s for c in sub)
    assert waits[0] < 0.05 and waits[-1] > 0.15  # 2 in flight at 100 ms: the last pair waited two turns


def test_rlm_query_with_model_runs_the_child_on_that_group(server_factory, make_config, text_file):
    def policy(messages):
        task = first_user(messages)
        if "Question: CHILD" in task:
            return repl("FINAL('child done')")
        if turn(messages) == 0:
            return repl("out = rlm_query('CHILD', context='chunk', model='heavy')")
        return repl("FINAL(out)")

    root = server_factory(policy=policy)
    heavy = server_factory(policy=policy)
    spec = models({"root": {"deployments": [deployment(root, name="root-srv")]},
                   "heavy": {"deployments": [deployment(heavy, name="heavy-srv")]}})
    config = make_config(root, models=spec, max_depth=1)
    result = run("q", text_file(DOC), config)
    assert result.answer == "child done"
    rows = {(c.agent_id != "a0", c.model_group, c.route_reason) for c in calls_of(config, result.run_id)}
    assert rows == {(False, "root", "root agent"), (True, "heavy", "asked for heavy")}


def test_lean_runs_still_import_no_litellm_with_a_models_file(server_factory, tmp_path, text_file):
    """Several OpenAI-compatible deployments and no failure: no litellm in the process."""
    import subprocess
    import sys

    a = server_factory(policy=root_policy("out = llm_query('hi', model='heavy')"))
    b = server_factory(policy=lambda m: "b")
    path = tmp_path / "models.toml"
    path.write_text(f'''
[groups.root]
deployments = [{{ model = "openai/a", api_base = "{a.base_url}" }}]
[groups.heavy]
deployments = [{{ model = "openai/b", api_base = "{b.base_url}", order = 1 }},
               {{ model = "openai/c", api_base = "{b.base_url}", order = 2 }}]
''')
    code = ("import sys, pathlib; from rlm.config import RLMConfig, SandboxConfig; from rlm.runner import run; "
            "from rlm.routing.spec import load_models; "
            f"spec, _ = load_models(pathlib.Path({str(path)!r})); "
            f"r = run('q', pathlib.Path({str(text_file(DOC))!r}), RLMConfig(models=spec, home=pathlib.Path("
            f"{str(tmp_path / 'home')!r}), record_run=False)); "
            "print(r.answer, 'litellm' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["b", "False"], done.stderr[-2000:]


def test_concurrent_decisions_count_in_flight_calls_per_deployment(server_factory, make_config):
    gate = threading.Event()
    server = server_factory(policy=lambda m: "ok", latency_ms=200)
    spec = models({"root": {"deployments": [deployment(server, name="one", max_in_flight=1, order=1),
                                             deployment(server, name="two", order=1)]}})
    client = LMClient(make_config(server, models=spec))
    seen = []

    def call():
        gate.wait()
        seen.append(client.complete([{"role": "user", "content": "hi"}]).deployment)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join()
    assert sorted(seen) == ["one", "two"]  # the busy one was skipped for the second
    assert json.dumps(client.state.snapshot())


def test_retries_through_litellms_router_never_reach_a_deployment_the_prompt_does_not_fit(
        server_factory, make_config, text_file):
    """The only fitting deployment fails once: the Router retries it, never the small order-1 one."""
    code = "out = llm_query('long ' * 2000)"
    root = server_factory(policy=root_policy(code))
    failures = iter([{"status": 500, "content": "overloaded"}])
    big = server_factory(policy=lambda m: next(failures, "from big"))
    small = server_factory(policy=lambda m: "from small", context_window=2000)
    spec = models({"root": {"deployments": [deployment(root, name="root-srv")]},
                   "sub": {"deployments": [deployment(small, name="small", context_window=2000, order=1,
                                                      tokenizer="bytes"),
                                           deployment(big, name="big", context_window=64_000, order=2,
                                                      tokenizer="bytes")]}})
    config = make_config(root, models=spec, lm_retries=3)
    result = run("q", text_file(DOC), config)
    assert result.answer == "from big"
    assert small.requests == [] and len(big.requests) == 2
    sub = [c for c in calls_of(config, result.run_id) if c.purpose == "llm_query"]
    assert [(c.deployment, c.ok) for c in sub] == [("big", True)]


def test_rlm_show_and_the_tui_show_where_calls_went_and_per_deployment_totals(server_factory, make_config, text_file):
    from rlm.tree import build_tree, deployment_totals, render_tree
    from rlm.tui.swarm import SwarmState
    from rlm.tui.widgets import agent_renderable, renderable_text

    root = server_factory(policy=root_policy("out = llm_query_batched(['a', 'b', 'c'], model='heavy')"))
    heavy = server_factory(policy=lambda m: "h")
    spec = models({"root": {"deployments": [deployment(root, name="root-srv")]},
                   "heavy": {"deployments": [deployment(heavy, name="heavy-srv", input_cost_per_token=1e-6,
                                                        output_cost_per_token=2e-6)]}})
    config = make_config(root, models=spec)
    result = run("q", text_file(DOC), config)
    with RunLog(config.runlog_path) as log:
        events = log.events(result.run_id)
    graph = build_tree(events)
    totals = {row["deployment"]: row for row in deployment_totals(graph)}
    assert totals["heavy-srv"]["calls"] == 3 and totals["heavy-srv"]["cost_usd"] > 0
    assert totals["root-srv"]["calls"] == 2 and totals["root-srv"]["cost_usd"] is None  # price unknown
    text = render_tree(graph)
    assert "  deployments:\n    heavy-srv (heavy): 3 calls" in text
    assert "-> heavy/heavy-srv on 127.0.0.1: 3 llm_query [asked for heavy]" in text
    assert "-> root/root-srv on 127.0.0.1: 1 iteration [root agent]" in text
    state = SwarmState.from_events(events)
    shown = renderable_text(agent_renderable(state.agents["a0"], state), width=200)
    assert "via root/root-srv on 127.0.0.1 [root agent]" in shown
    assert "3 -> heavy/heavy-srv on 127.0.0.1 [asked for heavy]" in shown
    assert "heavy-srv: 3 calls" in shown


def test_rlm_models_lists_groups_health_and_totals_and_ask_takes_models(server_factory, tmp_path, rlm_home,
                                                                        text_file, capsys, monkeypatch):
    from rlm.cli import main

    root = server_factory(policy=root_policy("out = llm_query('hi', model='heavy')"))
    heavy = server_factory(policy=lambda m: "from heavy")
    path = tmp_path / "models.toml"
    path.write_text(f'''
[groups.root]
deployments = [{{ model = "openai/a", api_base = "{root.base_url}", name = "root-srv", context_window = 32000 }}]
[groups.heavy]
description = "the big one"
deployments = [{{ model = "openai/b", api_base = "{heavy.base_url}", name = "heavy-srv", order = 1 }},
               {{ model = "openai/c", api_base = "http://127.0.0.1:9/v1", name = "down-srv", order = 2 }}]
''')
    monkeypatch.setenv("RLM_API_KEY", "sk-test")
    assert main(["ask", str(text_file(DOC)), "q", "--models", str(path), "--no-service", "--unsafe-no-sandbox",
                 "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["answer"] == "from heavy"
    system = root.requests[0].messages[0]["content"]
    assert "`root` (32,000-token window), `heavy` (the big one)" in system  # the groups model= may name
    assert main(["models", "--models", str(path), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    rows = {row["deployment"]: row for row in listing["deployments"]}
    assert rows["root-srv"]["health"] == "up" and rows["down-srv"]["health"] == "down"
    assert rows["heavy-srv"]["totals"]["calls"] == 1 and rows["root-srv"]["totals"]["calls"] == 2
    assert rows["down-srv"]["totals"] is None and rows["heavy-srv"]["group"] == "heavy"
    (rlm_home / "models.toml").write_text(path.read_text())  # the default file in RLM_HOME
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "group heavy  (the big one)" in text and "1. heavy-srv" in text and "DOWN (" in text
    assert "last 7 days: 1 calls (0 failed) in 1 runs" in text
    (rlm_home / "models.toml").write_text("[groups.root]\ndeployments = []\n")
    assert main(["models"]) == 2
    assert "deployments: must be a non-empty list" in capsys.readouterr().err
