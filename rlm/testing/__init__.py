"""Test and benchmark helpers for rlm.

:class:`ScriptedServer` is a real OpenAI-compatible HTTP server on loopback that
serves scripted (or policy-computed) replies with seeded fault injection; see
:mod:`rlm.testing.scripted_server` and ``docs/testing.md``.

Names are imported lazily so that ``python -m rlm.testing.scripted_server``
does not import the module twice.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlm.testing.scripted_server import (
        Policy,
        Reply,
        RequestRecord,
        ScriptedServer,
        estimate_tokens,
        load_policy,
        load_script,
        max_concurrency,
    )

__all__ = [
    "Policy",
    "Reply",
    "RequestRecord",
    "ScriptedServer",
    "estimate_tokens",
    "load_policy",
    "load_script",
    "max_concurrency",
]

_LAZY = {name: "rlm.testing.scripted_server" for name in __all__}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
