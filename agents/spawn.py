"""Running an agent on an agent host, retrying when the host dies under it.

:class:`Spawner` is the ``RunServices.spawn`` hook of a Ray run (and the way
the driver starts the root): it ships the agent's spec to a host — round-robin
over the session's hosts, which spread over the cluster's nodes, avoiding the
caller's own host when there is another — and waits for its
:class:`~rlm.agent.AgentResult`.

When the host actor dies mid-agent (its process killed, its node lost) the
attempt is recorded in the run log as an ``AgentFinished`` with status
``"retried"`` and the error, and the agent runs again from the start on another
host under the id ``<agent_id>r<n>``, up to ``RLMConfig.agent_retries`` times.
Calls the dead attempt made stay counted in the budget: they were made.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import threading
from typing import Callable

from rlm.agent import Agent, AgentResult
from rlm.events import AgentFinished, Event

from rlm.agents.context import share
from rlm.agents.specs import AgentSpec, RunSpec

_counter = itertools.count(random.randrange(1 << 16))
_counter_lock = threading.Lock()


def _actor_died_errors() -> tuple[type[BaseException], ...]:
    import ray.exceptions as rex

    names = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "OwnerDiedError", "ObjectLostError",
             "NodeDiedError", "WorkerCrashedError")
    return tuple(getattr(rex, name) for name in names if hasattr(rex, name))


class Spawner:
    """``spawn(agent) -> AgentResult`` on the cluster, with retries of agents whose host died."""

    def __init__(self, run_spec: RunSpec, emit: Callable[[Event], None], node: str, own_host: int | None = None):
        self.run_spec = run_spec
        self.emit = emit
        self.node = node
        self.own_host = own_host

    def __call__(self, agent: Agent) -> AgentResult:
        spec = AgentSpec(agent_id=agent.agent_id, parent_id=agent.parent_id, depth=agent.depth, prompt=agent.prompt,
                         context=share(agent.payload, self.run_spec.run_id, self.node))
        return self.run(spec)

    def run(self, spec: AgentSpec) -> AgentResult:
        import ray

        retries = self.run_spec.config.agent_retries
        died = _actor_died_errors()
        avoid = None  # first attempts spread round-robin over every host; a retry avoids the dead one
        for attempt in range(retries + 1):
            index = self._pick(avoid)
            host = self.run_spec.hosts[index]
            try:
                return ray.get(host.run_agent.remote(self.run_spec, spec))
            except died as exc:
                message = f"its agent host died ({type(exc).__name__})"
                last = attempt == retries
                note = "no retries left" if last else f"retry {attempt + 1} of {retries} as {spec.agent_id}r{attempt + 1}"
                self.emit(AgentFinished(run_id=self.run_spec.run_id, agent_id=spec.agent_id, status="retried",
                                        answer=None, iterations=0, error=f"{message}; {note}"))
                if last:
                    return AgentResult(spec.agent_id, None, "error", 0, error=f"agent lost: {message} "
                                       f"{retries + 1} times")
                base = spec.agent_id if spec.attempt == 0 else spec.agent_id.rsplit("r", 1)[0]
                spec = dataclasses.replace(spec, agent_id=f"{base}r{attempt + 1}", attempt=attempt + 1)
                avoid = index
        raise AssertionError("unreachable")

    def _pick(self, avoid: int | None) -> int:
        count = len(self.run_spec.hosts)
        with _counter_lock:
            index = next(_counter) % count
        if index == avoid and count > 1:
            index = (index + 1) % count
        return index
