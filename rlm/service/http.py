"""The service's HTTP endpoints: OpenAI's ``/v1`` API and MCP's streamable HTTP at ``/mcp``.

``rlm serve --http HOST:PORT`` starts :class:`HttpFront` on the service's event
loop (aiohttp's server, imported only then). Every request needs
``Authorization: Bearer <token>`` (``rlm service token``); files it names must
be under the ``--allow-path`` roots (:mod:`rlm.service.access`).

``POST /v1/chat/completions``
    a run (:mod:`rlm.service.openai_api` has the format)
``GET /v1/models[/<id>]``
    ``rlm`` and ``rlm/<root model>``
``POST /v1/files``, ``GET /v1/files[/<id>]``, ``DELETE /v1/files/<id>``
    context files uploaded for later requests (multipart ``file`` and ``purpose``)
``/mcp``
    MCP's streamable HTTP (:mod:`rlm.service.mcp_server`), started on first use

Statuses: 400 bad request, 401 missing or wrong token, 403 a path outside the
roots, 404 unknown model, file or path, 429 busy (``Retry-After``), 500 a run
that failed, 503 the service is stopping. A client that disconnects before its
answer cancels its run (the run is recorded as cancelled).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from rlm.config import RLMConfig
from rlm.errors import ConfigError, InputError, RLMError
from rlm.events import event_from_dict
from rlm.results import RunResult
from rlm.service import openai_api as api
from rlm.service.access import AllowedRoots, parse_address, token_matches
from rlm.service.files import FileStore, StoredFile, UnknownFile
from rlm.service.loop import RunMessages
from rlm.service.paths import read_token
from rlm.service.progress import Progress

if TYPE_CHECKING:
    from rlm.service.server import Service

__all__ = ["HttpFront", "base_config"]

log = logging.getLogger(__name__)

#: Largest JSON request body (bytes); context text in messages counts. Files are better uploaded.
MAX_JSON_BYTES = 256 * 1024 * 1024
#: How long a request waits for a service still starting (it opens its log after publishing its address).
READY_WAIT_S = 60.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def base_config(service: Service) -> RLMConfig:
    """The run config HTTP and MCP requests start from: the service's, for its RLM_HOME and executor."""
    settings = service.settings
    config = settings.run_config or RLMConfig(home=settings.home)
    return dataclasses.replace(config, home=settings.home, executor=settings.executor,
                               ray_address=settings.ray_address)


class HttpFront:
    """The HTTP server of one service (see the module docstring)."""

    def __init__(self, service: Service) -> None:
        settings = service.settings
        self.service = service
        self.host, self.port = parse_address(str(settings.http), any_interface=settings.http_any_interface)
        self.token = str(read_token(settings.home, create=True))
        self.roots = AllowedRoots.of(list(settings.allow_paths))
        self.base = base_config(service)
        self.files = FileStore(settings.home / "files")
        self.created = int(time.time())
        self._runner: web.AppRunner | None = None
        self._mcp: Any = None
        self._mcp_lock: asyncio.Lock | None = None

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> str:
        """Listen; the base URL (``http://HOST:PORT``). Raises :class:`ConfigError` if the address is taken."""
        base: str = self.service.event_loop().run(self._start())
        return base

    def stop(self) -> None:
        self.service.event_loop().run(self._stop(), timeout=30)

    async def _start(self) -> str:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_JSON_BYTES)
        self._routes(app.router)
        self._mcp_lock = asyncio.Lock()
        # handler_cancellation: a client that hangs up cancels its handler, which cancels its run
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError(f"cannot serve HTTP on {self.host}:{self.port}: {exc.strerror or exc}") from None
        host, port = self._runner.addresses[0][:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    async def _stop(self) -> None:
        if self._mcp is not None:
            await self._mcp.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/chat/completions", self.chat)
        router.add_get("/v1/models", self.models)
        router.add_get("/v1/models/{model:.+}", self.model)
        router.add_post("/v1/files", self.upload)
        router.add_get("/v1/files", self.list_files)
        router.add_get("/v1/files/{file_id}", self.get_file)
        router.add_delete("/v1/files/{file_id}", self.delete_file)
        router.add_route("*", "/mcp", self.mcp)

    # -- every request -------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The bearer token first; then errors in OpenAI's shape. A request that arrives while the service
        is still opening its log (the address is published first) waits for it."""
        if not self.service.ready.is_set():
            await asyncio.get_running_loop().run_in_executor(None, self.service.ready.wait, READY_WAIT_S)
        if not token_matches(request.headers.get("Authorization"), self.token):
            return _error(401, "a valid bearer token is required (`rlm service token` prints it)",
                          "authentication_error", "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _error(exc.status, exc.reason, "invalid_request_error", None, headers=_allow(exc))
        except RLMError as exc:
            status, kind, code = api.status_of(exc)
            return _error(status, str(exc), kind, code)

    # -- /v1/models ------------------------------------------------------------------------
    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(api.models_list(self.base, self.created))

    async def model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        for entry in api.models_list(self.base, self.created)["data"]:
            if entry["id"] == name:
                return web.json_response(entry)
        raise api.ModelNotFound(f"the model {name!r} does not exist")

    # -- /v1/files -------------------------------------------------------------------------
    async def upload(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            raise InputError("upload a file as multipart/form-data with a 'file' part")
        reader = await request.multipart()
        purpose, stored = "user_data", None
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue  # a nested multipart: not ours to read
            if part.name == "purpose" and not part.filename:
                purpose = (await part.text())[:64]
            elif part.name == "file":
                stored = await self.files.save(_chunks(part), part.filename or "", purpose)
        if stored is None:
            raise InputError("the upload has no 'file' part")
        return web.json_response(stored.to_openai())

    async def list_files(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [f.to_openai() for f in self.files.list()]})

    async def get_file(self, request: web.Request) -> web.Response:
        return web.json_response(self._file(request).to_openai())

    async def delete_file(self, request: web.Request) -> web.Response:
        stored = self._file(request)
        self.files.delete(stored.id)
        return web.json_response({"id": stored.id, "object": "file", "deleted": True})

    def _file(self, request: web.Request) -> StoredFile:
        try:
            return self.files.get(request.match_info["file_id"])
        except UnknownFile as exc:
            raise web.HTTPNotFound(reason=str(exc)) from None

    # -- /v1/chat/completions ----------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        chat = api.parse_chat(await _json(request), self.base, self.roots, self.files.path)
        if self.service.stopping:
            return _error(503, "the service is stopping", "server_error", "service_stopping")
        messages = RunMessages(asyncio.get_running_loop())
        submitted = self.service.submit(chat.question, chat.context, chat.config, messages.deliver,
                                        session=chat.session)
        if submitted is None:
            return _busy(self.service.busy_reply())
        run, future = submitted
        messages.watch(future)
        try:
            if chat.stream:
                return await _stream(request, chat, messages)
            return await _complete(chat, messages)
        finally:
            if not future.done():  # the client hung up (or the service is stopping): stop the run
                run.client_gone = True
                run.cancel()

    # -- /mcp ----------------------------------------------------------------------------------
    async def mcp(self, request: web.Request) -> web.StreamResponse:
        assert self._mcp_lock is not None
        async with self._mcp_lock:
            if self._mcp is None:
                from rlm.service.mcp_server import McpHttp, ServiceBackend

                backend = ServiceBackend(self.service, self.base, self.roots)
                self._mcp = await McpHttp.start(backend, host=self.host)
        response: web.StreamResponse = await self._mcp.handle(request)
        return response


# -- a run's answer ---------------------------------------------------------------------------
async def _complete(chat: api.ChatRequest, messages: RunMessages) -> web.Response:
    while True:
        message = await messages.next()
        if isinstance(message, tuple):
            return _ended(chat, message[1])


def _ended(chat: api.ChatRequest, future: Future[RunResult | None]) -> web.Response:
    """The response to a run that ended (or never started)."""
    outcome = _outcome(future)
    if isinstance(outcome, RunResult):
        return web.json_response(api.completion(chat, outcome))
    status, body = outcome
    return web.json_response(body, status=status)


def _outcome(future: Future[RunResult | None]) -> RunResult | tuple[int, dict[str, Any]]:
    """The run's result when it has an answer to give, else the HTTP status and error body."""
    try:
        result = future.result()
    except RLMError as exc:
        status, kind, code = api.status_of(exc)
        return status, api.error_body(str(exc), kind, code)
    except Exception as exc:  # a fault of ours: say so, keep serving
        log.exception("run failed")
        return 500, api.error_body(f"{type(exc).__name__}: {exc}", "server_error", "run_failed")
    if result is None or result.status == "cancelled":
        run_id = None if result is None else result.run_id
        return 503, api.error_body("the run was cancelled: the service is stopping", "server_error",
                                   "run_cancelled", run_id=run_id)
    if result.status == "error":
        return 500, api.error_body(f"the run failed: {result.error} (`rlm show {result.run_id}` has its tree)",
                                   "server_error", "run_failed", run_id=result.run_id)
    return result


async def _stream(request: web.Request, chat: api.ChatRequest, messages: RunMessages) -> web.StreamResponse:
    """Server-sent events: role chunk, progress chunks, the answer, the finish chunk, usage, ``[DONE]``."""
    first = await messages.next()
    if isinstance(first, tuple):  # ended before it started: a plain error response
        return _ended(chat, first[1])
    run_id = str(first["run_id"])
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)

    async def send(data: dict[str, Any]) -> None:
        await response.write(b"data: " + json.dumps(data, ensure_ascii=False, default=str).encode() + b"\n\n")

    await send(api.chunk(run_id, chat.model, {"role": "assistant", "content": ""}))
    progress = Progress()
    while not isinstance(message := await messages.next(), tuple):
        if message.get("type") == "event":
            event = event_from_dict(message["event"])
            progress.add(event)
            if chat.progress:
                await send(api.chunk(run_id, chat.model, {}, rlm=progress.payload(event)))
    await _stream_end(send, chat, run_id, message[1])
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def _stream_end(send: Callable[[dict[str, Any]], Awaitable[None]], chat: api.ChatRequest, run_id: str,
                      future: Future[RunResult | None]) -> None:
    outcome = _outcome(future)
    if not isinstance(outcome, RunResult):
        await send(outcome[1])  # an `error` object: OpenAI's clients raise it
        return
    if outcome.answer:
        await send(api.chunk(run_id, chat.model, {"content": outcome.answer}))
    await send(api.chunk(run_id, chat.model, {}, api.finish_reason(outcome.status),
                         rlm=api.summary(outcome, chat.warnings)))
    if chat.include_usage:
        await send(api.chunk(run_id, chat.model, None, usage=api.usage(outcome)))


# -- helpers ------------------------------------------------------------------------------------
async def _json(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except ValueError as exc:
        raise InputError(f"the request body is not JSON: {exc}") from None


async def _chunks(part: Any) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(1 << 20):
        yield chunk


def _error(status: int, message: str, kind: str, code: str | None,
           headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(api.error_body(message, kind, code), status=status, headers=headers)


def _busy(reply: dict[str, Any]) -> web.Response:
    retry = int(reply.get("retry_after") or 5)
    return _error(429, f"the service is busy ({reply.get('running')} runs running, {reply.get('queued')} queued); "
                       f"try again in {retry} s", "rate_limit_error", "service_busy",
                  headers={"Retry-After": str(retry)})


def _allow(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None
