"""Shared fixtures: an isolated RLM_HOME, a scripted model server, configs pointing at it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from rlm.config import RLMConfig, SandboxConfig
from rlm.prompts import task_index
from rlm.testing import ScriptedServer

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C as a terminal sends it, in the commands the tests start.

    A shell starts a background job (``pytest ... &``, a CI runner's detached step) with SIGINT
    ignored, and an ignored signal stays ignored across exec: every ``rlm`` the tests start
    would then ignore the SIGINT that the Ctrl-C tests send. Restoring Python's default
    handler here gives the children the default disposition back (a handler is reset on exec).
    """
    import signal

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def rlm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own RLM_HOME (run log, temp files) under tmp_path."""
    home = tmp_path / "rlm-home"
    monkeypatch.setenv("RLM_HOME", str(home))
    # Tests of the CLI run in-process (tests/test_ray.py and the Ray CLI tests start clusters on purpose),
    # whatever the environment of the machine running them says.
    monkeypatch.setenv("RLM_EXECUTOR", "local")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return home


@pytest.fixture
def make_config(rlm_home: Path) -> Callable[..., RLMConfig]:
    """``make_config(server, **overrides)``: a config using the scripted server as the model."""

    def make(server: ScriptedServer, **overrides: Any) -> RLMConfig:
        sandbox = overrides.pop("sandbox", SandboxConfig(cell_timeout_s=20))
        values: dict[str, Any] = dict(model="openai/scripted", api_base=server.base_url, api_key="sk-test",
                                      home=rlm_home, lm_retries=2, lm_timeout_s=30, sandbox=sandbox)
        values.update(overrides)
        return RLMConfig(**values)

    return make


@pytest.fixture
def text_file(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str, name: str = "doc.txt") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def server_factory() -> Iterator[Callable[..., ScriptedServer]]:
    """Start scripted servers; all are stopped after the test."""
    servers: list[ScriptedServer] = []

    def start(*args: Any, **kwargs: Any) -> ScriptedServer:
        server = ScriptedServer(*args, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def main_loading(argv: list[str], modules: tuple[str, ...], home: Path) -> tuple[Any, list[str], int]:
    """``rlm.cli.main(argv)`` in a fresh interpreter with ``RLM_HOME=home``: the process, which of
    ``modules`` it had loaded by the end, and the exit code ``main`` returned."""
    import json
    import subprocess
    import sys

    code = (f"import json, sys, rlm.cli\ncode = rlm.cli.main({argv!r})\n"
            f"print(json.dumps([code, sorted(m for m in {modules!r} if m in sys.modules)]), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "RLM_HOME": str(home)})
    exit_code, loaded = json.loads(done.stderr.strip().splitlines()[-1])
    return done, loaded, exit_code


def repl(code: str, prose: str = "") -> str:
    """A model reply holding one ```repl block."""
    return f"{prose}\n```repl\n{code}\n```\n" if prose else f"```repl\n{code}\n```"


def is_agent_prompt(messages: list[dict[str, Any]]) -> bool:
    """True for an agent's own turn (it has our system prompt), False for an llm_query sub-call."""
    return bool(messages) and messages[0].get("role") == "system" and "REPL" in str(messages[0].get("content"))


def first_user(messages: list[dict[str, Any]]) -> str:
    """The task: for an agent, its task turn (after any worked example); else the prompt."""
    index = task_index(messages)
    return "" if index is None else str(messages[index].get("content"))


def turn(messages: list[dict[str, Any]]) -> int:
    """How many assistant turns this agent already had (0 for its first call), any worked example excluded."""
    index = task_index(messages) or 0
    return sum(1 for m in messages[index:] if m.get("role") == "assistant")


def ordered_batch_policy(n: int) -> Callable[[list[dict[str, Any]]], str]:
    """Root: one ``llm_query_batched`` of ``n`` prompts, each answer checked against its prompt in
    the cell, then ``FINAL('<correct> in order')``; sub-calls answer ``re:<prompt>``."""

    def policy(messages: list[dict[str, Any]]) -> str:
        if not is_agent_prompt(messages):
            return "re:" + first_user(messages)
        if turn(messages) == 0:
            return repl(f"qs = [f'q{{i}}' for i in range({n})]\nout = llm_query_batched(qs)\n"
                        "ok = sum(o == 're:' + q for q, o in zip(qs, out))\nprint('OK', ok)")
        return repl("FINAL(f'{ok} in order')")

    return policy
