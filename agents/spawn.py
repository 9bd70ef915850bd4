"""Running an agent on an agent host, retrying when the host dies under it.

:class:`Spawner` places the children of a Ray run (through the host's
:class:`~rlm.services.Placement`) and is the way the driver starts the root: it ships the
agent's spec to a host — round-robin
over the session's hosts, which spread over the cluster's nodes, avoiding the
caller's own host when there is another — and waits for its
:class:`~rlm.agent.AgentResult`.

A host keeps the run's services once it has seen the run's
:class:`~rlm.agents.specs.RunSpec`; later agents of the run are sent to it with
the run's id only (a RunSpec carries the config and every host's actor handle:
pickling those per child cost more than the rest of the call). A host that does
not know the id (it restarted) answers ``None`` and gets the whole spec.

When the host actor dies mid-agent (its process killed, its node lost) the
attempt is recorded in the run log as an ``AgentFinished`` with status
``"retried"`` and the error, and the agent runs again from the start on another
host under the id ``<agent_id>r<n>``, up to ``RLMConfig.agent_retries`` times.
Calls the dead attempt made stay counted in the budget: they were made.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import random
import threading
from collections.abc import Callable

from rlm.results import AgentResult
from rlm.services import AgentLike
from rlm.events import AgentFinished, Event

from rlm.agents.context import InlineContext, share, store
from rlm.agents.specs import AgentSpec, RunSpec

_counter = itertools.count(random.randrange(1 << 16))
_counter_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def actor_died_errors() -> tuple[type[BaseException], ...]:
    import ray.exceptions as rex

    names = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "OwnerDiedError", "ObjectLostError",
             "NodeDiedError", "WorkerCrashedError")
    return tuple(getattr(rex, name) for name in names if hasattr(rex, name))


class Spawner:
    """``spawner(agent) -> AgentResult`` on the cluster, with retries of agents whose host died."""

    def __init__(self, run_spec: RunSpec, emit: Callable[[Event], None], node: str, own_host: int | None = None,
                 run_here: Callable[[RunSpec, AgentSpec], tuple[AgentResult, list[Event]]] | None = None):
        self.run_spec = run_spec
        self.emit = emit
        self.node = node
        self.own_host = own_host
        self.run_here = run_here  # a child placed on the spawner's own host runs in-process (no Ray call)
        self._informed: set[int] = set()  # hosts that have this run's RunSpec
        self._informed_lock = threading.Lock()

    def __call__(self, agent: AgentLike, *, here: bool = False) -> AgentResult:
        """Run ``agent`` on a host (round-robin), or in this process when ``here`` and this is a host."""
        spec = self.spec_for(agent)
        if here and self.run_here is not None:
            return self.run_here(self.run_spec, spec)[0]
        return self.run(spec)

    def spec_for(self, agent: AgentLike) -> AgentSpec:
        return AgentSpec(agent_id=agent.agent_id, parent_id=agent.parent_id, depth=agent.depth, prompt=agent.prompt,
                         context=share(agent.payload, self.run_spec.run_id, self.node),
                         group=getattr(agent, "group", None))

    def run(self, spec: AgentSpec, avoid: int | None = None) -> AgentResult:
        """Run ``spec`` on a host other than ``avoid`` (when there is one); retry it when its host dies.

        First attempts spread round-robin over every host; a retry avoids the dead one.
        """
        index = self._pick(avoid)
        try:
            return self._run_on(index, spec)
        except actor_died_errors() as exc:
            with self._informed_lock:
                self._informed.discard(index)  # it restarts without the run's state
            return self.retry(spec, exc, index)

    def retry(self, spec: AgentSpec, exc: BaseException, dead: int) -> AgentResult:
        """``spec``'s host (``dead``) died under it: record that, and run its next attempt elsewhere if any is left."""
        following = self._after_death(spec, exc)
        return following if isinstance(following, AgentResult) else self.run(following, avoid=dead)

    def ship(self, spec: AgentSpec, index: int) -> None:
        """Put ``spec``'s context in the object store unless host ``index`` is on its node (or it is inline)."""
        if isinstance(spec.context, InlineContext):
            return  # it travels inside the spec
        nodes = self.run_spec.host_nodes
        if not (index < len(nodes) and nodes[index] == spec.context.origin_node):
            store(spec.context)  # another node (or unknown): the host reads it from the object store

    def _after_death(self, spec: AgentSpec, exc: BaseException) -> AgentSpec | AgentResult:
        """Record that ``spec``'s host died under it; the spec of its next attempt, or its final error result."""
        retries = self.run_spec.config.agent_retries
        message = f"its agent host died ({type(exc).__name__})"
        last = spec.attempt >= retries
        base = spec.agent_id if spec.attempt == 0 else spec.agent_id.rsplit("r", 1)[0]
        following = f"{base}r{spec.attempt + 1}"
        note = "no retries left" if last else f"retry {spec.attempt + 1} of {retries} as {following}"
        self.emit(AgentFinished(run_id=self.run_spec.run_id, agent_id=spec.agent_id, status="retried",
                                answer=None, iterations=0, error=f"{message}; {note}"))
        if last:
            return AgentResult(spec.agent_id, None, "error", 0, error=f"agent lost: {message} {retries + 1} times")
        return dataclasses.replace(spec, agent_id=following, attempt=spec.attempt + 1)

    def _run_on(self, index: int, spec: AgentSpec) -> AgentResult:
        import ray

        run_spec = self.run_spec
        self.ship(spec, index)
        if index == self.own_host and self.run_here is not None:
            return self.run_here(run_spec, spec)[0]
        host = run_spec.hosts[index]
        carry = self.own_host is not None  # on a host: the child's events come back with its result
        with self._informed_lock:
            informed = index in self._informed
        reply = ray.get(host.run_agent.remote(run_spec.run_id, spec, carry)) if informed else None
        if reply is None:
            reply = ray.get(host.run_agent.remote(run_spec, spec, carry))
            with self._informed_lock:
                self._informed.add(index)
        result, events = reply
        for event in events:
            self.emit(event)
        return result

    def _pick(self, avoid: int | None) -> int:
        count = len(self.run_spec.hosts)
        with _counter_lock:
            index = next(_counter) % count
        if index == avoid and count > 1:
            index = (index + 1) % count
        return index
