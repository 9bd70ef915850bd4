"""The HTTP/1.1 layer of the scripted server, on ``asyncio`` streams.

:class:`HttpServer` listens, parses each request (keep-alive, ``content-length``
and chunked bodies, ``Expect: 100-continue``), numbers connections, hands a
:class:`~rlm.testing.openai_api.Request` to the server's handler and writes the
:class:`~rlm.testing.openai_api.Response` it returns. Bytes that are not a valid
HTTP/1.x request get an OpenAI-format error and the connection is closed.

Why not aiohttp's server (aiohttp is a dependency): measured under the
benchmarks' heaviest load (1,000 completions at 0 ms, 64 in flight), it costs the
server 113-126 us of CPU per request against 74-79 us for this layer (two runs
each), and a bare aiohttp server alone 57 us against 26 us for bare ``asyncio``
streams: the gap is aiohttp's own. In the fan-out benchmark the requests reach
the server one at a time (its ``server_max_concurrency`` is 1), so that time adds
to every sub-call: ``measure_cpu_bound`` took a median 0.419 and 0.429 s with
aiohttp against 0.350 and 0.414 s with this layer (six runs each, on a shared
machine at load 3). ``benchmarks/scripted_server_load.py`` measures both; the
numbers are in ``benchmarks/reports/scripted_server_load.md`` (aiohttp's layer is
commit abc665b).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from rlm.testing.openai_api import ApiError, Request, Response

__all__ = ["MAX_BODY", "Handler", "HttpServer"]

logger = logging.getLogger("rlm.testing.scripted_server")

MAX_BODY = 256 << 20  # largest request body
_STREAM_LIMIT = 1 << 20  # largest request head, and the reader's buffer size
_BACKLOG = 4096
#: Answers ``(request, connection number) -> response``.
Handler = Callable[[Request, int], Awaitable[Response]]


@dataclass
class _Head:
    """What the request line and headers say."""

    method: str
    path: str
    version: str
    headers: dict[str, str]

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


class HttpServer:
    """Serves ``handler`` on ``host:port`` (``port=0``: a free one) until :meth:`close`."""

    def __init__(self, handler: Handler, host: str, port: int) -> None:
        self._handler, self.host, self._requested_port = handler, host, port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count()

    async def start(self) -> int:
        """Listen; return the port.

        Raises:
            OSError: the address cannot be bound.
        """
        self._server = await asyncio.start_server(self._on_connection, self.host, self._requested_port,
                                                  backlog=_BACKLOG, limit=_STREAM_LIMIT, reuse_address=True)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening, cancel the requests in progress, close every connection."""
        if self._server is None:
            return
        self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(self._server.wait_closed(), 5)
        except TimeoutError:
            logger.warning("scripted server: listener did not close in time")

    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Accept callback: serve the connection in a task we track (and cancel at close)."""
        task = asyncio.get_running_loop().create_task(self._connection_main(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _connection_main(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve_connection(reader, writer, next(self._numbers))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away mid-request
        except Exception:  # never let one connection kill the server (the handler logs it)
            logger.exception("scripted server: connection failed")
        finally:
            writer.close()

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                connection: int) -> None:
        while True:
            try:
                read = await _read_request(reader, writer)
            except ApiError as exc:
                writer.write(_encode(exc.response(), keep_alive=False))
                await writer.drain()
                return
            if read is None:
                return
            head, request = read
            response = await self._handler(request, connection)
            keep_alive = head.keep_alive and not response.close
            writer.write(_encode(response, keep_alive))
            await writer.drain()
            if not keep_alive:
                return


def _encode(response: Response, keep_alive: bool) -> bytes:
    """The full response bytes (status line, headers, body)."""
    lines = [
        f"HTTP/1.1 {response.status} {response.reason}",
        f"content-type: {response.content_type}",
        "server: rlm-scripted",
        f"connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    lines.extend(f"{name}: {value}" for name, value in response.headers)
    if response.chunks is not None:
        lines.append("transfer-encoding: chunked")
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in response.chunks if c) + b"0\r\n\r\n"
    else:
        lines.append(f"content-length: {len(response.body)}")
        body = response.body
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _bad(status: int, message: str, code: str = "bad_request") -> ApiError:
    """An error about the bytes of the request: answered, then the connection is closed."""
    return ApiError(status, message, "invalid_request_error", code, close=True)


async def _read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[_Head, Request] | None:
    """Read one request; ``None`` on a clean end of the connection.

    Raises:
        ApiError: the bytes are not a valid HTTP/1.x request (answer and close).
    """
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise _bad(400, "incomplete HTTP request head") from None
    except asyncio.LimitOverrunError:
        raise _bad(431, "request head too large") from None
    received_at = time.monotonic()
    head = _parse_head(raw)
    if head.headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = await _read_body(reader, head)
    return head, Request(head.method, head.path, body, received_at)


def _parse_head(raw: bytes) -> _Head:
    lines = raw.lstrip(b"\r\n").decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha():
        raise _bad(400, f"malformed request line {lines[0][:100]!r}")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _bad(505, f"unsupported HTTP version {version[:20]!r}")
    if "://" in target:  # absolute form: http://host/path
        target = "/" + target.split("://", 1)[1].partition("/")[2]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise _bad(400, f"malformed header line {line[:100]!r}")
        headers[name.strip().lower()] = value.strip()
    return _Head(method, target.partition("?")[0], version, headers)


async def _read_body(reader: asyncio.StreamReader, head: _Head) -> bytes:
    encoding = head.headers.get("transfer-encoding")
    if encoding is not None:
        if encoding.lower().rsplit(",", 1)[-1].strip() != "chunked":
            raise _bad(501, f"unsupported transfer-encoding {encoding!r}")
        return await _read_chunked(reader)
    length = head.headers.get("content-length")
    if length is None:
        if head.method in ("POST", "PUT", "PATCH"):
            raise _bad(411, "a request body needs a content-length header", "length_required")
        return b""
    if not length.isdigit():
        raise _bad(400, f"invalid content-length {length[:40]!r}")
    size = int(length)
    if size > MAX_BODY:
        raise _bad(413, f"request body larger than {MAX_BODY} bytes")
    return await reader.readexactly(size)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _bad(400, "malformed chunk size") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # skip trailers
                pass
            return b"".join(parts)
        total += size
        if total > MAX_BODY:
            raise _bad(413, f"request body larger than {MAX_BODY} bytes")
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise _bad(400, "malformed chunk terminator")
