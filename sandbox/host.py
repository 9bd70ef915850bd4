"""The host side of the REPL: spawns the worker, runs cells, serves host-function calls.

A :class:`Sandbox` owns one worker process. :meth:`Sandbox.execute` sends a cell
and then answers the worker's ``call`` frames through the ``handler`` until the
``result`` arrives. The cell's wall-clock budget only runs while the worker is
computing: time spent serving a host call (a sub-model or a whole child agent)
is not charged to the cell. A cell that times out, a worker that dies, or one
that breaks the protocol is killed and restarted; the model is told that its
variables are gone and ``context`` is back.

Everything the worker sends is hostile once model code has run: frames are
bounded before they are read, parsed with ``json`` only, every field is
type-checked, outputs are capped again here (the worker's own cap is advisory)
and control characters (ANSI/OSC escapes, lone ``\r``, bidi overrides) are
escaped before any text leaves this module for the model, a log or a terminal.
"""

from __future__ import annotations

import io
import os
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm.config import SandboxConfig
from rlm.errors import HostCallError, LimitReached, SandboxError
from rlm.inputs import text_facts
from rlm.sandbox import protocol
from rlm.sandbox import jail, packages

#: Names the worker may always call on the host; ``extra_functions`` add more per sandbox.
HOST_FUNCTIONS = frozenset({"llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched"})


Handler = Callable[[str, dict[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class CellResult:
    """What one cell produced. ``error`` is the model-facing error text, if any."""

    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    final: str | None = None
    truncated: int = 0
    duration_s: float = 0.0
    restarted: bool = False
    host_calls: int = 0
    #: The model's REPL variables after the cell, as ``name (type, length)`` lines.
    variables: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}


@dataclass
class _Deadline:
    """A cell clock that can be paused while the host serves a call."""

    budget: float
    used: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def pause(self) -> None:
        self.used += time.monotonic() - self.started

    def resume(self) -> None:
        self.started = time.monotonic()

    def remaining(self) -> float:
        return self.budget - self.used - (time.monotonic() - self.started)


#: How often a running cell checks whether the run was stopped (cancel, a tree-wide limit).
STOP_POLL_S = 0.2


class _Stopped(Exception):
    """Internal: the run was stopped while a cell ran."""


class _Crash(Exception):
    """Internal: the worker must be restarted; ``message`` goes to the model."""


def _no_handler(name: str, args: dict[str, Any]) -> Any:
    raise HostCallError(f"{name} is not available in this REPL")


class Sandbox:
    """One REPL worker on one context file. Not thread-safe: one cell at a time."""

    def __init__(
        self,
        context_path: Path,
        context_kind: str = "text",
        *,
        config: SandboxConfig | None = None,
        handler: Handler | None = None,
        extra_functions: dict[str, list[str]] | None = None,
    ) -> None:
        self.context_path = Path(context_path).resolve()
        self.context_kind = context_kind
        self.config = config or SandboxConfig()
        self.handler = handler or _no_handler
        #: More host functions (name -> parameter names) the worker exposes as stubs.
        self.extra_functions = dict(extra_functions or {})
        self.allowed_calls = HOST_FUNCTIONS | set(self.extra_functions)
        self._proc: subprocess.Popen[bytes] | None = None
        self._worker: jail.WorkerProcess | None = None
        self._buffer = bytearray()
        self._cell_seq = 0
        self._stderr_tail = bytearray()
        self.context_type = ""
        self.context_length = 0
        self.restarts = 0
        self._cell_budget = self.config.cell_timeout_s
        self._should_stop: Callable[[], bool] | None = None
        #: Where the worker finds the analysis packages (set by ``_spawn``; None: standard library only).
        self.packages_path: str | None = None

    # -- lifecycle ---------------------------------------------------------------
    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Spawn the worker and wait until it has loaded ``context``."""
        if self._proc is not None:
            return
        try:
            self._worker = self._spawn()
        except OSError as exc:
            raise SandboxError(f"cannot start the REPL worker: {exc}") from exc
        self._proc = self._worker.proc
        self._buffer.clear()
        self._stderr_tail.clear()
        threading.Thread(target=self._drain_stderr, args=(self._proc,), daemon=True).start()
        cfg = self.config
        try:
            self._send({
                "type": "init", "context_path": self._worker.context_path, "context_kind": self.context_kind,
                "max_output_chars": cfg.max_output_chars, "max_call_bytes": cfg.max_call_bytes,
                "rlimits": self._rlimits(), "extra_functions": self.extra_functions,
                "huge_input_bytes": cfg.huge_input_bytes, "regex_timeout_s": cfg.regex_timeout_s,
                "context_facts": text_facts(self.context_path) if self.context_kind == "text" else None,
                "packages_path": self.packages_path,
            })
            deadline = time.monotonic() + 120.0
            ready = self._read(deadline)
            if ready.get("type") == "booted":
                ready = self._read(deadline)
        except _Crash as exc:
            self.close()
            raise SandboxError(f"the REPL worker failed to start: {exc}. {self._stderr_text()}") from None
        if ready.get("type") != "ready":
            self.close()
            raise SandboxError("the REPL worker sent an unexpected first message")
        self.context_type = _str(ready.get("context_type"))[:40]
        length = ready.get("context_length")
        self.context_length = length if isinstance(length, int) and 0 <= length < 1 << 62 else 0

    def _spawn(self) -> jail.WorkerProcess:
        """Start the worker process (the escape suite overrides this to spawn a weakened jail)."""
        cfg = self.config
        env = packages.current_env(cfg.packages_dir)
        self.packages_path = None if env is None else jail.JAIL_PACKAGES if cfg.mode == "bwrap" else str(env)
        return jail.spawn(cfg.mode, self.context_path, scratch_mb=cfg.scratch_mb,
                          allow_processes=cfg.allow_subprocesses, packages=env)

    @property
    def huge_context(self) -> bool:
        """True when the worker keeps ``context`` memory-mapped (a ``Context`` object, not a str)."""
        return self.context_kind == "text" and 0 < self.config.huge_input_bytes < self.context_path.stat().st_size

    def _rlimits(self) -> dict[str, int]:
        cfg = self.config
        context_bytes = self.context_path.stat().st_size
        # address space must hold the mapped file, plus the decoded str (up to 4 bytes/char) below the threshold
        context_room = context_bytes if self.huge_context else 5 * context_bytes
        limits = {
            "AS": cfg.memory_mb * 1024 * 1024 + context_room,
            "CPU": cfg.cpu_seconds,
            "NOFILE": cfg.max_open_files,
            "FSIZE": cfg.max_file_size_mb * 1024 * 1024,
            "CORE": 0,
        }
        if self.config.mode == "bwrap" and os.getuid() != 0:
            # Threads and (if allowed) processes. Older kernels count every task of the real uid, newer
            # ones (5.14+) the sandbox's user namespace only; adding the uid's count is right for the
            # former and merely loose for the latter. Root is exempt from RLIMIT_NPROC: there, as
            # everywhere, the seccomp filter refusing fork/vfork/clone-without-CLONE_THREAD is what
            # stops fork bombs, and RLIMIT_AS bounds thread stacks.
            limits["NPROC"] = cfg.max_processes + _processes_of_uid(os.getuid())
        return limits

    def close(self) -> None:
        """Kill the worker (and, for bubblewrap, its whole pid namespace)."""
        proc, self._proc = self._proc, None
        worker, self._worker = self._worker, None
        if proc is not None:
            terminate(worker, proc)

    def restart(self) -> None:
        """Kill and respawn the worker: a fresh namespace with ``context`` loaded again."""
        self.close()
        self.restarts += 1
        self.start()

    # -- cells -------------------------------------------------------------------
    def execute(self, code: str, *, timeout: float | None = None,
                should_stop: Callable[[], bool] | None = None) -> CellResult:
        """Run one cell; model errors come back in ``CellResult.error``, never raised.

        ``should_stop`` is polled while the worker computes (every
        :data:`STOP_POLL_S`): when it returns True the worker is killed at once and
        the cell ends with an error, so a cancelled run does not wait for a long cell.
        """
        self._should_stop = should_stop
        self.start()
        self._cell_seq += 1
        clock = _Deadline(budget=timeout or self.config.cell_timeout_s)
        self._cell_budget = clock.budget
        calls = 0
        try:
            self._send({"type": "execute", "id": self._cell_seq, "code": code})
            while True:
                message = self._read(time.monotonic() + max(0.0, clock.remaining()))
                kind = message.get("type")
                if kind == "result" and message.get("id") == self._cell_seq:
                    return self._result(message, time.monotonic() - clock.started + clock.used, calls)
                if kind != "call":
                    raise _Crash("the worker broke the sandbox protocol (an unexpected message)")
                calls += 1
                clock.pause()
                self._serve_call(message)
                clock.resume()
        except _Stopped:
            self.close()  # the run is over: no restart; a later execute() starts a fresh worker
            return CellResult(error="the run was stopped while this cell ran; the cell was killed",
                              duration_s=clock.used + (time.monotonic() - clock.started), host_calls=calls)
        except _Crash as exc:
            self.restart()
            return CellResult(
                error=f"{exc}. The REPL was restarted: all your variables are gone; `context` is loaded again.",
                duration_s=clock.used + (time.monotonic() - clock.started), restarted=True, host_calls=calls,
            )

    def _result(self, message: protocol.Message, duration: float, calls: int) -> CellResult:
        cap = self.config.max_output_chars
        final = message.get("final")
        final_value = final.get("value") if isinstance(final, dict) else None
        error = message.get("error")
        truncated = message.get("truncated")
        truncated = truncated if isinstance(truncated, int) and 0 <= truncated < 1 << 53 else 0
        stdout, stderr = _str(message.get("stdout")), _str(message.get("stderr"))
        truncated += max(0, len(stdout) - cap) + max(0, len(stderr) - cap)
        return CellResult(
            stdout=escape_controls(stdout[:cap])[:cap],
            stderr=escape_controls(stderr[:cap])[:cap],
            error=escape_controls(error[:cap])[:cap] if isinstance(error, str) else None,
            final=escape_controls(final_value) if isinstance(final_value, str) else None,
            truncated=truncated,
            duration_s=duration,
            host_calls=calls,
            variables=_variables(message.get("variables")),
        )

    def _serve_call(self, message: protocol.Message) -> None:
        call_id, name, args = message.get("id"), message.get("name"), message.get("args")
        if not isinstance(call_id, int) or name not in self.allowed_calls or not isinstance(args, dict):
            raise _Crash("the worker broke the sandbox protocol (a malformed or unknown host-function call)")
        reply: dict[str, Any] = {"type": "reply", "id": call_id}
        try:
            reply.update(ok=True, value=self.handler(name, args))
        except HostCallError as exc:
            reply.update(ok=False, error=str(exc))
        except LimitReached as exc:
            reply.update(ok=False, stop=True, error=f"the run was stopped: {exc.limit}")
        self._send(reply)

    # -- frames ------------------------------------------------------------------
    def _send(self, message: protocol.Message) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            protocol.write_all(self._proc.stdin.fileno(), protocol.encode(message))
        except (BrokenPipeError, OSError):
            raise _Crash(self._death_reason()) from None

    def _read(self, deadline: float) -> protocol.Message:
        """One frame from the worker before ``deadline`` (monotonic), bounded in size."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        header = protocol.HEADER.size
        while True:
            if len(self._buffer) >= header:
                (length,) = protocol.HEADER.unpack_from(self._buffer)
                if length > self.config.max_call_bytes + 1024:
                    raise _Crash(f"the worker broke the sandbox protocol (a frame of {length:,} bytes, over the "
                                 f"limit of {self.config.max_call_bytes + 1024:,})")
                if len(self._buffer) >= header + length:
                    body = bytes(self._buffer[header:header + length])
                    del self._buffer[:header + length]
                    try:
                        return protocol.decode(body)
                    except protocol.FrameError as exc:
                        raise _Crash(f"the worker broke the sandbox protocol ({exc})") from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Crash(f"the cell timed out after {self._cell_budget:g}s wall-clock and was killed")
            ready = _wait_readable(fd, min(remaining, STOP_POLL_S))  # poll: select() fails on fds >= 1024
            if not ready:
                if self._should_stop is not None and self._should_stop():
                    raise _Stopped()
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise _Crash(self._death_reason())
            self._buffer += chunk

    def _death_reason(self) -> str:
        proc = self._proc
        code = None
        if proc is not None:
            try:
                code = proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        tail = self._stderr_text()
        if "MemoryError" in tail:
            return "the REPL worker ran out of memory and died"
        if code is not None and code < 0:
            return f"the REPL worker was killed by signal {_signal_name(-code)}"
        if code is not None and code > 128 and self.config.mode == "bwrap":  # bwrap reports 128 + signal
            return f"the REPL worker was killed by signal {_signal_name(code - 128)}"
        return f"the REPL worker died (exit code {code})"

    def _drain_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        stream = proc.stderr
        assert isinstance(stream, io.BufferedReader)  # a buffered binary pipe (Popen's default, ForkedProcess's)
        for line in iter(lambda: stream.read1(4096), b""):
            if proc is self._proc:  # a previous worker's last words are not this one's
                self._stderr_tail += line
                del self._stderr_tail[:-4096]

    def _stderr_text(self) -> str:
        return escape_controls(self._stderr_tail.decode("utf-8", "replace").strip()[-500:])


def terminate(worker: jail.WorkerProcess | None, proc: subprocess.Popen[bytes]) -> None:
    """Kill a worker (for bubblewrap, its whole pid namespace), close its pipes and wait for it."""
    if worker is not None:
        worker.kill()
    else:  # started by a subclass without jail.spawn (e.g. a pre-started pool): kill its process group
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for stream in (proc.stdin, proc.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wait_readable(fd: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0.0, timeout) * 1000))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _variables(entries: object, limit: int = 40) -> tuple[str, ...]:
    """``name (type, length)`` for each well-formed ``[name, type, length]`` entry the worker sent."""
    if not isinstance(entries, list):
        return ()
    described = []
    for entry in entries[:limit]:
        if not (isinstance(entry, list) and len(entry) == 3):
            continue
        name, kind, length = entry
        if not (isinstance(name, str) and isinstance(kind, str) and name.isidentifier() and kind.isidentifier()
                and len(name) <= 64 and len(kind) <= 40):
            continue
        sized = isinstance(length, int) and not isinstance(length, bool) and 0 <= length < 1 << 62
        described.append(f"{name} ({kind}, {length:,})" if sized else f"{name} ({kind})")
    return tuple(described)


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


# C0 controls but tab and newline, a carriage return not starting a CRLF, DEL, C1 controls, bidi overrides.
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]|\r(?!\n)")


def escape_controls(text: str) -> str:
    """Make worker text safe for a terminal or log: control characters become visible escapes (``\\x1b``)."""
    return _CONTROLS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _processes_of_uid(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += 1
            except OSError:
                continue
    return count
