"""Language-model access: one small interface, the lean transport first, litellm's Router for the rest.

:class:`LM` is the seam the agent loop talks to: ``complete(messages, role=...)``
returns a :class:`Completion` with the text, token counts, cost (``None`` when
the provider's price is unknown — never invented), latency, and where the call
went and why. Every call is first routed (:mod:`rlm.routing`): a model group
(``root``, ``sub``, ``heavy``, any the models file names), then one of its
deployments, after the size guard made sure the prompt fits.

:class:`LMClient` is the production one, built so that a run pays only for what
it uses:

* A call to an OpenAI-compatible server (``openai/<model>`` with an
  ``api_base``: vLLM, llama.cpp, Ray Serve, the scripted test server) goes straight
  through :mod:`rlm.transport` from the calling thread (or the client's event loop
  for fan-outs), to the deployment the router picked. No litellm, no Router:
  ``import litellm`` alone costs seconds, and ``Router.acompletion`` ~4 ms of CPU
  per call.
* A first attempt that failed in a way another attempt could fix (429, 5xx, a
  dropped connection, a timeout without a run deadline) is handed to a
  ``litellm.Router`` with one retry fewer, limited to the group's deployments that
  fit the prompt, less the one that just failed when there are others; so retries,
  back-off, cooldowns and the fall-back to the next ``order`` are litellm's and a
  call is tried ``1 + lm_retries`` times. 400, 401, 403 and 404 are not retried.
* A deployment of any other provider (``anthropic/...``, ``openai/gpt-4.1-mini``
  without an ``api_base``, ``ollama/...``) is reached through the Router from the start.

The Router and litellm are imported the first time one of the last two cases
happens. Prices come from the models file or :mod:`rlm.model_info`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

# litellm fetches its price map from the network at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from rlm import model_info
from rlm.config import RLMConfig
from rlm.errors import ConfigError, LMError
from rlm.routing.router import CallSite, Decision, DeploymentState, ModelRouter
from rlm.routing.table import RouteTable, Target
from rlm.routing.tokens import PromptSize
from rlm.transport import ALLOWED_KEY, NODE_KEY, TransportError, chat, chat_sync

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
    #: Where the call went and why (rlm.routing): the group, the deployment's name, the node that
    #: served it, the routing reason, and the seconds it waited before its request left.
    group: str | None = None
    deployment: str | None = None
    node: str | None = None
    route_reason: str = ""
    queue_s: float = 0.0
    #: The request's key (:func:`rlm.records.request_key`) and whether a record answered it instead
    #: of the provider (then tokens and cost are 0: nothing was paid).
    request_key: str | None = None
    cache_hit: bool = False


class LM(Protocol):
    """What the agent loop needs from a language model client.

    ``role`` is ``"root"`` (an agent's own turn) or ``"sub"`` (a sub-call); ``model`` names the
    model group the model asked for; ``site`` says who calls (:class:`~rlm.routing.router.CallSite`:
    an agent's turn or a sub-call, its depth). The router (:mod:`rlm.routing`) turns
    them into a group and a deployment. Failures raise :class:`LMError`.
    """

    def decide(self, messages: list[Message], *, role: str = "root", model: str | None = None,
               site: CallSite | None = None) -> Decision:
        """Where a call would go (its group and deployment), before anything is sent.

        The chosen deployment counts the call as in flight from here: hand the decision to
        :meth:`complete` (which ends it) or give it back with :meth:`release`. Raises
        :class:`LMError` (an unknown group, a prompt that fits no model).
        """
        ...

    def release(self, decision: Decision) -> None:
        """End a decided call that was never sent (answered from a record)."""
        ...

    def sampling(self) -> dict[str, Any]:
        """The settings besides the messages that shape a reply (temperature, max_tokens), as sent."""
        ...

    def complete(self, messages: list[Message], *, role: str = "root", model: str | None = None,
                 timeout: float | None = None, site: CallSite | None = None,
                 decision: Decision | None = None) -> Completion:
        """One call, blocking the calling thread (``decision``: one :meth:`decide` made for it)."""
        ...

    async def acomplete(self, messages: list[Message], *, role: str = "root", model: str | None = None,
                        timeout: float | None = None, site: CallSite | None = None,
                        decision: Decision | None = None) -> Completion:
        """One call as a coroutine; it must run on :meth:`run_async`'s loop."""
        ...

    def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` (e.g. a fan-out of :meth:`acomplete` calls) on the client's loop; block for it."""
        ...

    def model_for(self, role: str) -> str:
        """The model string a ``role``'s default group calls first."""
        ...

    def groups(self) -> tuple[str, ...]:
        """The model groups a model may ask for by name."""
        ...

    def batch_group(self, size: int) -> str | None:
        """The group a heavy rule sends every call of a batch of ``size`` sub-calls to (``None``: no rule)."""
        ...

    def fits(self, messages: list[Message], *, role: str = "root", model: str | None = None) -> bool | None:
        """Whether ``messages`` fit (with room for the reply) a deployment of the group a ``role`` call (or
        ``model``) goes to, counted as the router's size guard counts; ``None`` when no window is known."""
        ...

    def room_used(self, messages: list[Message], group: str | None = None) -> float | None:
        """The share of its window (less the reply's room) ``messages`` would take on the root's own
        group (``group``: the one it asked for), on its tightest deployment and by that deployment's
        tokenizer; ``None`` when no window of the group is known."""
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

    _instance: _EventLoopThread | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        import asyncio  # ~11 ms, paid by the first fan-out: a run without one never needs it

        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        threading.Thread(target=self.loop.run_forever, name="rlm-lm-loop", daemon=True).start()

    @classmethod
    def get(cls) -> _EventLoopThread:
        with cls._lock:
            if cls._instance is None or cls._instance.pid != os.getpid():  # not inherited across fork
                cls._instance = cls()
            return cls._instance

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


class LMClient:
    """The production :class:`LM` (see the module docstring)."""

    def __init__(self, config: RLMConfig) -> None:
        self.config = config
        self.state = DeploymentState()
        self._routes: ModelRouter | None = None
        self._router: Any = None
        self._router_lock = threading.Lock()
        model_info.preload()  # the first call's cost is known when it returns, not parsed then

    # -- the LM protocol ------------------------------------------------------------------
    def model_for(self, role: str) -> str:
        if role not in ROLES:
            raise ConfigError(f"unknown model role {role!r} (one of {', '.join(ROLES)})")
        routing = self.routes.routing
        group = self.routes.table.resolve(routing.root if role == "root" else routing.llm_query)
        return self.routes.table.groups[group][0].deployment.model

    def groups(self) -> tuple[str, ...]:
        return tuple(self.routes.table.groups)

    def batch_group(self, size: int) -> str | None:
        return self.routes.batch_group(size)

    def fits(self, messages: list[Message], *, role: str = "root", model: str | None = None) -> bool | None:
        routing = self.routes.routing
        group = model if model in self.routes.table.groups else self.routes.table.resolve(
            routing.root if role == "root" else routing.llm_query)
        targets = [t for t in self.routes.table.groups[group] if t.room is not None]
        if not targets:
            return None
        size = PromptSize(messages)
        return any(size.fits(t.room or 0, t.tokenizer) for t in targets)

    def room_used(self, messages: list[Message], group: str | None = None) -> float | None:
        table = self.routes.table
        name = table.resolve(group or self.routes.routing.root)
        size = PromptSize(messages)
        shares = [size.estimate(t.tokenizer) / max(t.room, 1) for t in table.groups[name] if t.room is not None]
        return max(shares) if shares else None

    def decide(self, messages: list[Message], *, role: str = "root", model: str | None = None,
               site: CallSite | None = None) -> Decision:
        if role not in ROLES:
            raise ConfigError(f"unknown model role {role!r} (one of {', '.join(ROLES)})")
        return self.routes.decide(messages, role=role, ask=model, site=site)

    def release(self, decision: Decision) -> None:
        # Not a success: a deployment cooling down after a failure stays so; only its in-flight count drops.
        self.state.finished(decision.target.name, ok=False)

    def sampling(self) -> dict[str, Any]:
        return self._wire()

    def complete(self, messages: list[Message], *, role: str = "root", model: str | None = None,
                 timeout: float | None = None, site: CallSite | None = None,
                 decision: Decision | None = None) -> Completion:
        entered = time.monotonic()
        # The decision counts the call in flight on its deployment.
        decision = decision or self.decide(messages, role=role, model=model, site=site)
        sent, ok = time.monotonic(), False
        try:
            if decision.target.endpoint is not None:
                response, target = self._lean_sync(decision, messages, timeout)
            else:
                response, target = self.run_async(self._litellm_call(decision, messages, timeout,
                                                                     self.config.lm_retries))
            ok = True
        except Exception as exc:  # litellm raises many types; all are infrastructure faults here
            raise self._failed(exc, decision) from exc
        finally:
            self.state.finished(decision.target.name, ok)
        return self._completion(response, decision, target, sent, entered, site)

    async def acomplete(self, messages: list[Message], *, role: str = "root", model: str | None = None,
                        timeout: float | None = None, site: CallSite | None = None,
                        decision: Decision | None = None) -> Completion:
        entered = time.monotonic()
        # The decision counts the call in flight on its deployment.
        decision = decision or self.decide(messages, role=role, model=model, site=site)
        sent, ok = time.monotonic(), False
        try:
            if decision.target.endpoint is not None:
                response, target = await self._lean(decision, messages, timeout)
            else:
                response, target = await self._litellm_call(decision, messages, timeout, self.config.lm_retries)
            ok = True
        except Exception as exc:  # litellm raises many types; all are infrastructure faults here
            raise self._failed(exc, decision) from exc
        finally:
            self.state.finished(decision.target.name, ok)
        return self._completion(response, decision, target, sent, entered, site)

    def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        return _EventLoopThread.get().run(coro)

    def close(self) -> None:
        """Unhook the Router, if one was made, from litellm's global callback lists (they grow with every Router)."""
        if self._router is not None:
            self._router.discard()

    # -- routing a call ---------------------------------------------------------------------
    @property
    def routes(self) -> ModelRouter:
        """The run's groups and the router deciding each call (built on first use)."""
        if self._routes is None:
            with self._router_lock:
                if self._routes is None:
                    self._routes = ModelRouter(RouteTable(self.config), self.state)
        return self._routes

    def _wire(self, decision: Decision | None = None) -> dict[str, Any]:
        # The model profile's stop/grammar ride on agents' own turns (the decision's params); the deployment
        # named by the request key implies its profile, so sampling() need not repeat them.
        params: dict[str, Any] = dict(decision.params) if decision is not None else {}
        if self.config.max_completion_tokens:
            params["max_tokens"] = self.config.max_completion_tokens
        if self.config.temperature is not None:
            params["temperature"] = self.config.temperature
        return params

    def _seconds(self, timeout: float | None) -> float:
        return self.config.lm_timeout_s if timeout is None else timeout

    def _lean_sync(self, decision: Decision, messages: list[Message], timeout: float | None) -> tuple[Any, Target]:
        target = decision.target
        assert target.endpoint is not None
        try:
            return chat_sync(target.endpoint, messages, self._wire(decision), self._seconds(timeout)), target
        except TransportError as exc:
            if not self._worth_retrying(exc):
                raise
            self.state.failed(target.name)
        return self.run_async(self._litellm_call(decision, messages, timeout, self.config.lm_retries - 1, target))

    async def _lean(self, decision: Decision, messages: list[Message], timeout: float | None) -> tuple[Any, Target]:
        target = decision.target
        assert target.endpoint is not None
        try:
            return await chat(target.endpoint, messages, self._wire(decision), self._seconds(timeout)), target
        except TransportError as exc:
            if not self._worth_retrying(exc):
                raise
            self.state.failed(target.name)
        return await self._litellm_call(decision, messages, timeout, self.config.lm_retries - 1, target)

    def _worth_retrying(self, exc: TransportError) -> bool:
        """Whether the Router should try again (a timeout under a run deadline cannot succeed)."""
        if self.config.lm_retries <= 0 or not exc.retryable:
            return False
        return not (exc.kind == "timeout" and self.config.timeout_s is not None)

    async def _litellm_call(self, decision: Decision, messages: list[Message], timeout: float | None,
                            retries: int, failed: Target | None = None) -> tuple[Any, Target]:
        """The call through litellm's Router, limited to the decision's fitting deployments (less ``failed``,
        the one whose first attempt just failed, when there are others)."""
        allowed = [t for t in decision.candidates if t is not failed] or list(decision.candidates)
        kwargs: dict[str, Any] = {**self._wire(decision), "num_retries": retries,
                                  "metadata": {ALLOWED_KEY: [t.router_id for t in allowed]}}
        if timeout is not None:
            kwargs["timeout"] = timeout
        response = await self._get_router().acompletion(model=decision.group, messages=messages, **kwargs)
        used = (getattr(response, "_hidden_params", None) or {}).get("model_id")
        return response, next((t for t in allowed if t.router_id == used), allowed[0])

    # -- litellm, when it is needed ---------------------------------------------------------
    def _litellm_params(self, target: Target) -> dict[str, Any]:
        d = target.deployment
        params: dict[str, Any] = {"model": d.model, "order": d.order}
        if target.endpoint is not None:
            from rlm import litellm_provider

            litellm_provider.register()
            params.update(model=litellm_provider.provider_model(d.model), api_key=target.endpoint.api_key)
        elif d.api_key or d.api_key_env:
            params["api_key"] = d.api_key or os.environ.get(d.api_key_env or "")
        if d.api_base:
            params["api_base"] = d.api_base
        return params

    def _get_router(self) -> Any:
        with self._router_lock:
            if self._router is None:
                self._router = self._make_router()
            return self._router

    def _make_router(self) -> Any:
        litellm = _litellm()
        from litellm.types.router import RetryPolicy

        from rlm import litellm_provider

        litellm_provider.register_filter()
        deployments = [{"model_name": t.group, "litellm_params": self._litellm_params(t),
                        "model_info": _router_info(t)} for t in self.routes.table.targets()]
        router = litellm.Router(
            model_list=deployments, num_retries=self.config.lm_retries, timeout=self.config.lm_timeout_s,
            retry_after=0,
            # With a run deadline, each call's timeout is the time left: retrying it cannot succeed.
            retry_policy=RetryPolicy(TimeoutErrorRetries=0) if self.config.timeout_s is not None else None)
        # The Router registers success callbacks that count tokens/requests per deployment for
        # tpm/rpm limits; our deployments set none, and the callbacks cost ~1.5 ms of CPU per call.
        manager = litellm.logging_callback_manager
        manager.remove_callback_from_list_by_object(litellm._async_success_callback, router)  # noqa: SLF001 - no public handle
        manager.remove_callback_from_list_by_object(litellm.success_callback, router)
        return router

    # -- results ------------------------------------------------------------------------------
    @staticmethod
    def _failed(exc: Exception, decision: Decision) -> LMError:
        target = decision.target
        return LMError(f"model call to {decision.group} ({target.name}) failed: {_short(exc)}",
                       model=target.deployment.model, group=decision.group, deployment=target.name,
                       route_reason=decision.reason)

    def _completion(self, response: Any, decision: Decision, target: Target, sent: float, entered: float,
                    site: CallSite | None) -> Completion:
        """A :class:`Completion` from the transport's parsed body or litellm's ``ModelResponse``."""
        if isinstance(response, dict):
            usage = response.get("usage") or {}
            message = response["choices"][0].get("message") or {}
            text = message.get("content") if isinstance(message, dict) else None
            input_tokens, output_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
            node = response.get(NODE_KEY)
        else:
            usage = getattr(response, "usage", None)
            text = response.choices[0].message.content
            input_tokens = getattr(usage, "prompt_tokens", 0)
            output_tokens = getattr(usage, "completion_tokens", 0)
            node = (getattr(response, "_hidden_params", None) or {}).get(NODE_KEY)
        input_tokens, output_tokens = _count(input_tokens), _count(output_tokens)
        waited = site.waited_s if site is not None else 0.0
        reason = decision.reason
        if target is not decision.target:
            reason = f"{reason}; {decision.target.name} failed: retried on {target.name}"
        return Completion(text=text if isinstance(text, str) else "", model=target.deployment.model,
                          input_tokens=input_tokens, output_tokens=output_tokens,
                          cost_usd=target.cost(input_tokens, output_tokens), latency_s=time.monotonic() - sent,
                          group=decision.group, deployment=target.name,
                          node=str(node) if node else target.node, route_reason=reason,
                          queue_s=waited + (sent - entered))


def _router_info(target: Target) -> dict[str, Any]:
    """The Router's model_info of a deployment: its id (ours), and zero prices where the price is unknown."""
    info: dict[str, Any] = {"id": target.router_id}
    if target.cost(1_000_000, 1_000_000) is None:  # unknown price: the Router must not invent one
        info.update(input_cost_per_token=0.0, output_cost_per_token=0.0, cache_creation_input_token_cost=0.0,
                    cache_read_input_token_cost=0.0)
    return info


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
