"""Files uploaded with ``POST /v1/files``, kept for runs to use as their context.

Each file lives in ``$RLM_HOME/files/<file id>/`` (directories 0700, files
0600): the bytes under the uploaded name (so its extension still tells a run
how to read it: ``.pdf``, ``.json``, ``.html``, text) and ``meta.json`` with
what ``GET /v1/files/<id>`` answers in OpenAI's file object shape. A request
names one with ``"rlm": {"file_id": ...}`` or a ``{"type": "file", "file":
{"file_id": ...}}`` part in a message. Uploaded files are the user's: they stay
until ``DELETE /v1/files/<id>``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

from rlm.errors import InputError

__all__ = ["FileStore", "StoredFile", "UnknownFile", "MAX_UPLOAD_BYTES"]

#: The largest upload accepted (bytes).
MAX_UPLOAD_BYTES = 4 * 1024 ** 3

_ID = re.compile(r"^file-[0-9a-f]{24}$")


class UnknownFile(InputError):
    """No uploaded file has this id (HTTP 404 when asked for directly)."""


@dataclass(frozen=True)
class StoredFile:
    """One uploaded file, as OpenAI's file object describes it."""

    id: str
    filename: str
    bytes: int
    created_at: int
    purpose: str

    def to_openai(self) -> dict[str, object]:
        return {"object": "file", "status": "processed", **asdict(self)}


class FileStore:
    """The uploaded files of one RLM_HOME."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def save(self, chunks: AsyncIterator[bytes], filename: str, purpose: str) -> StoredFile:
        """Write the upload ``chunks`` to disk; raises :class:`InputError` past :data:`MAX_UPLOAD_BYTES`."""
        file_id = "file-" + secrets.token_hex(12)
        directory = self.root / file_id
        directory.mkdir(parents=True, mode=0o700)
        name = _safe_name(filename)
        try:
            size = await _write(directory / name, chunks)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        stored = StoredFile(id=file_id, filename=name, bytes=size, created_at=int(time.time()), purpose=purpose)
        _write_private(directory / "meta.json", json.dumps(asdict(stored)).encode())
        return stored

    def get(self, file_id: str) -> StoredFile:
        try:
            data = json.loads((self._directory(file_id) / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UnknownFile(f"no uploaded file {file_id!r} (POST /v1/files uploads one)") from None
        return StoredFile(**data)

    def path(self, file_id: str) -> Path:
        """Where the bytes of ``file_id`` are (for a run's context)."""
        return self._directory(file_id) / self.get(file_id).filename

    def list(self) -> list[StoredFile]:
        if not self.root.is_dir():
            return []
        found = []
        for entry in sorted(self.root.iterdir()):
            try:
                found.append(self.get(entry.name))
            except UnknownFile:
                continue
        return sorted(found, key=lambda f: f.created_at)

    def delete(self, file_id: str) -> None:
        self.get(file_id)
        shutil.rmtree(self._directory(file_id))

    def _directory(self, file_id: str) -> Path:
        if not _ID.match(file_id):
            raise UnknownFile(f"no uploaded file {file_id!r} (POST /v1/files uploads one)")
        return self.root / file_id


def _safe_name(filename: str) -> str:
    """The last component of ``filename`` with only harmless characters (its extension kept)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(filename or "").strip())
    name = name.lstrip(".")
    return name[-200:] or "upload.txt"


async def _write(path: Path, chunks: AsyncIterator[bytes]) -> int:
    size = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        async for chunk in chunks:
            size += len(chunk)
            if size > MAX_UPLOAD_BYTES:
                raise InputError(f"the upload is larger than {MAX_UPLOAD_BYTES:,} bytes")
            handle.write(chunk)
    if size == 0:
        raise InputError("the uploaded file is empty")
    return size


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
