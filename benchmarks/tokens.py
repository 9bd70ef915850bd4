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
from pathlib import Path
from typing import Any

from rlm.errors import ConfigError, RLMError
from rlm.routing.tokens import bundled_tiktoken_dir, tiktoken_encoding

#: The encoding used for every token count in the benchmarks.
ENCODING = "o200k_base"


class TokenizerUnavailable(RLMError):
    """The bundled tokenizer file is not installed (litellm missing or changed its layout)."""


def bundled_dir() -> Path:
    """litellm's folder of bundled tiktoken files (found without importing litellm)."""
    try:
        return bundled_tiktoken_dir()
    except ConfigError as exc:
        raise TokenizerUnavailable(str(exc)) from None


@functools.lru_cache(maxsize=1)
def encoding() -> Any:
    """The ``o200k_base`` encoding, loaded from litellm's bundled file (:mod:`rlm.routing.tokens`)."""
    try:
        return tiktoken_encoding(ENCODING)
    except ConfigError as exc:
        raise TokenizerUnavailable(str(exc)) from None


def count_tokens(text: str) -> int:
    """Tokens of ``text`` under ``o200k_base`` (special-token text is counted as plain text)."""
    return len(encoding().encode(text, disallowed_special=()))
