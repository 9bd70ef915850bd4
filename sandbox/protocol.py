"""The host <-> worker wire protocol. Standard library only (it runs inside the jail).

Frames travel over two pipes (the worker's stdin and stdout, which the worker
moves to private descriptors at start-up so ``print`` can never touch them).
Each frame is a 4-byte big-endian unsigned length followed by that many bytes of
UTF-8 JSON encoding one object with a ``"type"`` key:

host -> worker
    ``init``     ``{"type": "init", "context_path", "context_kind", "max_output_chars", "max_call_bytes"}``
    ``execute``  ``{"type": "execute", "id": int, "code": str}``
    ``reply``    ``{"type": "reply", "id": int, "ok": bool, "value": any, "error": str}``
    ``shutdown`` ``{"type": "shutdown"}``

worker -> host
    ``booted``   ``{"type": "booted"}`` (first, as soon as the interpreter is up and waits for ``init``;
                 a pre-started worker is handed out only once it was seen)
    ``ready``    ``{"type": "ready", "pid": int, "context_type": str, "context_length": int}``
    ``call``     ``{"type": "call", "id": int, "name": str, "args": {...}}`` (a host function; the
                 host answers with one ``reply`` of the same id before the cell goes on)
    ``result``   ``{"type": "result", "id": int, "stdout", "stderr", "error": str|null,
                 "final": {"value": str}|null, "truncated": int}``

Once model code has run, everything the worker sends is hostile: the host bounds
the frame length, parses with the standard ``json`` module only (never pickle),
and treats any malformed frame as a crashed worker.
"""

from __future__ import annotations

import json
import os
import struct

# ``typing`` is not imported at run time (it would slow every worker start): these names exist for the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    #: One decoded frame: a JSON object with a string ``"type"``.
    Message = dict[str, Any]

HEADER = struct.Struct(">I")
#: Default upper bound on one frame (either direction).
MAX_FRAME_BYTES = 64 * 1024 * 1024


class FrameError(Exception):
    """A frame could not be read or decoded (EOF, oversized, not JSON, not an object)."""


def encode(message: Message) -> bytes:
    """Serialize one message into a frame (header + JSON body)."""
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> Message:
    """Parse one frame body; raises :class:`FrameError` on anything but a JSON object with a type."""
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FrameError(f"frame is not valid JSON: {exc.__class__.__name__}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise FrameError("frame is not a JSON object with a string 'type'")
    return message


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to a file descriptor, retrying short writes."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_frame(fd: int, message: Message) -> None:
    """Write one frame to a file descriptor."""
    write_all(fd, encode(message))


def read_exact(fd: int, size: int) -> bytes:
    """Blocking read of exactly ``size`` bytes; :class:`FrameError` on EOF."""
    chunks = []
    remaining = size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise FrameError("pipe closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, max_bytes: int = MAX_FRAME_BYTES) -> Message:
    """Blocking read of one frame from ``fd`` (used by the worker)."""
    (length,) = HEADER.unpack(read_exact(fd, HEADER.size))
    if length > max_bytes:
        raise FrameError(f"frame of {length} bytes exceeds the limit of {max_bytes}")
    return decode(read_exact(fd, length))
