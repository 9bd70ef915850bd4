"""Pre-started sandbox workers, so a child agent does not wait ~0.1 s for bubblewrap and Python.

A :class:`PooledSandbox` is a :class:`~rlm.sandbox.host.Sandbox` whose jail is
launched ahead of time on an empty placeholder file and left waiting for its
``init`` frame. When an agent takes it, the agent's context is copied into the
placeholder (in place: the jail's read-only bind mount follows the inode) and
the ``init`` frame goes out — with rlimits computed from the real context size,
exactly as a cold start. Every agent still gets its own fresh worker: a pooled
sandbox is never reused after an agent closed it.

Only contexts up to :data:`MAX_POOLED_BYTES` take a pooled worker (each one
holds its own copy); larger ones start cold on the shared per-node file.

A worker announces that it has booted (a ``booted`` frame, before it reads
``init``): :meth:`SandboxPool.warm` returns only once every worker it launched has
booted, with a few booting at a time, and a refill launches one worker at a time,
each booted before the next. The oldest waiting worker is handed out first.
The pool is refilled only once the host has not taken a sandbox for
:data:`REFILL_QUIET_S`: a launch costs as much CPU as a cold start, so
refilling in the middle of a burst of children would only slow the burst down
(on a small machine, by a lot).

Teardown is deferred the same way. Closing a pooled sandbox hands it to the
pool's teardown thread and returns at once; the worker (idle: its agent is done)
is killed once no sandbox was taken for :data:`TEARDOWN_QUIET_S`, or after
:data:`TEARDOWN_MAX_DELAY_S`, or at once when more than
:data:`TEARDOWN_MAX_WAITING` (or the pool's target, if larger) wait. Killing a jail costs the kernel a few
milliseconds of CPU (the address space, the namespaces); during a burst that CPU
goes to the children still running. Closing the pool kills everything at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm.agents.queue_thread import QueueThread
from rlm.sandbox.host import Handler, Sandbox, _wait_readable, terminate

from rlm.config import SandboxConfig
from rlm.errors import SandboxError
from rlm.inputs import ContextPayload

MAX_POOLED_BYTES = 8 * 1024 * 1024
#: The pool is refilled once no sandbox was taken for this long.
REFILL_QUIET_S = 0.5
#: Workers booting at once, per core, while :meth:`SandboxPool.warm` fills the pool.
BOOTING_AT_ONCE = 2
#: How long a pre-started worker may take to boot before the pool stops waiting for it.
BOOT_TIMEOUT_S = 30.0
#: A closed sandbox is torn down once no sandbox was taken for this long ...
TEARDOWN_QUIET_S = 0.3
#: ... or once it has waited this long, or when more than this many (or the pool's target, if larger) wait.
TEARDOWN_MAX_DELAY_S = 5.0
TEARDOWN_MAX_WAITING = 64
TEARDOWN_POLL_S = 0.05


class PooledSandbox(Sandbox):
    """A sandbox whose jail was launched early on a placeholder; :meth:`assign` gives it its context.

    It uses the host's ``_spawn`` hook: :meth:`launch` spawns the worker process
    now, and the ``start`` of :meth:`assign` picks that process up instead of
    spawning one, then sends ``init`` as usual. A restart spawns cold.
    """

    def __init__(self, placeholder: Path, *, config: SandboxConfig, extra_functions: dict[str, list[str]],
                 retire: Callable[[Retired], None] | None = None) -> None:
        super().__init__(placeholder, "text", config=config, extra_functions=extra_functions)
        self.placeholder = placeholder
        self._early: Any = None
        self._retire = retire

    def launch(self) -> None:
        """Start bubblewrap and the worker; the worker blocks until :meth:`assign` sends ``init``."""
        if not hasattr(Sandbox, "_spawn"):
            raise SandboxError("this sandbox host has no _spawn hook: cannot pre-start workers")
        self._early = super()._spawn()

    def booted(self, timeout: float = 0.0) -> bool:
        """Has the pre-started worker finished booting (its ``booted`` frame is waiting)? Waits up to ``timeout``.

        Also true once the worker died: :meth:`assign` then finds out and the pool starts one cold.
        """
        early = self._early
        if early is None or early.proc.stdout is None:
            return True
        return _wait_readable(early.proc.stdout.fileno(), timeout)

    def _spawn(self) -> Any:
        early, self._early = self._early, None
        if early is not None and early.proc.poll() is None:
            return early
        if early is not None:
            early.kill()
        return super()._spawn()

    def assign(self, payload: ContextPayload, handler: Handler) -> None:
        """Fill the placeholder with ``payload``'s file (in place) and initialise the waiting worker."""
        with open(payload.path, "rb") as source, open(self.placeholder, "r+b") as target:
            target.truncate(0)
            shutil.copyfileobj(source, target, 1 << 20)
        self.context_kind = payload.kind
        self.handler = handler
        self.start()

    def close(self) -> None:
        if self._early is not None:
            self._early.kill()
            self._early = None
        worker, proc = self._worker, self._proc
        if worker is not None and proc is not None and self._retire is not None:
            # The agent does not wait for the teardown: the pool kills the worker a little later.
            self._worker = self._proc = None
            self._retire(Retired(time.monotonic(), worker, proc, self.placeholder))
            return
        super().close()
        self.placeholder.unlink(missing_ok=True)

    def restart(self) -> None:
        # Sandbox.restart is close() + start(): keep the placeholder, which the new worker binds again.
        Sandbox.close(self)
        self.restarts += 1
        self.start()


@dataclass(frozen=True, slots=True)
class Retired:
    """A closed pooled sandbox waiting for its teardown: its worker has served its agent and sits idle."""

    closed_at: float
    worker: Any  # rlm.sandbox.jail.WorkerProcess
    proc: Any  # subprocess.Popen
    placeholder: Path

    def tear_down(self) -> None:
        """Kill the whole pid namespace, close the pipes, wait for bubblewrap, delete the context copy."""
        terminate(self.worker, self.proc)
        self.placeholder.unlink(missing_ok=True)


class SandboxPool:
    """Pre-started workers per (sandbox config, extra host functions); refilled when the host is quiet."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.directory = Path(tempfile.gettempdir()) / f"rlm-pool-{os.getuid()}" / f"{os.getpid()}"
        self._lock = threading.Lock()
        self._idle: dict[Any, deque[PooledSandbox]] = {}
        self._filling: set[Any] = set()
        self._closed = False
        self._last_take = 0.0
        self._retired = 0
        self._launching = 0
        self._settled = threading.Condition(self._lock)  # notified when a teardown or a launch ends
        self._teardown: QueueThread[Retired] = QueueThread("rlm-sandbox-teardown", self._tear_down)

    @staticmethod
    def key(config: SandboxConfig, extra_functions: dict[str, list[str]]) -> Any:
        return config, tuple(sorted((name, tuple(params)) for name, params in extra_functions.items()))

    def take(self, config: SandboxConfig, extra_functions: dict[str, list[str]], payload: ContextPayload,
             handler: Handler) -> Sandbox | None:
        """A started sandbox on ``payload``, or ``None`` (pool empty or context too big: start cold)."""
        if self.target <= 0 or payload.size_bytes > MAX_POOLED_BYTES:
            return None
        key = self.key(config, extra_functions)
        with self._lock:
            self._last_take = time.monotonic()
            idle = self._idle.get(key)
            sandbox = idle.popleft() if idle else None  # the oldest: surely booted by now
        self._refill_later(key, config, extra_functions)
        if sandbox is None:
            return None
        try:
            sandbox.assign(payload, handler)
        except SandboxError:
            sandbox.close()
            return None
        return sandbox

    def warm(self, config: SandboxConfig, extra_functions: dict[str, list[str]], count: int) -> int:
        """Launch workers until ``count`` wait for this key, and wait until all have booted; returns how many wait.

        At most :data:`BOOTING_AT_ONCE` (per core) boot at a time: launching them all at once only
        makes every one of them slower to come up.
        """
        key = self.key(config, extra_functions)
        self.target = max(self.target, count)
        at_once = BOOTING_AT_ONCE * (os.cpu_count() or 1)
        booting: deque[PooledSandbox] = deque()
        while self._size(key) < count:
            while len(booting) >= at_once:
                booting.popleft().booted(BOOT_TIMEOUT_S)
            booting.append(self._add(key, config, extra_functions))
        for sandbox in booting:
            sandbox.booted(BOOT_TIMEOUT_S)
        return self._size(key)

    def _size(self, key: Any) -> int:
        with self._lock:
            return len(self._idle.get(key, []))

    def _retire(self, retired: Retired) -> None:
        with self._lock:
            self._retired += 1
        self._teardown.submit(retired)

    def _tear_down(self, retired: Retired) -> None:
        """Tear a closed sandbox down once the host is quiet, it waited long enough, or too many wait.

        Killing a worker costs the kernel a few milliseconds of CPU (its address space, its
        namespaces, bubblewrap); in the middle of a burst of children that CPU is better spent
        on the children still running.
        """
        try:
            while not self._closed:
                now = time.monotonic()
                with self._lock:
                    waiting, last_take = self._retired, self._last_take
                if (now - last_take >= TEARDOWN_QUIET_S or now - retired.closed_at >= TEARDOWN_MAX_DELAY_S
                        or waiting > max(TEARDOWN_MAX_WAITING, self.target)):
                    break
                time.sleep(TEARDOWN_POLL_S)
            retired.tear_down()
        finally:
            with self._lock:
                self._retired -= 1
                self._settled.notify_all()

    def _add(self, key: Any, config: SandboxConfig, extra_functions: dict[str, list[str]]) -> PooledSandbox:
        """Launch one worker into the pool (it boots in the background) and return it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        placeholder = self.directory / f"slot-{uuid.uuid4().hex}"
        placeholder.touch(mode=0o600)
        sandbox = PooledSandbox(placeholder, config=config, extra_functions=extra_functions, retire=self._retire)
        with self._lock:
            if self._closed:
                return sandbox
            self._launching += 1
        try:
            sandbox.launch()
            with self._lock:
                if not self._closed:
                    self._idle.setdefault(key, deque()).append(sandbox)
                    return sandbox
            sandbox.close()
            return sandbox
        finally:
            with self._lock:
                self._launching -= 1
                self._settled.notify_all()

    def _refill_later(self, key: Any, config: SandboxConfig, extra_functions: dict[str, list[str]]) -> None:
        with self._lock:
            if key in self._filling or self._closed:
                return
            self._filling.add(key)

        def fill() -> None:
            try:
                while self._size(key) < self.target and not self._closed:
                    quiet = time.monotonic() - self._last_take
                    if quiet < REFILL_QUIET_S:
                        time.sleep(REFILL_QUIET_S - quiet)
                        continue
                    # one at a time, each booted before the next: a refill never floods the machine
                    self._add(key, config, extra_functions).booted(BOOT_TIMEOUT_S)
            except Exception:  # a pool that cannot fill leaves agents to start cold
                pass
            finally:
                with self._lock:
                    self._filling.discard(key)

        threading.Thread(target=fill, name="rlm-sandbox-pool", daemon=True).start()

    def close(self, timeout: float = 10.0) -> None:
        """Kill every waiting and every retired worker; wait (up to ``timeout``) for launches and teardowns.

        A worker launched while the host process dies can be left behind by bubblewrap (its
        pid-namespace init waits for a parent that is gone), so a closing pool lets a launch in
        progress finish, then kills that worker too.
        """
        with self._lock:
            self._closed = True
            sandboxes = [s for idle in self._idle.values() for s in idle]
            self._idle.clear()
        for sandbox in sandboxes:
            sandbox.close()
        with self._lock:
            self._settled.wait_for(lambda: not (self._retired or self._launching), timeout)
        shutil.rmtree(self.directory, ignore_errors=True)
