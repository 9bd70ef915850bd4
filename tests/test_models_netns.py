"""Two "machines" on one: the head and a GPU node in network namespaces of their own, joined by a veth pair.

Children of a run land on both nodes, their contexts crossing the link through the object store; heavy
calls reach the llama.cpp deployment on the GPU node through Serve's proxy, light calls do not; once the
GPU node is killed, heavy calls are answered by the group's next order. See tests/netns_cluster.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from netns_cluster import NetnsCluster, unavailable

from rlm.agents.cluster import auth_token_path

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.local_model]

_WHY_NOT = unavailable()


@pytest.mark.skipif(_WHY_NOT is not None, reason=f"network namespaces: {_WHY_NOT}")
def test_a_gpu_node_in_its_own_network_namespace(tmp_path_factory, rlm_home):
    temp = Path(f"/tmp/rlmns{__import__('os').getpid()}")  # short: Ray's socket paths live under it
    cluster = NetnsCluster(temp, auth_token_path(tmp_path_factory.mktemp("ray-home")))
    doc = tmp_path_factory.mktemp("doc") / "doc.txt"
    doc.write_text("the document\n")
    driver = None
    try:
        cluster.up()
        args = {"address": cluster.address, "host": cluster.ip_head, "serve_port": 8765, "home": str(rlm_home),
                "doc": str(doc)}
        driver = subprocess.Popen([*cluster.exec_args(), sys.executable, str(Path(__file__).parent / "netns_driver.py"),
                                   json.dumps(args)], env=cluster.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        assert driver.stdout is not None and driver.stdin is not None
        nodes, first, kill = (_result(driver) for _ in range(3))
        assert kill == "KILL"
        cluster.kill_gpu_node()
        driver.stdin.write("go\n")
        driver.stdin.flush()
        second = _result(driver)
        driver.wait(timeout=120)
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        cluster.down()
    assert first["status"] == "ok", first
    children = [a for a in first["agents"] if a[1] == 1]
    assert len(children) == 4 and all(a[3] == "ok" for a in children)
    assert {a[2] for a in children} == {nodes["gpu_node"], nodes["head_node"]}  # both machines ran children
    # each child answered from its own 100 KB context: those on the other node got it over the link
    assert first["answer"] == "chunk-0 chunk-1 chunk-2 chunk-3"
    heavy = [c for c in first["calls"] if c[1] == "heavy"]
    assert [(c[2], c[3], c[4]) for c in heavy] == [("smol-gpu", nodes["gpu_node"], True)]
    light = [c for c in first["calls"] if c[0] == "llm_query" and c[1] != "heavy"]
    assert light and all(c[2] != "smol-gpu" and c[3] == cluster.ip_head for c in light)
    assert second["status"] == "ok", second
    heavy = [c for c in second["calls"] if c[1] == "heavy"]
    assert [(c[2], c[4]) for c in heavy] == [("hosted", True)] and second["hosted_requests"] == 1
    # the dead replica's call waited at Serve's proxy until its timeout, then went to the next order
    assert heavy[0][5] == "asked for heavy; smol-gpu failed: retried on hosted"


def _result(driver: subprocess.Popen[str]) -> object:
    """The driver's next ``RESULT`` line (Ray prints lines of its own to stdout)."""
    assert driver.stdout is not None
    for line in driver.stdout:
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise AssertionError(f"the driver ended: {driver.stderr.read() if driver.stderr else ''}"[-3000:])
