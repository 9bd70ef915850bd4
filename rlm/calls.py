"""One agent's model calls: claimed from the tree-wide budget, made, counted and recorded.

:class:`CallMeter` is the only way an agent reaches its LM. Every call reserves
its place in the run's :class:`~rlm.budget.Ledger` first (so the call cap holds
across the tree), is sent with the time left before the run's deadline as its
timeout, and on return adds its tokens and cost to the ledger and to the
agent's own totals and emits one :class:`~rlm.events.LMCalled` event (also for a
failed call) saying where the call went and why. It tells the LM client who calls
(:class:`~rlm.routing.router.CallSite`: the agent's own turn or a sub-call, its
depth) so that the router can apply the role, depth and heavy rules;
an agent started with a group of its own (``rlm_query(..., model=...)``) asks
for that group for its own turns.

Before a call is sent, the meter asks the client where it would go
(:meth:`rlm.lm.LM.decide`), computes its request key (:mod:`rlm.records`) and,
when the run has records (``RunServices.records``: a replay, a resume, the
sub-call cache), answers it from one instead: a *cache hit*, which takes its
place in the call budget but costs no tokens. With the cache on, a request
identical to one in flight waits for that call's reply instead of being sent
again (a hit too; if that call fails, it is sent). A replay's request without a
record stops the run with status ``diverged`` (nothing is sent).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rlm.errors import LimitReached, LMError
from rlm.events import LMCalled
from rlm.lm import Completion, Message
from rlm.records import DIVERGED, CallRecords, Hit, Recorded, deployment_identity, messages_digest, request_key
from rlm.routing.router import CallSite, Decision

if TYPE_CHECKING:
    from rlm.services import RunServices

__all__ = ["CallMeter", "Totals", "PREVIEW_CHARS"]

#: Characters of prompts, replies and outputs kept in events.
PREVIEW_CHARS = 2_000
#: Purposes of an agent's own turns (the rest are sub-calls).
AGENT_TURNS = frozenset({"iteration", "final"})


@dataclass(frozen=True, slots=True)
class Totals:
    """An agent's own input tokens, output tokens and LM calls."""

    input_tokens: int = 0
    output_tokens: int = 0
    llm_calls: int = 0


class CallMeter:
    """The LM calls of agent ``agent_id`` at ``depth`` (thread-safe: batched sub-calls run concurrently).

    ``group``: the model group the agent's own turns ask for (``None``: the router's default).
    """

    def __init__(self, services: RunServices, agent_id: str, depth: int = 0, group: str | None = None) -> None:
        self.services = services
        self.agent_id = agent_id
        self.depth = depth
        self.group = group
        self._lock = threading.Lock()
        self._totals = [0, 0, 0]

    def call(self, messages: list[Message], *, role: str, purpose: str, model: str | None = None) -> Completion:
        """One call from this thread; raises :class:`LMError` or :class:`~rlm.errors.LimitReached`."""
        remaining, call_id = self._before()
        model, site = self._route(purpose, model, 0.0)
        decision, keys = self._decide(messages, call_id, role=role, purpose=purpose, model=model, site=site)
        hit = self._answered(decision, keys, messages, purpose)
        claim = _UNCLAIMED if hit is not None else self._claim(keys[0])
        if claim.flying is not None:  # an identical call is in flight: its reply answers this one
            hit = self._joined(decision, keys[0], claim.flying.result(), claim.started)
        if hit is not None:
            return self._done(hit, call_id, messages, role=role, purpose=purpose)
        try:
            completion = self._paid(self.services.lm.complete(messages, role=role, model=model, timeout=remaining,
                                                              site=site, decision=decision), keys[0])
        except LMError as exc:
            self._failed(exc, call_id, messages, role=role, purpose=purpose, model=model, key=keys[0])
            raise
        finally:
            self._unclaim(claim, keys[0])
        return self._done(completion, call_id, messages, role=role, purpose=purpose)

    async def acall(self, messages: list[Message], *, role: str, purpose: str, model: str | None = None,
                    waited_s: float = 0.0) -> Completion:
        """:meth:`call` as a coroutine, for fan-outs on the LM client's event loop (a batch item that
        waited ``waited_s`` for its slot)."""
        remaining, call_id = self._before()
        model, site = self._route(purpose, model, waited_s)
        decision, keys = self._decide(messages, call_id, role=role, purpose=purpose, model=model, site=site)
        hit = self._answered(decision, keys, messages, purpose)
        claim = _UNCLAIMED if hit is not None else self._claim(keys[0])
        if claim.flying is not None:  # an identical call is in flight: its reply answers this one
            import asyncio  # a fan-out's call: the event loop is running, asyncio is loaded

            hit = self._joined(decision, keys[0], await asyncio.wrap_future(claim.flying), claim.started)
        if hit is not None:
            return self._done(hit, call_id, messages, role=role, purpose=purpose)
        try:
            completion = self._paid(await self.services.lm.acomplete(messages, role=role, model=model,
                                                                     timeout=remaining, site=site, decision=decision),
                                    keys[0])
        except LMError as exc:
            self._failed(exc, call_id, messages, role=role, purpose=purpose, model=model, key=keys[0])
            raise
        finally:
            self._unclaim(claim, keys[0])
        return self._done(completion, call_id, messages, role=role, purpose=purpose)

    def add(self, totals: Totals) -> None:
        """Count calls made for this agent elsewhere (a fan-out shard on another process) as its own."""
        with self._lock:
            self._totals[0] += totals.input_tokens
            self._totals[1] += totals.output_tokens
            self._totals[2] += totals.llm_calls

    def totals(self) -> Totals:
        """This agent's own tokens and calls so far."""
        with self._lock:
            return Totals(*self._totals)

    def _route(self, purpose: str, model: str | None, waited_s: float) -> tuple[str | None, CallSite]:
        """The group asked for (the agent's own, for its turns) and who calls, for the router."""
        own_turn = purpose in AGENT_TURNS
        site = CallSite(kind="agent" if own_turn else "query", depth=self.depth, waited_s=waited_s)
        return ((model or self.group) if own_turn else model), site

    def _before(self) -> tuple[float | None, str]:
        """Claim the call from the tree-wide budget (raises LimitReached); its timeout and id."""
        budget = self.services.budget
        budget.reserve_call()
        return budget.remaining_time(), uuid.uuid4().hex[:12]

    def _decide(self, messages: list[Message], call_id: str, *, role: str, purpose: str, model: str | None,
                site: CallSite) -> tuple[Decision, list[str]]:
        """Where the call goes, and its request key for each deployment it may go to (the chosen one first)."""
        lm = self.services.lm
        try:
            decision = lm.decide(messages, role=role, model=model, site=site)
        except LMError as exc:
            self._failed(exc, call_id, messages, role=role, purpose=purpose, model=model, key=None)
            raise
        digest, sampling = messages_digest(messages), lm.sampling()
        return decision, [request_key(deployment_identity(t), digest, sampling) for t in decision.candidates]

    def _answered(self, decision: Decision, keys: list[str], messages: list[Message],
                  purpose: str) -> Completion | None:
        """The call answered from a record (the decided deployment released), or ``None`` to send it."""
        records: CallRecords | None = self.services.records
        if records is None or not records.active:
            return None
        started = time.monotonic()
        hit = records.find(keys)
        if hit is None and not records.strict:
            return None
        self.services.lm.release(decision)
        if hit is None:
            self._diverge(records, keys[0], messages, purpose)
        assert hit is not None
        return _hit_completion(hit, decision, time.monotonic() - started)

    def _claim(self, key: str) -> _Claim:
        """With the cache on, whether this call sends ``key`` or waits for the identical call in flight."""
        records: CallRecords | None = self.services.records
        if records is None or not records.cache:
            return _UNCLAIMED
        flying = records.claim(key)
        return _Claim(flying, time.monotonic(), owner=flying is None)

    def _unclaim(self, claim: _Claim, key: str) -> None:
        """A call this caller claimed has ended: a reply was kept, else its waiters send their own."""
        if claim.owner and self.services.records is not None:
            self.services.records.drop(key)

    def _joined(self, decision: Decision, key: str, record: Recorded | None, started: float) -> Completion | None:
        """The reply of the identical call this one waited for (the decided deployment released), or ``None``
        when that call failed (this one is then sent)."""
        if record is None:
            return None
        self.services.lm.release(decision)
        return _hit_completion(Hit(key, record, "run"), decision, time.monotonic() - started)

    def _diverge(self, records: CallRecords, key: str, messages: list[Message], purpose: str) -> None:
        """A replay asked for a call it has no record of: stop the run, send nothing."""
        call = self.services.budget.usage().llm_calls
        text = " ".join(messages[-1]["content"].split())[:160] if messages else ""
        records.diverged(f"diverged at call {call} ({self.agent_id}, {purpose}): request {key[:12]} has no "
                         f"record; its last message begins {text!r}")
        self.services.budget.stop(DIVERGED)
        raise LimitReached(DIVERGED)

    def _paid(self, completion: Completion, key: str) -> Completion:
        """A call the provider answered: keyed, and kept for the run's later identical requests."""
        records: CallRecords | None = self.services.records
        if records is not None:
            records.keep(key, Recorded(completion.text, completion.model, self.services.run_id, completion.group,
                                       completion.deployment, completion.node))
        return dataclasses.replace(completion, request_key=key)

    def _failed(self, exc: LMError, call_id: str, messages: list[Message], *, role: str, purpose: str,
                model: str | None, key: str | None) -> None:
        self._emit(LMCalled, call_id=call_id, model=exc.model or model or self.services.lm.model_for(role),
                   role=role, purpose=purpose, ok=False, error=str(exc),
                   prompt_preview=messages[-1]["content"][:PREVIEW_CHARS], model_group=exc.group,
                   deployment=exc.deployment, route_reason=exc.route_reason, request_key=key)
        self.services.budget.check()  # a call cut off by the run's deadline is a timeout, not an error

    def _done(self, completion: Completion, call_id: str, messages: list[Message], *, role: str,
              purpose: str) -> Completion:
        if not completion.cache_hit:
            self.services.budget.record(completion.input_tokens, completion.output_tokens, completion.cost_usd)
        self.add(Totals(completion.input_tokens, completion.output_tokens, 1))
        self._emit(LMCalled, call_id=call_id, model=completion.model, role=role, purpose=purpose,
                   input_tokens=completion.input_tokens, output_tokens=completion.output_tokens,
                   cost_usd=completion.cost_usd, latency_s=completion.latency_s,
                   prompt_preview=messages[-1]["content"][:PREVIEW_CHARS],
                   response_preview=completion.text[:PREVIEW_CHARS], model_group=completion.group,
                   deployment=completion.deployment, node=completion.node, route_reason=completion.route_reason,
                   queue_s=completion.queue_s, request_key=completion.request_key, response=completion.text,
                   cache_hit=completion.cache_hit)
        return completion

    def _emit(self, event_type: type[LMCalled], **fields: object) -> None:
        self.services.emit(event_type(run_id=self.services.run_id, agent_id=self.agent_id,
                                      **fields))  # type: ignore[arg-type]  # LMCalled's fields, named by the callers


@dataclass(frozen=True, slots=True)
class _Claim:
    """Who sends a call no record answered: ``owner`` (it claimed the key) or a waiter on ``flying``."""

    flying: concurrent.futures.Future[Recorded | None] | None = None
    started: float = 0.0
    owner: bool = False


#: Not claimed: a record answered the call, or the cache is off.
_UNCLAIMED = _Claim()

_SCOPES = {"prior": "the run it repeats", "run": "an identical call of this run", "log": "run"}


def _hit_completion(hit: Hit, decision: Decision, elapsed: float) -> Completion:
    """The :class:`Completion` of a call a record answered: no tokens, no cost."""
    record = hit.record
    source = f"run {record.run_id}" if hit.scope == "log" else _SCOPES[hit.scope]
    return Completion(text=record.text, model=record.model, input_tokens=0, output_tokens=0, cost_usd=0.0,
                      latency_s=elapsed, group=record.group or decision.group,
                      deployment=record.deployment or decision.target.name, node=record.node,
                      route_reason=f"{decision.reason}; answered from {source}", request_key=hit.key,
                      cache_hit=True)
