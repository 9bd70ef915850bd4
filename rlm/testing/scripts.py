"""Scripts and policies of the scripted server: what it answers, and the usage it reports.

A script is a list of :class:`Reply` (from a JSONL file or a list, see
:func:`load_script`); a policy computes a reply from the request's messages
(:func:`load_policy`). The formats are documented in
:mod:`rlm.testing.scripted_server`.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from rlm.errors import ConfigError

__all__ = [
    "Message",
    "Policy",
    "Reply",
    "ScriptSource",
    "estimate_tokens",
    "load_policy",
    "load_script",
    "prompt_chars",
    "usage",
]

Message = dict[str, Any]
#: A policy maps the request's messages to the reply text, or to a dict shaped
#: like a script line. It may also return an awaitable of either.
Policy = Callable[[list[Message]], Any]
ScriptSource = Union[str, "os.PathLike[str]", Sequence[str | Mapping[str, Any]]]

_SCRIPT_KEYS = frozenset({"content", "delay_ms", "status", "usage", "reasoning_content"})
_USAGE_KEYS = frozenset({"prompt_tokens", "completion_tokens", "total_tokens"})


@dataclass(frozen=True)
class Reply:
    """One scripted reply (a script line, or what a policy returned).

    Attributes:
        content: the assistant's text (or the error message when ``status`` is set).
        delay_ms: extra latency for this reply, on top of the server's ``latency_ms``.
        status: an HTTP error status (400-599) to answer instead of a completion.
        usage: token counts overriding the estimates (keys from ``prompt_tokens``,
            ``completion_tokens``, ``total_tokens``).
    """

    content: str = ""
    delay_ms: float = 0.0
    status: int | None = None
    usage: Mapping[str, int] | None = None
    #: a reasoning model's separate reasoning, sent beside ``content`` (as vLLM's and DeepSeek's parsers do)
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


def _parse_reasoning(value: object, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f'{where}: "reasoning_content" must be a string, got {type(value).__name__}')
    return value


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
    except Exception as exc:  # noqa: BLE001 - ImportError, AttributeError, errors at import time
        raise ConfigError(f"cannot import policy {spec!r}: {type(exc).__name__}: {exc}") from None
    if not callable(target):
        raise ConfigError(f"policy {spec!r} is not callable (it is a {type(target).__name__})")
    return target


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


def usage(messages: list[Message], reply: Reply) -> dict[str, int]:
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

