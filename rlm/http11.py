"""A small asyncio HTTP/1.1 client: what :func:`rlm.transport.chat` sends a fan-out's calls with.

It does one thing: POST a body and read the response, over connections kept
alive and pooled per event loop and origin (scheme, host, port). Responses are
delimited by ``Content-Length``, the chunked transfer coding, or the end of the
connection; informational (1xx) responses are skipped; ``https`` uses the
default TLS context. A kept-alive connection the server closed while it was
idle is replaced and the request sent again, once, when nothing of a response
had arrived (as :func:`rlm.transport.chat_sync` does).

Why not aiohttp's client: a fan-out is CPU-bound on the caller's event loop, and
aiohttp's per-call bookkeeping was most of that CPU; its import was paid by the
first fan-out of every command run without a service. With this client the
fan-out scenarios of ``benchmarks/reports/shell.md`` take about half the time.

Errors: :class:`ConnectionError` (refused, reset, closed early), ``ValueError``
(a response that is not HTTP/1.x), and whatever the caller's timeout raises.
"""

from __future__ import annotations

import asyncio
from urllib.parse import SplitResult

__all__ = ["Pool", "Response"]

#: Idle connections kept per origin; more in flight at once are opened and closed as needed.
MAX_IDLE_PER_ORIGIN = 1024
#: Longest header block (and chunk-size line) read.
MAX_HEAD_BYTES = 1 << 16

Origin = tuple[str, str, int]


class Response:
    """A response's status and body (headers are not kept: nothing here needs them)."""

    __slots__ = ("status", "body")

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body


class _Connection:
    """One open connection; ``answered`` says whether any byte of a response arrived on its last request."""

    __slots__ = ("reader", "writer", "answered")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.answered = False

    def close(self) -> None:
        self.writer.close()


class Pool:
    """Kept-alive connections of one event loop (use it from that loop only)."""

    def __init__(self) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._ssl: object | None = None

    async def post(self, url: SplitResult, headers: dict[str, str], body: bytes) -> Response:
        """POST ``body`` to ``url`` with ``headers`` (``Host`` and ``Content-Length`` are added)."""
        origin = _origin(url)
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        head = [f"POST {path} HTTP/1.1", f"Host: {_host_header(origin)}", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        for attempt in (1, 2):
            idle = self._idle.get(origin)
            connection = idle.pop() if idle else None
            reused = connection is not None
            if connection is None:
                connection = await self._open(origin)
            try:
                response, keep = await _exchange(connection, request)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                connection.close()
                if reused and attempt == 1 and not connection.answered:
                    continue  # the server closed an idle kept-alive connection: a fresh one
                raise ConnectionError(f"the connection to {_host_header(origin)} broke: {exc}") from None
            except BaseException:  # a timeout or a cancel mid-response: the connection's state is unknown
                connection.close()
                raise
            if keep and len(self._idle.setdefault(origin, [])) < MAX_IDLE_PER_ORIGIN:
                self._idle[origin].append(connection)
            else:
                connection.close()
            return response
        raise AssertionError("unreachable")

    async def _open(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        ssl_context = None
        if scheme == "https":
            if self._ssl is None:
                import ssl

                self._ssl = ssl.create_default_context()
            ssl_context = self._ssl
        reader, writer = await asyncio.open_connection(host, port, ssl=ssl_context, limit=MAX_HEAD_BYTES)
        return _Connection(reader, writer)

    def close(self) -> None:
        """Close every idle connection."""
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()


def _origin(url: SplitResult) -> Origin:
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"not an http(s) URL: {url.geturl()!r}")
    return url.scheme, url.hostname, url.port or (443 if url.scheme == "https" else 80)


def _host_header(origin: Origin) -> str:
    scheme, host, port = origin
    name = f"[{host}]" if ":" in host else host
    return name if port == (443 if scheme == "https" else 80) else f"{name}:{port}"


async def _exchange(connection: _Connection, request: bytes) -> tuple[Response, bool]:
    """Send ``request``; the response, and whether the connection may carry another request."""
    connection.answered = False
    connection.writer.write(request)
    await connection.writer.drain()
    reader = connection.reader
    while True:
        head = await _read_line(reader, b"\r\n\r\n")
        connection.answered = True
        status, version, headers = _parse_head(head)
        if not 100 <= status < 200:
            break
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body, delimited = await _chunked(reader), True
    elif "content-length" in headers:
        body, delimited = await reader.readexactly(_length(headers["content-length"])), True
    else:
        body, delimited = await reader.read(), False  # delimited by the end of the connection
    keep = delimited and version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    return Response(status, body), keep


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), parts[0], headers


def _length(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"a Content-Length that is not a number: {text[:40]!r}")
    return int(text)


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        line = await _read_line(reader, b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ValueError(f"a chunk size that is not hexadecimal: {line[:40]!r}") from None
        if size == 0:
            while await _read_line(reader, b"\r\n") != b"\r\n":  # trailer fields, then the empty line
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def _read_line(reader: asyncio.StreamReader, end: bytes) -> bytes:
    try:
        return await reader.readuntil(end)
    except asyncio.LimitOverrunError:
        raise ValueError(f"a response header or chunk line over {MAX_HEAD_BYTES:,} bytes") from None
