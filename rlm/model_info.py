"""What is known about a model: its price per token and its context window, without importing litellm.

litellm ships its price and context-window map as a JSON file inside the
package (``model_prices_and_context_window_backup.json``; with
``LITELLM_LOCAL_MODEL_COST_MAP=True`` it is also what litellm itself reads).
Importing litellm to consult it costs seconds; reading the file costs ~35 ms, once
per process, and only when a call's cost or a model's window is first asked for.

A model is looked up by its litellm string (``openai/gpt-4.1-mini``), then
without its provider prefix (``gpt-4.1-mini``), as litellm does. A model absent
from the map, or listed without prices, has no price: its calls cost ``None``
(unknown), never an invented number.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ModelInfo", "info", "cost", "preload"]

_MAP_FILE = "model_prices_and_context_window_backup.json"
_lock = threading.Lock()
_map: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Prices in USD per token (``None``: unknown) and the context window in tokens (``None``: unknown)."""

    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None

    @property
    def priced(self) -> bool:
        return bool(self.input_cost_per_token or self.output_cost_per_token)


def _load() -> dict[str, Any]:
    global _map
    with _lock:
        if _map is None:
            _map = _read_map()
        return _map


def _read_map() -> dict[str, Any]:
    spec = importlib.util.find_spec("litellm")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / _MAP_FILE
        if path.is_file():
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            return data if isinstance(data, dict) else {}
    return {}


def preload() -> None:
    """Read the map on a background thread (e.g. while a run's first model call is in flight)."""
    if _map is None:
        threading.Thread(target=_load, name="rlm-model-info", daemon=True).start()


def info(model: str) -> ModelInfo:
    """What the map says of ``model`` (an empty :class:`ModelInfo` when it says nothing)."""
    table = _load()
    entry = table.get(model)
    if entry is None and "/" in model:
        entry = table.get(model.split("/", 1)[1])
    if not isinstance(entry, dict):
        return ModelInfo()
    return ModelInfo(input_cost_per_token=_number(entry.get("input_cost_per_token")),
                     output_cost_per_token=_number(entry.get("output_cost_per_token")),
                     max_input_tokens=_int(entry.get("max_input_tokens")),
                     max_output_tokens=_int(entry.get("max_output_tokens")))


def cost(model: str, input_tokens: int, output_tokens: int) -> float | None:
    """The price of one call in USD, or ``None`` when ``model``'s price is unknown."""
    found = info(model)
    if not found.priced:
        return None
    return input_tokens * (found.input_cost_per_token or 0.0) + output_tokens * (found.output_cost_per_token or 0.0)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
