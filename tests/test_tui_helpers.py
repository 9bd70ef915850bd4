"""Helpers for the TUI tests: drive an app headless and wait for conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from textual.pilot import Pilot

from rlm.events import AgentFinished, AgentStarted, CellExecuted, IterationFinished, LMCalled, RunFinished, RunStarted

SIZE = (120, 36)


def drive(app: Any, scenario: Callable[[Pilot], Awaitable[None]], size: tuple[int, int] = SIZE) -> None:
    """Run ``app`` headless and play ``scenario`` against it (no async test plugin needed)."""

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await scenario(pilot)

    asyncio.run(main())


async def wait_for(pilot: Pilot, predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> float:
    """Pause the pilot until ``predicate()`` holds; returns the seconds waited."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await pilot.pause(0.05)
    return time.monotonic() - started


async def ask(pilot: Pilot, question: str) -> None:
    """Type ``question`` into the (focused) question box and press Enter."""
    await pilot.press(*question)
    await pilot.press("enter")


RUN_ID = "20260101-120000-abc123"
T0 = 1_767_268_800.0  # 2026-01-01 12:00:00 UTC


def synthetic_run(run_id: str = RUN_ID, children: int = 2, t0: float = T0) -> list:
    """The events of a small finished run: a root that fans out to ``children`` sub-agents."""
    events: list = [RunStarted(run_id=run_id, ts=t0, question="Which ships called at the harbour?",
                               model="openai/gpt-4.1-mini", sub_model="openai/gpt-4.1-nano")]
    ts = t0

    def tick() -> float:
        nonlocal ts
        ts += 0.5
        return ts

    events.append(AgentStarted(run_id=run_id, agent_id="a0", ts=tick(), parent_id=None, depth=0,
                               model="openai/gpt-4.1-mini", prompt="Which ships called at the harbour?",
                               node_id="node-1"))
    events.append(LMCalled(run_id=run_id, agent_id="a0", ts=tick(), call_id="c0", model="openai/gpt-4.1-mini",
                           role="root", purpose="iteration", input_tokens=1800, output_tokens=90, cost_usd=0.0009,
                           latency_s=0.4))
    for n in range(children):
        child = f"a{n + 1}"
        events.append(AgentStarted(run_id=run_id, agent_id=child, ts=tick(), parent_id="a0", depth=1,
                                   model="openai/gpt-4.1-nano", prompt=f"List the ships in chunk {n}",
                                   node_id=f"node-{n % 2 + 1}"))
        events.append(LMCalled(run_id=run_id, agent_id=child, ts=tick(), call_id=f"c{child}",
                               model="openai/gpt-4.1-nano", role="sub", purpose="iteration", input_tokens=900,
                               output_tokens=40, cost_usd=0.0001, latency_s=0.2))
        events.append(CellExecuted(run_id=run_id, agent_id=child, ts=tick(), iteration=1, index=0,
                                   code="ships = [l for l in context.splitlines() if 'ship' in l]\n"
                                        "FINAL(', '.join(ships[:3]))", duration_s=0.01, final=True))
        events.append(IterationFinished(run_id=run_id, agent_id=child, ts=tick(), iteration=1, reply="...",
                                        n_cells=1, duration_s=0.3))
        events.append(AgentFinished(run_id=run_id, agent_id=child, ts=tick(), status="ok",
                                    answer=f"Aurora, Brig {n}", iterations=1, input_tokens=900, output_tokens=40,
                                    llm_calls=1, duration_s=1.5))
    events.append(CellExecuted(run_id=run_id, agent_id="a0", ts=tick(), iteration=1, index=0,
                               code="chunks = [context[i:i + 50_000] for i in range(0, len(context), 50_000)]\n"
                                    "answers = rlm_query_batched([f'List the ships in chunk {i}' "
                                    "for i in range(len(chunks))], chunks)\nprint(answers)",
                               stdout="[{'value': 'Aurora, Brig 0'}, {'value': 'Aurora, Brig 1'}]", duration_s=3.1))
    events.append(IterationFinished(run_id=run_id, agent_id="a0", ts=tick(), iteration=1, reply="...", n_cells=1,
                                    duration_s=3.6))
    events.append(LMCalled(run_id=run_id, agent_id="a0", ts=tick(), call_id="c1", model="openai/gpt-4.1-mini",
                           role="root", purpose="iteration", input_tokens=2100, output_tokens=30, cost_usd=0.0009,
                           latency_s=0.3))
    events.append(CellExecuted(run_id=run_id, agent_id="a0", ts=tick(), iteration=2, index=0,
                               code="FINAL('**Aurora** and the brigs ' + ', '.join(a['value'] for a in answers))",
                               duration_s=0.01, final=True))
    events.append(IterationFinished(run_id=run_id, agent_id="a0", ts=tick(), iteration=2, reply="...", n_cells=1,
                                    duration_s=0.4))
    answer = "**Aurora** and the brigs Aurora, Brig 0, Aurora, Brig 1"
    events.append(AgentFinished(run_id=run_id, agent_id="a0", ts=tick(), status="ok", answer=answer, iterations=2,
                                input_tokens=3900, output_tokens=120, llm_calls=2, duration_s=5.0))
    total_in = 3900 + 900 * children
    total_out = 120 + 40 * children
    events.append(RunFinished(run_id=run_id, ts=tick(), status="ok", answer=answer, input_tokens=total_in,
                              output_tokens=total_out, llm_calls=2 + children, cost_usd=0.0018 + 0.0001 * children,
                              iterations=2, depth_reached=1, duration_s=ts - t0))
    return events
