"""Integration with the real embedded model: SmolLM2-135M served by llama.cpp on loopback.

No assertion on answer quality (it is a 135M-parameter demo model): the wire path
works, tokens are counted, and the loop ends cleanly within its limits.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rlm.config import LOCAL_MODEL, RLMConfig
from rlm.local_model import LocalModelServer, find_gguf
from rlm.runner import run

pytestmark = [pytest.mark.local_model, pytest.mark.slow]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "logbook.txt"


def test_model_file_ships_in_the_package():
    assert find_gguf().stat().st_size > 50_000_000


def test_server_starts_and_stops_on_a_free_loopback_port():
    with LocalModelServer() as server:
        assert server.base_url.startswith("http://127.0.0.1:")
    with LocalModelServer() as again:  # the first one released everything
        assert again.port != 0


def test_run_against_the_embedded_model_ends_cleanly(rlm_home):
    config = RLMConfig(model=LOCAL_MODEL, home=rlm_home, max_iterations=2, max_completion_tokens=128)
    result = run("What is the harbour master's launch code?", EXAMPLE, config)
    assert result.status in {"ok", "max_iterations"}
    assert result.usage.llm_calls >= 1
    assert result.usage.input_tokens > 500 and result.usage.output_tokens > 0
    assert result.cost_usd is None  # a local model has no price
    assert result.answer is not None
