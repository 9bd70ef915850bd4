"""Where one call goes: a group, then a deployment of it, and the reason, decided before the call.

Precedence (each decision carries its reason, recorded with the call):

1. **The model asks** for a group by name (``llm_query(p, model="heavy")``,
   ``rlm_query(..., model=...)``). A name that is not a group is an
   :class:`UnknownGroup` error the model sees.
2. **Role and depth**: the root agent's own calls, child agents' (by depth), sub-calls
   (``[routing]`` in the models file).
3. **The size guard** (applies to every choice, an asked one too): the prompt's tokens
   are counted (:mod:`rlm.routing.tokens`) against each deployment's window less the
   reply's room. If no deployment of the chosen group fits, the call goes to the group
   whose smallest fitting window is smallest; if none fits, :class:`ContextTooLarge`
   is raised before anything is sent, and the model sees it (split the chunk).
4. **Heavy rules** (``[routing.heavy]``): a sub-call whose prompt is over
   ``prompt_tokens`` (an agent's own turns keep their group as their history grows: the
   guard moves them only when they no longer fit), a batch over ``batch_size``
   (:meth:`ModelRouter.batch_group`), any call of an agent at ``depth`` or deeper: the
   call goes to the heavy group (unless the model asked for a group). Evaluated before
   the guard, which still applies.
5. **Inside the group**: the lowest ``order`` first; a deployment cooling down after a
   failure, or busy (``max_in_flight`` calls of this process on it), is skipped while
   another fits; among equals, the one with fewer calls in flight.

The hand-written part is only what litellm's Router cannot know before a call: the
prompt size against each window, the heavy rules, and this process's in-flight counts.
Retries, their back-off, cooldowns after repeated failures and the fall-back to the
next ``order`` once the first attempt failed are litellm's (:mod:`rlm.lm`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from rlm.errors import LMError
from rlm.routing.table import RouteTable, Target
from rlm.routing.tokens import BYTES, PromptSize

__all__ = ["CallSite", "Decision", "ModelRouter", "DeploymentState", "RuledGroup", "UnknownGroup",
           "ContextTooLarge"]


class UnknownGroup(LMError):
    """The model asked for a model group that does not exist."""


class ContextTooLarge(LMError):
    """No deployment of any group can take the prompt with room for its reply; nothing was sent."""


class RuledGroup(str):
    """A group name chosen by a rule on the caller's side (a big batch), with the rule's reason.

    It is a ``str`` so that it travels wherever a model name does (to fan-out helpers on other
    processes included); :class:`ModelRouter` records its reason instead of "asked for".
    """

    reason: str

    def __new__(cls, name: str, reason: str) -> RuledGroup:
        self = super().__new__(cls, name)
        self.reason = reason
        return self

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (RuledGroup, (str(self), self.reason))


@dataclass(frozen=True, slots=True)
class CallSite:
    """Who makes a call: an agent's own turn (``"agent"``) or a sub-call (``"query"``), at which depth,
    after waiting how long for a slot (``waited_s``: a batch item's wait for its turn)."""

    kind: str = "query"
    depth: int = 0
    waited_s: float = 0.0


ROOT_SITE = CallSite(kind="agent")
QUERY_SITE = CallSite()


@dataclass(frozen=True, slots=True)
class Decision:
    """A call's group, its deployment, the group's other fitting deployments (in preference order) and why.

    ``turn``: the caller said the call is an agent's own turn (``site.kind == "agent"``), whose reply
    must be code: only such calls carry the deployment's profile parameters (:attr:`params`).
    """

    group: str
    target: Target
    candidates: tuple[Target, ...]
    reason: str
    turn: bool = False

    @property
    def params(self) -> dict[str, Any]:
        """Request fields the model profile adds to this call (stop sequences, llama.cpp's grammar)."""
        return self.target.turn_params if self.turn else {}


class DeploymentState:
    """This process's calls in flight per deployment and the deployments cooling down after a failure."""

    def __init__(self, cooldown_s: float = 5.0) -> None:
        self.cooldown_s = cooldown_s
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}
        self._cool_until: dict[str, float] = {}

    def started(self, name: str) -> None:
        with self._lock:
            self._in_flight[name] = self._in_flight.get(name, 0) + 1

    def finished(self, name: str, ok: bool) -> None:
        with self._lock:
            self._in_flight[name] = self._in_flight.get(name, 1) - 1
            if ok:
                self._cool_until.pop(name, None)

    def failed(self, name: str) -> None:
        """``name`` failed in a way another attempt elsewhere could fix: skip it for a while."""
        with self._lock:
            self._cool_until[name] = time.monotonic() + self.cooldown_s

    def in_flight(self, name: str) -> int:
        return self._in_flight.get(name, 0)

    def cooling(self, name: str, now: float) -> bool:
        until = self._cool_until.get(name)
        return until is not None and until > now

    def snapshot(self) -> dict[str, dict[str, float]]:
        """In-flight counts and seconds of cooldown left, by deployment (for ``rlm models status``)."""
        now = time.monotonic()
        with self._lock:
            names = set(self._in_flight) | set(self._cool_until)
            return {n: {"in_flight": self._in_flight.get(n, 0),
                        "cooldown_s": max(0.0, self._cool_until.get(n, now) - now)} for n in names}


class ModelRouter:
    """Decides each call's group and deployment (see the module docstring)."""

    def __init__(self, table: RouteTable, state: DeploymentState | None = None) -> None:
        self.table = table
        self.state = state or DeploymentState()
        self.routing = table.spec.routing
        self._lock = threading.Lock()

    def decide(self, messages: list[dict[str, str]], *, role: str = "root", ask: str | None = None,
               site: CallSite | None = None) -> Decision:
        """The call's :class:`Decision`; raises :class:`UnknownGroup` or :class:`ContextTooLarge`.

        The chosen deployment counts the call as in flight from here: the caller reports its end
        with ``state.finished(decision.target.name, ok)``.
        """
        turn = site is not None and site.kind == "agent"  # a bare call (e.g. a benchmark's) answers in prose
        site = site or (ROOT_SITE if role == "root" else QUERY_SITE)
        size = PromptSize(messages)
        group, reason = self._group(ask, role, site, size)
        candidates = self._fitting(group, size)
        if not candidates:
            group, candidates, moved = self._elsewhere(group, size)
            reason = f"{reason}; {moved}"
        with self._lock:  # picking by in-flight counts and counting the pick are one step
            target, skipped = self._pick(candidates)
            self.state.started(target.name)
        if skipped:
            reason = f"{reason}; {skipped}"
        ordered = (target, *(t for t in candidates if t is not target))
        return Decision(group, target, ordered, reason, turn)

    def planned_group(self, site: CallSite, ask: str | None = None) -> str:
        """The group a call from ``site`` goes to before its prompt is measured (size guard and
        prompt-size rule aside): what an agent's prompts are sized for."""
        return self._group(ask, "root" if site.kind == "agent" else "sub", site, PromptSize([]))[0]

    # -- 1, 2 and 4: the group ---------------------------------------------------------------
    def _group(self, ask: str | None, role: str, site: CallSite, size: PromptSize) -> tuple[str, str]:
        if ask:
            return self._asked(ask), getattr(ask, "reason", f"asked for {ask}")
        group, reason = self._default(role, site)
        heavy = self._heavy_reason(site, size)
        if heavy is not None and self.routing.heavy.group in self.table.groups:
            return self.routing.heavy.group, heavy
        return self.table.resolve(group), reason

    def _asked(self, ask: str) -> str:
        if ask in self.table.groups:
            return str(ask)
        raise UnknownGroup(f"there is no model group {ask!r}; ask for one of: {', '.join(self.table.groups)} "
                           "(or leave model= out)", model=str(ask))

    def _default(self, role: str, site: CallSite) -> tuple[str, str]:
        if site.kind != "agent":
            return self.routing.llm_query, "sub-call"
        if site.depth == 0:
            return self.routing.root, "root agent"
        by_depth = dict(self.routing.depth)
        return by_depth.get(site.depth, self.routing.children), f"child agent at depth {site.depth}"

    def _heavy_reason(self, site: CallSite, size: PromptSize) -> str | None:
        rules = self.routing.heavy
        if rules.depth is not None and site.depth >= rules.depth:
            return f"heavy: depth {site.depth} >= {rules.depth}"
        if rules.prompt_tokens is not None and site.kind != "agent" and size.over(rules.prompt_tokens, "o200k_base"):
            return f"heavy: prompt ~{size.estimate('o200k_base'):,} tokens > {rules.prompt_tokens:,}"
        return None

    def batch_group(self, size: int) -> RuledGroup | None:
        """The heavy group, with its reason, for a batch of ``size`` sub-calls over ``batch_size``; else ``None``.

        Decided once for the whole batch by the caller (:mod:`rlm.subcalls`), since its
        shards may run on other processes, each seeing only its own part.
        """
        rules = self.routing.heavy
        if rules.batch_size is None or size <= rules.batch_size or rules.group not in self.table.groups:
            return None
        return RuledGroup(rules.group, f"heavy: batch of {size} > {rules.batch_size}")

    # -- 3: the size guard ---------------------------------------------------------------------
    def _fitting(self, group: str, size: PromptSize) -> list[Target]:
        return [t for t in self.table.groups[group] if t.room is None or size.fits(t.room, t.tokenizer)]

    def _elsewhere(self, group: str, size: PromptSize) -> tuple[str, list[Target], str]:
        """The group with the smallest window that fits, or :class:`ContextTooLarge`."""
        options = []
        for name in self.table.groups:
            fitting = self._fitting(name, size) if name != group else []
            if fitting:
                smallest = min(t.window if t.window is not None else float("inf") for t in fitting)
                options.append((smallest, name, fitting))
        measured = _size_text(size, self.table.groups[group])
        widest = max((t.window or 0 for t in self.table.groups[group]), default=0)
        if not options:
            largest = max((t.window or 0 for t in self.table.targets()), default=0)
            raise ContextTooLarge(
                f"the prompt ({measured} with room for the reply) fits no model: the largest window is "
                f"{largest:,} tokens; split it into smaller pieces and call again", model=group)
        _, name, fitting = min(options, key=lambda option: (option[0], option[1]))
        return name, fitting, f"{measured} do not fit {group} (window {widest:,}): moved to {name}"

    # -- 5: inside the group -------------------------------------------------------------------
    def _pick(self, candidates: list[Target]) -> tuple[Target, str]:
        now = time.monotonic()
        state = self.state
        cooling = [t for t in candidates if state.cooling(t.name, now)]
        busy = [t for t in candidates if t.deployment.max_in_flight is not None
                and state.in_flight(t.name) >= t.deployment.max_in_flight]
        ready = [t for t in candidates if t not in cooling and t not in busy]
        pool = ready or [t for t in candidates if t not in cooling] or candidates
        best_order = min(t.order for t in pool)
        target = min((t for t in pool if t.order == best_order), key=lambda t: state.in_flight(t.name))
        skipped = [f"{t.name} cooling down" for t in cooling if t.order <= target.order and t is not target]
        skipped += [f"{t.name} busy ({state.in_flight(t.name)} in flight)" for t in busy
                    if t.order <= target.order and t is not target and t not in cooling]
        return target, "; ".join(skipped)


def _size_text(size: PromptSize, targets: tuple[Target, ...]) -> str:
    """The prompt's size for a message: tokens under the group's first real tokenizer, else bytes."""
    name = next((t.tokenizer for t in targets if t.tokenizer != BYTES), BYTES)
    return f"~{size.estimate(name):,} tokens" if name != BYTES else f"{size.bytes:,} bytes"
