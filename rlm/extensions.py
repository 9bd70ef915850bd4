"""Run extensions: features plugged into every run of a config (swarm memory is one).

A :class:`RunExtension`'s ``setup`` returns a :class:`Contribution` (host
functions, prompt text, an observer of the run's events) before the root
starts; ``finish`` runs after the root ended (e.g. to reflect on the run: its
model calls are the run's); ``close`` releases what it holds. All three run on
the driver, in the run's thread. :func:`rlm.runner.run` builds the built-in ones
a config asks for, or takes a caller's own list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from rlm.events import Event
from rlm.results import RunResult
from rlm.services import HostFunction, RunServices

__all__ = ["RunExtension", "Contribution"]


@dataclass(frozen=True)
class Contribution:
    """What an extension adds to a run: host functions, prompt text, and an observer of its events."""

    host_functions: tuple[HostFunction, ...] = ()
    prompt_extra: str = ""
    root_prompt_extra: str = ""
    observer: Callable[[Event], None] | None = None


class RunExtension(Protocol):
    """A feature plugged into every run of a config (see the module docstring)."""

    def setup(self, run_id: str, question: str) -> Contribution:
        """Before the root starts, on the driver."""
        ...

    def finish(self, services: RunServices, result: RunResult) -> None:
        """After the root ended, on the driver (e.g. reflect on the run; its calls are the run's)."""
        ...

    def close(self) -> None:
        """Release what the extension holds."""
        ...
