"""Contexts on the cluster: in the object store once, one file per node for the sandboxes.

A payload file (the user's input, or a chunk passed to ``rlm_query``) is put in
the object store once as a ``numpy`` ``uint8`` array (:func:`store`) — only when
an agent on another node needs it: an agent on the file's own node reads the
file itself, so a fan-out on one machine never touches the object store. Ray keeps
it in shared memory and a reader on the same node gets a zero-copy read-only
view — a Python ``bytes`` object would be copied into every reader's heap. The
put itself reads the file through ``np.memmap``, so the driver never holds a
copy of its own.

The sandboxes need a *file* to memory-map. :func:`materialize` gives one per
node: the original file when the agent runs on the node that made it, otherwise
``<node cache>/<run_id>/<key>``, written once per node (atomically: written to a
temporary name, then renamed) and shared by every agent of that node. A
:class:`SharedContext` travels inside the agent's spec; its reference sits in a
list so that Ray passes the reference, not the bytes, to the agent's host.

A small child context (:data:`INLINE_MAX_CHARS` or less, as ``rlm_query_batched``
chunks usually are) travels instead as an :class:`InlineContext`: the text itself,
inside the spec. The host that runs the child writes its file, on the child's own
thread: a parent sending a shard of 100 children to another host no longer writes
100 files before the shard can leave, and the spec runs on any node, as a retry
may need.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm.inputs import ContextPayload

_lock = threading.Lock()
_store_lock = threading.Lock()
#: Payload paths of this process -> the shared context they came from (reused by children without a context).
_by_path: dict[str, SharedContext] = {}


@dataclass(frozen=True)
class SharedContext:
    """A payload in the object store: ``refs[0]`` is the array's reference; ``payload`` its metadata."""

    key: str
    run_id: str
    refs: list[Any]
    payload: ContextPayload
    origin_node: str


#: Child contexts of at most this many characters travel inside the agent's spec.
INLINE_MAX_CHARS = 64 * 1024


@dataclass(frozen=True)
class InlineContext:
    """A small child context sent as the value itself (a ``str``, or a list of documents)."""

    value: Any


def inline(context: Any) -> InlineContext | None:
    """``context`` as an :class:`InlineContext` when it is a small enough ``str``; else ``None``."""
    if isinstance(context, str) and len(context) <= INLINE_MAX_CHARS:
        return InlineContext(context)
    return None


def cache_root() -> Path:
    """This node's context cache (node-local; never shared between machines)."""
    return Path(tempfile.gettempdir()) / f"rlm-ctx-{os.getuid()}"


def share(payload: ContextPayload, run_id: str, node: str) -> SharedContext:
    """The payload's shared context: the one it was materialized from, or a new one (not yet stored)."""
    with _lock:
        known = _by_path.get(str(payload.path))
    if known is not None:
        return known
    shared = SharedContext(key=secrets.token_hex(8), run_id=run_id, refs=[], payload=payload, origin_node=node)
    remember(shared, payload.path)
    return shared


def store(shared: SharedContext) -> SharedContext:
    """Put the payload in the object store (once) so that agents on other nodes can read it."""
    with _store_lock:
        if shared.refs:
            return shared
        import numpy as np
        import ray

        path = shared.payload.path
        size = path.stat().st_size
        array = np.memmap(path, dtype=np.uint8, mode="r") if size else np.zeros(0, dtype=np.uint8)
        shared.refs.append(ray.put(array))
        del array
    return shared


def remember(shared: SharedContext, path: Path) -> None:
    with _lock:
        _by_path[str(path)] = shared


def forget(path: Path) -> None:
    with _lock:
        _by_path.pop(str(path), None)


def materialize(shared: SharedContext, node: str) -> ContextPayload:
    """A payload whose file is on this node: the original on its node, else this node's cached copy."""
    if node == shared.origin_node and shared.payload.path.exists():
        remember(shared, shared.payload.path)
        return shared.payload
    target = cache_root() / node[:16] / shared.run_id / shared.key
    if not target.exists():
        _write_from_store(shared, target)
    payload = dataclasses.replace(shared.payload, path=target, owned=False)
    remember(shared, target)
    return payload


def _write_from_store(shared: SharedContext, target: Path) -> None:
    import ray

    if not shared.refs:
        raise RuntimeError(f"context {shared.key} was sent to another node without being stored")
    array = ray.get(shared.refs[0])  # zero-copy view on this node's shared memory
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(memoryview(array))
        os.chmod(temp, 0o600)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def drop_run(run_id: str, node: str) -> None:
    """Delete this node's cached files of ``run_id`` and forget them."""
    directory = cache_root() / node[:16] / run_id
    with _lock:
        for path in [p for p, s in _by_path.items() if s.run_id == run_id]:
            del _by_path[path]
    shutil.rmtree(directory, ignore_errors=True)
