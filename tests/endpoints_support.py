"""What the endpoint tests share: a scripted model that answers by the question, and services to ask.

The policy recognises the root's task by a word in the question:

``ECHO``      answers ``ctx=<the context>`` (a string, or ``path=text`` of each document joined by `` | ``)
``SPAWN n``   starts n child agents with ``rlm_query_batched`` (``CHILD-i``, each answering ``child-i-ok``)
              and answers ``ok=<children whose answer was right>``
``STEPS``     one cell, then 1.5 s later ``stepped``
``LOOP``      never calls FINAL; asked for a final answer, says ``partial: looped``
``HANG``      each turn takes 2 s and never ends the run
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import VENV_BIN, first_user, is_agent_prompt, repl, turn
from rlm.config import RLMConfig, SandboxConfig
from rlm.service.paths import find_service, read_token
from rlm.service.server import Service, ServiceSettings
from rlm.testing import ScriptedServer

ECHO_CODE = ("c = context if isinstance(context, str) else ' | '.join(d['path'] + '=' + d['text'] for d in context)\n"
             "FINAL('ctx=' + c)")


def endpoint_policy(messages: list[dict[str, Any]]) -> Any:
    if not is_agent_prompt(messages):
        return "sub:" + first_user(messages)
    task = first_user(messages)
    if "give your best final answer now" in str(messages[-1].get("content")):  # the forced last turn
        return repl("FINAL('partial: looped')")
    if child := re.search(r"CHILD-(\d+)", task):
        return repl(f"FINAL('child-{child.group(1)}-ok')")
    if spawn := re.search(r"SPAWN (\d+)", task):
        n = int(spawn.group(1))
        return repl(f"res = rlm_query_batched(['CHILD-' + str(i) for i in range({n})])\n"
                    "ok = sum(1 for i, r in enumerate(res) if 'child-' + str(i) + '-ok' in str(r))\n"
                    "FINAL('ok=' + str(ok))")
    if "STEPS" in task:
        return repl("print('step 1')") if turn(messages) == 0 else {"content": repl("FINAL('stepped')"),
                                                                       "delay_ms": 1500}
    if "LOOP" in task:
        return repl("print('again')")
    if "HANG" in task:
        return {"content": repl("print('still going')"), "delay_ms": 2000}
    if "ECHO" in task:
        return repl(ECHO_CODE)
    return "FINAL(unexpected question)"


@pytest.fixture(scope="module", name="model")
def scripted_model() -> Iterator[ScriptedServer]:
    """The ``model`` fixture: a test module's scripted model, answering with :func:`endpoint_policy`."""
    with ScriptedServer(policy=endpoint_policy) as server:
        yield server


@dataclass
class ServiceProcess:
    """``rlm serve --http`` running as its own process for a home of its own."""

    home: Path
    allowed: Path
    url: str
    token: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]

    def rlm(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """The ``rlm`` command with this service's environment."""
        return subprocess.run([str(VENV_BIN / "rlm"), *args], env=self.env, input=stdin, capture_output=True,
                              text=True, timeout=120)


def service_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "RLM_HOME": str(home), "RLM_API_KEY": "sk-test", "RLM_EXECUTOR": "local"}
    env.pop("RAY_ADDRESS", None)
    return env


def start_service_process(base: Path, model_url: str, *extra: str) -> ServiceProcess:
    """Start ``rlm serve --http 127.0.0.1:0`` with the scripted model; returns once it answers."""
    home, allowed = base / "home", base / "allowed"
    allowed.mkdir(parents=True, exist_ok=True)
    env = service_env(home)
    argv = [str(VENV_BIN / "rlm"), "serve", "--http", "127.0.0.1:0", "--allow-path", str(allowed),
            "--model", "openai/scripted", "--api-base", model_url, "--cell-timeout", "20", *extra]
    with open(base / "serve.log", "wb") as log:  # the service writes to its own copy of the descriptor
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while (state := find_service(home)) is None or state.http is None:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"rlm serve did not start: {(base / 'serve.log').read_text()}")
        time.sleep(0.1)
    return ServiceProcess(home=home, allowed=allowed, url=state.http, token=str(read_token(home)), env=env,
                          process=process)


def stop_service_process(service: ServiceProcess) -> None:
    service.process.send_signal(signal.SIGTERM)
    try:
        service.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        service.process.kill()
        service.process.wait()


@contextlib.contextmanager
def in_process_service(home: Path, model_url: str, **settings: Any) -> Iterator[Service]:
    """A :class:`Service` of this process serving HTTP on loopback with the scripted model (stopped after)."""
    config = RLMConfig(model="openai/scripted", api_base=model_url, api_key="sk-test", home=home,
                       sandbox=SandboxConfig(cell_timeout_s=20), lm_retries=0)
    settings.setdefault("http", "127.0.0.1:0")
    service = Service(ServiceSettings(home=home, run_config=config, **settings))
    service.start()
    thread = threading.Thread(target=service.serve_forever, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        service.stop()
        thread.join(timeout=60)
