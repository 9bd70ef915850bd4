"""The escape and abuse suite: real model-style code in the real bubblewrap sandbox.

Every test runs code a hostile or careless model could write and asserts three
things: the attempt is contained, the host and the run survive (the sandbox
still answers with ``context`` intact), and the model gets an error it can
understand. Probes report ``{"escaped": bool, ...}`` as JSON; a handful of them
are also run against a deliberately *weakened* jail (``jail.spawn(weaken=...)``,
refused outside pytest) to show that they do notice an escape when there is one.

The probes that use the ``sandbox`` fixture run twice: in a worker with a jail of
its own, and in a worker forked by a run's zygote (``rlm.sandbox.forkserver``),
which is how agents get their sandboxes in a run. The zygote's own probes (what
sibling workers can and cannot do to each other) are at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, repl

from rlm.config import SandboxConfig
from rlm.errors import ConfigError, SandboxUnavailable
from rlm.runner import run
from rlm.sandbox import jail, packages
from rlm.sandbox.forkserver import ForkedSandbox, ForkServer
from rlm.sandbox.host import CellResult, HostCallError, Sandbox

CONTEXT = "the harbour master's launch code is KESTREL-7\n" * 20
CONFIG = SandboxConfig(cell_timeout_s=15, memory_mb=384, scratch_mb=16, max_output_chars=2_000, cpu_seconds=60)
HINT = "[sandbox] This REPL is isolated"


class WeakenedSandbox(Sandbox):
    """The real sandbox with named protections removed (test-only; see ``jail.WEAKENINGS``)."""

    def __init__(self, *args: Any, weaken: set[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.weaken = frozenset(weaken)

    def _spawn(self) -> jail.WorkerProcess:
        return jail.spawn(self.config.mode, self.context_path, scratch_mb=self.config.scratch_mb, weaken=self.weaken)


@pytest.fixture
def context_file(tmp_path: Path) -> Path:
    path = tmp_path / "context.txt"
    path.write_text(CONTEXT)
    return path


@pytest.fixture(params=["own-jail", "forked"])
def sandbox(request: pytest.FixtureRequest, context_file: Path) -> Iterator[Sandbox]:
    if request.param == "own-jail":
        with Sandbox(context_file, config=CONFIG) as box:
            yield box
        return
    server = ForkServer(CONFIG)
    try:
        with ForkedSandbox(server, context_file, config=CONFIG) as box:
            yield box
    finally:
        server.close()


def probe(box: Sandbox, code: str) -> dict[str, Any]:
    """Run a probe cell; its last printed line is a JSON report."""
    result = box.execute(textwrap.dedent(code))
    assert result.error is None, result.error
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_alive(box: Sandbox) -> None:
    """The host still drives the worker and ``context`` is intact."""
    result = box.execute("print(len(context), context.count('KESTREL-7'))")
    assert (result.error, result.stdout) == (None, f"{len(CONTEXT)} 20\n")


def assert_denied(result: CellResult, *needles: str) -> None:
    """The model got an understandable error naming what was refused, with the sandbox hint."""
    assert result.error is not None and not result.restarted
    for needle in needles:
        assert needle in result.error, result.error
    assert HINT in result.error


def weakened(context_file: Path, *weaken: str) -> WeakenedSandbox:
    return WeakenedSandbox(context_file, config=CONFIG, weaken=set(weaken))


# -- network ---------------------------------------------------------------------------------


def test_outbound_tcp_is_refused(sandbox: Sandbox) -> None:
    result = sandbox.execute("import socket\nsocket.create_connection(('1.1.1.1', 443), timeout=3)")
    assert_denied(result, "Address family not supported")
    assert_alive(sandbox)


def test_outbound_udp_and_dns_fail(sandbox: Sandbox) -> None:
    udp = sandbox.execute("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                          "s.sendto(b'x', ('8.8.8.8', 53))")
    assert_denied(udp, "Address family not supported")
    dns = sandbox.execute("import socket\nsocket.getaddrinfo('example.com', 443)")
    assert dns.error and "gaierror" in dns.error and HINT in dns.error
    assert_alive(sandbox)


LOOPBACK_PROBE = """
import json, socket
try:
    s = socket.create_connection(('127.0.0.1', {port}), timeout=2)
    s.sendall(b'escaped')
    print(json.dumps({{"escaped": True}}))
except OSError as exc:
    print(json.dumps({{"escaped": False, "error": str(exc)}}))
"""


@pytest.fixture
def loopback_listener() -> Iterator[tuple[int, list[bytes]]]:
    """A real TCP server on the host's loopback; records what any client sends."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    received: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                received.append(conn.recv(100))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], received
    stop.set()
    thread.join(5)
    server.close()


def test_host_loopback_service_is_unreachable(sandbox: Sandbox, loopback_listener: tuple[int, list[bytes]]) -> None:
    port, received = loopback_listener
    report = probe(sandbox, LOOPBACK_PROBE.format(port=port))
    assert report["escaped"] is False and "Address family not supported" in report["error"]
    time.sleep(0.3)
    assert received == []
    assert_alive(sandbox)


def test_loopback_probe_detects_escape_in_weakened_jail(context_file: Path,
                                                       loopback_listener: tuple[int, list[bytes]]) -> None:
    port, received = loopback_listener
    with weakened(context_file, "net", "seccomp") as box:
        assert probe(box, LOOPBACK_PROBE.format(port=port))["escaped"] is True
    deadline = time.monotonic() + 3
    while not received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert received == [b"escaped"]


ABSTRACT_PROBE = """
import json, socket
s = socket.socket(socket.AF_UNIX)
try:
    s.connect({name!r})
    print(json.dumps({{"escaped": True}}))
except OSError as exc:
    print(json.dumps({{"escaped": False, "error": exc.__class__.__name__}}))
"""


def test_host_abstract_unix_socket_is_unreachable(context_file: Path) -> None:
    name = "\0rlm-escape-" + uuid.uuid4().hex
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(name)
    listener.listen(1)
    try:
        with Sandbox(context_file, config=CONFIG) as box:
            assert probe(box, ABSTRACT_PROBE.format(name=name)) == {"escaped": False, "error": "ConnectionRefusedError"}
            assert_alive(box)
        with weakened(context_file, "net") as box:  # same network namespace as the host: reachable
            assert probe(box, ABSTRACT_PROBE.format(name=name))["escaped"] is True
    finally:
        listener.close()


def test_raw_netlink_and_packet_sockets_are_refused(sandbox: Sandbox) -> None:
    report = probe(sandbox, """
        import json, socket
        out = {}
        for name, args in {"inet6": (socket.AF_INET6,), "netlink": (socket.AF_NETLINK, socket.SOCK_RAW, 0),
                           "packet": (socket.AF_PACKET, socket.SOCK_RAW, 0),
                           "raw": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)}.items():
            try:
                socket.socket(*args).close(); out[name] = "opened"
            except OSError as exc:
                out[name] = exc.errno
        print(json.dumps(out))
    """)
    assert report == {"inet6": 97, "netlink": 97, "packet": 97, "raw": 97}  # EAFNOSUPPORT
    assert_alive(sandbox)


def test_only_loopback_interface_exists(sandbox: Sandbox) -> None:
    report = probe(sandbox, """
        import json
        names = [line.split(':')[0].strip() for line in open('/proc/self/net/dev').read().splitlines()[2:]]
        print(json.dumps({"interfaces": names}))
    """)
    assert report["interfaces"] == ["lo"]


# -- the filesystem ------------------------------------------------------------------------------

READ_PROBE = """
import json, os
found = {{}}
for path in {paths!r}:
    try:
        if os.path.isdir(path):
            found[path] = os.listdir(path)[:5]
        else:
            with open(path, 'rb') as handle:
                found[path] = handle.read(64).decode('latin-1')
    except OSError as exc:
        pass
print(json.dumps({{"escaped": bool(found), "found": found}}))
"""


def test_host_home_is_invisible(sandbox: Sandbox) -> None:
    home = str(Path.home())
    report = probe(sandbox, READ_PROBE.format(paths=[home, home + "/.ssh", home + "/.bash_history", "/home"]))
    assert report == {"escaped": False, "found": {}}
    tilde = sandbox.execute("import os\nprint(os.path.expanduser('~'), os.listdir(os.path.expanduser('~')))")
    home_in_jail, listing = tilde.stdout.split(" ", 1)
    assert listing == "[]\n"  # an empty scratch directory: /tmp, or a forked worker's own /tmp/agent-*
    assert home_in_jail == "/tmp" or home_in_jail.startswith("/tmp/agent-")


def test_run_log_and_rlm_home_are_invisible(sandbox: Sandbox, rlm_home: Path) -> None:
    rlm_home.mkdir(parents=True, exist_ok=True)
    (rlm_home / "rlm.duckdb").write_bytes(b"run log with secrets")
    paths = [str(rlm_home), str(rlm_home / "rlm.duckdb"), str(rlm_home.parent)]
    assert probe(sandbox, READ_PROBE.format(paths=paths)) == {"escaped": False, "found": {}}


def test_project_checkout_is_invisible(sandbox: Sandbox) -> None:
    paths = [str(REPO / "README.md"), str(REPO), str(REPO / ".venv"), str(REPO / "sandbox" / "host.py")]
    assert probe(sandbox, READ_PROBE.format(paths=paths)) == {"escaped": False, "found": {}}


def test_project_probe_detects_escape_in_weakened_jail(context_file: Path) -> None:
    # The weakened jail exposes the host's top-level directories except /tmp (where a CI
    # checkout may live), so the host file the probe must find is placed under /var/tmp.
    host_file = Path("/var/tmp") / f"rlm-probe-{os.getpid()}-{time.monotonic_ns()}.txt"
    host_file.write_text("rlm project file")
    try:
        with weakened(context_file, "fs") as box:
            report = probe(box, READ_PROBE.format(paths=[str(host_file)]))
    finally:
        host_file.unlink()
    assert report["escaped"] is True and "rlm" in report["found"][str(host_file)]


def test_shadow_and_secret_paths_are_invisible(sandbox: Sandbox) -> None:
    paths = ["/etc/shadow", "/etc/gshadow", "/etc/ssh", "/root", "/run", "/var/run/secrets", "/etc/sudoers",
             "/etc/hostname", "/etc/resolv.conf", "/sys/class", "/boot", "/srv", "/mnt"]
    assert probe(sandbox, READ_PROBE.format(paths=paths)) == {"escaped": False, "found": {}}


def test_context_file_host_path_is_invisible(sandbox: Sandbox, context_file: Path) -> None:
    report = probe(sandbox, READ_PROBE.format(paths=[str(context_file), str(context_file.parent)]))
    assert report == {"escaped": False, "found": {}}
    if isinstance(sandbox, ForkedSandbox):  # its context came as a descriptor, closed once decoded
        inside = sandbox.execute("import os\nfds = os.listdir('/proc/self/fd')\n"
                                 "print([os.readlink(f'/proc/self/fd/{fd}') for fd in fds if fd != '5'])")
        assert str(context_file) not in inside.stdout and "context" not in inside.stdout, inside.stdout
    else:
        inside = sandbox.execute("print(open('/input/context').read() == context)")
        assert inside.stdout == "True\n"


def _worker_digests() -> dict[str, str]:
    """The worker's sources and its compiled copies (the .pyc cache bound into the jail)."""
    files = [jail.WORKER_DIR / name for name in jail.WORKER_FILES]
    compiled = jail.worker_files()
    if compiled.compiled:
        files += sorted(compiled.directory.iterdir())
    return {str(path): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


def test_writes_outside_scratch_fail_and_host_files_are_untouched(sandbox: Sandbox, context_file: Path) -> None:
    worker_digests = _worker_digests()
    report = probe(sandbox, """
        import json, os
        out = {}
        for path in ['/input/context', '/opt/rlm-sandbox/worker.py', '/opt/rlm-sandbox/worker.pyc',
                     '/opt/rlm-sandbox/protocol.pyc', '/opt/rlm-sandbox/pwned', '/usr/pwned', '/etc/passwd', '/pwned',
                     '/opt/rlm-python/bin/pwned']:
            try:
                with open(path, 'a') as handle:
                    handle.write('pwned')
                out[path] = 'written'
            except OSError as exc:
                out[path] = exc.errno
        # host-global sysctls: opened for writing only, never written (the sandbox's uid may map to host root)
        for path in ['/proc/sys/kernel/core_pattern', '/proc/sys/vm/drop_caches', '/proc/sys/kernel/hostname']:
            try:
                os.close(os.open(path, os.O_WRONLY))
                out[path] = 'writable'
            except OSError as exc:
                out[path] = exc.errno
        with open('/tmp/ok.txt', 'w') as handle:
            handle.write('scratch works')
        out['scratch'] = open('/tmp/ok.txt').read()
        print(json.dumps(out))
    """)
    assert report.pop("scratch") == "scratch works"
    assert all(isinstance(v, int) for v in report.values()), report  # every write refused with an errno
    assert context_file.read_text() == CONTEXT
    assert _worker_digests() == worker_digests
    denied = sandbox.execute("open('/usr/pwned', 'w')")
    assert_denied(denied, "Read-only file system")
    assert_alive(sandbox)


def test_scratch_and_dev_shm_are_size_capped(sandbox: Sandbox) -> None:
    for target in ("/tmp/fill", "/dev/shm/fill"):
        result = sandbox.execute(f"with open('{target}', 'wb') as f:\n    for _ in range(64):\n"
                                 f"        f.write(b'x' * (1 << 20))")
        assert_denied(result, "No space left on device")
    assert_alive(sandbox)


def test_no_sysfs_and_only_harmless_devices(sandbox: Sandbox) -> None:
    report = probe(sandbox, """
        import json, os
        print(json.dumps({"sys": os.path.exists('/sys/kernel'), "dev": sorted(os.listdir('/dev'))}))
    """)
    assert report["sys"] is False
    assert set(report["dev"]) <= {"console", "core", "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr",
                                  "stdin", "stdout", "tty", "urandom", "zero"}


def test_concurrent_workers_cannot_see_each_other(context_file: Path) -> None:
    with Sandbox(context_file, config=CONFIG) as first, Sandbox(context_file, config=CONFIG) as second:
        first.execute("open('/tmp/secret-of-first', 'w').write('first only')\nimport time")
        running = threading.Thread(target=first.execute, args=("time.sleep(2)",))
        running.start()  # the first worker is busy while the second looks around
        report = probe(second, """
            import json, os
            print(json.dumps({"scratch": os.listdir('/tmp'), "pids": sorted(p for p in os.listdir('/proc')
                                                                            if p.isdigit())}))
        """)
        running.join()
        assert report == {"scratch": [], "pids": ["1", "2"]}
        assert first.execute("print(open('/tmp/secret-of-first').read())").stdout == "first only\n"


# -- environment, /proc, privileges ----------------------------------------------------------

SECRET_PROBE = """
import json, os
leaks = [k for k, v in os.environ.items() if 'sk-fake' in v]
for entry in os.listdir('/proc'):
    for name in ('environ', 'cmdline'):
        try:
            if b'sk-fake' in open(f'/proc/{entry}/{name}', 'rb').read():
                leaks.append(f'/proc/{entry}/{name}')
        except OSError:
            pass
print(json.dumps({"escaped": bool(leaks), "leaks": leaks, "env": sorted(os.environ)}))
"""


def test_host_secret_env_never_reaches_the_worker(context_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLM_FAKE_SECRET", "sk-fake-0123456789")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake-openai")
    with Sandbox(context_file, config=CONFIG) as box:
        report = probe(box, SECRET_PROBE)
    assert report["escaped"] is False
    assert set(report["env"]) <= set(jail.WORKER_ENV) | {"LD_LIBRARY_PATH", "PWD"}  # built from scratch


def test_secret_probe_detects_escape_in_weakened_jail(context_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLM_FAKE_SECRET", "sk-fake-0123456789")
    with weakened(context_file, "env") as box:
        report = probe(box, SECRET_PROBE)
    assert report["escaped"] is True and "/proc/1/environ" in report["leaks"]


def test_proc_shows_only_the_sandbox_and_no_host_paths(sandbox: Sandbox, context_file: Path) -> None:
    report = probe(sandbox, """
        import json, os
        pids = sorted(p for p in os.listdir('/proc') if p.isdigit())
        print(json.dumps({"pids": pids, "init": open('/proc/1/cmdline', 'rb').read().decode().split('\\0'),
                          "ppid": os.getppid(), "pid": os.getpid()}))
    """)
    if isinstance(sandbox, ForkedSandbox):  # bwrap's init, the zygote, this worker
        assert report["pids"] == ["1", "2", "3"] and (report["ppid"], report["pid"]) == (2, 3)
    else:
        assert report["pids"] == ["1", "2"] and (report["ppid"], report["pid"]) == (1, 2)
    init = " ".join(report["init"])
    assert "--ro-bind" not in init and str(context_file) not in init and str(REPO) not in init
    assert str(jail.worker_files().directory) not in init  # nor the path of the worker's .pyc cache


STATUS_PROBE = """
import json, os, threading
ready, release = threading.Event(), threading.Event()
def hold():
    ready.set(); release.wait(5)
thread = threading.Thread(target=hold); thread.start(); ready.wait(5)
status = {}
for tid in os.listdir('/proc/self/task'):
    fields = dict(line.split(':', 1) for line in open(f'/proc/self/task/{tid}/status'))
    status[tid] = {k: fields[k].strip() for k in ('Seccomp', 'NoNewPrivs', 'CapInh', 'CapPrm', 'CapEff', 'CapBnd',
                                                   'CapAmb')}
release.set(); thread.join()
weak = [tid for tid, s in status.items() if s['Seccomp'] != '2' or s['NoNewPrivs'] != '1'
        or any(int(s[c], 16) for c in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb'))]
print(json.dumps({"escaped": bool(weak), "threads": len(status), "status": status}))
"""


def test_seccomp_no_new_privs_and_no_capabilities_on_every_thread(sandbox: Sandbox) -> None:
    report = probe(sandbox, STATUS_PROBE)
    assert report["escaped"] is False and report["threads"] == 2


def test_status_probe_detects_missing_seccomp_in_weakened_jail(context_file: Path) -> None:
    with weakened(context_file, "seccomp") as box:
        report = probe(box, STATUS_PROBE)
    assert report["escaped"] is True
    assert {s["Seccomp"] for s in report["status"].values()} == {"0"}


def test_no_host_descriptors_are_inherited(sandbox: Sandbox) -> None:
    report = probe(sandbox, """
        import json, os
        fds = {}
        for fd in os.listdir('/proc/self/fd'):
            try:
                fds[fd] = os.readlink(f'/proc/self/fd/{fd}')
            except OSError:
                pass  # the directory listing's own descriptor
        print(json.dumps(fds))
    """)
    assert set(report.values()) <= {"/dev/null"} | {v for v in report.values() if v.startswith("pipe:")}
    assert len([v for v in report.values() if v.startswith("pipe:")]) == 3  # stderr + the two protocol pipes


# -- processes, memory, CPU ---------------------------------------------------------------


def test_fork_bomb_is_refused(sandbox: Sandbox) -> None:
    result = sandbox.execute("import os\nwhile True:\n    os.fork()")
    assert_denied(result, "PermissionError", "Operation not permitted")
    spawn = sandbox.execute("import subprocess\nsubprocess.run(['/bin/true'])")
    assert_denied(spawn, "Operation not permitted")
    assert_alive(sandbox)


FORK_PROBE = """
import json, os
try:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    print(json.dumps({"escaped": True}))
except OSError as exc:
    print(json.dumps({"escaped": False, "errno": exc.errno}))
"""


def test_fork_probe_detects_process_creation_in_weakened_jail(context_file: Path) -> None:
    with Sandbox(context_file, config=CONFIG) as box:
        assert probe(box, FORK_PROBE) == {"escaped": False, "errno": 1}
    with weakened(context_file, "seccomp") as box:
        assert probe(box, FORK_PROBE)["escaped"] is True


def test_thread_bomb_is_bounded(sandbox: Sandbox) -> None:
    result = sandbox.execute(textwrap.dedent("""
        import threading
        stop = threading.Event()
        started = 0
        for _ in range(20000):
            threading.Thread(target=stop.wait, daemon=True).start()
            started += 1
    """))
    assert result.error and ("can't start new thread" in result.error or "MemoryError" in result.error)
    assert not result.restarted
    count = sandbox.execute("stop.set()\nprint(started < 20000)")
    assert count.stdout == "True\n"
    assert_alive(sandbox)


def test_memory_bomb_is_a_memory_error(sandbox: Sandbox) -> None:
    sandbox.execute("kept = 'still here'")
    result = sandbox.execute("blob = bytearray(8 * 1024 ** 3)")
    assert result.error and "MemoryError" in result.error and "memory limit" in result.error
    gradual = sandbox.execute("hoard = []\nwhile True:\n    hoard.append(bytearray(32 * 1024 ** 2))")
    assert gradual.error and "MemoryError" in gradual.error
    assert sandbox.execute("del hoard\nprint(kept)").stdout == "still here\n"
    assert_alive(sandbox)


def test_cpu_spin_times_out_and_the_model_is_told(sandbox: Sandbox) -> None:
    sandbox.execute("x = 1")
    started = time.monotonic()
    result = sandbox.execute("while True:\n    pass", timeout=1.0)
    assert time.monotonic() - started < 5
    assert result.restarted and "timed out after 1s" in result.error and "variables are gone" in result.error
    assert "NameError" in (sandbox.execute("x").error or "")
    assert_alive(sandbox)


def test_cpu_rlimit_kills_a_spinning_worker(context_file: Path) -> None:
    config = SandboxConfig(cell_timeout_s=30, memory_mb=384, scratch_mb=16, cpu_seconds=1)
    with Sandbox(context_file, config=config) as box:
        result = box.execute("while True:\n    pass")
        assert result.restarted and "killed by signal" in result.error
        assert_alive(box)


def test_never_returning_cell_ignoring_sigterm_is_killed(sandbox: Sandbox) -> None:
    worker = sandbox._worker
    assert worker is not None and worker.init_pidfd is not None
    init_pid = _pid_of_pidfd(worker.init_pidfd)
    started = time.monotonic()
    result = sandbox.execute(textwrap.dedent("""
        import signal, time
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        while True:
            try:
                time.sleep(100)
            except BaseException:
                pass
    """), timeout=1.0)
    assert time.monotonic() - started < 5
    assert result.restarted and "timed out" in result.error
    assert _gone(init_pid)  # the old pid namespace is gone
    assert_alive(sandbox)


def _gone(pid: int, wait: float = 3.0) -> bool:
    """True once ``pid`` no longer runs (absent, or a zombie waiting for its reaper)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return True
        except (OSError, IndexError):
            return True
        time.sleep(0.05)
    return False


def _pid_of_pidfd(pidfd: int) -> int:
    for line in Path(f"/proc/self/fdinfo/{pidfd}").read_text().splitlines():
        if line.startswith("Pid:"):
            return int(line.split()[1])
    raise AssertionError("no Pid in fdinfo")


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found |= {int(child)} | _descendants(int(child))
    return found


def test_close_kills_the_whole_pid_namespace(context_file: Path) -> None:
    config = SandboxConfig(cell_timeout_s=15, memory_mb=384, scratch_mb=16, allow_subprocesses=True)
    box = Sandbox(context_file, config=config)
    box.start()
    result = box.execute("import subprocess\nkids = [subprocess.Popen(['sleep', '1000']) for _ in range(3)]\n"
                         "print(len(kids))")
    assert result.stdout == "3\n", result.error
    assert box._worker is not None and box._worker.init_pidfd is not None
    inside = _descendants(_pid_of_pidfd(box._worker.init_pidfd))
    assert len(inside) >= 4  # the worker and its three sleepers
    box.close()
    assert [pid for pid in inside if not _gone(pid)] == []


# -- output --------------------------------------------------------------------------------


def test_infinite_output_is_capped_and_stopped(sandbox: Sandbox) -> None:
    result = sandbox.execute("while True:\n    print('flood ' * 100)", timeout=1.5)
    assert result.restarted and "timed out" in result.error
    flood = sandbox.execute("import os\nfor _ in range(200):\n    os.write(2, b'x' * 100_000)\nprint('done')")
    assert flood.stdout == "done\n" and len(sandbox._stderr_tail) <= 4096
    assert_alive(sandbox)


def test_huge_single_line_is_truncated(sandbox: Sandbox) -> None:
    result = sandbox.execute("print('y' * 50_000_000)")
    assert result.error is None and len(result.stdout) == CONFIG.max_output_chars
    assert result.truncated >= 50_000_000 - CONFIG.max_output_chars
    assert_alive(sandbox)


def test_terminal_escapes_are_neutralised(sandbox: Sandbox) -> None:
    result = sandbox.execute(r"print('\x1b]0;pwned\x07\x1b[2J\rfake prompt\u202etxt.exe')" "\n"
                             r"FINAL('answer\x1b[31m')")
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout and "\r" not in result.stdout
    assert "\\x1b]0;pwned\\x07" in result.stdout and "\\u202e" in result.stdout
    assert result.final == "answer\\x1b[31m"


def test_raw_writes_to_stdio_cannot_corrupt_the_protocol(sandbox: Sandbox) -> None:
    result = sandbox.execute("import os, struct\nos.write(1, struct.pack('>I', 7) + b'garbage')\n"
                             "os.write(0, b'x') if False else None\nprint('fine')")
    assert result.stdout == "fine\n" and result.error is None
    assert_alive(sandbox)


# -- signals and native code -----------------------------------------------------------------


def test_signalling_the_parent_and_the_host_is_harmless(sandbox: Sandbox) -> None:
    canary = subprocess.Popen(["sleep", "30"])
    try:
        result = sandbox.execute(textwrap.dedent(f"""
            import os, signal
            errors = []
            for pid, sig in ((os.getppid(), signal.SIGKILL), (1, signal.SIGTERM), ({os.getpid()}, signal.SIGKILL),
                             ({canary.pid}, signal.SIGKILL)):
                try:
                    os.kill(pid, sig)
                    errors.append(0)
                except OSError as exc:
                    errors.append(exc.errno)
            print(errors)
        """))
        assert result.error is None
        if isinstance(sandbox, ForkedSandbox):  # its own filter: signals to itself only
            assert result.stdout == "[1, 1, 1, 1]\n"  # EPERM
        else:  # the namespace's init is immune from inside; host pids do not exist here (ESRCH)
            assert result.stdout == "[0, 0, 3, 3]\n"
        assert canary.poll() is None
        assert_alive(sandbox)
    finally:
        canary.kill()
        canary.wait()


def test_kill_everything_and_suicide_affect_only_the_sandbox(sandbox: Sandbox) -> None:
    canary = subprocess.Popen(["sleep", "30"])
    try:
        everyone = sandbox.execute("import os, signal\nos.kill(-1, signal.SIGKILL)")
        # nobody else to kill in a jail of its own; a forked worker may signal only itself
        refused = "PermissionError" if isinstance(sandbox, ForkedSandbox) else "ProcessLookupError"
        assert everyone.error and refused in everyone.error
        result = sandbox.execute("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
        assert result.restarted and "killed by signal SIGKILL" in result.error
        assert canary.poll() is None
        assert_alive(sandbox)
    finally:
        canary.kill()
        canary.wait()


SYSCALL_PROBE = """
import ctypes, errno, json
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(number, *args):
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    return errno.errorcode.get(ctypes.get_errno(), 'OK') if result == -1 else 'OK'
print(json.dumps({{name: call(*spec) for name, spec in {calls!r}.items()}}))
"""
# x86_64 numbers; each call is harmless if it were allowed (bad pointers, queries, or flags that fail later).
DENIED_SYSCALLS = {
    "ptrace": (101, 16, 1, 0, 0),  # PTRACE_ATTACH to pid 1
    "process_vm_readv": (310, 1, 0, 0, 0, 0, 0), "kcmp": (312, 1, 2, 0, 0, 0), "pidfd_getfd": (438, 0, 0, 0),
    "mount": (165, 0, 0, 0, 0, 0), "umount2": (166, 0, 0), "pivot_root": (155, 0, 0), "chroot": (161, 0),
    "unshare": (272, 0x10000000), "setns": (308, 0, 0), "bpf": (321, 0, 0, 0),
    "perf_event_open": (298, 0, 0, -1, -1, 0),
    "userfaultfd": (323, 0), "keyctl": (250, 0, 0), "add_key": (248, 0, 0, 0, 0, 0), "request_key": (249, 0, 0, 0, 0),
    "io_uring_setup": (425, 1, 0), "personality": (135, 0xFFFFFFFF), "init_module": (175, 0, 0, 0),
    "kexec_load": (246, 0, 0, 0, 0), "open_by_handle_at": (304, 0, 0, 0),
}


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the probe uses x86_64 syscall numbers")
def test_raw_syscalls_through_ctypes_are_denied(sandbox: Sandbox) -> None:
    report = probe(sandbox, SYSCALL_PROBE.format(calls=DENIED_SYSCALLS))
    assert report == {name: "EPERM" for name in DENIED_SYSCALLS}
    assert_alive(sandbox)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the probe uses x86_64 syscall numbers")
def test_syscall_probe_detects_missing_filter_in_weakened_jail(context_file: Path) -> None:
    with weakened(context_file, "seccomp") as box:
        report = probe(box, SYSCALL_PROBE.format(calls={"personality": (135, 0xFFFFFFFF), "keyctl": (250, 0, 0)}))
    assert report["personality"] == "OK" and report["keyctl"] != "EPERM"


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the probe uses x86_64 syscall numbers")
def test_clone3_is_enosys_namespaced_clone_is_eperm_and_threads_work(sandbox: Sandbox) -> None:
    calls = {"clone3": (435, 0, 0), "clone_newuser": (56, 0x10000000 | 17, 0, 0, 0, 0),
             "clone_newnet_thread": (56, 0x40000000 | 0x10000 | 0x100 | 0x800, 0, 0, 0, 0)}
    report = probe(sandbox, SYSCALL_PROBE.format(calls=calls))
    assert report == {"clone3": "ENOSYS", "clone_newuser": "EPERM", "clone_newnet_thread": "EPERM"}
    threads = sandbox.execute("import threading\nout = []\nt = threading.Thread(target=out.append, args=(1,))\n"
                              "t.start(); t.join(); print(out)")
    assert threads.stdout == "[1]\n"


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the probe uses x86_64 syscall numbers")
def test_terminal_injection_ioctls_are_denied_even_with_high_bits(sandbox: Sandbox) -> None:
    calls = {"tiocsti": (16, 0, 0x5412, 0), "tiocsti_high_bits": (16, 0, 0x1_0000_5412, 0),
             "tioclinux": (16, 0, 0x541C, 0), "fionread": (16, 0, 0x541B, 0)}
    report = probe(sandbox, SYSCALL_PROBE.format(calls=calls))
    # FIONREAD on /dev/null is an ordinary ioctl: it reaches the kernel (ENOTTY/EINVAL), not the filter
    assert report["tiocsti"] == report["tiocsti_high_bits"] == report["tioclinux"] == "EPERM"
    assert report["fionread"] != "EPERM"


def test_ctypes_segfault_kills_only_the_worker(sandbox: Sandbox) -> None:
    sandbox.execute("x = 41")
    result = sandbox.execute("import ctypes\nctypes.string_at(0)")
    assert result.restarted and "SIGSEGV" in result.error and "variables are gone" in result.error
    assert_alive(sandbox)


def test_deep_recursion_is_a_recursion_error(sandbox: Sandbox) -> None:
    result = sandbox.execute("def down(n):\n    return down(n + 1)\ndown(0)")
    assert result.error and "RecursionError" in result.error and not result.restarted
    assert_alive(sandbox)


def test_c_stack_overflow_with_a_raised_limit_crashes_only_the_worker(sandbox: Sandbox) -> None:
    result = sandbox.execute("import sys\nsys.setrecursionlimit(10 ** 8)\nnested = []\n"
                             "for _ in range(10 ** 6):\n    nested = [nested]\nrepr(nested)")
    assert result.restarted and "SIGSEGV" in result.error and "variables are gone" in result.error
    assert_alive(sandbox)


# -- the protocol ----------------------------------------------------------------------------

FORGE = """
import json, os, struct
def frame(obj):
    body = json.dumps(obj).encode()
    return struct.pack('>I', len(body)) + body
out_fd = [fd for fd in range(3, 10) if os.path.exists(f'/proc/self/fd/{fd}')
          and os.readlink(f'/proc/self/fd/{fd}').startswith('pipe:') and os.get_blocking(fd)
          and not os.access(f'/proc/self/fd/{fd}', os.R_OK) or fd == 4][0]
"""


def test_garbage_on_the_protocol_pipe_restarts_the_worker(sandbox: Sandbox) -> None:
    result = sandbox.execute("import os\nos.write(4, b'\\x00\\x00\\x00\\x05hello')\nimport time\ntime.sleep(5)")
    assert result.restarted and "broke the sandbox protocol" in result.error and "not valid JSON" in result.error
    assert_alive(sandbox)


def test_oversized_frame_is_rejected_without_reading_it(sandbox: Sandbox) -> None:
    started = time.monotonic()
    result = sandbox.execute("import os, struct, time\nos.write(4, struct.pack('>I', 2 ** 31))\ntime.sleep(5)")
    assert time.monotonic() - started < 3
    assert result.restarted and "over the limit" in result.error
    assert_alive(sandbox)


def test_forged_call_to_an_unknown_host_function_is_refused(context_file: Path, tmp_path: Path) -> None:
    calls: list[str] = []

    def handler(name: str, args: dict[str, Any]) -> Any:
        calls.append(name)
        return "reply"

    target = tmp_path / "pwned"
    with Sandbox(context_file, config=CONFIG, handler=handler) as box:
        result = box.execute(FORGE + f"os.write(4, frame({{'type': 'call', 'id': 1, 'name': 'os.system', "
                                     f"'args': {{'command': 'touch {target}'}}}}))\nimport time\ntime.sleep(5)")
        assert result.restarted and "unknown host-function call" in result.error
        assert calls == [] and not target.exists()
        assert box.execute("print(llm_query('hi'))").stdout == "reply\n" and calls == ["llm_query"]


def test_forged_result_is_sanitised_and_bounded(sandbox: Sandbox) -> None:
    result = sandbox.execute(FORGE + "os.write(4, frame({'type': 'result', 'id': 1, 'stdout': '\\x1b[2J' * 100000, "
                                     "'stderr': 5, 'error': None, 'final': {'value': {'nested': 1}}, "
                                     "'truncated': -7}))\nimport time\ntime.sleep(1)")
    assert len(result.stdout) == CONFIG.max_output_chars and "\x1b" not in result.stdout
    assert result.stderr == "" and result.final is None and result.truncated > 0
    # the real result of that cell arrives late and is treated as a protocol break: fail closed, then recover
    late = sandbox.execute("print('next')")
    assert late.stdout == "next\n" or (late.restarted and "protocol" in late.error)
    assert_alive(sandbox)


def test_overwriting_final_and_host_functions_is_undone(context_file: Path) -> None:
    with Sandbox(context_file, config=CONFIG, handler=lambda name, args: f"host:{args['prompt']}") as box:
        box.execute("FINAL = lambda value: None\nllm_query = lambda prompt: 'forged'\nFINAL_VAR = print")
        result = box.execute("answer = llm_query('q')\nFINAL(answer)")
    assert result.final == "host:q" and result.host_calls == 1


def test_host_call_errors_reach_the_model_as_exceptions(context_file: Path) -> None:
    def handler(name: str, args: dict[str, Any]) -> Any:
        raise HostCallError("sub-model unavailable")

    with Sandbox(context_file, config=CONFIG, handler=handler) as box:
        result = box.execute("try:\n    llm_query('x')\nexcept RuntimeError as exc:\n    print('caught', exc)")
        assert result.stdout == "caught sub-model unavailable\n"
        oversized = box.execute("llm_query('x' * (70 * 1024 * 1024))")
        assert oversized.error and "over the limit" in oversized.error and not oversized.restarted
        assert_alive(box)


# -- the analysis packages ------------------------------------------------------------------

PACKAGES_ENV = packages.current_env(SandboxConfig().packages_dir)
needs_packages = pytest.mark.skipif(PACKAGES_ENV is None,
                                    reason="the sandbox packages are not installed (scripts/setup.sh installs them)")

WRITE_PACKAGES_PROBE = """
import json, os
try:
    with open('/opt/rlm-packages/planted.py', 'w') as handle:
        handle.write('print("planted")')
    print(json.dumps({"escaped": True}))
except OSError as exc:
    print(json.dumps({"escaped": False, "error": str(exc)}))
"""

THREADS_PROBE = """
import json, os
import numpy as np
a = np.random.default_rng(0).random((400, 400))
for _ in range(5):
    a = a @ a / 400
threads = int(open('/proc/self/status').read().split('Threads:')[1].split()[0])
print(json.dumps({"threads": threads, "openblas": os.environ.get("OPENBLAS_NUM_THREADS")}))
"""


class PackagedWeakenedSandbox(WeakenedSandbox):
    def __init__(self, *args: Any, packages_env: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.packages_env = packages_env

    def _spawn(self) -> jail.WorkerProcess:
        self.packages_path = jail.JAIL_PACKAGES
        return jail.spawn(self.config.mode, self.context_path, scratch_mb=self.config.scratch_mb, weaken=self.weaken,
                          packages=self.packages_env)


@needs_packages
def test_analysis_packages_are_read_only(sandbox: Sandbox) -> None:
    report = probe(sandbox, WRITE_PACKAGES_PROBE)
    assert report["escaped"] is False and "Read-only file system" in report["error"]
    assert not (PACKAGES_ENV / "planted.py").exists()
    assert_alive(sandbox)


def test_write_probe_detects_a_writable_packages_bind(context_file: Path, tmp_path: Path) -> None:
    env = tmp_path / "env"
    env.mkdir()
    with PackagedWeakenedSandbox(context_file, config=CONFIG, weaken={"packages"}, packages_env=env) as box:
        assert probe(box, WRITE_PACKAGES_PROBE)["escaped"] is True
    assert (env / "planted.py").exists()


@needs_packages
def test_numpy_pandas_regex_import_inside_the_limits_and_only_when_asked(sandbox: Sandbox) -> None:
    before = sandbox.execute("import sys\nprint(sorted(m for m in ('numpy', 'pandas', 'regex') if m in sys.modules))")
    assert before.stdout == "[]\n"  # a worker pays for no package the model did not import
    result = sandbox.execute(
        "import numpy as np, pandas as pd, regex\n"
        "df = pd.DataFrame({'word': regex.findall(r'\\p{L}+', context)})\n"
        "print(df.word.value_counts().head(2).to_dict(), int(np.sum(df.word.str.len())))")
    assert result.error is None, result.error  # inside CONFIG's 384 MB address space
    assert "'the': 20" in result.stdout
    assert_alive(sandbox)


@needs_packages
def test_the_host_venv_is_not_visible(sandbox: Sandbox) -> None:
    report = probe(sandbox, """
        import json, sys
        try:
            import litellm
            seen = True
        except ModuleNotFoundError:
            seen = False
        print(json.dumps({"litellm": seen, "site": [p for p in sys.path if 'site-packages' in p]}))
    """)
    assert report == {"litellm": False, "site": []}


@needs_packages
def test_blas_stays_on_one_thread(sandbox: Sandbox) -> None:
    assert probe(sandbox, THREADS_PROBE) == {"threads": 1, "openblas": "1"}
    assert_alive(sandbox)


@needs_packages
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: OpenBLAS starts no extra thread anyway")
def test_thread_probe_notices_blas_threads_without_the_limit() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-I", "-c", textwrap.dedent(THREADS_PROBE)], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": ""}, timeout=120, cwd="/")
    assert json.loads(done.stdout.strip().splitlines()[-1])["threads"] > 1, done.stderr


# -- availability: fail closed; the one opt-out ---------------------------------------------


@pytest.fixture
def fresh_bwrap_check() -> Iterator[None]:
    jail.check_bwrap.cache_clear()
    yield
    jail.check_bwrap.cache_clear()


def test_missing_bwrap_fails_closed_with_a_fix(context_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               fresh_bwrap_check: None) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(SandboxUnavailable, match="not installed.*--unsafe-no-sandbox"):
        Sandbox(context_file, config=CONFIG).start()
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        run("question", context_file)


def test_bwrap_without_namespaces_fails_closed(context_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               fresh_bwrap_check: None) -> None:
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    script = fake / "bwrap"  # what bwrap prints inside Docker's default seccomp profile
    script.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    with pytest.raises(SandboxUnavailable, match="No permissions to create new namespace.*--unsafe-no-sandbox"):
        Sandbox(context_file, config=CONFIG).start()


def test_unsafe_mode_runs_without_bwrap_and_keeps_rlimits(context_file: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          fresh_bwrap_check: None) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    config = SandboxConfig(mode="unsafe", cell_timeout_s=15, memory_mb=384)
    with Sandbox(context_file, config=config) as box:
        assert_alive(box)
        bomb = box.execute("blob = bytearray(8 * 1024 ** 3)")
        assert bomb.error and "MemoryError" in bomb.error
        status = box.execute("print([l.split()[1] for l in open('/proc/self/status') if l.startswith('Seccomp:')])")
        assert status.stdout == "['0']\n"  # no isolation beyond rlimits: that is what "unsafe" means
        spin = box.execute("while True:\n    pass", timeout=1.0)
        assert spin.restarted and "timed out" in spin.error
        assert_alive(box)


@pytest.mark.parametrize("planted", ["world-writable", "symlink", "file"])
def test_a_planted_bytecode_cache_is_never_trusted(context_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   planted: str) -> None:
    """The worker's .pyc cache lives in the temp dir: a directory anyone else could have made or written
    to is not used (the worker then runs from its sources); our own private one is."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    jail._compiled_worker.cache_clear()
    root = tmp_path / f"rlm-pyc-{os.getuid()}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    if planted == "world-writable":
        root.mkdir()
        root.chmod(0o777)
    elif planted == "symlink":
        root.symlink_to(elsewhere)
    else:
        root.write_text("not a directory")
    try:
        assert jail.worker_files() == jail.WorkerFiles(jail.WORKER_DIR, compiled=False)
        with Sandbox(context_file, config=CONFIG) as box:
            assert box.execute("import sys\nprint(sys.argv[0])").stdout == "/opt/rlm-sandbox/worker.py\n"
            assert_alive(box)
        assert not any(elsewhere.iterdir())
        root.unlink() if not root.is_dir() or root.is_symlink() else root.rmdir()
        jail._compiled_worker.cache_clear()
        compiled = jail.worker_files()
        assert compiled.compiled and compiled.directory.parent == root
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        assert sorted(p.name for p in compiled.directory.iterdir()) == ["bigcontext.pyc", "protocol.pyc", "worker.pyc",
                                                                      "zygote.pyc"]
        with Sandbox(context_file, config=CONFIG) as box:
            assert box.execute("import sys\nprint(sys.argv[0])").stdout == "/opt/rlm-sandbox/worker.pyc\n"
            assert_alive(box)
    finally:
        jail._compiled_worker.cache_clear()


def test_weakened_jail_is_refused_outside_the_test_suite(context_file: Path) -> None:
    code = ("import sys; from pathlib import Path; from rlm.sandbox import jail\n"
            f"jail.launch('bwrap', Path({str(context_file)!r}), scratch_mb=8, weaken=frozenset({{'net'}}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "escape test suite only" in done.stderr
    with pytest.raises(ConfigError, match="unknown"):
        jail.launch("bwrap", context_file, scratch_mb=8, weaken=frozenset({"everything"}))


# -- through the whole loop ---------------------------------------------------------------


@pytest.mark.slow
def test_full_loop_survives_abuse_and_the_model_sees_why(server_factory, make_config, text_file,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLM_FAKE_SECRET", "sk-fake-loop")
    server = server_factory(script=[
        repl("import os\nprint(sorted(k for k in os.environ if 'SECRET' in k or 'KEY' in k))\nos.fork()"),
        repl("import socket\nsocket.create_connection(('127.0.0.1', 1), timeout=1)"),
        repl("while True:\n    pass"),
        repl("FINAL(context[context.find('KESTREL'):][:9])"),
    ])
    config = make_config(server, sandbox=SandboxConfig(cell_timeout_s=2, memory_mb=384, scratch_mb=16))
    result = run("What is the launch code?", text_file(CONTEXT), config)
    assert result.status == "ok" and result.answer == "KESTREL-7"
    observations = [r.messages[-1]["content"] for r in server.requests[1:]]
    assert "[]" in observations[0] and "Operation not permitted" in observations[0] and HINT in observations[0]
    assert "Address family not supported" in observations[1]
    assert "timed out" in observations[2] and "variables are gone" in observations[2]
    assert "sk-fake-loop" not in json.dumps([r.messages for r in server.requests])


# -- workers forked by one zygote (a run's sandboxes) ----------------------------------------

SIBLING_PROBE = """
import json, os, signal
victim = {pid}
results = {{}}
for name in ("mem", "environ", "fd/3", "maps"):
    try:
        with open(f"/proc/{{victim}}/{{name}}", "rb") as handle:
            handle.read(16)
        results[name] = "read"
    except OSError as exc:
        results[name] = type(exc).__name__
for label, attempt in (("kill", lambda: os.kill(victim, signal.SIGKILL)),
                       ("kill-zygote", lambda: os.kill(1, signal.SIGKILL)),
                       ("pidfd", lambda: os.pidfd_open(victim))):
    try:
        attempt()
        results[label] = "done"
    except OSError as exc:
        results[label] = type(exc).__name__
print(json.dumps({{"escaped": any(v in ("read", "done") for v in results.values()), **results}}))
"""


@pytest.fixture
def siblings(context_file: Path) -> Iterator[tuple[ForkedSandbox, ForkedSandbox]]:
    server = ForkServer(CONFIG)
    try:
        with ForkedSandbox(server, context_file, config=CONFIG) as first, \
                ForkedSandbox(server, context_file, config=CONFIG) as second:
            yield first, second
    finally:
        server.close()


def test_forked_siblings_cannot_read_or_signal_each_other(siblings: tuple[ForkedSandbox, ForkedSandbox]) -> None:
    first, second = siblings
    first.execute("secret = 'only-in-first'")
    pid = int(first.execute("import os; print(os.getpid())").stdout)
    report = probe(second, SIBLING_PROBE.format(pid=pid))
    assert report["escaped"] is False, report
    assert report["kill"] == report["kill-zygote"] == report["pidfd"] == "PermissionError"
    assert first.execute("print(secret)").stdout == "only-in-first\n"  # alive, its state intact
    assert_alive(first)
    assert_alive(second)


def test_a_forked_worker_is_confined_like_a_jailed_one(siblings: tuple[ForkedSandbox, ForkedSandbox]) -> None:
    report = probe(siblings[0], """
        import json, os
        status = dict(line.split(':', 1) for line in open('/proc/self/status') if ':' in line)
        try:
            os.fork()
            forked = True
        except OSError:
            forked = False
        print(json.dumps({"escaped": forked, "seccomp": status['Seccomp'].strip(),
                          "filters": status['Seccomp_filters'].strip(), "nnp": status['NoNewPrivs'].strip(),
                          "caps": status['CapEff'].strip(), "cwd": os.getcwd(), "dumpable": None}))
    """)
    assert report["escaped"] is False
    assert (report["seccomp"], report["filters"], report["nnp"]) == ("2", "2", "1")  # the jail's filter + its own
    assert int(report["caps"], 16) == 0
    assert report["cwd"].startswith("/tmp/agent-")


def test_forked_siblings_share_only_the_scratch_space(siblings: tuple[ForkedSandbox, ForkedSandbox]) -> None:
    """Documented: one run's workers share the jail's size-capped /tmp (each works in a directory of its own)."""
    first, second = siblings
    first.execute("open('note.txt', 'w').write('x')")
    listing = second.execute("import os; print(sorted(os.listdir('/tmp')))").stdout
    assert listing.count("agent-") == 2


def test_the_sibling_probe_sees_an_escape_in_a_weakened_zygote(context_file: Path) -> None:
    server = ForkServer(CONFIG, weaken=frozenset({"seccomp"}))
    try:
        with ForkedSandbox(server, context_file, config=CONFIG) as first, \
                ForkedSandbox(server, context_file, config=CONFIG) as second:
            pid = int(first.execute("import os; print(os.getpid())").stdout)
            report = probe(second, SIBLING_PROBE.format(pid=pid).replace('("kill-zygote", lambda: os.kill(1, '
                                                                          'signal.SIGKILL)),', ""))
            assert report["escaped"] is True and report["kill"] == "done", report
    finally:
        server.close()


def test_a_dead_zygote_is_replaced_on_the_next_fork(context_file: Path) -> None:
    server = ForkServer(CONFIG)
    try:
        with ForkedSandbox(server, context_file, config=CONFIG) as box:
            assert_alive(box)
        assert server._jail is not None
        server._jail.kill()  # the zygote's jail dies (OOM killer, a crash)
        server._jail.proc.wait(timeout=10)
        with ForkedSandbox(server, context_file, config=CONFIG) as box:
            assert_alive(box)
    finally:
        server.close()
