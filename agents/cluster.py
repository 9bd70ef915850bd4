"""Connecting to Ray: an embedded local cluster, started quietly, or an existing one.

:func:`ensure_ray` is idempotent per process. With no address (neither
``RLMConfig.ray_address`` nor ``RAY_ADDRESS`` — the CLI folds the variable into
the config at the edge) it starts a local cluster:

* no dashboard, no usage stats, no auth token written into ``HOME``
  (``RAY_AUTH_MODE=disabled``);
* its temp files (session dir, sockets, object spill) under
  ``$RLM_HOME/ray`` — or under the system temp dir when that path is too long
  for a Unix socket name;
* workers' stdout/stderr are not streamed to the driver (``log_to_driver=False``):
  the terminal belongs to the CLI's progress and answer.

With an address it joins that cluster (``ray://`` clients included); the
cluster's nodes must have rlm installed in the same version.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from rlm.config import RLMConfig
from rlm.errors import ConfigError

#: Unix socket paths are limited to 107 bytes; Ray appends ~70 to its temp dir.
_MAX_TEMP_DIR_CHARS = 36
_lock = threading.Lock()


def ray_module() -> Any:
    """Import Ray with the quiet defaults set first, or explain how to install it."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is a declared dependency
        raise ConfigError("the Ray executor needs ray: pip install 'ray[default]==2.60.0'") from exc
    return ray


def temp_dir(home: Path) -> Path:
    """Where the embedded cluster keeps its files: under RLM_HOME when the path is short enough."""
    preferred = home / "ray"
    if len(str(preferred)) <= _MAX_TEMP_DIR_CHARS:
        return preferred
    return Path(tempfile.gettempdir()) / f"rlm-ray-{os.getuid()}"


def ensure_ray(config: RLMConfig, *, num_cpus: int | None = None) -> Any:
    """Connect this process to Ray once (start an embedded cluster without an address); returns ``ray``."""
    ray = ray_module()
    with _lock:
        if ray.is_initialized():
            return ray
        common: dict[str, Any] = dict(namespace="rlm", log_to_driver=False, logging_level=logging.WARNING,
                                      configure_logging=True)
        if config.ray_address:
            ray.init(address=config.ray_address, **common)
            return ray
        directory = temp_dir(config.home)
        directory.mkdir(parents=True, exist_ok=True)
        # Ray starts workers at nice 15, below its own daemons and the driver; in an embedded cluster the
        # agent hosts are the user's foreground job (an external cluster keeps its own setting).
        ray.init(include_dashboard=False, num_cpus=num_cpus if num_cpus is not None else os.cpu_count(),
                 _temp_dir=str(directory), _system_config={"worker_niceness": 0}, **common)
    return ray


def node_id() -> str:
    """This process's Ray node id (hex)."""
    ray = ray_module()
    return ray.get_runtime_context().get_node_id()


def alive_nodes() -> list[str]:
    """Node ids of the cluster's alive nodes, in a stable order."""
    ray = ray_module()
    return sorted(node["NodeID"] for node in ray.nodes() if node.get("Alive"))
