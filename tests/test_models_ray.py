"""A "GPU node" on a real two-node Ray cluster: a llama.cpp deployment (the embedded SmolLM2) through Ray Serve,
requesting the one logical GPU, stands in for vLLM; heavy calls reach it, light ones do not, and a replica killed
mid-run has its calls in flight retried on the group's next order."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
import json

import pytest
from conftest import first_user, is_agent_prompt, repl, turn

from rlm.config import SandboxConfig
from rlm.routing.spec import parse_models
from rlm.runlog import RunLog
from rlm.runner import run

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.local_model]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory):
    """Head (1 CPU, no GPU) + a node declaring one logical GPU; Serve with the SmolLM2 deployment needing it."""
    from ray.cluster_utils import Cluster

    from rlm.agents.cluster import ray_module, use_private_cluster
    from rlm.agents.serving import serve_models

    ray = ray_module()
    use_private_cluster(tmp_path_factory.mktemp("ray-home"))
    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    gpu_node = made.add_node(num_cpus=1, num_gpus=1)
    made.wait_for_nodes()
    ray.init(address=made.address, namespace="rlm", log_to_driver=False)
    port = _free_port()
    serve_table = {"port": port, "smol-gpu": {"num_gpus": 1, "num_cpus": 1, "max_ongoing_requests": 8}}
    _, options = parse_models({"serve": serve_table})
    serve_models(options)
    _wait_running()
    yield {"node": gpu_node.node_id, "serve": serve_table, "port": port}
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    made.shutdown()


def _wait_running(timeout: float = 240.0) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app = serve.status().applications.get("smol-gpu")
        if app is not None and app.status == "RUNNING":
            return
        time.sleep(0.5)
    raise TimeoutError("the Serve deployment did not come up")


def _stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/smol-gpu/v1/rlm/stats", timeout=30) as response:
        return json.load(response)


def _models(cluster, root, light, hosted, rules):
    return parse_models({
        "serve": cluster["serve"],
        "groups": {"root": {"deployments": [{"model": "openai/scripted", "api_base": root.base_url, "name": "root"}]},
                   "sub": {"deployments": [{"model": "openai/scripted", "api_base": light.base_url, "name": "light"}]},
                   "heavy": {"deployments": [{"serve": "smol-gpu", "order": 1},
                                             {"model": "openai/scripted", "api_base": hosted.base_url,
                                              "name": "hosted", "order": 2}]}},
        "routing": {"heavy": rules}})[0]


def _calls(config, run_id):
    with RunLog(config.runlog_path) as log:
        return log.lm_calls(run_id)


HEAVY_CODE = """
light = llm_query('small question')
big = llm_query('Summarize: ' + 'the quick brown fox jumps over the lazy dog. ' * 60)
batch = llm_query_batched(['a', 'b', 'c', 'd'])
asked = llm_query('Say hello.', model='heavy')
kid = rlm_query('CHILD', context='chunk')
print('light', light)
"""


def test_heavy_calls_by_every_rule_reach_the_gpu_node_and_light_calls_do_not(
        gpu_cluster, server_factory, make_config, text_file):
    def root_policy(messages):
        if is_agent_prompt(messages) and "Question: CHILD" not in first_user(messages):
            return repl(HEAVY_CODE) if turn(messages) == 0 else repl("FINAL('ok')")
        return "light reply"

    root = server_factory(policy=root_policy)
    light = server_factory(policy=lambda m: "light reply")
    hosted = server_factory(policy=lambda m: "hosted reply")
    spec = _models(gpu_cluster, root, light, hosted, {"prompt_tokens": 300, "batch_size": 3, "depth": 1})
    served_before = _stats(gpu_cluster["port"])["served"]
    config = make_config(root, models=spec, max_depth=1, max_iterations=2, max_completion_tokens=24,
                         lm_timeout_s=120, sandbox=SandboxConfig(cell_timeout_s=240))
    result = run("q", text_file("doc\n"), config)
    assert result.status == "ok", result.error
    calls = [c for c in _calls(config, result.run_id) if c.ok]
    heavy = [c for c in calls if c.model_group == "heavy"]
    reasons = {c.route_reason.split(" ~")[0].split(" 4 ")[0] for c in heavy}
    assert {"heavy: prompt", "heavy: batch of", "asked for heavy", "heavy: depth 1 >= 1"} <= reasons, reasons
    assert len(heavy) >= 1 + 4 + 1 + 2  # big, the batch, asked, the child's turns
    assert all(c.deployment == "smol-gpu" and c.node == gpu_cluster["node"] for c in heavy)
    others = [c for c in calls if c.model_group != "heavy"]
    assert {(c.model_group, c.deployment, c.node) for c in others} == {("root", "root", "127.0.0.1"),
                                                                    ("sub", "light", "127.0.0.1")}
    assert len(light.requests) == 1 and hosted.requests == []
    assert _stats(gpu_cluster["port"])["served"] - served_before == len(heavy)  # what the GPU node served


def test_rlm_models_status_shows_the_replica_its_node_and_queue(gpu_cluster, tmp_path, capsys):
    from rlm.cli import main

    path = tmp_path / "models.toml"
    path.write_text(f"[serve]\nport = {gpu_cluster['port']}\n[serve.smol-gpu]\nnum_gpus = 1\n")
    assert main(["models", "status", "--models", str(path), "--ray-address", "auto", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["deployment"], row["status"]) == ("smol-gpu", "HEALTHY")
    assert [(r["state"], r["node_id"]) for r in row["replicas"]] == [("RUNNING", gpu_cluster["node"])]
    assert row["stats"][0]["node"] == gpu_cluster["node"] and row["stats"][0]["ongoing"] == 0
    assert main(["models", "status", "--models", str(path), "--ray-address", "auto"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("smol-gpu  HEALTHY  replicas 1/1") and f"node {gpu_cluster['node']}" in text


def test_a_replica_killed_mid_run_has_its_calls_retried_on_the_next_order_counted_once(
        gpu_cluster, server_factory, make_config, text_file):
    import ray

    from rlm.agents.serving import serve_status

    def root_policy(messages):
        if turn(messages) == 0:
            return repl("out = llm_query_batched([f'Count from {i} to {i + 30}.' for i in range(8)])\n"
                        "print(sum(1 for o in out if isinstance(o, str) and o))")
        return repl("FINAL('answered')")

    root = server_factory(policy=root_policy)
    hosted = server_factory(policy=lambda m: "hosted reply")
    spec = _models(gpu_cluster, root, server_factory(policy=lambda m: "light"), hosted, {"batch_size": 3})
    config = make_config(root, models=spec, max_concurrency=4, max_completion_tokens=40, lm_retries=3,
                         lm_timeout_s=180)
    killed = threading.Event()

    def kill_when_busy() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _stats(gpu_cluster["port"])["ongoing"] < 2:
            time.sleep(0.05)
        replica = serve_status()[0]["replicas"][0]["actor_name"]
        ray.kill(ray.get_actor(replica, namespace="serve"), no_restart=False)
        killed.set()

    killer = threading.Thread(target=kill_when_busy, daemon=True)
    killer.start()
    result = run("q", text_file("doc\n"), config)
    killer.join(timeout=150)
    assert killed.is_set() and result.status == "ok", result.error
    assert "8" in root.requests[-1].messages[-1]["content"]  # every item answered
    calls = _calls(config, result.run_id)
    items = [c for c in calls if c.purpose == "llm_query"]
    assert len(items) == 8 and all(c.ok for c in items)
    retried = [c for c in items if c.route_reason.endswith("smol-gpu failed: retried on hosted")]
    assert retried, [c.route_reason for c in items]
    assert len(hosted.requests) == sum(1 for c in items if c.deployment == "hosted")
    assert result.usage.llm_calls == len(calls) == 2 + 8  # each call counted once
    assert result.usage.input_tokens == sum(c.input_tokens for c in calls)
    _wait_running()
