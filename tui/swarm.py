"""The TUI's live picture of one run, folded incrementally from its events.

:class:`SwarmState` consumes :mod:`rlm.events` events one at a time (live from
an :class:`~rlm.events.EventBus`, or replayed from the run log) and keeps one
:class:`AgentView` per agent. :meth:`SwarmState.apply` returns the id of the
agent an event changed, so the UI redraws only those rows; folding a whole run
and folding it event by event give the same state.

It is the incremental counterpart of :func:`rlm.tree.build_tree` (which
rebuilds a graph from a complete stream): the same attribution rules, kept
cheap enough to run on every batch of a run with hundreds of agents. No
Textual import here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rlm.events import (
    AgentFinished,
    AgentStarted,
    CellExecuted,
    Event,
    IterationFinished,
    LMCalled,
    RunFinished,
    RunStarted,
)

__all__ = ["AgentView", "CallView", "CellView", "IterationView", "SwarmState"]


@dataclass(slots=True)
class CellView:
    """One code block an agent ran."""

    index: int
    code: str
    stdout: str
    stderr: str
    error: str | None
    duration_s: float
    final: bool
    restarted: bool


@dataclass(slots=True)
class CallView:
    """One LM call an agent made (its own turn, or an ``llm_query`` sub-call)."""

    purpose: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    latency_s: float
    ok: bool
    error: str | None
    #: Where it went and why (rlm.routing): the model group, the deployment, the node, the reason.
    group: str | None = None
    deployment: str | None = None
    node: str | None = None
    reason: str = ""
    #: Answered from a record (rlm.records): no tokens, no cost.
    cache_hit: bool = False


@dataclass(slots=True)
class IterationView:
    """One model turn of an agent and what it caused; ``number`` is None until known."""

    number: int | None
    reply: str | None = None
    cells: list[CellView] = field(default_factory=list)
    calls: list[CallView] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    duration_s: float | None = None
    finished: bool = False


@dataclass(slots=True)
class AgentView:
    """One agent as the tree and the detail pane show it. Usage is the agent's own."""

    agent_id: str
    parent_id: str | None = None
    depth: int = 0
    model: str = ""
    prompt: str = ""
    node_id: str | None = None
    status: str = "running"
    answer: str | None = None
    error: str | None = None
    iterations: list[IterationView] = field(default_factory=list)
    reported_iterations: int | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    llm_calls: int = 0
    cache_hits: int = 0
    cost_usd: float | None = 0.0
    duration_s: float | None = None
    version: int = 0  # bumped on every change, so views can skip unchanged agents

    @property
    def n_iterations(self) -> int:
        """Iterations reported at the end, else the finished ones seen so far."""
        if self.reported_iterations is not None:
            return self.reported_iterations
        return sum(1 for it in self.iterations if it.finished)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def open_iteration(self, number: int | None = None) -> IterationView:
        """The iteration in progress; a new one when none is open or ``number`` differs."""
        current = self.iterations[-1] if self.iterations else None
        if current is not None and not current.finished and (number is None or current.number in (None, number)):
            if current.number is None:
                current.number = number
            return current
        current = IterationView(number)
        self.iterations.append(current)
        return current


def _add_cost(total: float | None, call: CallView) -> float | None:
    """The agent's cost after ``call``: unknown once any call with tokens has no price."""
    if call.cost_usd is None:
        return total if call.input_tokens == 0 and call.output_tokens == 0 else None
    return None if total is None else math.fsum((total, call.cost_usd))


class SwarmState:
    """Everything known about one run so far; see the module docstring."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.question: str = ""
        self.model: str = ""
        self.config: dict[str, Any] = {}
        self.status: str = "idle"
        self.answer: str | None = None
        self.error: str | None = None
        self.totals: RunFinished | None = None
        self.agents: dict[str, AgentView] = {}
        self.root_id: str | None = None
        self.events_seen = 0
        self._handlers: dict[type[Event], Callable[[Any], str | None]] = {
            RunStarted: self._run_started,
            RunFinished: self._run_finished,
            AgentStarted: self._agent_started,
            AgentFinished: self._agent_finished,
            LMCalled: self._lm_called,
            CellExecuted: self._cell_executed,
            IterationFinished: self._iteration_finished,
        }

    @classmethod
    def from_events(cls, events: list[Event]) -> SwarmState:
        """The state after folding ``events`` (one run's, in recorded order)."""
        state = cls()
        for event in events:
            state.apply(event)
        return state

    def apply(self, event: Event) -> str | None:
        """Fold one event in; return the id of the agent it changed (None for run events)."""
        self.events_seen += 1
        handler = self._handlers.get(type(event))
        if handler is None:
            return None
        changed = handler(event)
        if changed is not None:
            self.agents[changed].version += 1
        return changed

    def agent(self, agent_id: str) -> AgentView:
        """The view of ``agent_id``, created empty if its start was not seen."""
        view = self.agents.get(agent_id)
        if view is None:
            view = self.agents[agent_id] = AgentView(agent_id)
        return view

    def children(self, agent_id: str) -> list[str]:
        """Ids of the sub-agents ``agent_id`` started, in start order."""
        return [c for it in self.agent(agent_id).iterations for c in it.children]

    # -- handlers -----------------------------------------------------------

    def _run_started(self, e: RunStarted) -> None:
        self.run_id, self.question, self.model = e.run_id, e.question, e.model
        self.config = dict(e.config)
        self.status = "running"

    def _run_finished(self, e: RunFinished) -> None:
        self.run_id = self.run_id or e.run_id
        self.status, self.answer, self.error, self.totals = e.status, e.answer, e.error, e
        for view in self.agents.values():  # agents cut off without an AgentFinished
            if view.status == "running":
                view.status = e.status
                view.version += 1

    def _agent_started(self, e: AgentStarted) -> str | None:
        if e.agent_id is None:
            return None
        view = self.agent(e.agent_id)
        view.parent_id, view.depth, view.model = e.parent_id, e.depth, e.model
        view.prompt, view.node_id = e.prompt, e.node_id
        if e.parent_id is None:
            self.root_id = self.root_id or e.agent_id
        else:
            parent = self.agent(e.parent_id)
            parent.open_iteration().children.append(e.agent_id)
            parent.version += 1
        return e.agent_id

    def _agent_finished(self, e: AgentFinished) -> str | None:
        if e.agent_id is None:
            return None
        view = self.agent(e.agent_id)
        view.status, view.answer, view.error = e.status, e.answer, e.error
        view.reported_iterations, view.duration_s = e.iterations, e.duration_s
        return e.agent_id

    def _lm_called(self, e: LMCalled) -> str | None:
        if e.agent_id is None:
            return None
        view = self.agent(e.agent_id)
        call = CallView(e.purpose, e.model, e.input_tokens, e.output_tokens, e.cost_usd, e.latency_s, e.ok, e.error,
                        e.model_group, e.deployment, e.node, e.route_reason, e.cache_hit)
        view.open_iteration().calls.append(call)
        view.input_tokens += e.input_tokens
        view.output_tokens += e.output_tokens
        view.llm_calls += 1
        view.cache_hits += int(e.cache_hit)
        view.cost_usd = _add_cost(view.cost_usd, call)
        return e.agent_id

    def _cell_executed(self, e: CellExecuted) -> str | None:
        if e.agent_id is None:
            return None
        view = self.agent(e.agent_id)
        cell = CellView(e.index, e.code, e.stdout, e.stderr, e.error, e.duration_s, e.final, e.restarted)
        view.open_iteration(e.iteration).cells.append(cell)
        return e.agent_id

    def _iteration_finished(self, e: IterationFinished) -> str | None:
        if e.agent_id is None:
            return None
        current = self.agent(e.agent_id).open_iteration(e.iteration)
        current.number, current.reply, current.duration_s, current.finished = e.iteration, e.reply, e.duration_s, True
        return e.agent_id
