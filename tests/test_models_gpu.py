"""The vLLM path: Ray Serve LLM on a real GPU. Skipped without a CUDA GPU, the gpu extra, or a local model.

The model must be on disk (no download at run time): RLM_TEST_VLLM_MODEL names a Hugging Face model
folder (e.g. a copy of Qwen/Qwen2.5-0.5B-Instruct). The config the deployment is started with is checked
everywhere (it is the one docs/models.md shows).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import time

import pytest
from conftest import is_agent_prompt, repl, turn

from rlm.agents.serving import serve_spec, vllm_config
from rlm.routing.spec import parse_models
from rlm.runlog import RunLog
from rlm.runner import run


def test_the_vllm_deployment_config_is_the_documented_one():
    spec = serve_spec("qwen-gpu", {"engine": "vllm", "model": "Qwen/Qwen2.5-7B-Instruct", "context_window": 32768,
                                   "num_gpus": 1, "accelerator_type": "L4", "min_replicas": 1, "max_replicas": 2,
                                   "max_ongoing_requests": 64,
                                   "engine_kwargs": {"tensor_parallel_size": 1, "gpu_memory_utilization": 0.9}})
    assert vllm_config(spec) == {
        "model_loading_config": {"model_id": "qwen-gpu", "model_source": "Qwen/Qwen2.5-7B-Instruct"},
        "deployment_config": {"max_ongoing_requests": 64,
                              "autoscaling_config": {"min_replicas": 1, "max_replicas": 2,
                                                     "target_ongoing_requests": 32}},
        "engine_kwargs": {"max_model_len": 32768, "tensor_parallel_size": 1, "gpu_memory_utilization": 0.9},
        "accelerator_type": "L4",
    }
    assert spec.tokenizer == "bytes"  # vLLM's vocabulary is not loaded on the client: the safe bound


def _gpu_ready() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return "no CUDA GPU (nvidia-smi not found)"
    if importlib.util.find_spec("vllm") is None or importlib.util.find_spec("pyarrow") is None:
        return "the gpu extra is not installed (pip install 'rlm[gpu]')"
    if not os.environ.get("RLM_TEST_VLLM_MODEL"):
        return "RLM_TEST_VLLM_MODEL does not name a local model folder"
    return None


@pytest.mark.gpu
@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.skipif(_gpu_ready() is not None, reason=_gpu_ready() or "")
def test_heavy_calls_reach_a_vllm_deployment_on_the_gpu(tmp_path_factory, server_factory, make_config, text_file):
    from ray import serve

    from rlm.agents.cluster import ensure_ray, shutdown_embedded
    from rlm.agents.serving import serve_models

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve_table = {"port": port, "qwen-gpu": {"engine": "vllm", "model": os.environ["RLM_TEST_VLLM_MODEL"],
                                              "num_gpus": 1, "context_window": 4096}}
    root = server_factory(policy=lambda m: repl("out = llm_query('Say hi.', model='heavy')")
                          if is_agent_prompt(m) and turn(m) == 0 else repl("FINAL(out)"))
    spec, options = parse_models({"serve": serve_table, "groups": {
        "root": {"deployments": [{"model": "openai/scripted", "api_base": root.base_url}]},
        "heavy": {"deployments": [{"serve": "qwen-gpu"}]}}})
    config = make_config(root, models=spec, lm_timeout_s=300)
    ensure_ray(config)
    try:
        serve_models(options)
        deadline = time.monotonic() + 900
        while (app := serve.status().applications.get("qwen-gpu")) is None or app.status != "RUNNING":
            assert time.monotonic() < deadline, "vLLM did not come up"
            time.sleep(2)
        result = run("q", text_file("doc\n"), config)
        assert result.status == "ok" and result.answer
        with RunLog(config.runlog_path) as log:
            heavy = [c for c in log.lm_calls(result.run_id) if c.model_group == "heavy"]
        assert [(c.deployment, c.ok) for c in heavy] == [("qwen-gpu", True)]
    finally:
        serve.shutdown()
        shutdown_embedded()
