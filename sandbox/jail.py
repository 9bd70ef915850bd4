"""How the worker process is launched: inside bubblewrap, or (opt-in) unsandboxed.

The bubblewrap command line is the whole of the isolation, so it is built in one
place (:func:`bwrap_policy`) and read like a policy: new user/pid/ipc/net/uts/cgroup
namespaces (no network at all, not even loopback), no capabilities, no nested
user namespaces, read-only system directories, only the Python installation,
the worker's own files, the context file and the analysis packages
(:mod:`rlm.sandbox.packages`, never the host's venv) bound in (nothing from
``$HOME``, ``/tmp``, ``/run``, the project or the run log), size-capped tmpfs
for ``/tmp`` and ``/dev/shm``, a cleared environment, a new session (no
terminal), death with the parent, and the seccomp filter of
:mod:`rlm.sandbox.seccomp`.

:func:`spawn` starts it so that nothing leaks in: bwrap itself gets the
worker's minimal environment (the sandbox's pid 1 is a fork of bwrap, and its
``/proc/1/environ`` is readable inside), the policy travels through
``--args FD`` (so ``/proc/1/cmdline`` shows no host paths), the BPF program
through ``--seccomp FD`` (both are pipes the host fills and closes before
starting bwrap), and ``--json-status-fd`` reports the pid of the sandbox's init
so that :meth:`WorkerProcess.kill` can kill the whole pid namespace through a
pidfd. :func:`launch` is the pure part (checks, policy, command); :func:`spawn`
makes the descriptors and starts bwrap.

The worker runs from bytecode compiled once per source version and interpreter
into a private cache directory (:func:`worker_files`), which is bound read-only
at ``/opt/rlm-sandbox``; where that cache cannot be written the source files are
bound instead.

``weaken`` exists for the escape suite only (it refuses to run outside pytest):
it removes named protections so the suite can prove its probes notice an escape.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import importlib.util
import json
import marshal
import os
import select
import shutil
import signal
import stat
import subprocess
import tempfile
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
WORKER_FILES = ("worker.py", "protocol.py", "bigcontext.py", "zygote.py")
JAIL_WORKER_DIR = "/opt/rlm-sandbox"
JAIL_CONTEXT_PATH = "/input/context"
JAIL_SCRATCH = "/tmp"
#: Where the sandbox's analysis packages (rlm.sandbox.packages) are bound read-only, when installed.
JAIL_PACKAGES = "/opt/rlm-packages"
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
    # The same str hashes in every worker, so a set prints in the same order in a replay of a run
    # (rlm.records). Read only without -E, which is why the worker runs with -P -s instead of -I: its
    # environment is this dictionary alone either way (bwrap --clearenv; a plain subprocess given it).
    "PYTHONHASHSEED": "0",
    # Keep multi-MiB buffers (a huge Context is scanned in 8 MiB pieces) in the heap instead of a fresh
    # mmap per buffer: on small VMs the page faults of mapping and unmapping cost 10x the copying.
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(64 << 20),
    # numpy's OpenBLAS (and any OpenMP/MKL build) would start a thread per core at import: one thread keeps
    # BLAS inside the process limit and the CPU rlimit, and leaves the host's cores to the other agents.
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
_ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/nsswitch.conf", "/etc/passwd", "/etc/group")
#: In bubblewrap's environment (never the worker's): the owning process as ``pid:start-time``.
OWNER_ENV = "RLM_SANDBOX_OWNER"
#: Protections the test suite may remove (see :func:`spawn`); never reachable from the CLI or config.
WEAKENINGS = frozenset({"net", "seccomp", "env", "fs", "pid", "packages"})


@dataclass(frozen=True, slots=True)
class Launch:
    """A ready-to-spawn worker: what :func:`spawn` starts.

    ``argv`` is the command (for bubblewrap ``[bwrap, "--", python, ...]``: the policy is not
    on it); ``policy`` the bwrap options and ``seccomp_filter`` the BPF program, which
    :func:`spawn` hands over through ``--args FD`` and ``--seccomp FD``.
    """

    argv: list[str]
    env: dict[str, str]
    context_path: str
    seccomp_filter: bytes | None = None
    policy: tuple[str, ...] = ()


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


@dataclass(frozen=True, slots=True)
class WorkerFiles:
    """Where the worker's files are on the host: the cache of compiled ``.pyc`` files, or the sources."""

    directory: Path
    compiled: bool

    @property
    def script(self) -> str:
        return "worker.pyc" if self.compiled else "worker.py"


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


def _filesystem(context_file: Path | None, scratch_mb: int, weaken: frozenset[str], python: str,
                worker: WorkerFiles, packages: Path | None) -> list[str]:
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
    if worker.compiled:  # the private cache directory holding exactly the three .pyc files
        args += ["--ro-bind", str(worker.directory), JAIL_WORKER_DIR]
    else:
        for name in WORKER_FILES:
            args += ["--ro-bind", str(worker.directory / name), f"{JAIL_WORKER_DIR}/{name}"]
    if packages is not None:  # weakened (test-only): bound writable, so the suite can see a probe notice it
        args += ["--bind" if "packages" in weaken else "--ro-bind", str(packages), JAIL_PACKAGES]
    if context_file is not None:  # a zygote's workers get theirs as a descriptor instead
        args += ["--ro-bind", str(context_file), JAIL_CONTEXT_PATH]
    return args + [
        # /proc/sys read-only: when rlm runs as root the sandbox's uid maps to host root, and sysctl
        # permission checks look at that uid, so global settings (kernel.core_pattern...) would be writable.
        "--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys", "--dev", "/dev",
        "--size", size, "--tmpfs", "/dev/shm",
        "--size", size, "--tmpfs", JAIL_SCRATCH,
        "--chdir", JAIL_SCRATCH,
        "--remount-ro", "/",
    ]


def bwrap_policy(context_file: Path | None, *, scratch_mb: int, python: str | None = None,
                 weaken: frozenset[str] = frozenset(), worker: WorkerFiles | None = None,
                 packages: Path | None = None) -> list[str]:
    """The bubblewrap options that jail the worker on ``context_file`` (the policy, in one list).

    ``packages`` is an installed set of :mod:`rlm.sandbox.packages`, bound read-only at :data:`JAIL_PACKAGES`.

    :func:`spawn` adds ``--seccomp FD`` and hands the list to bwrap through ``--args FD``.
    """
    python = python or python_executable()
    worker = worker or worker_files()
    unshare = ["--unshare-user", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    unshare += [] if "net" in weaken else ["--unshare-net"]
    unshare += [] if "pid" in weaken else ["--unshare-pid"]
    args = [
        *unshare, "--disable-userns", "--cap-drop", "ALL",
        "--uid", "65534", "--gid", "65534", "--hostname", "rlm-sandbox",
        "--new-session", "--die-with-parent",
    ]
    if "env" not in weaken:
        args.append("--clearenv")
    args += _filesystem(context_file, scratch_mb, weaken, python, worker, packages)
    _, _, extra_env = _python_in_jail(python)
    for key, value in {**WORKER_ENV, **extra_env}.items():
        args += ["--setenv", key, value]
    return args


def _worker_command(python: str, worker: WorkerFiles, *, jailed: bool, script: str | None = None) -> list[str]:
    """``python -P -s -S -B WORKER`` (-I without -E: see ``PYTHONHASHSEED``): inside the jail from
    /opt/rlm-sandbox, unsafe mode from the host path."""
    script = script or worker.script
    if jailed:
        return [_python_in_jail(python)[0], *_FLAGS, f"{JAIL_WORKER_DIR}/{script}"]
    return [python, *_FLAGS, str(worker.directory / script)]


#: Isolated mode but for -E: no script directory on sys.path (-P), no user site (-s), no site (-S), no .pyc (-B).
_FLAGS = ("-P", "-s", "-S", "-B")


def launch(mode: str, context_file: Path | None, *, scratch_mb: int, allow_processes: bool = False,
           weaken: frozenset[str] = frozenset(), packages: Path | None = None,
           zygote_fd: int | None = None) -> Launch:
    """What to start for ``mode`` (``"bwrap"`` or ``"unsafe"``); :func:`spawn` starts it.

    With ``zygote_fd`` (and no context file) the jail runs the zygote (``sandbox/zygote.py``)
    on that control socket instead of a worker: it forks workers, so its own filter allows
    new processes and each worker installs a stricter one of its own.
    """
    if weaken:
        _check_weaken(weaken)
    python, worker = python_executable(), worker_files()
    script = None if zygote_fd is None else _pyc_name("zygote.py") if worker.compiled else "zygote.py"
    tail = [] if zygote_fd is None else [str(zygote_fd)]
    if mode == "bwrap":
        check_bwrap()
        bpf = None if "seccomp" in weaken else _seccomp_filter(allow_processes or zygote_fd is not None)
        policy = bwrap_policy(context_file, scratch_mb=scratch_mb, python=python, weaken=weaken, worker=worker,
                              packages=packages)
        env = {**os.environ, **WORKER_ENV} if "env" in weaken else dict(WORKER_ENV)
        env[OWNER_ENV] = _owner_token()  # bwrap's own environment only: --clearenv keeps it from the worker
        argv = [shutil.which("bwrap") or "bwrap", "--",
                *_worker_command(python, worker, jailed=True, script=script), *tail]
        return Launch(argv, env, JAIL_CONTEXT_PATH, bpf, tuple(policy))
    argv = [*_worker_command(python, worker, jailed=False, script=script), *tail]
    return Launch(argv, dict(WORKER_ENV), str(context_file))


def spawn(mode: str, context_file: Path | None, *, scratch_mb: int, allow_processes: bool = False,
          weaken: frozenset[str] = frozenset(), packages: Path | None = None,
          zygote_fd: int | None = None) -> WorkerProcess:
    """Start the worker (or, with ``zygote_fd``, a zygote) for ``mode``: stdio on pipes, no other
    descriptor inherited but ``zygote_fd``.

    For bubblewrap, the BPF program and the policy are written into two pipes whose write
    ends are closed before bwrap starts (both fit a pipe's buffer many times over), and bwrap
    gets only their read ends: ``bwrap --json-status-fd S --args A -- python ...``.
    """
    spec = launch(mode, context_file, scratch_mb=scratch_mb, allow_processes=allow_processes, weaken=weaken,
                  packages=packages, zygote_fd=zygote_fd)
    kept = () if zygote_fd is None else (zygote_fd,)
    if mode != "bwrap":
        return WorkerProcess(_popen(spec.argv, spec.env, kept), spec.context_path)
    fds: list[int] = []
    status_r = -1
    try:
        policy = list(spec.policy)
        if spec.seccomp_filter is not None:
            fds.append(_pipe_holding(spec.seccomp_filter))
            policy += ["--seccomp", str(fds[-1])]
        fds.append(_pipe_holding(b"".join(os.fsencode(arg) + b"\0" for arg in policy)))
        status_r, status_w = os.pipe()
        fds.append(status_w)
        argv = [spec.argv[0], "--json-status-fd", str(status_w), "--args", str(fds[-2]), *spec.argv[1:]]
        proc = _popen(argv, spec.env, (*fds, *kept))
    except BaseException:
        if status_r >= 0:
            os.close(status_r)
        raise
    finally:
        for fd in fds:
            os.close(fd)
    return WorkerProcess(proc, spec.context_path, _init_pidfd(status_r), status_r)


def _pipe_holding(data: bytes) -> int:
    """The read end of a pipe that holds ``data`` and then EOF (its write end is already closed)."""
    read_fd, write_fd = os.pipe()
    try:
        os.set_blocking(write_fd, False)  # nobody reads yet: data larger than the pipe must fail, not hang
        if os.write(write_fd, data) != len(data):
            raise OSError(errno.EMSGSIZE, "the sandbox policy does not fit in a pipe")
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return read_fd


def _pyc_name(source: str) -> str:
    return source[:-3] + ".pyc"


def worker_files() -> WorkerFiles:
    """The worker as bytecode compiled once per source version and interpreter, else its sources.

    Compiling the three files from source costs every worker start several ms of CPU (``-B``
    never writes a cache, and the jail could not keep one). So the host compiles them into
    ``$TMPDIR/rlm-pyc-UID/KEY/``, KEY a digest of the sources, the interpreter's magic number
    and the in-jail path: a private directory (ours, mode 0700, checked), each version
    written under a temporary name and renamed into place whole, so processes doing it at
    once never see half of one. It is bound read-only into the jail; Python runs
    ``worker.pyc`` directly and imports ``protocol``/``bigcontext`` from their ``.pyc``.
    Where it cannot be written (no writable temp dir, a foreign directory in the way) the
    sources are used, as they always were.
    """
    try:
        signature = tuple((st.st_ino, st.st_size, st.st_mtime_ns)
                          for st in (os.stat(WORKER_DIR / name) for name in WORKER_FILES))
    except OSError:
        return WorkerFiles(WORKER_DIR, False)
    for _ in range(2):
        directory = _compiled_worker(signature)
        if directory is None:
            break
        if _complete(directory):
            return WorkerFiles(directory, True)
        _compiled_worker.cache_clear()  # removed under us (a temp cleaner): make it again, once
    return WorkerFiles(WORKER_DIR, False)


def _complete(directory: Path) -> bool:
    return all(os.path.isfile(directory / _pyc_name(name)) for name in WORKER_FILES)


@functools.lru_cache(maxsize=4)
def _compiled_worker(signature: tuple[tuple[int, int, int], ...]) -> Path | None:
    """The cache directory for the sources as they are now (``signature``: their stat), or None."""
    try:
        sources = {name: (WORKER_DIR / name).read_bytes() for name in WORKER_FILES}
        digest = hashlib.sha256(importlib.util.MAGIC_NUMBER + JAIL_WORKER_DIR.encode())
        for name, data in sources.items():
            digest.update(f"\0{name}\0{len(data)}\0".encode() + data)
        root = Path(tempfile.gettempdir()) / f"rlm-pyc-{os.getuid()}"
        try:
            os.mkdir(root, 0o700)
        except FileExistsError:
            pass
        info = os.lstat(root)  # another user's directory (or a symlink) in a shared /tmp is not ours to trust
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            return None
        target = root / digest.hexdigest()[:32]
        if _complete(target):
            return target
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
        try:
            for name, data in sources.items():
                code = compile(data, f"{JAIL_WORKER_DIR}/{name}", "exec", dont_inherit=True, optimize=0)
                # PEP 552 header: magic, flags (hash-based, unchecked: there is no source beside it), source hash
                pyc = importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little") + importlib.util.source_hash(data)
                (staging / _pyc_name(name)).write_bytes(pyc + marshal.dumps(code))
            try:
                os.rename(staging, target)
            except OSError:  # another process got there first (or left a broken one: replace it)
                if not _complete(target):
                    shutil.rmtree(target, ignore_errors=True)
                    os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _prune(root, keep=target)
        return target if _complete(target) else None
    except (OSError, SyntaxError, ValueError):
        return None


def _prune(root: Path, keep: Path, max_age_s: float = 86400.0) -> None:
    """Remove other versions (and abandoned staging dirs) not made within ``max_age_s``."""
    cutoff = time.time() - max_age_s
    for entry in os.scandir(root):
        try:
            if entry.path != str(keep) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            pass


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


def _owner_token(pid: int | None = None) -> str:
    """``pid:start-time`` of a process (default: this one); a pid reused by another process differs."""
    pid = os.getpid() if pid is None else pid
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    return f"{pid}:{int(fields[19])}"  # field 22 of stat: start time in clock ticks since boot


def reap_orphans() -> int:
    """Kill this user's bubblewrap sandboxes whose owning process is gone; returns how many.

    ``--die-with-parent`` is not enough: a host killed while bubblewrap is still setting a
    jail up leaves the jail's init waiting forever for a parent that is gone. Every sandbox
    carries its owner's ``pid:start-time`` (:data:`OWNER_ENV`, in bubblewrap's environment);
    a sandbox whose owner no longer runs serves nobody.
    """
    killed = 0
    uid = os.getuid()
    prefix = OWNER_ENV.encode() + b"="
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            with open(f"/proc/{entry}/comm", "rb") as handle:
                if handle.read().strip() != b"bwrap":
                    continue
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:
            continue
        owner = next((item[len(prefix):].decode() for item in environ if item.startswith(prefix)), None)
        if owner is None or _owner_alive(owner):
            continue
        try:
            os.kill(int(entry), signal.SIGKILL)
            killed += 1
        except OSError:
            pass
    return killed


def _owner_alive(owner: str) -> bool:
    pid, _, _ = owner.partition(":")
    try:
        return _owner_token(int(pid)) == owner
    except (OSError, ValueError):
        return False


@functools.lru_cache(maxsize=1)
def check_bwrap() -> None:
    """Fail closed, with a fix, when bubblewrap cannot create the namespaces here."""
    exe = shutil.which("bwrap")
    hint = ("Install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`) on a Linux host that allows "
            "unprivileged user namespaces, or pass --unsafe-no-sandbox to run model code without isolation "
            "(rlimits only; not for untrusted input).")
    if exe is None:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed; rlm will not run model code unsandboxed. "
                                 + hint)
    probe = [exe, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
             "--disable-userns", "--cap-drop", "ALL", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc",
             "--dev", "/dev", "--", "/bin/true"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=20, env=dict(WORKER_ENV))
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailable(f"bubblewrap could not be started ({exc}). {hint}") from None
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()[:300]
        raise SandboxUnavailable(f"bubblewrap cannot create namespaces here: {detail}. {hint}")
    reap_orphans()  # once per process, before its first sandbox: what earlier processes left behind
