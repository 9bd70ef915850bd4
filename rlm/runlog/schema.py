"""The run log's tables, each described once, and the migrations that create them.

A table is a typed record class (:class:`RunSummary`, :class:`AgentRecord`...)
whose fields carry their SQL column (:func:`column`); :class:`Table` derives
from it everything the package writes as SQL: the ``CREATE TABLE`` of a
migration, the column lists of the batched inserts and of the updates, and the
select lists of the queries, whose rows come back as those same records.

Migrations are append-only: each is applied once and recorded in
``_migrations`` (see :mod:`rlm.migrations`). A column records the migration that
added it (``added_in``), so that a released migration keeps producing the same
schema whatever is added later. To add a column: give the record a field with
``column(..., added_in="m002_...")`` and append ``m002_...`` (built by
:func:`schema_migration`) to :data:`MIGRATIONS`; never edit ``m001_initial``.

DuckDB is imported only where a function needs it (the journal-only writer of
:mod:`rlm.runlog.journal` must not load it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm.errors import RunLogError
from rlm.migrations import applied_migrations, apply_migrations

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection as Connection

__all__ = [
    "AGENTS",
    "CELLS",
    "EVENTS",
    "LM_CALLS",
    "MIGRATIONS",
    "RUNS",
    "TABLES",
    "AgentRecord",
    "CellRecord",
    "Column",
    "EventRow",
    "LMCallRecord",
    "RunSummary",
    "Table",
    "check_schema_current",
    "column",
    "m001_initial",
    "m002_lm_call_routing",
    "m003_recorded_calls",
    "migrate",
    "schema_migration",
]

_COLUMN = "rlm.runlog.column"
INITIAL = "m001_initial"
#: Where each LM call went and why (rlm.routing): group, deployment, node, reason, queue time.
ROUTING = "m002_lm_call_routing"
#: Recorded calls (rlm.records): each call's request key, whole response and cache hit; where a run
#: comes from (replay, resume, fork, a session's turn) and its cache hits.
RECORDED = "m003_recorded_calls"


def column(sql_type: str, constraint: str = "", *, added_in: str = INITIAL) -> Any:
    """A record field that is a table column: its DuckDB type, constraint, and the migration adding it."""
    return field(metadata={_COLUMN: (sql_type, constraint, added_in)})


@dataclass(frozen=True)
class Column:
    """One column: ``name sql_type constraint`` in the DDL."""

    name: str
    sql_type: str
    constraint: str = ""
    added_in: str = INITIAL

    def ddl(self) -> str:
        """The column's definition in ``CREATE TABLE`` / ``ADD COLUMN``."""
        return f"{self.name} {self.sql_type} {self.constraint}".rstrip()

    @property
    def is_json(self) -> bool:
        """JSON columns are written as text and read back parsed."""
        return self.sql_type == "JSON"

    @property
    def wire_type(self) -> str:
        """The type a batch sends the value as: JSON goes as its text, so it is stored exactly as written."""
        return "VARCHAR" if self.is_json else self.sql_type


@dataclass(frozen=True)
class Table:
    """A table and the record class its rows are read into; every SQL text comes from here."""

    name: str
    record: type
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()

    @classmethod
    def of(cls, name: str, record: type, primary_key: tuple[str, ...] = ()) -> Table:
        """The table described by ``record``'s :func:`column` fields (other fields are not stored)."""
        columns = tuple(
            Column(f.name, *f.metadata[_COLUMN]) for f in dataclasses.fields(record) if _COLUMN in f.metadata
        )
        return cls(name, record, columns, primary_key)

    @functools.cached_property
    def by_name(self) -> dict[str, Column]:
        """The columns by name."""
        return {c.name: c for c in self.columns}

    @property
    def added_in(self) -> str:
        """The migration that creates the table (the one of its first column)."""
        return self.columns[0].added_in

    def create_sql(self) -> str:
        """``CREATE TABLE`` with the columns its creating migration added."""
        parts = [c.ddl() for c in self.columns if c.added_in == self.added_in]
        if self.primary_key:
            parts.append(f"PRIMARY KEY ({', '.join(self.primary_key)})")
        body = ",\n    ".join(parts)
        return f"CREATE TABLE {self.name} (\n    {body}\n)"

    @functools.cache  # noqa: B019 - tables are module constants, the cache lives as long as they do
    def insert_sql(self, names: tuple[str, ...], or_ignore: bool = False) -> str:
        """Insert rows given as one JSON array of objects with the keys ``names`` (a ``$1`` parameter).

        One JSON parameter per batch: DuckDB converts Python values one by one (slow),
        but parses a JSON document fast.
        """
        schema = json.dumps([{name: self.by_name[name].wire_type for name in names}])
        verb = "INSERT OR IGNORE INTO" if or_ignore else "INSERT INTO"
        rows = f"unnest(from_json($1::JSON, '{schema}'), recursive := true)"
        return f"{verb} {self.name} ({', '.join(names)}) SELECT {rows}"

    @functools.cache  # noqa: B019
    def update_sql(self, names: tuple[str, ...], keys: tuple[str, ...]) -> str:
        """``UPDATE`` setting ``names`` where ``keys`` match; parameters in that order."""
        unknown = set(names + keys) - set(self.by_name)
        if unknown:
            raise KeyError(f"{self.name} has no column(s) {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in names)
        where = " AND ".join(f"{key} = ?" for key in keys)
        return f"UPDATE {self.name} SET {assignments} WHERE {where}"

    def select_list(self, alias: str = "") -> str:
        """The column names, in record order, for a ``SELECT``."""
        prefix = f"{alias}." if alias else ""
        return ", ".join(prefix + c.name for c in self.columns)

    def record_from_row(self, row: tuple[Any, ...], **extra: Any) -> Any:
        """The record of a row selected with :meth:`select_list` (JSON columns parsed; NULL is ``{}``)."""
        values = {}
        for col, value in zip(self.columns, row, strict=True):
            values[col.name] = (json.loads(value) if value else {}) if col.is_json else value
        return self.record(**values, **extra)


# --------------------------------------------------------------------------- the records (the schema)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One row of the ``runs`` table (plus its agent count).

    Counters are 0 and ``status`` is ``"running"`` while the run is in progress;
    ``cost_usd`` is ``None`` when any provider's price was unknown.
    """

    run_id: str = column("VARCHAR", "PRIMARY KEY")
    started_at: float | None = column("DOUBLE")
    finished_at: float | None = column("DOUBLE")
    question: str | None = column("VARCHAR")
    model: str | None = column("VARCHAR")
    sub_model: str | None = column("VARCHAR")
    status: str = column("VARCHAR", "NOT NULL")
    answer: str | None = column("VARCHAR")
    input_tokens: int = column("BIGINT", "NOT NULL DEFAULT 0")
    output_tokens: int = column("BIGINT", "NOT NULL DEFAULT 0")
    llm_calls: int = column("BIGINT", "NOT NULL DEFAULT 0")
    cost_usd: float | None = column("DOUBLE")
    iterations: int = column("BIGINT", "NOT NULL DEFAULT 0")
    depth_reached: int = column("INTEGER", "NOT NULL DEFAULT 0")
    duration_s: float | None = column("DOUBLE")
    error: str | None = column("VARCHAR")
    config: dict[str, Any] = column("JSON")
    context_info: dict[str, Any] = column("JSON")
    origin: str | None = column("VARCHAR", added_in=RECORDED)
    parent_run_id: str | None = column("VARCHAR", added_in=RECORDED)
    session: str | None = column("VARCHAR", added_in=RECORDED)
    turn: int | None = column("INTEGER", added_in=RECORDED)
    fork_at: int | None = column("INTEGER", added_in=RECORDED)
    cache_hits: int | None = column("BIGINT", "DEFAULT 0", added_in=RECORDED)
    agents: int = 0  # not a column: counted from the agents table

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of all fields."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """One row of the ``agents`` table: an agent of a run (counters 0 while it runs)."""

    run_id: str = column("VARCHAR", "NOT NULL")
    agent_id: str = column("VARCHAR", "NOT NULL")
    parent_id: str | None = column("VARCHAR")
    depth: int | None = column("INTEGER")
    model: str | None = column("VARCHAR")
    prompt: str | None = column("VARCHAR")
    node_id: str | None = column("VARCHAR")
    status: str = column("VARCHAR", "NOT NULL")
    answer: str | None = column("VARCHAR")
    iterations: int = column("BIGINT", "NOT NULL DEFAULT 0")
    input_tokens: int = column("BIGINT", "NOT NULL DEFAULT 0")
    output_tokens: int = column("BIGINT", "NOT NULL DEFAULT 0")
    llm_calls: int = column("BIGINT", "NOT NULL DEFAULT 0")
    started_at: float | None = column("DOUBLE")
    finished_at: float | None = column("DOUBLE")
    duration_s: float | None = column("DOUBLE")
    error: str | None = column("VARCHAR")


@dataclass(frozen=True, slots=True)
class LMCallRecord:
    """One row of the ``lm_calls`` table: one model call (an ``LMCalled`` event)."""

    run_id: str = column("VARCHAR", "NOT NULL")
    call_id: str | None = column("VARCHAR")
    agent_id: str | None = column("VARCHAR")
    ts: float = column("DOUBLE", "NOT NULL")
    model: str | None = column("VARCHAR")
    role: str | None = column("VARCHAR")
    purpose: str | None = column("VARCHAR")
    input_tokens: int | None = column("BIGINT")
    output_tokens: int | None = column("BIGINT")
    cost_usd: float | None = column("DOUBLE")
    latency_s: float | None = column("DOUBLE")
    ok: bool | None = column("BOOLEAN")
    error: str | None = column("VARCHAR")
    prompt_preview: str | None = column("VARCHAR")
    response_preview: str | None = column("VARCHAR")
    model_group: str | None = column("VARCHAR", added_in=ROUTING)
    deployment: str | None = column("VARCHAR", added_in=ROUTING)
    node: str | None = column("VARCHAR", added_in=ROUTING)
    route_reason: str | None = column("VARCHAR", added_in=ROUTING)
    queue_s: float | None = column("DOUBLE", added_in=ROUTING)
    request_key: str | None = column("VARCHAR", added_in=RECORDED)
    response: str | None = column("VARCHAR", added_in=RECORDED)
    cache_hit: bool | None = column("BOOLEAN", added_in=RECORDED)


@dataclass(frozen=True, slots=True)
class CellRecord:
    """One row of the ``cells`` table: one code block run in a sandbox (a ``CellExecuted`` event)."""

    run_id: str = column("VARCHAR", "NOT NULL")
    agent_id: str | None = column("VARCHAR")
    ts: float = column("DOUBLE", "NOT NULL")
    iteration: int | None = column("INTEGER")
    cell_index: int | None = column("INTEGER")
    code: str | None = column("VARCHAR")
    stdout: str | None = column("VARCHAR")
    stderr: str | None = column("VARCHAR")
    error: str | None = column("VARCHAR")
    duration_s: float | None = column("DOUBLE")
    final: bool | None = column("BOOLEAN")
    restarted: bool | None = column("BOOLEAN")


@dataclass(frozen=True, slots=True)
class EventRow:
    """One row of the ``events`` table: an event as JSON (``payload``), numbered per run (``seq``)."""

    run_id: str = column("VARCHAR", "NOT NULL")
    seq: int = column("BIGINT", "NOT NULL")
    ts: float = column("DOUBLE", "NOT NULL")
    agent_id: str | None = column("VARCHAR")
    type: str = column("VARCHAR", "NOT NULL")
    payload: dict[str, Any] = column("JSON", "NOT NULL")


RUNS = Table.of("runs", RunSummary)
AGENTS = Table.of("agents", AgentRecord, primary_key=("run_id", "agent_id"))
LM_CALLS = Table.of("lm_calls", LMCallRecord)
CELLS = Table.of("cells", CellRecord)
EVENTS = Table.of("events", EventRow, primary_key=("run_id", "seq"))
#: Every table, in the order ``m001_initial`` creates them.
TABLES: tuple[Table, ...] = (RUNS, AGENTS, LM_CALLS, CELLS, EVENTS)


# --------------------------------------------------------------------------- migrations

Migration = Callable[["Connection"], None]


def schema_migration(name: str, tables: tuple[Table, ...] = TABLES) -> Migration:
    """The migration ``name``: create the tables it adds, add the columns it adds to older tables."""

    def migration(conn: Connection) -> None:
        for table in tables:
            if table.added_in == name:
                conn.execute(table.create_sql())
                continue
            for col in table.columns:
                if col.added_in == name:
                    conn.execute(f"ALTER TABLE {table.name} ADD COLUMN {col.ddl()}")

    migration.__name__ = migration.__qualname__ = name
    migration.__doc__ = f"Schema changes of {name} (derived from the table records)."
    return migration


#: Create the runs, agents, lm_calls, cells and events tables.
m001_initial = schema_migration(INITIAL)
#: Add model_group, deployment, node, route_reason and queue_s to lm_calls.
m002_lm_call_routing = schema_migration(ROUTING)
_m003_columns = schema_migration(RECORDED)


def m003_recorded_calls(conn: Connection) -> None:
    """Add request_key, response and cache_hit to lm_calls, with an index on request_key (the cache and
    replays look calls up by it), and origin, parent_run_id, session, turn, fork_at, cache_hits to runs."""
    _m003_columns(conn)
    conn.execute("CREATE INDEX lm_calls_request_key ON lm_calls (request_key)")


MIGRATIONS: tuple[Migration, ...] = (m001_initial, m002_lm_call_routing, m003_recorded_calls)
"""Every migration, in the order they are applied. Only ever append."""


def migrate(conn: Connection) -> list[str]:
    """Apply the migrations ``conn``'s database lacks; return the names applied now."""
    return apply_migrations(conn, MIGRATIONS)


def check_schema_current(conn: Connection, path: Path) -> None:
    """For read-only opens: fail clearly if the schema is missing or outdated."""
    import duckdb  # lazily: importing rlm.runlog must not load DuckDB

    try:
        applied = applied_migrations(conn)
    except duckdb.CatalogException:
        applied = set()
    missing = [m.__name__ for m in MIGRATIONS if m.__name__ not in applied]
    if missing:
        raise RunLogError(
            f"run log {path} is not initialised or is from an older rlm (missing migrations: "
            f"{', '.join(missing)}); open it once read-write to migrate it"
        )
