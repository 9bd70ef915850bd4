"""The worker's seccomp filter, assembled by hand as classic BPF (host side, stdlib only).

bubblewrap loads it with ``--seccomp FD`` just before it executes the worker, so
every thread of the worker and anything it could start runs under it, and
``no_new_privs`` is set. No library is needed: the program is a flat list of
``struct sock_filter`` (``u16 code, u8 jt, u8 jf, u32 k``) in native byte order.

Policy (every rule *returns an error*; nothing is killed, so ordinary code that
probes for a feature degrades gracefully):

* a foreign architecture (e.g. ``int 0x80`` i386 calls, the x32 ABI) -> ``ENOSYS``
* namespaces, mounts, kernel modules, keyrings, bpf, perf, userfaultfd,
  io_uring, cross-process memory access (``ptrace``, ``process_vm_*``, ``kcmp``,
  ``pidfd_getfd``), ``personality``, clock and host settings -> ``EPERM``
* ``clone3`` -> ``ENOSYS`` (its flags live in memory a filter cannot read; libc
  then falls back to ``clone``, whose flags are checked)
* ``clone`` with any ``CLONE_NEW*`` flag -> ``EPERM``; without ``CLONE_THREAD``
  (a new process: ``fork``, ``vfork``, ``posix_spawn``) -> ``EPERM`` unless
  processes are allowed; ``fork``/``vfork`` likewise
* ``ioctl`` ``TIOCSTI``/``TIOCLINUX`` (terminal injection) -> ``EPERM``; only the
  low 32 bits of the request are compared, as the kernel does (CVE-2019-10063)
* ``socket``/``socketpair`` of any family but ``AF_UNIX`` -> ``EAFNOSUPPORT``
"""

from __future__ import annotations

import errno
import platform
import struct
from dataclasses import dataclass

from rlm.errors import SandboxUnavailable

# BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]
_OFF_NR, _OFF_ARCH = 0, 4


def _arg_low(index: int) -> int:
    """Offset of the low 32 bits of syscall argument ``index`` (little-endian only)."""
    return 16 + 8 * index


TIOCSTI = 0x5412
TIOCLINUX = 0x541C
AF_UNIX = 1
CLONE_THREAD = 0x00010000
CLONE_NEW_FLAGS = (0x00000080 | 0x00020000 | 0x02000000 | 0x04000000  # NEWTIME NEWNS NEWCGROUP NEWUTS
                   | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000)  # NEWIPC NEWUSER NEWPID NEWNET

#: Syscalls answered with EPERM, whatever their arguments.
DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "open_tree", "move_mount",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "name_to_handle_at", "open_by_handle_at",
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "personality", "memfd_secret",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "acct", "swapon", "swapoff", "reboot", "syslog", "quotactl", "quotactl_fd", "lookup_dcookie",
    "fanotify_init", "vhangup", "sethostname", "setdomainname", "settimeofday", "clock_settime", "adjtimex",
)


@dataclass(frozen=True)
class Arch:
    """One native architecture: its AUDIT_ARCH value and syscall numbers."""

    audit_arch: int
    numbers: dict[str, int]
    #: syscall numbers at or above this belong to another ABI (x86_64's x32); 0: none
    foreign_from: int = 0


_X86_64 = Arch(0xC000003E, dict(
    kill=62, tkill=200, tgkill=234, rt_sigqueueinfo=129, rt_tgsigqueueinfo=297,
    ioctl=16, socket=41, socketpair=53, clone=56, fork=57, vfork=58, ptrace=101, syslog=103,
    personality=135, vhangup=153, pivot_root=155, adjtimex=159, chroot=161, acct=163, settimeofday=164,
    mount=165, umount2=166, swapon=167, swapoff=168, reboot=169, sethostname=170, setdomainname=171,
    init_module=175, delete_module=176, quotactl=179, lookup_dcookie=212, clock_settime=227, kexec_load=246,
    add_key=248, request_key=249, keyctl=250, unshare=272, perf_event_open=298, fanotify_init=300,
    name_to_handle_at=303, open_by_handle_at=304, setns=308, process_vm_readv=310, process_vm_writev=311,
    kcmp=312, finit_module=313, kexec_file_load=320, bpf=321, userfaultfd=323,
), foreign_from=0x40000000)

# The generic table (asm-generic/unistd.h), used by aarch64: no fork/vfork.
_AARCH64 = Arch(0xC00000B7, dict(
    kill=129, tkill=130, tgkill=131, rt_sigqueueinfo=138, rt_tgsigqueueinfo=240,
    lookup_dcookie=18, ioctl=29, umount2=39, mount=40, pivot_root=41, chroot=51, vhangup=58, quotactl=60,
    acct=89, personality=92, unshare=97, kexec_load=104, init_module=105, delete_module=106,
    clock_settime=112, syslog=116, ptrace=117, reboot=142, sethostname=161, setdomainname=162,
    settimeofday=170, adjtimex=171, socket=198, socketpair=199, add_key=217, request_key=218, keyctl=219,
    clone=220, swapon=224, swapoff=225, perf_event_open=241, fanotify_init=262, name_to_handle_at=264,
    open_by_handle_at=265, setns=268, process_vm_readv=270, process_vm_writev=271, kcmp=272,
    finit_module=273, bpf=280, userfaultfd=282, kexec_file_load=294,
))

# Numbers from 424 on are shared by every architecture.
_COMMON = dict(io_uring_setup=425, io_uring_enter=426, io_uring_register=427, open_tree=428, move_mount=429,
               fsopen=430, fsconfig=431, fsmount=432, fspick=433, clone3=435, pidfd_getfd=438,
               mount_setattr=442, quotactl_fd=443, memfd_secret=447, pidfd_send_signal=424, pidfd_open=434)

ARCHES = {"x86_64": _X86_64, "amd64": _X86_64, "aarch64": _AARCH64, "arm64": _AARCH64}


class UnsupportedArch(SandboxUnavailable):
    """No syscall table for this machine's architecture."""


def native_arch() -> Arch:
    machine = platform.machine().lower()
    if machine not in ARCHES:
        raise UnsupportedArch(f"no seccomp syscall table for architecture {machine!r} (x86_64 and aarch64 only)")
    return ARCHES[machine]


class _Program:
    """A tiny assembler: instructions with symbolic jump targets, resolved at the end."""

    def __init__(self) -> None:
        self.code: list[tuple[int, object, object, int]] = []
        self.labels: dict[str, int] = {}

    def ins(self, code: int, k: int, jt: object = 0, jf: object = 0) -> None:
        self.code.append((code, jt, jf, k))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def ret(self, value: int) -> None:
        self.ins(_RET_K, value)

    def assemble(self) -> bytes:
        out = bytearray()
        for index, (code, jt, jf, k) in enumerate(self.code):
            out += struct.pack("=HBBI", code, self._offset(index, jt), self._offset(index, jf), k)
        return bytes(out)

    def _offset(self, index: int, target: object) -> int:
        if isinstance(target, int):
            return target
        offset = self.labels[str(target)] - index - 1
        if not 0 <= offset <= 255:
            raise ValueError(f"BPF jump to {target} out of range ({offset})")
        return offset


#: Signal-sending syscalls whose first argument is the target's pid (or thread-group id).
SIGNAL_BY_PID = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
#: A placeholder for the worker's own pid in :func:`build_worker_filter` (patched in by the zygote's child).
PID_PLACEHOLDER = 0x7FFFFFFF


def _errno(code: int) -> int:
    return _RET_ERRNO | code


def build_filter(*, allow_processes: bool = False, arch: Arch | None = None) -> bytes:
    """The BPF program (bytes for ``bwrap --seccomp FD``) for the native architecture."""
    arch = arch or native_arch()
    nr = {**arch.numbers, **_COMMON}
    p = _Program()
    p.ins(_LD_W_ABS, _OFF_ARCH)
    p.ins(_JEQ_K, arch.audit_arch, 1, 0)
    p.ret(_errno(errno.ENOSYS))
    p.ins(_LD_W_ABS, _OFF_NR)
    if arch.foreign_from:
        p.ins(_JGE_K, arch.foreign_from, "enosys", 0)
    for name in DENIED:
        p.ins(_JEQ_K, nr[name], "eperm", 0)
    p.ins(_JEQ_K, nr["clone3"], "enosys", 0)
    p.ins(_JEQ_K, nr["clone"], "clone", 0)
    p.ins(_JEQ_K, nr["ioctl"], "ioctl", 0)
    p.ins(_JEQ_K, nr["socket"], "socket", 0)
    p.ins(_JEQ_K, nr["socketpair"], "socket", 0)
    for name in ("fork", "vfork"):
        if name in nr and not allow_processes:
            p.ins(_JEQ_K, nr[name], "eperm", 0)
    p.ret(RET_ALLOW)
    p.label("clone")
    p.ins(_LD_W_ABS, _arg_low(0))
    p.ins(_JSET_K, CLONE_NEW_FLAGS, "eperm", 0)
    if not allow_processes:
        p.ins(_JSET_K, CLONE_THREAD, 1, 0)  # a thread: allowed; a new process: EPERM
        p.ret(_errno(errno.EPERM))
    p.ret(RET_ALLOW)
    p.label("ioctl")
    p.ins(_LD_W_ABS, _arg_low(1))
    p.ins(_JEQ_K, TIOCSTI, "eperm", 0)
    p.ins(_JEQ_K, TIOCLINUX, "eperm", 0)
    p.ret(RET_ALLOW)
    p.label("socket")
    p.ins(_LD_W_ABS, _arg_low(0))
    p.ins(_JEQ_K, AF_UNIX, 1, 0)
    p.ret(_errno(errno.EAFNOSUPPORT))
    p.ret(RET_ALLOW)
    p.label("eperm")
    p.ret(_errno(errno.EPERM))
    p.label("enosys")
    p.ret(_errno(errno.ENOSYS))
    return p.assemble()


def build_worker_filter(*, allow_processes: bool = False, arch: Arch | None = None) -> tuple[bytes, list[int]]:
    """The filter a zygote's child installs on top of its jail's (see ``sandbox/zygote.py``).

    Workers forked by one zygote share a jail (one per run). This filter keeps each to
    itself: no new processes (unless ``allow_processes``), and signals only to its own
    pid or process group (``kill``, ``tgkill``, ``rt_*sigqueueinfo``; ``tkill`` and the
    pidfd calls are refused). Returns the program and the indices of the instructions
    whose constant is :data:`PID_PLACEHOLDER`, to be set to the worker's pid.
    """
    arch = arch or native_arch()
    nr = {**arch.numbers, **_COMMON}
    p = _Program()
    p.ins(_LD_W_ABS, _OFF_ARCH)
    p.ins(_JEQ_K, arch.audit_arch, 1, 0)
    p.ret(_errno(errno.ENOSYS))
    p.ins(_LD_W_ABS, _OFF_NR)
    for name in ("tkill", "pidfd_send_signal", "pidfd_open"):
        p.ins(_JEQ_K, nr[name], "eperm", 0)
    for name in SIGNAL_BY_PID:
        p.ins(_JEQ_K, nr[name], "signal", 0)
    if not allow_processes:
        p.ins(_JEQ_K, nr["clone"], "clone", 0)
        for name in ("fork", "vfork"):
            if name in nr:
                p.ins(_JEQ_K, nr[name], "eperm", 0)
    p.ret(RET_ALLOW)
    p.label("signal")
    p.ins(_LD_W_ABS, _arg_low(0))
    slots = [len(p.code)]
    p.ins(_JEQ_K, PID_PLACEHOLDER, "allow", 0)  # its own pid
    p.ins(_JEQ_K, 0, "allow", 0)  # its own process group (it leads a session of its own)
    p.ret(_errno(errno.EPERM))
    p.label("clone")
    p.ins(_LD_W_ABS, _arg_low(0))
    p.ins(_JSET_K, CLONE_THREAD, "allow", 0)  # a thread: allowed; a new process: EPERM
    p.ret(_errno(errno.EPERM))
    p.label("allow")
    p.ret(RET_ALLOW)
    p.label("eperm")
    p.ret(_errno(errno.EPERM))
    return p.assemble(), slots
