"""How the worker process is launched: inside bubblewrap, or (opt-in) unsandboxed.

The bubblewrap command line is the whole of the isolation, so it is built in one
place (:func:`bwrap_argv`) and read like a policy: new user/pid/ipc/net/uts/cgroup
namespaces (no network at all, not even loopback), no capabilities, no nested
user namespaces, read-only system directories, only the Python installation,
the worker's own source files and the context file bound in (nothing from
``$HOME``, ``/tmp``, ``/run``, the project or the run log), size-capped tmpfs
for ``/tmp`` and ``/dev/shm``, a cleared environment, a new session (no
terminal), death with the parent, and the seccomp filter of
:mod:`rlm.sandbox.seccomp`.

:func:`spawn` starts it so that nothing leaks in: bwrap itself gets the
worker's minimal environment (the sandbox's pid 1 is a fork of bwrap, and its
``/proc/1/environ`` is readable inside), the policy travels through
``--args FD`` (so ``/proc/1/cmdline`` shows no host paths), the BPF program
through ``--seccomp FD``, and ``--json-status-fd`` reports the pid of the
sandbox's init so that :meth:`WorkerProcess.kill` can kill the whole pid
namespace through a pidfd.

:func:`launch` returns a plain argv (through the ``launcher.py`` trampoline, which
sets up those descriptors and execs bwrap), so any ``Popen`` can start it;
:func:`spawn` adds the status pipe.

``weaken`` exists for the escape suite only (it refuses to run outside pytest):
it removes named protections so the suite can prove its probes notice an escape.
"""

from __future__ import annotations

import functools
import json
import os
import select
import shutil
import signal
import subprocess
import threading
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from rlm.errors import ConfigError, SandboxUnavailable
from rlm.sandbox import seccomp

WORKER_DIR = Path(__file__).resolve().parent
#: The stdlib-only modules bound into the jail beside each other.
WORKER_FILES = ("worker.py", "protocol.py", "bigcontext.py")  # launcher.py runs on the host side
JAIL_WORKER_DIR = "/opt/rlm-sandbox"
JAIL_CONTEXT_PATH = "/input/context"
JAIL_SCRATCH = "/tmp"
#: Where a Python installed outside /usr (pyenv, conda, uv: often under $HOME) is bound, so no host path shows.
JAIL_PYTHON_PREFIX = "/opt/rlm-python"
#: The only environment the worker sees (bwrap itself is started with it too).
WORKER_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": JAIL_SCRATCH,
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
    # Keep multi-MiB buffers (a huge Context is scanned in 8 MiB pieces) in the heap instead of a fresh
    # mmap per buffer: on small VMs the page faults of mapping and unmapping cost 10x the copying.
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(64 << 20),
}
_ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/nsswitch.conf", "/etc/passwd", "/etc/group")
#: Protections the test suite may remove (see :func:`spawn`); never reachable from the CLI or config.
WEAKENINGS = frozenset({"net", "seccomp", "env", "fs", "pid"})


@dataclass(frozen=True, slots=True)
class Launch:
    """A ready-to-spawn worker command: argv, env, the context path as the worker sees it, the BPF filter."""

    argv: list[str]
    env: dict[str, str]
    context_path: str
    seccomp_filter: bytes | None = None


@dataclass
class WorkerProcess:
    """A spawned worker: the process the host talks to, and a pidfd on the sandbox's init."""

    proc: subprocess.Popen[bytes]
    context_path: str
    init_pidfd: int | None = None
    _status_fd: int | None = field(default=None, repr=False)

    def kill(self) -> None:
        """SIGKILL the pid namespace's init (everything inside dies with it), then bwrap itself."""
        if self.init_pidfd is not None:
            try:
                signal.pidfd_send_signal(self.init_pidfd, signal.SIGKILL)
            except OSError:
                pass  # already gone
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for fd in (self.init_pidfd, self._status_fd):
            if fd is not None:
                os.close(fd)
        self.init_pidfd = self._status_fd = None


def python_executable() -> str:
    """The real interpreter behind the venv (the jail binds its prefix, not the venv)."""
    return os.path.realpath(sys.executable)


def _root_links() -> list[str]:
    """Recreate merged-/usr symlinks (/bin -> usr/bin ...) or bind the real dirs read-only."""
    args: list[str] = []
    for name in ("bin", "lib", "lib32", "lib64", "libx32", "sbin"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args


def _python_in_jail(python: str) -> tuple[str, str | None, dict[str, str]]:
    """(interpreter path inside the jail, host prefix to bind at JAIL_PYTHON_PREFIX or None, extra env)."""
    prefix = os.path.realpath(sys.base_prefix)
    if prefix.startswith("/usr/") or prefix == "/usr" or not python.startswith(prefix + "/"):
        return python, None, {}
    # The interpreter finds its stdlib relative to itself; its RUNPATH names the host prefix, so the
    # loader is pointed at the moved lib directory explicitly.
    return (JAIL_PYTHON_PREFIX + python[len(prefix):], prefix,
            {"LD_LIBRARY_PATH": JAIL_PYTHON_PREFIX + "/lib"})


def _filesystem(context_file: Path, scratch_mb: int, weaken: frozenset[str], python: str) -> list[str]:
    _, prefix, _ = _python_in_jail(python)
    size = str(scratch_mb * 1024 * 1024)
    if prefix is not None:
        python_bind = ["--ro-bind", prefix, JAIL_PYTHON_PREFIX]
    elif python.startswith("/usr/"):
        python_bind = []
    else:  # an interpreter outside its prefix (unusual): bind its directory where it is
        python_bind = ["--ro-bind", os.path.dirname(python), os.path.dirname(python)]
    if "fs" in weaken:  # test-only: every host top-level directory but the ones the jail builds
        args = []
        for entry in sorted(os.listdir("/")):
            if entry not in ("proc", "dev", "tmp", "sys", "opt", "input"):
                args += ["--ro-bind-try" if not os.path.islink("/" + entry) else "--symlink",
                         os.readlink("/" + entry) if os.path.islink("/" + entry) else "/" + entry, "/" + entry]
    else:
        args = ["--ro-bind", "/usr", "/usr", *_root_links()]
        for etc in _ETC_FILES:
            args += ["--ro-bind-try", etc, etc]
    args += python_bind
    for name in WORKER_FILES:
        args += ["--ro-bind", str(WORKER_DIR / name), f"{JAIL_WORKER_DIR}/{name}"]
    return args + [
        "--ro-bind", str(context_file), JAIL_CONTEXT_PATH,
        # /proc/sys read-only: when rlm runs as root the sandbox's uid maps to host root, and sysctl
        # permission checks look at that uid, so global settings (kernel.core_pattern...) would be writable.
        "--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys", "--dev", "/dev",
        "--size", size, "--tmpfs", "/dev/shm",
        "--size", size, "--tmpfs", JAIL_SCRATCH,
        "--chdir", JAIL_SCRATCH,
        "--remount-ro", "/",
    ]


def bwrap_argv(context_file: Path, *, scratch_mb: int, python: str | None = None,
               seccomp_fd: int | None = None, weaken: frozenset[str] = frozenset()) -> list[str]:
    """The bubblewrap command that runs the worker on ``context_file`` (the policy, in one list)."""
    python = python or python_executable()
    unshare = ["--unshare-user", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    unshare += [] if "net" in weaken else ["--unshare-net"]
    unshare += [] if "pid" in weaken else ["--unshare-pid"]
    args = [
        shutil.which("bwrap") or "bwrap", *unshare, "--disable-userns", "--cap-drop", "ALL",
        "--uid", "65534", "--gid", "65534", "--hostname", "rlm-sandbox",
        "--new-session", "--die-with-parent",
    ]
    if "env" not in weaken:
        args.append("--clearenv")
    args += _filesystem(context_file, scratch_mb, weaken, python)
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    inside, _, extra_env = _python_in_jail(python)
    for key, value in {**WORKER_ENV, **extra_env}.items():
        args += ["--setenv", key, value]
    return args + ["--", inside, "-I", "-S", "-B", f"{JAIL_WORKER_DIR}/worker.py"]


def launch(mode: str, context_file: Path, *, scratch_mb: int, allow_processes: bool = False,
           weaken: frozenset[str] = frozenset()) -> Launch:
    """The command for ``mode`` (``"bwrap"`` or ``"unsafe"``): runnable as is with ``Popen``."""
    if weaken:
        _check_weaken(weaken)
    if mode == "bwrap":
        check_bwrap()
        bpf = None if "seccomp" in weaken else _seccomp_filter(allow_processes)
        argv = bwrap_argv(context_file, scratch_mb=scratch_mb, seccomp_fd=None if bpf is None else -1,
                          weaken=weaken)
        env = {**os.environ, **WORKER_ENV} if "env" in weaken else dict(WORKER_ENV)
        trampoline = [python_executable(), "-I", "-S", "-B", str(WORKER_DIR / "launcher.py"), (bpf or b"").hex(), "--"]
        return Launch(trampoline + argv, env, JAIL_CONTEXT_PATH, bpf)
    argv = [python_executable(), "-I", "-S", "-B", str(WORKER_DIR / "worker.py")]
    return Launch(argv, dict(WORKER_ENV), str(context_file))


def spawn(mode: str, context_file: Path, *, scratch_mb: int, allow_processes: bool = False,
          weaken: frozenset[str] = frozenset()) -> WorkerProcess:
    """Start the worker for ``mode``: stdio on pipes, no other descriptor inherited."""
    spec = launch(mode, context_file, scratch_mb=scratch_mb, allow_processes=allow_processes, weaken=weaken)
    if mode != "bwrap":
        return WorkerProcess(_popen(spec.argv, spec.env, ()), spec.context_path)
    status_r, status_w = os.pipe()
    at = spec.argv.index(str(WORKER_DIR / "launcher.py")) + 1
    argv = [*spec.argv[:at], "--status-fd", str(status_w), *spec.argv[at:]]
    try:
        proc = _popen(argv, spec.env, (status_w,))
    except BaseException:
        os.close(status_r)
        raise
    finally:
        os.close(status_w)
    return WorkerProcess(proc, spec.context_path, _init_pidfd(status_r), status_r)


def _popen(argv: list[str], env: dict[str, str], pass_fds: tuple[int, ...]) -> subprocess.Popen[bytes]:
    """Start the process from one of this process's long-lived spawner threads.

    bubblewrap's ``--die-with-parent`` is ``PR_SET_PDEATHSIG``, which fires when the
    *thread* that forked it exits, not the process. Workers are started from many
    threads (an agent's, a pool refill's, a Ray actor call's) that end long before the
    worker should; spawned from a thread that lives as long as the process, a worker
    dies with the process, as meant, and never with the thread that asked for it.
    """
    return _spawner().submit(subprocess.Popen, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, close_fds=True, pass_fds=pass_fds,
                             start_new_session=True, cwd="/").result()


_spawner_pool: tuple[int, ThreadPoolExecutor] | None = None
_spawner_lock = threading.Lock()


def _spawner() -> ThreadPoolExecutor:
    """The process's spawner threads (idle executor threads never exit; made again after a fork)."""
    global _spawner_pool
    with _spawner_lock:
        if _spawner_pool is None or _spawner_pool[0] != os.getpid():
            _spawner_pool = (os.getpid(), ThreadPoolExecutor(max_workers=4, thread_name_prefix="rlm-spawner"))
        return _spawner_pool[1]


def _init_pidfd(status_fd: int, timeout: float = 10.0) -> int | None:
    """Read bwrap's first JSON status line (``{"child-pid": N}``) and open a pidfd on that init."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"}" not in data and len(data) < 4096:
        poller = select.poll()  # not select(): a host with many pre-started sandboxes has fds >= 1024
        poller.register(status_fd, select.POLLIN)
        ready = poller.poll(max(0.0, deadline - time.monotonic()) * 1000)
        chunk = os.read(status_fd, 4096) if ready else b""
        if not chunk:
            return None
        data += chunk
    try:
        pid = json.loads(data[:data.index(b"}") + 1])["child-pid"]
        return os.pidfd_open(int(pid))
    except (ValueError, KeyError, TypeError, OSError):
        return None


@functools.lru_cache(maxsize=2)
def _seccomp_filter(allow_processes: bool) -> bytes:
    try:
        return seccomp.build_filter(allow_processes=allow_processes)
    except seccomp.UnsupportedArch as exc:
        raise SandboxUnavailable(f"{exc}; rlm cannot build its seccomp filter here. Pass --unsafe-no-sandbox "
                                 "to run model code without isolation (not for untrusted input).") from None


def _check_weaken(weaken: frozenset[str]) -> None:
    unknown = set(weaken) - WEAKENINGS
    if unknown:
        raise ConfigError(f"unknown sandbox weakening(s): {sorted(unknown)}")
    if "pytest" not in sys.modules:
        raise ConfigError("a weakened sandbox exists for rlm's escape test suite only")


@functools.lru_cache(maxsize=1)
def check_bwrap() -> None:
    """Fail closed, with a fix, when bubblewrap cannot create the namespaces here."""
    exe = shutil.which("bwrap")
    hint = ("Install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`) on a Linux host that allows "
            "unprivileged user namespaces, or pass --unsafe-no-sandbox to run model code without isolation "
            "(rlimits only; not for untrusted input).")
    if exe is None:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed; rlm will not run model code unsandboxed. {hint}")
    probe = [exe, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
             "--disable-userns", "--cap-drop", "ALL", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--", "/bin/true"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=20, env=dict(WORKER_ENV))
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailable(f"bubblewrap could not be started ({exc}). {hint}") from None
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()[:300]
        raise SandboxUnavailable(f"bubblewrap cannot create namespaces here: {detail}. {hint}")
