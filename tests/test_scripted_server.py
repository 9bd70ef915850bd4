"""Tests of rlm.testing.scripted_server over real HTTP (urllib, httpx, openai, litellm)."""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx
import openai
import pytest

from rlm.errors import ConfigError
from rlm.testing import RequestRecord, ScriptedServer, estimate_tokens, max_concurrency
from rlm.testing.scripted_server import main

USER = [{"role": "user", "content": "hello"}]


def post(
    url: str, body: dict[str, Any] | bytes, timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """POST ``body`` with urllib; return (status, lower-cased headers, raw body)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def chat(server: ScriptedServer, messages: list[dict[str, Any]] = USER, **extra: Any) -> tuple[int, dict[str, Any]]:
    """A chat completion through urllib; returns (status, parsed JSON body)."""
    status, _, raw = post(f"{server.base_url}/chat/completions", {"model": "scripted", "messages": messages, **extra})
    return status, json.loads(raw)


def content_of(body: dict[str, Any]) -> str:
    return body["choices"][0]["message"]["content"]


def assert_openai_error(body: dict[str, Any], code: str | None = None) -> dict[str, Any]:
    error = body["error"]
    assert set(error) >= {"message", "type", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


# --------------------------------------------------------------------------- #
# Replies
# --------------------------------------------------------------------------- #


def test_script_is_served_in_order_and_requests_are_recorded() -> None:
    with ScriptedServer(script=["first", {"content": "second"}, "third"]) as server:
        replies = [content_of(chat(server, [{"role": "user", "content": f"q{i}"}])[1]) for i in range(3)]
        records = server.requests
    assert replies == ["first", "second", "third"]
    assert [r.index for r in records] == [0, 1, 2]
    assert [r.messages[0]["content"] for r in records] == ["q0", "q1", "q2"]
    assert all(r.status == 200 and r.path == "/v1/chat/completions" and r.model == "scripted" for r in records)
    assert [r.reply for r in records] == replies
    assert all(r.responded_at is not None and r.responded_at >= r.received_at for r in records)


def test_exhausted_script_answers_500_in_openai_format() -> None:
    with ScriptedServer(script=["only"]) as server:
        assert chat(server)[0] == 200
        status, body = chat(server)
        assert server.script_remaining == 0
    assert status == 500
    assert "exhausted" in assert_openai_error(body, "script_exhausted")["message"]


def test_script_file_and_scripted_status(tmp_path: Path) -> None:
    script = tmp_path / "replies.jsonl"
    script.write_text('{"status": 503, "content": "overloaded"}\n\n{"content": "recovered", "delay_ms": 5}\n')
    with ScriptedServer(script=script) as server:
        status, body = chat(server)
        assert status == 503 and assert_openai_error(body)["message"] == "overloaded"
        assert content_of(chat(server)[1]) == "recovered"


def test_policy_reply_depends_on_the_prompt() -> None:
    def policy(messages: list[dict[str, Any]]) -> str:
        return messages[-1]["content"].upper()

    with ScriptedServer(policy=policy) as server:
        assert content_of(chat(server, [{"role": "user", "content": "abc"}])[1]) == "ABC"
        assert content_of(chat(server, [{"role": "user", "content": "xyz"}])[1]) == "XYZ"


def test_policy_spec_dict_results_and_failures(tmp_path: Path) -> None:
    policy_file = tmp_path / "my_policy.py"
    policy_file.write_text(
        "def reply(messages):\n"
        "    text = messages[-1]['content']\n"
        "    if text == 'fail':\n"
        "        return {'status': 429}\n"
        "    if text == 'boom':\n"
        "        raise ValueError('kaboom')\n"
        "    return {'content': 'len=' + str(len(text)), 'usage': {'completion_tokens': 99}}\n"
    )
    with ScriptedServer(policy=f"{policy_file}:reply") as server:
        status, body = chat(server, [{"role": "user", "content": "four"}])
        assert status == 200 and content_of(body) == "len=4" and body["usage"]["completion_tokens"] == 99
        assert chat(server, [{"role": "user", "content": "fail"}])[0] == 429
        status, body = chat(server, [{"role": "user", "content": "boom"}])
        assert status == 500 and "kaboom" in assert_openai_error(body, "policy_error")["message"]


def test_usage_is_estimated_and_can_be_overridden() -> None:
    messages = [{"role": "system", "content": "s" * 10},
                {"role": "user", "content": [{"type": "text", "text": "u" * 7}]}]
    reply = "r" * 9
    with ScriptedServer(script=[reply, {"content": "x", "usage": {"prompt_tokens": 1000}}]) as server:
        usage = chat(server, messages)[1]["usage"]
        assert usage == {
            "prompt_tokens": math.ceil(17 / 4),
            "completion_tokens": estimate_tokens(reply),
            "total_tokens": math.ceil(17 / 4) + math.ceil(9 / 4),
        }
        usage = chat(server, messages)[1]["usage"]
        assert usage == {"prompt_tokens": 1000, "completion_tokens": 1, "total_tokens": 1001}


# --------------------------------------------------------------------------- #
# Clients: openai SDK, httpx, litellm
# --------------------------------------------------------------------------- #


def test_openai_sdk_plain_and_streaming() -> None:
    with ScriptedServer(script=["plain reply", "streamed reply here"]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        completion = client.chat.completions.create(model="scripted", messages=USER)
        assert completion.choices[0].message.content == "plain reply"
        assert completion.usage is not None and completion.usage.total_tokens > 0

        stream = client.chat.completions.create(
            model="scripted", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "streamed reply here"
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == estimate_tokens(text)
        records = server.requests
        assert records[1].stream and all(r.connection == records[0].connection for r in records)


def test_sse_wire_format() -> None:
    with ScriptedServer(script=["a b"]) as server:
        with httpx.Client() as client:
            body = {"model": "m", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}
            response = client.post(f"{server.base_url}/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.text.split("\n") if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[len("data: ") :]) for line in lines[:-1]]
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 1


def test_models_endpoint_with_and_without_v1_prefix() -> None:
    with ScriptedServer(script=[], model="fake-model") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        assert [m.id for m in client.models.list()] == ["fake-model"]
        assert client.models.retrieve("fake-model").id == "fake-model"
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/models", timeout=5) as response:
            assert json.loads(response.read())["data"][0]["id"] == "fake-model"


def test_litellm_completion() -> None:
    import litellm

    with ScriptedServer(script=["from litellm"]) as server:
        response = litellm.completion(
            model="openai/scripted", api_base=server.base_url, api_key="x", messages=USER
        )
        assert response.choices[0].message.content == "from litellm"
        assert response.usage.prompt_tokens == estimate_tokens("hello")
        assert server.requests[0].model == "scripted"


# --------------------------------------------------------------------------- #
# Fault injection
# --------------------------------------------------------------------------- #


def test_injected_429_has_retry_after_and_keeps_the_script() -> None:
    with ScriptedServer(script=["kept"], error_rate_429=1.0) as server:
        status, headers, raw = post(f"{server.base_url}/chat/completions", {"model": "m", "messages": USER})
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="scripted", messages=USER)
        assert server.script_remaining == 1
        assert [r.fault for r in server.requests] == ["error_429", "error_429"]
    assert status == 429 and headers["retry-after"] == "0"
    assert_openai_error(json.loads(raw), "rate_limit_exceeded")


def test_injected_500_keeps_the_script() -> None:
    with ScriptedServer(script=["kept"], error_rate_500=1.0) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="scripted", messages=USER)
        status, body = chat(server)
        assert status == 500 and body["error"]["type"] == "server_error"
        assert server.script_remaining == 1


def test_retries_after_injected_failures_get_the_same_reply() -> None:
    script = ["a", "b", "c", "d"]
    with ScriptedServer(script=script, error_rate_429=0.25, error_rate_500=0.25, seed=3) as server:
        successes, statuses = [], []
        while len(successes) < len(script):
            status, body = chat(server)
            statuses.append(status)
            if status == 200:
                successes.append(content_of(body))
    assert successes == script
    assert {429, 500} <= set(statuses)
    # Same seed, same sequence of faults.
    with ScriptedServer(script=script, error_rate_429=0.25, error_rate_500=0.25, seed=3) as server:
        assert [chat(server)[0] for _ in statuses] == statuses


def test_malformed_body() -> None:
    with ScriptedServer(script=["kept"], malformed_rate=1.0) as server:
        status, headers, raw = post(f"{server.base_url}/chat/completions", {"model": "m", "messages": USER})
        assert server.script_remaining == 1 and server.requests[0].fault == "malformed"
    assert status == 200 and headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)


def test_timeout_hangs_and_stop_is_quick_and_clean() -> None:
    threads_before = threading.active_count()
    server = ScriptedServer(script=["never"], timeout_rate=1.0, hang_s=30).start()
    port = server.port
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/chat/completions", json={"model": "m", "messages": USER}, timeout=0.3)
    assert server.requests[0].fault == "timeout" and server.requests[0].responded_at is None
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    assert threading.active_count() == threads_before
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_short_hang_answers_504() -> None:
    with ScriptedServer(script=["kept"], timeout_rate=1.0, hang_s=0.05) as server:
        status, body = chat(server)
        assert status == 504 and server.script_remaining == 1
        assert_openai_error(body, "timeout")


def test_latency_overlaps_concurrent_requests() -> None:
    async def fire(base_url: str) -> list[int]:
        async with httpx.AsyncClient(timeout=10) as client:
            body = {"model": "m", "messages": USER}
            responses = await asyncio.gather(
                *(client.post(f"{base_url}/chat/completions", json=body) for _ in range(20))
            )
            return [r.status_code for r in responses]

    with ScriptedServer(policy=lambda messages: "ok", latency_ms=200) as server:
        assert asyncio.run(fire(server.base_url)) == [200] * 20
        records = server.requests
        assert server.max_concurrency() >= 10
    assert all(r.duration is not None and r.duration >= 0.19 for r in records)


def test_max_concurrency_from_intervals() -> None:
    def rec(start: float, end: float | None) -> RequestRecord:
        return RequestRecord(index=0, connection=0, method="POST", path="/", received_at=start, responded_at=end)

    assert max_concurrency([]) == 0
    assert max_concurrency([rec(0, 1), rec(1, 2), rec(2, 3)]) == 1  # touching intervals do not overlap
    assert max_concurrency([rec(0, 10), rec(1, 2), rec(1.5, 3), rec(5, None)]) == 3


def test_reset_rewinds_the_script_and_clears_records() -> None:
    with ScriptedServer(script=["one", "two"]) as server:
        chat(server)
        server.reset()
        assert server.requests == [] and server.script_remaining == 2
        assert content_of(chat(server)[1]) == "one"
        server.reset(script=["new"])
        assert content_of(chat(server)[1]) == "new"


# --------------------------------------------------------------------------- #
# HTTP protocol
# --------------------------------------------------------------------------- #


def test_keep_alive_and_chunked_request_bodies() -> None:
    with ScriptedServer(script=["1", "2", "3"]) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        body = json.dumps({"model": "m", "messages": USER}).encode()
        for _ in range(2):
            connection.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
            assert connection.getresponse().read()
        connection.request("POST", "/chat/completions", iter([body[:10], body[10:]]), encode_chunked=True)
        response = connection.getresponse()
        assert response.status == 200 and content_of(json.loads(response.read())) == "3"
        connection.close()
        assert len({r.connection for r in server.requests}) == 1


def test_http_errors_use_the_openai_format() -> None:
    with ScriptedServer(script=["x"]) as server:
        base = server.base_url
        status, _, raw = post(f"{base}/nope", {"messages": []})
        assert status == 404 and assert_openai_error(json.loads(raw), "not_found")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{base}/chat/completions", timeout=5)
        assert info.value.code == 405 and info.value.headers["allow"] == "POST"
        assert_openai_error(json.loads(info.value.read()), "method_not_allowed")
        status, _, raw = post(f"{base}/chat/completions", b"{not json")
        assert status == 400 and assert_openai_error(json.loads(raw), "invalid_json")
        status, _, raw = post(f"{base}/chat/completions", {"model": "m"})
        assert status == 400 and "messages" in assert_openai_error(json.loads(raw))["message"]
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 411 ")
        assert server.script_remaining == 1


def test_invalid_options_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="not both"):
        ScriptedServer(script=["a"], policy=lambda m: "b")
    with pytest.raises(ConfigError, match="sum"):
        ScriptedServer(error_rate_429=0.6, error_rate_500=0.6)
    with pytest.raises(ConfigError, match="content"):
        ScriptedServer(script=[{"delay_ms": 3}])
    with pytest.raises(ConfigError, match="unknown key"):
        ScriptedServer(script=[{"content": "a", "delay": 3}])
    with pytest.raises(ConfigError, match="cannot import policy"):
        ScriptedServer(policy="no_such_module_xyz:f")


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #


def test_cli_serves_a_script_file(tmp_path: Path) -> None:
    script = tmp_path / "script.jsonl"
    script.write_text('{"content": "from the cli"}\n')
    process = subprocess.Popen(
        [sys.executable, "-m", "rlm.testing.scripted_server", "--port", "0", "--script", str(script),
         "--model", "cli-model"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:") and line.endswith("/v1"), line
        base_url = line.removeprefix("listening on ")
        client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
        reply = client.chat.completions.create(model="cli-model", messages=USER)
        assert reply.choices[0].message.content == "from the cli"
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr


@pytest.mark.parametrize(
    ("lines", "extra", "message"),
    [
        (None, [], "script file not found"),
        ('{"content": "ok"}\n{not json}\n', [], ":2: not valid JSON"),
        ('{"reply": "ok"}\n', [], "unknown key"),
        ('{"delay_ms": 5}\n', [], 'missing "content"'),
        ("", ["--error-rate-429", "1.5"], "must be in [0, 1]"),
    ],
)
def test_cli_bad_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: str | None, extra: list[str], message: str
) -> None:
    script = tmp_path / "script.jsonl"
    if lines is not None:
        script.write_text(lines)
    with pytest.raises(SystemExit) as info:
        main(["--script", str(script), *extra])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_unimportable_policy_exits_2_in_a_subprocess() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rlm.testing.scripted_server", "--policy", "no_such_module_xyz:reply"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "cannot import policy 'no_such_module_xyz:reply'" in result.stderr
    assert result.stdout == ""
