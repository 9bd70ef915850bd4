"""What travels between the driver and the agent hosts: a run's spec and one agent's spec."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlm.config import RLMConfig

from rlm.agents.context import InlineContext, SharedContext


@dataclass(frozen=True)
class RunSpec:
    """Everything a host needs to serve agents of one run.

    ``host_functions`` maps each extension host function to ``(params, doc)``:
    the functions themselves stay on the driver and are called through the hub.
    ``hosts`` are the session's agent-host actor handles (children are placed on them) and
    ``host_nodes`` the Ray node id of each (a child's context goes through the object store
    only when it runs on another node than the file).
    """

    run_id: str
    config: RLMConfig
    limits: dict[str, Any]
    hub: Any
    hosts: list[Any]
    host_nodes: list[str] = field(default_factory=list)
    host_functions: dict[str, tuple[tuple[str, ...], str]] = field(default_factory=dict)
    prompt_extra: str = ""
    root_prompt_extra: str = ""


@dataclass(frozen=True)
class AgentSpec:
    """One agent to run on a host: who it is, what it is asked, on which context.

    ``context`` is a shared file (the parent's payload, or a big chunk), or a small
    chunk inline (:mod:`rlm.agents.context`). ``group``: the model group its own turns
    ask for (its parent's ``rlm_query(..., model=...)``).
    """

    agent_id: str
    parent_id: str | None
    depth: int
    prompt: str
    context: SharedContext | InlineContext
    attempt: int = 0
    group: str | None = None
