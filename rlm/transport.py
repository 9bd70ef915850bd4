"""A lean HTTP transport for OpenAI-compatible servers, plugged into litellm as a provider.

Why: behind ``litellm`` the ``openai`` SDK walks every message of the request
through its type-driven ``transform`` on every call. An agent's history grows
with each iteration, so that walk made a root iteration cost 60-80 ms of CPU at
100 messages (measured: 17.7 ms/call at 4 messages, 81.8 ms at 200, 83% of it in
``openai._utils._transform``). This provider sends the same JSON with one
``aiohttp`` session per event loop instead (httpx's connection pool spent ~18 ms of
CPU per request assigning requests to connections at 64 in flight).

It is used for ``openai/<model>`` with an explicit ``api_base`` (vLLM,
llama.cpp, LM Studio, the scripted test server); every other provider keeps
litellm's own client. Deployments are still ``litellm.Router`` deployments: the
Router chooses them, and HTTP errors are raised as litellm's own exception types,
so its retries, retry policy, cooldowns and fallbacks apply. :func:`chat` is the
same request without litellm's per-call machinery, for the first attempt of a
call (see :class:`rlm.lm.LiteLLMClient`). :func:`chat_sync` sends it from the
calling thread over a kept-alive ``http.client`` connection of that thread: an
agent's own model call needs no event loop, and going through one cost two thread
hand-offs and ~1.6 ms of the loop thread's CPU per call on a busy host.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import litellm
from litellm import CustomLLM

PROVIDER = "rlm-openai"

_ERRORS: dict[int, Any] = {
    400: litellm.BadRequestError,
    401: litellm.AuthenticationError,
    403: litellm.PermissionDeniedError,
    404: litellm.NotFoundError,
    408: litellm.Timeout,
    429: litellm.RateLimitError,
    503: litellm.ServiceUnavailableError,
}


def fast_model(model: str, api_base: str | None) -> str | None:
    """The provider-prefixed model name when the fast transport applies, else ``None``."""
    if api_base and model.startswith("openai/"):
        return f"{PROVIDER}/{model.split('/', 1)[1]}"
    return None


class OpenAICompatible(CustomLLM):
    """litellm custom provider: POST ``{api_base}/chat/completions`` with a pooled aiohttp session."""

    def __init__(self) -> None:
        super().__init__()
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    def _session(self) -> aiohttp.ClientSession:
        loop_id = id(asyncio.get_running_loop())
        session = self._sessions.get(loop_id)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=1024, limit_per_host=1024)
            session = self._sessions[loop_id] = aiohttp.ClientSession(connector=connector)
        return session

    async def acompletion(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,
                          model_response: Any, print_verbose: Any, encoding: Any, api_key: Any, logging_obj: Any,
                          optional_params: dict, acompletion: Any = None, litellm_params: Any = None,
                          logger_fn: Any = None, headers: Any = None, timeout: Any = None,
                          client: Any = None) -> Any:
        data = await self.chat(model, messages, api_base, api_key, _wire_params(optional_params), _seconds(timeout))
        return _model_response(data, model)

    async def chat(self, model: str, messages: list, api_base: str, api_key: str | None, params: dict,
                   seconds: float | None) -> dict:
        """POST one chat completion; return the parsed body (it has ``choices``) or raise litellm's error type."""
        body = {"model": model, "messages": messages, **params}
        url = api_base.rstrip("/") + "/chat/completions"
        request_headers = {"Authorization": f"Bearer {api_key or 'sk-no-key'}"}
        try:
            async with self._session().post(url, json=body, headers=request_headers,
                                            timeout=aiohttp.ClientTimeout(total=seconds)) as response:
                status, text = response.status, await response.text()
        except asyncio.TimeoutError:
            raise litellm.Timeout(f"timed out after {seconds}s", model=model, llm_provider="openai") from None
        except aiohttp.ClientError as exc:
            raise litellm.APIConnectionError(f"{type(exc).__name__}: {exc}", llm_provider="openai",
                                             model=model) from None
        return _parse(status, text, model)

    def completion(self, *args: Any, **kwargs: Any) -> Any:
        raise litellm.BadRequestError("the rlm-openai transport is async only", model="", llm_provider="openai")


def _parse(status: int, text: str, model: str) -> dict:
    """The parsed body of a chat completion response, or litellm's exception for the failure."""
    if status != 200:
        raise _error(status, text, model)
    try:
        data = json.loads(text)
    except ValueError:
        raise litellm.InternalServerError("the server returned a body that is not JSON",
                                          llm_provider="openai", model=model) from None
    if not isinstance(data, dict):
        raise litellm.InternalServerError("the server returned JSON that is not an object",
                                          llm_provider="openai", model=model)
    choices = data.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise litellm.InternalServerError("the server returned no choices", llm_provider="openai", model=model)
    return data


class _Connections(threading.local):
    """Each thread's kept-alive connections, by (scheme, host, port)."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str, int | None], http.client.HTTPConnection] = {}


_connections = _Connections()


def chat_sync(deployment: dict, messages: list, params: dict, seconds: float | None) -> dict:
    """:func:`chat` from the calling thread, blocking: the parsed body, or litellm's exception types.

    ``seconds`` bounds each wait on the socket (connect, send, each read); a non-streamed
    completion arrives in one piece once the model is done, so that is the call's timeout.
    A kept-alive connection the server has closed in the meantime is replaced and the
    request sent again, once, if nothing of a response had arrived.
    """
    model = deployment["model"].split("/", 1)[1]
    url = urlsplit(deployment["api_base"].rstrip("/") + "/chat/completions")
    body = json.dumps({"model": model, "messages": messages, **params}).encode()
    headers = {"Authorization": f"Bearer {deployment.get('api_key') or 'sk-no-key'}",
               "Content-Type": "application/json"}
    key = (url.scheme, url.hostname or "", url.port)
    path = url.path + (f"?{url.query}" if url.query else "")
    for attempt in (1, 2):
        connection = _connections.open.pop(key, None)
        reused = connection is not None
        if connection is None:
            kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
            connection = kind(key[1], key[2], timeout=seconds)
        else:
            connection.timeout = seconds
            if connection.sock is not None:
                connection.sock.settimeout(seconds)
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            status, text = response.status, response.read().decode("utf-8", "replace")
        except TimeoutError:
            connection.close()
            raise litellm.Timeout(f"timed out after {seconds}s", model=model, llm_provider="openai") from None
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
            connection.close()
            if reused and attempt == 1:
                continue  # the server closed an idle kept-alive connection: a fresh one
            raise litellm.APIConnectionError(f"{type(exc).__name__}: {exc}", llm_provider="openai",
                                             model=model) from None
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise litellm.APIConnectionError(f"{type(exc).__name__}: {exc}", llm_provider="openai",
                                             model=model) from None
        if response.will_close:
            connection.close()
        else:
            _connections.open[key] = connection
        return _parse(status, text, model)
    raise AssertionError("unreachable")


def _wire_params(optional_params: dict) -> dict:
    """The request fields litellm collected (max_tokens, temperature, ...), minus its own bookkeeping."""
    return {k: v for k, v in optional_params.items() if k not in ("stream", "extra_body") and v is not None}


def _seconds(timeout: Any) -> float | None:
    if timeout is None or isinstance(timeout, (int, float)):
        return timeout
    return getattr(timeout, "read", None) or getattr(timeout, "timeout", None)


def _error(status: int, body: str, model: str) -> Exception:
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body[:300]
    error_type = _ERRORS.get(status)
    text = f"HTTP {status}: {message}"
    if error_type is litellm.Timeout:
        return litellm.Timeout(text, model=model, llm_provider="openai")
    if error_type is not None:
        return error_type(text, model=model, llm_provider="openai")
    if status >= 500:
        return litellm.InternalServerError(text, llm_provider="openai", model=model)
    return litellm.APIError(status, text, llm_provider="openai", model=model)


def _model_response(data: dict, model: str) -> Any:
    return litellm.ModelResponse(
        id=data.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
        created=data.get("created") or int(time.time()),
        model=data.get("model") or model,
        choices=data["choices"],
        usage=data.get("usage") or {},
    )


_HANDLER: OpenAICompatible | None = None


def is_fast(model: str) -> bool:
    """Whether a deployment's ``model`` is carried by this transport."""
    return model.startswith(PROVIDER + "/")


async def chat(deployment: dict, messages: list, params: dict, seconds: float | None) -> dict:
    """One call straight to a deployment of this transport (its Router ``litellm_params``), no litellm in between.

    Returns the parsed body; errors are litellm's exception types, as through the Router.
    """
    register()
    assert _HANDLER is not None
    return await _HANDLER.chat(deployment["model"].split("/", 1)[1], messages, deployment["api_base"],
                               deployment.get("api_key"), params, seconds)


def register() -> None:
    """Register the provider with litellm once per process."""
    global _HANDLER
    if _HANDLER is None:
        _HANDLER = OpenAICompatible()
        litellm.custom_provider_map = [*litellm.custom_provider_map,
                                       {"provider": PROVIDER, "custom_handler": _HANDLER}]
        # litellm reads the map into its provider registry when it is set at import time only
        from litellm.utils import custom_llm_setup

        custom_llm_setup()
