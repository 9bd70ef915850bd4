"""What reflection is allowed to see of a run: the root model's own actions, not the input's text.

:class:`TrajectoryRecorder` is an event subscriber (``bus.subscribe(recorder)``
or wrapped around ``RunServices.emit``). It keeps, for the root agent only, the
code of each reply and, per cell, whether it failed and the exception's class
name. It deliberately keeps **no outputs**: outputs carry text of the input
documents, and a document saying "remember this rule" must not reach the
model that writes memories (CONTINUAL_LEARNING.md, lesson 5). The model's own
code can still quote the input; that residual risk is why every reflection
write carries provenance and suspicious text is quarantined.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from rlm.events import AgentStarted, CellExecuted, Event, IterationFinished, LMCalled
from rlm.parsing import extract_code_blocks

__all__ = ['MAX_CODE_CHARS', 'Step', 'TrajectoryRecorder']

MAX_CODE_CHARS = 800


@dataclass
class Step:
    iteration: int
    code: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    final: bool = False


class TrajectoryRecorder:
    """Records the root agent's steps and run-wide counts from the event stream. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.root_id: str | None = None
        self.steps: dict[int, Step] = {}
        self.children = 0
        self.lm_calls = 0

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._observe(event)

    def _observe(self, event: Event) -> None:
        if isinstance(event, AgentStarted):
            if event.depth == 0 and self.root_id is None:
                self.root_id = event.agent_id
            elif event.depth > 0:
                self.children += 1
        elif isinstance(event, LMCalled):
            self.lm_calls += 1
        elif event.agent_id != self.root_id or self.root_id is None:
            return
        elif isinstance(event, IterationFinished):
            step = self.steps.setdefault(event.iteration, Step(event.iteration))
            step.code = [code[:MAX_CODE_CHARS] for code in extract_code_blocks(event.reply)]
        elif isinstance(event, CellExecuted):
            step = self.steps.setdefault(event.iteration, Step(event.iteration))
            if event.error:
                step.errors.append(_error_name(event.error))
            step.final = step.final or event.final

    def summary(self, max_chars: int = 6_000) -> str:
        """The root's steps as text: its code and which cells failed (no outputs), within ``max_chars``."""
        with self._lock:
            steps = [self.steps[i] for i in sorted(self.steps)]
            children = self.children
        blocks = [_render(step) for step in steps]
        text = "\n\n".join(blocks)
        while len(text) > max_chars and len(blocks) > 2:
            del blocks[len(blocks) // 2]  # keep how it started and how it ended
            text = "\n\n".join(blocks[: len(blocks) // 2] + ["[... middle steps left out ...]"]
                               + blocks[len(blocks) // 2:])
        head = f"{len(steps)} steps by the root agent; {children} helper agents were started.\n\n"
        return head + text[:max_chars]


def _render(step: Step) -> str:
    code = "\n".join(step.code) or "(no code)"
    status = "called FINAL" if step.final else (f"raised {', '.join(step.errors)}" if step.errors else "ran")
    return f"Step {step.iteration} ({status}):\n```python\n{code}\n```"


def _error_name(error: str) -> str:
    last = error.strip().splitlines()[-1] if error.strip() else "error"
    name = last.split(":", 1)[0].strip()
    return name if name.isidentifier() else "an error"
