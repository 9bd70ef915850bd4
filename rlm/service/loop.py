"""An asyncio event loop on a thread of its own, and the bridge that brings a run's messages into it.

The service's front ends that speak asyncio (the HTTP endpoints, MCP sessions)
share one :class:`LoopThread`; runs execute on the service's run threads, and
:class:`RunMessages` carries what a run says (``accepted``, ``event``) and how
it ended back into the loop, in the order it happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["LoopThread", "RunMessages"]

T = TypeVar("T")


class LoopThread:
    """An event loop running forever on a daemon thread until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> LoopThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the loop from another thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        """Start ``coroutine`` on the loop from another thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def stop(self) -> None:
        """Cancel what still runs on the loop, stop it and wait for its thread."""
        if self.loop.is_closed():
            return
        with contextlib.suppress(Exception):  # stopping anyway
            self.run(_cancel_others(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


async def _cancel_others() -> None:
    current = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not current]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


class RunMessages:
    """A run's messages as an async stream: ``accepted`` and ``event`` dicts, then ``("end", future)``.

    :meth:`deliver` is called on the run's thread (it is the ``deliver`` of
    :meth:`rlm.service.server.Service.submit`); :meth:`watch` adds the end once
    the run's future is done, after every message the run delivered before it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Any] = asyncio.Queue()

    def deliver(self, message: dict[str, Any]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, message)
        except RuntimeError:  # the loop is closed: the client is gone
            raise OSError("the client's event loop is closed") from None

    def watch(self, future: Future[Any]) -> None:
        """Queue the end once ``future`` is done (its callbacks run after the run's last message)."""

        def done(finished: Future[Any]) -> None:
            try:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, ("end", finished))
            except RuntimeError:
                pass

        future.add_done_callback(done)

    async def next(self) -> Any:
        return await self._queue.get()
