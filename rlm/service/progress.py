"""What the HTTP and MCP front ends tell a client while a run goes: small summaries of its events.

A run's events (:mod:`rlm.events`) carry prompts, code and outputs; a client
following a run over the network wants to know where it is, not every byte of
it. :class:`Progress` keeps running totals (LM calls, tokens, agents started and
still running, iterations) and turns each event into:

* :meth:`Progress.payload`: the event without its large fields (prompts,
  code, outputs, previews), plus the totals; the ``rlm`` field of a streamed
  chunk of the OpenAI endpoint;
* :meth:`Progress.message`: one line for an MCP progress notification, for the
  events an MCP client is told about (each iteration, each sub-call and each
  child agent), else ``None``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rlm.events import AgentFinished, AgentStarted, Event, IterationFinished, LMCalled

__all__ = ["Progress", "Totals"]

#: Event fields left out of progress payloads: they can be large, and ``rlm show RUN_ID`` has them.
LARGE_FIELDS = frozenset({"prompt", "code", "stdout", "stderr", "reply", "prompt_preview", "response_preview",
                          "context_info", "config", "question", "answer"})
MAX_ERROR_CHARS = 300


@dataclass
class Totals:
    """Running totals over the whole tree of a run."""

    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    agents_started: int = 0
    agents_running: int = 0
    iterations: int = 0


class Progress:
    """Totals of one run, and the summary of each of its events."""

    def __init__(self) -> None:
        self.totals = Totals()
        self.count = 0  # events counted for MCP progress (its progress value must increase)

    def add(self, event: Event) -> None:
        """Count ``event`` into the totals."""
        totals = self.totals
        if isinstance(event, LMCalled):
            totals.llm_calls += 1
            totals.input_tokens += event.input_tokens
            totals.output_tokens += event.output_tokens
        elif isinstance(event, AgentStarted):
            totals.agents_started += 1
            totals.agents_running += 1
        elif isinstance(event, AgentFinished):
            totals.agents_running -= 1
        elif isinstance(event, IterationFinished):
            totals.iterations += 1

    def payload(self, event: Event) -> dict[str, Any]:
        """``event`` without its large fields, with the totals so far."""
        data = {k: v for k, v in event.to_dict().items() if k not in LARGE_FIELDS}
        if isinstance(data.get("error"), str):
            data["error"] = data["error"][:MAX_ERROR_CHARS]
        return {"event": data, "totals": asdict(self.totals)}

    def message(self, event: Event) -> str | None:
        """One line for an MCP client on each iteration, sub-call and child agent; ``None`` for other events."""
        line = _describe(event)
        if line is None:
            return None
        self.count += 1
        t = self.totals
        return (f"{line} ({t.llm_calls} LM calls, {t.input_tokens + t.output_tokens:,} tokens, "
                f"{t.agents_running} agents running)")


def _describe(event: Event) -> str | None:
    if isinstance(event, IterationFinished):
        return f"{event.agent_id}: iteration {event.iteration} done ({event.n_cells} cells)"
    if isinstance(event, LMCalled) and event.purpose in ("llm_query", "fallback"):
        return f"{event.agent_id}: sub-call {'answered' if event.ok else 'failed'}"
    if isinstance(event, AgentStarted) and event.depth > 0:
        return f"{event.agent_id}: child agent started (depth {event.depth})"
    return None
