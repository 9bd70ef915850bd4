"""The agent host: a light Ray actor (``num_cpus=0``) that runs agents of any run, one thread each.

Starting a Ray actor costs a process and a second or more of imports, so agents
are not one actor each: every node has a few long-lived hosts, and an agent is
a call to :meth:`AgentHost.run_agent`. Each agent still owns its own sandbox
worker on the host's node (taken from the host's pre-started pool when its
context is small). Per run, a host keeps the run's services: the shared LM
client, a :class:`~rlm.agents.ledger.LeasedBudget`, the event forwarder, the
spawner for children, and relays for extension host functions.

The host is an asyncio actor. An agent blocks (sandbox pipes, model calls, Ray
calls to other hosts), so each agent call runs on a thread of the host's own
pool, which grows with the agents actually running and reuses idle threads. (A
threaded Ray actor would start one thread per allowed concurrent call up front:
4,096 idle threads per host, whose futex waits slowed every lock hand-off of the
process, the GIL's included.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rlm.agents import context as contexts
from rlm.agents.cluster import node_id
from rlm.agents.ledger import LeasedBudget
from rlm.sandbox.forkserver import ForkServerPool
from rlm.agents.spawn import Spawner, actor_died_errors
from rlm.agents.specs import AgentSpec, RunSpec

from rlm.agent import Agent
from rlm.config import RLMConfig
from rlm.errors import HostCallError
from rlm.events import AgentStarted, Event
from rlm.fanout import serve_shard
from rlm.lm import LMClient
from rlm.records import CallRecords
from rlm.results import AgentResult
from rlm.services import AgentLike, FanoutHelper, HostFunction, LocalPlacement, RunServices, ShardResult
from rlm.subcalls import context_payload

FLUSH_INTERVAL_S = 0.1
#: A remote shard of children reports finished children at most this often (the last one at once).
REPORT_EVERY_S = 0.1
#: Threads an agent host may run agents (and shards, warm-ups...) on; created as needed, idle ones reused.
MAX_HOST_THREADS = 4096

T = TypeVar("T")


class EventForwarder:
    """Buffers this process's events and pushes them to the hub in order, in batches.

    A child agent's events must reach the driver before its parent's later ones
    (the tree attributes a child to the parent iteration open when it started).
    Rather than a hub round trip at the end of every agent, :meth:`take` removes
    the finished agent's still-buffered events — and those of its descendants —
    so that they travel back with its result and the parent's host emits them in
    order; whatever of them was pushed earlier has reached the hub by then.
    """

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self._buffer: list[Event] = []
        # (run id, agent id) -> (run id, parent id), for agents started here (ids repeat across runs)
        self._parents: dict[tuple[str, str | None], tuple[str, str | None]] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        threading.Thread(target=self._loop, name="rlm-events", daemon=True).start()

    def emit(self, event: Event) -> None:
        with self._lock:
            self._buffer.append(event)
            if isinstance(event, AgentStarted):
                self._parents[(event.run_id, event.agent_id)] = (event.run_id, event.parent_id)

    def take(self, run_id: str, agent_id: str) -> list[Event]:
        """Remove and return (in order) the buffered events of ``agent_id`` and of its descendants."""
        inside = self._subtree(run_id, agent_id)
        # Holding the send lock: a batch being pushed has arrived.
        with self._send_lock, self._lock:
            mine: list[Event] = []
            rest: list[Event] = []
            for event in self._buffer:
                (mine if inside((event.run_id, event.agent_id)) else rest).append(event)
            self._buffer = rest
            self._drop_subtree(inside)
        return mine

    def forget(self, run_id: str, agent_id: str) -> None:
        """Stop tracking ``agent_id`` and its descendants (their events stay queued)."""
        inside = self._subtree(run_id, agent_id)
        with self._lock:
            self._drop_subtree(inside)

    def _drop_subtree(self, inside: Any) -> None:
        for agent in [a for a in self._parents if inside(a)]:
            del self._parents[agent]

    def _subtree(self, run_id: str, agent_id: str) -> Any:
        """``inside(agent)``: is ``agent`` ``agent_id`` or one of its descendants? (call under the lock)"""
        parents = self._parents
        memo: dict[tuple[str, str | None] | None, bool] = {(run_id, agent_id): True, None: False}

        def inside(agent: tuple[str, str | None] | None) -> bool:
            chain = []
            while agent is not None and agent not in memo:  # None: outside (memo says so)
                chain.append(agent)
                agent = parents.get(agent)  # an agent not started here: None, outside
            answer = memo[agent]
            for link in chain:
                memo[link] = answer
            return answer

        return inside

    def flush(self) -> None:
        import ray

        with self._send_lock:  # one batch at a time keeps the order
            with self._lock:
                batch, self._buffer = self._buffer, []
            if batch:
                ray.get(self.hub.push_events.remote(batch))

    def _loop(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL_S)
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the hub is gone: the session is ending
                time.sleep(1.0)


@dataclass
class _RunState:
    services: RunServices
    budget: LeasedBudget
    workdir: Path
    sandboxes: LocalPlacement  # the run's zygote on this host (its forked sandboxes)
    active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        """Count one piece of work of the run here; the last one out gives back the leased calls."""
        with self.lock:
            self.active += 1
        try:
            yield
        finally:
            with self.lock:
                self.active -= 1
                idle = self.active == 0
            if idle:
                self.budget.release()


class AgentHost:
    """Hosts agents on one node. Create with ``ray.remote(AgentHost).options(num_cpus=0, ...)``."""

    def __init__(self, index: int, hub_name: str, pool_size: int) -> None:
        import ray

        self.index = index
        self.hub = hub = ray.get_actor(hub_name)
        self.node = node_id()
        self.incarnation = secrets.token_hex(2)
        self.events = EventForwarder(hub)
        #: Pre-started sandbox zygotes: a run's agents here fork their workers from one (see rlm.sandbox.forkserver).
        self.zygotes = ForkServerPool(pool_size)
        self._runs: dict[str, _RunState] = {}
        self._lms: dict[tuple[Any, ...], LMClient] = {}
        self._running: dict[str, str] = {}
        self.shards_served = 0  # fan-out shards run here for agents on other hosts
        self._threads = ThreadPoolExecutor(max_workers=MAX_HOST_THREADS, thread_name_prefix="rlm-host")
        self._lock = threading.Lock()
        self._lm_lock = threading.Lock()
        # litellm takes seconds to import: do it now, not in the first agent's first call.
        self._preloading = threading.Thread(target=_preload, name="rlm-preload", daemon=True)
        self._preloading.start()

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on one of the host's threads (the actor's event loop must never block)."""
        return await asyncio.get_running_loop().run_in_executor(self._threads, functools.partial(fn, *args))

    # -- introspection (tests, benchmarks) ---------------------------------------------
    async def where(self) -> dict[str, Any]:
        return {"index": self.index, "node_id": self.node, "pid": os.getpid(), "shards_served": self.shards_served}

    async def running_agents(self) -> list[str]:
        with self._lock:
            return list(self._running)

    async def stacks(self) -> str:
        """Every thread's stack (for diagnosing a stuck agent)."""
        import sys
        import traceback

        return "\n".join(f"--- thread {ident}\n" + "".join(traceback.format_stack(frame))
                         for ident, frame in sys._current_frames().items())  # noqa: SLF001 - the only list of every thread's stack

    async def warm(self, config: RLMConfig) -> None:
        """Pre-start sandbox zygotes for runs with this config (up on return); also loads the LM client."""
        await self._blocking(self._warm, config)

    def _warm(self, config: RLMConfig) -> None:
        self._preloading.join()
        self._lm(config)
        self.zygotes.warm(config.sandbox)

    # -- agents ------------------------------------------------------------------------
    async def run_agent(self, run: RunSpec | str, spec: AgentSpec,
                        carry_events: bool = False) -> tuple[AgentResult, list[Event]] | None:
        """Run one agent (see :meth:`_run_agent`)."""
        return await self._blocking(self._run_agent, run, spec, carry_events)

    def _run_agent(self, run: RunSpec | str, spec: AgentSpec,
                   carry_events: bool) -> tuple[AgentResult, list[Event]] | None:
        """Run one agent; ``run`` is the run's spec, or only its id once this host has seen the spec.

        Returns the result and, with ``carry_events``, the agent's (and its descendants') events
        not yet pushed to the hub, for the caller to emit; without, they are pushed before
        returning. Returns ``None`` when given an id this host does not know (it restarted):
        send the spec.
        """
        if isinstance(run, str):
            with self._lock:
                state = self._runs.get(run)
            if state is None:
                return None
        else:
            state = self._state(run)
        result = self._run(state, spec)
        if carry_events:
            return result, self.events.take(state.services.run_id, spec.agent_id)
        self.events.flush()
        self.events.forget(state.services.run_id, spec.agent_id)
        return result, []

    def _run_here(self, run_spec: RunSpec, spec: AgentSpec) -> tuple[AgentResult, list[Event]]:
        """A child placed on this very host by an agent of this host: no Ray call, events stay queued here."""
        return self._run(self._state(run_spec), spec), []

    def _run(self, state: _RunState, spec: AgentSpec) -> AgentResult:
        run_id = state.services.run_id
        with state.working():
            if isinstance(spec.context, contexts.InlineContext):  # its file is written here, deleted after
                payload = context_payload(spec.context.value, state.workdir)
            else:
                payload = contexts.materialize(spec.context, self.node)
            agent = Agent(state.services, prompt=spec.prompt, payload=payload, depth=spec.depth,
                          parent_id=spec.parent_id, agent_id=spec.agent_id, group=spec.group)
            with self._lock:
                self._running[spec.agent_id] = run_id
            try:
                return agent.run()
            finally:
                with self._lock:
                    self._running.pop(spec.agent_id, None)
                if isinstance(spec.context, contexts.InlineContext):
                    payload.cleanup()

    async def agent_batch(self, run_spec: RunSpec, children: list[AgentSpec],
                          concurrency: int) -> AsyncIterator[list[tuple[int, AgentResult]]]:
        """A share of another host's ``rlm_query_batched``: run ``children`` here, ``concurrency`` at a time.

        A streaming generator: yields lists of ``(index, result)`` of finished children, so the
        caller knows which children are done if this process dies. Children that finish within
        :data:`REPORT_EVERY_S` of each other share one item (each item costs Ray ~1 ms of this
        process's CPU); the last child's item leaves at once. Their events are pushed to the hub
        before the last item is consumed.
        """
        state = await self._blocking(self._state, run_spec)
        with self._lock:
            self.shards_served += 1
        reports: asyncio.Queue[list[tuple[int, AgentResult]] | BaseException] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def run_all() -> None:
            try:
                with state.working(), ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(children))),
                                                         thread_name_prefix="rlm-children") as pool:
                    running = {pool.submit(self._run_safely, state, spec): index
                               for index, spec in enumerate(children)}
                    pending: set[Future[AgentResult]] = set(running)
                    report: list[tuple[int, AgentResult]] = []
                    due = 0.0  # when the oldest child in ``report`` must be reported
                    while pending:
                        timeout = max(0.0, due - time.monotonic()) if report else None
                        done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
                        if done and not report:
                            due = time.monotonic() + REPORT_EVERY_S
                        report += [(running[future], future.result()) for future in done]
                        if report and (not pending or time.monotonic() >= due):
                            loop.call_soon_threadsafe(reports.put_nowait, report)
                            report = []
            except BaseException as exc:  # the consumer must not wait for children that will never come
                loop.call_soon_threadsafe(reports.put_nowait, exc)
                raise

        batch = loop.run_in_executor(self._threads, run_all)
        try:
            left = len(children)
            while left:
                report = await reports.get()
                if isinstance(report, BaseException):
                    raise report
                left -= len(report)
                yield report
            await batch
        finally:
            await self._blocking(self.events.flush)

    def _run_safely(self, state: _RunState, spec: AgentSpec) -> AgentResult:
        try:
            return self._run(state, spec)
        except Exception as exc:  # noqa: BLE001 - e.g. its context could not be materialized here
            return AgentResult(spec.agent_id, None, "error", 0, error=f"{type(exc).__name__}: {exc}")

    async def llm_batch(self, run_spec: RunSpec, caller: dict[str, Any], prompts: list[str], model: str | None,
                        concurrency: int) -> ShardResult:
        """A share of another host's ``llm_query_batched``, made here as calls of ``caller`` (:mod:`rlm.fanout`)."""
        return await self._blocking(self._llm_batch, run_spec, caller, prompts, model, concurrency)

    def _llm_batch(self, run_spec: RunSpec, caller: dict[str, Any], prompts: list[str], model: str | None,
                   concurrency: int) -> ShardResult:
        state = self._state(run_spec)
        with self._lock:
            self.shards_served += 1
        try:
            with state.working():
                stand_in = Agent(state.services, prompt="", payload=None,  # type: ignore[arg-type]  # runs no REPL: no context
                                 depth=caller["depth"], parent_id=caller["parent_id"], agent_id=caller["agent_id"])
                return serve_shard(stand_in.subcalls, prompts, model, concurrency)
        finally:
            self.events.flush()

    async def end_run(self, run_id: str) -> None:
        """Give back leased calls and delete this node's files of the run."""
        await self._blocking(self._end_run, run_id)

    def _end_run(self, run_id: str) -> None:
        with self._lock:
            state = self._runs.pop(run_id, None)
        if state is not None:
            state.budget.release()
            state.sandboxes.close()
            shutil.rmtree(state.workdir, ignore_errors=True)
        contexts.drop_run(run_id, self.node)
        self.events.flush()

    async def shutdown(self) -> None:
        await self._blocking(self.zygotes.close)

    # -- per-run services ----------------------------------------------------------------
    def _state(self, run_spec: RunSpec) -> _RunState:
        with self._lock:
            state = self._runs.get(run_spec.run_id)
            if state is None:
                state = self._runs[run_spec.run_id] = self._new_state(run_spec)
            return state

    def _new_state(self, run_spec: RunSpec) -> _RunState:
        config = run_spec.config
        budget = LeasedBudget(run_spec.hub, run_spec.run_id, run_spec.limits)
        workdir = Path(tempfile.gettempdir()) / f"rlm-work-{os.getuid()}" / run_spec.run_id
        workdir.mkdir(parents=True, exist_ok=True)
        spawner = Spawner(run_spec, self.events.emit, self.node, own_host=self.index, run_here=self._run_here)
        sandboxes = LocalPlacement(fork_servers=self.zygotes.take)
        services = RunServices(
            run_id=run_spec.run_id, config=config, lm=self._lm(config), budget=budget, emit=self.events.emit,
            workdir=workdir, placement=HostPlacement(self, run_spec, spawner, sandboxes),
            prompt_extra=run_spec.prompt_extra,
            root_prompt_extra=run_spec.root_prompt_extra,
            host_functions={name: _relayed(run_spec, name, params, doc)
                            for name, (params, doc) in run_spec.host_functions.items()},
            # The sub-call cache over this host's calls of the run (the run log is the driver's: earlier
            # runs' records are not looked up from here).
            records=CallRecords(cache=config.cache_enabled),
        )
        return _RunState(services=services, budget=budget, workdir=workdir, sandboxes=sandboxes)

    def _lm(self, config: RLMConfig) -> LMClient:
        key = (config.model, config.sub_model, config.api_base, config.api_key, config.models, config.lm_retries,
               config.lm_timeout_s, config.timeout_s is None, config.max_completion_tokens, config.temperature)
        with self._lm_lock:
            client = self._lms.get(key)
            if client is None:
                client = self._lms[key] = LMClient(config)
            return client


class HostPlacement:
    """The :class:`~rlm.services.Placement` of a run's agents on this host.

    Ids carry the host's incarnation (agents of one run are made in many processes);
    children go through the :class:`Spawner` (round-robin over the cluster's hosts);
    sandboxes are forked from the run's zygote on this host; big batches are shared with
    the other hosts.
    """

    def __init__(self, host: AgentHost, run_spec: RunSpec, spawner: Spawner, sandboxes: LocalPlacement) -> None:
        self._host = host
        self._spawner = spawner
        self._sandboxes = sandboxes
        self._prefix = f"{host.incarnation}."
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._helpers: list[FanoutHelper] = [_shard_helper(run_spec, i, spawner, host.events)
                                             for i in range(len(run_spec.hosts)) if i != host.index]

    @property
    def node_id(self) -> str:
        return self._host.node

    def new_agent_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}{self._prefix}{next(self._ids)}"

    def run_child(self, child: AgentLike, *, here: bool = False) -> AgentResult:
        return self._spawner(child, here=here)

    def sandbox_for(self, agent: AgentLike, handler: Any, extra: dict[str, list[str]]) -> Any:
        """A sandbox forked from the run's zygote on this host (``None`` for a huge input: a jail of its own)."""
        return self._sandboxes.sandbox_for(agent, handler, extra)

    def fanout_helpers(self) -> list[FanoutHelper]:
        return self._helpers


def _shard_helper(run_spec: RunSpec, index: int, spawner: Spawner, events: EventForwarder) -> FanoutHelper:
    """A :data:`rlm.fanout.FanoutHelper` that runs a shard on agent host ``index``."""
    host = run_spec.hosts[index]

    def start(agent: AgentLike, kind: str, items: list[Any], model: str | None, concurrency: int) -> Any:
        import ray

        if kind == "rlm":
            assert isinstance(agent, Agent)  # a host's placement serves its own agents only
            return _start_children(run_spec, index, spawner, events, agent, items, concurrency, model)
        caller = {"agent_id": agent.agent_id, "parent_id": agent.parent_id, "depth": agent.depth}
        ref = host.llm_batch.remote(run_spec, caller, items, model, concurrency)
        return lambda: ray.get(ref)

    return start


def _start_children(run_spec: RunSpec, index: int, spawner: Spawner, events: EventForwarder, parent: Agent,
                    triples: list[tuple[str, Any, str]], concurrency: int, group: str | None = None) -> Any:
    """Send children ``(prompt, context, id)`` of ``parent`` to host ``index`` as one streaming call
    (their own turns on model ``group`` if given).

    A small context travels inside the child's spec and the host writes its file; a big one is
    written here first (the host reads it on this node, or from the object store on another). The
    waiter collects the children's results as they finish; if the
    host dies, the children it had not finished are recorded as retried and run again through
    the spawner (on a live host), as a lost single child is.
    """
    import ray

    payloads, specs = [], []
    try:
        for prompt, context, child_id in triples:
            small = contexts.inline(context)
            if small is not None:  # the host writes its file, as the child starts
                spec = AgentSpec(agent_id=child_id, parent_id=parent.agent_id, depth=parent.depth + 1,
                                 prompt=prompt, context=small, group=group)
            else:
                payload = parent.subcalls.child_payload(context)
                payloads.append(payload)
                spec = spawner.spec_for(parent.child(prompt, payload, child_id, group=group))
            spawner.ship(spec, index)
            specs.append(spec)
        events.flush()  # the parent's events so far reach the hub before its children's (pushed by that host)
        stream = run_spec.hosts[index].agent_batch.options(num_returns="streaming").remote(run_spec, specs,
                                                                                           concurrency)
    except BaseException:
        _cleanup(parent, payloads)
        raise

    def wait() -> ShardResult:
        done: dict[int, AgentResult] = {}
        try:
            try:
                for ref in stream:
                    done.update(ray.get(ref))
            except actor_died_errors() as exc:
                for position, spec in enumerate(specs):
                    if position not in done:
                        done[position] = spawner.retry(spec, exc, index)
        finally:
            _cleanup(parent, payloads)
        return ShardResult(items=[parent.subcalls.child_item(done[position]) for position in range(len(specs))])

    return wait


def _cleanup(parent: Agent, payloads: list[Any]) -> None:
    for payload in payloads:
        parent.subcalls.release_child_payload(payload)


def _relayed(run_spec: RunSpec, name: str, params: tuple[str, ...], doc: str) -> HostFunction:
    """A host function whose body runs on the driver (where the extension lives), through the hub."""

    def call(agent: AgentLike, args: dict[str, Any]) -> Any:
        import ray

        view = {"agent_id": agent.agent_id, "parent_id": agent.parent_id, "depth": agent.depth,
                "prompt": agent.prompt}
        ok, value = ray.get(run_spec.hub.host_call.remote(run_spec.run_id, name, view, args))
        if not ok:
            raise HostCallError(str(value))
        return value

    return HostFunction(name=name, params=params, doc=doc, fn=call)


def _preload() -> None:
    """Import litellm, then make one call through it to a throwaway loopback server.

    litellm defers much of its work to the first call of a process (imports of its
    tokenizer, proxy types and tracing, pydantic schema builds): ~0.5 s of CPU that
    would otherwise land on this host's first agent — seconds on a busy machine.
    """
    import gc

    from rlm.lm import _litellm

    _litellm()
    try:
        _first_call()
    except Exception:  # noqa: BLE001, S110 - only a warm-up: the first real call pays instead
        pass
    # What is alive now (Ray, litellm, pydantic: over a million objects) lives as long as the process.
    # Left in the collector's oldest generation, every full collection walked it: 100-700 ms pauses,
    # freeing nothing, that stalled every agent of the host at once.
    gc.freeze()


def _first_call() -> None:
    from rlm.lm import LMClient
    from rlm.testing import ScriptedServer

    with tempfile.TemporaryDirectory(prefix="rlm-warm-") as home, \
            ScriptedServer(policy=lambda messages: "ok", latency_ms=0) as server:
        config = RLMConfig(model="openai/rlm-warm-up", api_base=server.base_url, api_key="sk-warm-up",
                           lm_retries=0, lm_timeout_s=30, home=Path(home), record_run=False)
        client = LMClient(config)
        try:
            client.complete([{"role": "system", "content": "warm-up"}, {"role": "user", "content": "ok?"}],
                            role="sub")
        finally:
            client.close()
