"""A two-"machine" Ray cluster on one machine: each node in a network namespace of its own, joined by a veth pair.

The head runs in namespace ``A`` at 10.77.X.1 and a worker declaring one logical GPU in
namespace ``B`` at 10.77.X.2 (X from the test process's pid); the only link between them
is the veth pair this module creates, so Ray's ports, object transfers and a node's death
go over a network as between two hosts, and nothing listens outside the namespaces
(each holds only its loopback and its end of the pair). Each node is a ``ray start --block``
child process; stopping a node ends that process and its descendants by pid (never
``ray stop``, which ends every Ray process of the machine, other users' included).

Needs root (or CAP_NET_ADMIN) and iproute2; :func:`unavailable` says why not when it cannot run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil

VENV_BIN = Path(sys.executable).parent


def unavailable() -> str | None:
    """Why namespaces cannot be made here (``None``: they can)."""
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    probe = f"rlmprobe{os.getpid() % 100000}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class NetnsCluster:
    """See the module docstring. ``env`` is the Ray environment (token auth) every process of it needs."""

    def __init__(self, temp: Path, token_path: Path) -> None:
        tag = os.getpid() % 200 + 20
        self.ns_head, self.ns_gpu = f"rlmh{os.getpid()}", f"rlmg{os.getpid()}"
        self.if_head, self.if_gpu = f"rh{os.getpid() % 100000}", f"rg{os.getpid() % 100000}"
        self.ip_head, self.ip_gpu = f"10.77.{tag}.1", f"10.77.{tag}.2"
        self.port = 6390
        self.temp = temp
        # Nothing of another cluster's set-up (e.g. the single-machine switch that binds loopback only).
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path), RAY_USAGE_STATS_ENABLED="0")
        self.head: subprocess.Popen[bytes] | None = None
        self.gpu: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.ip_head}:{self.port}"

    def up(self) -> NetnsCluster:
        for ns in (self.ns_head, self.ns_gpu):
            _ip("netns", "add", ns)
        _ip("link", "add", self.if_head, "type", "veth", "peer", "name", self.if_gpu)
        for ns, interface, address in ((self.ns_head, self.if_head, self.ip_head),
                                       (self.ns_gpu, self.if_gpu, self.ip_gpu)):
            _ip("link", "set", interface, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", interface)
            _ip("-n", ns, "link", "set", interface, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        self.head = self._node(self.ns_head, ["--head", "--port", str(self.port), "--node-ip-address", self.ip_head,
                                              "--num-cpus", "1", "--num-gpus", "0", "--include-dashboard", "false"])
        self._wait_port()
        self.gpu = self._node(self.ns_gpu, ["--address", self.address, "--node-ip-address", self.ip_gpu,
                                            "--num-cpus", "1", "--num-gpus", "1"])
        return self

    def exec_args(self, namespace: str | None = None) -> list[str]:
        """The argv prefix that runs a command in the head's namespace (or ``namespace``)."""
        return ["ip", "netns", "exec", namespace or self.ns_head]

    def _node(self, ns: str, args: list[str]) -> subprocess.Popen[bytes]:
        argv = [*self.exec_args(ns), str(VENV_BIN / "ray"), "start", "--block", "--temp-dir", str(self.temp),
                "--disable-usage-stats", *args]
        log = open(self.temp.parent / f"{ns}.log", "ab")  # noqa: SIM115 - lives as long as the node
        return subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def _wait_port(self, timeout: float = 120.0) -> None:
        code = (f"import socket, time\nend = time.time() + {timeout}\n"
                "while time.time() < end:\n"
                f"    try:\n        socket.create_connection(({self.ip_head!r}, {self.port}), 1).close(); break\n"
                "    except OSError: time.sleep(0.3)\nelse: raise SystemExit(1)\n")
        subprocess.run([*self.exec_args(), sys.executable, "-c", code], check=True, timeout=timeout + 10)

    def kill_gpu_node(self) -> None:
        """The GPU node dies: its ``ray start`` and every process it started end at once (SIGKILL)."""
        _kill_tree(self.gpu)
        self.gpu = None

    def down(self) -> None:
        _kill_tree(self.gpu)
        _kill_tree(self.head)
        for ns in (self.ns_gpu, self.ns_head):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(self.temp, ignore_errors=True)


def _kill_tree(process: subprocess.Popen[bytes] | None) -> None:
    """Kill ``process`` and its descendants, by pid (Ray's daemons are its children)."""
    if process is None:
        return
    from rlm.agents.cluster import kill_processes

    try:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    kill_processes(tree)
    process.wait(timeout=10)

