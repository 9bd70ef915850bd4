"""The OpenAI chat-completions format of the service: a request becomes a run, a run a completion.

Request (``POST /v1/chat/completions``)
---------------------------------------
``model``
    ``"rlm"`` (the service's root and sub models) or ``"rlm/<root model>"``
    (that model for the root agent; sub-calls keep the service's sub model).
``messages``
    The last one must be the user's: its text is the question. System and
    developer messages are instructions: their text goes before the question.
    The other earlier messages are the context when no file is named: one
    message's text is the context string, several become a list of documents
    (``{"path": "messages/<n>-<role>", "text": ...}``). A content part
    ``{"type": "file", "file": {"file_id": ...}}`` names an uploaded file.
``rlm`` (extension, optional)
    ``context_path`` (a file or directory under the service's ``--allow-path``
    roots), ``file_id`` (an upload of ``POST /v1/files``), the run options of
    :mod:`rlm.service.run_options` (``max_llm_calls``, ``timeout``, ...),
    ``progress`` (``false``: no progress chunks when streaming), and ``session``
    (a name: the request is that session's next turn, its root's REPL variables
    and history kept by the service from the last one; the first request of a
    session gives its context as any request does, later ones need none: the
    earlier messages a chat client sends again are the conversation the session
    already holds, not context).
``stream``, ``stream_options.include_usage``, ``temperature``
    As OpenAI's (``temperature`` applies to every model call of the tree).
    ``n`` must be 1; other sampling fields (``max_tokens``, ``tools``, ...) are
    accepted and ignored: a run's limits are the ``rlm`` options.

One context per request: naming two files (or a path and a file) is an error;
when a file is the context, earlier messages other than instructions are left
out and the response's ``rlm.warnings`` says so.

Response
--------
A ``chat.completion`` whose ``id`` is the run id (``rlm show <id>``),
``usage`` the tokens of every call of the tree, ``finish_reason`` ``"stop"``
for an answered run and ``"length"`` for a run a limit ended (its partial
answer, possibly empty, is the content), and an ``rlm`` field: ``run_id``,
``status``, ``cost_usd`` (``null`` when a price is unknown), ``llm_calls``,
``iterations``, ``depth_reached``, ``duration_s``, ``warnings``.

Streamed, the same as ``chat.completion.chunk`` server-sent events: a role
chunk, then while the run goes one chunk per event whose ``delta`` is empty and
whose ``rlm`` field is :meth:`rlm.service.progress.Progress.payload` (clients
that do not know the field see an empty delta and skip it; the ``openai`` and
``litellm`` clients do), then the answer as content, a chunk with the
``finish_reason`` and the ``rlm`` summary, the usage chunk when asked for, and
``data: [DONE]``.

Errors are OpenAI's ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm.config import RLMConfig
from rlm.errors import ConfigError, InputError
from rlm.results import RunResult
from rlm.service.access import AllowedRoots
from rlm.service.run_options import OPTIONS, configure

__all__ = ["ChatRequest", "ModelNotFound", "parse_chat", "completion", "chunk", "error_body", "finish_reason",
           "models_list", "MODEL"]

MODEL = "rlm"
_INSTRUCTION_ROLES = ("system", "developer")
_EXTENSION_KEYS = frozenset({"context_path", "file_id", "progress", "session", *OPTIONS})


class ModelNotFound(InputError):
    """The request names a model this endpoint does not serve (HTTP 404)."""


@dataclass(frozen=True)
class ChatRequest:
    """A chat-completions request, read: what to run and how to answer."""

    model: str
    question: str
    context: Path | str | list[dict[str, str]] | None
    config: RLMConfig
    stream: bool = False
    include_usage: bool = False
    progress: bool = True
    warnings: list[str] = field(default_factory=list)
    session: str | None = None


def parse_chat(body: Any, base: RLMConfig, roots: AllowedRoots,
               file_path: Callable[[str], Path]) -> ChatRequest:
    """Read a request body; raises :class:`InputError`/:class:`ConfigError` (400), ``AccessDenied`` (403)."""
    if not isinstance(body, dict):
        raise InputError("the request body must be a JSON object")
    extension = _extension(body.get("rlm"))
    if body.get("n", 1) != 1:
        raise ConfigError("n must be 1: a run has one answer")
    messages = _messages(body.get("messages"))
    instructions, question, earlier, file_ids = _split(messages)
    files = [roots.check(str(extension["context_path"]))] if extension.get("context_path") else []
    files += [file_path(str(file_id)) for file_id in [extension.get("file_id"), *file_ids] if file_id]
    session = extension.get("session")
    if session is not None and not isinstance(session, str):
        raise InputError("rlm.session must be a session name (a string)")
    context, warnings = _context(files, earlier) if files or earlier or not session else (None, [])
    config = configure(base, {k: v for k, v in extension.items() if k in OPTIONS},
                       root_model=_root_model(body.get("model")))
    if body.get("temperature") is not None:
        config = _with_temperature(config, body["temperature"])
    stream_options = body.get("stream_options") or {}
    return ChatRequest(model=str(body.get("model")), question="\n\n".join([*instructions, question]),
                       context=context, config=config, stream=bool(body.get("stream")),
                       include_usage=bool(isinstance(stream_options, dict) and stream_options.get("include_usage")),
                       progress=extension.get("progress", True) is not False, warnings=warnings,
                       session=session)


def _extension(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError("the rlm field must be an object")
    unknown = set(value) - _EXTENSION_KEYS
    if unknown:
        known = ", ".join(sorted(_EXTENSION_KEYS))
        raise InputError(f"unknown rlm field(s): {', '.join(sorted(unknown))} (known: {known})")
    return value


def _root_model(model: Any) -> str | None:
    if model == MODEL:
        return None
    if isinstance(model, str) and model.startswith(MODEL + "/") and len(model) > len(MODEL) + 1:
        return model[len(MODEL) + 1:]
    raise ModelNotFound(f"the model {model!r} does not exist: this endpoint serves 'rlm' and 'rlm/<root model>'")


def _with_temperature(config: RLMConfig, value: Any) -> RLMConfig:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 2:
        raise ConfigError(f"temperature must be a number from 0 to 2, not {value!r}")
    return dataclasses.replace(config, temperature=float(value))


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise InputError("messages must be a non-empty list")
    for message in value:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InputError("each message must be an object with a role")
    return value


def _split(messages: list[dict[str, Any]]) -> tuple[list[str], str, list[tuple[str, str]], list[str]]:
    """(instructions, question, earlier messages as (role, text), file ids named in parts)."""
    last = messages[-1]
    if last["role"] != "user":
        raise InputError(f"the last message must be the user's question, not a {last['role']!r} message")
    file_ids: list[str] = []
    question = _text(last.get("content"), file_ids).strip()
    if not question:
        raise InputError("the question (the last user message) is empty")
    instructions, earlier = [], []
    for message in messages[:-1]:
        text = _text(message.get("content"), file_ids)
        if message["role"] in _INSTRUCTION_ROLES:
            instructions += [text] if text.strip() else []
        elif text.strip():
            earlier.append((message["role"], text))
    return instructions, question, earlier, file_ids


def _text(content: Any, file_ids: list[str]) -> str:
    """The text of a message's content (a string or a list of parts); file parts add to ``file_ids``."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise InputError("a message's content must be a string or a list of parts")
    texts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "file" and isinstance(part.get("file"), dict) and part["file"].get("file_id"):
            file_ids.append(str(part["file"]["file_id"]))
        else:
            raise InputError(f"unsupported content part {kind!r}: send text parts, and files as "
                             "{'type': 'file', 'file': {'file_id': ...}} after POST /v1/files")
    return "\n".join(texts)


def _context(files: list[Path], earlier: list[tuple[str, str]]) -> tuple[Path | str | list[dict[str, str]], list[str]]:
    if len(files) > 1:
        raise InputError("a request has one context: name one file (rlm.context_path, rlm.file_id or a file part)")
    if files:
        dropped = [f"the {len(earlier)} earlier message(s) are not part of the context: it is the named file"]
        return files[0], dropped if earlier else []
    if len(earlier) == 1:
        return earlier[0][1], []
    return [{"path": f"messages/{i}-{role}", "text": text} for i, (role, text) in enumerate(earlier)], []


# -- responses -----------------------------------------------------------------------------
def finish_reason(status: str) -> str:
    """``"stop"`` for an answered run, ``"length"`` for one a limit ended."""
    return "stop" if status == "ok" else "length"


def summary(result: RunResult, warnings: list[str]) -> dict[str, Any]:
    """The ``rlm`` field of a response: what the run was and what it cost."""
    return {"run_id": result.run_id, "status": result.status, "cost_usd": result.cost_usd,
            "llm_calls": result.usage.llm_calls, "cache_hits": result.usage.cache_hits,
            "iterations": result.iterations,
            "depth_reached": result.depth_reached, "duration_s": round(result.duration_s, 3),
            "warnings": [*warnings, *result.warnings]}


def usage(result: RunResult) -> dict[str, int]:
    u = result.usage
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.total_tokens}


def completion(chat: ChatRequest, result: RunResult) -> dict[str, Any]:
    """The ``chat.completion`` of a finished run."""
    return {"id": result.run_id, "object": "chat.completion", "created": int(time.time()), "model": chat.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.answer or ""},
                         "finish_reason": finish_reason(result.status), "logprobs": None}],
            "usage": usage(result), "rlm": summary(result, chat.warnings)}


def chunk(run_id: str, model: str, delta: dict[str, Any] | None, finish: str | None = None,
          **extra: Any) -> dict[str, Any]:
    """A ``chat.completion.chunk``; ``delta=None`` makes the usage chunk (no choices)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
    return {"id": run_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": choices, **extra}


def error_body(message: str, kind: str, code: str | None = None, **extra: Any) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code, **extra}}


def models_list(base: RLMConfig, created: int) -> dict[str, Any]:
    """``GET /v1/models``: ``rlm`` and ``rlm/<the service's root model>``."""
    names = [MODEL, f"{MODEL}/{base.model}"]
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "rlm"}
                                       for name in names]}


def status_of(exc: BaseException) -> tuple[int, str, str]:
    """HTTP status, OpenAI error type and code for what a request raised."""
    from rlm.service.access import AccessDenied
    from rlm.service.files import UnknownFile

    table: list[tuple[type[BaseException], int, str, str]] = [
        (AccessDenied, 403, "permission_error", "path_not_allowed"),
        (ModelNotFound, 404, "invalid_request_error", "model_not_found"),
        (UnknownFile, 400, "invalid_request_error", "file_not_found"),
        (InputError, 400, "invalid_request_error", "invalid_request"),
        (ConfigError, 400, "invalid_request_error", "invalid_request"),
    ]
    for kind, status, error_type, code in table:
        if isinstance(exc, kind):
            return status, error_type, code
    return 500, "server_error", "run_failed"
