"""Where a service for one RLM_HOME lives, and how a command finds it (or finds that it is gone).

Files in ``$RLM_HOME``:

``service.lock``   held (``flock``) by the service for as long as it runs: one service per RLM_HOME
``service.json``   the state file: pid, socket path, HTTP address, start time, version (0600)
``service.token``  the bearer token HTTP clients send (0600; ``rlm service token`` prints it)
``service.log``    what a service started in the background writes

The socket is ``$RLM_HOME/service.sock`` when that path fits a Unix socket name
(108 bytes), else ``$XDG_RUNTIME_DIR`` or ``/tmp/rlm-<uid>/`` (a directory of
mode 0700) holds it under a name derived from RLM_HOME. It is created 0600,
and the service checks each peer's uid as well.

A state file is *stale* when its process is gone or no service holds the lock
(it was killed, the machine restarted): :func:`find_service` treats that as no service,
and the next ``rlm serve`` replaces it. Nothing here imports more than the
standard library (records are named tuples, whose classes cost less to build than
dataclasses'): every command runs it first.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import NamedTuple

__all__ = ["ServicePaths", "ServiceState", "find_service", "read_token"]

_MAX_SOCKET_PATH = 107


class ServicePaths(NamedTuple):
    """The files of the service of one RLM_HOME."""

    home: Path

    @property
    def lock(self) -> Path:
        return self.home / "service.lock"

    @property
    def state(self) -> Path:
        return self.home / "service.json"

    @property
    def token(self) -> Path:
        return self.home / "service.token"

    @property
    def log(self) -> Path:
        return self.home / "service.log"

    def socket(self, env: dict[str, str] | None = None) -> Path:
        """The socket path for a new service (short enough for a Unix socket name)."""
        preferred = self.home / "service.sock"
        if len(str(preferred)) <= _MAX_SOCKET_PATH:
            return preferred
        import hashlib

        runtime = (env or {}).get("XDG_RUNTIME_DIR") or f"/tmp/rlm-{os.getuid()}"
        digest = hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:16]
        return Path(runtime) / f"rlm-{digest}.sock"


class ServiceState(NamedTuple):
    """What a running service says of itself in ``service.json``."""

    pid: int
    socket: str
    started_at: float
    version: str
    http: str | None = None
    protocol: int = 1  # rlm.service.wire.PROTOCOL of the service (state files before it existed: 1)

    def to_dict(self) -> dict[str, object]:
        return dict(self._asdict())


def find_service(home: Path) -> ServiceState | None:
    """The service running for ``home``, or ``None`` (no state file, or a stale one)."""
    paths = ServicePaths(home)
    try:
        data = json.loads(paths.state.read_text(encoding="utf-8"))
        state = ServiceState(pid=int(data["pid"]), socket=str(data["socket"]),
                             started_at=float(data["started_at"]), version=str(data["version"]),
                             http=data.get("http"), protocol=int(data.get("protocol", 1)))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state if _alive(state.pid) and lock_is_held(paths.lock) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_is_held(path: Path) -> bool:
    """Whether some process holds ``path``'s flock (a service is alive)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def read_token(home: Path, *, create: bool = False) -> str | None:
    """The bearer token of ``home``'s service (made, 0600, when ``create`` and missing)."""
    path = ServicePaths(home).token
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        if not create:
            return None
    import secrets

    home.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token
