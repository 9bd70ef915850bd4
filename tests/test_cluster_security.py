"""The embedded Ray cluster is closed to everyone but its user, and leaves nothing behind.

An open Ray cluster runs any code sent to it as its user, outside every sandbox. These tests run
`rlm ask --executor ray` as a user would and look at the cluster from outside while the run is in
a cell: every listening socket of its processes is on loopback, the GCS refuses a request without
the token (and answers one with it, so the check can fail), and once the command exits none of
its processes is left.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import repl

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _listening(processes: list[psutil.Process]) -> dict[tuple[str, int], str]:
    """``(address, port) -> process name`` of every listening TCP socket of ``processes``."""
    found: dict[tuple[str, int], str] = {}
    for process in processes:
        try:
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found[(conn.laddr.ip, conn.laddr.port)] = process.name()
        except psutil.Error:
            continue
    return found


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def _gcs_answers(port: int, token: str | None) -> str:
    """Ask the GCS for its nodes over plain gRPC; ``"ok"`` or the status code's name."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        metadata = [("authorization", f"Bearer {token}")] if token else None
        try:
            stub.GetAllNodeInfo(gcs_service_pb2.GetAllNodeInfoRequest(), metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            return exc.code().name
    return "ok"


def test_embedded_cluster_listens_on_loopback_needs_its_token_and_is_gone_after_exit(
        server_factory, rlm_home: Path, tmp_path: Path) -> None:
    server = server_factory(script=[repl("import time\ntime.sleep(6)\nFINAL('done')")])
    doc = tmp_path / "doc.txt"
    doc.write_text("some text\n")
    env = {**os.environ, "RLM_HOME": str(rlm_home), "RLM_EXECUTOR": "ray"}
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        env.pop(name, None)
    proc = subprocess.Popen([sys.executable, "-m", "rlm.cli", "ask", str(doc), "q", "--model", "openai/scripted",
                             "--api-base", server.base_url, "--json"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not server.requests and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert server.requests, "the run never reached the model"
        time.sleep(1.0)  # the cell sleeps 6 s: the cluster is up and busy
        processes = _descendants(proc.pid)
        listening = _listening(processes)
        gcs = [port for (address, port), name in listening.items() if name == "gcs_server"]
        token = (rlm_home / "ray-auth-token").read_text().strip()
        without, with_token = _gcs_answers(gcs[0], None), _gcs_answers(gcs[0], token)
    finally:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert '"answer": "done"' in out
    assert len(processes) >= 3 and gcs, (processes, listening)
    exposed = {key: name for key, name in listening.items() if not _is_loopback(key[0])}
    assert not exposed, f"listening beyond loopback: {exposed}"
    assert without == "UNAUTHENTICATED" and with_token == "ok", (without, with_token)
    assert (rlm_home / "ray-auth-token").stat().st_mode & 0o777 == 0o600
    assert "Ray" not in err and "SIGTERM" not in err, err  # Ray's own lines stay off the terminal
    left = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"still running after exit: {[(p.pid, p.name()) for p in left]}"


def _rlm_ask(server, doc: Path, home: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "RLM_HOME": str(home), "RLM_EXECUTOR": "local"}
    return subprocess.Popen([sys.executable, "-m", "rlm.cli", "ask", str(doc), "q", "--model", "openai/scripted",
                             "--api-base", server.base_url, "--json", *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("ending", ["answer", "sigterm", "sigint"])
def test_nothing_of_a_command_outlives_it(server_factory, rlm_home: Path, tmp_path: Path, ending: str) -> None:
    """The sandbox zygote's jail and its workers end with the command: on success, SIGTERM and Ctrl-C."""
    import signal

    code = "FINAL('done')" if ending == "answer" else "import time\ntime.sleep(30)"
    server = server_factory(script=[repl(f"x = rlm_query('child', 'c')\n{code}"), repl("FINAL('child')")])
    doc = tmp_path / "doc.txt"
    doc.write_text("text\n")
    proc = _rlm_ask(server, doc, rlm_home)
    processes: list[psutil.Process] = []
    deadline = time.monotonic() + 60
    while len(server.requests) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    processes = _descendants(proc.pid)
    if ending != "answer":
        proc.send_signal(signal.SIGTERM if ending == "sigterm" else signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    expected = {"answer": 0, "sigterm": 143, "sigint": 130}[ending]
    assert proc.returncode == expected, err
    if ending == "answer":
        assert '"answer": "done"' in out
    else:
        assert processes, "the run had no sandbox processes to check"  # the cell was sleeping in one
    deadline = time.monotonic() + 10
    left = processes
    while left and time.monotonic() < deadline:
        left = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.1)
    assert not left, f"still running after exit: {[(p.pid, p.name()) for p in left]}"
