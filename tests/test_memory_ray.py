"""The memory-store actor on a real local Ray cluster: one owner, idempotent retries, kills."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from rlm.agents.memory_actor import MemoryClient, start  # noqa: E402 - after the check that Ray is installed
from rlm.memory.records import EntryNotFound, MemoryConflict  # noqa: E402 - after the check that Ray is installed
from rlm.memory.store import MemoryStore  # noqa: E402 - after the check that Ray is installed

pytestmark = [pytest.mark.ray, pytest.mark.slow]

WRITERS = 16
NOTES = 500


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    from rlm.agents.cluster import use_private_cluster

    temp = tmp_path_factory.mktemp("ray")
    use_private_cluster(temp)  # loopback and token auth, as rlm's embedded cluster
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(temp), log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
    yield
    ray.shutdown()


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class Writer:
    """An agent that writes notes; killed at random and restarted, its task re-runs from the start."""

    def __init__(self, client: MemoryClient, index: int) -> None:
        self.client = client
        self.index = index

    def write(self, count: int) -> int:
        for i in range(count):
            self.client.add("swarm", f"writer {self.index} note {i}", kind="note", tags=[f"w{self.index}"],
                            entry_id=f"w{self.index}/n{i}")
        return count


def test_client_has_the_store_interface(cluster, tmp_path):
    client = start(tmp_path / "memory.duckdb", semantic=False)
    try:
        entry = client.add("proj", "E1042 means the disk is full", kind="doc", entry_id="d1")
        assert client.add("proj", "E1042 means the disk is full", kind="doc", entry_id="d1") == entry
        with pytest.raises(MemoryConflict):
            client.add("proj", "other text", kind="doc", entry_id="d1")
        edited = client.edit("proj", "d1", text="E1042: disk full; clean /var/tmp", op_id="op-1")
        assert client.edit("proj", "d1", text="ignored retry", op_id="op-1") == edited
        assert [h.entry.id for h in client.search("proj", "disk full")] == ["d1"]
        assert [v.op for v in client.history("proj", "d1")] == ["add", "edit"]
        client.delete("proj", "d1")
        assert client.list("proj") == [] and client.get("proj", "d1").deleted
        with pytest.raises(EntryNotFound):
            client.get("other", "d1")
        assert client.semantic is False
    finally:
        client.shutdown()


def test_concurrent_writers_with_random_kills_lose_and_duplicate_nothing(cluster, tmp_path):
    path = tmp_path / "memory.duckdb"
    client = start(path, semantic=False)
    rng = random.Random(7)
    writers = [Writer.remote(client, index) for index in range(WRITERS)]
    pending = {writer.write.remote(NOTES): writer for writer in writers}
    started = time.monotonic()
    kills = store_kills = 0
    while pending and time.monotonic() - started < 200:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=rng.uniform(0.2, 0.6))
        for ref in done:
            assert ray.get(ref) == NOTES
            del pending[ref]
        if pending and kills < 12:
            ray.kill(rng.choice(list(pending.values())), no_restart=False)  # a writer dies mid-task
            kills += 1
        if pending and store_kills < 2 and kills in (4, 9):
            ray.kill(client.actor, no_restart=False)  # the store's owner dies too; it restarts
            store_kills += 1
    assert not pending, "writers did not finish in time"
    assert kills >= 8 and store_kills == 2
    notes = client.list("swarm", kind="note")
    client.shutdown()

    expected = {f"w{w}/n{i}" for w in range(WRITERS) for i in range(NOTES)}
    ids = [note.id for note in notes]
    assert len(ids) == len(set(ids)) == WRITERS * NOTES  # zero duplicated
    assert set(ids) == expected  # zero lost
    assert len({note.text for note in notes}) == WRITERS * NOTES
    with MemoryStore(path, semantic=False) as store:  # the file opens cleanly after all the kills
        versions = store._conn.execute("SELECT count(*), count(DISTINCT id) FROM entry_versions").fetchone()
        assert versions == (WRITERS * NOTES, WRITERS * NOTES)  # one add per note, never two
        assert store.search("swarm", "writer 3 note 499", tags=["w3"])[0].entry.id == "w3/n499"


def test_memory_extension_runs_on_the_actor_client(cluster, tmp_path):
    from rlm.config import RLMConfig
    from rlm.memory.extension import MemoryExtension

    client = start(tmp_path / "memory.duckdb", semantic=False)
    try:
        client.add("team", "Use re.findall for codes", kind="memory", entry_id="m1")
        extension = MemoryExtension(RLMConfig(memory_namespace="team", home=Path(tmp_path)), store=client)
        assert [m["id"] for m in extension._memories()] == ["m1"]
        extension.close()  # a client is not closed by the extension
        assert client.get("team", "m1").text == "Use re.findall for codes"
    finally:
        client.shutdown()
