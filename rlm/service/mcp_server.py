"""rlm as an MCP server: tools to ask and to look at runs, resources for their trees and events.

Built on the official ``mcp`` SDK (2.x: :class:`mcp.server.mcpserver.MCPServer`).

Tools
    ``ask(question, context_path | context_text, max_depth, max_iterations,
    max_llm_calls, max_tokens, max_cost, timeout, model)``: run and return the
    answer, status, run id, usage and cost. While it runs, a client that asked
    for progress gets a notification on every iteration, sub-call and child
    agent; cancelling the call (``notifications/cancelled``) cancels the run.
    ``runs(limit)``: the latest runs. ``show(run_id)``: a run's tree as text.
    With memory on (``--memory NAMESPACE``): ``memory_search(query, namespace)``
    and ``memory_add(text, namespace, kind, title, tags)``.
Resources
    ``rlm://runs/{run_id}`` (the tree as text), ``rlm://runs/{run_id}/events``
    (the run's events as a JSON list).

Where it runs (a :class:`Backend` each):

* in the service (:class:`ServiceBackend`): MCP over HTTP at ``/mcp``
  (:class:`McpHttp`), and the sessions ``rlm mcp`` relays over the service's
  socket (:func:`serve_socket`);
* in the ``rlm mcp`` process when no service runs (:class:`LocalBackend`,
  :func:`serve_stdio`): runs in-process, recorded in journals as ``rlm ask``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

from rlm import __version__
from rlm.budget import Ledger
from rlm.config import RLMConfig
from rlm.errors import RLMError
from rlm.events import EventBus, event_from_dict
from rlm.results import RunResult
from rlm.service import wire
from rlm.service.access import AllowedRoots
from rlm.service.loop import RunMessages
from rlm.service.progress import Progress
from rlm.service.run_options import configure

if TYPE_CHECKING:
    from aiohttp import web

    from rlm.runlog import RunLog
    from rlm.service.server import Service

__all__ = ["Backend", "ServiceBackend", "LocalBackend", "build_server", "McpHttp", "serve_socket", "serve_stdio"]

INSTRUCTIONS = ("rlm answers questions about inputs of any size (files, directories, text): the input stays in a "
                "sandboxed Python REPL the model programs, calling sub-models and sub-agents on parts of it. "
                "Call `ask` with the question and a context_path or context_text.")


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Backend(Protocol):
    """Where the MCP tools run runs and read the run log and memory."""

    base: RLMConfig  # the run config requests start from
    roots: AllowedRoots  # the files a request may name

    def submit(self, question: str, context: Path | str, config: RLMConfig,
               deliver: Callable[[dict[str, Any]], None]) -> tuple[Cancellable, Future[RunResult | None]] | None:
        """Start a run (``None`` when busy); as :meth:`rlm.service.server.Service.submit`."""
        ...

    def run_log(self) -> contextlib.AbstractContextManager[RunLog | None]:
        """The run log to read (``None`` before the first run)."""
        ...

    def memory(self) -> contextlib.AbstractContextManager[Any]:
        """The swarm memory store."""
        ...


class ServiceBackend:
    """Runs in the service: its admission, run log and memory store."""

    def __init__(self, service: Service, base: RLMConfig, roots: AllowedRoots) -> None:
        self.service, self.base, self.roots = service, base, roots

    def submit(self, question: str, context: Path | str, config: RLMConfig,
               deliver: Callable[[dict[str, Any]], None]) -> tuple[Cancellable, Future[RunResult | None]] | None:
        return self.service.submit(question, context, config, deliver)

    def run_log(self) -> contextlib.AbstractContextManager[RunLog | None]:
        return contextlib.nullcontext(self.service.log)

    def memory(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext(self.service.memory_store())


@dataclasses.dataclass(eq=False)
class _LocalRun:
    """A run of this process: cancelling stops its budget."""

    budget: Ledger | None = None
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True
        if self.budget is not None:
            self.budget.stop("cancelled")


class LocalBackend:
    """Runs in this process (no service): journals for the run log, the memory file opened per call."""

    def __init__(self, base: RLMConfig, roots: AllowedRoots, max_running: int = 4) -> None:
        self.base, self.roots = base, roots
        self._pool = ThreadPoolExecutor(max_workers=max_running, thread_name_prefix="rlm-mcp-run")

    def submit(self, question: str, context: Path | str, config: RLMConfig,
               deliver: Callable[[dict[str, Any]], None]) -> tuple[Cancellable, Future[RunResult | None]] | None:
        run = _LocalRun()
        return run, self._pool.submit(self._execute, run, question, context, config, deliver)

    @staticmethod
    def _execute(run: _LocalRun, question: str, context: Path | str, config: RLMConfig,
                 deliver: Callable[[dict[str, Any]], None]) -> RunResult | None:
        from rlm.runner import run as run_rlm

        if run.cancelled:
            return None
        bus = EventBus()
        bus.subscribe(lambda event: deliver({"type": "event", "event": event.to_dict()}))

        def started(run_id: str, budget: Ledger) -> None:
            run.budget = budget
            deliver({"type": "accepted", "run_id": run_id})
            if run.cancelled:
                budget.stop("cancelled")

        return run_rlm(question, context, config, bus=bus, on_start=started)

    @contextlib.contextmanager
    def run_log(self) -> Iterator[RunLog | None]:
        from rlm.runlog import RunLog
        from rlm.runlog.journal import journal_paths

        path = self.base.runlog_path
        if not path.exists() and not journal_paths(path):
            yield None
            return
        log = RunLog(path)
        try:
            yield log
        finally:
            log.close()

    @contextlib.contextmanager
    def memory(self) -> Iterator[Any]:
        from rlm.memory.store import MemoryStore, memory_path

        with MemoryStore(memory_path(self.base.home)) as store:
            yield store

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


# -- the tools -------------------------------------------------------------------------------
class Usage(BaseModel):
    input_tokens: int
    output_tokens: int
    llm_calls: int


class Answer(BaseModel):
    """What ``ask`` returns."""

    answer: str | None
    status: str  # "ok", or the limit that ended the run ("max_llm_calls", "timeout", ...), or "error"
    run_id: str
    usage: Usage
    cost_usd: float | None  # None when a price is unknown
    iterations: int
    depth_reached: int
    duration_s: float
    error: str | None = None


def build_server(backend: Backend) -> MCPServer:
    """The MCP server of ``backend``: its tools and resources."""
    server = MCPServer("rlm", instructions=INSTRUCTIONS, version=__version__)
    _add_ask(server, backend)
    _add_views(server, backend)
    if backend.base.memory_namespace:
        _add_memory(server, backend)
    return server


def _add_ask(server: MCPServer, backend: Backend) -> None:
    @server.tool()
    async def ask(question: str, ctx: Context, context_path: str | None = None, context_text: str | None = None,
                  max_depth: int | None = None, max_iterations: int | None = None,
                  max_llm_calls: int | None = None, max_tokens: int | None = None, max_cost: float | None = None,
                  timeout: float | None = None, model: str | None = None) -> Answer:
        """Answer a question about a file or directory (context_path) or a text (context_text) with a
        recursive language model. Limits are over the whole tree of calls; model is the root's model."""
        limits = {"max_depth": max_depth, "max_iterations": max_iterations, "max_llm_calls": max_llm_calls,
                  "max_tokens": max_tokens, "max_cost": max_cost, "timeout": timeout}
        try:
            config = configure(backend.base, limits, root_model=model)
            context = _context(backend.roots, context_path, context_text)
            return await _ask(backend, question, context, config, ctx)
        except RLMError as exc:
            raise ToolError(str(exc)) from None


def _context(roots: AllowedRoots, context_path: str | None, context_text: str | None) -> Path | str:
    if context_path and context_text is not None:
        raise ToolError("give context_path or context_text, not both")
    if context_path:
        return roots.check(context_path)
    return context_text or ""


async def _ask(backend: Backend, question: str, context: Path | str, config: RLMConfig, ctx: Context) -> Answer:
    messages = RunMessages(asyncio.get_running_loop())
    submitted = backend.submit(question, context, config, messages.deliver)
    if submitted is None:
        raise ToolError("the service is busy (too many runs running and queued); try again in a few seconds")
    run, future = submitted
    messages.watch(future)
    progress = Progress()
    try:
        while not isinstance(message := await messages.next(), tuple):
            if message.get("type") == "event":
                event = event_from_dict(message["event"])
                progress.add(event)
                if (line := progress.message(event)) is not None:
                    await ctx.report_progress(progress.count, None, line)
        return _answer(future)
    finally:
        if not future.done():  # the call was cancelled: so is the run
            run.cancel()


def _answer(future: Future[RunResult | None]) -> Answer:
    result = future.result()  # an RLMError raised here becomes the tool's error
    if result is None:
        raise ToolError("the run was cancelled before it started")
    u = result.usage
    return Answer(answer=result.answer, status=result.status, run_id=result.run_id,
                  usage=Usage(input_tokens=u.input_tokens, output_tokens=u.output_tokens, llm_calls=u.llm_calls),
                  cost_usd=result.cost_usd, iterations=result.iterations, depth_reached=result.depth_reached,
                  duration_s=round(result.duration_s, 3), error=result.error)


_T = TypeVar("_T")


async def _with(opened: Callable[[], contextlib.AbstractContextManager[Any]], action: Callable[[Any], _T]) -> _T:
    """``action`` of what ``opened()`` opens, on a worker thread (DuckDB blocks); rlm's errors become the tool's."""
    def in_thread() -> _T:
        with opened() as resource:
            return action(resource)

    try:
        return await anyio.to_thread.run_sync(in_thread)
    except RLMError as exc:
        raise ToolError(str(exc)) from None


def _add_views(server: MCPServer, backend: Backend) -> None:
    async def read(view: Callable[[RunLog | None], _T]) -> _T:
        return await _with(backend.run_log, view)

    @server.tool()
    async def runs(limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs, newest first: id, status, question, calls, tokens, cost."""
        return await read(lambda log: [] if log is None else [_run_row(r) for r in log.list_runs(limit=limit)])

    @server.tool()
    async def show(run_id: str, max_output: int = 400) -> str:
        """A run's tree of agents, iterations, code and outputs (a run id or a unique prefix of one)."""
        return await read(lambda log: _tree(log, run_id, max_output))

    @server.resource("rlm://runs/{run_id}", mime_type="text/plain")
    async def run_tree(run_id: str) -> str:
        """A run's tree of agents, iterations, code and outputs, as text."""
        return await read(lambda log: _tree(log, run_id, 2000))

    @server.resource("rlm://runs/{run_id}/events", mime_type="application/json")
    async def run_events(run_id: str) -> str:
        """Every event of a run, in order, as a JSON list."""
        return await read(lambda log: json.dumps([e.to_dict() for e in _log(log).events(run_id)], default=str))


def _log(log: RunLog | None) -> RunLog:
    if log is None:
        raise ToolError("no runs yet")
    return log


def _tree(log: RunLog | None, run_id: str, max_output: int) -> str:
    from rlm.views import show_view

    return show_view(_log(log), run_id, max_output, False)[0]


def _run_row(summary: Any) -> dict[str, Any]:
    keep = ("run_id", "status", "question", "model", "started_at", "duration_s", "llm_calls", "input_tokens",
            "output_tokens", "cost_usd", "answer")
    data = summary.to_dict()
    return {k: data.get(k) for k in keep}


def _add_memory(server: MCPServer, backend: Backend) -> None:
    default = str(backend.base.memory_namespace)

    async def use(action: Callable[[Any], _T]) -> _T:
        return await _with(backend.memory, action)

    @server.tool()
    async def memory_search(query: str, namespace: str | None = None, k: int = 5) -> list[dict[str, Any]]:
        """Search swarm memory (what earlier runs learned, and docs added by hand), best first."""
        return await use(lambda store: [h.to_dict() for h in store.search(namespace or default, query, k=k)])

    @server.tool()
    async def memory_add(text: str, namespace: str | None = None, kind: str = "memory", title: str = "",
                         tags: list[str] | None = None) -> dict[str, Any]:
        """Write a memory (or a doc) into swarm memory for later runs."""
        return await use(lambda store: store.add(namespace or default, text, kind=kind, title=title,
                                                 tags=tuple(tags or ())).to_dict())


# -- transports ----------------------------------------------------------------------------------
class McpHttp:
    """MCP's streamable HTTP transport at ``/mcp`` of the service's HTTP server."""

    def __init__(self, server: MCPServer, app: Any) -> None:
        self._app = app
        self._manager = server.session_manager
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, backend: Backend, *, host: str) -> McpHttp:
        server = build_server(backend)
        mcp = cls(server, server.streamable_http_app(streamable_http_path="/mcp", host=host))
        ready = asyncio.Event()
        mcp._task = asyncio.create_task(mcp._run(ready))
        await ready.wait()
        return mcp

    async def _run(self, ready: asyncio.Event) -> None:
        async with self._manager.run():  # the sessions' task group lives as long as the transport
            ready.set()
            await self._stop.wait()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        from rlm.service.asgi import call_asgi

        return await call_asgi(self._app, request)

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


def serve_socket(service: Service, conn: socket.socket, request: dict[str, Any]) -> None:
    """One MCP session relayed by ``rlm mcp`` over the service's socket (its ``mcp`` request).

    The request carries the command's run config and ``allow_paths`` (``null``: any file its
    user can read, as for ``rlm ask``: the socket only admits this user). After the ``mcp``
    reply the connection carries MCP's stdio framing (a JSON-RPC message per line) both ways.
    """
    config = service._config(request.get("config") or {})  # noqa: SLF001 - the socket's own config check
    allowed = request.get("allow_paths")
    roots = AllowedRoots(everything=True) if allowed is None else AllowedRoots.of([Path(p) for p in allowed])
    backend = ServiceBackend(service, config, roots)
    wire.send(conn, {"type": "mcp"})
    try:
        service.event_loop().run(_serve_streams(build_server(backend), conn))
    except CancelledError:  # the service is stopping: its loop cancelled the session
        pass


async def _serve_streams(server: MCPServer, conn: socket.socket) -> None:
    from mcp.server.stdio import stdio_server

    reader = conn.makefile("r", encoding="utf-8", newline="\n")
    writer = conn.makefile("w", encoding="utf-8", newline="\n")
    try:
        async with stdio_server(anyio.wrap_file(reader), anyio.wrap_file(writer)) as (read, write):
            await _run_session(server, read, write)
    finally:
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)  # a thread still blocked reading returns now, so closing cannot wait
        reader.close()
        with contextlib.suppress(OSError):
            writer.close()


async def _run_session(server: MCPServer, read: Any, write: Any) -> None:
    # MCPServer has no public "run on these streams" in mcp 2.3; run_stdio_async does exactly this
    lowlevel = server._lowlevel_server  # noqa: SLF001
    await lowlevel.run(read, write, lowlevel.create_initialization_options())


def serve_stdio(backend: LocalBackend) -> None:
    """Serve MCP on this process's stdin/stdout (nothing else goes to stdout) until the client leaves."""
    server = build_server(backend)

    async def main() -> None:
        await server.run_stdio_async()

    try:
        anyio.run(main)
    finally:
        backend.close()
