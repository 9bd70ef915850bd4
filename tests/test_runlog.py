"""The DuckDB run log, against real database files in tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from rlm import runlog
from rlm.errors import RunLogError
from rlm.events import (
    AgentFinished,
    AgentStarted,
    CellExecuted,
    Event,
    IterationFinished,
    LMCalled,
    RunFinished,
    RunStarted,
)
from rlm.runlog import AgentRecord, CellRecord, LMCallRecord, RunJournal, RunLog, RunSummary

TABLES = {"_migrations", "runs", "agents", "lm_calls", "cells", "events"}
#: Every migration released, in order: a file of any earlier release migrates to the end of this list.
RELEASED = ["m001_initial", "m002_lm_call_routing", "m003_recorded_calls"]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "rlm.duckdb"


def table_names(path: Path) -> set[str]:
    with duckdb.connect(str(path), read_only=True) as conn:
        return {row[0] for row in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}


def migration_rows(path: Path) -> list[str]:
    with duckdb.connect(str(path), read_only=True) as conn:
        return [row[0] for row in conn.execute("SELECT name FROM _migrations ORDER BY applied_at").fetchall()]


def run_started(run_id: str, ts: float, question: str = "How many lines?") -> RunStarted:
    return RunStarted(
        run_id=run_id, ts=ts, question=question, model="m-root", sub_model="m-sub", config={"max_depth": 2}
    )


def agent_events(run_id: str, agent_id: str, n_iterations: int, t0: float) -> list[Event]:
    """A plausible event sequence of one agent (no children)."""
    events: list[Event] = [
        AgentStarted(
            run_id=run_id, agent_id=agent_id, ts=t0, parent_id="root", depth=1, model="m-sub", prompt="sub task"
        )
    ]
    for i in range(1, n_iterations + 1):
        ts = t0 + i
        events += [
            LMCalled(
                run_id=run_id,
                agent_id=agent_id,
                ts=ts,
                call_id=f"{agent_id}-{i}",
                model="m-sub",
                role="sub",
                purpose="iteration",
                input_tokens=100,
                output_tokens=10,
                cost_usd=0.001,
            ),
            CellExecuted(
                run_id=run_id, agent_id=agent_id, ts=ts, iteration=i, index=0, code=f"print({i})", stdout=f"{i}\n"
            ),
            IterationFinished(run_id=run_id, agent_id=agent_id, ts=ts, iteration=i, reply=f"reply {i}", n_cells=1),
        ]
    events.append(
        AgentFinished(
            run_id=run_id,
            agent_id=agent_id,
            ts=t0 + n_iterations + 1,
            status="ok",
            answer=f"answer of {agent_id}",
            iterations=n_iterations,
            input_tokens=100 * n_iterations,
            output_tokens=10 * n_iterations,
            llm_calls=n_iterations,
        )
    )
    return events


def run_finished(run_id: str, ts: float) -> RunFinished:
    return RunFinished(
        run_id=run_id, ts=ts, status="ok", answer="42", input_tokens=1000, output_tokens=100, llm_calls=9, cost_usd=None
    )


# -- opening and migrations ---------------------------------------------------


def test_blank_database_gets_all_tables_and_migration_rows(db_path: Path) -> None:
    with RunLog(db_path) as log:
        assert log.migrations_applied == RELEASED
    assert table_names(db_path) == TABLES
    assert migration_rows(db_path) == RELEASED


def test_reopening_applies_nothing_twice(db_path: Path) -> None:
    RunLog(db_path).close()
    with RunLog(db_path) as log:
        assert log.migrations_applied == []
    assert migration_rows(db_path) == RELEASED


def test_new_migration_is_applied_once(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    RunLog(db_path).close()

    def m099_notes(conn: duckdb.DuckDBPyConnection) -> None:
        conn.execute("CREATE TABLE notes (run_id VARCHAR, note VARCHAR)")

    monkeypatch.setattr(runlog.schema, "MIGRATIONS", (*runlog.schema.MIGRATIONS, m099_notes))
    with RunLog(db_path) as log:
        assert log.migrations_applied == ["m099_notes"]
    with RunLog(db_path) as log:
        assert log.migrations_applied == []
    assert migration_rows(db_path) == [*RELEASED, "m099_notes"]
    assert "notes" in table_names(db_path)


def test_failing_migration_is_rolled_back(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    RunLog(db_path).close()

    def m099_broken(conn: duckdb.DuckDBPyConnection) -> None:
        conn.execute("CREATE TABLE half_done (x INTEGER)")
        conn.execute("SELECT * FROM no_such_table")

    monkeypatch.setattr(runlog.schema, "MIGRATIONS", (*runlog.schema.MIGRATIONS, m099_broken))
    with pytest.raises(RunLogError, match="migrate"):
        RunLog(db_path)
    assert migration_rows(db_path) == RELEASED
    assert "half_done" not in table_names(db_path)


def test_non_duckdb_file_raises_runlog_error(tmp_path: Path) -> None:
    path = tmp_path / "rlm.duckdb"
    path.write_text("this is not a database\n" * 200)
    with pytest.raises(RunLogError) as info:
        RunLog(path)
    assert str(path) in str(info.value)
    assert "not a DuckDB database" in str(info.value)


def test_file_locked_by_another_process_raises_runlog_error(db_path: Path) -> None:
    RunLog(db_path).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys; c = duckdb.connect({str(db_path)!r}); print('ready', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(RunLogError) as info:
            RunLog(db_path)
        assert str(db_path) in str(info.value)
        assert "lock" in str(info.value).lower()
    finally:
        holder.communicate("", timeout=30)


def test_read_only_open(db_path: Path) -> None:
    with RunLog(db_path) as log:
        log.record(run_started("r1", 1000.0))
    with RunLog(db_path, read_only=True) as reader:
        assert [run.run_id for run in reader.list_runs()] == ["r1"]
        with pytest.raises(RunLogError, match="read-only"):
            reader.record(run_started("r2", 1001.0))


def test_read_only_open_of_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RunLogError, match="no such file"):
        RunLog(tmp_path / "missing.duckdb", read_only=True)


def test_close_is_idempotent_and_record_after_close_raises(db_path: Path) -> None:
    log = RunLog(db_path)
    log.close()
    log.close()
    with pytest.raises(RunLogError, match="closed"):
        log.record(run_started("r1", 1000.0))


# -- writing and reading ------------------------------------------------------


def test_concurrent_record_then_read_back_in_order(db_path: Path) -> None:
    run_id = "run-concurrent"
    per_agent = {f"a{k}": agent_events(run_id, f"a{k}", n_iterations=30, t0=1000.0 + k) for k in range(6)}
    start = threading.Barrier(len(per_agent))

    with RunLog(db_path) as log:
        log.record(run_started(run_id, 999.0))

        def emit(events: list[Event]) -> None:
            start.wait()
            for event in events:
                log.record(event)

        threads = [threading.Thread(target=emit, args=(events,)) for events in per_agent.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        log.record(run_finished(run_id, 2000.0))

        got = log.events(run_id)
        assert log.write_errors == 0

    expected_total = 2 + sum(len(events) for events in per_agent.values())
    assert len(got) == expected_total
    assert got[0] == run_started(run_id, 999.0)
    assert got[-1] == run_finished(run_id, 2000.0)
    for agent_id, events in per_agent.items():
        assert [e for e in got if e.agent_id == agent_id] == events


def test_events_are_read_back_exactly_in_recorded_order(db_path: Path) -> None:
    run_id = "run-exact"
    events: list[Event] = [run_started(run_id, 1.5)]
    for k in range(3):
        events += agent_events(run_id, f"a{k}", n_iterations=2, t0=10.0 * k + 0.123456789)
    events.append(run_finished(run_id, 99.25))
    with RunLog(db_path) as log:
        for event in events:
            log.record(event)
    with RunLog(db_path) as log:  # read from a fresh process-level open, after close
        assert log.events(run_id) == events


def test_denormalized_tables(db_path: Path) -> None:
    run_id = "run-tables"
    with RunLog(db_path) as log:
        log.record(run_started(run_id, 1000.0))
        log.record(
            AgentStarted(run_id=run_id, agent_id="root", ts=1000.0, parent_id=None, depth=0, model="m", prompt="q")
        )
        for event in agent_events(run_id, "a1", n_iterations=3, t0=1001.0):
            log.record(event)
        log.record(run_finished(run_id, 1010.0))
        summary = log.get_run(run_id)

    assert summary.status == "ok"
    assert summary.answer == "42"
    assert (summary.input_tokens, summary.output_tokens, summary.llm_calls) == (1000, 100, 9)
    assert summary.cost_usd is None
    assert summary.started_at == 1000.0 and summary.finished_at == 1010.0
    assert summary.config == {"max_depth": 2}
    assert summary.agents == 2
    with duckdb.connect(str(db_path), read_only=True) as conn:
        agents = conn.execute("SELECT agent_id, parent_id, depth, status, iterations FROM agents ORDER BY agent_id")
        assert agents.fetchall() == [("a1", "root", 1, "ok", 3), ("root", None, 0, "running", 0)]
        assert conn.execute("SELECT count(*), sum(input_tokens) FROM lm_calls").fetchone() == (3, 300)
        cells = conn.execute("SELECT iteration, cell_index, code, stdout FROM cells ORDER BY iteration").fetchall()
        assert cells[0] == (1, 0, "print(1)", "1\n") and len(cells) == 3
        seqs = [row[0] for row in conn.execute("SELECT seq FROM events ORDER BY seq").fetchall()]
        assert seqs == list(range(1, len(seqs) + 1))


def test_finish_without_start_still_gets_rows(db_path: Path) -> None:
    with RunLog(db_path) as log:
        log.record(AgentFinished(run_id="orphan", agent_id="x", status="error", answer=None, iterations=0))
        log.record(run_finished("orphan", 5.0))
        summary = log.get_run("orphan")
    assert summary.status == "ok" and summary.agents == 1


def test_awkward_text_is_stored(db_path: Path) -> None:
    text = "nul\x00 esc\x1b[31m é 😀 \u202e lone\udc80surrogate"
    event = CellExecuted(run_id="r-text", agent_id="a", iteration=1, index=0, code=text, stdout=text)
    with RunLog(db_path) as log:
        log.record(run_started("r-text", 1.0))
        log.record(event)
        (stored,) = [e for e in log.events("r-text") if isinstance(e, CellExecuted)]
        assert log.write_errors == 0
    assert stored.code == text.replace("\udc80", "?")


def test_sequence_continues_after_reopen(db_path: Path) -> None:
    with RunLog(db_path) as log:
        log.record(run_started("r1", 1.0))
    with RunLog(db_path) as log:
        log.record(run_finished("r1", 2.0))
        assert [type(e).__name__ for e in log.events("r1")] == ["RunStarted", "RunFinished"]


def test_list_runs_newest_first(db_path: Path) -> None:
    with RunLog(db_path) as log:
        for run_id, ts in [("r-mid", 2000.0), ("r-new", 3000.0), ("r-old", 1000.0)]:
            log.record(run_started(run_id, ts))
        runs = log.list_runs()
        assert [r.run_id for r in runs] == ["r-new", "r-mid", "r-old"]
        assert [r.run_id for r in log.list_runs(limit=2)] == ["r-new", "r-mid"]
    assert all(isinstance(r, RunSummary) and r.status == "running" for r in runs)
    assert runs[0].to_dict()["question"] == "How many lines?"


def test_run_id_prefix_lookup(db_path: Path) -> None:
    with RunLog(db_path) as log:
        log.record(run_started("abc123", 1.0))
        log.record(run_started("abd456", 2.0))
        log.record(run_started("abc", 3.0))  # an id that is also a prefix of another
        assert log.get_run("abc1").run_id == "abc123"
        assert log.get_run("abd").run_id == "abd456"
        assert log.get_run("abc").run_id == "abc"  # exact match wins over prefix
        assert [type(e) for e in log.events("abc12")] == [RunStarted]


def test_unknown_run_id(db_path: Path) -> None:
    with RunLog(db_path) as log:
        log.record(run_started("abc123", 1.0))
        with pytest.raises(RunLogError, match="no run with id 'zzz'"):
            log.get_run("zzz")
        with pytest.raises(RunLogError):
            log.events("zzz")
        with pytest.raises(RunLogError, match="empty"):
            log.get_run("")


def test_ambiguous_run_id_prefix(db_path: Path) -> None:
    with RunLog(db_path) as log:
        log.record(run_started("abc123", 1.0))
        log.record(run_started("abd456", 2.0))
        with pytest.raises(RunLogError, match="ambiguous") as info:
            log.get_run("ab")
    assert "abc123" in str(info.value) and "abd456" in str(info.value)


# -- the journal: what was recorded survives a process that dies before the writer caught up --


def journals(db_path: Path) -> list[Path]:
    return sorted(db_path.parent.glob(db_path.name + ".*.journal"))


_KILLED_WRITER = """
import os, signal, sys
sys.path[:0] = {paths!r}
import test_runlog as t
from rlm.runlog import RunLog
log = RunLog({db!r})
log.record(t.run_started("r-killed", 1.0))
if {flush_first!r}:
    log.flush()  # the start is in the database, the rest only in the journal
for event in t.agent_events("r-killed", "a1", n_iterations=5, t0=2.0):
    log.record(event)
os.kill(os.getpid(), signal.SIGKILL)  # no close, no atexit: only the journal has the events
"""


@pytest.mark.parametrize("flush_first", [False, True])
def test_events_of_a_killed_process_are_recovered_once(db_path: Path, flush_first: bool) -> None:
    RunLog(db_path).close()
    script = _KILLED_WRITER.format(paths=[str(Path(__file__).parent)] + sys.path, db=str(db_path),
                                   flush_first=flush_first)
    proc = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert len(journals(db_path)) == 1

    expected = [run_started("r-killed", 1.0), *agent_events("r-killed", "a1", n_iterations=5, t0=2.0)]
    with RunLog(db_path) as log:
        assert log.recovered == (len(expected) - 1 if flush_first else len(expected))
        assert log.events("r-killed") == expected
        assert log.get_run("r-killed").status == "running"  # it died mid-run
    assert journals(db_path) == []
    with RunLog(db_path) as log:  # nothing replayed twice
        assert log.recovered == 0 and len(log.events("r-killed")) == len(expected)
    with duckdb.connect(str(db_path), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM lm_calls").fetchone() == (5,)
        assert conn.execute("SELECT count(*) FROM cells").fetchone() == (5,)
        assert conn.execute("SELECT count(*) FROM agents").fetchone() == (1,)


def test_a_live_journal_is_not_replayed_by_a_second_open_in_the_same_process(db_path: Path) -> None:
    first = RunLog(db_path)
    first.record(run_started("r-live", 1.0))
    for event in agent_events("r-live", "a1", n_iterations=2, t0=2.0):
        first.record(event)
    assert len(journals(db_path)) == 1
    with RunLog(db_path) as second:  # e.g. the TUI listing past runs while a run goes on
        assert second.recovered == 0
        # Whether or not the first log's writer has stored them yet, the second one reads them all.
        assert second.get_run("r-live").status == "running"
        assert len(second.events("r-live")) == 1 + len(agent_events("r-live", "a1", n_iterations=2, t0=2.0))
    first.close()
    assert journals(db_path) == []
    with RunLog(db_path) as log:
        assert len(log.events("r-live")) == 1 + len(agent_events("r-live", "a1", n_iterations=2, t0=2.0))


def test_a_clean_close_leaves_no_journal_and_reads_see_everything(db_path: Path) -> None:
    with RunLog(db_path) as log:
        for k in range(50):
            log.record(run_started(f"r{k}", float(k)))
        assert len(log.list_runs(limit=100)) == 50  # a read flushes the batch being gathered
    assert journals(db_path) == []


def test_a_background_close_is_awaited_by_the_next_open_and_loses_nothing(db_path: Path) -> None:
    log = RunLog(db_path)
    for i in range(20):
        log.record(run_started(f"bg{i}", ts=float(i)))
        for event in agent_events(f"bg{i}", "a1", 3, float(i)):
            log.record(event)
        log.record(run_finished(f"bg{i}", ts=float(i) + 10))
    log.close_in_background()
    with RunLog(db_path, read_only=True) as reader:  # waits for the close: one DuckDB owner at a time
        runs = reader.list_runs(limit=100)
    assert sorted(r.run_id for r in runs) == sorted(f"bg{i}" for i in range(20))
    assert all(r.status == "ok" for r in runs)
    assert runlog.writer._closing == {}
    assert not list(db_path.parent.glob("*.journal"))  # a clean close leaves no journal


def test_a_process_that_exits_right_after_a_background_close_still_writes_everything(db_path: Path) -> None:
    code = (
        "import sys\nfrom rlm.runlog import RunLog\nfrom rlm.events import RunStarted, RunFinished\n"
        "log = RunLog(sys.argv[1])\n"
        "for i in range(50):\n"
        "    log.record(RunStarted(run_id=f'x{i}', ts=float(i), question='q', model='m', sub_model='m', config={}))\n"
        "    log.record(RunFinished(run_id=f'x{i}', ts=float(i) + 1, status='ok', answer='a'))\n"
        "log.close_in_background()\n"
    )
    subprocess.run([sys.executable, "-c", code, str(db_path)], check=True, timeout=120)
    with RunLog(db_path, read_only=True) as reader:
        assert len(reader.list_runs(limit=100)) == 50


# -- the query API: typed records instead of SQL --------------------------------


def test_agents_calls_and_cells_come_back_as_typed_records(db_path: Path) -> None:
    with RunLog(db_path) as log:
        log.record(run_started("run-records", 1000.0))
        log.record(AgentStarted(run_id="run-records", agent_id="root", ts=1000.0, parent_id=None, depth=0,
                                model="m-root", prompt="q"))
        for event in agent_events("run-records", "a1", n_iterations=2, t0=1001.0):
            log.record(event)
        agents = log.agents("run-rec")  # a unique prefix, like every read
        calls = log.lm_calls("run-records")
        cells = log.cells("run-records")
        with pytest.raises(RunLogError, match="no run"):
            log.cells("nope")
    assert [(a.agent_id, a.parent_id, a.depth, a.status, a.iterations) for a in agents] == [
        ("root", None, 0, "running", 0), ("a1", "root", 1, "ok", 2)]
    assert isinstance(agents[1], AgentRecord) and agents[1].answer == "answer of a1"
    assert [(c.call_id, c.agent_id, c.input_tokens, c.cost_usd, c.ok) for c in calls] == [
        ("a1-1", "a1", 100, 0.001, True), ("a1-2", "a1", 100, 0.001, True)]
    assert all(isinstance(c, LMCallRecord) for c in calls)
    assert [(c.iteration, c.cell_index, c.code, c.stdout, c.final) for c in cells] == [
        (1, 0, "print(1)", "1\n", False), (2, 0, "print(2)", "2\n", False)]
    assert all(isinstance(c, CellRecord) for c in cells)


#: The schema ``m001_initial`` created when it was released, kept verbatim: files made by it must keep working.
RELEASED_M001 = """
CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, started_at DOUBLE, finished_at DOUBLE, question VARCHAR,
    model VARCHAR, sub_model VARCHAR, status VARCHAR NOT NULL, answer VARCHAR,
    input_tokens BIGINT NOT NULL DEFAULT 0, output_tokens BIGINT NOT NULL DEFAULT 0,
    llm_calls BIGINT NOT NULL DEFAULT 0, cost_usd DOUBLE, iterations BIGINT NOT NULL DEFAULT 0,
    depth_reached INTEGER NOT NULL DEFAULT 0, duration_s DOUBLE, error VARCHAR, config JSON, context_info JSON);
CREATE TABLE agents (run_id VARCHAR NOT NULL, agent_id VARCHAR NOT NULL, parent_id VARCHAR, depth INTEGER,
    model VARCHAR, prompt VARCHAR, node_id VARCHAR, status VARCHAR NOT NULL, answer VARCHAR,
    iterations BIGINT NOT NULL DEFAULT 0, input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0, llm_calls BIGINT NOT NULL DEFAULT 0, started_at DOUBLE,
    finished_at DOUBLE, duration_s DOUBLE, error VARCHAR, PRIMARY KEY (run_id, agent_id));
CREATE TABLE lm_calls (run_id VARCHAR NOT NULL, call_id VARCHAR, agent_id VARCHAR, ts DOUBLE NOT NULL,
    model VARCHAR, role VARCHAR, purpose VARCHAR, input_tokens BIGINT, output_tokens BIGINT, cost_usd DOUBLE,
    latency_s DOUBLE, ok BOOLEAN, error VARCHAR, prompt_preview VARCHAR, response_preview VARCHAR);
CREATE TABLE cells (run_id VARCHAR NOT NULL, agent_id VARCHAR, ts DOUBLE NOT NULL, iteration INTEGER,
    cell_index INTEGER, code VARCHAR, stdout VARCHAR, stderr VARCHAR, error VARCHAR, duration_s DOUBLE,
    final BOOLEAN, restarted BOOLEAN);
CREATE TABLE events (run_id VARCHAR NOT NULL, seq BIGINT NOT NULL, ts DOUBLE NOT NULL, agent_id VARCHAR,
    type VARCHAR NOT NULL, payload JSON NOT NULL, PRIMARY KEY (run_id, seq));
CREATE TABLE _migrations (name VARCHAR PRIMARY KEY, applied_at DOUBLE NOT NULL);
INSERT INTO _migrations VALUES ('m001_initial', 0);
INSERT INTO runs (run_id, started_at, question, status, config) VALUES ('old-run', 5.0, 'old?', 'ok', '{"a": 1}');
"""
SCHEMA_FACTS = (
    "SELECT table_name, column_index, column_name, data_type, is_nullable, column_default "
    "FROM duckdb_columns() WHERE NOT internal ORDER BY ALL",
    "SELECT table_name, constraint_type, constraint_column_names FROM duckdb_constraints() ORDER BY ALL",
)


def test_a_file_made_by_the_released_m001_opens_and_works(db_path: Path, tmp_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with duckdb.connect(str(db_path)) as conn:
        conn.execute(RELEASED_M001)
    with RunLog(db_path) as log:
        # the routing columns of lm_calls, the recorded calls' columns and index
        assert log.migrations_applied == RELEASED[1:]
        log.record(run_started("new-run", 10.0))
        log.record(run_finished("new-run", 11.0))
        runs = log.list_runs()
    assert [(r.run_id, r.status, r.config) for r in runs] == [("new-run", "ok", {"max_depth": 2}),
                                                              ("old-run", "ok", {"a": 1})]
    RunLog(tmp_path / "fresh.duckdb").close()
    with duckdb.connect(str(db_path), read_only=True) as old, \
            duckdb.connect(str(tmp_path / "fresh.duckdb"), read_only=True) as fresh:
        for sql in SCHEMA_FACTS:  # today's migrations make exactly the released schema, migrated
            assert fresh.execute(sql).fetchall() == old.execute(sql).fetchall()


# -- the journal-only writer and runs in progress elsewhere ----------------------------------


_JOURNAL_WRITER = """
import json, sys
from rlm.events import event_from_dict
from rlm.runlog import RunJournal
first, last = [[event_from_dict(data) for data in part] for part in json.loads(sys.argv[2])]
journal = RunJournal(sys.argv[1])
for event in first:
    journal.record(event)
print("duckdb" in sys.modules, flush=True)
sys.stdin.readline()  # the test reads the run while this process lives and holds the journal
for event in last:
    journal.record(event)
journal.close()
"""


def _journal_writer(db_path: Path, first: list[Event], last: list[Event]) -> subprocess.Popen[str]:
    """A process that journals ``first``, prints whether DuckDB got imported, and ``last`` after a line on stdin."""
    events = json.dumps([[e.to_dict() for e in first], [e.to_dict() for e in last]])
    return subprocess.Popen([sys.executable, "-c", _JOURNAL_WRITER, str(db_path), events], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cli(db_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RLM_HOME": str(db_path.parent)}
    return subprocess.run([sys.executable, "-m", "rlm.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_a_run_in_progress_in_another_process_is_listed_and_readable(db_path: Path) -> None:
    RunLog(db_path).close()
    expected = [run_started("r-elsewhere", 1.0), *agent_events("r-elsewhere", "a1", n_iterations=2, t0=2.0)]
    writer = _journal_writer(db_path, expected, [run_finished("r-elsewhere", 9.0)])
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "False"  # DuckDB never loaded
        live_journal = journals(db_path)
        assert len(live_journal) == 1
        with RunLog(db_path) as log:
            assert log.recovered == 0  # a live journal is not replayed
            (run,) = log.list_runs()
            assert (run.run_id, run.status, run.question, run.agents) == (
                "r-elsewhere", "running", "How many lines?", 1)
            assert log.events("r-else") == expected
            assert [(a.agent_id, a.status) for a in log.agents("r-elsewhere")] == [("a1", "ok")]
            assert len(log.lm_calls("r-elsewhere")) == 2 and len(log.cells("r-elsewhere")) == 2
        with RunLog(db_path, read_only=True) as reader:
            assert reader.get_run("r-elsewhere").status == "running"
        listed = _cli(db_path, "runs", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [(r["run_id"], r["status"]) for r in json.loads(listed.stdout)] == [("r-elsewhere", "running")]
        shown = _cli(db_path, "show", "r-else")
        assert shown.returncode == 0 and "a1" in shown.stdout, shown.stderr
        assert journals(db_path) == live_journal  # read without deleting anything
        _, err = writer.communicate("go\n", timeout=60)  # the writer still holds its lock: it goes on
        assert writer.returncode == 0, err
    finally:
        if writer.poll() is None:
            writer.kill()
    with RunLog(db_path) as log:  # its writer is gone: the next read-write open stores the run
        assert log.recovered == len(expected) + 1
        assert log.get_run("r-elsewhere").status == "ok"
        assert log.events("r-elsewhere") == [*expected, run_finished("r-elsewhere", 9.0)]
    assert journals(db_path) == []


def test_a_journal_writer_numbers_its_run_from_one_and_keeps_its_file_at_close(db_path: Path) -> None:
    events = [run_started("r-j", 1.0), *agent_events("r-j", "a1", n_iterations=1, t0=2.0), run_finished("r-j", 5.0)]
    with RunJournal(db_path) as journal:
        for event in events:
            journal.record(event)
    assert not db_path.exists()  # no database was opened
    (path,) = journals(db_path)
    assert [int(line.split(b" ", 1)[0]) for line in path.read_bytes().splitlines()] == list(range(1, len(events) + 1))
    with pytest.raises(RunLogError, match="closed"):
        journal.record(events[0])
    with RunLog(db_path) as log:
        assert log.recovered == len(events) and log.events("r-j") == events
