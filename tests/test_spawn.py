"""Pieces of the Ray spawn path that need no cluster: the sandbox pool and the event forwarder's hand-over."""

from __future__ import annotations

import threading
from pathlib import Path

from rlm.agents.host import EventForwarder
from rlm.agents.sandbox_pool import SandboxPool
from rlm.config import SandboxConfig
from rlm.events import AgentFinished, AgentStarted, LMCalled
from rlm.inputs import payload_from_text


def test_pooled_sandboxes_are_fresh_workers_each_on_its_own_context(tmp_path: Path):
    config = SandboxConfig(cell_timeout_s=60)
    pool = SandboxPool(0)
    try:
        assert pool.warm(config, {}, 3) == 3
        sandboxes = []
        for i in range(3):
            payload = payload_from_text(f"chunk-{i}", workdir=tmp_path)
            sandbox = pool.take(config, {}, payload, None)
            assert sandbox is not None
            assert sandbox.execute("FINAL('got ' + context)").final == f"got chunk-{i}"
            sandboxes.append(sandbox)
        assert len({s.pid for s in sandboxes}) == 3  # never one worker for two agents
        for sandbox in sandboxes:
            sandbox.close()
        # no waiting worker for another sandbox config: the caller starts one cold
        assert pool.take(SandboxConfig(cell_timeout_s=61), {}, payload_from_text("x", workdir=tmp_path), None) is None
    finally:
        pool.close()


def test_warm_returns_once_every_worker_has_booted(tmp_path: Path):
    config = SandboxConfig(cell_timeout_s=60)
    pool = SandboxPool(0)
    try:
        assert pool.warm(config, {}, 5) == 5
        waiting = list(pool._idle[pool.key(config, {})])
        assert len(waiting) == 5
        assert all(sandbox.booted(timeout=0) for sandbox in waiting)  # no waiting: the frame is already there
        sandbox = pool.take(config, {}, payload_from_text("abc", workdir=tmp_path), None)
        assert sandbox is not None and sandbox.execute("FINAL(context * 2)").final == "abcabc"
        sandbox.close()
    finally:
        pool.close()


def test_closed_pooled_sandboxes_are_torn_down_later_and_all_at_pool_close(tmp_path: Path):
    """close() hands the worker to the pool's teardown thread: it dies once the pool is quiet, and a
    closing pool kills whatever still waits (nothing is left running)."""
    import time

    config = SandboxConfig(cell_timeout_s=60)
    pool = SandboxPool(0)
    try:
        pool.warm(config, {}, 2)
        first = pool.take(config, {}, payload_from_text("one", workdir=tmp_path), None)
        assert first is not None and first.execute("FINAL(context)").final == "one"
        proc, placeholder = first._proc, first.placeholder
        assert proc is not None
        first.close()
        assert first._proc is None  # the agent is done with it at once
        deadline = time.monotonic() + 20
        while (proc.poll() is None or placeholder.exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is not None, "a retired sandbox was never torn down on a quiet pool"
        assert not placeholder.exists()

        second = pool.take(config, {}, payload_from_text("two", workdir=tmp_path), None)
        assert second is not None and second.execute("FINAL(context)").final == "two"
        proc = second._proc
        assert proc is not None
        second.close()
    finally:
        pool.close()
    assert proc.poll() is not None  # pool.close() waited for the teardown it forced
    assert not pool.directory.exists()


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
    """bubblewrap's --die-with-parent follows the spawning *thread*: a worker started (or pre-started
    by a pool refill) on a thread that then ends must keep running until the process ends."""
    import time

    from rlm.sandbox.host import Sandbox

    config = SandboxConfig(cell_timeout_s=60)
    context = tmp_path / "context.txt"
    context.write_text("hello")
    started: dict[str, object] = {}
    pool = SandboxPool(0)

    def start() -> None:
        sandbox = Sandbox(context, "text", config=config)
        sandbox.start()
        started["cold"] = sandbox
        pool.warm(config, {}, 1)

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    time.sleep(0.5)  # a death signal tied to the thread would have been delivered by now
    pooled = pool.take(config, {}, payload_from_text("pooled!", workdir=tmp_path), handler=lambda n, a: None)
    try:
        for sandbox, expected in ((started["cold"], "5"), (pooled, "7")):
            result = sandbox.execute("print(len(context))")  # type: ignore[union-attr]
            assert result.error is None and not result.restarted, result.error
            assert result.stdout.strip() == expected
    finally:
        started["cold"].close()  # type: ignore[union-attr]
        if pooled is not None:
            pooled.close()
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
