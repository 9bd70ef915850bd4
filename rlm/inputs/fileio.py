"""File I/O of the input loaders: reading the user's files, writing payload files into the workdir.

OS errors met while reading the user's input become :class:`~rlm.errors.InputError`
(the input is the problem); errors while writing into the workdir become
:class:`~rlm.errors.RLMError` (the input is fine, the workdir is not).
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from rlm.errors import InputError, RLMError

__all__ = [
    "CHUNK_BYTES",
    "SNIFF_BYTES",
    "file_type",
    "looks_binary",
    "open_input",
    "open_unbuffered",
    "payload_writer",
    "read_bytes",
    "read_chunk",
    "read_error",
    "read_head",
    "reason",
]


#: Bytes read at a time when validating or copying a large file (1 MiB: the buffer stays in a core's L2).
CHUNK_BYTES = 1024 * 1024

#: Bytes sniffed for NUL to decide a file is binary.
SNIFF_BYTES = 8192


@contextlib.contextmanager
def payload_writer(workdir: Path, suffix: str) -> Iterator[tuple[Path, BinaryIO]]:
    """Create a new file in ``workdir``; yield its path and binary handle.

    The file is deleted if the block raises. OS errors while writing become
    :class:`RLMError` (the input is fine, the workdir is not).
    """
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="context-", suffix=suffix, dir=workdir)
    except OSError as exc:
        raise RLMError(f"cannot create a context file in {workdir}: {exc}") from None
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            yield path, out
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise RLMError(f"cannot write the context file {path}: {exc}") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def open_input(path: Path, label: str) -> BinaryIO:
    """Open an input file for reading; OS errors become InputError."""
    try:
        return path.open("rb")
    except OSError as exc:
        raise read_error(label, exc) from None


def open_unbuffered(path: Path, label: str) -> io.FileIO:
    """Open an input file for reads straight into the caller's buffer (``readinto``); OS errors become InputError."""
    try:
        return path.open("rb", buffering=0)
    except OSError as exc:
        raise read_error(label, exc) from None


def read_chunk(f: BinaryIO, label: str) -> bytes:
    """Read the next chunk of an input file; OS errors become InputError."""
    try:
        return f.read(CHUNK_BYTES)
    except OSError as exc:
        raise read_error(label, exc) from None


def read_bytes(path: Path, label: str) -> bytes:
    """Read a whole input file; OS errors become InputError."""
    with open_input(path, label) as f:
        try:
            return f.read()
        except OSError as exc:
            raise read_error(label, exc) from None


def read_head(path: Path, label: str) -> bytes:
    """Read the first :data:`SNIFF_BYTES` bytes of an input file."""
    with open_input(path, label) as f:
        try:
            return f.read(SNIFF_BYTES)
        except OSError as exc:
            raise read_error(label, exc) from None


def reason(exc: OSError) -> str:
    """A short reason for an OS error, e.g. ``permission denied``."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    return f"unreadable ({exc.strerror or exc})"


def read_error(label: str, exc: OSError) -> InputError:
    """The InputError for an OS error met while reading the user's input."""
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return InputError(f"no such file or directory: {label}")
    if isinstance(exc, PermissionError):
        return InputError(f"permission denied: {label}")
    return InputError(f"cannot read {label}: {exc.strerror or exc}")


def file_type(mode: int) -> str:
    """Name the kind of a special file from its stat mode."""
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def looks_binary(head: bytes) -> bool:
    """Whether the first bytes of a file say it is binary (it has a NUL byte)."""
    return b"\x00" in head[:SNIFF_BYTES]
