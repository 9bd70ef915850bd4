"""The read side of the run log: typed records of runs, agents, model calls, cells and events.

:class:`RunQueries` answers from the database and, for runs that journals hold
events of which the database lacks (a run going on in another process, see
:mod:`rlm.runlog.live`), from those journals merged over it. Every method takes a
run id or a unique prefix of one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm.errors import RunLogError
from rlm.events import Event, event_from_dict
from rlm.runlog.live import LiveRuns, gather
from rlm.runlog.schema import AGENTS, CELLS, LM_CALLS, RUNS, AgentRecord, CellRecord, LMCallRecord, RunSummary, Table

__all__ = ["RunQueries", "DeploymentTotals"]

log = logging.getLogger("rlm.runlog")

_SUMMARY_SELECT = (
    f"SELECT {RUNS.select_list('r')}, (SELECT count(*) FROM agents a WHERE a.run_id = r.run_id) AS agents FROM runs r"
)
_NEWEST_FIRST = "ORDER BY started_at DESC NULLS LAST, run_id"
#: How each table's rows of one run are ordered.
_ORDER = {
    AGENTS.name: "started_at NULLS LAST, agent_id",
    LM_CALLS.name: "ts, call_id",
    CELLS.name: "ts, agent_id, iteration, cell_index",
}


@dataclass(frozen=True, slots=True)
class DeploymentTotals:
    """One deployment's model calls over the runs since some time (``rlm models``).

    ``cost_usd`` sums the calls whose price was known; ``priced_calls`` says how many those were.
    """

    deployment: str
    groups: tuple[str, ...]
    calls: int
    failed: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    priced_calls: int
    latency_s: float
    runs: int

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


_DEPLOYMENT_TOTALS = (
    "SELECT deployment, list(DISTINCT model_group ORDER BY model_group), count(*), count(*) FILTER (WHERE NOT ok), "
    "coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), coalesce(sum(cost_usd), 0), count(cost_usd), "
    "coalesce(sum(latency_s), 0), count(DISTINCT run_id) FROM lm_calls WHERE deployment IS NOT NULL AND ts >= ? "
    "GROUP BY deployment ORDER BY count(*) DESC, deployment"
)


def _newest_first(summary: RunSummary) -> tuple[bool, float, str]:
    """The sort key of :data:`_NEWEST_FIRST` in Python."""
    return (summary.started_at is None, -(summary.started_at or 0.0), summary.run_id)


class RunQueries:
    """Queries over a run log; a subclass provides the database (:meth:`_query`) and its file (``path``)."""

    path: Path

    def _query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` from the database, after everything recorded here is written."""
        raise NotImplementedError

    def _own_journal(self) -> Path | None:
        """This log's own journal, whose events :meth:`_query` already sees (not merged twice)."""
        return None

    @contextmanager
    def _live(self) -> Iterator[LiveRuns | None]:
        """The runs journals hold unstored events of, for the duration of one query."""
        live = gather(self.path, lambda sql, params: self._query(sql, params), skip=self._own_journal())
        try:
            yield live
        finally:
            if live is not None:
                live.close()

    def _rows(self, live: LiveRuns | None, run_id: str, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """Rows about one run: from the merged journals if they hold some of it, else from the database."""
        if live is not None and run_id in live.run_ids:
            return live.query(sql, params)
        return self._query(sql, params)

    # -- runs -----------------------------------------------------------------

    def resolve_run_id(self, run_id: str) -> str:
        """Return the full run id that equals or uniquely starts with ``run_id``.

        Raises:
            RunLogError: no run matches, or the prefix matches several runs.
        """
        with self._live() as live:
            return self._resolve(live, run_id)

    def _resolve(self, live: LiveRuns | None, run_id: str) -> str:
        if not run_id:
            raise RunLogError("empty run id")
        exact = "SELECT run_id FROM runs WHERE run_id = ?"
        if self._query(exact, [run_id]) or (live is not None and live.query(exact, [run_id])):
            return run_id
        prefix = f"SELECT run_id FROM runs WHERE starts_with(run_id, ?) {_NEWEST_FIRST} LIMIT 6"
        found = [row[0] for row in self._query(prefix, [run_id])]
        if live is not None:
            found += [row[0] for row in live.query(prefix, [run_id]) if row[0] not in found]
        if not found:
            raise RunLogError(f"no run with id {run_id!r} in {self.path}")
        if len(found) > 1:
            shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
            raise RunLogError(f"run id prefix {run_id!r} is ambiguous: it matches {shown}; give more characters")
        return str(found[0])

    def list_runs(self, limit: int = 50) -> list[RunSummary]:
        """The ``limit`` most recently started runs, newest first (runs in progress elsewhere included)."""
        with self._live() as live:
            skip = sorted(live.run_ids) if live is not None else []
            rows = self._query(f"{_SUMMARY_SELECT} WHERE NOT list_contains(?, run_id) {_NEWEST_FIRST} LIMIT ?",
                               [skip, limit])
            if live is not None:
                rows += live.query(f"{_SUMMARY_SELECT} {_NEWEST_FIRST} LIMIT ?", [limit])
        summaries = [RUNS.record_from_row(row[:-1], agents=row[-1]) for row in rows]
        return sorted(summaries, key=_newest_first)[:limit]

    def get_run(self, run_id: str) -> RunSummary:
        """The run whose id is ``run_id`` or uniquely starts with it.

        Raises:
            RunLogError: unknown or ambiguous id.
        """
        with self._live() as live:
            full_id = self._resolve(live, run_id)
            row = self._rows(live, full_id, f"{_SUMMARY_SELECT} WHERE run_id = ?", [full_id])[0]
        summary: RunSummary = RUNS.record_from_row(row[:-1], agents=row[-1])
        return summary

    # -- what happened in a run -----------------------------------------------

    def events(self, run_id: str) -> list[Event]:
        """Every event of a run (id or unique prefix) in the order recorded.

        Events of a type this version of rlm does not know are skipped.

        Raises:
            RunLogError: unknown or ambiguous id.
        """
        with self._live() as live:
            full_id = self._resolve(live, run_id)
            rows = self._rows(live, full_id, "SELECT payload FROM events WHERE run_id = ? ORDER BY seq", [full_id])
        events: list[Event] = []
        for (payload,) in rows:
            try:
                events.append(event_from_dict(json.loads(payload)))
            except (KeyError, TypeError) as exc:
                log.debug("run log %s: skipping unreadable event %.200s (%s)", self.path, payload, exc)
        return events

    def agents(self, run_id: str) -> list[AgentRecord]:
        """The agents of a run, in the order they started."""
        return self._records(AGENTS, run_id)

    def lm_calls(self, run_id: str) -> list[LMCallRecord]:
        """The model calls of a run (every agent's), in time order."""
        return self._records(LM_CALLS, run_id)

    def deployment_totals(self, since: float = 0.0) -> list[DeploymentTotals]:
        """Model calls per deployment over the calls recorded since ``since`` (UNIX seconds), busiest first."""
        rows = self._query(_DEPLOYMENT_TOTALS, [since])
        return [DeploymentTotals(row[0], tuple(g for g in row[1] if g), *row[2:]) for row in rows]

    def cells(self, run_id: str) -> list[CellRecord]:
        """The code cells run in a run's sandboxes (every agent's), in time order."""
        return self._records(CELLS, run_id)

    def _records(self, table: Table, run_id: str) -> list[Any]:
        with self._live() as live:
            full_id = self._resolve(live, run_id)
            sql = f"SELECT {table.select_list()} FROM {table.name} WHERE run_id = ? ORDER BY {_ORDER[table.name]}"
            rows = self._rows(live, full_id, sql, [full_id])
        return [table.record_from_row(row) for row in rows]
