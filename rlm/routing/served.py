"""The ``[serve.NAME]`` tables of a models file: the model deployments rlm starts on the cluster, as checked data.

:mod:`rlm.agents.serving` starts them with Ray Serve; a group deployment written
``serve = "NAME"`` is that deployment's endpoint, with its window and tokenizer
(:func:`served_fields`). Plain data: nothing here imports Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Mapping

from rlm.errors import ConfigError

__all__ = ["ServedDeployment", "served_fields", "serve_spec", "ENGINES"]

ENGINES = ("llama.cpp", "vllm")
_KEYS: dict[str, type | tuple[type, ...]] = {
    "engine": str, "model": str, "context_window": int, "num_gpus": (int, float), "num_cpus": (int, float),
    "accelerator_type": str, "replicas": int, "min_replicas": int, "max_replicas": int,
    "max_ongoing_requests": int, "max_queued_requests": int, "threads": int, "engine_kwargs": dict}


@dataclass(frozen=True)
class ServedDeployment:
    """One ``[serve.NAME]`` table, checked."""

    name: str
    engine: str = "llama.cpp"
    model: str = "embedded"
    context_window: int = 8192
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    accelerator_type: str | None = None
    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    max_ongoing_requests: int = 4
    max_queued_requests: int | None = None
    threads: int | None = None
    engine_kwargs: Mapping[str, Any] | None = None

    @property
    def gguf(self) -> Path:
        """The llama.cpp model file."""
        if self.model == "embedded":
            from rlm.embedded import find_gguf

            return find_gguf()
        return Path(self.model).expanduser()

    @property
    def tokenizer(self) -> str:
        if self.engine != "llama.cpp":
            return "bytes"  # a vLLM model's vocabulary is not loaded here: the always-safe bound
        return "embedded" if self.model == "embedded" else f"gguf:{self.model}"

    def actor_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.accelerator_type:
            options["accelerator_type"] = self.accelerator_type
        return options

    def scaling(self) -> dict[str, Any]:
        """Serve's ``num_replicas`` or ``autoscaling_config``."""
        if self.min_replicas is None and self.max_replicas is None:
            return {"num_replicas": self.replicas}
        low = self.min_replicas if self.min_replicas is not None else 1
        return {"autoscaling_config": {"min_replicas": low, "max_replicas": max(low, self.max_replicas or low),
                                       "target_ongoing_requests": max(1, self.max_ongoing_requests // 2)}}


def serve_spec(name: str, table: Mapping[str, Any]) -> ServedDeployment:
    """A ``[serve.NAME]`` table as a :class:`ServedDeployment`, or a :class:`ConfigError` naming the problem."""
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise ConfigError(f"serve.{name}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_KEYS))})")
    for key, value in table.items():
        if not isinstance(value, _KEYS[key]) or isinstance(value, bool):
            raise ConfigError(f"serve.{name}.{key}: wrong type {type(value).__name__}")
    spec = ServedDeployment(name=name, **table)
    if spec.engine not in ENGINES:
        raise ConfigError(f"serve.{name}.engine: {spec.engine!r} is not one of {', '.join(ENGINES)}")
    if spec.engine == "llama.cpp" and spec.model != "embedded" and not spec.gguf.is_file():
        raise ConfigError(f"serve.{name}.model: no GGUF file at {spec.model} (or use \"embedded\")")
    if spec.context_window < 256 or spec.replicas < 1 or spec.max_ongoing_requests < 1:
        raise ConfigError(f"serve.{name}: context_window >= 256, replicas >= 1 and max_ongoing_requests >= 1")
    return spec


def served_fields(name: str, table: Mapping[str, Any], api_base: str) -> dict[str, Any]:
    """The fields of a group deployment that says ``serve = NAME``: its endpoint, window, tokenizer, and for
    the embedded model its profile (the served name ``NAME`` says nothing of the family)."""
    spec = serve_spec(name, table)
    fields: dict[str, Any] = {"model": f"openai/{name}", "api_base": api_base, "name": name,
                              "context_window": spec.context_window, "tokenizer": spec.tokenizer}
    if spec.engine == "llama.cpp" and spec.model == "embedded":
        from rlm.profiles import EMBEDDED_PROFILE

        fields["profile"] = EMBEDDED_PROFILE.name
    return fields
