"""Token counts with a real tokenizer that works offline: tiktoken's ``o200k_base``.

``o200k_base`` is the encoding of the GPT-4o / GPT-5 family (the RLM paper's models;
OOLONG's harness also counts GPT-5 tokens with it, ``src/eval/utils.py``). tiktoken
normally downloads its encodings on first use; litellm (pinned in pyproject.toml)
ships the encoding file inside its wheel (``litellm/litellm_core_utils/tokenizers/``,
named by the SHA-1 of the download URL, the name tiktoken's cache uses), so we point
tiktoken's cache at that folder while loading the encoding and never touch the
network. A missing bundled file is an error, never a download.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

from rlm.errors import RLMError

#: The encoding used for every token count in the benchmarks.
ENCODING = "o200k_base"
_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
_lock = threading.Lock()


class TokenizerUnavailable(RLMError):
    """The bundled tokenizer file is not installed (litellm missing or changed its layout)."""


def bundled_dir() -> Path:
    """litellm's folder of bundled tiktoken files (found without importing litellm)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerUnavailable("litellm is not installed, so the offline tokenizer is missing")
    return Path(list(spec.submodule_search_locations)[0]) / "litellm_core_utils" / "tokenizers"


@functools.lru_cache(maxsize=1)
def encoding() -> Any:
    """The ``o200k_base`` encoding, loaded from litellm's bundled file."""
    import tiktoken

    folder = bundled_dir()
    if not (folder / hashlib.sha1(_URL.encode()).hexdigest()).is_file():
        raise TokenizerUnavailable(f"{ENCODING} is not bundled under {folder}; reinstall with scripts/setup.sh")
    with _lock:  # tiktoken reads its cache folder from the environment: set it only while loading
        previous = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
        try:
            return tiktoken.get_encoding(ENCODING)
        finally:
            if previous is None:
                os.environ.pop("TIKTOKEN_CACHE_DIR", None)
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = previous


def count_tokens(text: str) -> int:
    """Tokens of ``text`` under ``o200k_base`` (special-token text is counted as plain text)."""
    return len(encoding().encode(text, disallowed_special=()))
