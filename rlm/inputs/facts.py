"""The cache of what UTF-8 validation learnt about text payload files, for the sandbox worker and the loader.

:func:`text_facts` hands the sandbox the length in characters and ``(byte, char)``
checkpoints of a file this process validated (or wrote), so a huge ``Context``
answers ``len`` and offset conversions without scanning the file again, and
:func:`recall` lets a long-lived process (the service) load a file it validated
before without a second pass: a second question about an unchanged 1 GiB
input skips its scan. Entries
are keyed by the file's identity (device, inode, size, mtime, ctime): a file
that changed since is not trusted.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_CHECKPOINTS",
    "MAX_REMEMBERED_FILES",
    "SETTLE_NS",
    "Facts",
    "identity",
    "recall",
    "remember",
    "remember_written",
    "text_facts",
    "thin",
]


#: At most this many (byte, char) checkpoints are kept per file in :func:`text_facts` (thinned beyond).
MAX_CHECKPOINTS = 4096
#: Files whose facts are remembered for the sandbox (the most recent ones).
MAX_REMEMBERED_FILES = 64


@dataclass(frozen=True)
class Facts:
    """What the validation pass learnt about a text file, tied to the file's identity.

    ``checkpoints`` are ``(byte offset, character offset)`` pairs at character
    boundaries, from ``(0, 0)`` to ``(size, chars)``; ``None`` when unknown. A
    pure-ASCII file needs none (characters are bytes).
    """

    identity: tuple[int, int, int, int, int]  # (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)
    chars: int
    ascii: bool
    checkpoints: tuple[tuple[int, int], ...] | None

    def message(self) -> dict[str, Any]:
        """The ``context_facts`` the sandbox worker gets in its ``init`` frame (JSON)."""
        facts: dict[str, Any] = {"size": self.identity[2], "chars": self.chars, "ascii": self.ascii}
        if not self.ascii and self.checkpoints is not None:
            facts["checkpoints"] = [list(point) for point in self.checkpoints]
        return facts


_FACTS: OrderedDict[tuple[int, int], Facts] = OrderedDict()
_FACTS_LOCK = threading.Lock()
#: A file modified this recently may still be being written within one timestamp tick: not remembered.
SETTLE_NS = 100_000_000


def identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def remember(facts: Facts) -> None:
    with _FACTS_LOCK:
        key = facts.identity[:2]
        _FACTS.pop(key, None)
        _FACTS[key] = facts
        while len(_FACTS) > MAX_REMEMBERED_FILES:
            _FACTS.popitem(last=False)


def remember_written(path: Path, chars: int, checkpoints: list[tuple[int, int]] | None) -> None:
    """Remember the facts of a payload file this module just wrote (nobody else writes it)."""
    try:
        st = path.stat()
    except OSError:
        return
    points = thin(checkpoints) if checkpoints else None
    remember(Facts(identity(st), chars, st.st_size == chars, points))


def thin(points: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """At most :data:`MAX_CHECKPOINTS` checkpoints, evenly spread, the first and last kept."""
    if len(points) <= MAX_CHECKPOINTS:
        return tuple(points)
    step = -(-(len(points) - 1) // (MAX_CHECKPOINTS - 1))
    kept = points[::step]
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return tuple(kept)


def recall(path: str | Path) -> Facts | None:
    """The facts remembered of the file at ``path``, or ``None`` (never validated here, or changed since:
    device, inode, size, mtime and ctime are compared)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    with _FACTS_LOCK:
        facts = _FACTS.get((st.st_dev, st.st_ino))
    return facts if facts is not None and facts.identity == identity(st) else None


def text_facts(path: str | Path) -> dict[str, Any] | None:
    """What validation learnt about the ``"text"`` payload file at ``path``, for the sandbox worker.

    ``{"size", "chars", "ascii", "checkpoints"?}``: its length in characters,
    whether it is pure ASCII (characters are bytes), and ``(byte, char)`` offset
    pairs at character boundaries (at most every :data:`rlm.inputs.fileio.CHUNK_BYTES`). With them a
    huge ``Context`` answers ``len`` and offset conversions without a pass over
    the file. None when this process has not validated the file, or the file
    changed since (device, inode, size, mtime and ctime are compared).
    """
    facts = recall(path)
    return None if facts is None else facts.message()
