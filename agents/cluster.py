"""Connecting to Ray: an embedded local cluster, started quietly and closed to others, or an existing one.

:func:`ensure_ray` is idempotent per process. With no address (neither
``RLMConfig.ray_address`` nor ``RAY_ADDRESS`` — the CLI folds the variable into
the config at the edge) it starts a local cluster that only this user can use:

* **loopback only**: every listener of the cluster's processes (GCS, raylet,
  workers, the dashboard and runtime-env agents, metrics) binds 127.0.0.1.
  Ray binds its gRPC servers to all interfaces unless it believes it runs a
  single-machine cluster, which ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` tells it
  on Linux too;
* **token authentication**: ``RAY_AUTH_MODE=token`` with a random token kept
  0600 in ``$RLM_HOME/ray-auth-token`` (never in ``HOME``), so other users of
  the machine, who can reach loopback, cannot submit work either. (An open Ray
  cluster runs any code sent to it as its user, outside every sandbox.)
* quiet: no dashboard, no usage stats, Ray's log lines kept off the terminal
  (``log_to_driver=False``, Ray's loggers at ERROR);
* its temp files (session dir, sockets, object spill) under ``$RLM_HOME/ray``,
  or under the system temp dir when that path is too long for a Unix socket;
* nothing left behind: at exit the cluster is shut down and any of its
  processes still alive (Ray leaves its dashboard and runtime-env agents
  running for a minute or two) are killed.

With an address it joins that cluster (``ray://`` clients included); its
security is its operator's (see docs/ray.md); the cluster's nodes must have rlm
installed in the same version.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import tempfile
import threading
from pathlib import Path
from typing import Any

from rlm.config import RLMConfig
from rlm.errors import ConfigError

#: Unix socket paths are limited to 107 bytes; Ray appends ~70 to its temp dir.
_MAX_TEMP_DIR_CHARS = 36
_lock = threading.Lock()
TOKEN_FILE = "ray-auth-token"


def ray_module() -> Any:
    """Import Ray with the quiet defaults set first, or explain how to install it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is a declared dependency
        raise ConfigError("the Ray executor needs ray: pip install 'ray[default]==2.60.0'") from exc
    logging.getLogger("ray").setLevel(logging.ERROR)
    return ray


def temp_dir(home: Path) -> Path:
    """Where the embedded cluster keeps its files: under RLM_HOME when the path is short enough."""
    preferred = home / "ray"
    if len(str(preferred)) <= _MAX_TEMP_DIR_CHARS:
        return preferred
    return Path(tempfile.gettempdir()) / f"rlm-ray-{os.getuid()}"


def auth_token_path(home: Path) -> Path:
    """The embedded cluster's token file (0600), created on first use."""
    path = home / TOKEN_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path


def use_private_cluster(home: Path) -> None:
    """Set this process (and the processes it starts) up for a cluster on loopback with a token.

    Call before starting a local cluster (``ray.init()`` without an address, or
    ``ray.cluster_utils.Cluster``) and before joining it.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(auth_token_path(home))
    os.environ.pop("RAY_AUTH_TOKEN", None)
    _reload_ray_settings(cluster=False)


def _reload_ray_settings(*, cluster: bool) -> None:
    """Make an already imported Ray see the environment again (it reads some of it at import)."""
    ray = ray_module()
    from ray._private import ray_constants
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]  # missing from Ray's _raylet.pyi

    ray_constants.ENABLE_RAY_CLUSTER = cluster
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    del ray


def ensure_ray(config: RLMConfig, *, num_cpus: int | None = None) -> Any:
    """Connect this process to Ray once (start an embedded cluster without an address); returns ``ray``."""
    ray = ray_module()
    with _lock:
        if ray.is_initialized():
            return ray
        common: dict[str, Any] = dict(namespace="rlm", log_to_driver=False, logging_level=logging.ERROR,
                                      configure_logging=True)
        if config.ray_address:
            if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0":
                _reload_ray_settings(cluster=True)
            ray.init(address=config.ray_address, **common)
            return ray
        use_private_cluster(config.home)
        directory = temp_dir(config.home)
        directory.mkdir(parents=True, exist_ok=True)
        before = _own_processes()
        # Ray starts workers at nice 15, below its own daemons and the driver; in an embedded cluster the
        # agent hosts are the user's foreground job (an external cluster keeps its own setting).
        ray.init(include_dashboard=False, num_cpus=num_cpus if num_cpus is not None else os.cpu_count(),
                 _temp_dir=str(directory), _system_config={"worker_niceness": 0}, **common)
        atexit.register(shutdown_embedded, before)
    return ray


def _own_processes() -> set[int]:
    import psutil

    return {child.pid for child in psutil.Process().children(recursive=True)}


def shutdown_embedded(before: set[int] | None = None) -> None:
    """Shut the embedded cluster down and kill whatever of its processes outlives ``ray.shutdown``."""
    import psutil

    ray = ray_module()
    started = [p for p in psutil.Process().children(recursive=True) if before is None or p.pid not in before]
    ray.shutdown()
    kill_processes([p for p in started if p.is_running()], timeout=5)


def kill_processes(processes: list[Any], timeout: float = 10.0) -> None:
    """SIGKILL each of ``processes`` (``psutil.Process``es, by pid) and wait up to ``timeout`` for them."""
    import psutil

    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(processes, timeout=timeout)


def node_id() -> str:
    """This process's Ray node id (hex)."""
    ray = ray_module()
    return ray.get_runtime_context().get_node_id()


def alive_nodes() -> list[str]:
    """Node ids of the cluster's alive nodes, in a stable order."""
    ray = ray_module()
    return sorted(node["NodeID"] for node in ray.nodes() if node.get("Alive"))
