"""Driver for the official ``rlms`` library (imports as ``rlm``); run by its own venv's python.

Standard library and ``rlms`` only: this file must never import our ``rlm``.
Request (JSON on stdin): ``model``, ``api_base``, ``api_key``, ``question``, and
``context`` (a string or a list of ``{"path", "text"}``) or ``context_path``
(a text file, or a ``.jsonl`` of documents); optional ``max_iterations``,
``max_depth``, ``max_concurrent_subcalls``, ``max_timeout``. Result (one JSON
line on stdout): ``answer``, ``status``, ``input_tokens``, ``output_tokens``,
``llm_calls``, ``cost_usd``, ``seconds``, ``error``.
"""

import contextlib
import io
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


def main():
    request = json.loads(sys.stdin.read())
    from rlm import RLM  # the peer's rlm, from this venv

    context = load_context(request)
    if isinstance(context, list):  # rlms takes a str, dict or list; give documents as readable text
        context = "".join(f"=== {d['path']} ===\n{d['text']}\n" for d in context)
    kwargs = {"max_iterations": request.get("max_iterations", 30), "max_depth": request.get("max_depth", 1)}
    if request.get("max_concurrent_subcalls"):
        kwargs["max_concurrent_subcalls"] = request["max_concurrent_subcalls"]
    if request.get("max_timeout"):
        kwargs["max_timeout"] = request["max_timeout"]
    started = time.perf_counter()
    result: dict[str, object] = {"answer": None, "status": "error", "input_tokens": 0, "output_tokens": 0,
                                 "llm_calls": 0, "cost_usd": None, "error": None}
    try:
        rlm = RLM(backend="openai", backend_kwargs={"model_name": request["model"], "base_url": request["api_base"],
                                                     "api_key": request.get("api_key") or "sk-no-key"},
                  environment="local", verbose=False, **kwargs)
        with contextlib.redirect_stdout(io.StringIO()):  # keep our stdout for the one JSON line
            completion = rlm.completion(context, root_prompt=request["question"])
        usage = completion.usage_summary
        calls = sum(s.total_calls for s in usage.model_usage_summaries.values())
        result.update(answer=completion.response, status="ok", input_tokens=usage.total_input_tokens,
                      output_tokens=usage.total_output_tokens, llm_calls=calls, cost_usd=usage.total_cost)
    except Exception as exc:  # noqa: BLE001 - report, never crash without a result line
        result["error"] = f"{type(exc).__name__}: {exc}"[:1000]
    result["seconds"] = time.perf_counter() - started
    print(json.dumps(result))


if __name__ == "__main__":
    main()
