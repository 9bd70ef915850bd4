"""rlm's lean transport plugged into litellm as a custom provider, for the Router's retries.

A call to an OpenAI-compatible server is first sent straight through
:mod:`rlm.transport`. When it fails in a way another attempt could fix, the
litellm Router takes over (its retry policy, back-off, cooldowns and
fallbacks); its deployments of such servers name the provider ``rlm-openai``,
which sends the request through the same transport and raises litellm's own
exception types, so the Router classifies failures as it does for any provider.

:func:`register_filter` adds one more piece to litellm: a deployment filter
(litellm's ``CustomLogger.async_filter_deployments`` hook) that keeps a Router call
to the deployments named in its request metadata (``rlm_allowed``), so that a
retry or fall-back never reaches a deployment whose window the prompt does not fit
(:mod:`rlm.routing`). Calls without that key are left alone.

Importing this module imports litellm (seconds): only :mod:`rlm.lm` does, and
only once the Router is needed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import litellm
from litellm.exceptions import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    Timeout,
)
from litellm.integrations.custom_logger import CustomLogger
from litellm.llms.custom_llm import CustomLLM

from rlm.transport import ALLOWED_KEY, NODE_KEY, Endpoint, TransportError, chat

__all__ = ["PROVIDER", "register", "register_filter", "provider_model", "to_litellm_error"]

PROVIDER = "rlm-openai"

_HTTP_ERRORS: dict[int, Callable[..., Exception]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def provider_model(model: str) -> str:
    """The Router's model string for an ``openai/<name>`` deployment carried by this provider."""
    return f"{PROVIDER}/{model.split('/', 1)[1]}"


def to_litellm_error(exc: TransportError) -> Exception:
    """The litellm exception type the Router expects for ``exc``."""
    model, text = exc.model, str(exc)
    if exc.kind == "timeout" or exc.status == 408:
        return Timeout(text, model=model, llm_provider="openai")
    if exc.kind == "connection":
        return APIConnectionError(text, llm_provider="openai", model=model)
    if exc.kind == "bad_response":
        return InternalServerError(text, llm_provider="openai", model=model)
    error_type = _HTTP_ERRORS.get(exc.status or 0)
    if error_type is not None:
        return error_type(text, model=model, llm_provider="openai")
    if (exc.status or 0) >= 500:
        return InternalServerError(text, llm_provider="openai", model=model)
    return APIError(exc.status or 500, text, llm_provider="openai", model=model)


class _Provider(CustomLLM):
    """POST ``{api_base}/chat/completions`` through :func:`rlm.transport.chat`."""

    async def acompletion(self, model: str, messages: list[Any], api_base: str, custom_prompt_dict: dict[str, Any],
                          model_response: Any, print_verbose: Any, encoding: Any, api_key: Any, logging_obj: Any,
                          optional_params: dict[str, Any], acompletion: Any = None, litellm_params: Any = None,
                          logger_fn: Any = None, headers: Any = None, timeout: Any = None,
                          client: Any = None) -> Any:
        params = {k: v for k, v in optional_params.items() if k not in ("stream", "extra_body") and v is not None}
        try:
            data = await chat(Endpoint(model, api_base, api_key), messages, params, _seconds(timeout))
        except TransportError as exc:
            raise to_litellm_error(exc) from None
        response = litellm.ModelResponse(id=data.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
                                         created=data.get("created") or int(time.time()),
                                         model=data.get("model") or model, choices=data["choices"],
                                         usage=data.get("usage") or {})
        if data.get(NODE_KEY):  # the node a cluster deployment says served the call (rlm.agents.serving)
            response._hidden_params[NODE_KEY] = data[NODE_KEY]  # noqa: SLF001 - where litellm keeps provider facts
        return response

    def completion(self, *args: Any, **kwargs: Any) -> Any:
        raise BadRequestError("the rlm-openai provider is async only", model="", llm_provider="openai")


def _seconds(timeout: Any) -> float | None:
    if timeout is None or isinstance(timeout, (int, float)):
        return timeout
    return getattr(timeout, "read", None) or getattr(timeout, "timeout", None)


_registered = False


def register() -> None:
    """Register the provider with litellm once per process."""
    global _registered
    if not _registered:
        litellm.custom_provider_map = [*litellm.custom_provider_map,
                                       {"provider": PROVIDER, "custom_handler": _Provider()}]
        # litellm reads the map into its provider registry when it is set at import time only
        from litellm.utils import custom_llm_setup

        custom_llm_setup()  # type: ignore[no-untyped-call]  # litellm leaves this function unannotated
        _registered = True


class _AllowedDeployments(CustomLogger):
    """Keeps a Router call to the deployments its metadata allows (see the module docstring)."""

    async def async_filter_deployments(self, model: str, healthy_deployments: list[dict[str, Any]], messages: Any,
                                       request_kwargs: dict[str, Any] | None = None,
                                       parent_otel_span: Any = None) -> list[dict[str, Any]]:
        allowed = ((request_kwargs or {}).get("metadata") or {}).get(ALLOWED_KEY)
        if allowed is None:
            return healthy_deployments
        return [d for d in healthy_deployments if (d.get("model_info") or {}).get("id") in allowed]


_filter_registered = False


def register_filter() -> None:
    """Add the deployment filter to litellm's callbacks once per process."""
    global _filter_registered
    if not _filter_registered:
        litellm.callbacks = [*litellm.callbacks, _AllowedDeployments()]
        _filter_registered = True
