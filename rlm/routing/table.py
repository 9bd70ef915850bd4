"""A run's model groups, resolved: each deployment with its window, reply room, tokenizer and transport.

:func:`groups_of` gives the groups a config routes to: the models file's
(``RLMConfig.models``), plus ``root`` (and ``sub`` when ``--sub-model`` is given)
made from ``--model``/``--sub-model``/``--api-base`` when the file does not name
them. :class:`RouteTable` resolves every deployment once into a :class:`Target`.

Each deployment has a model profile (:mod:`rlm.profiles`: the one it names, else
the one its model string matches). Its context window follows the one rule of
:func:`rlm.profiles.window`: ``context_window`` from the models file; for a
hosted API (no ``api_base``), litellm's bundled map (:mod:`rlm.model_info`);
else the profile's window for the family (the embedded model's 8,192 is the
``n_ctx`` its llama.cpp server is started with); otherwise unknown, and then
the size guard cannot check that deployment. A self-hosted server's window is
what it was started with (vLLM's ``--max-model-len``, llama.cpp's ``--n_ctx``),
not the hosted model's number in the map, so for those the map is never read
— which also keeps it (35-110 ms to read) off the first call of runs on local
servers.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rlm import model_info, profiles
from rlm.config import LOCAL_MODEL, RLMConfig
from rlm.errors import ConfigError
from rlm.routing.spec import Deployment, Group, ModelsSpec
from rlm.routing.tokens import BYTES

if TYPE_CHECKING:
    from rlm.transport import Endpoint

__all__ = ["Target", "RouteTable", "groups_of", "EMBEDDED_SERVED"]

#: The model string the embedded model is called by once its server runs.
EMBEDDED_SERVED = "openai/smollm2-135m"


def groups_of(config: RLMConfig) -> ModelsSpec:
    """The groups ``config`` routes to (see the module docstring)."""
    spec = config.models or ModelsSpec()
    extra: list[Group] = []
    if spec.group("root") is None:
        extra.append(Group("root", (_from_options(config.model, config),)))
    if spec.group("sub") is None and config.sub_model and config.sub_model != config.model:
        extra.append(Group("sub", (_from_options(config.sub_model, config),)))
    return dataclasses.replace(spec, groups=(*spec.groups, *extra)) if extra else spec


def _from_options(model: str, config: RLMConfig) -> Deployment:
    return Deployment(model=model, api_base=config.api_base, api_key=config.api_key)


@dataclass(frozen=True, slots=True)
class Target:
    """One deployment of one group, resolved (see the module docstring)."""

    group: str
    name: str
    deployment: Deployment
    window: int | None
    reply_tokens: int
    tokenizer: str
    endpoint: Endpoint | None
    node: str
    profile: profiles.Profile = profiles.DEFAULT_PROFILE

    @property
    def turn_params(self) -> dict[str, Any]:
        """Request fields of an agent's own turn here: the profile's stop and grammar, or the file's overrides."""
        return profiles.turn_params(self.profile, grammar=self.deployment.grammar, stop=self.deployment.stop)

    @property
    def room(self) -> int | None:
        """Prompt tokens that fit with room for the reply (``None``: unknown window, not checked)."""
        return None if self.window is None else max(self.window - self.reply_tokens, 0)

    @property
    def order(self) -> int:
        return self.deployment.order

    @property
    def router_id(self) -> str:
        """The deployment's id in litellm's Router (one per group entry)."""
        return f"{self.group}/{self.name}"

    def cost(self, input_tokens: int, output_tokens: int) -> float | None:
        """USD for a call: the file's prices, else litellm's map; ``None`` when unknown."""
        d = self.deployment
        if d.input_cost_per_token is not None or d.output_cost_per_token is not None:
            return input_tokens * (d.input_cost_per_token or 0.0) + output_tokens * (d.output_cost_per_token or 0.0)
        return model_info.cost(d.model, input_tokens, output_tokens)


class RouteTable:
    """Every group of a config with its resolved :class:`Target` s, in ``order``."""

    def __init__(self, config: RLMConfig, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.spec = groups_of(config)
        env = os.environ if env is None else env
        self.groups: dict[str, tuple[Target, ...]] = {
            group.name: tuple(sorted((_target(group.name, d, config, env) for d in group.deployments),
                                     key=lambda t: t.order))
            for group in self.spec.groups}
        self.descriptions = {group.name: group.description for group in self.spec.groups}

    def resolve(self, name: str) -> str:
        """A role's group name as it exists here (a missing ``sub`` is ``root``)."""
        if name in self.groups:
            return name
        if name == "sub":
            return "root"
        raise ConfigError(f"no model group named {name!r}")

    def targets(self) -> list[Target]:
        return [t for targets in self.groups.values() for t in targets]


def _target(group: str, d: Deployment, config: RLMConfig, env: Mapping[str, str]) -> Target:
    name = d.name or _label(d)
    profile = profiles.profile_for(d.model, d.profile)
    window = profiles.window(d.model, api_base=d.api_base, context_window=d.context_window, profile=profile)
    reply = config.max_completion_tokens or d.max_output_tokens or _hosted(d, "max_output_tokens")
    if window is not None:
        reply = min(reply or window // 8, window // 2)
    from rlm.transport import Endpoint, is_lean  # asyncio and http.client: a command the service runs needs neither

    endpoint = (Endpoint.of(d.model, d.api_base, _api_key(d, env))
                if d.api_base and is_lean(d.model, d.api_base) else None)
    return Target(group, name, d, window, reply or 0, d.tokenizer or default_tokenizer(d), endpoint,
                  d.node or _host(d), profile)


def _label(d: Deployment) -> str:
    if not d.api_base:
        return d.model
    url = urlsplit(d.api_base)
    return f"{d.model}@{url.hostname}:{url.port}" if url.port else f"{d.model}@{url.hostname}"


def _host(d: Deployment) -> str:
    return (urlsplit(d.api_base).hostname or "") if d.api_base else "hosted"


def _embedded(d: Deployment) -> bool:
    return d.model == LOCAL_MODEL or (d.model == EMBEDDED_SERVED and bool(d.api_base))


def _hosted(d: Deployment, key: str) -> int | None:
    """A number from litellm's map, for hosted APIs only (see the module docstring)."""
    if d.api_base or d.model == LOCAL_MODEL:
        return None
    value = getattr(model_info.info(d.model), key)
    return value if value else None


def default_tokenizer(d: Deployment) -> str:
    """The embedded model's vocabulary, tiktoken's for OpenAI's GPT families, else bytes (always safe)."""
    if _embedded(d):
        return "embedded"
    name = d.model.rsplit("/", 1)[-1]
    if name.startswith(("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")):
        return "o200k_base"
    if name.startswith(("gpt-4", "gpt-3.5")):
        return "cl100k_base"
    return BYTES


def _api_key(d: Deployment, env: Mapping[str, str]) -> str:
    # OpenAI-compatible servers often need no key, but clients insist on one.
    if d.api_key:
        return d.api_key
    if d.api_key_env:
        return env.get(d.api_key_env) or "sk-no-key"
    return env.get("OPENAI_API_KEY") or "sk-no-key"
