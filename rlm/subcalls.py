"""The host functions an agent's REPL calls: sub-model calls, child agents, and the extensions' functions.

:class:`SubCalls` is an agent's sandbox handler. It serves, on the agent's
thread, every ``call(name, args)`` the worker sends:

* ``llm_query(prompt, model=None)`` and ``llm_query_batched(prompts, model=None)``
  — sub-model calls through the agent's :class:`~rlm.calls.CallMeter`; a batch
  runs as coroutines on the LM client's loop, at most ``max_concurrency`` in
  flight, spread over the run's other processes when it is big (:mod:`rlm.fanout`);
* ``rlm_query(prompt, context=None, model=None)`` and
  ``rlm_query_batched(prompts, contexts=None, model=None)`` — child agents at
  depth + 1, placed by the run's :class:`~rlm.services.Placement` (a plain LM
  call at ``max_depth``), whose own turns use the model group ``model`` names;
* any :class:`~rlm.services.HostFunction` an extension added (``note``, ...).

``model`` names a model group (:mod:`rlm.routing`); a name that is no group is an
error the model sees. A batch bigger than the models file's heavy ``batch_size``
goes to the heavy group, every item of it, wherever its shards run.

A failed item of a batch is an ``{"error": ...}`` entry (the worker turns it
into a falsy ``QueryError``); a failed single call raises
:class:`~rlm.errors.HostCallError`, which the model sees as an exception. A
tree-wide limit tripped during a batch stops the cell once the batch is in.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from rlm.calls import CallMeter
from rlm.errors import HostCallError, InputError, LimitReached, LMError
from rlm.fanout import run_sharded
from rlm.inputs import ContextPayload, payload_from_documents, payload_from_text
from rlm.results import AgentResult
from rlm.services import AgentLike

__all__ = ["SUB_CALLS", "SubCalls", "Parent", "context_payload"]

SUB_CALLS = frozenset({"llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched"})

Item = dict[str, str]


class Parent(AgentLike, Protocol):
    """What :class:`SubCalls` needs of its agent: its meter and a way to make its children."""

    calls: CallMeter

    def child(self, prompt: str, payload: ContextPayload, agent_id: str | None = None,
              group: str | None = None) -> AgentLike: ...


class SubCalls:
    """The sandbox handler of one agent (see the module docstring)."""

    def __init__(self, agent: Parent) -> None:
        self.agent = agent
        self.calls = agent.calls
        self.services = agent.services
        self.config = agent.services.config

    def __call__(self, name: str, args: dict[str, Any]) -> Any:
        if name in SUB_CALLS and not self.config.sub_calls:
            raise HostCallError(f"{name}: sub-calls are disabled in this run; work on `context` with code alone")
        if name == "llm_query":
            return self.llm_query(_text_arg(args, "prompt"), _model_arg(args))
        if name == "llm_query_batched":
            return self._llm_query_batched(_list_arg(args, "prompts"), _model_arg(args))
        if name == "rlm_query":
            return self.rlm_query(_text_arg(args, "prompt"), args.get("context"), group=self._group_arg(args))
        if name == "rlm_query_batched":
            return self._rlm_query_batched(_list_arg(args, "prompts"), args.get("contexts"), self._group_arg(args))
        extra = self.services.host_functions.get(name)
        if extra is None:
            raise HostCallError(f"unknown host function {name}")
        return extra.fn(self.agent, args)  # extensions see the agent itself

    # -- sub-model calls -------------------------------------------------------------------
    def llm_query(self, prompt: str, model: str | None, purpose: str = "llm_query") -> str:
        try:
            return self.agent.calls.call([{"role": "user", "content": prompt}], role="sub", purpose=purpose,
                                         model=model).text
        except LMError as exc:
            raise HostCallError(str(exc)) from None

    def _llm_query_batched(self, prompts: list[Any], model: str | None) -> list[Item]:
        model = model or self.services.lm.batch_group(len(prompts))
        if all(isinstance(p, str) for p in prompts):
            results = run_sharded(self.agent, "llm", prompts, model,
                                  lambda part, gate: self.llm_batch(part, model, gate))
        else:
            results = self._batched(lambda p: self.llm_query(_text(p), model), prompts)
        self._raise_if_stopped()
        return results

    def llm_batch(self, prompts: list[str], model: str | None, concurrency: int) -> list[Item]:
        """Sub-calls for ``prompts`` on this process's LM loop, at most ``concurrency`` in flight, in order."""
        import asyncio  # loaded by the LM client's loop already, or ~11 ms now

        calls = self.agent.calls

        async def one(prompt: str, gate: asyncio.Semaphore) -> Item:
            queued = time.monotonic()
            async with gate:
                try:
                    completion = await calls.acall([{"role": "user", "content": prompt}], role="sub",
                                                   purpose="llm_query", model=model,
                                                   waited_s=time.monotonic() - queued)
                except LMError as exc:
                    return {"error": str(exc)}
                except LimitReached as exc:
                    return {"error": f"the run was stopped: {exc.limit}"}
                return {"value": completion.text}

        async def fan_out() -> list[Item]:
            gate = asyncio.Semaphore(concurrency)
            return list(await asyncio.gather(*(one(p, gate) for p in prompts)))

        return self.services.lm.run_async(fan_out()) if prompts else []

    # -- child agents ----------------------------------------------------------------------
    def rlm_query(self, prompt: str, context: Any, agent_id: str | None = None, *, here: bool = False,
                  group: str | None = None) -> str:
        if not isinstance(prompt, str):
            raise HostCallError("rlm_query: prompt must be a str")
        if self.agent.depth + 1 > self.config.max_depth:
            # At max depth a child agent is not allowed: answer with a plain LM call.
            text = prompt if context is None else f"{prompt}\n\nContext:\n{_context_text(context)}"
            return self.llm_query(text, group, purpose="fallback")
        payload = self.child_payload(context)
        child = self.agent.child(prompt, payload, agent_id, group=group)
        try:
            result = self.services.placement.run_child(child, here=here)
        finally:
            self.release_child_payload(payload)
        return self.child_answer(result)

    def _rlm_query_batched(self, prompts: list[Any], contexts: Any, group: str | None = None) -> list[Item]:
        contexts = contexts or [None] * len(prompts)
        if not isinstance(contexts, list) or len(contexts) != len(prompts):
            raise HostCallError("rlm_query_batched: contexts must be a list as long as prompts")
        if self.agent.depth >= self.config.max_depth:  # no children allowed: plain LM calls
            pairs = list(zip(prompts, contexts, strict=True))
            results = self._batched(lambda pair: self.rlm_query(*pair, group=group), pairs)
        else:
            # Ids are taken in batch order, so item i of the batch is the i-th child id.
            triples = [(p, c, self.services.new_id("a")) for p, c in zip(prompts, contexts, strict=True)]
            results = run_sharded(self.agent, "rlm", triples, group,
                                  lambda part, gate: self.rlm_batch(part, gate, group), min_shard=1)
        self._raise_if_stopped()
        return results

    def rlm_batch(self, triples: list[tuple[Any, Any, str]], concurrency: int, group: str | None = None) -> list[Item]:
        """Child agents for ``(prompt, context, child_id)`` triples, in this process, ``concurrency`` at a time,
        their own turns on ``group`` if given."""
        return self._batched(lambda t: self.rlm_query(t[0], t[1], t[2], here=True, group=group), triples,
                             concurrency)

    def child_item(self, result: AgentResult) -> Item:
        """A batch item for a finished child: ``{"value": answer}`` or ``{"error": why}``."""
        return _item(lambda: self.child_answer(result))

    def child_answer(self, result: AgentResult) -> str:
        """The answer a finished child gives its parent; raises when it has none to give."""
        if result.status == "ok" or result.status == "max_iterations":
            return result.answer or ""
        if self.services.budget.stop_reason:
            raise LimitReached(self.services.budget.stop_reason)
        raise HostCallError(f"child agent {result.agent_id} failed ({result.status}): {result.error}")

    def child_payload(self, context: Any) -> ContextPayload:
        """The child's own context file (``None``: the parent's, shared read-only, no copy)."""
        if context is None:
            return self.agent.payload
        return context_payload(context, self.services.workdir)

    def release_child_payload(self, payload: ContextPayload) -> None:
        """Delete a finished child's own context file (the parent's own payload stays)."""
        if payload is not self.agent.payload:
            payload.cleanup()

    # -- helpers ---------------------------------------------------------------------------
    def _group_arg(self, args: dict[str, Any]) -> str | None:
        """``model=`` of an ``rlm_query``: a model group that exists (checked now, not in the child)."""
        group = _model_arg(args)
        if group is not None and group not in self.services.lm.groups():
            raise HostCallError(f"there is no model group {group!r}; ask for one of: "
                                f"{', '.join(self.services.lm.groups())} (or leave model= out)")
        return group

    def _raise_if_stopped(self) -> None:
        """After a batch: a limit tripped by any item stops the cell (the items already say so)."""
        if self.services.budget.stop_reason:
            raise LimitReached(self.services.budget.stop_reason)

    def _batched(self, work: Callable[[Any], str], items: list[Any], concurrency: int | None = None) -> list[Item]:
        """Run ``work`` over ``items`` on threads (bounded), in order; failures become error items."""
        if not items:
            return []
        workers = min(concurrency or self.config.max_concurrency, len(items))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"rlm-{self.agent.agent_id}") as pool:
            return list(pool.map(lambda item: _item(lambda: work(item)), items))


def _item(work: Callable[[], str]) -> Item:
    """One batch item: ``{"value": work()}``, or ``{"error": ...}`` for what the model should see."""
    try:
        return {"value": work()}
    except HostCallError as exc:
        return {"error": str(exc)}
    except LimitReached as exc:
        return {"error": f"the run was stopped: {exc.limit}"}


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise HostCallError(f"prompt must be a str, not {type(value).__name__}")
    return value


def _text_arg(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str):
        raise HostCallError(f"{name} must be a str")
    return value


def _model_arg(args: dict[str, Any]) -> str | None:
    model = args.get("model")
    if model is not None and not isinstance(model, str):
        raise HostCallError("model must be a str or None")
    return model


def _list_arg(args: dict[str, Any], name: str) -> list[Any]:
    value = args.get(name)
    if not isinstance(value, list):
        raise HostCallError(f"{name} must be a list")
    return value


def context_payload(context: Any, workdir: Path) -> ContextPayload:
    """A new context file in ``workdir`` for a child's ``context`` (a str, documents, or anything printable).

    Raises:
        HostCallError: the context cannot be written as a payload.
    """
    try:
        if isinstance(context, str):
            return payload_from_text(context, workdir=workdir)
        if isinstance(context, list) and context and all(isinstance(d, dict) for d in context):
            return payload_from_documents(context, workdir=workdir)
        return payload_from_text(_context_text(context), workdir=workdir)
    except InputError as exc:
        raise HostCallError(f"rlm_query: unusable context: {exc}") from None


def _context_text(context: Any) -> str:
    if isinstance(context, str):
        return context
    return json.dumps(context, ensure_ascii=False, indent=1)
