"""Defaults that need only the standard library: where rlm keeps its state (``RLM_HOME``), the embedded model.

:mod:`rlm.config` re-exports them; the command line reads them from here, so
that a command which only talks to a warm service finds the same home (and
prints the same help) without importing the config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["LOCAL_MODEL", "default_home", "home_from_env"]

#: The model string that selects the embedded llama.cpp server with SmolLM2-135M.
LOCAL_MODEL = "local/smollm2-135m"


def default_home() -> Path:
    """``~/.local/share/rlm`` (XDG data dir when set)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "rlm"


def home_from_env(env: Mapping[str, str]) -> Path:
    """``RLM_HOME`` from ``env`` (``~`` expanded), else :func:`default_home`."""
    return Path(env["RLM_HOME"]).expanduser() if env.get("RLM_HOME") else default_home()
