"""Language-model access: one small interface over litellm's Router.

:class:`LM` is the seam the agent loop talks to: ``complete(messages, role=...)``
returns a :class:`Completion` with the text, token counts, cost (``None`` when
the provider's price is unknown — never invented) and latency. Model groups are
``root`` and ``sub``; retries, timeouts and fallbacks are litellm Router
settings, not hand-written loops. Any litellm model string works.

The first attempt of a call to an OpenAI-compatible server (``openai/<model>``
with an ``api_base``, carried by :mod:`rlm.transport`) skips the Router's
per-call machinery: the Router still chooses the deployment
(``async_get_available_deployment``, ~0.07 ms), then the request goes straight
to the transport. ``Router.acompletion`` costs ~4 ms of CPU per call on top of
the HTTP round trip (logging payloads, parameter walks, model-info copies), which
bounded every large fan-out. A failed first attempt that the Router would retry
is handed to ``Router.acompletion`` with one retry fewer, so retry counts,
the retry policy, cooldowns and fallbacks stay litellm's.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

# litellm fetches its price map from the network at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from rlm.config import RLMConfig  # noqa: E402
from rlm.errors import LMError  # noqa: E402

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
    """One asyncio loop per process, on a daemon thread, shared by every client.

    litellm's synchronous ``Router.completion`` runs its async path in a *new*
    event loop per call (~10 ms of CPU); awaiting ``Router.acompletion`` on one
    long-lived loop costs about half, and many threads can share it.
    """

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

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


class LiteLLMClient:
    """The production :class:`LM`: a ``litellm.Router`` with ``root`` and ``sub`` groups."""

    def __init__(self, config: RLMConfig) -> None:
        self.config = config
        self.models = {"root": config.model, "sub": config.effective_sub_model}
        litellm = _litellm()
        self._litellm = litellm
        # Decide which models have a known price *before* the Router registers
        # its deployments (it adds zero-cost entries for unknown models).
        self._priced = {model: _has_price(litellm, model) for model in self.models.values()}
        from litellm.types.router import RetryPolicy

        from rlm import transport

        transport.register()

        self._router = litellm.Router(
            model_list=[self._deployment(group, model) for group, model in self.models.items()],
            num_retries=config.lm_retries,
            timeout=config.lm_timeout_s,
            retry_after=0,
            # With a run deadline, each call's timeout is the time left: retrying it cannot succeed.
            retry_policy=RetryPolicy(TimeoutErrorRetries=0) if config.timeout_s is not None else None,
        )
        # The Router registers success callbacks that count tokens/requests per deployment for
        # tpm/rpm limits; our deployments set none, and the callbacks cost ~1.5 ms of CPU per call.
        # Failure callbacks (cooldowns) stay.
        manager = litellm.logging_callback_manager
        manager.remove_callback_from_list_by_object(litellm._async_success_callback, self._router)
        manager.remove_callback_from_list_by_object(litellm.success_callback, self._router)
        self._loop = _EventLoopThread.get()

    def close(self) -> None:
        """Unhook the Router from litellm's global callback lists (they grow with every Router)."""
        self._router.discard()

    def _deployment(self, group: str, model: str) -> dict[str, Any]:
        from rlm.transport import fast_model

        params: dict[str, Any] = {"model": fast_model(model, self.config.api_base) or model}
        if self.config.api_base:
            params["api_base"] = self.config.api_base
            # OpenAI-compatible servers often need no key, but the client insists on one.
            params["api_key"] = self.config.api_key or os.environ.get("OPENAI_API_KEY") or "sk-no-key"
        elif self.config.api_key:
            params["api_key"] = self.config.api_key
        deployment: dict[str, Any] = {"model_name": group, "litellm_params": params}
        if not self._priced.get(model, True):
            deployment["model_info"] = {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0,
                                        "cache_creation_input_token_cost": 0.0, "cache_read_input_token_cost": 0.0}
        return deployment

    def complete(self, messages: list[Message], *, role: str = "root", model: str | None = None,
                 timeout: float | None = None) -> Completion:
        """One call from the calling thread. A routed call to an OpenAI-compatible deployment is sent from
        this thread (:func:`rlm.transport.chat_sync`); anything else runs on the client's event loop."""
        if model and model not in self.models.values():
            return self._loop.run(self.acomplete(messages, role=role, model=model, timeout=timeout))
        kwargs = self._kwargs(role, timeout)
        started = time.monotonic()
        try:
            response = self._routed_sync(role, messages, kwargs)
        except Exception as exc:  # litellm raises many types; all are infrastructure faults here
            raise self._failed(exc, self.models[role]) from exc
        return self._completion(response, self.models[role], time.monotonic() - started)

    async def acomplete(self, messages: list[Message], *, role: str = "root", model: str | None = None,
                        timeout: float | None = None) -> Completion:
        """:meth:`complete` as a coroutine; it must run on :meth:`run_async`'s loop."""
        kwargs = self._kwargs(role, timeout)
        started = time.monotonic()
        try:
            if model and model not in self.models.values():
                response = await self._direct(model, messages, kwargs)
            else:
                response = await self._routed(role, messages, kwargs)
        except Exception as exc:  # litellm raises many types; all are infrastructure faults here
            raise self._failed(exc, model or self.models[role]) from exc
        return self._completion(response, model or self.models[role], time.monotonic() - started)

    def _kwargs(self, role: str, timeout: float | None) -> dict[str, Any]:
        if role not in ROLES:
            raise ValueError(f"unknown model role {role!r}")
        kwargs: dict[str, Any] = {}
        if self.config.max_completion_tokens:
            kwargs["max_tokens"] = self.config.max_completion_tokens
        if self.config.temperature is not None:
            kwargs["temperature"] = self.config.temperature
        if timeout is not None:
            kwargs["timeout"] = timeout
        return kwargs

    @staticmethod
    def _failed(exc: Exception, name: str) -> LMError:
        return LMError(f"model call to {name} failed: {_short(exc)}", model=name)

    def _fast_params(self, deployment: Any) -> dict[str, Any] | None:
        """The deployment's ``litellm_params`` when our transport carries it, else ``None`` (the Router does)."""
        from rlm import transport

        params = deployment["litellm_params"] if deployment else None
        return params if params and transport.is_fast(params.get("model", "")) else None

    def _routed_sync(self, role: str, messages: list[Message], kwargs: dict[str, Any]) -> Any:
        """:meth:`_routed` from the calling thread: the first attempt on this thread, retries through the Router."""
        from rlm import transport

        try:
            deployment = self._router.get_available_deployment(model=role, messages=messages, request_kwargs={})
        except Exception:  # e.g. every deployment cooling down: the Router's own path says why
            deployment = None
        params = self._fast_params(deployment)
        if params is None:
            return self._loop.run(self._router.acompletion(model=role, messages=messages, **kwargs))
        wire = {k: v for k, v in kwargs.items() if k != "timeout"}
        try:
            return transport.chat_sync(params, messages, wire, kwargs.get("timeout", self.config.lm_timeout_s))
        except Exception as exc:
            if self.config.lm_retries <= 0 or not self._retryable(exc):
                raise
            return self._loop.run(self._router.acompletion(model=role, messages=messages,
                                                           num_retries=self.config.lm_retries - 1, **kwargs))

    async def _routed(self, role: str, messages: list[Message], kwargs: dict[str, Any]) -> Any:
        """A call to a model group: the first attempt straight to the transport when it can be, else the Router."""
        from rlm import transport

        try:
            deployment = await self._router.async_get_available_deployment(
                model=role, messages=messages, request_kwargs={})
        except Exception:  # e.g. every deployment cooling down: the Router's own path says why
            deployment = None
        params = self._fast_params(deployment)
        if params is None:
            return await self._router.acompletion(model=role, messages=messages, **kwargs)
        wire = {k: v for k, v in kwargs.items() if k != "timeout"}
        try:
            return await transport.chat(params, messages, wire, kwargs.get("timeout", self.config.lm_timeout_s))
        except Exception as exc:
            if self.config.lm_retries <= 0 or not self._retryable(exc):
                raise
            return await self._router.acompletion(model=role, messages=messages,
                                                  num_retries=self.config.lm_retries - 1, **kwargs)

    def _retryable(self, exc: BaseException) -> bool:
        """Whether the Router would retry ``exc`` on a one-deployment group under our retry policy."""
        litellm = self._litellm
        if isinstance(exc, litellm.Timeout):
            return self.config.timeout_s is None  # RetryPolicy(TimeoutErrorRetries=0) under a run deadline
        if isinstance(exc, (litellm.NotFoundError, litellm.AuthenticationError, litellm.PermissionDeniedError)):
            return False
        status = getattr(exc, "status_code", None)
        return status is None or bool(litellm.should_retry(status))

    def model_for(self, role: str) -> str:
        if role not in ROLES:
            raise ValueError(f"unknown model role {role!r}")
        return self.models[role]

    def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine (e.g. a fan-out of :meth:`acomplete` calls) on the client's loop; block for it."""
        return self._loop.run(coro)

    async def _direct(self, model: str, messages: list[Message], kwargs: dict[str, Any]) -> Any:
        """A call to a model outside the groups (``llm_query(..., model=...)``); same retries."""
        params = self._deployment("direct", model)["litellm_params"]
        return await self._litellm.acompletion(messages=messages, num_retries=self.config.lm_retries, **params, **kwargs)

    def _completion(self, response: Any, model: str, latency: float) -> Completion:
        """A :class:`Completion` from litellm's ``ModelResponse`` or the transport's parsed body."""
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
        return Completion(
            text=text if isinstance(text, str) else "",
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=self._cost(model, input_tokens, output_tokens),
            latency_s=latency,
        )

    def _cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """litellm's price for the call, or ``None`` when the model is not in its price map."""
        if model not in self._priced:
            self._priced[model] = _has_price(self._litellm, model)
        if not self._priced[model]:
            return None
        try:  # priced by the model string the user gave, whichever transport carried the call
            prompt_cost, completion_cost = self._litellm.cost_per_token(
                model=model, prompt_tokens=input_tokens, completion_tokens=output_tokens)
        except Exception:
            return None
        return float(prompt_cost + completion_cost)


def _has_price(litellm: Any, model: str) -> bool:
    try:
        info = litellm.get_model_info(model)
    except Exception:
        return False
    return bool(info.get("input_cost_per_token") or info.get("output_cost_per_token"))


def _count(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
