"""What routing costs per call: the decision and the token count, at 4k-token prompts (target <= 0.2 ms).

Not a timed test: :func:`measure` returns numbers and :func:`main` writes them to
``benchmarks/reports/routing_overhead.md``. Each case times
``ModelRouter.decide`` (with the size guard's token count) and the bookkeeping of
the call's end, for prompts cut from a fixed corpus (this repository's docs and
source), each call a different slice, so that no count is a cache hit (an agent's
own history is: its messages are counted once each). Cases:

* ``bytes fit`` — a deployment with a 128k window: the prompt's UTF-8 bytes fit, no tokenizer runs;
* ``estimate, o200k`` — the same prompt against an 8k window: the sampled estimate decides;
* ``estimate, embedded GGUF`` — the same against the embedded SmolLM2's own vocabulary (llama.cpp);
* ``borderline, exact o200k`` — a ~6k-token prompt against an 8k window: the estimate cannot decide,
  the prompt is counted exactly;
* ``heavy rule + guard`` — a sub-call over ``prompt_tokens``, sent to the heavy group;
* ``moved to a bigger group`` — a deployment with no tokenizer (bytes) that the prompt does not fit.

It also measures the estimate against exact counts over prose, code, JSON, digits, hex,
base64, CJK and mixes (the margins the guard relies on), and the cost of an exact
tiktoken count of the whole prompt for comparison.

Usage: ``.venv/bin/python -m rlm.benchmarks.routing_overhead [--calls N] [--output PATH]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import random
import statistics
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlm.config import RLMConfig
from rlm.routing.router import CallSite, ModelRouter
from rlm.routing.spec import parse_models
from rlm.routing.table import RouteTable
from rlm.routing.tokens import PromptSize, tokenizer

__all__ = ["main", "measure", "report", "corpus"]

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "benchmarks" / "reports" / "routing_overhead.md"
TARGET_US = 200.0


def corpus() -> str:
    """Prose and code from this repository (docs, then the core's source), fixed for a commit."""
    parts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md"))]
    parts += [p.read_text(encoding="utf-8") for p in sorted((ROOT / "rlm").rglob("*.py"))]
    return "\n".join(parts)


def _slices(text: str, tokens: int, count: int) -> list[str]:
    """``count`` different slices of about ``tokens`` o200k tokens each (4 characters per token, then checked)."""
    chars = tokens * 4
    step = max(1, (len(text) - chars) // count)
    return [text[i * step: i * step + chars] for i in range(count)]


def _router(window: int, tokenizer_name: str, routing: dict[str, Any] | None = None) -> ModelRouter:
    groups = {"root": {"deployments": [{"model": "openai/small", "api_base": "http://127.0.0.1:9/v1", "name": "small",
                                        "context_window": window, "tokenizer": tokenizer_name}]},
              "heavy": {"deployments": [
                  {"model": "openai/big", "api_base": "http://127.0.0.1:9/v1", "name": "big", "order": 1,
                   "context_window": 131072, "tokenizer": "o200k_base"},
                  {"model": "openai/gpt-4.1-mini", "name": "api", "order": 2, "context_window": 1047576}]}}
    spec, _ = parse_models({"groups": groups, **({"routing": routing} if routing else {})})
    return ModelRouter(RouteTable(RLMConfig(models=spec, max_completion_tokens=1000)))


def _time_calls(router: ModelRouter, prompts: list[str], site: CallSite) -> tuple[list[float], str]:
    samples, group = [], ""
    for prompt in prompts:
        messages = [{"role": "user", "content": prompt}]
        started = time.perf_counter()
        decision = router.decide(messages, role="sub", site=site)
        router.state.finished(decision.target.name, True)
        samples.append((time.perf_counter() - started) * 1e6)
        group = f"{decision.group}/{decision.target.name}"
    return samples, group


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_us": statistics.median(ordered), "p90_us": ordered[int(0.9 * (len(ordered) - 1))],
            "max_us": ordered[-1]}


CASES: list[tuple[str, int, int, str, dict[str, Any] | None]] = [
    # name, prompt tokens, window, tokenizer, routing
    ("bytes fit", 4000, 131072, "o200k_base", None),
    ("estimate, o200k", 4000, 8192, "o200k_base", None),
    ("estimate, embedded GGUF", 4000, 8192, "embedded", None),
    ("borderline, exact o200k", 6000, 8192, "o200k_base", None),
    ("heavy rule + guard", 4000, 8192, "o200k_base", {"heavy": {"prompt_tokens": 2000}}),
    ("moved to a bigger group", 4000, 8192, "bytes", None),
]


def measure(calls: int) -> dict[str, Any]:
    text = corpus()
    for name in ("o200k_base", "cl100k_base", "embedded"):
        tokenizer(name)  # loaded once per process; not part of a call
    results = []
    for name, tokens, window, tokenizer_name, routing in CASES:
        prompts = _slices(text, tokens, calls)
        samples, where = _time_calls(_router(window, tokenizer_name, routing), prompts, CallSite())
        exact = statistics.mean(tokenizer("o200k_base").count(p) for p in prompts[:50])
        results.append({"case": name, "prompt_tokens_o200k": round(exact), "window": window,
                        "tokenizer": tokenizer_name, "went_to": where, **_stats(samples)})
    return {"cases": results, "exact_full_count": _exact_cost(text, calls), "accuracy": accuracy(text),
            "calls": calls}


def _exact_cost(text: str, calls: int) -> dict[str, float]:
    prompts = _slices(text, 4000, min(calls, 500))
    count = tokenizer("o200k_base").count
    return _stats([_timed(functools.partial(count, p)) for p in prompts])


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1e6


def _texts(text: str) -> dict[str, str]:
    rng = random.Random(7)
    hexes = " ".join("".join(rng.choice("0123456789abcdef") for _ in range(32)) for _ in range(500))
    b64 = "".join(rng.choice(string.ascii_letters + string.digits + "+/") for _ in range(20000))
    digits = " ".join(str(rng.randint(0, 10**9)) for _ in range(2000))
    records = json.dumps([{"id": i, "name": f"user{i}", "score": rng.random()} for i in range(400)])
    cjk = "人工智能是计算机科学的一个分支，它企图了解智能的实质。" * 300
    prose, code = text[:20000], text[-20000:]
    return {"prose": prose, "code": code, "json": records, "digits": digits, "hex": hexes, "base64": b64,
            "cjk": cjk, "prose+base64": prose[:9000] + b64[:1200] + prose[9000:18000],
            "prose+digits+code": prose[:8000] + digits[:4000] + code[:6000],
            "code+hex+prose+cjk": code[:5000] + hexes[:3300] + prose[:10000] + cjk[:1500]}


def accuracy(text: str) -> list[dict[str, Any]]:
    """Exact count / estimate per text and tokenizer (the guard trusts 0.8 <= exact/estimate <= 1.25)."""
    rows = []
    for name, sample in _texts(text).items():
        size = PromptSize([{"role": "user", "content": sample}])
        row: dict[str, Any] = {"text": name, "bytes": len(sample.encode())}
        for tok in ("o200k_base", "cl100k_base", "embedded"):
            row[tok] = round(size.exact(tok) / size.estimate(tok), 3)
        rows.append(row)
    return rows


def report(result: dict[str, Any], command: str) -> str:
    lines = ["# Routing overhead per call", "",
             f"Command: `{command}`  ", f"Machine: {platform.machine()}, {platform.python_version()}, "
             f"{result['calls']} calls per case, each a different slice of the corpus.", "",
             "What `ModelRouter.decide` (group, size guard with its token count, pick inside the group) plus the "
             "bookkeeping of the call's end cost per call. Target: <= 200 us at 4k-token prompts.", "",
             "| case | prompt (o200k tokens) | window | tokenizer | went to | median us | p90 us | max us |",
             "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: |"]
    for row in result["cases"]:
        lines.append(f"| {row['case']} | {row['prompt_tokens_o200k']:,} | {row['window']:,} | {row['tokenizer']} | "
                     f"{row['went_to']} | {row['median_us']:.1f} | {row['p90_us']:.1f} | {row['max_us']:.0f} |")
    full = result["exact_full_count"]
    lines += ["", f"For comparison, an exact o200k_base count of a whole 4k-token prompt: median "
                  f"{full['median_us']:.0f} us, p90 {full['p90_us']:.0f} us.", "",
              "## The estimate against exact counts", "",
              "exact / estimate per text (16 slices of 64 characters, scaled to the text's bytes); the guard lets the "
              "estimate decide only when it is 25% clear of the window either way, and counts exactly in between.",
              "", "| text | bytes | o200k_base | cl100k_base | embedded (SmolLM2 GGUF) |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for row in result["accuracy"]:
        lines.append(f"| {row['text']} | {row['bytes']:,} | {row['o200k_base']} | {row['cl100k_base']} | "
                     f"{row['embedded']} |")
    worst = max(max(r["o200k_base"], r["cl100k_base"], r["embedded"]) for r in result["accuracy"])
    best = min(min(r["o200k_base"], r["cl100k_base"], r["embedded"]) for r in result["accuracy"])
    lines += ["", f"Range of exact/estimate: {best} to {worst} (the guard's margins: 0.8 to 1.25).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--output", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    result = measure(args.calls)
    command = "python -m rlm.benchmarks.routing_overhead" + (f" --calls {args.calls}" if args.calls != 2000 else "")
    args.output.write_text(report(result, command), encoding="utf-8")
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(report(result, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
