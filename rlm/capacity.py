"""How much a model can read: its context window, and the sizes the prompts derive from it.

The prompts tell the root model how much text one ``llm_query`` may carry and
cut what the REPL prints to fit the root model's own window. Both follow from
the models' context windows (in tokens), and the prompt's style from the root
model's profile (:mod:`rlm.profiles`):

* :func:`window_for` — a model's window by the one rule of
  :func:`rlm.profiles.window` (the models file; for hosted APIs litellm's map,
  read without importing litellm; the family's profile), else ``None``.
* :func:`capacity_for` — an agent's :class:`Capacity` from the run's model
  groups (:mod:`rlm.routing`): the groups its own turns and its sub-calls go
  to, their deployments' windows (the file's ``context_window`` included) and
  the profile of the deployment its turns go to first.
  :func:`capacity` does the same from two bare model strings.
* :class:`Capacity` — the numbers the prompts use (an unknown window counts as
  :data:`DEFAULT_WINDOW`), the style, and whether the worked example is sent.

Characters per token are taken as 3: English prose runs near 4 with the
common tokenizers, code, numbers and other languages lower, and overflowing a
window costs a failed call while a smaller chunk only costs one more call. The
published RLM prompts told GPT-5 (272k-token window) that a sub-call reads
about 500k characters and Qwen3-8B (32k window) about 10-15k characters per
call (Zhang, Kraska, Khattab, "Recursive Language Models", 2025, appendix):
half the sub-model's window in characters lands between those two.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rlm import profiles

if TYPE_CHECKING:
    from rlm.config import RLMConfig
    from rlm.routing.router import ModelRouter
    from rlm.routing.table import Target

__all__ = ["Capacity", "DEFAULT_WINDOW", "COMPACT_WINDOW", "window_for", "capacity", "capacity_for"]

#: Tokens assumed for a model whose window is unknown.
DEFAULT_WINDOW = 32_768
#: Root models with a window up to this many tokens get the compact prompt (unless their profile says).
COMPACT_WINDOW = 16_384
CHARS_PER_TOKEN = 3


def window_for(model: str) -> int | None:
    """The context window of ``model`` in tokens (:func:`rlm.profiles.window`), or ``None`` when unknown.

    Never imports litellm: its map is read as a file (:mod:`rlm.model_info`), and only for hosted models.
    """
    return profiles.window(model)


@dataclass(frozen=True, slots=True)
class Capacity:
    """What the prompts say about sizes, for one agent.

    ``root_window`` is the window of the model reading the prompt (``None``:
    unknown), ``sub_window`` that of the sub-model ``llm_query`` calls.
    """

    root_window: int | None
    sub_window: int | None
    #: The root model's profile's prompt style (``"full"``, ``"compact"``; ``None``: by ``root_window``).
    style: str | None = None
    #: Whether the worked example goes before the task (``None``: with the compact style).
    examples: bool | None = None

    @property
    def sub_call_chars(self) -> int:
        """Characters of text one ``llm_query`` prompt may carry: half the sub-model's window."""
        window = self.sub_window or DEFAULT_WINDOW
        return max(1_000, window * CHARS_PER_TOKEN // 2 // 1_000 * 1_000)

    @property
    def observation_chars(self) -> int:
        """Characters of REPL output shown per turn: 8% of the root window, between 1,500 and 20,000."""
        window = self.root_window or DEFAULT_WINDOW
        return min(20_000, max(1_500, window * CHARS_PER_TOKEN * 8 // 100 // 100 * 100))

    @property
    def compact(self) -> bool:
        """Whether the root model gets the short prompt: its profile says so, else its window is small."""
        if self.style is not None:
            return self.style == profiles.COMPACT
        return self.root_window is not None and self.root_window <= COMPACT_WINDOW

    @property
    def worked_example(self) -> bool:
        """Whether the worked example is sent as chat turns before the task (its profile, else the style)."""
        return self.compact if self.examples is None else self.examples

    @property
    def history_chars(self) -> int | None:
        """Characters of conversation the root window holds beside its reply (``None``: unknown, no trimming)."""
        if self.root_window is None:
            return None
        reply_tokens = min(2_048, self.root_window // 8)
        return (self.root_window - reply_tokens) * CHARS_PER_TOKEN


def capacity(root_model: str, sub_model: str) -> Capacity:
    """The :class:`Capacity` of an agent whose model is ``root_model`` and whose sub-calls go to ``sub_model``."""
    profile = profiles.profile_for(root_model)
    return Capacity(window_for(root_model), window_for(sub_model), profile.style, profile.examples)


def capacity_for(config: RLMConfig, depth: int = 0, group: str | None = None) -> Capacity:
    """The :class:`Capacity` of an agent of a run of ``config`` at ``depth``, whose own turns ask for ``group``.

    From the run's model groups: the windows are the smallest known of the deployments of the
    group its turns go to and of the group its sub-calls go to (either may serve a call); the
    style and worked example are the profile of the deployment its turns go to first.
    """
    from rlm.routing.router import CallSite

    router = _router(config)
    turns = router.table.groups[router.planned_group(CallSite("agent", depth), group)]
    subs = router.table.groups[router.planned_group(CallSite("query", depth))]
    profile = turns[0].profile
    return Capacity(_smallest(turns), _smallest(subs), profile.style, profile.examples)


@functools.lru_cache(maxsize=16)
def _router(config: RLMConfig) -> ModelRouter:
    from rlm.routing.router import ModelRouter
    from rlm.routing.table import RouteTable

    return ModelRouter(RouteTable(config))


def _smallest(targets: Sequence[Target]) -> int | None:
    return min((t.window for t in targets if t.window is not None), default=None)
