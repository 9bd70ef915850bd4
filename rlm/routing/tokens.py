"""Counting a prompt's tokens before every call, cheaply, with the deployment's own tokenizer where known.

The size guard (:mod:`rlm.routing.router`) asks one question per candidate
deployment: does this prompt, with room for the reply, fit the window? It is
answered in up to three steps, each only when the one before cannot decide:

1. **UTF-8 bytes** (~1 us): no byte-level BPE tokenizer (GPT's, Llama's, Qwen's,
   SmolLM's) nor a SentencePiece tokenizer with byte fallback makes more tokens than
   the text has bytes, so a prompt whose bytes fit, fits.
2. **A sampled estimate**: 16 slices of 64 characters spread over the text are
   tokenized (joined by newlines, in one call) and their density (tokens per byte)
   scaled to the whole text. Each cut splits a word and each newline is a token of
   its own, so the estimate runs high. A prompt whose estimate
   times 1.25 fits, fits; one whose estimate times 0.8 does not fit, does not.
   (``benchmarks/routing_overhead.py`` measures the ratio of exact to estimated
   counts over prose, code, JSON, digits, hex, base64, CJK and mixes of them.)
3. **An exact count** with the tokenizer, for the prompts in between.

Texts up to 2,048 characters are counted exactly at step 2. Chat templates add a
few tokens per message: :data:`MESSAGE_OVERHEAD` is counted for each.

Tokenizers (``tokenizer =`` in the models file):

* ``o200k_base``, ``cl100k_base`` — tiktoken's encodings (GPT-4o/4.1/5 and GPT-4/3.5),
  loaded from the files litellm ships in its wheel, so nothing is downloaded
  (tiktoken is pointed at that folder while it loads); litellm itself is not imported.
* ``gguf:PATH`` — the vocabulary of a GGUF model file, through llama.cpp
  (``embedded`` is the embedded SmolLM2's file). Exact for a llama.cpp deployment of
  that file, but ~0.25 us per byte (its pre-tokenizer is slow), so even its estimate
  costs ~0.3 ms.
* ``bytes`` — no tokenizer: only step 1. The default for a deployment whose
  tokenizer is unknown: it never lets an oversize prompt through, and may send a
  prompt that would have fit to a bigger group.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import os
import threading
import weakref
from pathlib import Path
from typing import Any, Protocol

from rlm.errors import ConfigError

__all__ = ["Tokenizer", "PromptSize", "tokenizer", "tiktoken_encoding", "check_tokenizer_name", "utf8_len",
           "MESSAGE_OVERHEAD", "BYTES"]

BYTES = "bytes"
TIKTOKEN_ENCODINGS = ("o200k_base", "cl100k_base")
#: Tokens a chat template adds per message (role markers, separators), and once for the reply's start.
MESSAGE_OVERHEAD = 8
REPLY_PRIMING = 16
#: Texts up to this many characters are counted exactly instead of estimated.
EXACT_CHARS = 2048
SLICES, SLICE_CHARS = 16, 64
#: The estimate decides alone when it is this far from the room: fits if est * FITS <= room, not if est * NOT > room.
FITS_FACTOR, MISFIT_FACTOR = 1.25, 0.8
_lock = threading.Lock()


class Tokenizer(Protocol):
    """Counts the tokens of a text."""

    name: str

    def count(self, text: str) -> int: ...


def utf8_len(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (ASCII is checked first: ~50 ns per 16 KB)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def check_tokenizer_name(name: str) -> str | None:
    """Why ``name`` is not a tokenizer rlm can use (``None``: it is)."""
    if name in TIKTOKEN_ENCODINGS or name in (BYTES, "embedded"):
        return None
    if name.startswith("gguf:"):
        return None if Path(name[5:]).expanduser().is_file() else f"no GGUF file at {name[5:]}"
    return f"unknown tokenizer {name!r} (o200k_base, cl100k_base, bytes, embedded or gguf:PATH)"


def bundled_tiktoken_dir() -> Path:
    """litellm's folder of bundled tiktoken files (found without importing litellm)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("litellm is not installed, so the offline tokenizer files are missing")
    return Path(list(spec.submodule_search_locations)[0]) / "litellm_core_utils" / "tokenizers"


@functools.cache
def tiktoken_encoding(name: str) -> Any:
    """A tiktoken encoding loaded from litellm's bundled file; never downloaded."""
    import tiktoken

    folder = bundled_tiktoken_dir()
    url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
    if not (folder / hashlib.sha1(url.encode()).hexdigest()).is_file():  # the name tiktoken's cache uses
        raise ConfigError(f"{name} is not bundled under {folder}; reinstall with scripts/setup.sh")
    with _lock:  # tiktoken reads its cache folder from the environment: set it only while loading
        previous = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
        try:
            return tiktoken.get_encoding(name)
        finally:
            if previous is None:
                os.environ.pop("TIKTOKEN_CACHE_DIR", None)
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = previous


class _Tiktoken:
    def __init__(self, name: str) -> None:
        self.name = name
        self._encode = tiktoken_encoding(name).encode_ordinary

    def count(self, text: str) -> int:
        return len(self._encode(text))


class _Gguf:
    """A GGUF model's vocabulary through llama.cpp (vocabulary only: no weights are loaded).

    Counts with ``llama_tokenize`` given no buffer, which returns minus the number of tokens
    the text needs (llama.h); ``Llama.tokenize`` allocates a buffer of the model's whole
    training window on every call, which tripled the cost of a short text.
    """

    def __init__(self, name: str, path: Path) -> None:
        import llama_cpp

        _quiet_llama_cpp(llama_cpp)
        self.name = name
        self._model = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        # Closed when this is collected or, at the latest, at exit while llama_cpp is still whole: left to
        # Llama's own __del__ at interpreter shutdown, it printed a TypeError from a half torn-down module.
        weakref.finalize(self, self._model.close)
        self._vocab = self._model._model.vocab  # noqa: SLF001 - llama_cpp exposes the vocabulary only there
        self._tokenize = llama_cpp.llama_tokenize
        self._lock = threading.Lock()

    def count(self, text: str) -> int:
        data = text.encode("utf-8", "surrogatepass")
        with self._lock:
            return -self._tokenize(self._vocab, data, len(data), None, 0, False, False) if data else 0


@functools.cache
def _quiet_llama_cpp(llama_cpp: Any) -> Any:
    """Send llama.cpp's own log lines to the ``rlm.llama_cpp`` logger (debug) instead of stderr.

    llama-cpp-python prints them to stderr past ``verbose=False`` (loading a vocabulary logs a
    "training context overflow" warning); they reached the user's terminal in the middle of
    ``rlm ask``'s output. Process-wide, once; the callback is kept referenced here (the cache).
    """
    import ctypes
    import logging

    log = logging.getLogger("rlm.llama_cpp")

    def forward(level: int, text: bytes, user_data: Any) -> None:
        log.debug("%s", text.decode("utf-8", "replace").rstrip())

    callback = llama_cpp.llama_log_callback(forward)
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    return callback  # a ctypes callback must outlive its registration: the cache keeps it


@functools.cache
def tokenizer(name: str) -> Tokenizer:
    """The tokenizer called ``name`` (loaded once per process, on first use)."""
    problem = check_tokenizer_name(name)
    if problem or name == BYTES:
        raise ConfigError(problem or "the bytes tokenizer has no token counts")
    if name in TIKTOKEN_ENCODINGS:
        return _Tiktoken(name)
    if name == "embedded":
        from rlm.embedded import find_gguf

        return _Gguf(name, find_gguf())
    return _Gguf(name, Path(name[5:]).expanduser())


@functools.lru_cache(maxsize=512)
def _estimate(name: str, text: str) -> int:
    """Tokens of ``text``: exact when short, else the sampled estimate (see the module docstring)."""
    counter = tokenizer(name)
    if len(text) <= EXACT_CHARS:
        return counter.count(text)
    step = (len(text) - SLICE_CHARS) / (SLICES - 1)
    # One count of the slices joined by newlines (a call per slice costs more): each cut splits a word
    # and each newline is a token of its own, so the sample is denser than the text and the estimate high.
    sample = "\n".join(text[int(i * step): int(i * step) + SLICE_CHARS] for i in range(SLICES))
    return math.ceil(utf8_len(text) * counter.count(sample) / max(utf8_len(sample) - (SLICES - 1), 1))


@functools.lru_cache(maxsize=256)
def _exact(name: str, text: str) -> int:
    return tokenizer(name).count(text)


def _content(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else message
    return content if isinstance(content, str) else str(content or "")


class PromptSize:
    """One call's prompt, measured lazily: bytes always, tokens per tokenizer only when asked."""

    __slots__ = ("texts", "bytes", "_overhead")

    def __init__(self, messages: list[Any]) -> None:
        self.texts = [_content(m) for m in messages]
        self._overhead = MESSAGE_OVERHEAD * len(self.texts) + REPLY_PRIMING
        self.bytes = sum(utf8_len(t) for t in self.texts) + self._overhead

    def estimate(self, name: str) -> int:
        """Tokens under tokenizer ``name`` (estimated for long texts; ``bytes``: the byte count)."""
        if name == BYTES:
            return self.bytes
        return sum(_estimate(name, t) for t in self.texts) + self._overhead

    def exact(self, name: str) -> int:
        if name == BYTES:
            return self.bytes
        return sum(_exact(name, t) for t in self.texts) + self._overhead

    def fits(self, room: int, name: str) -> bool:
        """Whether the prompt has at most ``room`` tokens under tokenizer ``name`` (see the module docstring)."""
        if self.bytes <= room:
            return True
        if name == BYTES:
            return False
        estimate = self.estimate(name)
        if estimate * FITS_FACTOR <= room:
            return True
        if estimate * MISFIT_FACTOR > room:
            return False
        return self.exact(name) <= room

    def over(self, threshold: int, name: str) -> bool:
        """Whether the prompt (roughly: an estimate is enough for a rule) has more than ``threshold`` tokens."""
        return self.bytes > threshold and self.estimate(name) > threshold
