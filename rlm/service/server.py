"""``rlm serve``: a resident process for one RLM_HOME that keeps warm what every run needs.

What it holds for the runs it is sent:

* the only read-write connection to the run log (``rlm.duckdb``): runs record
  into it, and ``rlm runs`` / ``rlm show`` read it while runs write (a second
  process could not open it beside a writer);
* pre-started sandbox zygotes (:class:`~rlm.sandbox.forkserver.ForkServerPool`):
  a run's first sandbox is a fork, not a jail start;
* this process's imports, LM clients' kept-alive connections (runs reuse the
  service's threads), litellm once a run needed it, the swarm memory store,
  and with ``--executor ray`` a Ray session (the embedded cluster, closed to
  other users, or ``--ray-address``).

Requests arrive on a Unix socket (see :mod:`rlm.service.wire` and
:mod:`rlm.service.paths`) from processes of the same user only: the socket is
0600 and each peer's uid is checked. Runs are admitted in arrival order: up to
``max_running`` at once, ``max_queued`` more waiting; past that a request is
answered ``busy``. A client that disconnects cancels its run unless it asked
for a detached one. Stopping (``rlm service stop``, SIGTERM, SIGINT) cancels
the runs in progress and records them as cancelled.

Sessions live here while the service runs (:class:`~rlm.service.session_host.SessionHost`):
a turn sent with a session name continues the root's running REPL and history
(no rebuild); ``rerun`` requests replay, resume or fork a run from the log.

With ``http`` in its settings the service also serves the OpenAI-compatible
endpoint and MCP over HTTP (:mod:`rlm.service.http`), and an ``mcp`` request on
the socket is an MCP session (:mod:`rlm.service.mcp_server`); both submit runs
through :meth:`Service.submit`, as the socket's ``ask`` does, and run their
asyncio code on the service's event loop thread (:meth:`Service.event_loop`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import gc
import importlib
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rlm import __version__
from rlm.budget import Ledger
from rlm.config import RLMConfig
from rlm.errors import ConfigError, RLMError
from rlm.events import Event, EventBus
from rlm.results import RunResult
from rlm.service import wire
from rlm.service.paths import ServicePaths, ServiceState
from rlm.service.session_host import RunHooks

__all__ = ["Service", "ServiceSettings"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ServiceSettings:
    """How a service runs: where, with which executor, how many runs at once."""

    home: Path
    executor: str = "local"
    ray_address: str | None = None
    max_running: int = 8
    max_queued: int = 64
    idle_timeout_s: float | None = None
    zygotes: int = 2
    #: ``HOST:PORT`` of the OpenAI-compatible and MCP HTTP endpoints (None: no HTTP).
    http: str | None = None
    #: Allow ``http`` on an address other than loopback.
    http_any_interface: bool = False
    #: The only directories (and what is under them) a request over HTTP may name.
    allow_paths: tuple[Path, ...] = ()
    #: The run config requests over HTTP and MCP start from (their model, limits, API key).
    run_config: RLMConfig | None = None
    #: The models file's ``[serve]`` part (a :class:`rlm.routing.spec.ServeOptions`) whose deployments the
    #: service starts on its Ray cluster and stops with itself; ``None``: none.
    serve: Any = None
    #: Only these ``[serve.NAME]`` deployments (empty: all of them).
    serve_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.executor not in ("local", "ray"):
            raise ConfigError(f"executor must be 'local' or 'ray', not {self.executor!r}")
        if self.max_running < 1 or self.max_queued < 0:
            raise ConfigError("max_running must be >= 1 and max_queued >= 0")
        if self.http is not None:
            from rlm.service.access import parse_address

            parse_address(self.http, any_interface=self.http_any_interface)


class AlreadyRunning(RLMError):
    """A service already runs for this RLM_HOME."""


class Relay:
    """Messages to one client, from any thread, one at a time. ``deliver`` raises ``OSError`` once the client
    is gone; from then on (or once :attr:`gone` is set) the rest are dropped."""

    def __init__(self, deliver: Callable[[dict[str, Any]], None]) -> None:
        self.deliver = deliver
        self.gone = False
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        if self.gone:
            return
        with self._lock:
            try:
                self.deliver(message)
            except OSError:
                self.gone = True


@dataclasses.dataclass(eq=False)
class _Run:
    """One admitted run: where its messages go, and what cancelling it needs."""

    relay: Relay
    detach: bool
    on_event: Callable[[Event], None] | None = None  # instead of sending each event to the client
    run_id: str | None = None
    budget: Ledger | None = None
    cancelled: bool = False
    started: threading.Event = dataclasses.field(default_factory=threading.Event)

    @property
    def client_gone(self) -> bool:
        return self.relay.gone

    @client_gone.setter
    def client_gone(self, gone: bool) -> None:
        self.relay.gone = gone

    def send(self, message: dict[str, Any]) -> None:
        self.relay.send(message)

    def cancel(self) -> None:
        self.cancelled = True
        if self.budget is not None:
            self.budget.stop("cancelled")


class Service:
    """The resident service (see the module docstring)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.paths = ServicePaths(settings.home)
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._runs: set[_Run] = set()
        self._admitted = 0
        self._stopping = threading.Event()
        self.ready = threading.Event()  # set once start() opened the log: HTTP requests wait for it
        self._last_activity = time.monotonic()
        self._pool = ThreadPoolExecutor(max_workers=settings.max_running, thread_name_prefix="rlm-service-run")
        self._lock_fd: int | None = None
        self._listener: socket.socket | None = None
        self._loop: Any = None  # rlm.service.loop.LoopThread, started by the first front end that needs one
        self._http: Any = None  # rlm.service.http.HttpFront when settings.http is set
        self.state: ServiceState | None = None
        self._served: list[str] = []  # the Serve applications this service started

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> ServiceState:
        """Take the RLM_HOME's service lock, listen, open the run log; raises :class:`AlreadyRunning`.

        The socket and the state file exist before the log is open: a command that finds the
        service then waits in the socket's backlog instead of opening the log beside it.
        """
        home = self.settings.home
        home.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        socket_path = self.paths.socket()
        self._listener = _listen(socket_path)
        self.state = ServiceState(pid=os.getpid(), socket=str(socket_path), started_at=self.started_at,
                                  protocol=wire.PROTOCOL,
                                  version=__version__, http=self._start_http())
        _write_private(self.paths.state, json.dumps(self.state.to_dict()))
        try:
            from rlm.runlog import RunLog
            from rlm.sandbox.forkserver import ForkServerPool

            self.log = RunLog(home / "rlm.duckdb")
            self.zygotes = ForkServerPool(self.settings.zygotes)
        except BaseException:
            self._listener.close()
            socket_path.unlink(missing_ok=True)
            self.paths.state.unlink(missing_ok=True)
            raise
        self._memory: Any = None
        from rlm.service.session_host import SessionHost

        self.sessions = SessionHost(self.log)
        from rlm import local_model

        local_model.keep_resident()  # the embedded model's server, once a run started it, serves every later run
        threading.Thread(target=self._warm, name="rlm-service-warm", daemon=True).start()
        self.ready.set()
        return self.state

    def _warm(self) -> None:
        """Zygotes for the default sandbox settings; then the modules every run imports (the run itself, the
        fan-out's HTTP client): without them the first run after a start paid for them.
        Then the objects loaded so far are frozen out of the cyclic garbage collector (``gc.freeze``): a
        collection during a fan-out no longer walks the hundreds of thousands of them, which stalled every
        call in flight, and a fan-out's waves drifted apart.

        litellm is not imported here: it takes seconds of CPU under the GIL, which would slow
        every run during that time, and runs whose models are OpenAI-compatible servers never
        need it. The first run that does imports it, once for the service's lifetime.
        """
        from rlm.config import SandboxConfig

        self.zygotes.warm(SandboxConfig())
        for name in ("rlm.runner", "rlm.http11"):  # loaded before the first run needs them
            importlib.import_module(name)
        gc.freeze()  # what the service loaded lives as long as it does: no collection walks it again

    def serve_models(self) -> list[dict[str, Any]]:
        """Start the ``[serve.NAME]`` deployments the settings name on the service's Ray cluster (the one
        ``ray_address`` names, else an embedded one) and wait until they run; one ``{"name", "api_base",
        "engine"}`` each. They stop with the service."""
        if self.settings.serve is None:
            return []
        from rlm.agents.cluster import ensure_ray
        from rlm.agents.serving import serve_models, wait_running

        ensure_ray(RLMConfig(home=self.settings.home, ray_address=self.settings.ray_address))
        started = serve_models(self.settings.serve, list(self.settings.serve_names) or None)
        self._served = [entry["name"] for entry in started]
        wait_running(self._served)
        return started

    def serve_forever(self) -> None:
        """Accept connections until :meth:`stop` (or the idle timeout)."""
        assert self._listener is not None
        self._listener.settimeout(0.5)
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                self._stop_if_idle()
                continue
            except OSError:
                break
            threading.Thread(target=self._serve_connection, args=(conn,), name="rlm-service-conn",
                             daemon=True).start()
        self._shutdown()

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _start_http(self) -> str | None:
        """Serve the HTTP endpoints when the settings ask for them; their base URL."""
        if self.settings.http is None:
            return None
        from rlm.service.http import HttpFront

        front = HttpFront(self)
        self._http = front
        return front.start()

    def event_loop(self) -> Any:
        """The service's asyncio loop on a thread of its own (a :class:`rlm.service.loop.LoopThread`)."""
        with self._lock:
            if self._loop is None:
                from rlm.service.loop import LoopThread

                self._loop = LoopThread("rlm-service-loop").start()
            return self._loop

    def _stop_if_idle(self) -> None:
        idle = self.settings.idle_timeout_s
        with self._lock:
            busy = bool(self._runs)
        if idle is not None and not busy and time.monotonic() - self._last_activity > idle:
            log.info("idle for %.0f s: stopping", idle)
            self.stop()

    def _shutdown(self) -> None:
        with self._lock:
            runs = list(self._runs)
        for run in runs:
            run.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._http is not None:
            self._http.stop()
        if self._loop is not None:
            self._loop.stop()
        if self._listener is not None:
            self._listener.close()
        if self.state is not None:
            Path(self.state.socket).unlink(missing_ok=True)
        self.paths.state.unlink(missing_ok=True)
        self.sessions.close()
        self.zygotes.close()
        if self._served:
            from rlm.agents.serving import stop_models

            try:
                stop_models(self._served)
            except Exception:  # stopping must go on: the embedded cluster ends with the process anyway
                log.exception("stopping the served models failed")
        from rlm import local_model

        local_model.close_resident()
        if self._memory is not None:
            self._memory.close()
        self.log.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)

    def _take_lock(self) -> None:
        fd = os.open(self.paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise AlreadyRunning(f"a service already runs for {self.settings.home} "
                                 "(`rlm service status` shows it; `rlm service stop` stops it)") from None
        self._lock_fd = fd

    # -- connections --------------------------------------------------------------------
    def _serve_connection(self, conn: socket.socket) -> None:
        with conn:
            if not _same_user(conn):
                return
            self._last_activity = time.monotonic()
            try:
                request = next(wire.lines(conn), None)
                if request is not None:
                    self._dispatch(conn, request)
            except (OSError, wire.WireError):
                return
            except RLMError as exc:
                _send_quietly(conn, wire.error_reply(exc))
            except Exception as exc:  # one bad request must not take the service down
                log.exception("request failed")
                _send_quietly(conn, {"type": "error", "kind": type(exc).__name__, "message": str(exc), "exit": 1})
            finally:
                self._last_activity = time.monotonic()

    def _dispatch(self, conn: socket.socket, request: dict[str, Any]) -> None:
        op = request.get("op")
        if op == "ask":
            self._ask(conn, request)
        elif op == "cli":
            from rlm.service.commands import serve_command

            serve_command(self, conn, request)
        elif op == "rerun":
            self._rerun(conn, request)
        elif op in ("runs", "show"):
            self._view(conn, request)
        elif op == "events":
            run_id = self.log.resolve_run_id(str(request.get("run_id") or ""))
            wire.send(conn, {"type": "events", "events": [e.to_dict() for e in self.log.events(run_id)]})
        elif op == "memory":
            from rlm.memory_cli import execute

            stdout, stderr = execute(request, _ServiceStores(self))
            wire.send(conn, {"type": "output", "stdout": stdout, "stderr": stderr})
        elif op == "status":
            wire.send(conn, {"type": "status", **self.status()})
        elif op == "stop":
            wire.send(conn, {"type": "output", "stdout": "", "stderr": f"rlm: service {os.getpid()} stopping\n"})
            self.stop()
        elif op == "mcp":
            from rlm.service.mcp_server import serve_socket

            serve_socket(self, conn, request)
        else:
            raise ConfigError(f"unknown request {op!r}")

    def status(self) -> dict[str, Any]:
        running, queued = self._counts()
        return {"pid": os.getpid(), "uptime_s": round(time.time() - self.started_at, 3), "running": running,
                "queued": queued, "executor": self.settings.executor,
                "socket": self.state.socket if self.state else None,
                "http": self.state.http if self.state else None, "version": __version__}

    def _counts(self) -> tuple[int, int]:
        """Runs running and runs queued."""
        with self._lock:
            running = sum(1 for run in self._runs if run.run_id is not None)
            return running, len(self._runs) - running

    def busy_reply(self) -> dict[str, Any]:
        """The ``busy`` answer to a run that was not admitted."""
        running, queued = self._counts()
        return {"type": "busy", "running": running, "queued": queued, "retry_after": 5}

    def _view(self, conn: socket.socket, request: dict[str, Any]) -> None:
        from rlm.views import runs_view, show_view

        as_json = bool(request.get("json"))
        if request["op"] == "runs":
            stdout, stderr = runs_view(self.log, int(request.get("limit") or 20), as_json)
        else:
            stdout, stderr = show_view(self.log, str(request.get("run_id") or ""),
                                       int(request.get("max_output") or 400), as_json)
        wire.send(conn, {"type": "output", "stdout": stdout, "stderr": stderr})

    # -- runs ---------------------------------------------------------------------------
    def _ask(self, conn: socket.socket, request: dict[str, Any]) -> None:
        config = self._config(request.get("config") or {})
        question, context = str(request.get("question") or ""), _context(request)
        session = request.get("session")
        self._serve_run(conn, self.submit(question, context, config, lambda message: wire.send(conn, message),
                                          detach=bool(request.get("detach")),
                                          session=str(session) if session else None,
                                          on_event=None if request.get("events", True) else drop_event))

    def _rerun(self, conn: socket.socket, request: dict[str, Any]) -> None:
        config = self._config(request.get("config") or {})
        from rlm.service.session_host import rerun_work

        work, recorded = rerun_work(self.log, request, config)
        wire.send(conn, {"type": "recorded", "recorded": recorded})
        self._serve_run(conn, self._start(work, lambda message: wire.send(conn, message), detach=False))

    def _serve_run(self, conn: socket.socket,
                   submitted: tuple[_Run, Future[RunResult | None]] | None) -> None:
        if submitted is None:
            wire.send(conn, self.busy_reply())
            return
        run, future = submitted
        self.watch_client(run, conn, future)
        outcome = self.outcome(run, future)
        if isinstance(outcome, RunResult):
            run.send({"type": "result", "result": outcome.to_dict()})

    def submit(self, question: str, context: Path | str | list[dict[str, str]] | None, config: RLMConfig,
               deliver: Callable[[dict[str, Any]], None] | Relay, *, detach: bool = False, session: str | None = None,
               on_event: Callable[[Event], None] | None = None) -> tuple[_Run, Future[RunResult | None]] | None:
        """Admit a run (``None`` when busy) and start it on the run pool.

        ``context`` is a path, the context's text or a list of documents (as :func:`rlm.run` takes).
        ``deliver`` receives the run's ``accepted`` and ``event`` messages (:mod:`rlm.service.wire`) on
        the run's thread, and raises ``OSError`` once its client is gone (or is the :class:`Relay` the
        caller sends its own messages to the same client through); the future gives the result
        (``None`` if cancelled before it started) or raises what ended the run before it started.
        ``_Run.cancel()`` cancels it. ``on_event``, when given, receives the run's events instead of
        ``deliver`` (the command line renders them here). With ``session`` the run is that session's next turn (the
        session kept live here; ``context`` may then be ``None`` once the session exists).
        """
        def work(hooks: RunHooks) -> RunResult:
            if session is not None:
                return self.sessions.ask(session, question, context, config, hooks)
            from rlm.runner import run as run_rlm

            if context is None:
                raise ConfigError("a run needs a context")
            return run_rlm(question, context, config, **hooks.options(config))

        return self._start(work, deliver, detach=detach, on_event=on_event)

    def _start(self, work: Callable[[RunHooks], RunResult], deliver: Callable[[dict[str, Any]], None] | Relay, *,
               detach: bool, on_event: Callable[[Event], None] | None = None
               ) -> tuple[_Run, Future[RunResult | None]] | None:
        run = _Run(relay=deliver if isinstance(deliver, Relay) else Relay(deliver), detach=detach, on_event=on_event)
        if not self._admit(run):
            return None
        self._last_activity = time.monotonic()
        try:
            future = self._pool.submit(self._execute, run, work)
        except RuntimeError:  # the service is stopping
            self._release(run)
            raise ConfigError("the service is stopping") from None
        return run, future

    def _config(self, data: Mapping[str, Any]) -> RLMConfig:
        return self.run_config(RLMConfig.from_dict(data))

    def run_config(self, config: RLMConfig) -> RLMConfig:
        """``config`` as this service runs it: on its RLM_HOME (another is refused) and its executor. Its
        model calls are made here, with the service's environment: a key the command's environment has
        but the service's lacks is refused now, with the fix, not by the provider mid-run."""
        from rlm.preflight import check_credentials

        try:
            check_credentials(config, os.environ)
        except ConfigError as exc:
            raise ConfigError(f"the service makes the run's model calls, and its environment lacks a key: {exc}. "
                              "Restart the service from an environment that has it (`rlm service stop`, then "
                              "`rlm service start`), or run this command with --no-service") from None
        if config.home.resolve() != self.settings.home.resolve():
            raise ConfigError(f"this service serves RLM_HOME={self.settings.home}, not {config.home}")
        return dataclasses.replace(config, executor=self.settings.executor, ray_address=self.settings.ray_address)

    def _admit(self, run: _Run) -> bool:
        with self._lock:
            if self._stopping.is_set() or len(self._runs) >= self.settings.max_running + self.settings.max_queued:
                return False
            self._runs.add(run)
            return True

    def _release(self, run: _Run) -> None:
        with self._lock:
            self._runs.discard(run)
        self._last_activity = time.monotonic()

    def watch_client(self, run: _Run, conn: socket.socket, future: Future[RunResult | None]) -> None:
        """Cancel the run when its client asks (a ``cancel`` line) or hangs up (unless the run is detached)."""
        if run.detach:
            return

        def watch() -> None:
            try:
                for message in wire.lines(conn):
                    if message.get("op") == "cancel":
                        run.cancel()
            except (OSError, wire.WireError):
                pass
            if not future.done():  # the client hung up before the result
                run.client_gone = True
                run.cancel()

        threading.Thread(target=watch, name="rlm-service-watch", daemon=True).start()

    def outcome(self, run: _Run, future: Future[RunResult | None]) -> RunResult | str | None:
        """How a submitted run ended for its client: its result; its id once it started, when detached (the
        run goes on and records itself); ``None`` when it was cancelled before it started, or when it failed
        to start (the client was sent the error)."""
        if run.detach:
            while not run.started.wait(0.05) and not future.done():
                pass
            if run.started.is_set():
                return run.run_id
        try:
            return future.result()
        except RLMError as exc:
            run.send(wire.error_reply(exc))
            return None

    def _execute(self, run: _Run, work: Callable[[RunHooks], RunResult]) -> RunResult | None:
        try:
            if run.cancelled:
                return None
            bus = EventBus()
            bus.subscribe(run.on_event or (lambda event: run.send({"type": "event", "event": event.to_dict()})))

            def started(run_id: str, budget: Ledger) -> None:
                run.run_id, run.budget = run_id, budget
                run.send({"type": "accepted", "run_id": run_id})
                run.started.set()
                if run.cancelled:
                    budget.stop("cancelled")

            return work(RunHooks(bus, started, self.log.record, self._executor, self._extensions))
        finally:
            self._release(run)

    def _executor(self, config: RLMConfig) -> Any:
        if config.executor == "local":
            from rlm.executors import LocalExecutor

            return LocalExecutor(config, fork_servers=self.zygotes.take)
        from rlm.executors import executor_for

        return executor_for(config)

    def _extensions(self, config: RLMConfig) -> list[Any]:
        if not config.memory_namespace:
            return []
        from rlm.memory.extension import MemoryExtension

        return [MemoryExtension(config, store=self.memory_store())]  # a store it is given, the extension never closes

    def memory_store(self, *, create: bool = True) -> Any:
        """The service's swarm memory store (a :class:`rlm.memory.store.MemoryStore`, opened on first use);
        with ``create=False``, ``None`` while nothing was ever written to memory under RLM_HOME."""
        from rlm.memory.store import MemoryStore, memory_path

        with self._lock:
            if self._memory is None:
                path = memory_path(self.settings.home)
                if not create and not path.exists():
                    return None
                self._memory = MemoryStore(path)
            return self._memory


class _ServiceStores:
    """``rlm memory`` requests executed on the service's own store (:mod:`rlm.memory_cli`); never closed here."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def open(self, *, write: bool) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext(self.service.memory_store(create=write))


def drop_event(event: Event) -> None:
    """The events of a run whose client asked for none (the run log has them)."""


def _context(request: dict[str, Any]) -> Any:
    """The run's context: the file the request names, or the documents in it (``context_documents``)."""
    path = Path(str(request.get("context_path") or ""))
    if not request.get("context_documents"):
        return path
    try:
        documents = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the documents sent for the run: {exc}") from None
    return documents


def _listen(path: Path) -> socket.socket:
    """A Unix socket at ``path``, 0600 from its creation, in a directory only this user can enter."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.unlink(missing_ok=True)  # a stale socket of a dead service (we hold the lock)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    listener.listen(128)
    return listener


def _same_user(conn: socket.socket) -> bool:
    """Whether the peer runs as this process's user (``SO_PEERCRED``)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    if uid != os.getuid():
        log.warning("refused a connection from uid %d", uid)
        return False
    return True


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (0600) whole: a reader never sees half of it."""
    temporary = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)


def _send_quietly(conn: socket.socket, message: dict[str, Any]) -> None:
    try:
        wire.send(conn, message)
    except OSError:
        pass
