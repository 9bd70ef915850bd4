"""One lazily started daemon thread that hands queued items, in order, to a function."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class QueueThread(Generic[T]):
    """``submit(item)`` returns at once; one daemon thread calls ``handle(item)`` for each, in order.

    The thread starts with the first item (and again if it ever died). ``handle``
    deals with its own failures; an exception it lets out is dropped so the
    thread keeps serving the queue.
    """

    def __init__(self, name: str, handle: Callable[[T], None]) -> None:
        self.name = name
        self._handle = handle
        self._queue: deque[T] = deque()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, item: T) -> None:
        with self._ready:
            self._queue.append(item)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            self._ready.notify()

    def _loop(self) -> None:
        while True:
            with self._ready:
                while not self._queue:
                    self._ready.wait()
                item = self._queue.popleft()
            try:
                self._handle(item)
            except Exception:  # noqa: BLE001, S110 - see the class docstring
                pass
