"""Driver for ``rlmflow``; run by its own venv's python.

Standard library and ``rlmflow`` only: this file must never import our ``rlm``. rlmflow's own
``OpenAIClient`` needs the ``openai`` package (the ``rlmflow[openai]`` extra), so the model is
reached through :class:`HttpChatClient`, an ``rlmflow.LLMClient`` (the library's documented
extension point) over ``http.client`` with one kept-alive connection per thread.

Request (JSON on stdin), as for ``peer_driver_rlms.py``: ``model``, ``api_base``, ``api_key``,
``question``, and ``context`` (a string or a list of ``{"path", "text"}``) or ``context_path``;
optional ``max_iterations``, ``max_depth`` (rlmflow's: children may be delegated while an agent's
depth is below it), ``max_concurrency`` (rlmflow's thread pool for agents and for
``llm_query_batched``), ``home`` and ``rlmflow_workspace`` (true: persist the run as a rlmflow
``Workspace`` under ``home``; default: the in-memory session). Result (one JSON line on stdout):
``answer``, ``status``, ``input_tokens``, ``output_tokens``, ``llm_calls``, ``cost_usd``,
``seconds``, ``error``.

What the model sees: rlmflow's own system prompt; the context is ``CONTEXT`` (``CONTEXT.read()``);
an agent ends with ``done(answer)``; children are ``rlm_delegate(name=, query=, context=)`` handles
awaited with ``await rlm_wait(*handles)``. Model code runs in this process (``LocalRuntime``: the
REPL namespace is a dict in the host interpreter, with ``os`` pre-imported), not in a sandbox.
"""

import contextlib
import http.client
import io
import json
import sys
import threading
import time
import urllib.parse
from typing import Any


def load_context(request):
    if request.get("context") is not None:
        return request["context"]
    path = request["context_path"]
    with open(path, encoding="utf-8") as fh:
        if path.endswith(".jsonl"):
            return [json.loads(line) for line in fh if line.strip()]
        return fh.read()


def context_text(context):
    if isinstance(context, list):  # documents as readable text, as for rlms
        return "".join(f"=== {d['path']} ===\n{d['text']}\n" for d in context)
    return context


def config_kwargs(request):
    """The keyword arguments of ``rlmflow.RLMConfig`` for ``request`` (pure, no import)."""
    return {"max_depth": int(request.get("max_depth", 1)),
            "max_iterations": int(request.get("max_iterations", 30)),
            "max_concurrency": int(request.get("max_concurrency") or request.get("max_concurrent_subcalls") or 8)}


def chat_request(base_url, model, messages):
    """(host, port, https, path, body) of an OpenAI chat-completions request (pure)."""
    parts = urllib.parse.urlsplit(base_url)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    path = parts.path.rstrip("/") + "/chat/completions"
    body = json.dumps({"model": model, "messages": messages}).encode("utf-8")
    return parts.hostname, port, https, path, body


def parse_reply(data):
    """(text, input_tokens, output_tokens) of a chat-completions response object (pure)."""
    text = data["choices"][0]["message"].get("content") or ""
    usage = data.get("usage") or {}
    return text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def make_client(LLMClient: Any, LLMUsage: Any, base_url: str, model: str, api_key: str) -> Any:
    """An ``rlmflow.LLMClient`` over the standard library; ``last_usage`` is per thread.

    rlmflow reads ``client.last_usage`` right after each call on the calling thread, so a per-thread
    value keeps the counts right under ``llm_query_batched``'s thread pool.
    """

    class HttpChatClient(LLMClient):  # type: ignore[misc]  # rlmflow's class: it exists in rlmflow's venv only
        def __init__(self):
            self.model = model
            self._local = threading.local()
            self.calls = 0
            self.input_tokens = 0
            self.output_tokens = 0
            self._lock = threading.Lock()

        @property
        def last_usage(self):
            return getattr(self._local, "usage", None)

        @last_usage.setter
        def last_usage(self, value):
            self._local.usage = value

        def _connection(self, host, port, https):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
                conn = self._local.conn = cls(host, port, timeout=600)
            return conn

        def chat(self, messages, *args, **kwargs):
            host, port, https, path, body = chat_request(base_url, model, messages)
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
            for attempt in range(2):  # one retry on a dropped kept-alive connection
                conn = self._connection(host, port, https)
                try:
                    conn.request("POST", path, body=body, headers=headers)
                    resp = conn.getresponse()
                    raw = resp.read()
                    break
                except (http.client.HTTPException, ConnectionError, OSError):
                    conn.close()
                    self._local.conn = None
                    if attempt:
                        raise
            if resp.status != 200:
                raise RuntimeError(f"chat completion failed: HTTP {resp.status}: {raw[:300]!r}")
            text, inp, out = parse_reply(json.loads(raw))
            self.last_usage = LLMUsage(input_tokens=inp, output_tokens=out)
            with self._lock:
                self.calls += 1
                self.input_tokens += inp
                self.output_tokens += out
            return text

    return HttpChatClient()


def main():
    request = json.loads(sys.stdin.read())
    from rlmflow import LLMClient, LLMUsage, RLMConfig, RLMFlow, Workspace
    from rlmflow.runtime.local import LocalRuntime

    started = time.perf_counter()
    result: dict[str, object] = {"answer": None, "status": "error", "input_tokens": 0, "output_tokens": 0,
                                 "llm_calls": 0, "cost_usd": None, "error": None}
    client = make_client(LLMClient, LLMUsage, request["api_base"], request["model"],
                         request.get("api_key") or "sk-no-key")
    try:
        context = context_text(load_context(request))
        if request.get("rlmflow_workspace"):
            workspace = Workspace.create(request.get("home") or "rlmflow-workspace")
            agent = RLMFlow(llm_client=client, runtime=LocalRuntime(workspace=workspace), workspace=workspace,
                            config=RLMConfig(**config_kwargs(request)))
        else:  # the runtime's workspace is the current directory: rlmflow keeps the session in memory
            agent = RLMFlow(llm_client=client, runtime=LocalRuntime(workspace="."),
                            config=RLMConfig(**config_kwargs(request)))
        with contextlib.redirect_stdout(io.StringIO()):  # keep our stdout for the one JSON line
            graph = agent.start(request["question"], context=context)
            while not graph.finished:
                graph = agent.step(graph)
            answer = graph.result()
        result.update(answer=answer, status="ok")
    except Exception as exc:  # noqa: BLE001 - report, never crash without a result line
        result["error"] = f"{type(exc).__name__}: {exc}"[:1000]
    result.update(input_tokens=client.input_tokens, output_tokens=client.output_tokens, llm_calls=client.calls)
    result["seconds"] = time.perf_counter() - started
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
