"""The agent loop: model reply -> code blocks -> sandbox -> observation -> model ...

Plain Python, no Ray: :class:`Agent` runs one agent (root or child) with the
services of its run (:class:`RunServices`: config, LM, the tree-wide budget,
the event bus, how to spawn a child). Model mistakes — syntax errors,
exceptions, a reply without code — go back to the model as observations.
Infrastructure faults (:class:`rlm.errors.LMError`, sandbox failures) end the
agent with status ``"error"``. A tripped tree-wide limit ends every agent of
the tree with the limit's name as status and the best partial answer.

The *partial answer* of an agent stopped early is the last non-empty output of
its cells, or else the prose of the model's last reply.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rlm import prompts
from rlm.budget import Budget
from rlm.config import RLMConfig
from rlm.errors import InputError, LimitReached, LMError, RLMError
from rlm.events import AgentFinished, AgentStarted, CellExecuted, Event, IterationFinished, LMCalled
from rlm.inputs import ContextPayload, payload_from_documents, payload_from_text
from rlm.lm import LM, Completion, Message
from rlm.parsing import extract_code_blocks, plain_final, strip_code
from rlm.sandbox.host import CellResult, HostCallError, Sandbox

PREVIEW_CHARS = 2_000
SUB_CALLS = frozenset({"llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched"})


@dataclass(frozen=True, slots=True)
class AgentResult:
    """How one agent ended. ``status`` is ``"ok"``, a limit name, or ``"error"``."""

    agent_id: str
    answer: str | None
    status: str
    iterations: int
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class HostFunction:
    """A host function beyond the built-in four, exposed in every agent's REPL (e.g. ``note``).

    ``fn(agent, args)`` runs on the host with the calling :class:`Agent` and the
    call's arguments by name; it raises :class:`HostCallError` for errors the
    model should see. ``doc`` is one line for the system prompt.
    """

    name: str
    params: tuple[str, ...]
    doc: str
    fn: Callable[["Agent", dict[str, Any]], Any]


@dataclass
class RunServices:
    """What every agent of one run shares. ``spawn`` runs a child agent (in-process by default)."""

    run_id: str
    config: RLMConfig
    lm: LM
    budget: Budget
    emit: Callable[[Event], None]
    workdir: Path
    node_id: str = field(default_factory=socket.gethostname)
    spawn: Callable[["Agent"], AgentResult] | None = None
    host_functions: dict[str, HostFunction] = field(default_factory=dict)
    #: Extra text for every agent's system prompt.
    prompt_extra: str = ""
    #: Extra text for the root's system prompt only (e.g. the namespace's memories).
    root_prompt_extra: str = ""
    #: Makes agent ids unique when agents of one run are created in several processes (Ray).
    id_prefix: str = ""
    #: ``(agent, handler, extra_functions) -> Sandbox`` or None for a cold start (Ray hosts use a pool).
    sandbox_factory: Callable[["Agent", Any, dict[str, list[str]]], Sandbox | None] | None = None
    #: Other processes that run shares of a big ``llm_query_batched`` (see :mod:`rlm.fanout`).
    fanout_helpers: list[Any] = field(default_factory=list)
    _depth_reached: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Any = field(default_factory=itertools.count)

    def new_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}{self.id_prefix}{next(self._ids)}"

    def reached(self, depth: int) -> None:
        with self._lock:
            self._depth_reached = max(self._depth_reached, depth)

    @property
    def depth_reached(self) -> int:
        return self._depth_reached

    def run_child(self, agent: "Agent", *, here: bool = False) -> AgentResult:
        """Run a child agent: where the ``spawn`` hook places it, or in this process when ``here``."""
        return self.spawn(agent, here=here) if self.spawn else agent.run()


class Agent:
    """One agent: its prompt, its context payload, its own sandbox, its message history."""

    def __init__(self, services: RunServices, *, prompt: str, payload: ContextPayload, depth: int = 0,
                 parent_id: str | None = None, agent_id: str | None = None) -> None:
        self.services = services
        self.config = services.config
        self.prompt = prompt
        self.payload = payload
        self.depth = depth
        self.parent_id = parent_id
        self.agent_id = agent_id or services.new_id("a")
        self.role = "root" if depth == 0 else "sub"
        self.model = self.config.model if depth == 0 else self.config.effective_sub_model
        self.iterations = 0
        self._partial: str | None = None
        self._sandbox: Sandbox | None = None
        self._sandbox_starting: Future[Sandbox] | None = None
        self._usage_lock = threading.Lock()
        self._tokens = [0, 0, 0]  # this agent's own input tokens, output tokens, LM calls

    # -- the loop ----------------------------------------------------------------
    def run(self) -> AgentResult:
        """Run to a FINAL answer, a limit, or an infrastructure error. Never raises for those."""
        started = time.monotonic()
        self.services.reached(self.depth)
        self._emit(AgentStarted, parent_id=self.parent_id, depth=self.depth, model=self.model,
                   prompt=self.prompt[:PREVIEW_CHARS], context_info=self.payload.info(),
                   node_id=self.services.node_id)
        # The sandbox gets ready (from the factory's pool or started cold) while the first model call is in flight.
        self._sandbox_starting = _sandbox_starter().submit(self._make_sandbox)
        try:
            result = self._loop()
        except LimitReached as exc:
            result = self._result(None, exc.limit)
        except RLMError as exc:
            result = self._result(None, "error", error=str(exc))
        finally:
            starting, self._sandbox_starting = self._sandbox_starting, None
            if starting is not None and starting.exception() is None:  # ended before its first cell
                self._sandbox = starting.result()
            if self._sandbox is not None:
                self._sandbox.close()
        input_tokens, output_tokens, llm_calls = self._tokens
        self._emit(AgentFinished, status=result.status, answer=result.answer, iterations=self.iterations,
                   input_tokens=input_tokens, output_tokens=output_tokens, llm_calls=llm_calls,
                   duration_s=time.monotonic() - started, error=result.error)
        return result

    def _loop(self) -> AgentResult:
        messages = self._initial_messages()
        for _ in range(self.config.max_iterations):
            self.iterations += 1
            answer = self._iteration(messages, purpose="iteration")
            if answer is not None:
                return self._result(answer, "ok")
        return self._force_final(messages)

    def _iteration(self, messages: list[Message], *, purpose: str) -> str | None:
        """One model turn and its cells; returns the answer if FINAL was called."""
        started = time.monotonic()
        self.services.budget.check()
        reply = self._call_lm(messages, role=self.role, purpose=purpose).text
        messages.append({"role": "assistant", "content": reply})
        answer, observation, n_cells = self._act(reply)
        self._emit(IterationFinished, iteration=self.iterations, reply=reply, n_cells=n_cells,
                   duration_s=time.monotonic() - started)
        if answer is not None:
            return answer
        messages.append({"role": "user", "content": observation})
        self.services.budget.check()
        return None

    def _act(self, reply: str) -> tuple[str | None, str, int]:
        """Run the reply's code; returns (answer or None, observation for the model, cells run)."""
        blocks = extract_code_blocks(reply)
        if not blocks:
            return self._act_on_prose(reply)
        parts: list[str] = []
        for index, code in enumerate(blocks):
            result = self._run_cell(code, index)
            if result.final is not None:
                return result.final, "", index + 1
            parts.append(self._format_cell(index, len(blocks), result))
            if result.error is not None and index + 1 < len(blocks):
                parts.append(f"[blocks {index + 2}-{len(blocks)} were not run because block {index + 1} failed]")
                return None, self._observation(parts), index + 1
        return None, self._observation(parts), len(blocks)

    def _act_on_prose(self, reply: str) -> tuple[str | None, str, int]:
        self._partial = strip_code(reply) or self._partial
        final = plain_final(reply)
        if final is None:
            return None, prompts.NO_CODE, 0
        if final.ambiguous:
            return None, prompts.AMBIGUOUS_FINAL, 0
        if final.text is not None:
            return final.text, "", 0
        result = self._run_cell(final.code or "", 0)
        if result.final is not None:
            return result.final, "", 1
        return None, self._observation([self._format_cell(0, 1, result)]), 1

    def _force_final(self, messages: list[Message]) -> AgentResult:
        """Out of iterations: ask once for a final answer from what the model has."""
        messages.append({"role": "user", "content": prompts.FORCE_FINAL})
        reply = self._call_lm(messages, role=self.role, purpose="final").text
        answer, _, _ = self._act(reply)
        if answer is None:
            answer = strip_code(reply) or self._partial
        return AgentResult(self.agent_id, answer, "max_iterations", self.iterations)

    # -- pieces ------------------------------------------------------------------
    def _initial_messages(self) -> list[Message]:
        extra = self.services.prompt_extra
        if self.depth == 0 and self.services.root_prompt_extra:
            extra = f"{extra}\n\n{self.services.root_prompt_extra}".strip()
        system = prompts.system_prompt(sub_chars=100_000, obs_chars=self.config.max_observation_chars,
                                       child=self.depth > 0, sub_calls=self.config.sub_calls,
                                       extra_functions=[f.doc for f in self.services.host_functions.values()],
                                       extra=extra)
        example = [{"role": role, "content": text} for role, text in prompts.EXAMPLE_TURNS]
        description = self.payload.describe(self.config.sandbox.huge_input_bytes)
        return [{"role": "system", "content": system}, *example,
                {"role": "user", "content": prompts.user_prompt(self.prompt, description)}]

    def _result(self, answer: str | None, status: str, *, error: str | None = None) -> AgentResult:
        if answer is None and status != "ok":
            answer = self._partial
        return AgentResult(self.agent_id, answer, status, self.iterations, error)

    def _make_sandbox(self) -> Sandbox:
        """This agent's started sandbox: the run's factory's (e.g. a host's pool) or a cold start."""
        extra = {f.name: list(f.params) for f in self.services.host_functions.values()}
        factory = self.services.sandbox_factory
        sandbox = (factory(self, self._host_call, extra) if factory else None) or Sandbox(
            self.payload.path, self.payload.kind, config=self.config.sandbox, handler=self._host_call,
            extra_functions=extra)
        try:
            sandbox.start()
        except BaseException:
            sandbox.close()
            raise
        return sandbox

    def _run_cell(self, code: str, index: int) -> CellResult:
        if self._sandbox is None:
            starting, self._sandbox_starting = self._sandbox_starting, None
            # A failed start is raised here, on the agent's thread, as it would be at a cold start.
            self._sandbox = starting.result() if starting is not None else self._make_sandbox()
        remaining = self.services.budget.remaining_time()
        timeout = self.config.sandbox.cell_timeout_s if remaining is None else min(
            self.config.sandbox.cell_timeout_s, max(remaining, 0.001))
        result = self._sandbox.execute(code, timeout=timeout,
                                       should_stop=lambda: self.services.budget.stop_reason is not None)
        if result.stdout.strip():
            self._partial = result.stdout.strip()[-PREVIEW_CHARS:]
        self._emit(CellExecuted, iteration=self.iterations, index=index, code=code,
                   stdout=result.stdout[:self.config.sandbox.max_output_chars],
                   stderr=result.stderr[:self.config.sandbox.max_output_chars], error=result.error,
                   duration_s=result.duration_s, final=result.final is not None, restarted=result.restarted)
        return result

    def _format_cell(self, index: int, total: int, result: CellResult) -> str:
        lines = [f"[block {index + 1} of {total}]"] if total > 1 else []
        if result.stdout:
            lines.append(result.stdout.rstrip("\n"))
        if result.stderr:
            lines.append("[stderr]\n" + result.stderr.rstrip("\n"))
        if result.error:
            lines.append("[error]\n" + result.error.rstrip("\n"))
        if result.truncated:
            lines.append(f"[{result.truncated:,} more characters of output were dropped by the sandbox]")
        if not (result.stdout or result.stderr or result.error):
            lines.append("(no output)")
        return "\n".join(lines)

    def _observation(self, parts: list[str]) -> str:
        text = "\n".join(parts)
        limit = self.config.max_observation_chars
        if len(text) > limit:
            head = text[: limit * 3 // 4]
            tail = text[-(limit // 4):]
            text = f"{head}\n[... {len(text) - len(head) - len(tail):,} characters cut ...]\n{tail}"
        return f"{prompts.OBSERVATION_HEADER}\n{text}"

    def _emit(self, event_type: type[Event], **fields: Any) -> None:
        self.services.emit(event_type(run_id=self.services.run_id, agent_id=self.agent_id, **fields))

    # -- LM calls ----------------------------------------------------------------
    def _call_lm(self, messages: list[Message], *, role: str, purpose: str, model: str | None = None) -> Completion:
        remaining, call_id = self._before_call()
        try:
            completion = self.services.lm.complete(messages, role=role, model=model, timeout=remaining)
        except LMError as exc:
            self._call_failed(exc, call_id, messages, role=role, purpose=purpose, model=model)
            raise
        return self._call_done(completion, call_id, messages, role=role, purpose=purpose)

    async def _acall_lm(self, messages: list[Message], *, role: str, purpose: str,
                        model: str | None = None) -> Completion:
        """:meth:`_call_lm` as a coroutine, for fan-outs on the LM client's event loop."""
        remaining, call_id = self._before_call()
        try:
            completion = await self.services.lm.acomplete(  # type: ignore[attr-defined]
                messages, role=role, model=model, timeout=remaining)
        except LMError as exc:
            self._call_failed(exc, call_id, messages, role=role, purpose=purpose, model=model)
            raise
        return self._call_done(completion, call_id, messages, role=role, purpose=purpose)

    def _before_call(self) -> tuple[float | None, str]:
        """Claim the call from the tree-wide budget (raises LimitReached); its timeout and id."""
        budget = self.services.budget
        budget.reserve_call()
        return budget.remaining_time(), uuid.uuid4().hex[:12]

    def _call_failed(self, exc: LMError, call_id: str, messages: list[Message], *, role: str, purpose: str,
                     model: str | None) -> None:
        self._emit(LMCalled, call_id=call_id, model=model or self._model_for(role), role=role, purpose=purpose,
                   ok=False, error=str(exc), prompt_preview=messages[-1]["content"][:PREVIEW_CHARS])
        self.services.budget.check()  # a call cut off by the run's deadline is a timeout, not an error

    def _call_done(self, completion: Completion, call_id: str, messages: list[Message], *, role: str,
                   purpose: str) -> Completion:
        self.services.budget.record(completion.input_tokens, completion.output_tokens, completion.cost_usd)
        with self._usage_lock:
            self._tokens[0] += completion.input_tokens
            self._tokens[1] += completion.output_tokens
            self._tokens[2] += 1
        self._emit(LMCalled, call_id=call_id, model=completion.model, role=role, purpose=purpose,
                   input_tokens=completion.input_tokens, output_tokens=completion.output_tokens,
                   cost_usd=completion.cost_usd, latency_s=completion.latency_s,
                   prompt_preview=messages[-1]["content"][:PREVIEW_CHARS],
                   response_preview=completion.text[:PREVIEW_CHARS])
        return completion

    def add_usage(self, input_tokens: int, output_tokens: int, llm_calls: int) -> None:
        """Count calls made for this agent elsewhere (a fan-out shard on another process) as its own."""
        with self._usage_lock:
            self._tokens[0] += input_tokens
            self._tokens[1] += output_tokens
            self._tokens[2] += llm_calls

    def own_usage(self) -> tuple[int, int, int]:
        """This agent's own input tokens, output tokens and LM calls so far."""
        with self._usage_lock:
            return self._tokens[0], self._tokens[1], self._tokens[2]

    def _model_for(self, role: str) -> str:
        return self.config.model if role == "root" else self.config.effective_sub_model

    # -- host functions (called from the sandbox, on this agent's thread) ------------
    def _host_call(self, name: str, args: dict[str, Any]) -> Any:
        if name in SUB_CALLS and not self.config.sub_calls:
            raise HostCallError(f"{name}: sub-calls are disabled in this run; work on `context` with code alone")
        if name == "llm_query":
            return self._llm_query(_text_arg(args, "prompt"), _model_arg(args))
        if name == "llm_query_batched":
            prompts_ = _list_arg(args, "prompts")
            model = _model_arg(args)
            if hasattr(self.services.lm, "acomplete") and all(isinstance(p, str) for p in prompts_):
                return self._llm_query_fanout(prompts_, model)
            results = self._batched(lambda p: self._llm_query(p, model), prompts_)
            self._raise_if_stopped()
            return results
        if name == "rlm_query":
            return self._rlm_query(_text_arg(args, "prompt"), args.get("context"))
        if name == "rlm_query_batched":
            prompts_ = _list_arg(args, "prompts")
            contexts = args.get("contexts") or [None] * len(prompts_)
            if not isinstance(contexts, list) or len(contexts) != len(prompts_):
                raise HostCallError("rlm_query_batched: contexts must be a list as long as prompts")
            if self.depth >= self.config.max_depth:  # no children allowed: plain LM calls
                results = self._batched(lambda t: self._rlm_query(*t), list(zip(prompts_, contexts)))
            else:
                # Ids are taken in batch order, so item i of the batch is the i-th child id.
                triples = [(p, c, self.services.new_id("a")) for p, c in zip(prompts_, contexts)]
                from rlm.fanout import run_sharded

                results = run_sharded(self, "rlm", triples, None, self.rlm_batch_local, min_shard=1)
            self._raise_if_stopped()
            return results
        extra = self.services.host_functions.get(name)
        if extra is None:
            raise HostCallError(f"unknown host function {name}")
        return extra.fn(self, args)

    def _llm_query(self, prompt: str, model: str | None, purpose: str = "llm_query") -> str:
        try:
            return self._call_lm([{"role": "user", "content": prompt}], role="sub", purpose=purpose, model=model).text
        except LMError as exc:
            raise HostCallError(str(exc)) from None

    def _rlm_query(self, prompt: str, context: Any, agent_id: str | None = None, *, here: bool = False) -> str:
        if not isinstance(prompt, str):
            raise HostCallError("rlm_query: prompt must be a str")
        if self.depth + 1 > self.config.max_depth:
            # At max depth a child agent is not allowed: answer with a plain LM call.
            text = prompt if context is None else f"{prompt}\n\nContext:\n{_context_text(context)}"
            return self._llm_query(text, None, purpose="fallback")
        payload = self.child_payload(context)
        child = Agent(self.services, prompt=prompt, payload=payload, depth=self.depth + 1, parent_id=self.agent_id,
                      agent_id=agent_id)
        try:
            result = self.services.run_child(child, here=here)
        finally:
            self.release_child_payload(payload)
        return self._child_answer(result)

    def rlm_batch_local(self, triples: list[tuple[str, Any, str]], concurrency: int) -> list[dict[str, str]]:
        """Child agents for ``(prompt, context, child_id)`` triples, in this process, ``concurrency`` at a time."""
        return self._batched(lambda t: self._rlm_query(*t, here=True), triples, concurrency)

    def child_item(self, result: AgentResult) -> dict[str, str]:
        """A batch item for a finished child: ``{"value": answer}`` or ``{"error": why}``."""
        return _item(lambda: self._child_answer(result))

    def _child_answer(self, result: AgentResult) -> str:
        """The answer a finished child gives its parent; raises when it has none to give."""
        if result.status == "ok" or result.status == "max_iterations":
            return result.answer or ""
        if self.services.budget.stop_reason:
            raise LimitReached(self.services.budget.stop_reason)
        raise HostCallError(f"child agent {result.agent_id} failed ({result.status}): {result.error}")

    def release_child_payload(self, payload: ContextPayload) -> None:
        """Delete a finished child's own context file (the parent's own payload stays)."""
        if payload is not self.payload:
            payload.cleanup()

    def child_payload(self, context: Any) -> ContextPayload:
        """The child's own context file (``None``: the parent's, shared read-only, no copy)."""
        if context is None:
            return self.payload
        return context_payload(context, self.services.workdir)

    def _llm_query_fanout(self, prompts_: list[str], model: str | None) -> list[dict[str, str]]:
        """``llm_query_batched`` as coroutines on LM client loops: no thread per call.

        At most ``max_concurrency`` in flight; order kept; a failed or refused item
        becomes an error entry; a tripped limit stops the cell afterwards. A big
        batch is spread over the run's other processes when it has some (:mod:`rlm.fanout`).
        """
        from rlm.fanout import run_sharded

        results = run_sharded(self, "llm", prompts_, model, lambda part, gate: self.llm_fanout_local(part, model, gate))
        self._raise_if_stopped()
        return results

    def llm_fanout_local(self, prompts_: list[str], model: str | None, concurrency: int) -> list[dict[str, str]]:
        """Sub-calls for ``prompts_`` on this process's LM loop, at most ``concurrency`` in flight."""
        import asyncio

        async def one(prompt: str, gate: asyncio.Semaphore) -> dict[str, str]:
            async with gate:
                try:
                    completion = await self._acall_lm([{"role": "user", "content": prompt}], role="sub",
                                                      purpose="llm_query", model=model)
                except LMError as exc:
                    return {"error": str(exc)}
                except LimitReached as exc:
                    return {"error": f"the run was stopped: {exc.limit}"}
                return {"value": completion.text}

        async def fan_out() -> list[dict[str, str]]:
            gate = asyncio.Semaphore(concurrency)
            return list(await asyncio.gather(*(one(p, gate) for p in prompts_)))

        return self.services.lm.run_async(fan_out()) if prompts_ else []  # type: ignore[attr-defined]

    def _raise_if_stopped(self) -> None:
        """After a fan-out: a limit tripped by any item stops the cell (the items already say so)."""
        if self.services.budget.stop_reason:
            raise LimitReached(self.services.budget.stop_reason)

    def _batched(self, work: Callable[[Any], str], items: list[Any],
                 concurrency: int | None = None) -> list[dict[str, str]]:
        """Run ``work`` over ``items`` concurrently (bounded), in order; failures become error items.

        A tripped limit does not raise here: the caller raises once the whole batch is in.
        """
        if not items:
            return []
        workers = min(concurrency or self.config.max_concurrency, len(items))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"rlm-{self.agent_id}") as pool:
            return list(pool.map(lambda item: _item(lambda: work(item)), items))


_starter: ThreadPoolExecutor | None = None
_starter_lock = threading.Lock()


def _sandbox_starter() -> ThreadPoolExecutor:
    """Threads that start agents' sandboxes while their first model call is in flight."""
    global _starter
    with _starter_lock:
        if _starter is None:
            _starter = ThreadPoolExecutor(max_workers=32, thread_name_prefix="rlm-sandbox-start")
        return _starter


def _item(work: Callable[[], str]) -> dict[str, str]:
    """One batch item: ``{"value": work()}``, or ``{"error": ...}`` for what the model should see."""
    try:
        return {"value": work()}
    except HostCallError as exc:
        return {"error": str(exc)}
    except LimitReached as exc:
        return {"error": f"the run was stopped: {exc.limit}"}


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
    import json

    return json.dumps(context, ensure_ascii=False, indent=1)
