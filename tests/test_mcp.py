"""rlm as an MCP server: the SDK's own client in-process (progress, answers, cancel, runs, resources,
memory), over the service's HTTP at /mcp, and through real ``rlm mcp`` stdio subprocesses."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from conftest import VENV_BIN
from endpoints_support import endpoint_policy, in_process_service, scripted_model, service_env  # noqa: F401 - the `model` fixture
from rlm.config import RLMConfig, SandboxConfig
from rlm.service.access import AllowedRoots
from rlm.service.http import base_config
from rlm.service.mcp_server import LocalBackend, ServiceBackend, build_server
from rlm.service.paths import read_token
from rlm.service.server import Service
from rlm.testing import ScriptedServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, model: ScriptedServer) -> Iterator[Service]:
    home = tmp_path_factory.mktemp("mcp") / "home"
    with in_process_service(home, model.base_url) as running:
        yield running


def backend(service: Service, roots: AllowedRoots | None = None, **config: Any) -> ServiceBackend:
    base = dataclasses.replace(base_config(service), **config)
    return ServiceBackend(service, base, roots or AllowedRoots(everything=True))


def call(server: Any, tool: str, arguments: dict[str, Any], progress: list[Any] | None = None) -> Any:
    async def main() -> Any:
        async with Client(server) as client:
            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                progress.append((value, message))

            return await client.call_tool(tool, arguments, progress_callback=on_progress if progress is not None
                                          else None)

    return anyio.run(main)


def test_ask_reports_progress_in_order_and_answers(service):
    progress: list[tuple[float, str | None]] = []
    result = call(build_server(backend(service)), "ask", {"question": "SPAWN 3 children"}, progress)
    assert not result.is_error
    answer = result.structured_content
    assert answer["answer"] == "ok=3" and answer["status"] == "ok"
    assert answer["usage"]["llm_calls"] == 4 and answer["depth_reached"] == 1 and answer["cost_usd"] is None
    assert [value for value, _ in progress] == list(range(1, len(progress) + 1))
    messages = [message or "" for _, message in progress]
    assert sum("child agent started" in m for m in messages) == 3
    assert sum("iteration 1 done" in m for m in messages) == 4  # three children and the root
    assert "a0: iteration 1 done" in messages[-1]  # the root finishes last, after its children
    assert service.log.get_run(answer["run_id"]).status == "ok"


def test_cancelling_the_call_cancels_the_run(service):
    seen: list[Any] = []
    server = build_server(backend(service))

    async def main() -> None:
        async with Client(server) as client:
            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                seen.append(message)

            with anyio.move_on_after(3):
                await client.call_tool("ask", {"question": "HANG on"}, progress_callback=on_progress)

    started = time.time()
    anyio.run(main)
    assert seen, "no progress before the cancel"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = [r for r in service.log.list_runs(limit=50) if r.question == "HANG on" and r.started_at >= started - 1]
        if runs and runs[0].status != "running":
            break
        time.sleep(0.2)
    assert runs[0].status == "cancelled"


def test_runs_show_and_the_run_resources(service):
    server = build_server(backend(service))
    run_id = call(server, "ask", {"question": "ECHO resources", "context_text": "some text"}).structured_content[
        "run_id"]

    async def main() -> tuple[Any, ...]:
        async with Client(server) as client:
            listed = await client.call_tool("runs", {"limit": 5})
            shown = await client.call_tool("show", {"run_id": run_id[:15]})
            tree = await client.read_resource(f"rlm://runs/{run_id}")
            events = await client.read_resource(f"rlm://runs/{run_id}/events")
            missing = await client.call_tool("show", {"run_id": "no-such-run"})
            return listed, shown, tree, events, missing

    listed, shown, tree, events, missing = anyio.run(main)
    assert run_id in [row["run_id"] for row in listed.structured_content["result"]]
    assert run_id in shown.content[0].text and "ctx=some text" in shown.content[0].text
    assert run_id in tree.contents[0].text
    kinds = [event["type"] for event in json.loads(events.contents[0].text)]
    assert kinds[0] == "RunStarted" and kinds[-1] == "RunFinished" and "CellExecuted" in kinds
    assert missing.is_error


def test_files_outside_the_roots_and_two_contexts_are_refused(service, tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "ok.txt").write_text("inside", encoding="utf-8")
    (tmp_path / "out.txt").write_text("outside", encoding="utf-8")
    server = build_server(backend(service, AllowedRoots.of([allowed])))
    inside = call(server, "ask", {"question": "ECHO", "context_path": str(allowed / "ok.txt")})
    assert inside.structured_content["answer"] == "ctx=inside"
    outside = call(server, "ask", {"question": "ECHO", "context_path": str(tmp_path / "out.txt")})
    assert outside.is_error and "outside the directories" in outside.content[0].text
    both = call(server, "ask", {"question": "ECHO", "context_path": str(allowed / "ok.txt"), "context_text": "x"})
    assert both.is_error and "not both" in both.content[0].text


def test_a_limit_is_a_status_not_an_error(service):
    result = call(build_server(backend(service)), "ask", {"question": "LOOP", "max_iterations": 1})
    assert not result.is_error
    assert result.structured_content["status"] == "max_iterations"
    assert result.structured_content["answer"] == "partial: looped"


def test_memory_tools_when_memory_is_on(service):
    without = build_server(backend(service))
    with_memory = build_server(backend(service, memory_namespace="team"))

    async def names(server: Any) -> list[str]:
        async with Client(server) as client:
            return [tool.name for tool in (await client.list_tools()).tools]

    assert "memory_search" not in anyio.run(names, without)
    assert {"memory_search", "memory_add"} <= set(anyio.run(names, with_memory))
    added = call(with_memory, "memory_add", {"text": "the deploy script lives in tools/ship.sh", "title": "deploy"})
    assert not added.is_error
    hits = call(with_memory, "memory_search", {"query": "deploy script"}).structured_content["result"]
    assert hits and "tools/ship.sh" in hits[0]["entry"]["text"]


def test_in_process_without_a_service(rlm_home, server_factory):
    model = server_factory(policy=endpoint_policy)
    config = RLMConfig(model="openai/scripted", api_base=model.base_url, api_key="sk-test", home=rlm_home,
                       sandbox=SandboxConfig(cell_timeout_s=20))
    local = LocalBackend(config, AllowedRoots(everything=True))
    try:
        server = build_server(local)
        progress: list[Any] = []
        result = call(server, "ask", {"question": "ECHO local", "context_text": "no service here"}, progress)
        assert result.structured_content["answer"] == "ctx=no service here"
        assert [message for _, message in progress] and "iteration 1 done" in progress[0][1]
        listed = call(server, "runs", {"limit": 5}).structured_content["result"]
        assert listed[0]["run_id"] == result.structured_content["run_id"]
    finally:
        local.close()


def test_mcp_over_the_service_http_needs_the_token(rlm_home, server_factory):
    model = server_factory(policy=endpoint_policy)
    with in_process_service(rlm_home, model.base_url) as service:
        url = service.state.http + "/mcp"
        token = read_token(rlm_home)

        async def ask(headers: dict[str, str]) -> Any:
            async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
                async with Client(streamable_http_client(url, http_client=http)) as client:
                    progress: list[Any] = []

                    async def on_progress(value: float, total: float | None, message: str | None) -> None:
                        progress.append(message)

                    result = await client.call_tool("ask", {"question": "STEPS over http"},
                                                    progress_callback=on_progress)
                    return result, progress

        result, progress = anyio.run(ask, {"Authorization": f"Bearer {token}"})
        assert result.structured_content["answer"] == "stepped"
        assert len(progress) == 2
        refused = httpx2.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                              headers={"Accept": "application/json, text/event-stream"})
        assert refused.status_code == 401


def _stdio(home: Path, model_url: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(VENV_BIN / "rlm"), "mcp", "--model", "openai/scripted", "--api-base", model_url,
                             "--cell-timeout", "20", *extra], env=service_env(home), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _rpc(process: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
    assert process.stdin is not None
    process.stdin.write(json.dumps(message).encode() + b"\n")
    process.stdin.flush()


def test_stdio_subprocess_without_a_service_writes_only_protocol(rlm_home, server_factory):
    model = server_factory(policy=endpoint_policy)
    process = _stdio(rlm_home, model.base_url)
    try:
        _rpc(process, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}})
        _rpc(process, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        _rpc(process, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "ask", "arguments": {"question": "ECHO stdio", "context_text": "over stdio"},
            "_meta": {"progressToken": "p1"}}})
        lines = []
        assert process.stdout is not None
        while True:
            line = process.stdout.readline()
            assert line, process.stderr.read().decode() if process.stderr else "stdout closed"
            lines.append(json.loads(line))  # every line on stdout is a JSON-RPC message
            if lines[-1].get("id") == 2:
                break
        process.stdin.close()  # type: ignore[union-attr]  # started with stdin=PIPE
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
    assert all(message.get("jsonrpc") == "2.0" for message in lines)
    assert [m["params"]["progressToken"] for m in lines if m.get("method") == "notifications/progress"] == ["p1"]
    assert lines[-1]["result"]["structuredContent"]["answer"] == "ctx=over stdio"


def test_stdio_subprocess_relays_to_the_running_service(tmp_path, server_factory):
    model = server_factory(policy=endpoint_policy)
    home = tmp_path / "svc-home"
    with in_process_service(home, model.base_url, http=None) as service:
        params = StdioServerParameters(command=str(VENV_BIN / "rlm"), env=service_env(home), args=[
            "mcp", "--model", "openai/scripted", "--api-base", model.base_url, "--cell-timeout", "20"])
        progress: list[Any] = []

        async def main() -> Any:
            async with Client(params) as client:
                async def on_progress(value: float, total: float | None, message: str | None) -> None:
                    progress.append(message)

                return await client.call_tool("ask", {"question": "SPAWN 2"}, progress_callback=on_progress)

        result = anyio.run(main)
        assert result.structured_content["answer"] == "ok=2"
        assert len(progress) >= 5  # two children started, three first iterations
        # the run was the service's: it is in the service's own run log
        assert service.log.get_run(result.structured_content["run_id"]).status == "ok"


def test_a_service_that_stops_ends_the_relayed_session(tmp_path, server_factory):
    model = server_factory(policy=endpoint_policy)
    home = tmp_path / "svc-home"
    with in_process_service(home, model.base_url, http=None) as service:
        process = _stdio(home, model.base_url)
        try:
            _rpc(process, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
            assert process.stdout is not None
            assert json.loads(process.stdout.readline())["id"] == 1
            started = time.monotonic()
            service.stop()
            assert process.wait(timeout=30) == 0  # the relay ends with the session
            assert time.monotonic() - started < 30
        finally:
            process.kill()
