"""Driver for ``pyrlm-runtime`` (imports as ``pyrlm_runtime``); run by its own venv's python (3.12).

Standard library and ``pyrlm-runtime`` only: this file must never import our ``rlm``.
Request (JSON on stdin), as for ``peer_driver_rlms.py``: ``model``, ``api_base``, ``api_key``,
``question``, and ``context`` (a string or a list of ``{"path", "text"}``) or ``context_path``
(a text file, or a ``.jsonl`` of documents); optional ``max_iterations`` (the root's steps),
``max_depth`` (>= 2 turns on ``recursive_subcalls``: each sub-call is then a child RLM with its own
REPL, up to that depth), ``max_concurrent_subcalls`` (``llm_batch`` threads), ``max_llm_calls``
(the sub-call budget), ``home`` (a scratch directory for the sub-call cache). Result (one JSON
line on stdout): ``answer``, ``status``, ``input_tokens``, ``output_tokens``, ``llm_calls``,
``cost_usd``, ``seconds``, ``error``.

What the model sees: pyrlm-runtime's own system prompt; the context is the REPL variable ``P``
(and the ``ctx`` object); the run ends with a plain reply ``FINAL: text`` or ``FINAL_VAR: name``
after the code that set ``name`` ran. Model code runs in this process (``exec`` with a builtins
whitelist), not in a separate sandbox.
"""

import contextlib
import io
import json
import os
import sys
import tempfile
import time


def load_context(request):
    if request.get("context") is not None:
        return request["context"]
    path = request["context_path"]
    with open(path, encoding="utf-8") as fh:
        if path.endswith(".jsonl"):
            return [json.loads(line) for line in fh if line.strip()]
        return fh.read()


def options(request):
    """The keyword arguments of ``pyrlm_runtime.RLM`` and ``Policy`` for ``request`` (pure, no import)."""
    depth = int(request.get("max_depth", 1))
    steps = int(request.get("max_iterations", 30))
    rlm_kwargs = {
        "parallel_subcalls": True,
        "max_concurrent_subcalls": int(request.get("max_concurrent_subcalls") or 10),
        "recursive_subcalls": depth >= 2,
        "max_recursion_depth": max(depth, 1),
        # a child RLM needs two steps in this suite (its code, then FINAL_VAR); the library default is 3
        "recursive_subcall_max_steps": 3,
    }
    policy_kwargs = {"max_steps": steps, "max_subcalls": int(request.get("max_llm_calls") or 10_000),
                     "max_recursion_depth": max(depth, 1)}
    return rlm_kwargs, policy_kwargs


def make_context(Context, context):
    """A ``pyrlm_runtime.Context`` from a string or a list of ``{"path", "text"}`` documents."""
    if isinstance(context, list):
        return Context.from_documents([f"=== {d['path']} ===\n{d['text']}" for d in context])
    return Context.from_text(context)


def usage_of(trace):
    """(input_tokens, output_tokens, llm_calls) summed over a pyrlm-runtime ``Trace``.

    Recursive sub-calls appear twice (an aggregate ``recursive_subcall`` step and the child's own
    ``sub_*`` steps), so only the steps that are one model call each are counted.
    """
    calls_kinds = {"root_call", "subcall", "sub_root_call", "sub_subcall"}
    inp = out = calls = 0
    for step in trace.steps:
        if step.kind not in calls_kinds or step.usage is None or getattr(step, "cache_hit", False):
            continue
        calls += 1
        inp += step.usage.prompt_tokens
        out += step.usage.completion_tokens
    return inp, out, calls


def main():
    request = json.loads(sys.stdin.read())
    os.environ["LLM_API_KEY"] = request.get("api_key") or "sk-no-key"  # OpenAICompatAdapter reads it
    from pyrlm_runtime import RLM, Context, Policy
    from pyrlm_runtime.adapters import OpenAICompatAdapter

    rlm_kwargs, policy_kwargs = options(request)
    started = time.perf_counter()
    result: dict[str, object] = {"answer": None, "status": "error", "input_tokens": 0, "output_tokens": 0,
                                 "llm_calls": 0, "cost_usd": None, "error": None}
    try:
        context = make_context(Context, load_context(request))
        home = request.get("home") or tempfile.mkdtemp(prefix="pyrlm-")
        os.makedirs(home, exist_ok=True)
        adapter = OpenAICompatAdapter(model=request["model"], base_url=request["api_base"])
        rlm = RLM(adapter=adapter, policy=Policy(**policy_kwargs), cache_dir=os.path.join(home, "pyrlm-cache"),
                  **rlm_kwargs)
        with contextlib.redirect_stdout(io.StringIO()):  # keep our stdout for the one JSON line
            answer, trace = rlm.run(request["question"], context)
        inp, out, calls = usage_of(trace)
        result.update(answer=answer, status="ok", input_tokens=inp, output_tokens=out, llm_calls=calls)
    except Exception as exc:  # noqa: BLE001 - report, never crash without a result line
        result["error"] = f"{type(exc).__name__}: {exc}"[:1000]
    result["seconds"] = time.perf_counter() - started
    print(json.dumps(result))


if __name__ == "__main__":
    main()
