"""Executors: where a run's agents execute.

An :class:`Executor` decides where a run's agents execute. It makes the run's
tree-wide :class:`~rlm.budget.Ledger`, gives the run's
:class:`~rlm.services.Placement`, and runs the root agent (children follow
through the placement). :class:`LocalExecutor` runs everything on threads of
this process. Other executors register under the entry-point group
``rlm.executors`` (name -> a class taking the :class:`~rlm.config.RLMConfig`);
rlm's own Ray executor registers there as ``ray``, exactly as a third-party one
would, so the core never imports it. :func:`executor_for` picks the one
``RLMConfig.executor`` names; entry points are read only for a name that is not
built in (reading them costs tens of milliseconds).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from rlm.agent import Agent
from rlm.budget import Budget, Ledger
from rlm.config import RLMConfig, SandboxConfig
from rlm.errors import ConfigError
from rlm.results import AgentResult
from rlm.services import LocalPlacement, Placement, RunServices

if TYPE_CHECKING:
    from rlm.sandbox.forkserver import ForkServer

__all__ = ["Executor", "LocalExecutor", "executor_for", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "rlm.executors"


class Executor(Protocol):
    """Where a run's agents execute (see the module docstring)."""

    def budget(self, config: RLMConfig, run_id: str) -> Ledger:
        """The run's tree-wide ledger."""
        ...

    def placement(self) -> Placement:
        """Where the driver's agents place children and find sandboxes."""
        ...

    def run_root(self, services: RunServices, root: Agent) -> AgentResult:
        """Run the root agent to its end."""
        ...

    def close(self) -> None:
        """Release what the run held (the executor is not reused)."""
        ...


class LocalExecutor:
    """Every agent in this process: children run on the parent's threads."""

    def __init__(self, config: RLMConfig | None = None, *,
                 fork_servers: Callable[[SandboxConfig], ForkServer] | None = None) -> None:
        self.config = config
        self._placement = LocalPlacement(fork_servers=fork_servers)

    def budget(self, config: RLMConfig, run_id: str) -> Ledger:
        return Budget(max_llm_calls=config.max_llm_calls, max_tokens=config.max_tokens,
                      max_cost_usd=config.max_cost_usd, timeout_s=config.timeout_s)

    def placement(self) -> Placement:
        return self._placement

    def run_root(self, services: RunServices, root: Agent) -> AgentResult:
        return root.run()

    def close(self) -> None:
        self._placement.close()


def executor_for(config: RLMConfig) -> Executor:
    """The executor ``config.executor`` names: ``local``, or one registered under :data:`ENTRY_POINT_GROUP`."""
    if config.executor == "local":
        return LocalExecutor(config)
    factory: Callable[[RLMConfig], Executor] = _registered(config.executor)
    return factory(config)


def _registered(name: str) -> Callable[[RLMConfig], Executor]:
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if name not in found:
        known = ", ".join(sorted({"local", *found}))
        raise ConfigError(f"unknown executor {name!r} (available: {known})")
    factory: Callable[[RLMConfig], Executor] = found[name].load()
    return factory
