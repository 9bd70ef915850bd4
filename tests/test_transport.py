"""The lean OpenAI-compatible transport (rlm.transport) against real loopback servers, and its errors as
litellm sees them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from rlm import transport
from rlm.transport import Endpoint, TransportError


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
        if self.behaviour == "chunked":  # the body in three chunks, with a chunk extension and a trailer
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            third = len(payload) // 3
            for piece in (payload[:third], payload[third:2 * third], payload[2 * third:]):
                self.wfile.write(b"%x;note=1\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")
            self.wfile.flush()
            return
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
    handler.base = f"http://127.0.0.1:{httpd.server_address[1]}/v1"  # type: ignore[attr-defined]  # set on a class made by type()
    try:
        yield handler
    finally:
        handler.delay.set()
        httpd.shutdown()
        httpd.server_close()
        transport._connections.open.clear()


def _call(handler: type[_Handler], text: str, seconds: float = 10.0) -> dict:
    endpoint = Endpoint("m", handler.base, "sk-test")  # type: ignore[attr-defined]  # set on a class made by type()
    return transport.chat_sync(endpoint, [{"role": "user", "content": text}], {}, seconds)


def test_calls_from_one_thread_share_one_kept_alive_connection(server):
    answers = [_call(server, f"q{i}")["choices"][0]["message"]["content"] for i in range(5)]
    assert answers == [f"echo:q{i}" for i in range(5)]
    assert len(server.connections) == 1


def test_a_connection_the_server_closed_is_replaced_and_the_call_still_succeeds(server):
    server.behaviour = "drop-after-reply"
    answers = [_call(server, f"q{i}")["choices"][0]["message"]["content"] for i in range(3)]
    assert answers == ["echo:q0", "echo:q1", "echo:q2"]
    assert len(server.connections) == 3  # a fresh connection each time, no error surfaced


def _in_loop(endpoint: Endpoint, messages: list, params: dict, seconds: float) -> dict:
    import asyncio

    return asyncio.run(transport.chat(endpoint, messages, params, seconds))


#: Both ways of sending a call: from the calling thread, and from an event loop (a fan-out's).
BOTH_PATHS = pytest.mark.parametrize("send", [transport.chat_sync, _in_loop], ids=["thread", "event-loop"])


@BOTH_PATHS
def test_http_errors_and_timeouts_say_whether_retrying_could_help(server, send):
    endpoint = Endpoint("m", server.base, "sk-test")
    server.behaviour = "status-503"
    with pytest.raises(TransportError, match="overloaded") as failed:
        send(endpoint, [{"role": "user", "content": "q"}], {}, 10.0)
    assert failed.value.status == 503 and failed.value.retryable
    server.behaviour = "slow"
    with pytest.raises(TransportError) as timed_out:
        send(endpoint, [{"role": "user", "content": "q"}], {}, 0.3)
    assert timed_out.value.kind == "timeout" and timed_out.value.retryable


@BOTH_PATHS
def test_a_refused_connection_is_a_connection_error(send):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = Endpoint("m", f"http://127.0.0.1:{port}/v1")
    with pytest.raises(TransportError) as failed:
        send(endpoint, [{"role": "user", "content": "q"}], {}, 5.0)
    assert failed.value.kind == "connection"


def test_the_event_loop_path_keeps_connections_alive_and_answers_each_call_its_own(server):
    import asyncio

    endpoint = Endpoint("m", server.base, "sk-test")

    async def one(text: str) -> str:
        reply = await transport.chat(endpoint, [{"role": "user", "content": text}], {}, 10.0)
        return str(reply["choices"][0]["message"]["content"])

    async def scenario() -> tuple[list[str], list[str]]:
        first = [await one(f"s{i}") for i in range(5)]  # one after another: one connection
        together = await asyncio.gather(*(one(f"c{i}") for i in range(20)))
        return first, list(together)

    first, together = asyncio.run(scenario())
    assert first == [f"echo:s{i}" for i in range(5)]
    assert together == [f"echo:c{i}" for i in range(20)]  # 20 at once, none mixed up
    assert len(server.connections) <= 20


def _achat_one(server: type[_Handler], text: str, seconds: float = 10.0) -> dict:
    import asyncio

    endpoint = Endpoint("m", server.base, "sk-test")  # type: ignore[attr-defined]  # set on a class made by type()

    async def calls() -> list[dict]:
        return [await transport.chat(endpoint, [{"role": "user", "content": f"{text}{i}"}], {}, seconds)
                for i in range(3)]

    return asyncio.run(calls())[-1]


def test_the_event_loop_path_reads_chunked_replies_and_replaces_connections_the_server_closed(server):
    server.behaviour = "chunked"
    assert _achat_one(server, "q")["choices"][0]["message"]["content"] == "echo:q2"
    server.behaviour = "drop-after-reply"
    before = len(server.connections)
    assert _achat_one(server, "d")["choices"][0]["message"]["content"] == "echo:d2"
    assert len(server.connections) - before == 3  # a fresh connection each time, no error surfaced


@pytest.mark.parametrize("kind,status,expected", [
    ("http", 400, "BadRequestError"), ("http", 401, "AuthenticationError"), ("http", 404, "NotFoundError"),
    ("http", 429, "RateLimitError"), ("http", 500, "InternalServerError"), ("http", 503, "ServiceUnavailableError"),
    ("timeout", None, "Timeout"), ("connection", None, "APIConnectionError"),
    ("bad_response", None, "InternalServerError")])
def test_the_routers_retries_see_litellms_own_exception_types(kind, status, expected):
    """When litellm's Router retries a call it classifies the failure by litellm's types, as for any provider."""
    import litellm

    from rlm.litellm_provider import to_litellm_error

    error = to_litellm_error(TransportError(kind, "boom", model="m", status=status))
    assert type(error).__name__ == expected
    assert litellm.should_retry(getattr(error, "status_code", 500)) == (status not in (400, 401, 404))


def test_importing_the_lean_path_does_not_import_litellm():
    import subprocess
    import sys

    heavy = ("litellm", "aiohttp", "ray", "duckdb", "textual", "numpy", "networkx", "tiktoken", "mcp", "psutil",
             "pandas", "urllib.request")
    code = ("import sys, rlm.lm, rlm.transport, rlm.runner, rlm.cli; rlm.cli.build_parser(); "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
