"""The blocking fast path of the OpenAI-compatible transport (rlm.transport.chat_sync) against real loopback servers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import litellm
import pytest

from rlm import transport


def _reply(text: str) -> bytes:
    return json.dumps({"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 1}}).encode()


class _Handler(BaseHTTPRequestHandler):
    """Answers each POST with its body's last message; ``behaviour`` picks how the connection ends."""

    protocol_version = "HTTP/1.1"
    behaviour = "keep-alive"
    connections: ClassVar[list[int]] = []
    delay = threading.Event()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.behaviour == "slow":
            self.delay.wait(5)
        if self.behaviour == "status-503":
            payload = json.dumps({"error": {"message": "overloaded"}}).encode()
            self.send_response(503)
        else:
            payload = _reply("echo:" + body["messages"][-1]["content"])
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()
        if self.behaviour == "drop-after-reply":  # an idle keep-alive connection the server closed later
            self.close_connection = True

    def setup(self) -> None:
        super().setup()
        self.connections.append(id(self.connection))

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[type[_Handler]]:
    handler = type("Handler", (_Handler,), {"connections": [], "delay": threading.Event()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    handler.base = f"http://127.0.0.1:{httpd.server_address[1]}/v1"  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        handler.delay.set()
        httpd.shutdown()
        httpd.server_close()
        transport._connections.open.clear()


def _call(handler: type[_Handler], text: str, seconds: float = 10.0) -> dict:
    deployment = {"model": "rlm-openai/m", "api_base": handler.base, "api_key": "sk-test"}  # type: ignore[attr-defined]
    return transport.chat_sync(deployment, [{"role": "user", "content": text}], {}, seconds)


def test_calls_from_one_thread_share_one_kept_alive_connection(server):
    answers = [_call(server, f"q{i}")["choices"][0]["message"]["content"] for i in range(5)]
    assert answers == [f"echo:q{i}" for i in range(5)]
    assert len(server.connections) == 1


def test_a_connection_the_server_closed_is_replaced_and_the_call_still_succeeds(server):
    server.behaviour = "drop-after-reply"
    answers = [_call(server, f"q{i}")["choices"][0]["message"]["content"] for i in range(3)]
    assert answers == ["echo:q0", "echo:q1", "echo:q2"]
    assert len(server.connections) == 3  # a fresh connection each time, no error surfaced


def test_http_errors_and_timeouts_are_litellms_exception_types(server):
    server.behaviour = "status-503"
    with pytest.raises(litellm.ServiceUnavailableError, match="overloaded"):
        _call(server, "q")
    server.behaviour = "slow"
    with pytest.raises(litellm.Timeout):
        _call(server, "q", seconds=0.3)


def test_a_refused_connection_is_a_connection_error():
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    deployment = {"model": "rlm-openai/m", "api_base": f"http://127.0.0.1:{port}/v1"}
    with pytest.raises(litellm.APIConnectionError):
        transport.chat_sync(deployment, [{"role": "user", "content": "q"}], {}, 5.0)
