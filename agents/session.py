"""The driver's Ray session: the hub, the agent hosts, the event pump and the host-call relay.

One :class:`RaySession` per driver process (:meth:`RaySession.get`), shared by
every run it makes (``rlm batch`` runs many at once). It creates the hub and
``ray_hosts_per_node`` agent hosts on every alive node, pinned there with soft
node affinity. Two driver threads serve all runs:

* the **pump** drains events from the hub and hands each to its run's ``emit``
  (run log + bus): the driver is the only writer of the run log;
* the **relay** runs extension host functions (``note``, ``recall``...) for
  agents anywhere on the cluster, with the driver's ``RunServices``.
"""

from __future__ import annotations

import atexit
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rlm.services import RunServices
from rlm.config import RLMConfig
from rlm.events import AgentStarted, Event
from rlm.errors import HostCallError

from rlm.agents.cluster import alive_nodes, ensure_ray, node_id


@dataclass
class _Registered:
    emit: Callable[[Event], None]
    services: RunServices


class _AgentView:
    """What a relayed host function sees of the calling agent (it runs on another node)."""

    def __init__(self, services: RunServices, data: dict[str, Any]) -> None:
        self.services = services
        self.config = services.config
        self.agent_id = data["agent_id"]
        self.parent_id = data.get("parent_id")
        self.depth = data.get("depth", 0)
        self.prompt = data.get("prompt", "")


class RaySession:
    """Hub + hosts + driver threads; see the module docstring."""

    _current: RaySession | None = None
    _lock = threading.Lock()

    @classmethod
    def get(cls, config: RLMConfig) -> RaySession:
        with cls._lock:
            current = cls._current
            if current is None or not current.usable():
                cls._current = current = cls(config)
            return current

    @classmethod
    def current(cls) -> RaySession | None:
        return cls._current

    @classmethod
    def shutdown_current(cls) -> None:
        with cls._lock:
            current, cls._current = cls._current, None
        if current is not None:
            current.shutdown()

    def __init__(self, config: RLMConfig) -> None:
        from rlm.agents.host import AgentHost
        from rlm.agents.hub import Hub

        self.ray = ray = ensure_ray(config)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.node = node_id()
        # Hosts find the hub by name: a handle among an actor's constructor arguments would live in the
        # object store, and a restarted host could not get it back once it went out of scope.
        self.hub_name = f"rlm-hub-{secrets.token_hex(4)}"
        self.hub = ray.remote(Hub).options(name=self.hub_name, num_cpus=0, max_concurrency=4096,
                                           max_restarts=0).remote()
        self.hosts: list[Any] = []
        for node in alive_nodes():
            for _ in range(config.ray_hosts_per_node):
                strategy = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
                host = ray.remote(AgentHost).options(
                    num_cpus=0, max_concurrency=4096, max_restarts=-1, max_task_retries=0,
                    scheduling_strategy=strategy,
                ).remote(len(self.hosts), self.hub_name, config.sandbox_pool_size)
                self.hosts.append(host)
        self.host_info = ray.get([host.where.remote() for host in self.hosts])
        self._runs: dict[str, _Registered] = {}
        self._runs_lock = threading.Lock()
        self._processed = 0
        self._progress = threading.Condition()
        self._stopping = threading.Event()
        self._relay_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="rlm-relay")
        self._threads = [threading.Thread(target=self._pump, name="rlm-event-pump", daemon=True),
                         threading.Thread(target=self._relay, name="rlm-host-relay", daemon=True)]
        for thread in self._threads:
            thread.start()
        # At exit, before the cluster is shut down (atexit runs last-registered first): a driver thread
        # still inside a Ray call when Ray shuts down makes Ray end the process with status 1.
        atexit.register(RaySession.shutdown_current)

    def usable(self) -> bool:
        return not self._stopping.is_set() and self.ray.is_initialized()

    # -- runs --------------------------------------------------------------------------
    def register(self, run_id: str, emit: Callable[[Event], None], services: RunServices) -> None:
        with self._runs_lock:
            self._runs[run_id] = _Registered(emit, services)

    def unregister(self, run_id: str) -> None:
        with self._runs_lock:
            self._runs.pop(run_id, None)

    def sync_events(self, timeout: float = 30.0) -> None:
        """Wait until every event pushed to the hub so far has been handed to its run."""
        target = self.ray.get(self.hub.pushed.remote())
        with self._progress:
            self._progress.wait_for(lambda: self._processed >= target or self._stopping.is_set(), timeout)

    def end_run(self, run_id: str, timeout: float = 30.0) -> None:
        """Hosts give back leased calls and drop the run's node files (dead hosts are skipped)."""
        refs = [host.end_run.remote(run_id) for host in self.hosts]
        self.ray.wait(refs, num_returns=len(refs), timeout=timeout)

    # -- driver threads ----------------------------------------------------------------
    def _pump(self) -> None:
        while not self._stopping.is_set():
            try:
                events, pushed = self.ray.get(self.hub.drain.remote(0.5))
            except Exception:  # noqa: BLE001 - the hub is busy or gone: retry until stopped
                if self._stopping.wait(0.5):
                    return
                continue
            for event in events:
                self._dispatch(event)
            with self._progress:
                self._processed += len(events)
                self._progress.notify_all()

    def _dispatch(self, event: Event) -> None:
        with self._runs_lock:
            registered = self._runs.get(event.run_id)
        if registered is None:
            return  # a late event of a finished run (e.g. an abandoned child)
        if isinstance(event, AgentStarted):
            registered.services.tracker.reached(event.depth)
        registered.emit(event)

    def _relay(self) -> None:
        while not self._stopping.is_set():
            try:
                calls = self.ray.get(self.hub.next_host_calls.remote(0.5))
            except Exception:  # noqa: BLE001 - the hub is busy or gone: retry until stopped
                if self._stopping.wait(0.5):
                    return
                continue
            for call in calls:
                self._relay_pool.submit(self._serve_call, *call)

    def _serve_call(self, call_id: int, run_id: str, name: str, agent: dict[str, Any], args: dict[str, Any]) -> None:
        with self._runs_lock:
            registered = self._runs.get(run_id)
        try:
            if registered is None or name not in registered.services.host_functions:
                raise HostCallError(f"{name} is not available (the run has ended)")
            function = registered.services.host_functions[name]
            view = _AgentView(registered.services, agent)  # what a relayed function reads of its caller
            value, ok = function.fn(view, args), True  # type: ignore[arg-type]  # it reads only the ids and prompt
        except HostCallError as exc:
            value, ok = str(exc), False
        except Exception as exc:  # noqa: BLE001 - reported to the agent, never fatal to the session
            value, ok = f"{name} failed: {type(exc).__name__}: {exc}", False
        self.hub.host_reply.remote(call_id, ok, value)

    def shutdown(self) -> None:
        """Stop the driver threads and the actors (the cluster itself stays up)."""
        self._stopping.set()
        try:
            self.ray.kill(self.hub)  # the threads' pending calls to it fail at once
        except Exception:  # noqa: BLE001, S110 - already gone
            pass
        for thread in self._threads:
            thread.join(timeout=5)
        for host in self.hosts:
            try:
                self.ray.get(host.shutdown.remote(), timeout=10)
            except Exception:  # noqa: BLE001, S110 - it is killed next either way
                pass
            self.ray.kill(host)
        self._relay_pool.shutdown(wait=False)
