"""Runs on a real two-node Ray cluster (ray.cluster_utils.Cluster on this machine), real sandboxes, real DuckDB."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from conftest import first_user, is_agent_prompt, ordered_batch_policy, repl, turn

from rlm.config import SandboxConfig
from rlm.events import AgentFinished, AgentStarted, EventBus
from rlm.runlog import RunLog
from rlm.runner import run

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two Ray nodes on this machine (loopback, token auth as rlm sets up its own); one agent host per node."""
    from ray.cluster_utils import Cluster

    from rlm.agents.cluster import ray_module, use_private_cluster
    from rlm.agents.session import RaySession

    ray = ray_module()
    use_private_cluster(tmp_path_factory.mktemp("ray-home"))
    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    made.add_node(num_cpus=1)
    made.wait_for_nodes()
    yield made
    RaySession.shutdown_current()
    ray.shutdown()
    made.shutdown()


@pytest.fixture
def ray_config(cluster, make_config):
    def make(server, **overrides):
        values = dict(executor="ray", ray_address=cluster.address, ray_hosts_per_node=1, sandbox_pool_size=2,
                      sandbox=SandboxConfig(cell_timeout_s=60))
        values.update(overrides)
        return make_config(server, **values)

    return make


def fanout_policy(messages):
    """Root: 6 children on their own chunks plus 3 sub-calls; each child proves it saw its own chunk."""
    if not is_agent_prompt(messages):
        return "sub:" + first_user(messages)
    task = first_user(messages)
    if "Question: CHILD" in task:
        return repl("FINAL('child ' + context.upper() + ' depth-ok')")
    if turn(messages) == 0:
        return repl("kids = rlm_query_batched(['CHILD'] * 6, [f'chunk-{i}' for i in range(6)])\n"
                    "subs = llm_query_batched(['p0', 'p1', 'p2'])\nprint(len(kids), len(subs))")
    return repl("FINAL(' | '.join(kids) + ' ; ' + ','.join(subs))")


def agents_of(config, run_id):
    """The run's agents from the run log, by agent id."""
    with RunLog(config.runlog_path) as log:
        return sorted(log.agents(run_id), key=lambda agent: agent.agent_id)


def test_children_run_on_both_nodes_with_their_own_chunks(server_factory, ray_config, text_file, cluster):
    server = server_factory(policy=fanout_policy)
    config = ray_config(server)
    result = run("ROOT", text_file("the root document\n"), config)
    assert result.status == "ok", result.error
    kids, subs = result.answer.split(" ; ")
    assert kids.split(" | ") == [f"child CHUNK-{i} depth-ok" for i in range(6)]
    assert subs == "sub:p0,sub:p1,sub:p2"
    assert result.usage.llm_calls == 2 + 6 + 3 == len(server.requests)
    children = [agent for agent in agents_of(config, result.run_id) if agent.depth == 1]
    assert len(children) == 6 and all(agent.status == "ok" for agent in children)
    cluster_nodes = {node.node_id for node in cluster.list_all_nodes()}
    child_nodes = {agent.node_id for agent in children}
    assert child_nodes == cluster_nodes  # both nodes ran children
    assert result.depth_reached == 1
    # Hosts are asyncio actors whose agents run on threads made as needed: not thousands of idle
    # threads started up front (a threaded actor with max_concurrency=4096 had ~4,100).
    from rlm.agents.session import RaySession

    session = RaySession.current()
    assert session is not None
    for info in session.host_info:
        threads = len(os.listdir(f"/proc/{info['pid']}/task"))
        assert threads < 300, f"agent host {info['index']} runs {threads} threads"


def test_big_and_small_chunks_reach_children_on_both_nodes(server_factory, ray_config, text_file, cluster):
    """Chunks over INLINE_MAX_CHARS go through files and the object store; small ones inside the spec."""
    from rlm.agents.context import INLINE_MAX_CHARS

    big = INLINE_MAX_CHARS + 1000

    def policy(messages):
        if not is_agent_prompt(messages):
            return "unused"
        if "Question: CHILD" in first_user(messages):
            return repl("FINAL(f'{len(context)}:{context[:4]}:{context[-4:]}')")
        if turn(messages) == 0:
            return repl(f"kids = rlm_query_batched(['CHILD'] * 6, [f'{{i:04d}}' + 'x' * ({big} if i % 2 else 4) "
                        "+ f'{i:04d}' for i in range(6)])\nprint(kids)")
        return repl("FINAL(' | '.join(kids))")

    server = server_factory(policy=policy)
    config = ray_config(server)
    result = run("ROOT", text_file("doc\n"), config)
    assert result.status == "ok", result.error
    assert result.answer.split(" | ") == [f"{(big if i % 2 else 4) + 8}:{i:04d}:{i:04d}" for i in range(6)]
    children = [agent for agent in agents_of(config, result.run_id) if agent.depth == 1]
    assert {agent.node_id for agent in children} == {node.node_id for node in cluster.list_all_nodes()}


def test_the_call_cap_holds_across_nodes(server_factory, ray_config, text_file):
    """Children on both nodes race for 12 calls: never more are sent, and the run says why it stopped."""

    def policy(messages):
        if not is_agent_prompt(messages):
            return "x"
        if "Question: CHILD" in first_user(messages):
            return repl("r = llm_query_batched(['q'] * 10)\nprint(r)")
        return repl("kids = rlm_query_batched(['CHILD'] * 4, ['a', 'b', 'c', 'd'])\nprint(kids)")

    server = server_factory(policy=policy)
    result = run("ROOT", text_file("doc\n"), ray_config(server, max_llm_calls=12))
    assert result.status == "max_llm_calls"
    assert len(server.requests) <= 12
    assert result.usage.llm_calls == len(server.requests)


def slow_child_policy(messages):
    if not is_agent_prompt(messages):
        return "unused"
    task = first_user(messages)
    if "Question: CHILD" in task:
        return repl("import time\ntime.sleep(1.5)\nFINAL('kid ' + context)")
    if turn(messages) == 0:
        return repl("kids = rlm_query_batched(['CHILD', 'CHILD'], ['left', 'right'])\nprint(kids)")
    return repl("FINAL(' + '.join(kids))")


def test_a_killed_agent_host_is_retried_and_the_run_completes(server_factory, ray_config, text_file):
    from rlm.agents.cluster import ray_module
    from rlm.agents.session import RaySession

    ray = ray_module()
    server = server_factory(policy=slow_child_policy)
    config = ray_config(server, agent_retries=2)
    bus = EventBus()
    killed: dict = {}
    root_ids: list[str] = []
    child_ids: list[str] = []

    def watch(event):
        if isinstance(event, AgentStarted) and event.depth == 0:
            root_ids.append(event.agent_id)
        if isinstance(event, AgentStarted) and event.depth == 1:
            child_ids.append(event.agent_id)
            if len(child_ids) == 1:
                threading.Thread(target=kill, daemon=True).start()

    def kill():
        """SIGKILL the process of a host that runs a child but not the root."""
        session = RaySession.current()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not killed:
            for host in session.hosts:
                running = set(ray.get(host.running_agents.remote()))
                victims = running & set(child_ids)
                if victims and not running & set(root_ids):
                    killed.update(agent=victims.pop(), pid=ray.get(host.where.remote())["pid"])
                    os.kill(killed["pid"], signal.SIGKILL)
                    return
            time.sleep(0.05)

    bus.subscribe(watch)
    result = run("ROOT", text_file("doc\n"), config, bus=bus)
    assert "pid" in killed, "the test could not find a child's host to kill"
    assert result.status == "ok", result.error
    assert result.answer == "kid left + kid right"
    agents = agents_of(config, result.run_id)
    retried = [agent for agent in agents if agent.status == "retried"]
    assert [agent.agent_id for agent in retried] == [killed["agent"]]
    assert "died" in retried[0].error
    assert any(agent.agent_id == killed["agent"] + "r1" and agent.status == "ok" for agent in agents)


def test_events_and_answers_when_a_child_fails_without_retry_budget(server_factory, ray_config, text_file):
    """A child whose code errors is a model mistake, not a lost host: no retry, the parent sees its answer."""

    def policy(messages):
        if not is_agent_prompt(messages):
            return "unused"
        if "Question: CHILD" in first_user(messages):
            if turn(messages) == 0:
                return repl("1 / 0")
            return repl("FINAL('recovered ' + context)")
        if turn(messages) == 0:
            return repl("kid = rlm_query('CHILD', context='c')")
        return repl("FINAL(kid)")

    server = server_factory(policy=policy)
    bus = EventBus()
    finished = []
    bus.subscribe(lambda e: finished.append(e) if isinstance(e, AgentFinished) else None)
    result = run("ROOT", text_file("doc\n"), ray_config(server), bus=bus)
    assert result.answer == "recovered c"
    assert [e.status for e in finished] == ["ok", "ok"]


def test_a_big_llm_fanout_is_shared_with_the_other_host_and_counted_as_the_callers(
        server_factory, ray_config, text_file):
    from rlm.agents.session import RaySession

    server = server_factory(policy=ordered_batch_policy(100))
    config = ray_config(server, max_concurrency=8)
    hosts = RaySession.get(config).hosts
    import ray

    before = sum(info["shards_served"] for info in ray.get([h.where.remote() for h in hosts]))
    result = run("ROOT", text_file("the root document\n"), config)
    assert result.status == "ok", result.error
    assert result.answer == "100 in order"
    after = sum(info["shards_served"] for info in ray.get([h.where.remote() for h in hosts]))
    assert after == before + 1  # one shard went to the other host
    assert server.max_concurrency() <= 8  # the shards split the batch's concurrency, not add to it
    assert result.usage.llm_calls == 102
    with RunLog(config.runlog_path) as log:
        (root_calls,) = [agent.llm_calls for agent in log.agents(result.run_id) if agent.parent_id is None]
    assert root_calls == 102  # the other host's 50 calls are the root's own


def test_identical_sub_calls_of_a_run_on_ray_are_sent_once(server_factory, ray_config, text_file, cluster):
    def policy(messages):
        if not is_agent_prompt(messages):
            return f"read:{messages[-1]['content']}"
        if turn(messages) == 0:
            return repl("a = llm_query('the same')\nb = llm_query('the same')\nprint(a == b)")
        return repl("FINAL(a)")

    server = server_factory(policy=policy)
    result = run("q", text_file("doc\n"), ray_config(server, temperature=0.0))
    assert result.status == "ok" and result.answer == "read:the same", result.error
    assert len(server.requests) == 3  # two root turns and one sub-call: its repeat was answered on the host
    assert result.usage.cache_hits == 1
