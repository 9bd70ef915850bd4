"""A lean HTTP transport for OpenAI-compatible servers (vLLM, llama.cpp, LM Studio, the scripted test server).

Why it exists:

* **Cost per call.** Behind ``litellm`` the ``openai`` SDK walks every message of
  the request through its type-driven ``transform`` on every call; an agent's
  history grows with each iteration, so a root iteration cost 60-80 ms of CPU
  at 100 messages. This transport sends the history as JSON as it is.
* **Cost per process.** ``import litellm`` takes seconds. A run whose models are
  all OpenAI-compatible servers never needs it: the first attempt of every call
  goes through here, and litellm's Router is imported only to retry a failed
  call (:mod:`rlm.lm`) or to reach another provider.

:func:`chat_sync` sends one request from the calling thread over a kept-alive
``http.client`` connection of that thread (an agent's own model call needs no
event loop); :func:`chat` sends it from an event loop over that loop's pool of
kept-alive connections (:mod:`rlm.http11`; fan-outs of thousands of calls).
Both return the parsed response body or raise :class:`TransportError`, which
says whether retrying could help. Nothing here imports litellm: the
Router's retries reach this transport through :mod:`rlm.litellm_provider`.
"""

from __future__ import annotations

import http.client
import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rlm.errors import LMError

__all__ = ["ALLOWED_KEY", "NODE_KEY", "Endpoint", "TransportError", "chat", "chat_sync", "is_lean"]

#: The request metadata key naming the deployments a Router call may use (rlm.litellm_provider).
ALLOWED_KEY = "rlm_allowed"
#: The key under which a deployment may report the cluster node that served a call (rlm.agents.serving).
NODE_KEY = "rlm_node"
#: HTTP statuses worth another attempt (the rest of 4xx is the request's own fault).
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def is_lean(model: str, api_base: str | None) -> bool:
    """Whether this transport carries ``model``: an ``openai/<name>`` model with an explicit ``api_base``."""
    return bool(api_base) and model.startswith("openai/")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One OpenAI-compatible chat-completions endpoint: the model's wire name, its base URL and key."""

    model: str
    api_base: str
    api_key: str | None = None

    @classmethod
    def of(cls, model: str, api_base: str, api_key: str | None = None) -> Endpoint:
        """The endpoint of a litellm-style ``openai/<name>`` model string."""
        return cls(model.split("/", 1)[1] if model.startswith("openai/") else model, api_base, api_key)

    @property
    def url(self) -> str:
        return self.api_base.rstrip("/") + "/chat/completions"

    def body(self, messages: list[Any], params: dict[str, Any]) -> bytes:
        """A chat-completions request body for ``messages`` with sampling ``params``."""
        return json.dumps({"model": self.model, "messages": messages, **params}).encode()

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key or 'sk-no-key'}", "Content-Type": "application/json"}


class TransportError(LMError):
    """A call that failed on the wire or was refused by the server.

    Attributes:
        status: the HTTP status, or ``None`` (no response: refused, reset, timed out).
        kind: ``"http"``, ``"timeout"``, ``"connection"`` or ``"bad_response"``.
        message: the server's error message (or what went wrong).
    """

    def __init__(self, kind: str, message: str, *, model: str, status: int | None = None) -> None:
        super().__init__(f"{_label(kind, status)}: {message}", model=model)
        self.kind = kind
        self.status = status
        self.message = message

    @property
    def retryable(self) -> bool:
        """Whether another attempt could succeed (a timeout counts; the caller decides under a deadline)."""
        if self.kind == "http":
            return self.status in RETRYABLE_STATUSES
        return True


def _label(kind: str, status: int | None) -> str:
    return {"http": f"HTTP {status}", "timeout": "Timeout", "connection": "ConnectionError",
            "bad_response": "BadResponse"}.get(kind, kind)


def parse(status: int, text: str, model: str) -> dict[str, Any]:
    """The parsed body of a chat completion response, or the :class:`TransportError` for the failure."""
    if status != 200:
        raise TransportError("http", _error_message(text), model=model, status=status)
    try:
        data = json.loads(text)
    except ValueError:
        raise TransportError("bad_response", "the server returned a body that is not JSON", model=model) from None
    if not isinstance(data, dict):
        raise TransportError("bad_response", "the server returned JSON that is not an object", model=model)
    choices = data.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise TransportError("bad_response", "the server returned no choices", model=model)
    return data


def _error_message(body: str) -> str:
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body[:300]


# -- blocking, from the calling thread ------------------------------------------------------

class _Connections(threading.local):
    """Each thread's kept-alive connections, by (scheme, host, port)."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str, int | None], http.client.HTTPConnection] = {}


_connections = _Connections()


def chat_sync(endpoint: Endpoint, messages: list[Any], params: dict[str, Any], seconds: float | None) -> dict[str, Any]:
    """POST one chat completion from this thread; the parsed body or :class:`TransportError`.

    ``seconds`` bounds each wait on the socket (connect, send, each read); a non-streamed
    completion arrives in one piece once the model is done, so that is the call's timeout.
    A kept-alive connection the server has closed in the meantime is replaced and the
    request sent again, once, if nothing of a response had arrived.
    """
    url = urlsplit(endpoint.url)
    body = endpoint.body(messages, params)
    key = (url.scheme, url.hostname or "", url.port)
    path = url.path + (f"?{url.query}" if url.query else "")
    for attempt in (1, 2):
        connection = _connections.open.pop(key, None)
        reused = connection is not None
        if connection is None:
            kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
            connection = kind(key[1], key[2], timeout=seconds)
        elif connection.sock is not None:
            connection.sock.settimeout(seconds)
        try:
            connection.request("POST", path, body=body, headers=endpoint.headers())
            response = connection.getresponse()
            status, text = response.status, response.read().decode("utf-8", "replace")
        except TimeoutError:
            connection.close()
            raise TransportError("timeout", f"no answer within {seconds}s", model=endpoint.model) from None
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
            connection.close()
            if reused and attempt == 1:
                continue  # the server closed an idle kept-alive connection: a fresh one
            raise TransportError("connection", f"{type(exc).__name__}: {exc}", model=endpoint.model) from None
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise TransportError("connection", f"{type(exc).__name__}: {exc}", model=endpoint.model) from None
        if response.will_close:
            connection.close()
        else:
            _connections.open[key] = connection
        return parse(status, text, endpoint.model)
    raise AssertionError("unreachable")


# -- from an event loop ---------------------------------------------------------------------

_pools: dict[int, Any] = {}


def _pool() -> Any:
    """This event loop's pool of kept-alive connections (:class:`rlm.http11.Pool`)."""
    import asyncio

    from rlm.http11 import Pool

    loop_id = id(asyncio.get_running_loop())
    pool = _pools.get(loop_id)
    if pool is None:
        pool = _pools[loop_id] = Pool()
    return pool


async def chat(endpoint: Endpoint, messages: list[Any], params: dict[str, Any],
               seconds: float | None) -> dict[str, Any]:
    """:func:`chat_sync` as a coroutine, over the running loop's pooled connections (:mod:`rlm.http11`);
    ``seconds`` bounds the whole call."""
    import asyncio

    body = endpoint.body(messages, params)
    try:
        async with asyncio.timeout(seconds):
            response = await _pool().post(urlsplit(endpoint.url), endpoint.headers(), body)
    except TimeoutError:
        raise TransportError("timeout", f"no answer within {seconds}s", model=endpoint.model) from None
    except OSError as exc:
        raise TransportError("connection", f"{type(exc).__name__}: {exc}", model=endpoint.model) from None
    except ValueError as exc:
        raise TransportError("bad_response", str(exc), model=endpoint.model) from None
    return parse(response.status, response.body.decode("utf-8", "replace"), endpoint.model)
