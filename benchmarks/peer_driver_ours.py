"""Driver for our rlm in the efficiency suite: the same request/result protocol as the peer drivers.

Run by our venv's python so that ours, like each peer, is measured as its own process tree.
Request (JSON on stdin): ``model``, ``api_base``, ``question``, ``context_path``, ``home``, and
optional ``max_iterations``, ``max_depth``, ``max_concurrency``, ``max_llm_calls``. Result: one
JSON line (``answer``, ``status``, ``input_tokens``, ``output_tokens``, ``llm_calls``, ``seconds``,
``error``).
"""

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def main() -> None:
    request = json.loads(sys.stdin.read())
    from rlm.config import RLMConfig
    from rlm.runner import run

    config = RLMConfig(model=request["model"], api_base=request["api_base"], api_key="sk-bench",
                       home=Path(request["home"]), max_iterations=request.get("max_iterations", 20),
                       max_depth=request.get("max_depth", 1), max_concurrency=request.get("max_concurrency", 16),
                       max_llm_calls=request.get("max_llm_calls", 5000), lm_retries=0)
    started = time.perf_counter()
    result = run(request["question"], Path(request["context_path"]), config)
    print(json.dumps({"answer": result.answer, "status": result.status, "input_tokens": result.usage.input_tokens,
                      "output_tokens": result.usage.output_tokens, "llm_calls": result.usage.llm_calls,
                      "seconds": time.perf_counter() - started, "error": result.error}))


if __name__ == "__main__":
    main()
