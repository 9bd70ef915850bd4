"""Model profiles: lookup by family, the default, the window rule, the prompt style, and the request
fields (stop sequences, llama.cpp's grammar) reaching the wire on agents' turns only."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO, first_user, is_agent_prompt, repl, turn

from rlm import profiles
from rlm.capacity import Capacity, capacity, capacity_for
from rlm.config import LOCAL_MODEL, RLMConfig
from rlm.errors import ConfigError
from rlm.lm import LMClient
from rlm.profiles import DEFAULT_PROFILE, REPLY_GRAMMAR, profile_for, window
from rlm.routing.spec import ModelsSpec, parse_models
from rlm.routing.table import RouteTable
from rlm.runner import run

DOC = "The harbour master's launch code is KITE-5592.\n" * 20


def models(groups: dict, routing: dict | None = None) -> ModelsSpec:
    return parse_models({"groups": groups, **({"routing": routing} if routing else {})})[0]


# -- lookup ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model, family", [
    (LOCAL_MODEL, "smollm2"), ("openai/smollm2-135m", "smollm2"),
    ("openai/gpt-4.1-mini", "gpt-4.1"), ("gpt-5-mini", "gpt-5"), ("openai/gpt-5", "gpt-5"),
    ("openai/o3", "openai-o"), ("o4-mini", "openai-o"), ("o1", "openai-o"),
    ("anthropic/claude-sonnet-4-5", "claude"), ("bedrock/anthropic.claude-3-5-haiku-20241022-v1:0", "claude"),
    ("gemini/gemini-2.5-pro", "gemini"), ("vertex_ai/gemini-2.0-flash", "gemini"),
    ("hosted_vllm/Qwen/Qwen3-8B", "qwen3"), ("openai/Qwen/Qwen3-30B-A3B-Instruct-2507", "qwen3-long"),
    ("openai/Qwen/Qwen3-Coder-30B-A3B-Instruct", "qwen3-long"),
    ("openai/deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "deepseek-r1"),
    ("openai/deepseek-ai/DeepSeek-R1-0528-Qwen3-8B", "deepseek-r1"),  # R1-distilled, not Qwen3's profile
    ("deepseek/deepseek-reasoner", "deepseek-r1"),
    ("openai/meta-llama/Llama-3.1-8B-Instruct", "llama"), ("ollama/llama3.2", "llama"),
    ("openai/meta-llama/Meta-Llama-3-8B-Instruct", "llama-3"),
])
def test_families_are_matched_by_the_model_string(model, family):
    assert profile_for(model).name == family


@pytest.mark.parametrize("model", ["openai/gpt-4o", "openai/big", "openai/llama-2-7b", "mistral/mistral-large"])
def test_an_unlisted_family_gets_the_default(model):
    profile = profile_for(model)
    assert profile is DEFAULT_PROFILE
    assert (profile.window, profile.style, profile.examples, profile.stop, profile.grammar) == (None, None, None, (),
                                                                                               False)


def test_a_profile_named_wins_over_the_model_string_and_an_unknown_name_is_an_error():
    assert profile_for("openai/big", "qwen3").name == "qwen3"
    with pytest.raises(ConfigError, match="no model profile named 'qwen4'.*smollm2"):
        profile_for("openai/big", "qwen4")


# -- windows: one rule -------------------------------------------------------------------------------
def test_the_window_rule_file_then_map_for_hosted_then_the_family():
    assert window("openai/Qwen/Qwen3-8B", api_base="http://127.0.0.1:1/v1", context_window=16_384) == 16_384
    # hosted: litellm's map knows the exact model (claude-sonnet-4-6 has 1M, more than the family's 200k)
    assert window("anthropic/claude-sonnet-4-6") == 1_000_000
    assert window("anthropic/claude-no-such-version") == 200_000  # not in the map: the family's
    # self-hosted: the map is not consulted (the server's own length counts), the family stands in
    assert window("openai/gpt-4o", api_base="http://127.0.0.1:1/v1") is None
    assert window("openai/Qwen/Qwen3-8B", api_base="http://127.0.0.1:1/v1") == 32_768
    assert window(LOCAL_MODEL) == 8_192 and window("openai/smollm2-135m", api_base="http://127.0.0.1:1/v1") == 8_192
    assert window("openai/no-such-model", api_base="http://127.0.0.1:1/v1") is None


def test_the_route_table_uses_the_same_rule():
    spec = models({"root": {"deployments": [
        {"model": "openai/Qwen/Qwen3-8B", "api_base": "http://127.0.0.1:1/v1", "name": "qwen"},
        {"model": "openai/big", "api_base": "http://127.0.0.1:2/v1", "name": "big", "profile": "llama"},
        {"model": "openai/small", "api_base": "http://127.0.0.1:3/v1", "name": "small", "context_window": 4_096}]}})
    targets = {t.name: t for t in RouteTable(RLMConfig(models=spec)).targets()}
    assert {n: (t.window, t.profile.name) for n, t in targets.items()} == {
        "qwen": (32_768, "qwen3"), "big": (131_072, "llama"), "small": (4_096, "default")}


def test_a_served_embedded_model_gets_its_profile_by_name():
    spec, _ = parse_models({"serve": {"smol": {"engine": "llama.cpp", "model": "embedded"}},
                            "groups": {"root": {"deployments": [{"serve": "smol"}]}}})
    target = RouteTable(RLMConfig(models=spec)).targets()[0]
    assert (target.deployment.model, target.profile.name, target.window) == ("openai/smol", "smollm2", 8_192)


def test_rlm_models_lists_each_deployments_profile():
    from rlm.routing.report import models_view

    spec = models({"root": {"deployments": [
        {"model": "openai/Qwen/Qwen3-8B", "api_base": "http://127.0.0.1:1/v1", "name": "qwen"}]}})
    text, _ = models_view(RLMConfig(models=spec), None, as_json=False, check=False)
    assert "1. qwen  window=32,768  tokenizer=bytes  profile=qwen3  node=127.0.0.1" in text


def test_embedded_and_self_hosted_windows_never_read_the_map_nor_import_litellm():
    code = ("import sys\nfrom rlm import model_info\nfrom rlm.capacity import window_for\n"
            "from rlm.profiles import window\n"
            "print(window_for('local/smollm2-135m'), window('openai/Qwen/Qwen3-8B', api_base='http://h/v1'), "
            "model_info._map is None, 'litellm' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.stdout.split() == ["8192", "32768", "True", "False"], done.stderr


# -- the prompt's style ------------------------------------------------------------------------------
def test_the_style_and_the_worked_example_come_from_the_profile():
    embedded = capacity(LOCAL_MODEL, LOCAL_MODEL)
    assert embedded.compact and embedded.worked_example and embedded.sub_call_chars == 12_000
    assert not capacity("openai/gpt-4.1-mini", "openai/gpt-4.1-mini").compact
    # the style by window where the profile does not say; R1 never gets the worked example
    assert Capacity(8_192, 8_192).compact and Capacity(8_192, 8_192).worked_example
    small_r1 = Capacity(8_192, 8_192, style=None, examples=False)
    assert small_r1.compact and not small_r1.worked_example
    assert Capacity(200_000, 8_192, style=profiles.COMPACT).compact


def test_capacity_for_reads_the_runs_groups_not_the_model_option():
    # --model is left at the embedded default; the file's root group is a hosted model with a 1M window
    spec = models({"root": {"deployments": [{"model": "openai/gpt-4.1-mini", "name": "hosted"}]},
                   "sub": {"deployments": [{"model": "openai/small", "api_base": "http://127.0.0.1:1/v1",
                                            "name": "small", "context_window": 8_000},
                                           {"model": "openai/bigger", "api_base": "http://127.0.0.1:2/v1",
                                            "name": "bigger", "context_window": 64_000, "order": 2}]},
                   "tiny": {"deployments": [{"model": "openai/smollm2-135m", "api_base": "http://127.0.0.1:3/v1",
                                             "name": "smol"}]}},
                  {"depth": {"2": "tiny"}})
    config = RLMConfig(models=spec)
    root = capacity_for(config)
    assert (root.root_window, root.sub_window, root.compact) == (1_047_576, 8_000, False)
    assert root.sub_call_chars == 12_000  # the smallest window of the sub group: either may serve a call
    child = capacity_for(config, depth=1)  # children use the sub group's deployments
    assert (child.root_window, child.compact) == (8_000, True)
    deep = capacity_for(config, depth=2)
    assert deep.compact and deep.worked_example and deep.root_window == 8_192
    assert capacity_for(config, depth=1, group="root").root_window == 1_047_576  # a child asked for root


# -- the models file's keys --------------------------------------------------------------------------
def test_the_models_file_names_a_profile_and_overrides_grammar_and_stop():
    spec = models({"root": {"deployments": [{"model": "openai/x", "api_base": "http://h:1/v1", "name": "x",
                                             "profile": "smollm2", "grammar": True, "stop": ["\nOutput"]}]}})
    d = spec.groups[0].deployments[0]
    assert (d.profile, d.grammar, d.stop) == ("smollm2", True, ("\nOutput",))
    assert ModelsSpec.from_dict(spec.to_dict()) == spec
    assert RLMConfig.from_dict(RLMConfig(models=spec).to_dict()).models == spec


@pytest.mark.parametrize("extra, message", [
    ({"profile": "nope"}, "groups.root.deployments\\[0\\].profile: no model profile named 'nope'"),
    ({"grammar": "yes"}, "grammar: must be true or false"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop: must be a list of at most 4"),
    ({"stop": [""]}, "stop: must be a list of at most 4 non-empty strings"),
])
def test_bad_profile_keys_are_errors_naming_the_key(extra, message):
    with pytest.raises(ConfigError, match=message):
        models({"root": {"deployments": [{"model": "openai/x", "api_base": "http://h:1/v1", **extra}]}})


def test_turn_params_the_profiles_or_the_deployments_overrides():
    embedded = profile_for(LOCAL_MODEL)
    assert profiles.turn_params(DEFAULT_PROFILE) == {}
    assert profiles.turn_params(DEFAULT_PROFILE, grammar=True, stop=("x",)) == {"stop": ["x"],
                                                                                "grammar": REPLY_GRAMMAR}
    assert "grammar" not in profiles.turn_params(embedded, grammar=False)
    assert "stop" not in profiles.turn_params(embedded, stop=())


# -- the wire ----------------------------------------------------------------------------------------
def root_then_sub_policy(messages):
    """Root: one llm_query, then FINAL; the sub-call answers plainly."""
    if not is_agent_prompt(messages):
        return "sub:" + first_user(messages)[:8]
    return repl("out = llm_query('hello')\nprint(out)") if turn(messages) == 0 else repl("FINAL(out)")


def test_grammar_and_stop_reach_the_wire_on_agents_turns_only(server_factory, make_config, text_file):
    server = server_factory(policy=root_then_sub_policy)
    spec = models({"root": {"deployments": [{"model": "openai/scripted", "api_base": server.base_url,
                                             "name": "s", "grammar": True, "stop": ["\nOutput of your code"]}]}})
    result = run("What is the code?", text_file(DOC), make_config(server, models=spec))
    assert result.status == "ok" and result.answer == "sub:hello"
    turns = [r.body for r in server.requests if is_agent_prompt(r.messages)]
    subs = [r.body for r in server.requests if not is_agent_prompt(r.messages)]
    assert len(turns) == 2 and len(subs) == 1
    assert all(b["grammar"] == REPLY_GRAMMAR and b["stop"] == ["\nOutput of your code"] for b in turns)
    assert "grammar" not in subs[0] and "stop" not in subs[0]


def test_a_direct_call_without_a_call_site_carries_no_profile_fields(server_factory, make_config):
    # what the benchmarks' base method sends: one prose answer, never constrained to code
    server = server_factory(script=["KITE-5592"])
    spec = models({"root": {"deployments": [{"model": "openai/scripted", "api_base": server.base_url,
                                             "name": "s", "grammar": True, "stop": ["x"]}]}})
    client = LMClient(make_config(server, models=spec))
    assert client.complete([{"role": "user", "content": "code?"}], role="root").text == "KITE-5592"
    assert "grammar" not in server.requests[0].body and "stop" not in server.requests[0].body


def test_the_embedded_profile_sends_its_own_fields(server_factory, make_config, text_file):
    # the scripted server stands in for the embedded model's llama.cpp server under its served name
    server = server_factory(policy=root_then_sub_policy)
    config = make_config(server, model="openai/smollm2-135m")
    result = run("What is the code?", text_file(DOC), config)
    assert result.status == "ok"
    expected = profiles.turn_params(profile_for("openai/smollm2-135m"))
    turns = [r.body for r in server.requests if is_agent_prompt(r.messages)]
    assert turns and all({k: b.get(k) for k in ("stop", "grammar") if k in expected} == expected for b in turns)
    assert all(k not in b for b in turns for k in ("stop", "grammar") if k not in expected)


@pytest.mark.slow  # the retry imports litellm
def test_a_retried_turn_carries_the_same_fields(server_factory, make_config, text_file):
    # the first attempt fails with a 500: litellm's Router retries it through rlm's provider
    failures = iter([{"status": 500, "content": "overloaded"}])
    server = server_factory(policy=lambda m: next(failures, None) or (
        repl("print(1)") if turn(m) == 0 else repl("FINAL('done')")))
    spec = models({"root": {"deployments": [{"model": "openai/scripted", "api_base": server.base_url,
                                             "name": "s", "grammar": True, "stop": ["ZZ"]}]}})
    result = run("q", text_file(DOC), make_config(server, models=spec, lm_retries=2))
    assert result.answer == "done"
    assert [r.status for r in server.requests] == [500, 200, 200]
    assert all(r.body["grammar"] == REPLY_GRAMMAR and r.body["stop"] == ["ZZ"] for r in server.requests)
