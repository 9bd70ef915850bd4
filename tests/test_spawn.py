"""Pieces of the Ray spawn path that need no cluster: the hosts' zygote pool and the event forwarder's hand-over."""

from __future__ import annotations

import threading
from pathlib import Path

from rlm.agents.host import EventForwarder
from rlm.sandbox.forkserver import ForkedSandbox, ForkServerPool
from rlm.config import SandboxConfig
from rlm.events import AgentFinished, AgentStarted, LMCalled
from rlm.inputs import payload_from_text


def test_pooled_zygotes_are_started_and_each_run_gets_its_own(tmp_path: Path):
    config = SandboxConfig(cell_timeout_s=60)
    pool = ForkServerPool(2)
    try:
        pool.warm(config)
        assert all(server._control is not None for server in pool._ready[config])  # up before any run asks
        first, second = pool.take(config), pool.take(config)
        assert first is not second  # never one zygote for two runs
        boxes = []
        for i, server in enumerate((first, first, second)):
            payload = payload_from_text(f"chunk-{i}", workdir=tmp_path)
            box = ForkedSandbox(server, payload.path, config=config)
            assert box.execute("FINAL('got ' + context)").final == f"got chunk-{i}"
            boxes.append(box)
        assert len({box.execute("import os; print(os.getpid())").stdout for box in boxes[:2]}) == 2  # fresh workers
        for box in boxes:
            box.close()
        first.close()
        second.close()
    finally:
        pool.close()


def test_a_burst_of_takes_refills_the_pool_to_its_size_and_no_further():
    """Each take starts a refill; the refills of a burst count each other's starts (they used to all start one:
    8 takes from a pool of 2 left 9 idle zygotes)."""
    import time

    config = SandboxConfig(cell_timeout_s=60)
    pool = ForkServerPool(2)
    taken = []
    try:
        takers = [threading.Thread(target=lambda: taken.append(pool.take(config))) for _ in range(8)]
        for thread in takers:
            thread.start()
        for thread in takers:
            thread.join()
        deadline = time.monotonic() + 30
        while (len(pool._ready.get(config, ())) < 2 or pool._starting.get(config)) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # a refill that overshot would have added its server by now
        assert len(pool._ready[config]) == 2 and pool._starting[config] == 0
        assert len({id(server) for server in taken}) == 8
    finally:
        for server in taken:
            server.close()
        pool.close()


def _started(run: str, agent: str, parent: str | None) -> AgentStarted:
    return AgentStarted(run_id=run, agent_id=agent, parent_id=parent, depth=0 if parent is None else 1, model="m",
                        prompt="", context_info={}, node_id="n")


def _finished(run: str, agent: str) -> AgentFinished:
    return AgentFinished(run_id=run, agent_id=agent, status="ok", answer="x", iterations=1)


def test_a_finished_child_takes_its_subtree_events_and_nothing_else():
    forwarder = EventForwarder.__new__(EventForwarder)  # no hub, no flush thread: only the buffer logic
    forwarder.hub = None
    forwarder._buffer, forwarder._parents = [], {}
    forwarder._lock, forwarder._send_lock = threading.Lock(), threading.Lock()
    events = [
        _started("r1", "c", "p"), _started("r1", "x", "p"), _started("r2", "c", "p"),  # same id, another run
        _started("r1", "g", "c"), LMCalled(run_id="r1", agent_id="g", call_id="1", model="m", role="sub",
                                           purpose="iteration"),
        _finished("r1", "g"), _finished("r1", "x"), _finished("r2", "c"), _finished("r1", "c"),
        _finished("r1", "lost"),  # e.g. a "retried" record of an agent that started on a dead host
    ]
    for event in events:
        forwarder.emit(event)
    taken = forwarder.take("r1", "c")
    assert [(e.run_id, e.agent_id, type(e).__name__) for e in taken] == [
        ("r1", "c", "AgentStarted"), ("r1", "g", "AgentStarted"), ("r1", "g", "LMCalled"),
        ("r1", "g", "AgentFinished"), ("r1", "c", "AgentFinished")]
    assert [(e.run_id, e.agent_id) for e in forwarder._buffer] == [
        ("r1", "x"), ("r2", "c"), ("r1", "x"), ("r2", "c"), ("r1", "lost")]
    assert set(forwarder._parents) == {("r1", "x"), ("r2", "c")}
    forwarder.forget("r2", "c")
    assert set(forwarder._parents) == {("r1", "x")}


def test_sandboxes_outlive_the_threads_that_started_them(tmp_path: Path):
    """bubblewrap's --die-with-parent follows the spawning *thread*: a worker (or a zygote, started by a
    pool refill) started on a thread that then ends must keep running until the process ends."""
    import time

    from rlm.sandbox.host import Sandbox

    config = SandboxConfig(cell_timeout_s=60)
    context = tmp_path / "context.txt"
    context.write_text("hello")
    started: dict[str, object] = {}
    pool = ForkServerPool(1)

    def start() -> None:
        sandbox = Sandbox(context, "text", config=config)
        sandbox.start()
        started["cold"] = sandbox
        pool.warm(config)

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    time.sleep(0.5)  # a death signal tied to the thread would have been delivered by now
    server = pool.take(config)
    forked = ForkedSandbox(server, payload_from_text("forked!", workdir=tmp_path).path, config=config)
    try:
        for sandbox, expected in ((started["cold"], "5"), (forked, "7")):
            result = sandbox.execute("print(len(context))")  # type: ignore[union-attr]  # set by the joined thread
            assert result.error is None and not result.restarted, result.error
            assert result.stdout.strip() == expected
    finally:
        started["cold"].close()  # type: ignore[union-attr]  # set by the joined thread
        forked.close()
        server.close()
        pool.close()


def test_sandboxes_whose_owner_is_gone_are_reaped_and_no_others():
    """A jail whose owning process died during bubblewrap's set-up outlives --die-with-parent; reap_orphans
    finds it by the owner's pid:start-time in bubblewrap's environment."""
    import os
    import subprocess
    import time

    from rlm.sandbox import jail

    gone = subprocess.Popen(["true"])
    gone.wait()
    argv = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid", "--die-with-parent",
            "--", "sleep", "60"]
    orphan = subprocess.Popen(argv, env={"PATH": os.environ["PATH"], jail.OWNER_ENV: f"{gone.pid}:12345"})
    owned = subprocess.Popen(argv, env={"PATH": os.environ["PATH"], jail.OWNER_ENV: jail._owner_token()})
    try:
        time.sleep(0.5)  # both jails are up (bubblewrap and its pid-namespace init)
        assert orphan.poll() is None and owned.poll() is None
        assert jail.reap_orphans() >= 1
        assert orphan.wait(timeout=10) == -9
        time.sleep(0.2)
        assert owned.poll() is None  # its owner (this process) is alive: left alone
    finally:
        for proc in (orphan, owned):
            proc.kill()
            proc.wait()
