"""The zygote: one process inside a jail that forks a fresh REPL worker per request. Standard library only.

Starting a worker in a jail of its own costs a bubblewrap set-up and a Python
start (~40 ms of CPU); forking it from a process that has already imported the
worker costs ~1 ms. :mod:`rlm.sandbox.forkserver` starts one zygote per run and
asks it for each agent's worker. This file runs inside the jail
(``python -I -S -B zygote.pyc FD``), beside ``worker.pyc``.

Protocol, over the ``SOCK_SEQPACKET`` Unix socket ``FD`` from the host:

* the zygote sends ``{"type": "ready"}`` once it has imported everything;
* a request is one JSON message ``{"filter": HEX, "pid_slots": [...]}`` carrying
  five descriptors: the worker's stdin (read end), stdout and stderr (write
  ends), a status pipe (write end) and its context file (read-only);
* the zygote forks; the worker gets them as fds 0, 1, 2 and :data:`CONTEXT_FD` and
  nothing else (the worker then moves its protocol pipes to 3 and 4, as in a jail
  of its own);
  the zygote answers ``{"pid": N}`` (the pid in the jail's namespace) with a
  pidfd of the worker, with which the host kills it;
* when a worker ends, the zygote writes its wait status (decimal) into the
  worker's status pipe and closes it: the host learns how it died;
* end of stream on the socket: the zygote exits, and the jail with it.

Before it runs the worker, the forked child makes itself its own session,
non-dumpable (a sibling worker cannot read its memory, descriptors or
environment through ``/proc``), moves into a private scratch directory, and
installs the per-worker seccomp filter it was sent (on top of the jail's): no
new processes unless the run allows them, and signals only to itself. The pid
slots of the filter are patched with the worker's own pid first.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import struct
import sys

# ``typing`` is not imported at run time (every worker is forked from here): this name exists for the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

if __package__:
    from . import worker
else:  # run as a plain script inside the jail: worker.pyc sits beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import worker  # type: ignore[no-redef]  # the same module, found beside this file

PR_SET_SECCOMP = 22
PR_SET_DUMPABLE = 4
SECCOMP_MODE_FILTER = 2
MAX_MESSAGE = 1 << 16
#: Loaded before any fork: every worker inherits it instead of loading it again.
_LIBC = ctypes.CDLL(None, use_errno=True)
FDS_PER_REQUEST = 5
#: Where a forked worker finds its context (read-only; closed once decoded).
CONTEXT_FD = 9


class Zygote:
    """The fork loop (see the module docstring)."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.status_fds: dict[int, int] = {}  # worker pid -> write end of its status pipe

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, self._reap)
        self.control.send(json.dumps({"type": "ready"}).encode())
        while True:
            message, fds, _, _ = socket.recv_fds(self.control, MAX_MESSAGE, FDS_PER_REQUEST)
            if not message:
                return  # the host is gone
            if len(fds) != FDS_PER_REQUEST:
                for fd in fds:
                    os.close(fd)
                continue
            self._fork(json.loads(message), fds)

    def _fork(self, request: dict[str, Any], fds: list[int]) -> None:
        # SIGCHLD stays blocked until the new worker is recorded: a worker that dies at once is reaped after.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        try:
            pid = os.fork()
            if pid == 0:
                self._become_worker(request, fds)
            self.status_fds[pid] = fds[3]
            for index in (0, 1, 2, 4):
                os.close(fds[index])
            pidfd = os.pidfd_open(pid)
            try:
                socket.send_fds(self.control, [json.dumps({"pid": pid}).encode()], [pidfd])
            finally:
                os.close(pidfd)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})

    def _reap(self, signum: int, frame: object) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            fd = self.status_fds.pop(pid, None)
            if fd is not None:
                try:
                    os.write(fd, str(status).encode())
                except OSError:
                    pass
                os.close(fd)

    def _become_worker(self, request: dict[str, Any], fds: list[int]) -> None:
        """In the forked child: keep only the worker's descriptors, confine it, run it. Never returns."""
        code = 1
        try:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            self.control.detach()  # its descriptor is closed below; the object must not close a reused number
            for target, fd in zip((0, 1, 2, CONTEXT_FD), (fds[0], fds[1], fds[2], fds[4]), strict=True):
                os.dup2(fd, target)
            os.closerange(3, CONTEXT_FD)  # the control socket, other workers' status pipes, the originals
            os.closerange(CONTEXT_FD + 1, 1 << 16)
            os.setsid()
            _confine(request)
            worker.main()
            code = 0
        finally:
            os._exit(code)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _private_dir(parent: str) -> str:
    """A new directory of mode 0700 under ``parent`` with a random name (what ``tempfile.mkdtemp`` does; not
    importing ``tempfile`` takes ~5 ms off every zygote's start)."""
    while True:
        path = os.path.join(parent, "agent-" + os.urandom(8).hex())
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path


def _confine(request: dict[str, Any]) -> None:
    """Non-dumpable, a private scratch directory, and the per-worker seccomp filter (if any)."""
    libc = _LIBC
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")
    scratch = _private_dir(os.environ.get("HOME") or "/tmp")
    os.chdir(scratch)
    os.environ["HOME"] = scratch
    program = bytes.fromhex(request.get("filter") or "")
    if not program:
        return
    patched = bytearray(program)
    for slot in request.get("pid_slots") or ():
        struct.pack_into("=I", patched, 8 * int(slot) + 4, os.getpid())
    buffer = ctypes.create_string_buffer(bytes(patched), len(patched))
    prog = _SockFprog(len(patched) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    try:
        Zygote(control).serve()
    finally:
        control.close()


if __name__ == "__main__":
    main()
