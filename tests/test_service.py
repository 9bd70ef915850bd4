"""The resident service as a user meets it: `rlm serve` in a real process, the CLI talking to it.

Real processes, real sandboxes, a real run log, the scripted model server. The
service's answers must be the command's answers: same stdout, ``--json``, exit
codes and run-log rows as in-process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import main_loading, repl

from rlm.service.paths import ServicePaths, find_service

pytestmark = [pytest.mark.slow]

DOC = "line one\nline two has the word needle\nline three\n"


def rlm(*args: str, home: Path, env: dict[str, str] | None = None, timeout: float = 120,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "RLM_HOME": str(home), **(env or {})}
    return subprocess.run([sys.executable, "-m", "rlm.cli", *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout, input=stdin)


def model_args(server) -> list[str]:
    return ["--model", "openai/scripted", "--api-base", server.base_url]


class Served:
    """A `rlm serve` process for one RLM_HOME."""

    def __init__(self, home: Path, *extra: str) -> None:
        self.home = home
        env = {**os.environ, "RLM_HOME": str(home)}
        self.log = open(home.parent / f"serve-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115 - open while the service runs
        home.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "rlm.cli", "serve", *extra], env=env,
                                     stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 60
        while getattr(find_service(home), "pid", None) != self.proc.pid:
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.05)

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        self.log.close()


@pytest.fixture
def served(rlm_home: Path) -> Iterator[Served]:
    service = Served(rlm_home)
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    path = tmp_path / "doc.txt"
    path.write_text(DOC)
    return path


def _strip_timing(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("run_id", "duration_s")}


def test_ask_through_the_service_matches_in_process(server_factory, rlm_home, tmp_path, doc, served):
    script = [repl("x = context.count('line')\nprint('lines', x)"), repl("FINAL(x)")]
    server = server_factory(script=script * 2)
    via_service = rlm("ask", str(doc), "How many lines?", *model_args(server), "--json", home=rlm_home)
    here = rlm("ask", str(doc), "How many lines?", *model_args(server), "--json", "--no-service", home=rlm_home)
    assert via_service.returncode == here.returncode == 0, via_service.stderr + here.stderr
    first, second = json.loads(via_service.stdout), json.loads(here.stdout)
    assert _strip_timing(first) == _strip_timing(second)
    assert first["answer"] == "3"
    seconds = re.compile(r"\d+\.\d+s")
    assert seconds.sub("", via_service.stderr) == seconds.sub("", here.stderr)  # the same progress lines
    shown = rlm("show", first["run_id"], "--json", home=rlm_home)
    tree = json.loads(shown.stdout)
    assert tree["run"]["status"] == "ok" and tree["root"]["answer"] == "3"
    cells = [c["code"] for it in tree["root"]["iterations"] for c in it["cells"]]
    assert cells == ["x = context.count('line')\nprint('lines', x)", "FINAL(x)"]
    listed = rlm("runs", "--json", home=rlm_home)
    assert [r["run_id"] for r in json.loads(listed.stdout)][:2] == [second["run_id"], first["run_id"]]


def test_a_command_sent_to_the_service_imports_almost_nothing_of_rlm(server_factory, rlm_home, doc, served):
    """The command only parses and relays: the service builds the config, runs and renders."""
    server = server_factory(script=[repl("FINAL('relayed')")])
    argv = ["ask", str(doc), "q", *model_args(server), "--json", "-q"]
    heavy = ("rlm.config", "rlm.events", "rlm.runner", "rlm.results", "rlm.routing.spec", "dataclasses", "asyncio",
             "http.client", "ssl")
    done, loaded, code = main_loading(argv, heavy, rlm_home)
    assert json.loads(done.stdout)["answer"] == "relayed", done.stderr
    assert (code, loaded) == (0, [])


def test_a_run_sent_without_events_gets_its_result_and_no_events(server_factory, rlm_home, doc, served):
    from rlm.config import RLMConfig
    from rlm.events import EventBus
    from rlm.service.ask import remote_run
    from rlm.service.client import connect

    server = server_factory(script=[repl("FINAL('quiet')")] * 2)
    config = RLMConfig(model="openai/scripted", api_base=server.base_url, home=rlm_home)
    seen: list[Any] = []
    bus = EventBus()
    bus.subscribe(seen.append)
    client = connect(rlm_home)
    assert client is not None
    assert remote_run(client, "q", doc, config, bus=bus, events=False).answer == "quiet"  # type: ignore[union-attr]  # not detached: a result
    assert seen == []
    assert remote_run(client, "q", doc, config, bus=bus).answer == "quiet"  # type: ignore[union-attr]  # not detached: a result
    assert [type(e).__name__ for e in seen][-1] == "RunFinished"


def test_exit_codes_and_errors_are_the_commands(server_factory, rlm_home, tmp_path, doc, served):
    server = server_factory(script=[repl("print('step')")] * 5)
    limited = rlm("ask", str(doc), "q", *model_args(server), "--json", "--max-llm-calls", "2", home=rlm_home)
    assert limited.returncode == 1 and json.loads(limited.stdout)["status"] == "max_llm_calls"
    missing = rlm("ask", str(tmp_path / "nope.txt"), "q", *model_args(server), home=rlm_home)
    assert missing.returncode == 2 and "no such file" in missing.stderr and "Traceback" not in missing.stderr
    unknown = rlm("show", "no-such-run", home=rlm_home)
    assert unknown.returncode != 0 and "no-such-run" in unknown.stderr
    # The service checks the command's own environment, and names the fix in one line.
    keyless = rlm("ask", str(doc), "q", "--model", "openai/gpt-4.1-mini", "--json", home=rlm_home,
                  env={"OPENAI_API_KEY": "", "RLM_API_KEY": ""})
    assert keyless.returncode == 2 and "OPENAI_API_KEY" in keyless.stderr, keyless.stderr
    assert json.loads(keyless.stdout)["status"] == "error"
    # The service makes the calls: a key only the command's environment has is refused up front, with the fix.
    assert "GROQ_API_KEY" not in os.environ
    elsewhere = rlm("ask", str(doc), "q", "--model", "groq/llama-3.1-8b-instant", home=rlm_home,
                    env={"GROQ_API_KEY": "gsk-only-in-the-command"})
    assert elsewhere.returncode == 2, elsewhere.stderr
    assert "the service makes the run's model calls" in elsewhere.stderr and "GROQ_API_KEY" in elsewhere.stderr
    # A relative path is the command's, not the service's working directory.
    counter = server_factory(script=[repl("FINAL(len(context))")])
    relative = subprocess.run([sys.executable, "-m", "rlm.cli", "ask", doc.name, "q", *model_args(counter), "--json"],
                              capture_output=True, text=True, cwd=doc.parent, timeout=60,
                              env={**os.environ, "RLM_HOME": str(rlm_home)})
    assert json.loads(relative.stdout)["answer"] == str(len(DOC)), relative.stderr


def test_stdin_and_runs_while_a_run_writes(server_factory, rlm_home, doc, served):
    gate = threading.Event()

    def policy(messages):
        if "slow" in messages[-1]["content"] and not gate.is_set():
            return {"content": repl("import time\ntime.sleep(3)\nFINAL('slow done')"), "delay_ms": 0}
        return repl("FINAL(context.strip())")

    server = server_factory(policy=policy)
    slow = subprocess.Popen([sys.executable, "-m", "rlm.cli", "ask", str(doc), "slow", *model_args(server), "--json"],
                            env={**os.environ, "RLM_HOME": str(rlm_home)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        listed = rlm("runs", "--json", home=rlm_home)  # the run log is open for writing in the service
        assert listed.returncode == 0, listed.stderr
        assert [r["status"] for r in json.loads(listed.stdout)] == ["running"]
        echoed = rlm("ask", "-", "echo", *model_args(server), "--json", home=rlm_home, stdin="from stdin\n")
        assert json.loads(echoed.stdout)["answer"] == "from stdin"
    finally:
        out, err = slow.communicate(timeout=60)
    assert json.loads(out)["answer"] == "slow done", err


def test_ctrl_c_cancels_the_run_in_the_service_within_a_second(server_factory, rlm_home, doc, served):
    server = server_factory(policy=lambda messages: repl("import time\ntime.sleep(60)"))
    client = subprocess.Popen([sys.executable, "-m", "rlm.cli", "ask", str(doc), "q", *model_args(server)],
                              env={**os.environ, "RLM_HOME": str(rlm_home)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the cell is sleeping in the service's sandbox
    client.send_signal(signal.SIGINT)
    interrupted = time.time()
    _, err = client.communicate(timeout=30)
    assert client.returncode == 130 and "interrupted" in err
    run = None
    while time.time() - interrupted < 10:
        run = json.loads(rlm("runs", "--json", home=rlm_home).stdout)[0]
        if run["status"] != "running":
            break
        time.sleep(0.1)
    assert run is not None and run["status"] == "cancelled"
    assert run["finished_at"] - interrupted < 1.0  # the cell (sleeping 60 s) was killed at once


def test_detached_run_goes_on_after_the_client_leaves(server_factory, rlm_home, doc, served):
    server = server_factory(script=[{"content": repl("FINAL('later')"), "delay_ms": 500}])
    done = rlm("ask", str(doc), "q", *model_args(server), "--detach", home=rlm_home)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        shown = json.loads(rlm("show", run_id, "--json", home=rlm_home).stdout)
        if shown["run"]["status"] != "running":
            break
        time.sleep(0.1)
    assert shown["run"]["status"] == "ok" and shown["root"]["answer"] == "later"


def test_memory_commands_go_through_the_service_that_holds_the_store(rlm_home, tmp_path, served):
    added = rlm("memory", "add", "-", "-n", "ops", "--id", "m1", "--tags", "disk", home=rlm_home,
                stdin="E1042 means the disk quota was exceeded")
    assert added.returncode == 0 and added.stdout.strip() == "m1", added.stderr
    # The service now holds the only read-write connection: opening the file in this process fails ...
    here = rlm("memory", "list", "-n", "ops", "--no-service", home=rlm_home)
    assert here.returncode == 1 and "another process has it open" in here.stderr, here.stderr
    # ... and every sub-command works through the service, with the output and exit codes of the command line
    listed = rlm("memory", "list", "-n", "ops", "--json", home=rlm_home)
    assert [(e["id"], e["text"], e["tags"]) for e in json.loads(listed.stdout)] == [
        ("m1", "E1042 means the disk quota was exceeded", ["disk"])]
    edited = rlm("memory", "edit", "m1", "-n", "ops", "--text", "E1042: disk full", home=rlm_home)
    assert edited.returncode == 0 and "version 2" in edited.stdout
    found = rlm("memory", "search", "disk", "-n", "ops", "--json", home=rlm_home)
    assert json.loads(found.stdout)[0]["entry"]["text"] == "E1042: disk full"
    exported = tmp_path / "ops.jsonl"
    dumped = rlm("memory", "export", "-n", "ops", "-o", str(exported), home=rlm_home)
    assert dumped.returncode == 0 and "exported 1 entries" in dumped.stderr
    imported = rlm("memory", "import", str(exported), "-n", "copy", home=rlm_home)
    assert imported.returncode == 0 and "1 added" in imported.stderr
    shown = rlm("memory", "show", "m1", "-n", "copy", home=rlm_home)
    assert "E1042: disk full" in shown.stdout and "v1 add" in shown.stdout
    unknown = rlm("memory", "show", "nope", "-n", "ops", home=rlm_home)
    assert unknown.returncode == 2 and "no entry 'nope'" in unknown.stderr and "Traceback" not in unknown.stderr
    nothing = rlm("memory", "edit", "m1", "-n", "ops", home=rlm_home)
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr
    status = json.loads(rlm("service", "status", "--json", home=rlm_home).stdout)
    assert status["pid"] == served.proc.pid  # the same service answered all of them

    from rlm.config import RLMConfig
    from rlm.service.client import connect
    from rlm.tui.memory import open_memory_source

    pane = open_memory_source(RLMConfig(home=rlm_home), connect(rlm_home))  # the TUI's memory tab, through it
    assert pane is not None and pane.namespace == "copy"  # no --memory: the first namespace
    assert [(e.entry_id, e.text) for e in pane.entries()] == [("m1", "E1042: disk full")]
    assert [e.entry_id for e in pane.search("quota disk")] == ["m1"]


def _model_servers(parent: int) -> list[int]:
    """The embedded model's llama.cpp servers among ``parent``'s children."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != parent:
                continue
            if b"llama_cpp.server" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_the_embedded_model_server_stays_warm_in_the_service(rlm_home, doc, served):
    assert _model_servers(served.proc.pid) == []  # started when a run first uses it
    first = rlm("ask", str(doc), "How many lines?", "--max-iterations", "1", "--json", home=rlm_home, timeout=300)
    assert first.returncode in (0, 1) and json.loads(first.stdout)["run_id"], first.stderr
    (server,) = _model_servers(served.proc.pid)  # the run ended; its model server did not
    second = rlm("ask", str(doc), "Which line has a needle?", "--max-iterations", "1", "--json", home=rlm_home,
                 timeout=300)
    assert second.returncode in (0, 1) and json.loads(second.stdout)["run_id"], second.stderr
    assert _model_servers(served.proc.pid) == [server]  # the second run used the same one
    served.stop()
    deadline = time.monotonic() + 10  # it ends with the service (and is reaped once orphaned)
    while Path(f"/proc/{server}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{server}").exists()


@pytest.mark.ray
@pytest.mark.local_model
def test_the_service_serves_the_models_files_deployments_and_stops_them(rlm_home, doc, tmp_path):
    import psutil

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    models = tmp_path / "models.toml"
    models.write_text(f"""[serve]\nport = {port}\n[serve.smol]\nnum_cpus = 1\n
[groups.root]\ndeployments = [{{ serve = "smol" }}]\n""")
    bad = rlm("serve", "--models", str(models), "--serve-models", "nope", home=rlm_home)
    assert bad.returncode == 2 and "no [serve.NAME] deployment nope (it has: smol)" in bad.stderr, bad.stderr

    service = Served(rlm_home, "--models", str(models), "--serve-models")
    try:
        # asked while the deployment may still be starting: the request waits for it, then the run reaches it
        asked = rlm("ask", str(doc), "How many lines?", "--models", str(models), "--max-iterations", "1", "--json",
                    home=rlm_home, timeout=400)
        assert asked.returncode in (0, 1), asked.stderr + service.output()
        run_id = json.loads(asked.stdout)["run_id"]
        assert "rlm: model smol: llama.cpp at http://127.0.0.1:" in service.output()
        shown = json.loads(rlm("show", run_id, "--json", home=rlm_home).stdout)
        calls = [call for it in shown["root"]["iterations"] for call in it["lm_calls"]]
        assert calls and {call["deployment"] for call in calls} == {"smol"}
        family = [child.pid for child in psutil.Process(service.proc.pid).children(recursive=True)]
        assert family  # the embedded cluster, its Serve controller, proxy and the llama.cpp replica
    finally:
        service.stop()
    survivors = psutil.wait_procs([p for p in map(_process, family) if p is not None], timeout=30)[1]
    assert survivors == [], [p.cmdline() for p in survivors]


def _process(pid: int) -> Any:
    import psutil

    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def test_a_service_from_another_version_is_named_and_can_still_be_stopped(server_factory, rlm_home, doc, served):
    """A service started before an upgrade speaks an older protocol: commands say to restart it."""
    state = ServicePaths(rlm_home).state
    older = {k: v for k, v in json.loads(state.read_text()).items() if k != "protocol"}  # as before `protocol`
    state.write_text(json.dumps(older))
    server = server_factory(script=[repl("FINAL('x')")])
    refused = rlm("ask", str(doc), "q", *model_args(server), "--json", home=rlm_home)
    assert refused.returncode == 2 and "restart it (`rlm service stop`" in refused.stderr, refused.stderr
    assert json.loads(refused.stdout)["status"] == "error" and server.requests == []
    assert rlm("service", "status", home=rlm_home).returncode == 0
    stopped = rlm("service", "stop", home=rlm_home)
    assert stopped.returncode == 0 and served.proc.wait(timeout=30) == 0


def test_a_second_service_on_the_same_home_is_refused(rlm_home, served):
    again = rlm("serve", home=rlm_home, timeout=60)
    assert again.returncode == 1 and "a service already runs for" in again.stderr, again.stderr
    status = rlm("service", "status", "--json", home=rlm_home)
    assert json.loads(status.stdout)["pid"] == served.proc.pid


def test_kill_9_mid_run_fails_the_client_fast_and_the_next_start_recovers(server_factory, rlm_home, doc):
    served = Served(rlm_home)
    server = server_factory(policy=lambda messages: repl("import time\ntime.sleep(60)"))
    client = subprocess.Popen([sys.executable, "-m", "rlm.cli", "ask", str(doc), "q", *model_args(server), "--json"],
                              env={**os.environ, "RLM_HOME": str(rlm_home)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    served.proc.kill()
    killed = time.monotonic()
    out, err = client.communicate(timeout=30)
    assert time.monotonic() - killed < 5
    assert client.returncode == 1 and "the service stopped before the run ended" in err, err
    served.stop()
    assert find_service(rlm_home) is None  # the state file is stale: no service
    assert ServicePaths(rlm_home).state.exists()
    # Without a service the command runs in-process; the log (recovered from the journal) has the run.
    listed = json.loads(rlm("runs", "--json", home=rlm_home).stdout)
    assert len(listed) == 1 and listed[0]["question"] == "q"
    shown = json.loads(rlm("show", listed[0]["run_id"], "--json", home=rlm_home).stdout)
    assert shown["root"]["agent_id"] == "a0"  # every event journaled before the kill is there
    again = Served(rlm_home)  # a new service takes over the stale state
    try:
        assert json.loads(rlm("service", "status", "--json", home=rlm_home).stdout)["pid"] == again.proc.pid
    finally:
        again.stop()


def _connect_as_nobody(socket_path: str) -> str:
    """In a forked child running as uid 65534: connect, ask for the status; what happened."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec (the venv's interpreter need not be readable by nobody)
        os.close(read_end)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(socket_path)
            except OSError as exc:
                outcome = f"refused {exc.errno}"
            else:
                try:
                    s.sendall(b'{"op": "status"}\n')
                    answer = s.recv(100)
                    outcome = f"answer {answer!r}" if answer else "hung up"
                except ConnectionResetError:
                    outcome = "hung up"
            os.write(write_end, outcome.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as handle:
        return handle.read().decode()


@pytest.mark.skipif(os.getuid() != 0, reason="switching to another user needs root")
def test_other_users_are_refused(rlm_home, served, tmp_path):
    socket_path = find_service(rlm_home).socket
    assert os.stat(socket_path).st_mode & 0o777 == 0o600
    assert _connect_as_nobody(socket_path).startswith("refused")
    # Past the file's permissions (a link in a directory anyone may enter, the socket 0666), the peer's
    # uid is checked too.
    import tempfile

    open_dir = Path(tempfile.mkdtemp(prefix="rlm-peer-", dir="/tmp"))
    open_dir.chmod(0o755)
    link = open_dir / "service.sock"
    os.link(socket_path, link)
    os.chmod(socket_path, 0o666)
    try:
        outcome = _connect_as_nobody(str(link))
    finally:
        os.chmod(socket_path, 0o600)
        link.unlink()
        open_dir.rmdir()
    assert outcome == "hung up"  # the service closed the connection without a word
    assert "refused a connection from uid 65534" in served.output()


def test_past_the_queue_bound_the_service_says_busy(server_factory, rlm_home, doc):
    served = Served(rlm_home, "--max-running", "1", "--max-queued", "1")
    try:
        server = server_factory(script=[{"content": repl("FINAL('slow')"), "delay_ms": 1500}] * 3)
        procs = []
        for _ in range(3):
            procs.append(subprocess.Popen([sys.executable, "-m", "rlm.cli", "ask", str(doc), "q", *model_args(server),
                                           "--json"], env={**os.environ, "RLM_HOME": str(rlm_home)},
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            time.sleep(0.4)
        outcomes = [p.communicate(timeout=60) + (p.returncode,) for p in procs]
        answers = sorted(json.loads(out)["answer"] if code == 0 else "busy" for out, err, code in outcomes)
        assert answers == ["busy", "slow", "slow"], outcomes
        busy = next(err for out, err, code in outcomes if code != 0)
        assert "the service is busy" in busy
    finally:
        served.stop()


def test_service_start_is_idempotent_and_stop_stops_it(rlm_home):
    started = rlm("service", "start", home=rlm_home, timeout=90)
    assert started.returncode == 0, started.stderr
    pid = json.loads(rlm("service", "status", "--json", home=rlm_home).stdout)["pid"]
    again = rlm("service", "start", home=rlm_home, timeout=90)
    assert again.returncode == 0
    assert json.loads(rlm("service", "status", "--json", home=rlm_home).stdout)["pid"] == pid
    stopped = rlm("service", "stop", home=rlm_home, timeout=90)
    assert stopped.returncode == 0
    status = rlm("service", "status", "--json", home=rlm_home)
    assert status.returncode == 3 and json.loads(status.stdout) == {"running": False}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the service process is still alive")
    token = rlm("service", "token", home=rlm_home).stdout.strip()
    assert len(token) >= 32 and (rlm_home / "service.token").stat().st_mode & 0o777 == 0o600
    assert rlm("service", "token", home=rlm_home).stdout.strip() == token


def test_batch_goes_through_the_service(server_factory, rlm_home, tmp_path, served):
    server = server_factory(policy=lambda messages: repl("FINAL(context.strip() + '!')"))
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": f"t{i}", "question": "shout", "context": f"word{i}"}) + "\n"
                             for i in range(6)))
    out = tmp_path / "results.jsonl"
    done = rlm("batch", str(tasks), "--out", str(out), "--concurrency", "3", *model_args(server), "-q",
               home=rlm_home)
    assert done.returncode == 0, done.stderr
    rows = {row["id"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert {i: r["answer"] for i, r in rows.items()} == {f"t{i}": f"word{i}!" for i in range(6)}
    listed = json.loads(rlm("runs", "--json", home=rlm_home).stdout)  # recorded by the service
    assert sorted(r["run_id"] for r in listed) == sorted(r["run_id"] for r in rows.values())


def test_the_tui_runs_and_reads_through_the_service(server_factory, rlm_home, tmp_path, served):
    from test_tui_helpers import ask, drive, wait_for

    from rlm.config import RLMConfig
    from rlm.service.client import connect
    from rlm.tui.app import RLMApp
    from rlm.tui.screens import load_runs
    from rlm.tui.widgets import AnswerPane

    server = server_factory(script=[repl("print(len(context))"), repl("FINAL('via the service')")])
    doc = tmp_path / "doc.txt"
    doc.write_text(DOC)
    config = RLMConfig(model="openai/scripted", api_base=server.base_url, home=rlm_home)
    client = connect(rlm_home)
    assert client is not None
    app = RLMApp(config, doc, memory=None, service=client)

    async def scenario(pilot):
        await ask(pilot, "Through the service?")
        await wait_for(pilot, lambda: app.last_result is not None, what="the run")
        assert app.last_result.status == "ok" and app.last_result.answer == "via the service"
        assert "via the service" in app.query_one(AnswerPane).source
        assert len(app.state.agents) == 1  # the tree was built from the events the service streamed

    drive(app, scenario)
    (summary,) = load_runs(config, service=client)
    assert summary.question == "Through the service?" and summary.status == "ok"
