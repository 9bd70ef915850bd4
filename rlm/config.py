"""The one configuration object of a run.

:class:`RLMConfig` is frozen; child agents derive theirs with
``dataclasses.replace``. Environment variables are read only by
:meth:`RLMConfig.from_env`, which the CLI and TUI call at the edge; library code
never looks at ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Mapping

from rlm.errors import ConfigError
from rlm.defaults import LOCAL_MODEL, default_home, home_from_env
from rlm.routing.spec import ModelsSpec

__all__ = ['LOCAL_MODEL', 'default_home', 'SandboxConfig', 'RLMConfig']


def default_packages_dir() -> str:
    """``<venv>/rlm-sandbox-packages``, where ``scripts/setup.sh`` installs the sandbox's packages."""
    return os.path.join(sys.prefix, "rlm-sandbox-packages")


@dataclass(frozen=True, kw_only=True)
class SandboxConfig:
    """How model code is isolated and bounded.

    ``mode`` is ``"bwrap"`` (bubblewrap namespaces + rlimits, the default) or
    ``"unsafe"`` (a plain subprocess with rlimits only; opt-in, loudly warned).
    """

    mode: str = "bwrap"
    cell_timeout_s: float = 120.0
    max_output_chars: int = 20_000
    memory_mb: int = 4096
    cpu_seconds: int = 600
    max_open_files: int = 256
    max_file_size_mb: int = 256
    max_processes: int = 64
    scratch_mb: int = 256
    #: Largest argument payload (bytes of JSON) a host-function call may carry.
    max_call_bytes: int = 64 * 1024 * 1024
    #: A text input larger than this stays memory-mapped: ``context`` is a ``Context`` object, not a str.
    huge_input_bytes: int = 256 * 1024 * 1024
    #: Time budget of one regex call on a huge ``Context`` (catastrophic patterns raise instead of hanging).
    regex_timeout_s: float = 30.0
    #: Let model code start processes (subprocess, fork). Off: the seccomp filter refuses them (no fork bombs).
    allow_subprocesses: bool = False
    #: The analysis packages model code may import (numpy, pandas, regex, ...; see rlm.sandbox.packages),
    #: bound read-only into the jail. None: the standard library only.
    packages_dir: str | None = field(default_factory=default_packages_dir)


@dataclass(frozen=True, kw_only=True)
class RLMConfig:
    """Everything that shapes one run. Limits are tree-wide unless noted."""

    model: str = LOCAL_MODEL
    sub_model: str | None = None  # None: same as model
    api_base: str | None = None
    api_key: str | None = None
    #: Model groups and routing rules from a models file (rlm.routing.spec); groups it does not name
    #: (``root``, ``sub``) are made from model/sub_model/api_base.
    models: ModelsSpec | None = None
    # limits
    max_depth: int = 1
    max_iterations: int = 20  # per agent
    max_llm_calls: int = 200
    max_tokens: int | None = None  # input + output over the whole tree
    max_cost_usd: float | None = None
    timeout_s: float | None = None  # wall clock for the whole run
    # LM call behaviour
    lm_timeout_s: float = 600.0
    lm_retries: int = 3
    max_completion_tokens: int | None = None
    temperature: float | None = None
    max_concurrency: int = 16  # in-flight sub-calls per batched call
    #: Answer a call whose request (deployment, messages, sampling) was made before from its record
    #: (rlm.records): this run's own calls and earlier runs' in the run log. None: on at temperature 0.
    cache: bool | None = None
    #: The root summarises its progress and its history is cut when it reaches this fraction of its
    #: model's window (rlm.agent; None: never, older outputs are only trimmed).
    compact_at: float | None = 0.75
    # False: no sub-calls (llm_query/rlm_query refused, the model told so): the paper's "RLM, no sub-calls"
    sub_calls: bool = True
    # what the model sees
    max_observation_chars: int | None = None  # REPL output shown per turn; None: from the root model's window
    # swarm memory (None: off) and learning after a run ("always", "success", "never")
    memory_namespace: str | None = None
    reflect: str = "success"
    memory_budget_tokens: int = 800  # hard cap on the memories block in the prompt
    # Ray: None starts an embedded local cluster when Ray is used
    ray_address: str | None = None
    #: Where agents run: "local" (threads of this process), "ray" (agent actors on a cluster), or the
    #: name of another executor registered under the ``rlm.executors`` entry-point group.
    executor: str = "local"
    #: Ray: times an agent whose host actor died is run again.
    agent_retries: int = 2
    #: Ray: agent-host actors per node (each hosts many agents, one sandbox each).
    ray_hosts_per_node: int = 2
    #: Sandbox zygotes kept started per agent host (Ray) or service, for the next runs (0: started on demand).
    sandbox_pool_size: int = 2
    # infrastructure
    home: Path = field(default_factory=default_home)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    record_run: bool = True

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (bool(self.model), "model must not be empty"),
            (self.max_depth >= 0, "max_depth must be >= 0"),
            (self.max_iterations >= 1, "max_iterations must be >= 1"),
            (self.max_llm_calls >= 1, "max_llm_calls must be >= 1"),
            (self.max_tokens is None or self.max_tokens >= 1, "max_tokens must be >= 1"),
            (self.max_cost_usd is None or self.max_cost_usd > 0, "max_cost_usd must be > 0"),
            (self.timeout_s is None or self.timeout_s > 0, "timeout must be > 0 seconds"),
            (self.max_concurrency >= 1, "max_concurrency must be >= 1"),
            (self.compact_at is None or 0.1 <= self.compact_at <= 0.95, "compact_at must be from 0.1 to 0.95"),
            (self.max_observation_chars is None or self.max_observation_chars >= 200,
             "max_observation_chars must be >= 200"),
            (self.lm_retries >= 0, "lm_retries must be >= 0"),
            (self.executor.isidentifier(), f"executor must be a name such as 'local' or 'ray', not {self.executor!r}"),
            (self.agent_retries >= 0, "agent_retries must be >= 0"),
            (self.ray_hosts_per_node >= 1, "ray_hosts_per_node must be >= 1"),
            (self.sandbox_pool_size >= 0, "sandbox_pool_size must be >= 0"),
            (self.sandbox.mode in ("bwrap", "unsafe"),
             f"sandbox mode must be 'bwrap' or 'unsafe', not {self.sandbox.mode!r}"),
            (self.sandbox.cell_timeout_s > 0, "cell timeout must be > 0 seconds"),
            (self.reflect in ("always", "success", "never"), "reflect must be 'always', 'success' or 'never'"),
            (self.memory_budget_tokens >= 1, "memory_budget_tokens must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def effective_sub_model(self) -> str:
        return self.sub_model or self.model

    @property
    def cache_enabled(self) -> bool:
        """Whether calls are answered from earlier identical ones: ``cache``, else at temperature 0 only."""
        return self.cache if self.cache is not None else self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the API key is never included)."""
        data = dataclasses.asdict(self)
        data.pop("api_key", None)
        data["home"] = str(self.home)
        data["models"] = self.models.to_dict() if self.models is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RLMConfig:
        """The inverse of :meth:`to_dict` (plus ``api_key`` when given); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        values = dict(data)
        if "home" in values:
            values["home"] = Path(values["home"])
        if isinstance(values.get("models"), Mapping):
            values["models"] = ModelsSpec.from_dict(values["models"])
        if isinstance(values.get("sandbox"), Mapping):
            sandbox_names = {f.name for f in dataclasses.fields(SandboxConfig)}
            extra = set(values["sandbox"]) - sandbox_names
            if extra:
                raise ConfigError(f"unknown sandbox config field(s): {', '.join(sorted(extra))}")
            values["sandbox"] = SandboxConfig(**values["sandbox"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"invalid config: {exc}") from None

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> RLMConfig:
        """Build a config from ``RLM_*`` variables, then apply non-None ``overrides``."""
        values: dict[str, Any] = {}
        if env.get("RLM_MODEL"):
            values["model"] = env["RLM_MODEL"]
        if env.get("RLM_SUB_MODEL"):
            values["sub_model"] = env["RLM_SUB_MODEL"]
        if env.get("RLM_API_BASE"):
            values["api_base"] = env["RLM_API_BASE"]
        if env.get("RLM_API_KEY"):
            values["api_key"] = env["RLM_API_KEY"]
        if env.get("RLM_HOME"):
            values["home"] = home_from_env(env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def child(self) -> RLMConfig:
        """The config a child agent runs with (same limits; the ledger is shared)."""
        return dataclasses.replace(self)

    @property
    def runlog_path(self) -> Path:
        return self.home / "rlm.duckdb"
