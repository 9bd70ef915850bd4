"""Host-side trampoline that hands bubblewrap its policy and seccomp filter through pipes. Stdlib only.

``python -I -S launcher.py [--status-fd N] BPF_HEX -- BWRAP ARGS... -- COMMAND...``

bubblewrap reads a seccomp program only from a file descriptor, and the sandbox's
pid 1 (a fork of bwrap) shows bwrap's command line in ``/proc/1/cmdline``. This
trampoline makes :func:`rlm.sandbox.jail.launch` a plain argv any ``Popen`` can run:
it writes the BPF program (hex, empty for none) into one pipe, the policy
(everything between bwrap and the command's ``--``) into another, replaces the
``--seccomp`` placeholder with the first pipe's descriptor, and ``exec``s
``bwrap [--json-status-fd N] --args FD -- COMMAND...``. The process keeps its pid,
so the caller's process handle, process group and bwrap's ``--die-with-parent``
all refer to the caller, exactly as if it had run bwrap itself.
"""

from __future__ import annotations

import os
import sys


def _pipe_with(data: bytes) -> int:
    """An inheritable read end already holding ``data`` (it must fit the pipe buffer), then EOF."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, data)
    os.close(write_fd)
    os.set_inheritable(read_fd, True)
    return read_fd


def main(argv: list[str]) -> None:
    status = []
    if argv[:1] == ["--status-fd"]:
        status, argv = ["--json-status-fd", argv[1]], argv[2:]
    bpf, rest = bytes.fromhex(argv[0]), argv[2:]
    split = rest.index("--")
    exe, policy, command = rest[0], rest[1:split], rest[split:]
    if bpf:
        policy[policy.index("--seccomp") + 1] = str(_pipe_with(bpf))
    args_fd = _pipe_with(b"".join(arg.encode() + b"\0" for arg in policy))
    os.execv(exe, [exe, *status, "--args", str(args_fd), *command])


if __name__ == "__main__":
    main(sys.argv[1:])
