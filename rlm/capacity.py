"""How much a model can read: its context window, and the sizes the prompts derive from it.

The prompts tell the root model how much text one ``llm_query`` may carry and
cut what the REPL prints to fit the root model's own window. Both follow from
the models' context windows (in tokens):

* :func:`window_for` — a built-in table for the embedded model, else litellm's
  model info *only when litellm is already imported* (importing it costs
  seconds; the run never pays that just to size a prompt), else ``None``.
* :class:`Capacity` — the numbers the prompts use, derived from the root and
  sub-model windows (an unknown window counts as :data:`DEFAULT_WINDOW`).

Characters per token are taken as 3: English prose runs near 4 with the
common tokenizers, code, numbers and other languages lower, and overflowing a
window costs a failed call while a smaller chunk only costs one more call. The
published RLM prompts told GPT-5 (272k-token window) that a sub-call reads
about 500k characters and Qwen3-8B (32k window) about 10-15k characters per
call (Zhang, Kraska, Khattab, "Recursive Language Models", 2025, appendix):
half the sub-model's window in characters lands between those two.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from rlm.config import LOCAL_MODEL
from rlm.local_model import SERVED_NAME

__all__ = ["Capacity", "DEFAULT_WINDOW", "COMPACT_WINDOW", "window_for", "capacity"]

#: Tokens assumed for a model whose window is unknown.
DEFAULT_WINDOW = 32_768
#: Root models with a window up to this many tokens get the compact prompt.
COMPACT_WINDOW = 16_384
CHARS_PER_TOKEN = 3
#: Windows of models rlm ships or serves itself (the embedded llama.cpp server runs SmolLM2 with n_ctx 8192).
BUILTIN_WINDOWS = {LOCAL_MODEL: 8_192, f"openai/{SERVED_NAME}": 8_192}


def window_for(model: str) -> int | None:
    """The context window of ``model`` in tokens, or ``None`` when it is not known without importing litellm."""
    if model in BUILTIN_WINDOWS:
        return BUILTIN_WINDOWS[model]
    litellm = sys.modules.get("litellm")
    if litellm is None:
        return None
    try:
        info = litellm.get_model_info(model)
    except Exception:  # noqa: BLE001 - unknown to litellm's table: many self-hosted models are
        return None
    window = info.get("max_input_tokens") or info.get("max_tokens")
    return int(window) if isinstance(window, int) and window > 0 else None


@dataclass(frozen=True, slots=True)
class Capacity:
    """What the prompts say about sizes, for one agent.

    ``root_window`` is the window of the model reading the prompt (``None``:
    unknown), ``sub_window`` that of the sub-model ``llm_query`` calls.
    """

    root_window: int | None
    sub_window: int | None

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
        """Whether the root model's window is small enough for the short prompt with a worked example."""
        return self.root_window is not None and self.root_window <= COMPACT_WINDOW

    @property
    def history_chars(self) -> int | None:
        """Characters of conversation the root window holds beside its reply (``None``: unknown, no trimming)."""
        if self.root_window is None:
            return None
        reply_tokens = min(2_048, self.root_window // 8)
        return (self.root_window - reply_tokens) * CHARS_PER_TOKEN


def capacity(root_model: str, sub_model: str) -> Capacity:
    """The :class:`Capacity` of an agent whose model is ``root_model`` and whose sub-calls go to ``sub_model``."""
    return Capacity(window_for(root_model), window_for(sub_model))
