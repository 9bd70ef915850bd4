"""Per-request run options of the HTTP and MCP front ends, under the command line's names.

``{"max_llm_calls": 50, "timeout": 120}`` in a request means what
``--max-llm-calls 50 --timeout 120`` means to ``rlm ask``: :func:`configure`
applies such options to the service's run config and raises
:class:`~rlm.errors.ConfigError` naming the bad one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from rlm.config import RLMConfig
from rlm.errors import ConfigError

__all__ = ["OPTIONS", "configure"]

#: Option name -> its type. The names are the CLI's (``--max-cost`` is ``max_cost``).
OPTIONS: dict[str, type] = {"max_depth": int, "max_iterations": int, "max_llm_calls": int, "max_tokens": int,
                            "max_cost": float, "timeout": float, "cell_timeout": float, "max_concurrency": int,
                            "memory": str}
#: Where an option lands in :class:`RLMConfig` when its name differs.
_FIELDS = {"max_cost": "max_cost_usd", "timeout": "timeout_s", "memory": "memory_namespace"}


def configure(base: RLMConfig, options: Mapping[str, Any], *, root_model: str | None = None) -> RLMConfig:
    """``base`` with ``options`` applied (``None`` values are left out); ``root_model`` replaces the root's model."""
    values: dict[str, Any] = {}
    for name, value in options.items():
        if value is None:
            continue
        _check(name, value)
        if name == "cell_timeout":
            values["sandbox"] = dataclasses.replace(base.sandbox, cell_timeout_s=float(value))
        else:
            values[_FIELDS.get(name, name)] = value
    if root_model is not None:
        # `rlm/<model>` names the root's model only: sub-calls keep the service's sub model
        values.update(model=root_model, sub_model=base.effective_sub_model)
    return dataclasses.replace(base, **values)


def _check(name: str, value: Any) -> None:
    kind = OPTIONS.get(name)
    if kind is None:
        raise ConfigError(f"unknown run option {name!r} (known: {', '.join(sorted(OPTIONS))})")
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise ConfigError(f"run option {name} must be {'a number' if kind is float else kind.__name__}, "
                          f"not {value!r}")
