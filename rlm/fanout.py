"""``llm_query_batched`` and ``rlm_query_batched`` spread over several processes.

A process runs its agents and LM calls under one GIL, so a big batch is
CPU-bound in that process long before the provider is the limit. When the run
has other processes that can work for it (on Ray, the other agent hosts:
:meth:`rlm.services.Placement.fanout_helpers`), a batch is cut into contiguous
shards: one runs here, each other on a helper, each with its share of
``max_concurrency`` (so the run never has more calls or children in flight than
the user allowed), and the first shard takes the remainder of the last wave
(:func:`_sizes`). Results come back in batch order. Two kinds of batch:

* ``"llm"`` — sub-calls (items are prompts). Every call still goes through the
  LM client, the tree-wide budget and the event stream, under the calling
  agent's id; a helper reports the tokens it spent so the caller's own usage
  stays whole. Only batches of :data:`MIN_SHARD` prompts or more are split.
* ``"rlm"`` — child agents (items are ``(prompt, context, child_id)``). A shard's
  children run in the helper's process, so a batch of 200 children costs one
  message per helper instead of one per child.

A helper that fails before it returns anything (its process died) has its shard
run here instead; a helper of child agents reports the children it finished and
retries the others itself (see ``rlm.agents.host``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from rlm.calls import CallMeter, Totals
from rlm.services import AgentLike, FanoutHelper, ShardResult

__all__ = ["MIN_SHARD", "ShardResult", "FanoutHelper", "BatchOwner", "plan", "run_sharded", "serve_shard"]

log = logging.getLogger(__name__)

#: Below this many prompts per shard, shipping a shard costs more than it saves.
MIN_SHARD = 32

Items = list[dict[str, str]]


class BatchOwner(AgentLike, Protocol):
    """The agent a batch belongs to: its calls are counted on its meter."""

    calls: CallMeter


class ShardServer(Protocol):
    """A stand-in of the calling agent on a helper's process (see :func:`serve_shard`)."""

    calls: CallMeter

    def llm_batch(self, prompts: list[str], model: str | None, concurrency: int) -> Items: ...


def plan(n: int, concurrency: int, helpers: int, min_shard: int = MIN_SHARD) -> list[tuple[int, int, int]]:
    """Cut ``n`` prompts into ``(start, stop, concurrency)`` shards; the first one runs locally.

    At most ``helpers + 1`` shards, none smaller than ``min_shard`` (so small
    batches stay in one piece) and none with fewer than one call in flight; the
    shards' concurrencies add up to at most ``concurrency``. Sizes follow
    :func:`_sizes`.
    """
    if n <= 0:
        return []
    k = max(1, min(helpers + 1, n // max(1, min_shard), concurrency))
    gates = [concurrency * (i + 1) // k - concurrency * i // k for i in range(k)]
    bounds = [0]
    for size in _sizes(n, gates, min_shard):
        bounds.append(bounds[-1] + size)
    return [(bounds[i], bounds[i + 1], gates[i]) for i in range(k)]


def _sizes(n: int, gates: list[int], min_shard: int) -> list[int]:
    """How many items each shard gets, in *waves* (one wave: as many items as the shard's gate).

    The batch needs ``W = ceil(n / concurrency)`` waves. The other shards start
    later than the first (a Ray call away: 15-50 ms on a busy host) and each of
    their items costs a little more, so each gets ``W - 1`` full waves and the
    first takes the rest, up to its own ``W`` waves; any remainder goes back to
    the others, one partial wave each. No shard needs more than ``W`` waves, and
    the late starters finish with the first instead of after it (200 children at
    16 in flight: 104 here and 96 there, not 100 and 100 — where both ran 13 waves).
    With a single wave, or when a shard would fall under ``min_shard``, the
    items are split evenly.
    """
    k = len(gates)
    even = [n * (i + 1) // k - n * i // k for i in range(k)]
    waves = -(-n // sum(gates))
    if k == 1 or waves < 2:
        return even
    sizes = [0] + [gate * (waves - 1) for gate in gates[1:]]
    sizes[0] = n - sum(sizes[1:])
    for i in range(1, k):
        spill = min(sizes[0] - gates[0] * waves, gates[i])
        if spill <= 0:
            break
        sizes[0] -= spill
        sizes[i] += spill
    return sizes if min(sizes) >= min_shard else even


def run_sharded(agent: BatchOwner, kind: str, items: list[Any], model: str | None,
                local: Callable[[list[Any], int], Items], min_shard: int = MIN_SHARD) -> Items:
    """Run a ``kind`` batch over this process (``local(items, concurrency)``) and the run's helpers."""
    helpers: list[FanoutHelper] = list(agent.services.placement.fanout_helpers())
    shards = plan(len(items), agent.config.max_concurrency, len(helpers), min_shard)
    if len(shards) <= 1:
        return local(items, agent.config.max_concurrency)
    waiters: list[tuple[tuple[int, int, int], Callable[[], ShardResult] | None]] = []
    for helper, shard in zip(helpers, shards[1:], strict=False):  # plan() may leave helpers idle
        start, stop, gate = shard
        try:
            waiters.append((shard, helper(agent, kind, items[start:stop], model, gate)))
        except Exception as exc:  # noqa: BLE001 - a helper that cannot start: its shard runs here
            log.warning("fan-out helper could not start (%s); running its shard here", exc)
            waiters.append((shard, None))
    start, stop, gate = shards[0]
    results: Items = local(items[start:stop], gate)
    for (start, stop, gate), wait in waiters:
        shard_result = None
        if wait is not None:
            try:
                shard_result = wait()
            except Exception as exc:  # noqa: BLE001 - the helper died: redo its shard here
                log.warning("fan-out helper failed (%s); running its shard here", exc)
        if shard_result is None:
            results.extend(local(items[start:stop], gate))
            continue
        agent.calls.add(Totals(shard_result.input_tokens, shard_result.output_tokens, shard_result.llm_calls))
        results.extend(shard_result.items)
    return results


def serve_shard(stand_in: ShardServer, prompts: list[str], model: str | None, concurrency: int) -> ShardResult:
    """A helper's side of an ``"llm"`` shard: on this process's LM loop, as calls of the caller's ``stand_in``."""
    items = stand_in.llm_batch(prompts, model, concurrency)
    totals = stand_in.calls.totals()
    return ShardResult(items=items, input_tokens=totals.input_tokens, output_tokens=totals.output_tokens,
                       llm_calls=totals.llm_calls)

