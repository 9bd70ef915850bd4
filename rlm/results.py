"""How an agent and a run ended: :class:`AgentResult` and :class:`RunResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlm.budget import Usage

__all__ = ["AgentResult", "RunResult"]


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
class RunResult:
    """The outcome of a run. ``cost_usd`` is ``None`` when any call's price was unknown."""

    answer: str | None
    run_id: str
    status: str
    usage: Usage
    iterations: int
    depth_reached: int
    duration_s: float
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def cost_usd(self) -> float | None:
        return self.usage.cost_usd

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "run_id": self.run_id,
            "status": self.status,
            "usage": self.usage.to_dict(),
            "cost_usd": self.cost_usd,
            "iterations": self.iterations,
            "depth_reached": self.depth_reached,
            "duration_s": round(self.duration_s, 3),
            "error": self.error,
            "warnings": self.warnings,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        """The inverse of :meth:`to_dict` (e.g. a result sent by the service)."""
        usage = data.get("usage") or {}
        return cls(answer=data.get("answer"), run_id=data.get("run_id") or "", status=data.get("status") or "error",
                   usage=Usage(input_tokens=int(usage.get("input_tokens", 0)),
                               output_tokens=int(usage.get("output_tokens", 0)),
                               llm_calls=int(usage.get("llm_calls", 0)), cost_usd=data.get("cost_usd"),
                               cache_hits=int(usage.get("cache_hits", 0))),
                   iterations=int(data.get("iterations") or 0), depth_reached=int(data.get("depth_reached") or 0),
                   duration_s=float(data.get("duration_s") or 0.0), error=data.get("error"),
                   warnings=list(data.get("warnings") or []))
