"""What a root agent carries from one run to the next, and how a run relates to recorded ones.

:class:`Conversation` is the state a session keeps between turns: the root's
message history (as the model saw it, compacted or not), its started sandbox
(the REPL variables live there) and a :class:`TurnRecord` per earlier turn
(question, answer, and the turn's own messages, which the REPL exposes as
``answers[k]`` and ``history[k]``). A root agent given a conversation continues
it and hands it back at its end, the sandbox still running.

:class:`RunPlan` says how a run relates to recorded ones: where it comes from
(``origin``, ``parent_run_id``, a session's name and turn, the iteration a fork
starts from), which records answer its calls first (``prior``; ``strict`` in a
replay), the conversation its root continues, and ``stop_after`` (iterations
after which the root ends without an answer: a fork's replay of its parent).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rlm.records import Lookup, Recorded

if TYPE_CHECKING:
    from rlm.sandbox.host import Sandbox

__all__ = ["Conversation", "TurnRecord", "RunPlan", "variables_cell", "ORIGINS"]

#: How a run came to be (``RunStarted.origin``).
ORIGINS = ("ask", "replay", "resume", "fork", "turn", "rebuild")

Message = dict[str, str]


@dataclass(frozen=True)
class TurnRecord:
    """One finished turn: its question, answer and status, and its own messages (as the model saw them)."""

    turn: int
    question: str
    answer: str | None
    status: str
    history: tuple[Message, ...] = ()
    run_id: str | None = None


class Conversation:
    """A root agent's state between turns (see the module docstring). One turn at a time."""

    def __init__(self, *, named: bool = True) -> None:
        self.messages: list[Message] = []
        self.sandbox: Sandbox | None = None
        self.turns: list[TurnRecord] = []
        self.lock = threading.Lock()
        #: Whether the root's system prompt names ``answers[k]``/``history[k]`` (a session's does; a plain
        #: run continued by a fork did not).
        self.named = named

    @property
    def next_turn(self) -> int:
        """The number the next turn gets (from 1)."""
        return len(self.turns) + 1

    def close(self) -> None:
        """Stop the sandbox (the REPL variables are gone; the records can rebuild them)."""
        sandbox, self.sandbox = self.sandbox, None
        if sandbox is not None:
            sandbox.close()


@dataclass
class RunPlan:
    """How a run relates to recorded ones (see the module docstring)."""

    origin: str = "ask"
    parent_run_id: str | None = None
    session: str | None = None
    turn: int | None = None
    fork_at: int | None = None
    prior: Sequence[tuple[str, Recorded]] = ()
    strict: bool = False
    conversation: Conversation | None = None
    stop_after: int | None = None
    #: Earlier runs' calls for the cache (a service passes its run log's); ``None``: opened from the
    #: config's run log when the cache is on.
    lookup: Lookup | None = None
    #: Filled in by the run: the prior records no call asked for (a complete replay leaves none).
    unused: int = field(default=0)


def variables_cell(answers: Mapping[int, str | None], histories: Mapping[int, Sequence[Message]]) -> str:
    """The code that sets ``answers[k]`` and ``history[k]`` in the REPL (entries it does not name are kept:
    a turn sends its predecessor's history only, not every earlier one again)."""
    messages = {turn: [dict(m) for m in history] for turn, history in histories.items()}
    return ("answers = answers if isinstance(globals().get('answers'), dict) else {}\n"
            "history = history if isinstance(globals().get('history'), dict) else {}\n"
            f"answers.update({dict(answers)!r})\n"
            f"history.update({messages!r})\n")
