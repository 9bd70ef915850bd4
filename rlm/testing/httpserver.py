"""The HTTP/1.1 layer of the scripted server: aiohttp's low-level server.

:class:`HttpServer` listens, reads each request's body, numbers connections,
and hands a :class:`~rlm.testing.openai_api.Request` to the server's handler,
whose :class:`~rlm.testing.openai_api.Response` it sends. Keep-alive, chunked
request bodies and ``Expect: 100-continue`` are served; bytes that are not HTTP
are answered by aiohttp itself (400, plain text). Request-level errors the
OpenAI format covers (411 without a body length, 413 over
:data:`MAX_BODY`) are OpenAI-format errors and close the connection.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler

from rlm.testing.openai_api import ApiError, Request, Response

__all__ = ["MAX_BODY", "Handler", "HttpServer"]

MAX_BODY = 256 << 20  # largest request body
_BACKLOG = 4096
#: Seconds a request still being answered gets at stop before it is cancelled (a hang must not hold it up).
_SHUTDOWN_GRACE_S = 0.05
#: Answers ``(request, connection number) -> response``.
Handler = Callable[[Request, int], Awaitable[Response]]


class _Connections(web.Server):
    """aiohttp's low-level server, numbering its TCP connections in the order they were accepted."""

    def __init__(self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.numbers: dict[RequestHandler, int] = {}
        self._next = itertools.count()

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.numbers[handler] = next(self._next)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self.numbers.pop(handler, None)


class HttpServer:
    """Serves ``handler`` on ``host:port`` (``port=0``: a free one) until :meth:`close`."""

    def __init__(self, handler: Handler, host: str, port: int) -> None:
        self._handler, self.host, self._requested_port = handler, host, port
        self._runner: web.ServerRunner | None = None
        self._connections: _Connections | None = None

    async def start(self) -> int:
        """Listen; return the port.

        Raises:
            OSError: the address cannot be bound.
        """
        self._connections = _Connections(self._serve, access_log=None)
        self._runner = web.ServerRunner(self._connections, handle_signals=False, shutdown_timeout=_SHUTDOWN_GRACE_S)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port, backlog=_BACKLOG, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        return int(self._runner.addresses[0][1])

    async def close(self) -> None:
        """Stop listening, cancel the requests in progress, close every connection."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        received_at = time.monotonic()
        assert self._connections is not None
        connection = self._connections.numbers.get(request.protocol, -1)
        try:
            body = await _read_body(request)
        except ApiError as exc:
            return await _send(request, exc.response())
        response = await self._handler(Request(request.method, request.path, body, received_at), connection)
        return await _send(request, response)


async def _read_body(request: web.BaseRequest) -> bytes:
    """The whole request body (answering ``Expect: 100-continue`` first).

    Raises:
        ApiError: 411 for a body-carrying method without a length, 413 for a body over :data:`MAX_BODY`.
    """
    chunked = "chunked" in request.headers.get(hdrs.TRANSFER_ENCODING, "").lower()
    if request.content_length is None and not chunked:
        if request.method in ("POST", "PUT", "PATCH"):
            raise ApiError(411, "a request body needs a content-length header", "invalid_request_error",
                           "length_required", close=True)
        return b""
    if (request.content_length or 0) > MAX_BODY:
        raise _too_large()
    if request.headers.get(hdrs.EXPECT, "").lower() == "100-continue":
        await request.writer.write(b"HTTP/%d.%d 100 Continue\r\n\r\n" % request.version)
    parts: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > MAX_BODY:
            raise _too_large()
        parts.append(chunk)
    return b"".join(parts)


def _too_large() -> ApiError:
    return ApiError(413, f"request body larger than {MAX_BODY} bytes", "invalid_request_error", "bad_request",
                    close=True)


async def _send(request: web.BaseRequest, response: Response) -> web.StreamResponse:
    """Render ``response`` for aiohttp: one body, or chunked transfer encoding for ``chunks``."""
    headers = {"Content-Type": response.content_type, "Server": "rlm-scripted", **dict(response.headers)}
    if response.chunks is None:
        out = web.Response(status=response.status, reason=response.reason, body=response.body, headers=headers)
        if response.close:
            out.force_close()
        return out
    stream = web.StreamResponse(status=response.status, reason=response.reason, headers=headers)
    stream.enable_chunked_encoding()
    if response.close:
        stream.force_close()
    await stream.prepare(request)
    await stream.write(b"".join(response.chunks))
    await stream.write_eof()
    return stream
