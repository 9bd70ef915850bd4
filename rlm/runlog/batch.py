"""Turning recorded events into one DuckDB transaction: which rows each event adds or updates.

Every event becomes a row of ``events``; ``RunStarted``, ``AgentStarted``,
``LMCalled`` and ``CellExecuted`` also insert a row of their table, and
``RunFinished`` / ``AgentFinished`` update the row their start inserted (or
insert a minimal one first when the start is missing). Column lists and SQL come
from :mod:`rlm.runlog.schema`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rlm.events import AgentFinished, AgentStarted, CellExecuted, Event, LMCalled, RunFinished, RunStarted
from rlm.runlog.journal import Entry, json_text
from rlm.runlog.schema import AGENTS, CELLS, EVENTS, LM_CALLS, RUNS, Table

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection as Connection

__all__ = ["Batch", "Update", "insert_rows", "plan", "write_batch"]

#: The order a batch inserts in.
INSERT_ORDER: tuple[Table, ...] = (EVENTS, RUNS, AGENTS, LM_CALLS, CELLS)
#: Columns a finishing event sets (from the event's fields of the same name; ``finished_at`` is its ``ts``).
_RUN_FINISH = ("status", "answer", "input_tokens", "output_tokens", "llm_calls", "cost_usd", "iterations",
               "depth_reached", "duration_s", "error", "cache_hits")  # fmt: skip
_AGENT_FINISH = ("status", "answer", "iterations", "input_tokens", "output_tokens", "llm_calls", "duration_s", "error")
#: Tables whose start rows are inserted with ``OR IGNORE`` (a replayed start must not fail the batch).
_START_TABLES = frozenset({RUNS.name, AGENTS.name})


@dataclass
class Update:
    """A finishing event: UPDATE its row, or INSERT a minimal one first if missing."""

    table: Table
    values: dict[str, Any]
    keys: dict[str, Any]

    @property
    def sql(self) -> str:
        return self.table.update_sql(tuple(self.values), tuple(self.keys))

    @property
    def params(self) -> list[Any]:
        return [*self.values.values(), *self.keys.values()]


@dataclass
class Batch:
    """What one transaction writes: rows per table, then updates in event order.

    A finish whose start is in the same batch is folded into the start's row
    (``finish``): in a burst of short-lived agents that saves an UPDATE per agent.
    """

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    updates: list[Update] = field(default_factory=list)
    _started: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = field(default_factory=dict)

    def add_row(self, table: Table, row: dict[str, Any]) -> None:
        self.rows.setdefault(table.name, []).append(row)

    def start(self, table: Table, row: dict[str, Any], keys: tuple[str, ...]) -> None:
        self.add_row(table, row)
        self._started[(table.name, tuple(row[k] for k in keys))] = row

    def finish(self, table: Table, values: dict[str, Any], keys: dict[str, Any]) -> None:
        row = self._started.get((table.name, tuple(keys.values())))
        if row is not None:
            row.update(values)
        else:
            self.updates.append(Update(table, values, keys))


def _event_row(seq: int, event: Event, payload: str) -> dict[str, Any]:
    return {
        "run_id": event.run_id,
        "seq": seq,
        "ts": event.ts,
        "agent_id": event.agent_id,
        "type": type(event).__name__,
        "payload": payload,
    }


def _plan_run_started(batch: Batch, e: RunStarted) -> None:
    row = {"run_id": e.run_id, "started_at": e.ts, "question": e.question, "model": e.model,
           "sub_model": e.sub_model, "status": "running", "config": json_text(e.config),
           "context_info": json_text(e.context_info), "origin": e.origin, "parent_run_id": e.parent_run_id,
           "session": e.session, "turn": e.turn, "fork_at": e.fork_at}  # fmt: skip
    batch.start(RUNS, row, ("run_id",))


def _plan_run_finished(batch: Batch, e: RunFinished) -> None:
    values = {"finished_at": e.ts, **{name: getattr(e, name) for name in _RUN_FINISH}}
    batch.finish(RUNS, values, {"run_id": e.run_id})


def _plan_agent_started(batch: Batch, e: AgentStarted) -> None:
    row = {"run_id": e.run_id, "agent_id": e.agent_id, "parent_id": e.parent_id, "depth": e.depth,
           "model": e.model, "prompt": e.prompt, "node_id": e.node_id, "status": "running", "started_at": e.ts}
    batch.start(AGENTS, row, ("run_id", "agent_id"))


def _plan_agent_finished(batch: Batch, e: AgentFinished) -> None:
    if e.agent_id is None:
        return
    values = {"finished_at": e.ts, **{name: getattr(e, name) for name in _AGENT_FINISH}}
    batch.finish(AGENTS, values, {"run_id": e.run_id, "agent_id": e.agent_id})


def _plan_lm_called(batch: Batch, e: LMCalled) -> None:
    batch.add_row(LM_CALLS, {col.name: getattr(e, col.name) for col in LM_CALLS.columns})


def _plan_cell_executed(batch: Batch, e: CellExecuted) -> None:
    row = {col.name: getattr(e, col.name) for col in CELLS.columns if col.name != "cell_index"}
    batch.add_row(CELLS, {**row, "cell_index": e.index})


_PLANNERS: dict[type[Event], Callable[[Batch, Any], None]] = {
    RunStarted: _plan_run_started,
    RunFinished: _plan_run_finished,
    AgentStarted: _plan_agent_started,
    AgentFinished: _plan_agent_finished,
    LMCalled: _plan_lm_called,
    CellExecuted: _plan_cell_executed,
}


def plan(entries: Iterable[Entry]) -> Batch:
    """The rows and updates of ``entries``, in order."""
    batch = Batch()
    for seq, event, payload in entries:
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
        batch.add_row(EVENTS, _event_row(seq, event, text))
        planner = _PLANNERS.get(type(event))
        if planner is not None:
            planner(batch, event)
    return batch


def insert_rows(cur: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` with one statement per set of keys (a start with its finish folded in has more)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    for names, group in groups.items():
        cur.execute(table.insert_sql(names, or_ignore=table.name in _START_TABLES), [json_text(group)])


def _apply_update(cur: Connection, update: Update) -> None:
    (changed,) = cur.execute(update.sql, update.params).fetchone() or (0,)
    if changed == 0:  # a finish without its start: keep what we know
        insert_rows(cur, update.table, [{**update.keys, "status": update.values["status"]}])
        cur.execute(update.sql, update.params)


def write_batch(cur: Connection, batch: Batch) -> None:
    """Write ``batch`` in one transaction (rolled back if any statement fails)."""
    cur.execute("BEGIN TRANSACTION")
    try:
        for table in INSERT_ORDER:
            rows = batch.rows.get(table.name)
            if rows:
                insert_rows(cur, table, rows)
        for update in batch.updates:
            _apply_update(cur, update)
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
