"""Language-model access: one small interface, the lean transport first, litellm's Router for the rest.

:class:`LM` is the seam the agent loop talks to: ``complete(messages, role=...)``
returns a :class:`Completion` with the text, token counts, cost (``None`` when
the provider's price is unknown — never invented) and latency. Model groups are
``root`` and ``sub``.

:class:`LMClient` is the production one, built so that a run pays only for what
it uses:

* A call to an OpenAI-compatible server (``openai/<model>`` with an
  ``api_base``: vLLM, llama.cpp, the scripted test server) goes straight through
  :mod:`rlm.transport` from the calling thread (or the client's event loop for
  fan-outs). No litellm, no Router: ``import litellm`` alone costs seconds, and
  ``Router.acompletion`` ~4 ms of CPU per call.
* A first attempt that failed in a way another attempt could fix (429, 5xx, a
  dropped connection, a timeout without a run deadline) is handed to a
  ``litellm.Router`` with one retry fewer, so retries, back-off, cooldowns and
  fallbacks are litellm's and a call is tried ``1 + lm_retries`` times. 400, 401,
  403 and 404 are not retried.
* Any other provider (``anthropic/...``, ``openai/gpt-4.1-mini`` without an
  ``api_base``, ``ollama/...``) goes through the Router from the start.

The Router and litellm are imported the first time one of the last two cases
happens. Prices and context windows come from :mod:`rlm.model_info`.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

# litellm fetches its price map from the network at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from rlm import model_info  # noqa: E402
from rlm.config import RLMConfig  # noqa: E402
from rlm.errors import ConfigError, LMError  # noqa: E402
from rlm.transport import Endpoint, TransportError, chat, chat_sync, is_lean  # noqa: E402

__all__ = ["LM", "LMClient", "LiteLLMClient", "Completion", "Message", "ROLES"]

Message = dict[str, str]
T = TypeVar("T")
ROLES = ("root", "sub")


@dataclass(frozen=True, slots=True)
class Completion:
    """One finished model call."""

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    latency_s: float


class LM(Protocol):
    """What the agent loop needs from a language model client.

    ``role`` names a model group (``"root"`` or ``"sub"``); ``model`` overrides it with an
    explicit model string. Failures raise :class:`LMError`.
    """

    def complete(self, messages: list[Message], *, role: str = "root", model: str | None = None,
                 timeout: float | None = None) -> Completion:
        """One call, blocking the calling thread."""
        ...

    async def acomplete(self, messages: list[Message], *, role: str = "root", model: str | None = None,
                        timeout: float | None = None) -> Completion:
        """One call as a coroutine; it must run on :meth:`run_async`'s loop."""
        ...

    def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` (e.g. a fan-out of :meth:`acomplete` calls) on the client's loop; block for it."""
        ...

    def model_for(self, role: str) -> str:
        """The model string a ``role`` group calls."""
        ...

    def close(self) -> None:
        """Release what the client holds."""
        ...


def _litellm() -> Any:
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.drop_params = True
    return litellm


class _EventLoopThread:
    """One asyncio loop per process, on a daemon thread, shared by every client."""

    _instance: "_EventLoopThread | None" = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        threading.Thread(target=self.loop.run_forever, name="rlm-lm-loop", daemon=True).start()

    @classmethod
    def get(cls) -> "_EventLoopThread":
        with cls._lock:
            if cls._instance is None or cls._instance.pid != os.getpid():  # not inherited across fork
                cls._instance = cls()
            return cls._instance

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


@dataclass(frozen=True, slots=True)
class _Call:
    """One call's target: the model string, the group it belongs to (``None``: a model outside the groups)."""

    model: str
    group: str | None
    endpoint: Endpoint | None


class LMClient:
    """The production :class:`LM` (see the module docstring)."""

    def __init__(self, config: RLMConfig) -> None:
        self.config = config
        self.models = {"root": config.model, "sub": config.effective_sub_model}
        self._router: Any = None
        self._router_lock = threading.Lock()
        model_info.preload()  # the first call's cost is known when it returns, not parsed then

    # -- the LM protocol ------------------------------------------------------------------
    def model_for(self, role: str) -> str:
        if role not in ROLES:
            raise ConfigError(f"unknown model role {role!r} (one of {', '.join(ROLES)})")
        return self.models[role]

    def complete(self, messages: list[Message], *, role: str = "root", model: str | None = None,
                 timeout: float | None = None) -> Completion:
        target = self._target(role, model)
        started = time.monotonic()
        try:
            if target.endpoint is not None:
                response = self._lean_sync(target, messages, timeout)
            else:
                response = self.run_async(self._litellm_call(target, messages, timeout, self.config.lm_retries))
        except Exception as exc:  # litellm raises many types; all are infrastructure faults here
            raise self._failed(exc, target.model) from exc
        return self._completion(response, target.model, time.monotonic() - started)

    async def acomplete(self, messages: list[Message], *, role: str = "root", model: str | None = None,
                        timeout: float | None = None) -> Completion:
        target = self._target(role, model)
        started = time.monotonic()
        try:
            if target.endpoint is not None:
                response = await self._lean(target, messages, timeout)
            else:
                response = await self._litellm_call(target, messages, timeout, self.config.lm_retries)
        except Exception as exc:  # litellm raises many types; all are infrastructure faults here
            raise self._failed(exc, target.model) from exc
        return self._completion(response, target.model, time.monotonic() - started)

    def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        return _EventLoopThread.get().run(coro)

    def close(self) -> None:
        """Unhook the Router, if one was made, from litellm's global callback lists (they grow with every Router)."""
        if self._router is not None:
            self._router.discard()

    # -- routing a call ---------------------------------------------------------------------
    def _target(self, role: str, model: str | None) -> _Call:
        name = model or self.model_for(role)
        group = next((g for g, m in self.models.items() if m == name), None) if model else role
        endpoint = (Endpoint.of(name, self.config.api_base, self._api_key())
                    if self.config.api_base and is_lean(name, self.config.api_base) else None)
        return _Call(name, group, endpoint)

    def _api_key(self) -> str:
        # OpenAI-compatible servers often need no key, but clients insist on one.
        return self.config.api_key or os.environ.get("OPENAI_API_KEY") or "sk-no-key"

    def _wire(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.config.max_completion_tokens:
            params["max_tokens"] = self.config.max_completion_tokens
        if self.config.temperature is not None:
            params["temperature"] = self.config.temperature
        return params

    def _seconds(self, timeout: float | None) -> float:
        return self.config.lm_timeout_s if timeout is None else timeout

    def _lean_sync(self, target: _Call, messages: list[Message], timeout: float | None) -> Any:
        assert target.endpoint is not None
        try:
            return chat_sync(target.endpoint, messages, self._wire(), self._seconds(timeout))
        except TransportError as exc:
            if not self._worth_retrying(exc):
                raise
        return self.run_async(self._litellm_call(target, messages, timeout, self.config.lm_retries - 1))

    async def _lean(self, target: _Call, messages: list[Message], timeout: float | None) -> Any:
        assert target.endpoint is not None
        try:
            return await chat(target.endpoint, messages, self._wire(), self._seconds(timeout))
        except TransportError as exc:
            if not self._worth_retrying(exc):
                raise
        return await self._litellm_call(target, messages, timeout, self.config.lm_retries - 1)

    def _worth_retrying(self, exc: TransportError) -> bool:
        """Whether the Router should try again (a timeout under a run deadline cannot succeed)."""
        if self.config.lm_retries <= 0 or not exc.retryable:
            return False
        return not (exc.kind == "timeout" and self.config.timeout_s is not None)

    async def _litellm_call(self, target: _Call, messages: list[Message], timeout: float | None,
                            retries: int) -> Any:
        kwargs: dict[str, Any] = {**self._wire(), "num_retries": retries}
        if timeout is not None:
            kwargs["timeout"] = timeout
        if target.group is not None:
            return await self._get_router().acompletion(model=target.group, messages=messages, **kwargs)
        params = self._litellm_params(target.model)
        return await _litellm().acompletion(messages=messages, **params, **kwargs)

    # -- litellm, when it is needed ---------------------------------------------------------
    def _litellm_params(self, model: str) -> dict[str, Any]:
        params: dict[str, Any] = {"model": model}
        if self.config.api_base and is_lean(model, self.config.api_base):
            from rlm import litellm_provider

            litellm_provider.register()
            params["model"] = litellm_provider.provider_model(model)
        if self.config.api_base:
            params["api_base"] = self.config.api_base
            params["api_key"] = self._api_key()
        elif self.config.api_key:
            params["api_key"] = self.config.api_key
        return params

    def _get_router(self) -> Any:
        with self._router_lock:
            if self._router is None:
                self._router = self._make_router()
            return self._router

    def _make_router(self) -> Any:
        litellm = _litellm()
        from litellm.types.router import RetryPolicy

        deployments = []
        for group, model in self.models.items():
            deployment: dict[str, Any] = {"model_name": group, "litellm_params": self._litellm_params(model)}
            if not model_info.info(model).priced:  # unknown price: the Router must not invent one
                deployment["model_info"] = {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0,
                                            "cache_creation_input_token_cost": 0.0,
                                            "cache_read_input_token_cost": 0.0}
            deployments.append(deployment)
        router = litellm.Router(
            model_list=deployments, num_retries=self.config.lm_retries, timeout=self.config.lm_timeout_s,
            retry_after=0,
            # With a run deadline, each call's timeout is the time left: retrying it cannot succeed.
            retry_policy=RetryPolicy(TimeoutErrorRetries=0) if self.config.timeout_s is not None else None)
        # The Router registers success callbacks that count tokens/requests per deployment for
        # tpm/rpm limits; our deployments set none, and the callbacks cost ~1.5 ms of CPU per call.
        manager = litellm.logging_callback_manager
        manager.remove_callback_from_list_by_object(litellm._async_success_callback, router)
        manager.remove_callback_from_list_by_object(litellm.success_callback, router)
        return router

    # -- results ------------------------------------------------------------------------------
    @staticmethod
    def _failed(exc: Exception, name: str) -> LMError:
        return LMError(f"model call to {name} failed: {_short(exc)}", model=name)

    def _completion(self, response: Any, model: str, latency: float) -> Completion:
        """A :class:`Completion` from the transport's parsed body or litellm's ``ModelResponse``."""
        if isinstance(response, dict):
            usage = response.get("usage") or {}
            message = response["choices"][0].get("message") or {}
            text = message.get("content") if isinstance(message, dict) else None
            input_tokens, output_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
        else:
            usage = getattr(response, "usage", None)
            text = response.choices[0].message.content
            input_tokens = getattr(usage, "prompt_tokens", 0)
            output_tokens = getattr(usage, "completion_tokens", 0)
        input_tokens, output_tokens = _count(input_tokens), _count(output_tokens)
        return Completion(text=text if isinstance(text, str) else "", model=model, input_tokens=input_tokens,
                          output_tokens=output_tokens, cost_usd=model_info.cost(model, input_tokens, output_tokens),
                          latency_s=latency)


#: The name this client had when litellm carried every call; kept for existing imports.
LiteLLMClient = LMClient


def _count(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
