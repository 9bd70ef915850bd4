"""Driver for ``droste`` (a dependency-free library); run by its own venv's python.

Standard library and ``droste`` only: this file must never import our ``rlm``. The wiring is the
one ``droste ask`` does for an OpenAI-compatible endpoint (``droste_cli.main.run_ask``):
``OpenAICompatClient`` for the root, ``OpenAICompatSubcallClient`` for sub-calls, the ``native``
environment, ``run_rlm``.

Request (JSON on stdin), as for ``peer_driver_rlms.py``: ``model``, ``api_base``, ``api_key``,
``question``, and ``context`` (a string or a list of ``{"path", "text"}``) or ``context_path``;
optional ``max_iterations``, ``max_depth`` (droste's depth budget; no 0.26.0 code path starts a
child run, so it changes nothing), ``max_concurrent_subcalls`` (sub-calls in flight per batch),
``max_llm_calls`` (the sub-call budget), ``max_timeout`` (the run's wall-clock budget, seconds).
Result (one JSON line on stdout): ``answer``, ``status``, ``input_tokens``, ``output_tokens``,
``llm_calls``, ``cost_usd``, ``seconds``, ``error``.

What the model sees: droste's own prompt pack; the context is the variable ``context`` (a string,
or ``{"files": [{"path", "name", "text"}]}`` for documents); a run ends when code sets
``answer["content"]`` and ``answer["ready"] = True``; ``llm_query`` / ``llm_query_batched`` (at most
50 prompts per call) are one-shot sub-calls. Model code runs in this process (``exec`` with the
full builtins, ``SIGALRM`` timeouts); the isolated substrate is Pyodide, which needs a host (Deno).
"""

import json
import sys
import time


def load_context(request):
    if request.get("context") is not None:
        return request["context"]
    path = request["context_path"]
    with open(path, encoding="utf-8") as fh:
        if path.endswith(".jsonl"):
            return [json.loads(line) for line in fh if line.strip()]
        return fh.read()


def droste_context(context):
    """droste's shape for the ``context`` variable: a string, or the CLI's ``{"files": [...]}`` (pure)."""
    if isinstance(context, list):
        return {"files": [{"path": d["path"], "name": d["path"].rsplit("/", 1)[-1], "mime": "text/plain",
                           "size": len(d["text"].encode("utf-8")), "text": d["text"]} for d in context]}
    return context


def budget_kwargs(request):
    """The keyword arguments of ``droste.Budget`` for ``request`` (pure, no import)."""
    return {"tokens": 1_000_000_000, "subcalls": int(request.get("max_llm_calls") or 10_000),
            "depth": int(request.get("max_depth", 1)), "wall_ms": int(float(request.get("max_timeout") or 1800) * 1000),
            "max_iterations": int(request.get("max_iterations", 30))}


def concurrency(request):
    return int(request.get("max_concurrent_subcalls") or request.get("max_concurrency") or 5)


def main():
    request = json.loads(sys.stdin.read())
    from droste import (
        Budget,
        EnvironmentConfig,
        OpenAICompatClient,
        OpenAICompatSubcallClient,
        RLMConfig,
        create_environment,
        create_environment_context,
        run_rlm,
    )
    from droste.execution.manifest import RolloutConfiguration

    started = time.perf_counter()
    result: dict[str, object] = {"answer": None, "status": "error", "input_tokens": 0, "output_tokens": 0,
                                 "llm_calls": 0, "cost_usd": None, "error": None}
    try:
        budget = Budget(**budget_kwargs(request))
        env_config = EnvironmentConfig(kind="native", budget=budget)
        exec_context = create_environment_context(env_config)
        parallel = concurrency(request)
        rollout = RolloutConfiguration(subcall_model=request["model"], concurrency=parallel)
        api_key = request.get("api_key") or "sk-no-key"
        root = OpenAICompatClient(model=request["model"], base_url=request["api_base"], api_key=api_key)
        subcalls = OpenAICompatSubcallClient(model=request["model"], context=exec_context,
                                             base_url=request["api_base"], api_key=api_key,
                                             max_output_tokens=budget.subcall_output_tokens, max_parallel=parallel)
        environment = create_environment(env_config, context=droste_context(load_context(request)), registry=None,
                                         subcalls=subcalls, execution_context=exec_context,
                                         capability_run_id=exec_context.trace.run_id,
                                         capability_parent_run_id=exec_context.trace.parent_run_id,
                                         capability_observer=exec_context.observe_capability)
        config = RLMConfig(budget=budget, sandbox=env_config.sandbox, root_model=request["model"], rollout=rollout)
        outcome = run_rlm(request["question"], environment=environment, root_llm=root, subcalls=subcalls,
                          config=config, context=exec_context)
        stats = exec_context.stats
        result.update(answer=outcome.answer, status="ok" if outcome.ready else "unconfirmed",
                      input_tokens=stats.root_input_tokens + stats.subcall_input_tokens,
                      output_tokens=stats.root_output_tokens + stats.subcall_output_tokens,
                      llm_calls=stats.root_requests + stats.calls_made)
        if outcome.error is not None:
            result["error"] = f"{outcome.error.type}: {outcome.error.message}"[:1000]
    except Exception as exc:  # noqa: BLE001 - report, never crash without a result line
        result["error"] = f"{type(exc).__name__}: {exc}"[:1000]
    result["seconds"] = time.perf_counter() - started
    print(json.dumps(result))


if __name__ == "__main__":
    main()
