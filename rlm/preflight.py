"""Configuration mistakes caught before a run starts: fast, in one line that names the fix.

Without these checks a missing API key surfaced as litellm's retried
"Missing credentials" error after ~14 s, and an ``--api-base`` pointing at a
closed port after ~10 s of retries. :func:`check` runs at the edges (the CLI,
the TUI, the service) with their environment, and raises
:class:`~rlm.errors.ConfigError`:

* **Credentials.** A model of a known provider (any deployment of the groups the run
  routes to, a models file's included) needs its key in the
  environment (``OPENAI_API_KEY`` for ``openai/...`` and bare ``gpt-...``,
  ``ANTHROPIC_API_KEY`` for ``anthropic/...``, ...), unless ``RLM_API_KEY``
  gives one or ``--api-base`` points at an OpenAI-compatible
  server (those often need none). The table is litellm's own answer
  (``litellm.validate_environment``), written out so that the check does not
  import litellm (seconds); ``tests/test_preflight.py`` holds the two to each
  other. Providers with other ways to authenticate (AWS roles, Google
  application credentials) are not checked.
* **Reachability.** An explicit ``--api-base`` (and Ollama's default
  ``localhost:11434``) must accept a TCP connection within a second.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

from rlm.config import LOCAL_MODEL, RLMConfig
from rlm.errors import ConfigError

__all__ = ["check", "check_credentials", "REQUIRED_KEYS", "provider_of"]

#: Provider -> the environment variables its calls need: each inner tuple is "any one of these".
REQUIRED_KEYS: dict[str, tuple[tuple[str, ...], ...]] = {
    "openai": (("OPENAI_API_KEY",),),
    "anthropic": (("ANTHROPIC_API_KEY",),),
    "gemini": (("GEMINI_API_KEY", "GOOGLE_API_KEY"),),
    "groq": (("GROQ_API_KEY",),),
    "mistral": (("MISTRAL_API_KEY",),),
    "deepseek": (("DEEPSEEK_API_KEY",),),
    "openrouter": (("OPENROUTER_API_KEY",),),
    "together_ai": (("TOGETHERAI_API_KEY",),),
    "xai": (("XAI_API_KEY",),),
    "fireworks_ai": (("FIREWORKS_AI_API_KEY",),),
    "cohere": (("COHERE_API_KEY",),),
    "perplexity": (("PERPLEXITYAI_API_KEY",),),
    "cerebras": (("CEREBRAS_API_KEY",),),
    "deepinfra": (("DEEPINFRA_API_KEY",),),
    "azure": (("AZURE_API_KEY",), ("AZURE_API_BASE",), ("AZURE_API_VERSION",)),
}

#: Prefixes of bare model names (no ``provider/``) and the provider litellm gives them.
_BARE_PREFIXES = (("gpt-", "openai"), ("o1", "openai"), ("o3", "openai"), ("o4", "openai"),
                  ("chatgpt-", "openai"), ("claude-", "anthropic"))

OLLAMA_DEFAULT_BASE = "http://localhost:11434"
CONNECT_TIMEOUT_S = 1.0


def provider_of(model: str) -> str | None:
    """The provider of a litellm model string: its prefix, or the one litellm infers for a bare name."""
    if "/" in model:
        return model.split("/", 1)[0]
    return next((provider for prefix, provider in _BARE_PREFIXES if model.startswith(prefix)), None)


def check(config: RLMConfig, env: Mapping[str, str]) -> None:
    """Raise :class:`ConfigError` naming the fix for a missing key or an unreachable server."""
    check_credentials(config, env)
    if config.api_base:
        _check_reachable(config.api_base, "--api-base / RLM_API_BASE")
    elif any(provider_of(m) == "ollama" for m in (config.model, config.effective_sub_model)):
        _check_reachable(env.get("OLLAMA_API_BASE") or OLLAMA_DEFAULT_BASE, "OLLAMA_API_BASE")


def check_credentials(config: RLMConfig, env: Mapping[str, str]) -> None:
    """The credentials part of :func:`check`: every deployment the config routes to has its key in ``env``."""
    from rlm.routing.table import groups_of  # the deployments the config routes to (a models file's too)

    deployments = {(d.model, d.api_base, d.api_key_env, d.api_key): d for group in groups_of(config).groups
                   for d in group.deployments}
    for model, api_base, key_env, key in deployments:
        if model == LOCAL_MODEL or key or (api_base and model.startswith("openai/")):
            continue
        if key_env:
            if not env.get(key_env):
                raise ConfigError(f"model {model} takes its key from {key_env}, which is not set "
                                  f"(export {key_env}=...)")
            continue
        _check_credentials(model, config, env)


def _check_credentials(model: str, config: RLMConfig, env: Mapping[str, str]) -> None:
    if config.api_key or (config.api_base and model.startswith("openai/")):
        return
    provider = provider_of(model)
    for alternatives in REQUIRED_KEYS.get(provider or "", ()):
        if not any(env.get(name) for name in alternatives):
            names = " or ".join(alternatives)
            raise ConfigError(f"model {model} needs {names} in the environment (export {alternatives[0]}=...), "
                              "or set RLM_API_KEY")


def _check_reachable(api_base: str, option: str) -> None:
    url = urlsplit(api_base if "//" in api_base else f"http://{api_base}")
    if not url.hostname:
        raise ConfigError(f"{option}: {api_base!r} is not a URL (e.g. http://127.0.0.1:8000/v1)")
    port = url.port or (443 if url.scheme == "https" else 80)
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection((url.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)

    # A name lookup can hang without a network: past the deadline, let the run find out instead.
    worker = threading.Thread(target=connect, name="rlm-preflight", daemon=True)
    worker.start()
    worker.join(CONNECT_TIMEOUT_S + 0.5)
    if outcome and outcome[0] is not None:
        reason = getattr(outcome[0], "strerror", None) or str(outcome[0]) or type(outcome[0]).__name__
        raise ConfigError(f"cannot reach the model server at {api_base} ({reason}); is it running? "
                          f"(check {option})")
