"""Recorded model calls, keyed by their request: the sub-call cache, replay, resume and fork in one mechanism.

Every model call gets a **request key**: the SHA-256 of a canonical JSON of what
determines its reply, computed before anything is sent (:meth:`rlm.lm.LM.decide`
tells where the call would go):

* the deployment the router chose: its name, model string and ``api_base``;
* the messages (the SHA-256 of their canonical JSON: role and content of each),
  less the count of LM calls left that an observation's footer shows
  (:func:`rlm.prompts.without_timing`): while agents run beside each other that
  count depends on how their calls interleave, and nothing else in a request does;
* the sampling settings sent with them (``temperature``, ``max_tokens``; tools, if
  a call ever sends any).

Canonical JSON is ``json.dumps(value, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` encoded as UTF-8. The key holds no run id, agent id or time:
the same request in another run has the same key.

:class:`CallRecords` answers a call from records before the provider is asked, in
this order:

1. **the prior run's records** (replay, resume, fork, rebuilding a session): every
   successful call the prior run made, in the order it made them, one record
   used per call (a request made twice there is answered twice, each time with
   its own reply). In a replay (``strict``) a request without a record is a
   divergence: :class:`ReplayDiverged`, and nothing is sent;
2. **this run's own calls** (in memory), when the cache is on;
3. **earlier runs** in the run log (a :class:`Lookup`), when the cache is on;
4. **an identical call in flight** in this run, when the cache is on: the first
   caller of a key sends it (:meth:`CallRecords.claim`), the others wait for its
   reply (a batched fan-out that repeats a prompt pays for it once); if that call
   fails, each of them sends its own.

A call answered so is a *cache hit*: it takes its place in the run's call budget
(``max_llm_calls`` counts calls, paid or not, so the observation footers of a
replay are the ones the model saw), costs no tokens and no money, and is recorded
as an ``LMCalled`` event with ``cache_hit=True``, its key and the full response.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rlm.errors import RLMError
from rlm.prompts import without_timing
from rlm.routing.table import Target

__all__ = ["Recorded", "Hit", "Lookup", "CallRecords", "ReplayDiverged", "request_key", "messages_digest",
           "canonical_json", "deployment_identity", "DIVERGED"]

#: The status (and limit name) of a replay stopped by a request it has no record of.
DIVERGED = "diverged"


class ReplayDiverged(RLMError):
    """A replay made a request its run's records do not hold (its cells printed something else)."""


def canonical_json(value: Any) -> bytes:
    """The canonical JSON of ``value`` (see the module docstring)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace")


def messages_digest(messages: Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 of the canonical JSON of ``messages`` (role and content of each, without the calls-left count)."""
    return hashlib.sha256(canonical_json([{"role": m.get("role"), "content": without_timing(str(m.get("content")))}
                                          for m in messages])).hexdigest()


def request_key(deployment: Mapping[str, Any], digest: str, sampling: Mapping[str, Any]) -> str:
    """The request key of a call to ``deployment`` (name, model, api_base) of messages whose digest is ``digest``."""
    return hashlib.sha256(canonical_json({"deployment": dict(deployment), "messages": digest,
                                          "sampling": dict(sampling)})).hexdigest()


def deployment_identity(target: Target) -> dict[str, Any]:
    """What names a deployment in a request key: its name, model string and ``api_base``."""
    return {"name": target.name, "model": target.deployment.model, "api_base": target.deployment.api_base}


@dataclass(frozen=True, slots=True)
class Recorded:
    """The reply a recorded call got, and where it was recorded."""

    text: str
    model: str
    run_id: str | None = None
    group: str | None = None
    deployment: str | None = None
    node: str | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    """A call answered from a record: its key, the record, and which records answered (``prior``,
    ``run``, ``log``)."""

    key: str
    record: Recorded
    scope: str


class Lookup(Protocol):
    """Earlier runs' calls by request key (the run log): :func:`rlm.runlog.recorded.open_lookup`."""

    def find(self, key: str) -> Recorded | None:
        """A successful call recorded under ``key``, or ``None``."""
        ...

    def close(self) -> None:
        """Release what the lookup holds."""
        ...


class CallRecords:
    """Where a run's calls are answered from before the provider (see the module docstring).

    Args:
        prior: ``(key, record)`` of the prior run's successful calls, in the order made.
        strict: a request without a prior record is a divergence (a replay), not a live call.
        cache: answer repeated requests from this run's own calls and from ``lookup``.
        lookup: earlier runs' calls (only asked when ``cache`` is on).
    """

    def __init__(self, *, prior: Iterable[tuple[str, Recorded]] = (), strict: bool = False, cache: bool = False,
                 lookup: Lookup | None = None) -> None:
        self.strict = strict
        self.cache = cache
        self.lookup = lookup if cache else None
        self._prior: dict[str, collections.deque[Recorded]] = {}
        for key, record in prior:
            self._prior.setdefault(key, collections.deque()).append(record)
        self._own: dict[str, Recorded] = {}
        self._flying: dict[str, concurrent.futures.Future[Recorded | None]] = {}
        self._lock = threading.Lock()
        self.divergence: str | None = None

    @property
    def active(self) -> bool:
        """Whether any call could be answered from a record (else calls go straight to the provider)."""
        return bool(self._prior) or self.strict or self.cache

    def find(self, keys: Sequence[str]) -> Hit | None:
        """The record answering the first of ``keys`` that has one: the prior run's first (each
        used once), then, with the cache on, this run's and the run log's (``keys[0]`` only: the
        deployment the router chose)."""
        with self._lock:
            for key in keys:
                queue = self._prior.get(key)
                if queue:
                    return Hit(key, queue.popleft(), "prior")
            if not self.cache or not keys:
                return None
            own = self._own.get(keys[0])
        if own is not None:
            return Hit(keys[0], own, "run")
        found = self.lookup.find(keys[0]) if self.lookup is not None else None
        return Hit(keys[0], found, "log") if found is not None else None

    def claim(self, key: str) -> concurrent.futures.Future[Recorded | None] | None:
        """Who sends a request no record answered: ``None``, this caller (with the cache on it must then
        :meth:`keep` or :meth:`drop` ``key``), or the future reply of the identical call already in flight
        (its record, or ``None`` when it failed)."""
        if not self.cache:
            return None
        with self._lock:
            own = self._own.get(key)
            if own is not None:  # it was answered since find() looked
                done: concurrent.futures.Future[Recorded | None] = concurrent.futures.Future()
                done.set_result(own)
                return done
            flying = self._flying.get(key)
            if flying is None:
                self._flying[key] = concurrent.futures.Future()
            return flying

    def keep(self, key: str, record: Recorded) -> None:
        """Remember a call this run paid for (with the cache on, a repeat of it is answered from it)."""
        if self.cache:
            with self._lock:
                self._own.setdefault(key, record)
                flying = self._flying.pop(key, None)
            if flying is not None:
                flying.set_result(record)

    def drop(self, key: str) -> None:
        """A claimed call ended without a reply to keep: whoever waits for it sends its own."""
        with self._lock:
            flying = self._flying.pop(key, None)
        if flying is not None:
            flying.set_result(None)

    def diverged(self, detail: str) -> ReplayDiverged:
        """Note the first divergence of a replay and return the error saying where."""
        with self._lock:
            if self.divergence is None:
                self.divergence = detail
        return ReplayDiverged(detail)

    def unused(self) -> int:
        """Prior records no call of this run asked for (a replay that used them all has 0)."""
        with self._lock:
            return sum(len(queue) for queue in self._prior.values())

    def close(self) -> None:
        if self.lookup is not None:
            self.lookup.close()
