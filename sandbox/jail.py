"""How the worker process is launched: inside bubblewrap, or (opt-in) unsandboxed.

The bubblewrap command line is the whole of the isolation, so it is built in one
place (:func:`bwrap_argv`) and read like a policy: new user/pid/ipc/net/uts/cgroup
namespaces, no network at all, read-only system directories, only the Python
installation, the worker's own two source files and the context file bound in,
size-capped tmpfs for ``/tmp`` and ``/dev/shm``, a cleared environment, a new
session (no terminal), and death with the parent.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rlm.errors import SandboxUnavailable

WORKER_DIR = Path(__file__).resolve().parent
JAIL_WORKER_DIR = "/opt/rlm-sandbox"
JAIL_CONTEXT_PATH = "/input/context"
JAIL_SCRATCH = "/tmp"
#: The only environment the worker sees (bwrap itself is started with it too).
WORKER_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": JAIL_SCRATCH,
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
}
_ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/nsswitch.conf", "/etc/passwd", "/etc/group")


@dataclass(frozen=True, slots=True)
class Launch:
    """A ready-to-spawn worker command: argv, env, and the context path as the worker sees it."""

    argv: list[str]
    env: dict[str, str]
    context_path: str


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


def bwrap_argv(context_file: Path, *, scratch_mb: int, python: str | None = None) -> list[str]:
    """The bubblewrap command that runs the worker on ``context_file``."""
    python = python or python_executable()
    prefix = os.path.realpath(sys.base_prefix)
    size = str(scratch_mb * 1024 * 1024)
    args = [
        shutil.which("bwrap") or "bwrap",
        "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-net", "--unshare-uts",
        "--unshare-cgroup-try", "--disable-userns",
        "--uid", "65534", "--gid", "65534", "--hostname", "rlm-sandbox",
        "--new-session", "--die-with-parent", "--clearenv",
        "--ro-bind", "/usr", "/usr",
        *_root_links(),
    ]
    for etc in _ETC_FILES:
        args += ["--ro-bind-try", etc, etc]
    if not prefix.startswith("/usr"):
        args += ["--ro-bind", prefix, prefix]
    args += [
        "--ro-bind", str(WORKER_DIR / "worker.py"), f"{JAIL_WORKER_DIR}/worker.py",
        "--ro-bind", str(WORKER_DIR / "protocol.py"), f"{JAIL_WORKER_DIR}/protocol.py",
        "--ro-bind", str(context_file), JAIL_CONTEXT_PATH,
        "--proc", "/proc", "--dev", "/dev",
        "--size", size, "--tmpfs", "/dev/shm",
        "--size", size, "--tmpfs", JAIL_SCRATCH,
        "--chdir", JAIL_SCRATCH,
        "--remount-ro", "/",
    ]
    for key, value in WORKER_ENV.items():
        args += ["--setenv", key, value]
    return args + ["--", python, "-I", "-S", "-B", f"{JAIL_WORKER_DIR}/worker.py"]


def launch(mode: str, context_file: Path, *, scratch_mb: int) -> Launch:
    """The command for ``mode`` (``"bwrap"`` or ``"unsafe"``)."""
    if mode == "bwrap":
        check_bwrap()
        return Launch(bwrap_argv(context_file, scratch_mb=scratch_mb), dict(WORKER_ENV), JAIL_CONTEXT_PATH)
    argv = [python_executable(), "-I", "-S", "-B", str(WORKER_DIR / "worker.py")]
    return Launch(argv, dict(WORKER_ENV), str(context_file))


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
             "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--", "/bin/true"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=20, env=dict(WORKER_ENV))
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailable(f"bubblewrap could not be started ({exc}). {hint}") from None
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()[:300]
        raise SandboxUnavailable(f"bubblewrap cannot create namespaces here: {detail}. {hint}")
