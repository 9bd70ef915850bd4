"""Pre-flight checks: the key table agrees with litellm's own answer; unreachable servers are caught fast."""

from __future__ import annotations

import socket
import time

import pytest

from rlm.config import RLMConfig
from rlm.errors import ConfigError
from rlm.preflight import REQUIRED_KEYS, check, provider_of

SAMPLE_MODEL = {"openai": "openai/gpt-4.1-mini", "anthropic": "anthropic/claude-sonnet-4-5",
                "gemini": "gemini/gemini-2.5-flash", "groq": "groq/llama3-8b-8192",
                "mistral": "mistral/mistral-large-latest", "deepseek": "deepseek/deepseek-chat",
                "openrouter": "openrouter/openai/gpt-4o", "together_ai": "together_ai/meta-llama/Llama-3-8b",
                "xai": "xai/grok-2", "fireworks_ai": "fireworks_ai/accounts/fireworks/models/llama",
                "cohere": "cohere/command-r", "perplexity": "perplexity/sonar", "cerebras": "cerebras/llama3.1-8b",
                "deepinfra": "deepinfra/meta-llama/x", "azure": "azure/gpt-4"}
ALL_KEYS = sorted({name for groups in REQUIRED_KEYS.values() for group in groups for name in group})


@pytest.mark.parametrize("provider", sorted(REQUIRED_KEYS))
def test_the_key_table_is_litellms_answer(provider, monkeypatch):
    import litellm

    for name in ALL_KEYS + ["GOOGLE_API_KEY"]:
        monkeypatch.delenv(name, raising=False)
    model = SAMPLE_MODEL[provider]
    missing = set(litellm.validate_environment(model)["missing_keys"])
    assert missing == {name for group in REQUIRED_KEYS[provider] for name in group}
    for group in REQUIRED_KEYS[provider]:  # any one of each group is enough, for litellm as for us
        monkeypatch.setenv(group[-1], "sk-test")
    assert litellm.validate_environment(model)["keys_in_environment"] is True
    check(RLMConfig(model=model), {group[-1]: "sk-test" for group in REQUIRED_KEYS[provider]})


def test_a_missing_key_names_the_variable():
    with pytest.raises(ConfigError, match="needs ANTHROPIC_API_KEY in the environment"):
        check(RLMConfig(model="anthropic/claude-sonnet-4-5"), {})
    with pytest.raises(ConfigError, match="needs OPENAI_API_KEY"):  # a bare name: litellm's provider
        check(RLMConfig(model="gpt-4.1-mini"), {})
    check(RLMConfig(model="anthropic/claude-sonnet-4-5", api_key="sk-x"), {})  # RLM_API_KEY given
    check(RLMConfig(model="vertex_ai/gemini-pro"), {})  # other ways to authenticate: not checked
    assert provider_of("claude-3-5-sonnet") == "anthropic" and provider_of("mystery") is None


def test_an_unreachable_api_base_fails_within_a_second():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ConfigError, match=f"cannot reach the model server at http://127.0.0.1:{port}/v1"):
        check(RLMConfig(model="openai/x", api_base=f"http://127.0.0.1:{port}/v1"), {})
    assert time.monotonic() - started < 1.0
    with pytest.raises(ConfigError, match="is not a URL"):
        check(RLMConfig(model="openai/x", api_base="http://"), {})


def test_a_listening_api_base_passes(server_factory):
    server = server_factory(script=[])
    check(RLMConfig(model="openai/scripted", api_base=server.base_url), {})
