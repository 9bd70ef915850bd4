"""A run's sandboxes forked from one zygote: a fresh REPL worker in ~1 ms instead of ~40 ms of CPU.

A :class:`ForkServer` starts one jail (the same bubblewrap policy as a worker's,
without a context file) running the zygote (``sandbox/zygote.py``), and asks it
for a worker per sandbox. Each worker is a fresh process forked from a zygote
that has imported everything: its own namespace, its own rlimits (set from its
``init`` frame, as always), its own seccomp filter on top of the jail's (no new
processes unless allowed; signals only to itself), non-dumpable, in a private
scratch directory, with its context passed as a descriptor (read-only, closed once decoded).

What the workers of one fork server share: the jail's namespaces and its
size-capped ``/tmp`` and ``/dev/shm``. A run's agents are one trust domain
(the same user's input, the same models), so one fork server serves one run and
is never shared between runs; a sibling can see the names of another's scratch
files, but not its memory, descriptors, environment or context, and it cannot
signal it.

:class:`ForkedSandbox` is a :class:`~rlm.sandbox.host.Sandbox` whose worker
comes from a fork server; everything else (frames, cells, timeouts, restarts)
is the sandbox's own.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import socket
import threading
import time
from pathlib import Path
from typing import IO, Any

from rlm.config import SandboxConfig
from rlm.errors import SandboxError
from rlm.sandbox import jail, packages, seccomp
from rlm.sandbox.host import Handler, Sandbox

__all__ = ["ForkServer", "ForkServerPool", "ForkedSandbox", "ForkedProcess"]

#: Where a forked worker finds its context: the descriptor the zygote placed there (``zygote.CONTEXT_FD``).
CONTEXT_FD_PATH = "/proc/self/fd/9"
READY_TIMEOUT_S = 30.0
FORK_TIMEOUT_S = 10.0


class ForkedProcess:
    """A forked worker as :class:`~rlm.sandbox.host.Sandbox` sees a process: its pipes, a pidfd, how it ended."""

    def __init__(self, pid: int, pidfd: int, stdin: int, stdout: int, stderr: int, status: int) -> None:
        self.pid = pid  # in the jail's pid namespace: never use it to signal from the host
        self.pidfd = pidfd
        self.stdin: IO[bytes] | None = os.fdopen(stdin, "wb", buffering=0)
        self.stdout: IO[bytes] | None = os.fdopen(stdout, "rb", buffering=0)
        self.stderr: io.BufferedReader = os.fdopen(stderr, "rb")  # buffered: the sandbox drains it with read1
        self._status_fd: int | None = status
        self.returncode: int | None = None

    def kill(self) -> None:
        if self.pidfd >= 0:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except OSError:
                pass  # already gone

    def poll(self) -> int | None:
        return self.wait(timeout=0) if self.returncode is None else self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code (negative: the signal) once the zygote reported it; ``None`` if not within ``timeout``."""
        if self.returncode is not None or self._status_fd is None:
            return self.returncode
        poller = select.poll()
        poller.register(self._status_fd, select.POLLIN)
        if not poller.poll(None if timeout is None else max(0.0, timeout) * 1000):
            return None
        data = os.read(self._status_fd, 64)
        os.close(self._status_fd)
        self._status_fd = None
        status = int(data) if data.strip().isdigit() else 0
        self.returncode = os.waitstatus_to_exitcode(status) if data else None
        return self.returncode

    def close(self) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        if self._status_fd is not None:
            os.close(self._status_fd)
            self._status_fd = None
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


class ForkedWorker:
    """What :class:`Sandbox` keeps of a spawned worker (``proc``, ``context_path``, ``kill``), for a forked one."""

    def __init__(self, proc: ForkedProcess) -> None:
        self.proc = proc
        self.context_path = CONTEXT_FD_PATH

    @property
    def init_pidfd(self) -> int | None:
        """The pidfd that ends everything of this worker: the worker itself (a jailed one's is its jail's init)."""
        return self.proc.pidfd if self.proc.pidfd >= 0 else None

    def kill(self) -> None:
        self.proc.kill()


class ForkServer:
    """One zygote jail, forking workers for one run (see the module docstring). Thread-safe."""

    def __init__(self, config: SandboxConfig, *, weaken: frozenset[str] = frozenset()) -> None:
        self.config = config
        self.weaken = weaken
        self._lock = threading.Lock()
        self._control: socket.socket | None = None
        self._jail: jail.WorkerProcess | None = None
        self._closed = False
        #: Where its workers find the analysis packages (set when the jail starts; None: none).
        self.packages_path: str | None = None
        filter_wanted = config.mode == "bwrap" and "seccomp" not in weaken
        program, slots = (seccomp.build_worker_filter(allow_processes=config.allow_subprocesses)
                          if filter_wanted else (b"", []))
        self._request = json.dumps({"filter": program.hex(), "pid_slots": slots}).encode()

    def start(self) -> ForkServer:
        """Start the zygote's jail now (the first :meth:`fork` does otherwise)."""
        with self._lock:
            if self._control is None and not self._closed:
                self._start_jail()
        return self

    def fork(self, context_file: Path) -> ForkedProcess:
        """A new worker on ``context_file``, booted and waiting for its ``init`` frame."""
        with self._lock:
            if self._closed:
                raise SandboxError("the run's sandboxes are closed")
            try:
                return self._fork(context_file)
            except (OSError, SandboxError):
                self._stop_jail()  # the zygote died (or never came up): one more try on a fresh jail
                return self._fork(context_file)

    def close(self) -> None:
        """Kill the zygote's jail and every worker still in it."""
        with self._lock:
            self._closed = True
            self._stop_jail()

    # -- the zygote --------------------------------------------------------------------
    def _fork(self, context_file: Path) -> ForkedProcess:
        if self._jail is not None and self._jail.proc.poll() is not None:
            self._stop_jail()  # the zygote's jail ended (killed, out of memory): start a fresh one
        control = self._control or self._start_jail()
        ends: list[int] = []
        mine: list[int] = []
        try:
            for _ in range(4):  # stdin, stdout, stderr, status
                read_end, write_end = os.pipe()
                ends.append(read_end)
                ends.append(write_end)
            child_fds = [ends[0], ends[3], ends[5], ends[7]]
            mine = [ends[1], ends[2], ends[4], ends[6]]
            context = os.open(context_file, os.O_RDONLY | os.O_CLOEXEC)
            try:
                socket.send_fds(control, [self._request], [*child_fds, context])
            finally:
                os.close(context)
            for fd in child_fds:
                os.close(fd)
            message, fds = _receive(control, FORK_TIMEOUT_S)
        except BaseException:
            for fd in ends:
                _close_quietly(fd)
            raise
        pid = json.loads(message)["pid"]
        return ForkedProcess(pid, fds[0], stdin=mine[0], stdout=mine[1], stderr=mine[2], status=mine[3])

    def _start_jail(self) -> socket.socket:
        host_end, jail_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            os.set_inheritable(jail_end.fileno(), True)
            cfg = self.config
            env = packages.current_env(cfg.packages_dir)
            self.packages_path = None if env is None else jail.JAIL_PACKAGES if cfg.mode == "bwrap" else str(env)
            self._jail = jail.spawn(cfg.mode, None, scratch_mb=cfg.scratch_mb, allow_processes=True,
                                    weaken=self.weaken, packages=env, zygote_fd=jail_end.fileno())
        except BaseException:
            host_end.close()
            raise
        finally:
            jail_end.close()
        threading.Thread(target=_drain, args=(self._jail.proc,), name="rlm-zygote-stderr", daemon=True).start()
        message, _ = _receive(host_end, READY_TIMEOUT_S)
        if json.loads(message).get("type") != "ready":
            host_end.close()
            raise SandboxError("the sandbox zygote sent an unexpected first message")
        self._control = host_end
        return host_end

    def _stop_jail(self) -> None:
        control, self._control = self._control, None
        worker, self._jail = self._jail, None
        if control is not None:
            control.close()
        if worker is not None:
            from rlm.sandbox.host import terminate

            terminate(worker, worker.proc)


class ForkServerPool:
    """Fork servers with their zygote already up, for a resident process: a run takes one, a new one is started.

    Each fork server serves one run only (:class:`ForkServer`): :meth:`take` hands out a
    started one for ``config`` and starts a replacement on a background thread. Servers
    for other sandbox configs than the first one asked for are started on demand.
    """

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._ready: dict[SandboxConfig, list[ForkServer]] = {}
        self._starting: dict[SandboxConfig, int] = {}  # being started by a refill, counted against the size
        self._lock = threading.Lock()
        self._closed = False

    def take(self, config: SandboxConfig) -> ForkServer:
        with self._lock:
            ready = self._ready.setdefault(config, [])
            server = ready.pop(0) if ready else None
        if server is None:
            server = ForkServer(config)
        threading.Thread(target=self._refill, args=(config,), name="rlm-zygote-refill", daemon=True).start()
        return server

    def warm(self, config: SandboxConfig) -> None:
        """Start servers for ``config`` until :attr:`size` are ready."""
        self._refill(config)

    def _refill(self, config: SandboxConfig) -> None:
        """Start servers until ``size`` are ready or starting. Refills of a burst of takes run at once, so each
        counts what the others are starting: the pool never grows past its size."""
        while True:
            with self._lock:
                if self._closed or len(self._ready.get(config, ())) + self._starting.get(config, 0) >= self.size:
                    return
                self._starting[config] = self._starting.get(config, 0) + 1
            try:
                server: ForkServer | None = ForkServer(config).start()
            except (OSError, SandboxError):
                server = None  # the next run starts its own (and reports why, if it cannot)
            with self._lock:
                self._starting[config] -= 1
                if server is not None and not self._closed:
                    self._ready.setdefault(config, []).append(server)
                    continue
            if server is not None:
                server.close()
            return

    def close(self) -> None:
        with self._lock:
            self._closed = True
            servers = [server for ready in self._ready.values() for server in ready]
            self._ready.clear()
        for server in servers:
            server.close()


class ForkedSandbox(Sandbox):
    """A :class:`Sandbox` whose worker is forked by a :class:`ForkServer` (restarts fork a new one)."""

    def __init__(self, server: ForkServer, context_path: Path, context_kind: str = "text", *,
                 config: SandboxConfig | None = None, handler: Handler | None = None,
                 extra_functions: dict[str, list[str]] | None = None) -> None:
        super().__init__(context_path, context_kind, config=config or server.config, handler=handler,
                         extra_functions=extra_functions)
        self.server = server

    def _spawn(self) -> Any:
        process = self.server.fork(self.context_path)
        self.packages_path = self.server.packages_path
        return ForkedWorker(process)

    def close(self) -> None:
        proc = self._proc
        super().close()
        if isinstance(proc, ForkedProcess):
            proc.close()  # its pidfd and status pipe


def _receive(control: socket.socket, timeout: float) -> tuple[bytes, list[int]]:
    """One message (and its descriptors) from the zygote within ``timeout``; a dead zygote raises."""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(control.fileno(), select.POLLIN)
    while not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
        if time.monotonic() >= deadline:
            raise SandboxError(f"the sandbox zygote did not answer within {timeout:g}s")
    message, fds, _, _ = socket.recv_fds(control, 1 << 16, 1)
    if not message:
        raise SandboxError("the sandbox zygote died")
    return message, list(fds)


def _drain(proc: Any) -> None:
    stream = proc.stderr
    if stream is not None:
        for _ in iter(lambda: stream.read(4096), b""):
            pass


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
