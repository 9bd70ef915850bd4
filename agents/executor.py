"""The Ray executor of :func:`rlm.runner.run` (``RLMConfig.executor == "ray"``).

Registered under the entry-point group ``rlm.executors`` as ``ray`` (pyproject.toml),
the way any third-party executor would be: the core never imports this module.

Per run it opens the run's ledger on the hub, hands the driver a
:class:`~rlm.agents.ledger.LeasedBudget` (so ``budget.stop("cancelled")`` from a
UI reaches every node), runs the root agent on an agent host, and at the end
has every host give back its leased calls and node files, then waits until all
the run's events reached the driver's run log.
"""

from __future__ import annotations

import time
from typing import Any

from rlm.agent import Agent
from rlm.config import RLMConfig
from rlm.results import AgentResult
from rlm.services import LocalPlacement, Placement, RunServices

from rlm.agents import context as contexts
from rlm.agents.ledger import LeasedBudget
from rlm.agents.session import RaySession
from rlm.agents.spawn import Spawner
from rlm.agents.specs import RunSpec


def run_limits(config: RLMConfig) -> dict[str, Any]:
    """The ledger's limits; the deadline is a wall-clock epoch, the same on every node."""
    return {"max_llm_calls": config.max_llm_calls, "max_tokens": config.max_tokens,
            "max_cost_usd": config.max_cost_usd,
            "deadline_epoch": None if config.timeout_s is None else time.time() + config.timeout_s}


class RayExecutor:
    """Runs one run's agents on the driver's :class:`RaySession`."""

    def __init__(self, config: RLMConfig) -> None:
        self.config = config
        self.session = RaySession.get(config)
        self.run_id: str | None = None
        self.limits: dict[str, Any] = {}

    def budget(self, config: RLMConfig, run_id: str) -> LeasedBudget:
        self.run_id = run_id
        self.limits = run_limits(config)
        self.session.ray.get(self.session.hub.open_run.remote(run_id, self.limits))
        return LeasedBudget(self.session.hub, run_id, self.limits)

    def placement(self) -> Placement:
        """The driver's own agents: only the root, which :meth:`run_root` ships to a host."""
        return LocalPlacement()

    def run_root(self, services: RunServices, root: Agent) -> AgentResult:
        session = self.session
        spec = RunSpec(run_id=services.run_id, config=services.config, limits=self.limits, hub=session.hub,
                       hosts=session.hosts, host_nodes=[info["node_id"] for info in session.host_info],
                       prompt_extra=services.prompt_extra,
                       root_prompt_extra=services.root_prompt_extra,
                       host_functions={name: (tuple(f.params), f.doc) for name, f in services.host_functions.items()})
        session.register(services.run_id, services.emit, services)
        try:
            return Spawner(spec, services.emit, session.node)(root)
        finally:
            session.end_run(services.run_id)
            session.sync_events()
            contexts.forget(root.payload.path)

    def close(self) -> None:
        if self.run_id is not None:
            self.session.unregister(self.run_id)
            self.session.hub.close_run.remote(self.run_id)
