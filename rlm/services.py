"""What the agents of one run share, and the seams an executor plugs into.

:class:`RunServices` is built once per run (per process, on Ray) and is
immutable: the run's config, LM client, tree-wide :class:`~rlm.budget.Ledger`,
event sink, work directory, extension host functions and prompt additions, and a
:class:`Placement`. The placement is the one seam through which an executor
decides *where* agents run; the core loop never knows which executor it is
under:

* ``new_agent_id(prefix)`` — ids unique across every process of the run;
* ``run_child(child, here=...)`` — run a child agent (this thread, or elsewhere);
* ``sandbox_for(agent, handler, extra)`` — a pre-started sandbox, or ``None``
  for a cold start;
* ``fanout_helpers()`` — other processes that can take shards of a big batch
  (:mod:`rlm.fanout`).

:class:`LocalPlacement` runs everything in this process; the Ray executor
(``rlm.agents``) brings its own.
"""

from __future__ import annotations

import itertools
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rlm.budget import Ledger
from rlm.config import RLMConfig, SandboxConfig
from rlm.events import Event
from rlm.inputs import ContextPayload
from rlm.lm import LM
from rlm.results import AgentResult

if TYPE_CHECKING:
    from rlm.records import CallRecords
    from rlm.sandbox.forkserver import ForkServer
    from rlm.sandbox.host import Handler, Sandbox

__all__ = ["AgentLike", "HostFunction", "Placement", "LocalPlacement", "RunServices", "RunTracker",
           "ShardResult", "FanoutHelper"]


class AgentLike(Protocol):
    """What the rest of a run sees of an agent (:class:`rlm.agent.Agent` is the one implementation)."""

    agent_id: str
    parent_id: str | None
    depth: int
    prompt: str
    payload: ContextPayload
    services: RunServices
    config: RLMConfig

    def run(self) -> AgentResult: ...


@dataclass(frozen=True)
class ShardResult:
    """What a fan-out helper sends back: one entry per item, and the calls' usage (see :mod:`rlm.fanout`)."""

    items: list[dict[str, str]]
    input_tokens: int = 0
    output_tokens: int = 0
    llm_calls: int = 0


#: ``helper(agent, kind, items, model, concurrency)`` starts a shard of a ``kind`` batch
#: elsewhere and returns a waiter; the waiter blocks for the :class:`ShardResult` (it raises
#: if the helper died).
FanoutHelper = Callable[[AgentLike, str, list[Any], "str | None", int], Callable[[], ShardResult]]


@dataclass(frozen=True)
class HostFunction:
    """A host function beyond the built-in four, exposed in every agent's REPL (e.g. ``note``).

    ``fn(agent, args)`` runs on the host with the calling agent and the call's
    arguments by name; it raises :class:`~rlm.errors.HostCallError` for errors the
    model should see. ``doc`` is one line for the system prompt.
    """

    name: str
    params: tuple[str, ...]
    doc: str
    fn: Callable[[AgentLike, dict[str, Any]], Any]


class Placement(Protocol):
    """Where the agents of a run execute (see the module docstring)."""

    @property
    def node_id(self) -> str: ...

    def new_agent_id(self, prefix: str) -> str: ...

    def run_child(self, child: AgentLike, *, here: bool = False) -> AgentResult: ...

    def sandbox_for(self, agent: AgentLike, handler: Handler, extra: dict[str, list[str]]) -> Sandbox | None: ...

    def fanout_helpers(self) -> Sequence[FanoutHelper]: ...


class LocalPlacement:
    """Every agent in this process: a child runs on its parent's thread; sandboxes are forked from
    the run's zygote (:mod:`rlm.sandbox.forkserver`: ~1 ms each instead of a jail each).

    ``fork_servers(config)`` supplies the run's fork server (a resident service lends
    pre-started ones); :meth:`close` (the executor calls it when the run ends) kills
    the zygote's jail.
    """

    def __init__(self, id_prefix: str = "",
                 fork_servers: Callable[[SandboxConfig], ForkServer] | None = None) -> None:
        self._prefix = id_prefix
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._node = socket.gethostname()
        self._make_server = fork_servers
        self._servers: dict[SandboxConfig, ForkServer] = {}
        self._closed = False

    @property
    def node_id(self) -> str:
        return self._node

    def new_agent_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}{self._prefix}{next(self._ids)}"

    def run_child(self, child: AgentLike, *, here: bool = False) -> AgentResult:
        return child.run()

    def sandbox_for(self, agent: AgentLike, handler: Handler, extra: dict[str, list[str]]) -> Sandbox | None:
        from rlm.sandbox.forkserver import ForkedSandbox

        config = agent.config.sandbox
        if agent.payload.kind == "text" and agent.payload.path.stat().st_size > config.huge_input_bytes > 0:
            return None  # a huge input stays mapped (its host path would show): a jail of its own, started cold
        with self._lock:
            if self._closed:
                return None
            server = self._servers.get(config)
            if server is None:
                server = self._servers[config] = self._new_server(config)
        return ForkedSandbox(server, agent.payload.path, agent.payload.kind, config=config, handler=handler,
                             extra_functions=extra)

    def fanout_helpers(self) -> Sequence[FanoutHelper]:
        return ()

    def _new_server(self, config: SandboxConfig) -> ForkServer:
        if self._make_server is not None:  # e.g. a resident service's pre-started ones
            return self._make_server(config)
        from rlm.sandbox.forkserver import ForkServer

        return ForkServer(config)

    def close(self) -> None:
        """Kill the run's zygote jails (and any worker still in them)."""
        with self._lock:
            self._closed = True
            servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.close()


class RunTracker:
    """The little a run's agents update as they go: the deepest depth reached."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0

    def reached(self, depth: int) -> None:
        with self._lock:
            self._depth = max(self._depth, depth)

    @property
    def depth_reached(self) -> int:
        return self._depth


@dataclass(frozen=True)
class RunServices:
    """What every agent of one run shares; immutable (the tracker counts, nothing is reassigned)."""

    run_id: str
    config: RLMConfig
    lm: LM
    budget: Ledger
    emit: Callable[[Event], None]
    workdir: Path
    placement: Placement = field(default_factory=LocalPlacement)
    host_functions: Mapping[str, HostFunction] = field(default_factory=dict)
    #: Extra text for every agent's system prompt.
    prompt_extra: str = ""
    #: Extra text for the root's system prompt only (e.g. the namespace's memories).
    root_prompt_extra: str = ""
    tracker: RunTracker = field(default_factory=RunTracker)
    #: Records that answer calls before the provider (replay, resume, the sub-call cache; rlm.records).
    records: CallRecords | None = None

    def new_id(self, prefix: str) -> str:
        return self.placement.new_agent_id(prefix)

    @property
    def node_id(self) -> str:
        return self.placement.node_id
