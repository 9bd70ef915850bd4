"""rlm: recursive language models over inputs of any size.

The input lives as ``context`` inside a sandboxed Python REPL; the model writes
code to explore it and calls sub-models and sub-agents on pieces of it.

    >>> import rlm
    >>> result = rlm.run("How many ERROR lines?", Path("app.log"), rlm.RLMConfig(model="openai/gpt-4.1-mini"))

A session keeps the root's REPL and history from one question to the next:

    >>> first = rlm.run("How many ERROR lines?", Path("app.log"), config, session="logs")
    >>> again = rlm.run("How many of them mention a timeout?", config=config, session="logs")

Heavy modules load lazily, so ``import rlm`` (and the sandbox worker) stay light.
"""

from __future__ import annotations

import os
from typing import Any

# litellm downloads its price map at import time unless told not to; rlm never
# touches the network beyond loopback, whoever imports litellm first.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# litellm copies every message of every call to shorten base64 images in its logging payload
# (~1 ms of CPU per call at 200 messages); rlm registers no logging callback that reads it.
os.environ.setdefault("MAX_BASE64_LENGTH_FOR_LOGGING", "0")

__all__ = ["run", "Session", "RunResult", "RLMConfig", "SandboxConfig", "EventBus", "errors", "__version__"]
__version__ = "0.1.0"

_LAZY = {
    "run": ("rlm.sessions", "run"),
    "Session": ("rlm.sessions", "Session"),
    "RunResult": ("rlm.runner", "RunResult"),
    "RLMConfig": ("rlm.config", "RLMConfig"),
    "SandboxConfig": ("rlm.config", "SandboxConfig"),
    "EventBus": ("rlm.events", "EventBus"),
}


def __getattr__(name: str) -> Any:
    if name == "errors":
        import rlm.errors as errors

        return errors
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'rlm' has no attribute {name!r}")
