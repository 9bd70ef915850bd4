"""The OpenAI side of the scripted server: requests and responses, completions, errors.

Independent of the HTTP layer (:mod:`rlm.testing.http`): a :class:`Request` is
what arrived (method, path, body), a :class:`Response` what to send. Completions
render as a ``chat.completion`` object or as server-sent events
(:class:`Completion`); errors use OpenAI's format (:class:`ApiError`).
"""

from __future__ import annotations

import http
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CHAT_PATHS",
    "MODELS_PATHS",
    "MODEL_PREFIXES",
    "ApiError",
    "Completion",
    "Request",
    "Response",
    "dumps",
    "include_usage",
    "parse_chat_body",
    "require_method",
    "scripted_error",
]

CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
MODELS_PATHS = frozenset({"/v1/models", "/models"})
MODEL_PREFIXES = ("/v1/models/", "/models/")
_WORD_RE = re.compile(r"\S+\s*|\s+")


@dataclass
class Request:
    """One HTTP request, as the server's logic sees it."""

    method: str
    path: str  # without the query string
    body: bytes
    received_at: float  # time.monotonic() when its head was read


@dataclass
class Response:
    """What to answer: a status and a body (or chunks, sent with chunked transfer encoding)."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[bytes] | None = None
    close: bool = False  # close the connection after it
    error: str | None = None  # the error message, recorded for error statuses

    @property
    def reason(self) -> str:
        """The status line's reason phrase."""
        try:
            return http.HTTPStatus(self.status).phrase
        except ValueError:
            return "Error"


class ApiError(Exception):
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

    def response(self) -> Response:
        body = {"error": {"message": self.message, "type": self.type, "param": None, "code": self.code}}
        return Response(
            self.status,
            dumps(body),
            headers=self.headers,
            close=self.close,
            error=self.message,
        )


ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def scripted_error(status: int, message: str) -> ApiError:
    """The error for a script line / policy result with a ``status``."""
    type_ = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    headers = [("retry-after", "0")] if status == 429 else []
    return ApiError(status, message or f"scripted HTTP {status}", type_, "scripted_error", headers)


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")



@dataclass
class Completion:
    """A successful completion, rendered as JSON or as server-sent events."""

    id: str
    created: int
    model: str
    content: str
    usage: dict[str, int]
    reasoning_content: str | None = None

    def json_response(self) -> Response:
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
        return Response(200, dumps(body))

    def sse_response(self, include_usage: bool) -> Response:
        deltas: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant", "content": ""}, None)]
        if self.reasoning_content is not None:
            deltas.append(({"reasoning_content": self.reasoning_content}, None))
        deltas.extend(({"content": word}, None) for word in _WORD_RE.findall(self.content))
        deltas.append(({}, "stop"))
        events = [self._chunk(delta, finish, include_usage) for delta, finish in deltas]
        if include_usage:
            events.append({**self._base(), "choices": [], "usage": self.usage})
        chunks = [b"data: " + dumps(event) + b"\n\n" for event in events]
        chunks.append(b"data: [DONE]\n\n")
        headers = [("cache-control", "no-cache")]
        return Response(200, content_type="text/event-stream; charset=utf-8", headers=headers, chunks=chunks)

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


def parse_chat_body(body: bytes) -> dict[str, Any]:
    """The JSON body of a chat-completion request, validated.

    Raises:
        ApiError: 400 if it is not a JSON object with a list of message objects.
    """
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", "invalid_request_error", "invalid_json") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "request body must be a JSON object", "invalid_request_error", "invalid_request")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ApiError(400, "'messages' must be a list of message objects", "invalid_request_error", "invalid_request")
    return payload


def include_usage(payload: Mapping[str, Any]) -> bool:
    options = payload.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def require_method(request: Request, allowed: str) -> None:
    if request.method != allowed:
        raise ApiError(
            405,
            f"Method {request.method} not allowed for {request.path}; use {allowed}",
            "invalid_request_error",
            "method_not_allowed",
            headers=[("allow", allowed)],
        )

