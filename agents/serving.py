"""Model deployments on the Ray cluster with Ray Serve: llama.cpp on CPU nodes, vLLM on GPU nodes.

A models file's ``[serve.NAME]`` tables describe them; ``rlm models serve``
(:func:`serve_models`) starts each as a Serve application at route prefix
``/NAME``, behind Serve's HTTP proxy (``[serve] host``/``port``, default
127.0.0.1:8000), so every deployment speaks the same OpenAI contract at
``http://HOST:PORT/NAME/v1``. A group deployment that says ``serve = "NAME"``
is that endpoint (:func:`served_fields`): its window and tokenizer come from here.

``[serve.NAME]`` keys: ``engine`` (``"llama.cpp"``, the default, or ``"vllm"``),
``model`` (llama.cpp: ``"embedded"`` — the embedded SmolLM2 — or a GGUF path;
vLLM: a Hugging Face model id or path), ``context_window`` (llama.cpp's ``n_ctx``,
vLLM's ``max_model_len``; default 8192), ``num_gpus``, ``num_cpus``,
``accelerator_type`` (e.g. ``"L4"``), ``replicas`` (default 1) or
``min_replicas``/``max_replicas`` (autoscaling on ongoing requests),
``max_ongoing_requests`` (per replica, default 4), ``max_queued_requests`` (beyond
them the proxy answers 503, which the client retries on the group's next
``order``), ``threads`` (llama.cpp), ``engine_kwargs`` (vLLM's engine arguments).

The llama.cpp deployment (:class:`LlamaCppServer`) loads the GGUF in the replica
(llama-cpp-python), answers ``/v1/chat/completions`` and ``/v1/models``, and adds
``rlm_node`` — the Ray node id of the replica — to every completion, which the LM
client records as the call's node. ``/v1/rlm/stats`` reports the replica's node,
ongoing requests and calls served.

vLLM runs through Ray Serve LLM (``ray.serve.llm.LLMConfig`` and
``build_openai_app``), an optional extra (``pip install 'rlm[gpu]'``): it pulls
vLLM, torch and CUDA builds, never part of the default install.

Ray is imported only inside the functions that need it; the ``[serve.NAME]`` tables
themselves are parsed by :mod:`rlm.routing.served`.
"""

from __future__ import annotations

import os
from typing import Any

from rlm.errors import ConfigError
from rlm.routing.served import ENGINES, ServedDeployment, serve_spec, served_fields

__all__ = ["ServedDeployment", "served_fields", "serve_spec", "build_app", "serve_models", "wait_running",
           "stop_models", "serve_status",
           "LlamaCppServer", "ENGINES"]

# ----------------------------------------------------------------------------- the llama.cpp replica

class LlamaCppServer:
    """A Serve replica serving a GGUF model with llama.cpp behind the OpenAI contract (see the module docstring)."""

    def __init__(self, name: str, gguf: str, n_ctx: int, threads: int | None) -> None:
        # OpenMP threads that spin while waiting make llama.cpp far slower on a shared CPU (rlm.local_model).
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import asyncio

        import ray
        from llama_cpp import Llama

        self.name = name
        self.n_ctx = n_ctx
        self.node = ray.get_runtime_context().get_node_id()
        self.model = Llama(model_path=gguf, n_ctx=n_ctx, n_threads=threads or max(1, min(4, os.cpu_count() or 1)),
                           verbose=False)
        self.lock = asyncio.Lock()  # one generation at a time per replica: llama.cpp's context is not shared
        self.ongoing = 0
        self.served = 0

    async def __call__(self, request: Any) -> Any:
        path = request.url.path.rstrip("/")
        if path.endswith("/chat/completions") and request.method == "POST":
            return await self._chat(await request.json())
        if path.endswith("/models"):
            return {"object": "list", "data": [{"id": self.name, "object": "model", "owned_by": "rlm"}]}
        if path.endswith("/rlm/stats"):
            return self.stats()
        return _error(404, f"no route {request.method} {path}", "not_found")

    def stats(self) -> dict[str, Any]:
        from ray import serve

        return {"node": self.node, "replica": serve.get_replica_context().replica_id.unique_id,
                "ongoing": self.ongoing, "served": self.served, "n_ctx": self.n_ctx}

    async def _chat(self, body: dict[str, Any]) -> Any:
        import asyncio

        messages = body.get("messages")
        if not isinstance(messages, list):
            return _error(400, "the body needs a messages list", "invalid_request")
        options = {k: body[k] for k in ("temperature", "top_p", "stop", "seed") if body.get(k) is not None}
        self.ongoing += 1
        try:
            async with self.lock:
                reply = await asyncio.to_thread(self.model.create_chat_completion, messages=messages,
                                                max_tokens=body.get("max_tokens") or 512, **options)
        except ValueError as exc:  # llama.cpp: the prompt and max_tokens exceed n_ctx
            return _error(400, str(exc), "context_length_exceeded")
        finally:
            self.ongoing -= 1
        self.served += 1
        if not isinstance(reply, dict):  # only a stream=True call yields chunks
            raise TypeError("llama.cpp returned a stream for a call without stream=True")
        return {**reply, "model": self.name, "rlm_node": self.node}


def _error(status: int, message: str, code: str) -> Any:
    from starlette.responses import JSONResponse

    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


# ----------------------------------------------------------------------------- starting them

def build_app(spec: ServedDeployment) -> Any:
    """The Serve application of one deployment."""
    if spec.engine == "vllm":
        return _vllm_app(spec)
    from ray import serve

    options: dict[str, Any] = {"max_ongoing_requests": spec.max_ongoing_requests, **spec.scaling()}
    if spec.max_queued_requests is not None:
        options["max_queued_requests"] = spec.max_queued_requests
    # the decorator form: Ray's annotations describe it only (not a class as the first argument)
    deployment = serve.deployment(name=spec.name, ray_actor_options=spec.actor_options(), **options)(LlamaCppServer)
    return deployment.bind(spec.name, str(spec.gguf), spec.context_window, spec.threads)


def vllm_config(spec: ServedDeployment) -> dict[str, Any]:
    """The keyword arguments of ``ray.serve.llm.LLMConfig`` for a vLLM deployment (see docs/models.md)."""
    scaling = spec.scaling()
    deployment: dict[str, Any] = {"max_ongoing_requests": spec.max_ongoing_requests}
    if "autoscaling_config" in scaling:
        deployment["autoscaling_config"] = scaling["autoscaling_config"]
    else:
        deployment["autoscaling_config"] = {"min_replicas": spec.replicas, "max_replicas": spec.replicas}
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": spec.name, "model_source": spec.model},
        "deployment_config": deployment,
        "engine_kwargs": {"max_model_len": spec.context_window, **(spec.engine_kwargs or {})},
    }
    if spec.accelerator_type:
        config["accelerator_type"] = spec.accelerator_type
    return config


def _vllm_app(spec: ServedDeployment) -> Any:
    try:
        from ray.serve.llm import LLMConfig, build_openai_app
    except ImportError as exc:
        raise ConfigError("serving with vLLM needs the gpu extra: pip install 'rlm[gpu]' "
                          f"(vLLM, torch and CUDA builds): {exc}") from None
    return build_openai_app({"llm_configs": [LLMConfig(**vllm_config(spec))]})


def serve_models(options: Any, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Start the ``[serve]`` deployments of a models file (``options``: its ServeOptions) on the connected cluster.

    Serve's HTTP proxy listens at ``options.host:options.port`` on the head node. Returns one
    ``{"name", "api_base", "engine"}`` per deployment started.
    """
    from ray import serve

    specs = [serve_spec(name, table) for name, table in options.deployments.items() if not names or name in names]
    if not specs:
        raise ConfigError("the models file has no [serve.NAME] deployment to start")
    serve.start(proxy_location="HeadOnly", http_options={"host": options.host, "port": options.port})
    for spec in specs:
        serve.run(build_app(spec), name=spec.name, route_prefix=f"/{spec.name}", blocking=False)
    return [{"name": s.name, "api_base": options.api_base(s.name), "engine": s.engine} for s in specs]


def wait_running(names: list[str], timeout_s: float = 300.0) -> None:
    """Wait until each named Serve application runs; a :class:`ConfigError` with Serve's message when one
    failed to deploy, or when they are not up within ``timeout_s``."""
    import time

    from ray import serve

    deadline = time.monotonic() + timeout_s
    waiting = list(names)
    while waiting:
        applications = serve.status().applications
        for name in list(waiting):
            app = applications.get(name)
            status = str(_plain(app.status)) if app is not None else "NOT_STARTED"
            if status == "RUNNING":
                waiting.remove(name)
            elif status in ("DEPLOY_FAILED", "UNHEALTHY"):
                raise ConfigError(f"serve.{name}: the deployment failed ({status}): {app.message if app else ''}")
        if waiting and time.monotonic() > deadline:
            raise ConfigError(f"serve: {', '.join(waiting)} not running after {timeout_s:.0f} s "
                              "(`rlm models status` shows why)")
        if waiting:
            time.sleep(0.25)


def stop_models(names: list[str]) -> None:
    """Delete the named Serve applications (what a service started, when it stops)."""
    from ray import serve

    for name in names:
        serve.delete(name)


def serve_status() -> list[dict[str, Any]]:
    """Each Serve application: its status, and each replica's state, node and actor (from Serve's controller)."""
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    assert client is not None  # it raises RayServeException when no controller runs
    details = client.get_serve_details()
    rows = []
    for app_name, app in (details.get("applications") or {}).items():
        for deployment_name, deployment in (app.get("deployments") or {}).items():
            replicas = deployment.get("replicas") or []
            rows.append({"application": app_name, "deployment": deployment_name,
                         "status": _plain(deployment.get("status")), "message": deployment.get("message") or "",
                         "replicas": [{"state": _plain(r.get("state")), "node_id": r.get("node_id"),
                                       "node_ip": r.get("node_ip"), "actor_name": r.get("actor_name"),
                                       "replica_id": r.get("replica_id")} for r in replicas]})
    return rows


def _plain(value: Any) -> Any:
    """An enum member of Serve's (a status, a state) as its plain value."""
    return getattr(value, "value", value)
