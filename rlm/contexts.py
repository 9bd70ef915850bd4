"""A run's input, identified so that the run can be replayed, resumed or forked later.

:func:`identify` records what a payload was, in ``RunStarted.context_info["identity"]``:

* a file used in place (plain UTF-8 text, read where it lies): its absolute path,
  size and modification time, and its SHA-256 when it is at most :data:`HASH_LIMIT`
  bytes (hashing a big log would cost every run time; its size and time stand in);
* anything rlm wrote itself (standard input, a text given to :func:`rlm.run`, a
  converted JSON/HTML/PDF file, a directory's documents): its SHA-256, and when it
  is at most :data:`KEEP_LIMIT` bytes a content-addressed copy
  ``$RLM_HOME/contexts/<sha256>`` (a hard link when the file system allows,
  written once per content). Bigger ones are not kept: such a run can be replayed
  only from its source again (a file or directory named in ``source``).

:func:`restore` gives the payload back for a replay, or raises
:class:`~rlm.errors.InputError` naming what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlm.errors import InputError
from rlm.inputs import ContextPayload, load_context, payload_from_documents, payload_from_text

__all__ = ["HASH_LIMIT", "KEEP_LIMIT", "identify", "restore", "kept_path"]

#: Files used in place up to this size are hashed; bigger ones are known by size and mtime.
HASH_LIMIT = 1 << 20
#: Inputs rlm wrote itself (stdin, texts, conversions, directories) up to this size are kept for replays.
KEEP_LIMIT = 16 << 20
_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def kept_path(home: Path, digest: str) -> Path:
    """Where the kept copy of a content whose SHA-256 is ``digest`` lives."""
    return home / "contexts" / digest


def identify(payload: ContextPayload, home: Path, *, keep: bool = True) -> dict[str, Any]:
    """The identity of ``payload`` (see the module docstring); ``keep``: keep a copy of small owned ones."""
    stat = payload.path.stat()
    identity: dict[str, Any] = {"kind": payload.kind, "size": stat.st_size, "source": payload.source}
    if not payload.owned:
        identity.update(path=str(payload.path.resolve()), mtime_ns=stat.st_mtime_ns)
        if stat.st_size <= HASH_LIMIT:
            identity["sha256"] = _sha256(payload.path)
        return identity
    if stat.st_size > KEEP_LIMIT:
        identity["kept"] = None
        return identity
    digest = _sha256(payload.path)
    identity["sha256"] = digest
    identity["kept"] = _keep(payload.path, home, digest) if keep else None
    return identity


def _keep(path: Path, home: Path, digest: str) -> str | None:
    """A content-addressed copy of ``path`` under ``home/contexts`` (its name), or None if it cannot be made."""
    target = kept_path(home, digest)
    if target.exists():
        return digest
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = target.with_name(f"{digest}.{os.getpid()}.tmp")
        try:
            os.link(path, temporary)
        except OSError:  # another file system: copy
            temporary.write_bytes(path.read_bytes())
        os.chmod(temporary, 0o600)
        os.replace(temporary, target)
    except OSError:
        return None
    return digest


def restore(identity: Mapping[str, Any], home: Path, workdir: Path, *, run_id: str) -> ContextPayload:
    """The payload a run with this ``identity`` had, checked unchanged; raises :class:`InputError`."""
    if not identity:
        raise InputError(f"run {run_id} recorded no identity of its input (it is from an older rlm): "
                         "it cannot be replayed")
    if identity.get("path"):
        return _restore_file(identity, workdir, run_id)
    digest = identity.get("kept")
    if digest:
        path = kept_path(home, str(digest))
        if path.exists() and _sha256(path) == digest:
            return _restore_kept(path, str(identity.get("kind")), workdir)
    raise InputError(f"the input of run {run_id} ({identity.get('source') or 'a text'}, {identity.get('size', 0):,} "
                     f"bytes) was not kept (rlm keeps inputs it wrote itself up to {KEEP_LIMIT >> 20} MiB): "
                     "it cannot be replayed")


def _restore_file(identity: Mapping[str, Any], workdir: Path, run_id: str) -> ContextPayload:
    path = Path(str(identity["path"]))
    try:
        stat = path.stat()
    except OSError as exc:
        raise InputError(f"the input of run {run_id}, {path}, is gone ({exc.strerror}): a replay needs it") from None
    same = stat.st_size == identity.get("size") and (
        stat.st_mtime_ns == identity.get("mtime_ns")
        or (identity.get("sha256") is not None and _sha256(path) == identity["sha256"]))
    if not same:
        raise InputError(f"the input of run {run_id}, {path}, changed since the run (then {identity.get('size'):,} "
                         f"bytes, now {stat.st_size:,}; or modified): a replay needs the same input")
    return load_context(path, workdir=workdir)


def _restore_kept(path: Path, kind: str, workdir: Path) -> ContextPayload:
    text = path.read_text(encoding="utf-8")
    if kind == "documents":
        return payload_from_documents(json.loads(text), workdir=workdir)
    return payload_from_text(text, workdir=workdir)
