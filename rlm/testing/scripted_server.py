"""A scripted, OpenAI-compatible HTTP server for tests and benchmarks.

:class:`ScriptedServer` is a real HTTP/1.1 server on loopback (standard library
``asyncio`` only) that speaks enough of the OpenAI protocol to stand in for a
remote model provider: the ``openai`` SDK, ``litellm`` and ``httpx`` talk to it
exactly as they would to ``api.openai.com``. Replies come from a *script* (fixed
replies served in order) or from a *policy* (a function of the prompt), and
faults (429, 500, hangs, malformed bodies) can be injected at seeded rates.

Endpoints (each also answered without the ``/v1`` prefix):

* ``POST /v1/chat/completions`` -- a ``chat.completion`` JSON object, or with
  ``"stream": true`` server-sent events: ``data: {chat.completion.chunk}`` lines
  (a role chunk, one chunk per word of the reply, a final chunk whose
  ``finish_reason`` is ``"stop"``, a usage chunk when
  ``stream_options.include_usage`` is true) and then ``data: [DONE]``.
* ``GET /v1/models`` -- a list with one model, the server's ``model`` name
  (default ``"scripted"``); ``GET /v1/models/{name}`` retrieves it.

Errors use OpenAI's format ``{"error": {"message", "type", "param", "code"}}``:
404 for an unknown path, 405 for a wrong method, 400 for a body that is not a
JSON object with a ``messages`` list, 411 for a POST without a body length.

Script format
-------------
A script is a JSONL file (or, in-process, a list): one JSON object per line,
served in order, one per chat-completion request, shared by all connections.
Blank lines are ignored. Keys:

``content`` (string, required unless ``status`` is given)
    The assistant's reply text.
``delay_ms`` (number >= 0, optional)
    Extra latency for this reply, added to the server-wide ``latency_ms``.
``status`` (integer 400-599, optional)
    Answer with this HTTP error status instead of a completion (OpenAI error
    format; ``content``, if any, becomes the error message; a 429 also carries
    ``retry-after: 0``). The line is consumed like any other.
``usage`` (object, optional)
    Overrides the reported token counts: any of ``prompt_tokens``,
    ``completion_tokens``, ``total_tokens`` (non-negative integers). A missing
    ``total_tokens`` is the sum of the other two.
``reasoning_content`` (string, optional)
    A reasoning model's separate reasoning, sent in the message beside
    ``content`` (and as its own delta when streaming), as servers with a
    reasoning parser do.

Any other key is an error. Example::

    {"content": "```repl\\nprint(len(context))\\n```"}
    {"content": "FINAL(42)", "delay_ms": 250}
    {"status": 500, "content": "upstream overloaded"}
    {"content": "ok", "usage": {"prompt_tokens": 1000, "completion_tokens": 5}}

In-process, a list item may also be a plain string (same as ``{"content": s}``).
When the script runs out, every further request gets HTTP 500 with error code
``"script_exhausted"``.

Policy
------
Instead of a script, a policy computes each reply: a callable taking the
request's ``messages`` (a list of dicts, as sent by the client) and returning
the reply text, or a dict with the same keys as a script line. In-process it is
any callable (a coroutine function works too); on the command line, and as a
string in-process, it is ``module:function`` or ``path/to/file.py:function``.
Policies run on the server's event loop: keep them quick.

Token usage
-----------
Every completion reports ``usage``. ``prompt_tokens`` is
``ceil(C / 4)`` where ``C`` is the total number of characters of all message
contents (text parts of list contents count too); ``completion_tokens`` is
``ceil(len(reply) / 4)``; ``total_tokens`` is their sum (see
:func:`estimate_tokens`). A script line's ``usage`` overrides them.

Latency and fault injection
---------------------------
``latency_ms`` delays every request (with ``asyncio.sleep``, so concurrent
requests overlap). Each chat-completion request draws one number from a
``random.Random(seed)`` and, according to the cumulative rates (whose sum must
not exceed 1), gets one of:

* ``error_rate_429`` -- HTTP 429, ``retry-after: 0``, an OpenAI rate-limit body;
* ``error_rate_500`` -- HTTP 500, an OpenAI server-error body;
* ``timeout_rate`` -- the server hangs ``hang_s`` seconds (default 30), then
  answers HTTP 504 (normally the client has given up long before);
* ``malformed_rate`` -- HTTP 200 whose body is not valid JSON.

An injected fault never consumes a script line, so a retry gets the reply the
failed request would have got. Draws happen in arrival order, so a sequential
client sees the same faults on every run with the same seed.

Records
-------
Every request is recorded as a :class:`RequestRecord` (index, connection,
method, path, server-side ``time.monotonic()`` timestamps, parsed body, model,
messages, status, reply, fault). :meth:`ScriptedServer.max_concurrency` gives
the largest number of requests that were in flight at once.

Usage
-----
In-process (background thread with its own event loop)::

    from rlm.testing import ScriptedServer

    with ScriptedServer(script=["hello", {"content": "bye", "delay_ms": 50}]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x")
        client.chat.completions.create(model="scripted", messages=[...])
        assert server.requests[0].messages == [...]

From the shell (prints ``listening on http://127.0.0.1:PORT/v1`` and serves
until SIGINT/SIGTERM; bad arguments exit with status 2)::

    python -m rlm.testing.scripted_server --port 8001 --script replies.jsonl \\
        --latency-ms 100 --error-rate-429 0.05 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import http
import importlib
import importlib.util
import inspect
import itertools
import json
import logging
import math
import os
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Union

from rlm.errors import ConfigError

__all__ = [
    "Policy",
    "Reply",
    "RequestRecord",
    "ScriptedServer",
    "estimate_tokens",
    "load_policy",
    "load_script",
    "main",
    "max_concurrency",
    "prompt_chars",
]

logger = logging.getLogger(__name__)

Message = dict[str, Any]
#: A policy maps the request's messages to the reply text, or to a dict shaped
#: like a script line. It may also return an awaitable of either.
Policy = Callable[[list[Message]], Any]
ScriptSource = Union[str, "os.PathLike[str]", Sequence[Union[str, Mapping[str, Any]]]]

_CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
_MODELS_PATHS = frozenset({"/v1/models", "/models"})
_MODEL_PREFIXES = ("/v1/models/", "/models/")

_STREAM_LIMIT = 1 << 20  # largest request head, and the reader's buffer size
_MAX_BODY = 256 << 20  # largest request body
_BACKLOG = 4096
_SCRIPT_KEYS = frozenset({"content", "delay_ms", "status", "usage", "reasoning_content"})
_USAGE_KEYS = frozenset({"prompt_tokens", "completion_tokens", "total_tokens"})
_WORD_RE = re.compile(r"\S+\s*|\s+")


# --------------------------------------------------------------------------- #
# Replies, scripts and policies
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Reply:
    """One scripted reply (a script line, or what a policy returned).

    Attributes:
        content: the assistant's text (or the error message when ``status`` is set).
        delay_ms: extra latency for this reply, on top of the server's ``latency_ms``.
        status: an HTTP error status (400-599) to answer instead of a completion.
        usage: token counts overriding the estimates (keys from ``prompt_tokens``,
            ``completion_tokens``, ``total_tokens``).
        reasoning_content: a reasoning model's separate reasoning text, sent beside ``content``
            in the message (as vLLM's and DeepSeek's reasoning parsers do).
    """

    content: str = ""
    delay_ms: float = 0.0
    status: int | None = None
    usage: Mapping[str, int] | None = None
    reasoning_content: str | None = None

    @classmethod
    def parse(cls, item: object, where: str) -> Reply:
        """Validate a script line / policy result; ``where`` prefixes error messages.

        Raises:
            ConfigError: the item is not a string or a valid script-line dict.
        """
        if isinstance(item, str):
            return cls(content=item)
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: expected a JSON object or a string, got {type(item).__name__}")
        unknown = sorted(set(item) - _SCRIPT_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_SCRIPT_KEYS)}")
        status = _parse_status(item.get("status"), where)
        content = item.get("content")
        if content is None and status is None:
            raise ConfigError(f'{where}: missing "content" (a string)')
        if content is not None and not isinstance(content, str):
            raise ConfigError(f'{where}: "content" must be a string, got {type(content).__name__}')
        return cls(
            content=content or "",
            delay_ms=_parse_delay(item.get("delay_ms", 0), where),
            status=status,
            usage=_parse_usage(item.get("usage"), where),
            reasoning_content=_parse_reasoning(item.get("reasoning_content"), where),
        )


def _parse_reasoning(value: object, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f'{where}: "reasoning_content" must be a string, got {type(value).__name__}')
    return value


def _parse_status(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise ConfigError(f'{where}: "status" must be an integer HTTP error status 400-599, got {value!r}')
    return value


def _parse_delay(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f'{where}: "delay_ms" must be a number >= 0, got {value!r}')
    return float(value)


def _parse_usage(value: object, where: str) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f'{where}: "usage" must be an object')
    unknown = sorted(set(value) - _USAGE_KEYS)
    if unknown:
        raise ConfigError(f'{where}: unknown "usage" key(s) {unknown}; allowed: {sorted(_USAGE_KEYS)}')
    for key, count in value.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ConfigError(f'{where}: "usage.{key}" must be an integer >= 0, got {count!r}')
    return dict(value)


def load_script(source: ScriptSource | None) -> list[Reply]:
    """Load a script: ``None`` (empty), a JSONL file path, or a list of items.

    A ``str`` is always taken as a *path*; to script replies in-process pass a
    list (``["first reply", {"content": "second", "delay_ms": 10}]``).

    Raises:
        ConfigError: the file is missing/unreadable or a line is invalid; the
            message names the file and line.
    """
    if source is None:
        return []
    if isinstance(source, (str, os.PathLike)):
        return _load_script_file(Path(source))
    if isinstance(source, Mapping) or not isinstance(source, Sequence):
        raise ConfigError(f"script must be a path or a list of replies, got {type(source).__name__}")
    return [Reply.parse(item, f"script[{i}]") for i, item in enumerate(source)]


def _load_script_file(path: Path) -> list[Reply]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"script file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read script file {path}: {exc}") from None
    replies = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(item, dict):
            raise ConfigError(f'{where}: expected a JSON object like {{"content": "..."}}')
        replies.append(Reply.parse(item, where))
    return replies


def load_policy(spec: str | Policy) -> Policy:
    """Resolve a policy: a callable, ``"module:function"`` or ``"file.py:function"``.

    The function may be a dotted attribute path (``"pkg.mod:Class.method"``).

    Raises:
        ConfigError: the spec is malformed, cannot be imported, or is not callable.
    """
    if callable(spec):
        return spec
    if not isinstance(spec, str) or spec.count(":") < 1:
        raise ConfigError(f"policy must be a callable or 'module:function', got {spec!r}")
    module_name, _, attr_path = spec.rpartition(":")
    if not module_name or not attr_path:
        raise ConfigError(f"policy must look like 'module:function', got {spec!r}")
    try:
        target: Any = _import_policy_module(module_name)
        for attr in attr_path.split("."):
            target = getattr(target, attr)
    except ConfigError:
        raise
    except Exception as exc:  # ImportError, AttributeError, errors at import time
        raise ConfigError(f"cannot import policy {spec!r}: {type(exc).__name__}: {exc}") from None
    if not callable(target):
        raise ConfigError(f"policy {spec!r} is not callable (it is a {type(target).__name__})")
    return target  # type: ignore[no-any-return]


def _import_policy_module(name: str) -> Any:
    if not name.endswith(".py"):
        return importlib.import_module(name)
    path = Path(name)
    if not path.is_file():
        raise ConfigError(f"policy file not found: {path}")
    module_spec = importlib.util.spec_from_file_location(f"_scripted_policy_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"cannot load policy file {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- #
# Token estimates and request records
# --------------------------------------------------------------------------- #


def estimate_tokens(text: str | int) -> int:
    """The server's token estimate: ``ceil(characters / 4)`` (a count or a string)."""
    chars = text if isinstance(text, int) else len(text)
    return math.ceil(chars / 4)


def _content_chars(content: object) -> int:
    """Characters of a message ``content``: a string, or the text parts of a list."""
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(
            len(part["text"])
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return 0


def prompt_chars(messages: Iterable[Message]) -> int:
    """Total characters of all message contents (what ``prompt_tokens`` is estimated from)."""
    return sum(_content_chars(m.get("content")) for m in messages)


def _usage(messages: list[Message], reply: Reply) -> dict[str, int]:
    usage = {
        "prompt_tokens": estimate_tokens(prompt_chars(messages)),
        "completion_tokens": estimate_tokens(reply.content),
    }
    if reply.usage:
        usage.update({k: v for k, v in reply.usage.items() if k != "total_tokens"})
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    if reply.usage and "total_tokens" in reply.usage:
        usage["total_tokens"] = reply.usage["total_tokens"]
    return usage


@dataclass
class RequestRecord:
    """One HTTP request the server received.

    Records are appended when a request has been read; until it is answered
    ``responded_at`` is ``None`` and ``status`` is 0.

    Attributes:
        index: position among all requests since start/reset (0-based).
        connection: sequence number of the TCP connection it came on (keep-alive
            requests share one).
        method: HTTP method.
        path: request path without the query string.
        received_at: ``time.monotonic()`` when the request head was read.
        responded_at: ``time.monotonic()`` when the response was handed to the socket.
        body: the parsed JSON body (``None`` if absent or invalid).
        model: the ``model`` field of the body.
        messages: the ``messages`` field of the body.
        stream: whether a streamed response was asked for.
        status: the HTTP status sent.
        reply: the completion text sent (``None`` for errors and non-chat requests).
        error: the error message sent, for error statuses.
        fault: the injected fault: ``"error_429"``, ``"error_500"``, ``"timeout"``,
            ``"malformed"``, or ``None``.
    """

    index: int
    connection: int
    method: str
    path: str
    received_at: float
    responded_at: float | None = None
    body: Any = None
    model: str | None = None
    messages: list[Message] = field(default_factory=list)
    stream: bool = False
    status: int = 0
    reply: str | None = None
    error: str | None = None
    fault: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds between receiving and answering, or ``None`` while in flight."""
        return None if self.responded_at is None else self.responded_at - self.received_at


def max_concurrency(records: Iterable[RequestRecord]) -> int:
    """Largest number of requests in flight at once (requests not yet answered count as open).

    Intervals are half-open: a request answered at the instant another arrives
    does not overlap it.
    """
    events: list[tuple[float, int]] = []
    for record in records:
        end = record.responded_at if record.responded_at is not None else math.inf
        events.append((record.received_at, 1))
        events.append((end, -1))
    events.sort()  # at equal times -1 (an end) sorts before +1 (a start)
    current = best = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


# --------------------------------------------------------------------------- #
# HTTP plumbing
# --------------------------------------------------------------------------- #


@dataclass
class _HttpRequest:
    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes
    received_at: float

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


@dataclass
class _HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[bytes] | None = None  # sent with chunked transfer encoding
    close: bool = False
    error: str | None = None

    def encode(self, keep_alive: bool) -> bytes:
        """The full response bytes (status line, headers, body)."""
        try:
            reason = http.HTTPStatus(self.status).phrase
        except ValueError:
            reason = "Error"
        lines = [
            f"HTTP/1.1 {self.status} {reason}",
            f"content-type: {self.content_type}",
            "server: rlm-scripted",
            f"connection: {'keep-alive' if keep_alive else 'close'}",
        ]
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        if self.chunks is not None:
            lines.append("transfer-encoding: chunked")
            body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in self.chunks if c) + b"0\r\n\r\n"
        else:
            lines.append(f"content-length: {len(self.body)}")
            body = self.body
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _ApiError(Exception):
    """An OpenAI-format error to answer with."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        code: str | None,
        headers: Sequence[tuple[str, str]] = (),
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code
        self.headers, self.close = list(headers), close

    def response(self) -> _HttpResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": None, "code": self.code}}
        return _HttpResponse(
            self.status,
            _dumps(body),
            headers=self.headers,
            close=self.close,
            error=self.message,
        )


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def _scripted_error(status: int, message: str) -> _ApiError:
    """The error for a script line / policy result with a ``status``."""
    type_ = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    headers = [("retry-after", "0")] if status == 429 else []
    return _ApiError(status, message or f"scripted HTTP {status}", type_, "scripted_error", headers)


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


async def _read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _HttpRequest | None:
    """Read one request; ``None`` on a clean end of the connection.

    Raises:
        _ApiError: the bytes are not a valid HTTP/1.x request (answer and close).
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise _ApiError(400, "incomplete HTTP request head", "invalid_request_error", "bad_request", close=True)
    except asyncio.LimitOverrunError:
        raise _ApiError(431, "request head too large", "invalid_request_error", "bad_request", close=True)
    received_at = time.monotonic()
    method, path, version, headers = _parse_head(head)
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = await _read_body(reader, method, headers)
    return _HttpRequest(method, path, version, headers, body, received_at)


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    lines = head.lstrip(b"\r\n").decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha():
        raise _ApiError(400, f"malformed request line {lines[0][:100]!r}", "invalid_request_error", "bad_request", close=True)
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _ApiError(505, f"unsupported HTTP version {version[:20]!r}", "invalid_request_error", "bad_request", close=True)
    if "://" in target:  # absolute form: http://host/path
        target = "/" + target.split("://", 1)[1].partition("/")[2]
    path = target.partition("?")[0]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise _ApiError(400, f"malformed header line {line[:100]!r}", "invalid_request_error", "bad_request", close=True)
        headers[name.strip().lower()] = value.strip()
    return method, path, version, headers


async def _read_body(reader: asyncio.StreamReader, method: str, headers: dict[str, str]) -> bytes:
    encoding = headers.get("transfer-encoding")
    if encoding is not None:
        if encoding.lower().rsplit(",", 1)[-1].strip() != "chunked":
            raise _ApiError(501, f"unsupported transfer-encoding {encoding!r}", "invalid_request_error", "bad_request", close=True)
        return await _read_chunked(reader)
    length = headers.get("content-length")
    if length is None:
        if method in ("POST", "PUT", "PATCH"):
            raise _ApiError(411, "a request body needs a content-length header", "invalid_request_error", "length_required", close=True)
        return b""
    if not length.isdigit():
        raise _ApiError(400, f"invalid content-length {length[:40]!r}", "invalid_request_error", "bad_request", close=True)
    size = int(length)
    if size > _MAX_BODY:
        raise _ApiError(413, f"request body larger than {_MAX_BODY} bytes", "invalid_request_error", "bad_request", close=True)
    return await reader.readexactly(size)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _ApiError(400, "malformed chunk size", "invalid_request_error", "bad_request", close=True) from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # skip trailers
                pass
            return b"".join(parts)
        total += size
        if total > _MAX_BODY:
            raise _ApiError(413, f"request body larger than {_MAX_BODY} bytes", "invalid_request_error", "bad_request", close=True)
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise _ApiError(400, "malformed chunk terminator", "invalid_request_error", "bad_request", close=True)


# --------------------------------------------------------------------------- #
# The server
# --------------------------------------------------------------------------- #


class ScriptedServer:
    """A scripted OpenAI-compatible server on loopback; see the module docstring.

    Use it as a context manager (``with ScriptedServer(script=[...]) as s:``) or
    call :meth:`start` / :meth:`stop`. It runs in a daemon thread with its own
    event loop; all public methods are thread-safe.

    Args:
        script: ``None``, a JSONL path, or a list of strings / script-line dicts.
        policy: a callable ``messages -> str | dict`` or ``"module:function"``.
            At most one of ``script`` and ``policy``; with neither, the script
            is empty (every completion is a "script exhausted" error).
        latency_ms: delay added to every request.
        error_rate_429, error_rate_500, timeout_rate, malformed_rate: fault
            rates in [0, 1]; their sum must not exceed 1.
        hang_s: how long a ``timeout`` fault hangs before answering 504.
        seed: seed of the fault-injection random generator.
        model: the model name listed by ``/v1/models``.
        host, port: where to listen (``port=0`` picks a free port).

    Raises:
        ConfigError: an invalid script, policy or option.
    """

    def __init__(
        self,
        script: ScriptSource | None = None,
        policy: str | Policy | None = None,
        *,
        latency_ms: float = 0,
        error_rate_429: float = 0.0,
        error_rate_500: float = 0.0,
        timeout_rate: float = 0.0,
        malformed_rate: float = 0.0,
        hang_s: float = 30.0,
        seed: int = 0,
        model: str = "scripted",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if script is not None and policy is not None:
            raise ConfigError("give a script or a policy, not both")
        self._script = load_script(script)
        self._policy = load_policy(policy) if policy is not None else None
        self.latency_ms = _non_negative("latency_ms", latency_ms)
        self.hang_s = _non_negative("hang_s", hang_s)
        self._faults = _fault_table(
            error_429=error_rate_429,
            error_500=error_rate_500,
            timeout=timeout_rate,
            malformed=malformed_rate,
        )
        self.seed = seed
        self.model = model
        self.host = host
        self._requested_port = port
        self._port: int | None = None

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._records: list[RequestRecord] = []
        self._cursor = 0
        self._rng = random.Random(seed)
        self._connection_ids = itertools.count()

        self._connections: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._startup_error: BaseException | None = None

    # ----------------------------------------------------------- lifecycle --

    def __enter__(self) -> ScriptedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> ScriptedServer:
        """Start listening in a background thread; returns once the port is bound.

        Raises:
            RuntimeError: already running, or the thread did not come up in time.
            OSError: the address cannot be bound.
        """
        if self._thread is not None:
            raise RuntimeError("scripted server is already running")
        ready = threading.Event()
        self._startup_error = None
        thread = threading.Thread(target=self._thread_main, args=(ready,), name="scripted-server", daemon=True)
        thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("scripted server did not start in time")
        if self._startup_error is not None:
            thread.join(timeout)
            raise self._startup_error
        self._thread = thread
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving: close the listener and every connection, cancel pending sleeps.

        Idempotent. Blocks until the server thread has ended.
        """
        thread, loop, event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and event is not None:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop already ended
                pass
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError("scripted server thread did not stop in time")
        self._thread = None
        self._loop = None
        self._stop_event = None

    @property
    def running(self) -> bool:
        """Whether the background server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def port(self) -> int:
        """The TCP port being listened on (known once started)."""
        if self._port is None:
            raise RuntimeError("scripted server is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://HOST:PORT/v1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def _thread_main(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._thread_serve(ready))
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            if not ready.is_set():
                self._startup_error = exc
                ready.set()
            else:
                logger.exception("scripted server thread failed")

    async def _thread_serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        await self._serve(self._stop_event, ready.set)

    async def _serve(self, stop: asyncio.Event, on_ready: Callable[[], object]) -> None:
        """Listen until ``stop`` is set, then close the listener and all connections."""
        server = await asyncio.start_server(
            self._on_connection,
            self.host,
            self._requested_port,
            backlog=_BACKLOG,
            limit=_STREAM_LIMIT,
            reuse_address=True,
        )
        self._port = server.sockets[0].getsockname()[1]
        on_ready()
        try:
            await stop.wait()
        finally:
            server.close()
            tasks = list(self._connections)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await asyncio.wait_for(server.wait_closed(), 5)
            except asyncio.TimeoutError:
                logger.warning("scripted server: listener did not close in time")

    # ------------------------------------------------------------- records --

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of all request records, in arrival order."""
        with self._lock:
            return [dataclasses.replace(r) for r in self._records]

    def max_concurrency(self) -> int:
        """The largest number of requests that were in flight at once."""
        return max_concurrency(self.requests)

    @property
    def script_remaining(self) -> int:
        """How many script lines have not been served yet (0 with a policy)."""
        with self._lock:
            return len(self._script) - self._cursor

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[RequestRecord]:
        """Block until at least ``count`` requests have been received; return the records.

        Raises:
            TimeoutError: fewer arrived within ``timeout`` seconds.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._records) >= count, timeout):
                raise TimeoutError(f"only {len(self._records)} of {count} requests arrived in {timeout}s")
            return [dataclasses.replace(r) for r in self._records]

    def reset(self, script: ScriptSource | None = None) -> None:
        """Forget all records, rewind the script (or replace it) and reseed the faults."""
        replies = load_script(script) if script is not None else None
        with self._lock:
            self._records.clear()
            self._cursor = 0
            self._rng = random.Random(self.seed)
            if replies is not None:
                self._script = replies

    # ------------------------------------------------------------- serving --

    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Accept callback: serve the connection in a task we track (and cancel at stop)."""
        task = asyncio.get_running_loop().create_task(self._connection_main(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _connection_main(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve_connection(reader, writer, next(self._connection_ids))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away mid-request
        except Exception:  # noqa: BLE001 - never let one connection kill the server
            logger.exception("scripted server: connection failed")
        finally:
            writer.close()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: int
    ) -> None:
        while True:
            try:
                request = await _read_request(reader, writer)
            except _ApiError as exc:
                writer.write(exc.response().encode(keep_alive=False))
                await writer.drain()
                return
            if request is None:
                return
            record = self._new_record(request, connection)
            response = await self._respond(request, record)
            keep_alive = request.keep_alive and not response.close
            payload = response.encode(keep_alive)
            # Finish the record before the bytes leave, so a client holding the
            # response always finds its record complete.
            self._finish_record(record, response)
            writer.write(payload)
            await writer.drain()
            if not keep_alive:
                return

    def _new_record(self, request: _HttpRequest, connection: int) -> RequestRecord:
        with self._changed:
            record = RequestRecord(
                index=len(self._records),
                connection=connection,
                method=request.method,
                path=request.path,
                received_at=request.received_at,
            )
            self._records.append(record)
            self._changed.notify_all()
        return record

    def _finish_record(self, record: RequestRecord, response: _HttpResponse) -> None:
        with self._changed:
            record.status = response.status
            record.error = response.error
            record.responded_at = time.monotonic()
            self._changed.notify_all()

    async def _respond(self, request: _HttpRequest, record: RequestRecord) -> _HttpResponse:
        try:
            return await self._route(request, record)
        except _ApiError as exc:
            return exc.response()
        except Exception as exc:  # noqa: BLE001 - a bug here must not hang the client
            logger.exception("scripted server: internal error")
            return _ApiError(500, f"scripted server internal error: {exc!r}", "server_error", "internal_error").response()

    async def _route(self, request: _HttpRequest, record: RequestRecord) -> _HttpResponse:
        path = request.path.rstrip("/") or "/"
        if path in _CHAT_PATHS:
            _require_method(request, "POST")
            return await self._chat_completion(request, record)
        await _sleep_ms(self.latency_ms)
        if path in _MODELS_PATHS:
            _require_method(request, "GET")
            return _HttpResponse(200, _dumps({"object": "list", "data": [self._model_object()]}))
        if path.startswith(_MODEL_PREFIXES):
            _require_method(request, "GET")
            name = path.split("/models/", 1)[1]
            if name != self.model:
                raise _ApiError(404, f"The model '{name}' does not exist", "invalid_request_error", "model_not_found")
            return _HttpResponse(200, _dumps(self._model_object()))
        raise _ApiError(404, f"Invalid URL ({request.method} {request.path})", "invalid_request_error", "not_found")

    def _model_object(self) -> dict[str, Any]:
        return {"id": self.model, "object": "model", "created": 0, "owned_by": "rlm-scripted"}

    async def _chat_completion(self, request: _HttpRequest, record: RequestRecord) -> _HttpResponse:
        payload = _parse_chat_body(request.body)
        messages: list[Message] = payload["messages"]
        record.body, record.messages = payload, messages
        record.model = payload.get("model") if isinstance(payload.get("model"), str) else None
        record.stream = payload.get("stream") is True
        fault = self._draw_fault()
        if fault is not None:
            record.fault = fault
            await _sleep_ms(self.latency_ms)
            return await self._fault_response(fault, record.stream)
        try:
            reply = await self._next_reply(messages)
        except _ApiError:
            await _sleep_ms(self.latency_ms)
            raise
        await _sleep_ms(self.latency_ms + reply.delay_ms)
        if reply.status is not None:
            raise _scripted_error(reply.status, reply.content)
        record.reply = reply.content
        completion = _Completion(
            id=f"chatcmpl-scripted-{record.index}",
            created=int(time.time()),
            model=record.model or self.model,
            content=reply.content,
            usage=_usage(messages, reply),
            reasoning_content=reply.reasoning_content,
        )
        if record.stream:
            return completion.sse_response(_include_usage(payload))
        return completion.json_response()

    def _draw_fault(self) -> str | None:
        with self._lock:
            draw = self._rng.random()
        for name, upper in self._faults:
            if draw < upper:
                return name
        return None

    async def _fault_response(self, fault: str, stream: bool) -> _HttpResponse:
        if fault == "error_429":
            raise _ApiError(
                429,
                "Rate limit reached for requests (injected by the scripted server).",
                "requests",
                "rate_limit_exceeded",
                headers=[("retry-after", "0")],
            )
        if fault == "error_500":
            raise _ApiError(
                500,
                "The server had an error while processing your request (injected by the scripted server).",
                "server_error",
                "server_error",
            )
        if fault == "timeout":
            await asyncio.sleep(self.hang_s)
            raise _ApiError(504, f"injected timeout: no answer for {self.hang_s}s", "timeout", "timeout")
        if stream:
            chunks = [b'data: {"id": "chatcmpl-malformed", "choi\n\n', b"data: [DONE]\n\n"]
            return _HttpResponse(200, content_type="text/event-stream; charset=utf-8", chunks=chunks)
        return _HttpResponse(200, b'{"id": "chatcmpl-malformed", "object": "chat.completion", "choices": [{')

    async def _next_reply(self, messages: list[Message]) -> Reply:
        """The next script line (consumed) or the policy's answer.

        Raises:
            _ApiError: the script is exhausted or the policy failed.
        """
        if self._policy is None:
            with self._lock:
                if self._cursor >= len(self._script):
                    raise _ApiError(
                        500,
                        f"scripted server: the script is exhausted (all {len(self._script)} replies were served)",
                        "server_error",
                        "script_exhausted",
                    )
                reply = self._script[self._cursor]
                self._cursor += 1
            return reply
        try:
            result = self._policy(messages)
            if inspect.isawaitable(result):
                result = await result
            return Reply.parse(result, "policy result")
        except Exception as exc:  # noqa: BLE001 - reported to the client as a 500
            logger.warning("scripted server: policy failed: %r", exc)
            raise _ApiError(500, f"scripted server: policy raised {type(exc).__name__}: {exc}", "server_error", "policy_error") from None


@dataclass
class _Completion:
    """A successful completion, rendered as JSON or as server-sent events."""

    id: str
    created: int
    model: str
    content: str
    usage: dict[str, int]
    reasoning_content: str | None = None

    def json_response(self) -> _HttpResponse:
        message: dict[str, Any] = {"role": "assistant", "content": self.content, "refusal": None}
        if self.reasoning_content is not None:
            message["reasoning_content"] = self.reasoning_content
        body = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": self.usage,
        }
        return _HttpResponse(200, _dumps(body))

    def sse_response(self, include_usage: bool) -> _HttpResponse:
        deltas: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant", "content": ""}, None)]
        if self.reasoning_content is not None:
            deltas.append(({"reasoning_content": self.reasoning_content}, None))
        deltas.extend(({"content": word}, None) for word in _WORD_RE.findall(self.content))
        deltas.append(({}, "stop"))
        events = [self._chunk(delta, finish, include_usage) for delta, finish in deltas]
        if include_usage:
            events.append({**self._base(), "choices": [], "usage": self.usage})
        chunks = [b"data: " + _dumps(event) + b"\n\n" for event in events]
        chunks.append(b"data: [DONE]\n\n")
        headers = [("cache-control", "no-cache")]
        return _HttpResponse(200, content_type="text/event-stream; charset=utf-8", headers=headers, chunks=chunks)

    def _base(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None, include_usage: bool) -> dict[str, Any]:
        chunk = {**self._base(), "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            chunk["usage"] = None
        return chunk


def _parse_chat_body(body: bytes) -> dict[str, Any]:
    """The JSON body of a chat-completion request, validated.

    Raises:
        _ApiError: 400 if it is not a JSON object with a list of message objects.
    """
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _ApiError(400, f"request body is not valid JSON: {exc}", "invalid_request_error", "invalid_json") from None
    if not isinstance(payload, dict):
        raise _ApiError(400, "request body must be a JSON object", "invalid_request_error", "invalid_request")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise _ApiError(400, "'messages' must be a list of message objects", "invalid_request_error", "invalid_request")
    return payload


def _include_usage(payload: Mapping[str, Any]) -> bool:
    options = payload.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _require_method(request: _HttpRequest, allowed: str) -> None:
    if request.method != allowed:
        raise _ApiError(
            405,
            f"Method {request.method} not allowed for {request.path}; use {allowed}",
            "invalid_request_error",
            "method_not_allowed",
            headers=[("allow", allowed)],
        )


async def _sleep_ms(ms: float) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000)


def _non_negative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def _fault_table(**rates: float) -> list[tuple[str, float]]:
    """Cumulative upper bounds for one uniform draw, in a fixed order.

    Raises:
        ConfigError: a rate outside [0, 1], or rates summing to more than 1.
    """
    table = []
    upper = 0.0
    for name, rate in rates.items():
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ConfigError(f"fault rate for {name} must be in [0, 1], got {rate!r}")
        if rate > 0:
            upper += rate
            table.append((name, upper))
    if upper > 1 + 1e-9:
        raise ConfigError(f"fault rates sum to {upper:g}; the sum must not exceed 1")
    return table


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _non_negative_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rlm.testing.scripted_server",
        description="Scripted OpenAI-compatible HTTP server for tests and benchmarks.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--script", metavar="FILE", help="JSONL file of replies served in order")
    source.add_argument("--policy", metavar="MODULE:FUNCTION", help="function from messages to the reply")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: a free port)")
    parser.add_argument("--model", default="scripted", help="model name listed by /v1/models")
    parser.add_argument("--latency-ms", type=_non_negative_arg, default=0.0, help="delay added to every request")
    parser.add_argument("--error-rate-429", type=_rate, default=0.0, help="rate of injected HTTP 429s")
    parser.add_argument("--error-rate-500", type=_rate, default=0.0, help="rate of injected HTTP 500s")
    parser.add_argument("--timeout-rate", type=_rate, default=0.0, help="rate of requests that hang")
    parser.add_argument("--malformed-rate", type=_rate, default=0.0, help="rate of 200s with an invalid body")
    parser.add_argument("--hang-s", type=_non_negative_arg, default=30.0, help="how long a hang lasts (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault injection (default 0)")
    return parser


async def _serve_until_signal(server: ScriptedServer) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await server._serve(stop, lambda: print(f"listening on {server.base_url}", flush=True))


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for bad arguments)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        server = ScriptedServer(
            script=Path(args.script) if args.script is not None else None,
            policy=args.policy,
            latency_ms=args.latency_ms,
            error_rate_429=args.error_rate_429,
            error_rate_500=args.error_rate_500,
            timeout_rate=args.timeout_rate,
            malformed_rate=args.malformed_rate,
            hang_s=args.hang_s,
            seed=args.seed,
            model=args.model,
            host=args.host,
            port=args.port,
        )
    except ConfigError as exc:
        parser.error(str(exc))  # exits with status 2
    try:
        asyncio.run(_serve_until_signal(server))
    except OSError as exc:
        print(f"{parser.prog}: error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
