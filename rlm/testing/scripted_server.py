"""A scripted, OpenAI-compatible HTTP server for tests and benchmarks.

:class:`ScriptedServer` is a real HTTP/1.1 server on loopback (standard library
``asyncio`` only) that speaks enough of the OpenAI protocol to stand in for a
remote model provider: the ``openai`` SDK, ``litellm`` and ``httpx`` talk to it
exactly as they would to ``api.openai.com``. Replies come from a *script* (fixed
replies served in order) or from a *policy* (a function of the prompt), and
faults (429, 500, hangs, malformed bodies) can be injected at seeded rates.

Endpoints (each also answered without the ``/v1`` prefix):

* ``POST /v1/chat/completions`` -- a ``chat.completion`` JSON object, or with
  ``"stream": true`` server-sent events: ``data: {chat.completion.chunk}`` lines
  (a role chunk, one chunk per word of the reply, a final chunk whose
  ``finish_reason`` is ``"stop"``, a usage chunk when
  ``stream_options.include_usage`` is true) and then ``data: [DONE]``.
* ``GET /v1/models`` -- a list with one model, the server's ``model`` name
  (default ``"scripted"``); ``GET /v1/models/{name}`` retrieves it.

Errors use OpenAI's format ``{"error": {"message", "type", "param", "code"}}``:
404 for an unknown path, 405 for a wrong method, 400 for a body that is not a
JSON object with a ``messages`` list, 411 for a POST without a body length.

Script format
-------------
A script is a JSONL file (or, in-process, a list): one JSON object per line,
served in order, one per chat-completion request, shared by all connections.
Blank lines are ignored. Keys:

``content`` (string, required unless ``status`` is given)
    The assistant's reply text.
``delay_ms`` (number >= 0, optional)
    Extra latency for this reply, added to the server-wide ``latency_ms``.
``status`` (integer 400-599, optional)
    Answer with this HTTP error status instead of a completion (OpenAI error
    format; ``content``, if any, becomes the error message; a 429 also carries
    ``retry-after: 0``). The line is consumed like any other.
``usage`` (object, optional)
    Overrides the reported token counts: any of ``prompt_tokens``,
    ``completion_tokens``, ``total_tokens`` (non-negative integers). A missing
    ``total_tokens`` is the sum of the other two.
``reasoning_content`` (string, optional)
    A reasoning model's separate reasoning, sent in the message beside
    ``content`` (and as its own delta when streaming), as servers with a
    reasoning parser do.

Any other key is an error. Example::

    {"content": "```repl\\nprint(len(context))\\n```"}
    {"content": "FINAL(42)", "delay_ms": 250}
    {"status": 500, "content": "upstream overloaded"}
    {"content": "ok", "usage": {"prompt_tokens": 1000, "completion_tokens": 5}}

In-process, a list item may also be a plain string (same as ``{"content": s}``).
When the script runs out, every further request gets HTTP 500 with error code
``"script_exhausted"``.

Policy
------
Instead of a script, a policy computes each reply: a callable taking the
request's ``messages`` (a list of dicts, as sent by the client) and returning
the reply text, or a dict with the same keys as a script line. In-process it is
any callable (a coroutine function works too); on the command line, and as a
string in-process, it is ``module:function`` or ``path/to/file.py:function``.
Policies run on the server's event loop: keep them quick.

Token usage
-----------
Every completion reports ``usage``. ``prompt_tokens`` is
``ceil(C / 4)`` where ``C`` is the total number of characters of all message
contents (text parts of list contents count too); ``completion_tokens`` is
``ceil(len(reply) / 4)``; ``total_tokens`` is their sum (see
:func:`estimate_tokens`). A script line's ``usage`` overrides them.

Latency and fault injection
---------------------------
``latency_ms`` delays every request (with ``asyncio.sleep``, so concurrent
requests overlap). Each chat-completion request draws one number from a
``random.Random(seed)`` and, according to the cumulative rates (whose sum must
not exceed 1), gets one of:

* ``error_rate_429`` -- HTTP 429, ``retry-after: 0``, an OpenAI rate-limit body;
* ``error_rate_500`` -- HTTP 500, an OpenAI server-error body;
* ``timeout_rate`` -- the server hangs ``hang_s`` seconds (default 30), then
  answers HTTP 504 (normally the client has given up long before);
* ``malformed_rate`` -- HTTP 200 whose body is not valid JSON.

An injected fault never consumes a script line, so a retry gets the reply the
failed request would have got. Draws happen in arrival order, so a sequential
client sees the same faults on every run with the same seed.

Context window
--------------
With ``context_window`` set, a chat completion whose prompt (the tokens of every
message content, counted by ``count_tokens`` — default :func:`estimate_tokens` —
plus 4 per message) and ``max_tokens`` exceed it is refused with HTTP 400 and
OpenAI's ``context_length_exceeded`` error, as a real server does; its record's
``fault`` is ``"context_window"``. Several servers with different windows and
latencies stand in for the deployments of a model group.

Records
-------
Every request is recorded as a :class:`RequestRecord` (index, connection,
method, path, server-side ``time.monotonic()`` timestamps, parsed body, model,
messages, status, reply, fault). :meth:`ScriptedServer.max_concurrency` gives
the largest number of requests that were in flight at once.

Usage
-----
In-process (background thread with its own event loop)::

    from rlm.testing import ScriptedServer

    with ScriptedServer(script=["hello", {"content": "bye", "delay_ms": 50}]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x")
        client.chat.completions.create(model="scripted", messages=[...])
        assert server.requests[0].messages == [...]

From the shell (prints ``listening on http://127.0.0.1:PORT/v1`` and serves
until SIGINT/SIGTERM; bad arguments exit with status 2)::

    python -m rlm.testing.scripted_server --port 8001 --script replies.jsonl \\
        --latency-ms 100 --error-rate-429 0.05 --seed 7

Modules
-------
This module holds the server's logic and its command line; the rest of the
:mod:`rlm.testing` package: :mod:`~rlm.testing.scripts` (scripts, policies,
token estimates), :mod:`~rlm.testing.records` (request records),
:mod:`~rlm.testing.faults` (the fault model), :mod:`~rlm.testing.openai_api`
(completions and errors in OpenAI's format) and :mod:`~rlm.testing.httpserver`
(the HTTP layer).

The HTTP layer is hand-written on ``asyncio`` streams rather than aiohttp's
server (aiohttp is a dependency) because aiohttp's costs the server about 1.5
times the CPU per request (113-126 us against 74-79 us) under the benchmarks'
heaviest load, and in the fan-out benchmark that time adds to every sub-call;
:mod:`rlm.testing.httpserver` gives the measurement
(``benchmarks/reports/scripted_server_load.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import inspect
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from rlm.errors import ConfigError
from rlm.testing.faults import FaultModel
from rlm.testing.httpserver import HttpServer
from rlm.testing.openai_api import (
    CHAT_PATHS,
    MODEL_PREFIXES,
    MODELS_PATHS,
    ApiError,
    Completion,
    Request,
    Response,
    dumps,
    include_usage,
    parse_chat_body,
    require_method,
    scripted_error,
)
from rlm.testing.records import RequestRecord, max_concurrency
from rlm.testing.scripts import (
    Message,
    Policy,
    Reply,
    ScriptSource,
    estimate_tokens,
    load_policy,
    load_script,
    prompt_chars,
    usage,
)

__all__ = [
    "Policy",
    "Reply",
    "RequestRecord",
    "ScriptedServer",
    "estimate_tokens",
    "load_policy",
    "load_script",
    "main",
    "max_concurrency",
    "prompt_chars",
]

logger = logging.getLogger(__name__)


class ScriptedServer:
    """A scripted OpenAI-compatible server on loopback; see the module docstring.

    Use it as a context manager (``with ScriptedServer(script=[...]) as s:``) or
    call :meth:`start` / :meth:`stop`. It runs in a daemon thread with its own
    event loop; all public methods are thread-safe.

    Args:
        script: ``None``, a JSONL path, or a list of strings / script-line dicts.
        policy: a callable ``messages -> str | dict`` or ``"module:function"``.
            At most one of ``script`` and ``policy``; with neither, the script
            is empty (every completion is a "script exhausted" error).
        latency_ms: delay added to every request.
        error_rate_429, error_rate_500, timeout_rate, malformed_rate: fault
            rates in [0, 1]; their sum must not exceed 1.
        hang_s: how long a ``timeout`` fault hangs before answering 504.
        seed: seed of the fault-injection random generator.
        model: the model name listed by ``/v1/models``.
        host, port: where to listen (``port=0`` picks a free port).
        context_window: refuse prompts over this many tokens (see "Context window").
        count_tokens: how the window check counts a text's tokens (default: ``ceil(chars / 4)``).

    Raises:
        ConfigError: an invalid script, policy or option.
    """

    def __init__(
        self,
        script: ScriptSource | None = None,
        policy: str | Policy | None = None,
        *,
        latency_ms: float = 0,
        error_rate_429: float = 0.0,
        error_rate_500: float = 0.0,
        timeout_rate: float = 0.0,
        malformed_rate: float = 0.0,
        hang_s: float = 30.0,
        seed: int = 0,
        model: str = "scripted",
        host: str = "127.0.0.1",
        port: int = 0,
        context_window: int | None = None,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        if script is not None and policy is not None:
            raise ConfigError("give a script or a policy, not both")
        self._script = load_script(script)
        self._policy = load_policy(policy) if policy is not None else None
        self.latency_ms = _non_negative("latency_ms", latency_ms)
        self.hang_s = _non_negative("hang_s", hang_s)
        rates = {"error_429": error_rate_429, "error_500": error_rate_500, "timeout": timeout_rate,
                 "malformed": malformed_rate}
        self._faults = FaultModel(rates, seed, self.hang_s)
        self.seed = seed
        self.model = model
        self.context_window = context_window
        self._count_tokens = count_tokens or estimate_tokens
        self.host = host
        self._requested_port = port
        self._port: int | None = None

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._records: list[RequestRecord] = []
        self._cursor = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._startup_error: BaseException | None = None

    # ----------------------------------------------------------- lifecycle --

    def __enter__(self) -> ScriptedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> ScriptedServer:
        """Start listening in a background thread; returns once the port is bound.

        Raises:
            RuntimeError: already running, or the thread did not come up in time.
            OSError: the address cannot be bound.
        """
        if self._thread is not None:
            raise RuntimeError("scripted server is already running")
        ready = threading.Event()
        self._startup_error = None
        thread = threading.Thread(target=self._thread_main, args=(ready,), name="scripted-server", daemon=True)
        thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("scripted server did not start in time")
        if self._startup_error is not None:
            thread.join(timeout)
            raise self._startup_error
        self._thread = thread
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving: close the listener and every connection, cancel pending sleeps.

        Idempotent. Blocks until the server thread has ended.
        """
        thread, loop, event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and event is not None:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop already ended
                pass
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError("scripted server thread did not stop in time")
        self._thread = None
        self._loop = None
        self._stop_event = None

    @property
    def running(self) -> bool:
        """Whether the background server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def port(self) -> int:
        """The TCP port being listened on (known once started)."""
        if self._port is None:
            raise RuntimeError("scripted server is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://HOST:PORT/v1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def _thread_main(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._thread_serve(ready))
        except BaseException as exc:  # reported to start()
            if not ready.is_set():
                self._startup_error = exc
                ready.set()
            else:
                logger.exception("scripted server thread failed")

    async def _thread_serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        await self._serve(self._stop_event, ready.set)

    async def _serve(self, stop: asyncio.Event, on_ready: Callable[[], object]) -> None:
        """Listen until ``stop`` is set, then close the listener and all connections."""
        http = HttpServer(self._handle, self.host, self._requested_port)
        self._port = await http.start()
        on_ready()
        try:
            await stop.wait()
        finally:
            await http.close()

    # ------------------------------------------------------------- records --

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of all request records, in arrival order."""
        with self._lock:
            return [dataclasses.replace(r) for r in self._records]

    def max_concurrency(self) -> int:
        """The largest number of requests that were in flight at once."""
        return max_concurrency(self.requests)

    @property
    def script_remaining(self) -> int:
        """How many script lines have not been served yet (0 with a policy)."""
        with self._lock:
            return len(self._script) - self._cursor

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[RequestRecord]:
        """Block until at least ``count`` requests have been received; return the records.

        Raises:
            TimeoutError: fewer arrived within ``timeout`` seconds.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._records) >= count, timeout):
                raise TimeoutError(f"only {len(self._records)} of {count} requests arrived in {timeout}s")
            return [dataclasses.replace(r) for r in self._records]

    def reset(self, script: ScriptSource | None = None) -> None:
        """Forget all records, rewind the script (or replace it) and reseed the faults."""
        replies = load_script(script) if script is not None else None
        with self._lock:
            self._records.clear()
            self._cursor = 0
            self._faults.reset()
            if replies is not None:
                self._script = replies

    # ------------------------------------------------------------- serving --

    async def _handle(self, request: Request, connection: int) -> Response:
        """Record the request, answer it, and complete its record before the answer leaves."""
        record = self._new_record(request, connection)
        response = await self._respond(request, record)
        self._finish_record(record, response)
        return response

    def _new_record(self, request: Request, connection: int) -> RequestRecord:
        with self._changed:
            record = RequestRecord(
                index=len(self._records),
                connection=connection,
                method=request.method,
                path=request.path,
                received_at=request.received_at,
            )
            self._records.append(record)
            self._changed.notify_all()
        return record

    def _finish_record(self, record: RequestRecord, response: Response) -> None:
        with self._changed:
            record.status = response.status
            record.error = response.error
            record.responded_at = time.monotonic()
            self._changed.notify_all()

    async def _respond(self, request: Request, record: RequestRecord) -> Response:
        try:
            return await self._route(request, record)
        except ApiError as exc:
            return exc.response()
        except Exception as exc:  # a bug here must not hang the client
            logger.exception("scripted server: internal error")
            error = ApiError(500, f"scripted server internal error: {exc!r}", "server_error", "internal_error")
            return error.response()

    async def _route(self, request: Request, record: RequestRecord) -> Response:
        path = request.path.rstrip("/") or "/"
        if path in CHAT_PATHS:
            require_method(request, "POST")
            return await self._chat_completion(request, record)
        await _sleep_ms(self.latency_ms)
        if path in MODELS_PATHS:
            require_method(request, "GET")
            return Response(200, dumps({"object": "list", "data": [self._model_object()]}))
        if path.startswith(MODEL_PREFIXES):
            require_method(request, "GET")
            name = path.split("/models/", 1)[1]
            if name != self.model:
                raise ApiError(404, f"The model '{name}' does not exist", "invalid_request_error", "model_not_found")
            return Response(200, dumps(self._model_object()))
        raise ApiError(404, f"Invalid URL ({request.method} {request.path})", "invalid_request_error", "not_found")

    def _model_object(self) -> dict[str, Any]:
        return {"id": self.model, "object": "model", "created": 0, "owned_by": "rlm-scripted"}

    async def _chat_completion(self, request: Request, record: RequestRecord) -> Response:
        payload = parse_chat_body(request.body)
        messages: list[Message] = payload["messages"]
        record.body, record.messages = payload, messages
        record.model = payload.get("model") if isinstance(payload.get("model"), str) else None
        record.stream = payload.get("stream") is True
        if self._over_window(payload, messages):
            record.fault = "context_window"
            await _sleep_ms(self.latency_ms)
            raise ApiError(400, f"This model's maximum context length is {self.context_window} tokens; the request "
                                "asked for more", "invalid_request_error", "context_length_exceeded")
        fault = self._faults.draw()
        if fault is not None:
            record.fault = fault
            await _sleep_ms(self.latency_ms)
            return await self._faults.respond(fault, record.stream)
        try:
            reply = await self._next_reply(messages)
        except ApiError:
            await _sleep_ms(self.latency_ms)
            raise
        await _sleep_ms(self.latency_ms + reply.delay_ms)
        if reply.status is not None:
            raise scripted_error(reply.status, reply.content)
        record.reply = reply.content
        completion = Completion(
            id=f"chatcmpl-scripted-{record.index}",
            created=int(time.time()),
            model=record.model or self.model,
            content=reply.content,
            usage=usage(messages, reply),
            reasoning_content=reply.reasoning_content,
        )
        if record.stream:
            return completion.sse_response(include_usage(payload))
        return completion.json_response()

    def _over_window(self, payload: dict[str, Any], messages: list[Message]) -> bool:
        if self.context_window is None:
            return False
        contents = (m.get("content") for m in messages)
        prompt = sum(self._count_tokens(c if isinstance(c, str) else "") + 4 for c in contents)
        max_tokens = payload.get("max_tokens")
        reply = max_tokens if isinstance(max_tokens, int) else 0
        return prompt + reply > self.context_window

    async def _next_reply(self, messages: list[Message]) -> Reply:
        """The next script line (consumed) or the policy's answer.

        Raises:
            ApiError: the script is exhausted or the policy failed.
        """
        if self._policy is None:
            with self._lock:
                if self._cursor >= len(self._script):
                    raise ApiError(
                        500,
                        f"scripted server: the script is exhausted (all {len(self._script)} replies were served)",
                        "server_error",
                        "script_exhausted",
                    )
                reply = self._script[self._cursor]
                self._cursor += 1
            return reply
        try:
            result = self._policy(messages)
            if inspect.isawaitable(result):
                result = await result
            return Reply.parse(result, "policy result")
        except Exception as exc:  # noqa: BLE001 - reported to the client as a 500
            logger.warning("scripted server: policy failed: %r", exc)
            raise ApiError(500, f"scripted server: policy raised {type(exc).__name__}: {exc}", "server_error",
                           "policy_error") from None



async def _sleep_ms(ms: float) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000)


def _non_negative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)



# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _non_negative_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rlm.testing.scripted_server",
        description="Scripted OpenAI-compatible HTTP server for tests and benchmarks.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--script", metavar="FILE", help="JSONL file of replies served in order")
    source.add_argument("--policy", metavar="MODULE:FUNCTION", help="function from messages to the reply")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: a free port)")
    parser.add_argument("--model", default="scripted", help="model name listed by /v1/models")
    parser.add_argument("--latency-ms", type=_non_negative_arg, default=0.0, help="delay added to every request")
    parser.add_argument("--error-rate-429", type=_rate, default=0.0, help="rate of injected HTTP 429s")
    parser.add_argument("--error-rate-500", type=_rate, default=0.0, help="rate of injected HTTP 500s")
    parser.add_argument("--timeout-rate", type=_rate, default=0.0, help="rate of requests that hang")
    parser.add_argument("--malformed-rate", type=_rate, default=0.0, help="rate of 200s with an invalid body")
    parser.add_argument("--hang-s", type=_non_negative_arg, default=30.0, help="how long a hang lasts (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault injection (default 0)")
    return parser


async def _serve_until_signal(server: ScriptedServer) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await server._serve(stop, lambda: print(f"listening on {server.base_url}", flush=True))  # noqa: SLF001 - the CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for bad arguments)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        server = ScriptedServer(
            script=Path(args.script) if args.script is not None else None,
            policy=args.policy,
            latency_ms=args.latency_ms,
            error_rate_429=args.error_rate_429,
            error_rate_500=args.error_rate_500,
            timeout_rate=args.timeout_rate,
            malformed_rate=args.malformed_rate,
            hang_s=args.hang_s,
            seed=args.seed,
            model=args.model,
            host=args.host,
            port=args.port,
        )
    except ConfigError as exc:
        parser.error(str(exc))  # exits with status 2
    try:
        asyncio.run(_serve_until_signal(server))
    except OSError as exc:
        print(f"{parser.prog}: error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
