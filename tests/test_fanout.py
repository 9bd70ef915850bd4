"""Spreading one big ``llm_query_batched`` over several processes (rlm/fanout.py).

The plan is checked directly; the sharded path runs inside real runs (scripted
server, real sandbox) with helpers plugged in through an executor's placement
(the seam the Ray executor uses): one that serves its shard from another thread
as a stand-in of the caller (what an agent host does on Ray; tests/test_ray.py
covers the Ray one), and one whose process "died", whose shard must be redone
locally.
"""

from __future__ import annotations

import threading

import pytest
from conftest import ordered_batch_policy

from rlm.agent import Agent
from rlm.executors import LocalExecutor
from rlm.fanout import MIN_SHARD, ShardResult, plan, serve_shard
from rlm.runner import run
from rlm.services import LocalPlacement


@pytest.mark.parametrize("n,concurrency,helpers", [(1, 16, 3), (40, 16, 3), (64, 16, 1), (1000, 64, 1),
                                                    (1000, 64, 7), (1000, 3, 7), (97, 64, 2), (5000, 64, 0)])
def test_the_plan_covers_every_prompt_once_within_the_concurrency(n, concurrency, helpers):
    shards = plan(n, concurrency, helpers)
    assert [start for start, _, _ in shards] == [0] + [stop for _, stop, _ in shards[:-1]]  # contiguous, in order
    assert shards[-1][1] == n
    assert 1 <= len(shards) <= helpers + 1
    assert all(gate >= 1 for _, _, gate in shards) and sum(gate for _, _, gate in shards) <= concurrency
    if len(shards) > 1:
        assert all(stop - start >= MIN_SHARD for start, stop, _ in shards)


@pytest.mark.parametrize("n,concurrency,helpers", [(200, 16, 1), (1000, 64, 1), (1000, 64, 7), (97, 8, 2),
                                                    (33, 16, 1), (5000, 64, 3), (250, 16, 3)])
def test_no_shard_takes_more_waves_than_the_batch_needs(n, concurrency, helpers):
    shards = plan(n, concurrency, helpers, min_shard=1)
    waves = -(-n // sum(gate for _, _, gate in shards))
    assert max(-(-(stop - start) // gate) for start, stop, gate in shards) == waves
    assert sum(stop - start for start, stop, _ in shards) == n


def test_the_local_shard_takes_the_remainder_of_the_last_wave():
    # 200 children at 16 in flight need 13 waves: the remote shard gets 12 full waves of 8,
    # the local one (it starts first) the rest; an even split would give both 13 waves.
    assert plan(200, 16, 1, min_shard=1) == [(0, 104, 8), (104, 200, 8)]
    # The remainder that does not fit the local shard's waves goes back one partial wave each.
    assert [stop - start for start, stop, _ in plan(250, 16, 3, min_shard=1)] == [64, 64, 62, 60]
    # One wave (or a shard that would be too small): an even split.
    assert plan(16, 16, 1, min_shard=1) == [(0, 8, 8), (8, 16, 8)]
    assert plan(40, 16, 1, min_shard=17) == [(0, 20, 8), (20, 40, 8)]


def test_small_batches_stay_in_one_piece():
    assert plan(2 * MIN_SHARD - 1, 64, 5) == [(0, 2 * MIN_SHARD - 1, 64)]
    assert plan(0, 64, 5) == []


class HelperPlacement(LocalPlacement):
    """Agents in this process, with fan-out helpers: threads, or ones that fail."""

    def __init__(self, kind: str, count: int) -> None:
        super().__init__()
        self.kind, self.count, self.served = kind, count, []

    def fanout_helpers(self):
        return [self.helper for _ in range(self.count)]

    def helper(self, agent, kind, prompts, model, concurrency):
        assert kind == "llm"
        if self.kind == "refuses":
            raise ConnectionError("helper host unreachable")
        box: dict[str, ShardResult | BaseException] = {}

        def work():
            try:
                if self.kind == "dies":
                    raise RuntimeError("the helper's process died")
                stand_in = Agent(agent.services, prompt="", payload=None, depth=agent.depth,  # type: ignore[arg-type]  # no REPL: no context
                                 parent_id=agent.parent_id, agent_id=agent.agent_id)
                box["result"] = serve_shard(stand_in.subcalls, prompts, model, concurrency)
                self.served.append(len(prompts))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiter
                box["result"] = exc

        thread = threading.Thread(target=work)
        thread.start()

        def wait():
            thread.join()
            if isinstance(box["result"], BaseException):
                raise box["result"]
            return box["result"]

        return wait


class HelperExecutor(LocalExecutor):
    def __init__(self, placement: HelperPlacement) -> None:
        super().__init__()
        self._placement = placement


@pytest.mark.parametrize("kind", ["serves", "dies", "refuses"])
def test_a_sharded_batch_keeps_order_usage_and_the_concurrency_cap(kind, server_factory, make_config, text_file):
    helpers = HelperPlacement(kind, count=3)
    server = server_factory(policy=ordered_batch_policy(200), latency_ms=5)
    config = make_config(server, max_concurrency=8, max_llm_calls=1000)
    result = run("ROOT", text_file("doc\n"), config, executor=HelperExecutor(helpers))
    assert result.status == "ok", result.error
    assert result.answer == "200 in order"
    assert result.usage.llm_calls == 202  # each prompt called once, even when a helper failed
    assert len(server.requests) == 202
    assert server.max_concurrency() <= 8
    assert helpers.served == ([50, 50, 50] if kind == "serves" else [])
    from rlm.runlog import RunLog

    with RunLog(config.runlog_path) as log:
        (root_calls,) = [agent.llm_calls for agent in log.agents(result.run_id) if agent.parent_id is None]
    assert root_calls == 202
