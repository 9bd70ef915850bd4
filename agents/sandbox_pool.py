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

The oldest waiting worker is handed out first (it has long finished booting).
The pool is refilled only once the host has not taken a sandbox for
:data:`REFILL_QUIET_S`: a launch costs as much CPU as a cold start, so
refilling in the middle of a burst of children would only slow the burst down
(on a small machine, by a lot). A closed sandbox's processes are reaped on a
background thread, so an agent does not wait for its jail to be torn down.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from rlm.agents.queue_thread import QueueThread
from rlm.sandbox.host import Handler, Sandbox

from rlm.config import SandboxConfig
from rlm.errors import SandboxError
from rlm.inputs import ContextPayload

MAX_POOLED_BYTES = 8 * 1024 * 1024
#: The pool is refilled once no sandbox was taken for this long.
REFILL_QUIET_S = 0.5


class PooledSandbox(Sandbox):
    """A sandbox whose jail was launched early on a placeholder; :meth:`assign` gives it its context.

    It uses the host's ``_spawn`` hook: :meth:`launch` spawns the worker process
    now, and the ``start`` of :meth:`assign` picks that process up instead of
    spawning one, then sends ``init`` as usual. A restart spawns cold.
    """

    def __init__(self, placeholder: Path, *, config: SandboxConfig, extra_functions: dict[str, list[str]]) -> None:
        super().__init__(placeholder, "text", config=config, extra_functions=extra_functions)
        self.placeholder = placeholder
        self._early: Any = None

    def launch(self) -> None:
        """Start bubblewrap and the worker; the worker blocks until :meth:`assign` sends ``init``."""
        if not hasattr(Sandbox, "_spawn"):
            raise SandboxError("this sandbox host has no _spawn hook: cannot pre-start workers")
        self._early = super()._spawn()

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
        if worker is not None and proc is not None:
            # Kill now (the whole pid namespace), reap later: the agent need not wait for the teardown.
            self._worker = self._proc = None
            worker.kill()
            _reaper.submit(proc)
        else:
            super().close()
        self.placeholder.unlink(missing_ok=True)

    def restart(self) -> None:
        # Sandbox.restart is close() + start(): keep the placeholder, which the new worker binds again.
        Sandbox.close(self)
        self.restarts += 1
        self.start()


def _reap(proc: Any) -> None:
    """Close a killed sandbox's pipes and wait for it."""
    for stream in (proc.stdin, proc.stdout):
        try:
            stream.close()
        except OSError:
            pass
    try:
        proc.wait(timeout=10)
    except Exception:  # noqa: BLE001 - a process that will not die: kill its group harder
        proc.kill()


#: Killed sandbox processes are reaped on one background thread, so an agent does not wait for it.
_reaper: QueueThread[Any] = QueueThread("rlm-sandbox-reaper", _reap)


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
        """Launch workers until ``count`` wait for this key (blocking); returns how many wait."""
        key = self.key(config, extra_functions)
        self.target = max(self.target, count)
        while self._size(key) < count:
            self._add(key, config, extra_functions)
        return self._size(key)

    def _size(self, key: Any) -> int:
        with self._lock:
            return len(self._idle.get(key, []))

    def _add(self, key: Any, config: SandboxConfig, extra_functions: dict[str, list[str]]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        placeholder = self.directory / f"slot-{uuid.uuid4().hex}"
        placeholder.touch(mode=0o600)
        sandbox = PooledSandbox(placeholder, config=config, extra_functions=extra_functions)
        sandbox.launch()
        with self._lock:
            if self._closed:
                sandbox.close()
                return
            self._idle.setdefault(key, deque()).append(sandbox)

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
                    self._add(key, config, extra_functions)
            except Exception:  # a pool that cannot fill leaves agents to start cold
                pass
            finally:
                with self._lock:
                    self._filling.discard(key)

        threading.Thread(target=fill, name="rlm-sandbox-pool", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sandboxes = [s for idle in self._idle.values() for s in idle]
            self._idle.clear()
        for sandbox in sandboxes:
            sandbox.close()
        shutil.rmtree(self.directory, ignore_errors=True)
