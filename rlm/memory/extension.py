"""Swarm memory as a run extension: ``note``/``recall``/``memories`` in every REPL, memories in the prompt.

The runner builds :class:`MemoryExtension` when ``RLMConfig.memory_namespace``
is set (see :func:`rlm.runner.default_extensions`). ``setup`` opens the store
and contributes the three host functions, the namespace's memories block for
the root's prompt, and an observer that records the run's trajectory;
``finish`` reflects on the run (``config.reflect``: ``always``, ``success`` —
the default, when the run's status is ``ok`` — or ``never``); ``close`` closes
the store if the extension opened it.

A note is written to the store at once, so every agent of the run (siblings,
parent, children; they share the store in-process, or through the memory
actor in a Ray run) can ``recall`` it immediately. Note ids are
``<run>/<agent>/n<k>``: unique and stable per call.
"""

from __future__ import annotations

import itertools
import logging
import threading
import uuid
from typing import Any

from rlm.config import RLMConfig
from rlm.errors import HostCallError
from rlm.events import LMCalled
from rlm.extensions import Contribution
from rlm.lm import Completion
from rlm.memory.backend import MemoryBackend
from rlm.memory.prompt import MEMORIES_DOC, NOTE_DOC, RECALL_DOC, MemoryBlock, render_block
from rlm.memory.records import KINDS, Entry, MemoryStoreError, Provenance, check_namespace
from rlm.memory.reflect import Outcome, ReflectionReport, Reflector
from rlm.memory.store import MemoryStore, memory_path
from rlm.memory.trajectory import TrajectoryRecorder
from rlm.results import RunResult
from rlm.services import AgentLike, HostFunction, RunServices

__all__ = ["MemoryExtension", "MemoryBackend", "REFLECT_MODES"]

log = logging.getLogger(__name__)

REFLECT_MODES = ("always", "success", "never")
DEFAULT_BUDGET_TOKENS = 800


def budget_tokens(config: RLMConfig) -> int:
    return int(getattr(config, "memory_budget_tokens", DEFAULT_BUDGET_TOKENS))


class MemoryExtension:
    """The run extension; ``store`` may be given (e.g. a Ray actor client), else the local file is opened."""

    def __init__(self, config: RLMConfig, store: MemoryBackend | None = None) -> None:
        self.config = config
        self.namespace = check_namespace(config.memory_namespace)
        if config.reflect not in REFLECT_MODES:
            raise MemoryStoreError(f"reflect must be one of {', '.join(REFLECT_MODES)}, not {config.reflect!r}")
        self._store = store
        self._owns_store = store is None
        self._note_ids = itertools.count(1)
        self._note_lock = threading.Lock()
        self.trajectory = TrajectoryRecorder()
        self.question = ""
        self.block: MemoryBlock | None = None
        self.report: ReflectionReport | None = None

    @property
    def store(self) -> MemoryBackend:
        if self._store is None:
            self._store = MemoryStore(memory_path(self.config.home))
        return self._store

    # -- RunExtension -------------------------------------------------------------
    def setup(self, run_id: str, question: str) -> Contribution:
        self.question = question
        store = self.store
        functions = (HostFunction("note", ("text", "tags", "span"), NOTE_DOC, self._note),
                     HostFunction("recall", ("query", "k", "kind", "tags"), RECALL_DOC, self._recall),
                     HostFunction("memories", (), MEMORIES_DOC, lambda agent, args: self._memories()))
        memories = store.list(self.namespace, kind="memory", include_quarantined=False)
        docs = len(store.list(self.namespace, kind="doc", include_quarantined=False))
        self.block = render_block(self.namespace, memories, docs=docs, budget_tokens=budget_tokens(self.config),
                                  semantic=store.semantic)
        return Contribution(host_functions=functions, root_prompt_extra=self.block.text, observer=self.trajectory)

    def finish(self, services: RunServices, result: RunResult) -> None:
        mode = self.config.reflect
        if mode == "never" or (mode == "success" and result.status != "ok"):
            return
        outcome = Outcome(status=result.status, answer=result.answer, succeeded=result.status == "ok")
        self.report = self.reflect(services, outcome)

    def close(self) -> None:
        if self._owns_store and self._store is not None:
            self._store.close()
            self._store = None

    def reflect(self, services: RunServices, outcome: Outcome) -> ReflectionReport:
        """Run one reflection with this run's trajectory; its LM calls are charged and emitted as events."""

        def on_call(completion: Completion, purpose: str) -> None:
            services.budget.record(completion.input_tokens, completion.output_tokens, completion.cost_usd)
            services.emit(LMCalled(run_id=services.run_id, call_id=uuid.uuid4().hex[:12], model=completion.model,
                                   role="root", purpose=purpose, input_tokens=completion.input_tokens,
                                   output_tokens=completion.output_tokens, cost_usd=completion.cost_usd,
                                   latency_s=completion.latency_s, response_preview=completion.text[:2000]))

        reflector = Reflector(self.store, self.namespace, services.lm, run_id=services.run_id,
                              budget_tokens=budget_tokens(self.config), on_call=on_call)
        try:
            return reflector.reflect(self.question, self.trajectory.summary(), outcome)
        except MemoryStoreError as exc:  # reflection must never take a finished run down
            log.warning("memory reflection for run %s failed: %s", services.run_id, exc)
            return ReflectionReport(error=str(exc))

    # -- host functions (run on agents' threads) -------------------------------------
    def _note(self, agent: AgentLike, args: dict[str, Any]) -> str:
        services = agent.services
        text, tags, span = args.get("text"), args.get("tags"), args.get("span")
        if not isinstance(text, str) or not text.strip():
            raise HostCallError("note: text must be a non-empty str")
        if span is not None and not (isinstance(span, list) and len(span) == 2
                                     and all(isinstance(i, int) for i in span)):
            raise HostCallError("note: span must be None or [start, end] character offsets into context")
        with self._note_lock:
            entry_id = f"{services.run_id}/{agent.agent_id}/n{next(self._note_ids)}"
        provenance = Provenance(source="agent", run_id=services.run_id, agent_id=agent.agent_id, depth=agent.depth,
                                span=(span[0], span[1]) if span else None)
        try:
            self.store.add(self.namespace, text, kind="note", tags=tags or (), provenance=provenance,
                           entry_id=entry_id)
        except MemoryStoreError as exc:
            raise HostCallError(f"note: {exc}") from None
        return entry_id

    def _recall(self, agent: AgentLike, args: dict[str, Any]) -> list[dict[str, Any]]:
        services = agent.services
        query, k, kind, tags = args.get("query"), args.get("k", 5), args.get("kind"), args.get("tags")
        if not isinstance(query, str):
            raise HostCallError("recall: the search query must be a non-empty str")
        if kind is not None and kind not in KINDS:
            raise HostCallError(f"recall: kind must be None or one of {', '.join(KINDS)}")
        try:
            hits = self.store.search(self.namespace, query, k=5 if k is None else k,
                                     kinds=[kind] if kind else None, tags=tags, run_id=services.run_id)
        except MemoryStoreError as exc:
            raise HostCallError(f"recall: {exc}") from None
        return [{**_public(hit.entry, services.run_id), "score": round(hit.score, 6)} for hit in hits]

    def _memories(self) -> list[dict[str, Any]]:
        entries = self.store.list(self.namespace, kind="memory", include_quarantined=False)
        return [_public(e, None) for e in entries]


def _public(entry: Entry, run_id: str | None) -> dict[str, Any]:
    """An entry as the model sees it: plain JSON, with its origin spelled out."""
    p = entry.provenance
    origin = p.label().replace(f"in run {run_id}", "in this run") if run_id else p.label()
    return {"id": entry.id, "kind": entry.kind, "title": entry.title, "text": entry.text, "tags": list(entry.tags),
            "origin": origin, "provenance": p.to_dict()}
