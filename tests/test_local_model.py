"""Integration with the real embedded model: SmolLM2-135M served by llama.cpp on loopback.

No assertion on answer quality (it is a 135M-parameter demo model): the wire path
works, tokens are counted, and the loop ends cleanly within its limits.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rlm.config import LOCAL_MODEL, RLMConfig
from rlm import local_model
from rlm.local_model import LocalModelServer, find_gguf, serving
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


def _answers(api_base: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(api_base + "/models", timeout=5):
            return True
    except (urllib.error.URLError, OSError):
        return False


def test_runs_in_one_process_share_one_server_and_the_last_one_stops_it(rlm_home):
    config = RLMConfig(model=LOCAL_MODEL, home=rlm_home)
    with serving(config) as first:
        with serving(config) as second:  # a second run while the first goes on: the same server
            assert first.api_base == second.api_base and _answers(first.api_base)
        assert _answers(first.api_base)  # the first run still uses it
    assert not _answers(first.api_base)  # the last run stopped it
    with serving(RLMConfig(model="openai/elsewhere", api_base="http://127.0.0.1:9/v1", home=rlm_home)) as other:
        assert other.api_base == "http://127.0.0.1:9/v1"  # a run that does not use it starts nothing


def test_a_resident_server_outlives_its_runs_and_restarts_if_it_died(rlm_home):
    config = RLMConfig(model=LOCAL_MODEL, home=rlm_home)
    local_model.keep_resident()
    try:
        with serving(config) as first:
            pass
        assert _answers(first.api_base)  # kept for the next run
        with serving(config) as second:
            assert second.api_base == first.api_base
        server = local_model._Shared.server
        assert server is not None and server._proc is not None
        server._proc.kill()
        server._proc.wait()
        with serving(config) as third:  # its process died: the next run starts a new one
            assert third.api_base != first.api_base and _answers(third.api_base)
    finally:
        local_model.close_resident()
    assert not _answers(third.api_base)


def test_run_against_the_embedded_model_ends_cleanly(rlm_home):
    config = RLMConfig(model=LOCAL_MODEL, home=rlm_home, max_iterations=2, max_completion_tokens=128)
    result = run("What is the harbour master's launch code?", EXAMPLE, config)
    assert result.status in {"ok", "max_iterations"}
    assert result.usage.llm_calls >= 1
    assert result.usage.input_tokens > 500 and result.usage.output_tokens > 0
    assert result.cost_usd is None  # a local model has no price
    assert result.answer is not None
