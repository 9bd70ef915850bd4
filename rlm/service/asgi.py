"""Serve an ASGI application (MCP's streamable HTTP app) from an aiohttp handler.

The MCP SDK's HTTP transport is an ASGI app; the service's HTTP server is
aiohttp's. :func:`call_asgi` turns one aiohttp request into an ASGI ``http``
scope, feeds the app the request body through ``receive``, and streams what
the app sends into an aiohttp :class:`~aiohttp.web.StreamResponse` (server-sent
events included). A client that hangs up cancels the handler (the service's
server runs with handler cancellation), and with it the app's call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aiohttp import web

__all__ = ["call_asgi"]

Message = MutableMapping[str, Any]
ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                   Awaitable[None]]


def _scope(request: web.Request) -> dict[str, Any]:
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport else None
    sock = transport.get_extra_info("sockname") if transport else None
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": request.method, "scheme": request.scheme, "path": request.path,
            "raw_path": request.raw_path.split("?")[0].encode(), "query_string": request.query_string.encode(),
            "root_path": "", "headers": [(k.lower(), v) for k, v in request.raw_headers],
            "client": tuple(peer[:2]) if peer else None, "server": tuple(sock[:2]) if sock else None}


async def call_asgi(app: ASGIApp, request: web.Request) -> web.StreamResponse:
    """The response of ``app`` to ``request``."""
    response: web.StreamResponse | None = None
    body_done = False

    async def receive() -> Message:
        nonlocal body_done
        if not body_done:
            chunk = await request.content.readany()
            body_done = not chunk or request.content.at_eof()
            return {"type": "http.request", "body": chunk, "more_body": not body_done}
        await asyncio.Event().wait()  # nothing more comes; a hang-up cancels this handler
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal response
        if message["type"] == "http.response.start":
            response = web.StreamResponse(status=message["status"])
            for name, value in message.get("headers", []):
                response.headers.add(name.decode("latin-1"), value.decode("latin-1"))
            await response.prepare(request)
        elif message["type"] == "http.response.body" and response is not None:
            await response.write(message.get("body", b""))
            if not message.get("more_body"):
                await response.write_eof()

    await app(_scope(request), receive, send)
    if response is None:
        return web.Response(status=500, text="the MCP app sent no response")
    return response
