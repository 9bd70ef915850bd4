"""Routing a mixed workload: 1,000 sub-calls of mixed sizes over scripted deployments of different windows.

Not a timed test: :func:`measure` runs one scripted trajectory through :func:`rlm.runner.run`
and :func:`main` writes ``benchmarks/reports/routing_mix.md``. The root runs on its own group;
its one cell cuts 1,000 prompts from its context (a fixed corpus, repeated) and sends them as
``llm_query_batched`` calls: eight batches of 100 prompts of mixed sizes (most small, some just
under or over the small window, some far over every window) and one batch of 200 small prompts,
with the heavy rules on (a sub-call over 24,000 tokens, a batch over 150 prompts). The deployments
are scripted servers with their own latencies and context windows, which refuse, as a real server
does, any prompt that does not fit (counted exactly with o200k_base, plus 4 tokens per message,
plus ``max_tokens``); the deployments declare ``tokenizer = "o200k_base"``:

======== ======= ========= ============= ===============================
group    name    window    latency (ms)  notes
======== ======= ========= ============= ===============================
root     root    262,144   20            the root agent
sub      small-a 8,192     40            order 1, at most 8 in flight
sub      small-b 8,192     80            order 1
mid      mid     32,768    120
heavy    gpu     131,072   200           order 1, at most 12 in flight
heavy    api     1,047,576 400           order 2
======== ======= ========= ============= ===============================

Reported: calls and tokens per deployment (fractions), the routing reasons, the prompts refused
before anything was sent, for every server the requests it refused for their size (the guard's
promise: zero) and the fullest request it got (how close to its window the guard packed).

Usage: ``.venv/bin/python -m rlm.benchmarks.routing_mix [--output PATH]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rlm.benchmarks.routing_overhead import corpus
from rlm.config import RLMConfig, SandboxConfig
from rlm.routing.spec import parse_models
from rlm.routing.tokens import tokenizer

__all__ = ["main", "measure", "report", "DEPLOYMENTS"]

REPORT = Path(__file__).resolve().parent / "reports" / "routing_mix.md"
#: name -> (group, window, latency ms, order, max_in_flight)
DEPLOYMENTS: dict[str, tuple[str, int | None, int, int, int | None]] = {
    "root": ("root", 262144, 20, 1, None),
    "small-a": ("sub", 8192, 40, 1, 8),
    "small-b": ("sub", 8192, 80, 1, None),
    "mid": ("mid", 32768, 120, 1, None),
    "gpu": ("heavy", 131072, 200, 1, 12),
    "api": ("heavy", 1047576, 400, 2, None),
}
MAX_TOKENS = 256

#: The root's one cell: 1,000 prompts in nine batches; sizes in characters (~4 per o200k token of the corpus).
CELL = """
import random, json
rng = random.Random(11)
def size():
    r = rng.random()
    if r < 0.60: return rng.randint(400, 12_000)
    if r < 0.80: return rng.randint(12_000, 30_000)
    if r < 0.92: return rng.randint(30_000, 120_000)
    if r < 0.98: return rng.randint(120_000, 480_000)
    return rng.randint(480_000, 1_600_000)
def cut(n):
    start = rng.randint(0, len(context) - n)
    return context[start:start + n]
mixed = [cut(size()) for _ in range(797)] + [cut(5_800_000) for _ in range(3)]
rng.shuffle(mixed)
small = [cut(rng.randint(400, 4_000)) for _ in range(200)]
out = []
for b in range(8):
    out += llm_query_batched(mixed[b * 100:(b + 1) * 100])
out += llm_query_batched(small)
refused = [str(o) for o in out if isinstance(o, QueryError)]
print("RESULT " + json.dumps({"answers": sum(1 for o in out if not isinstance(o, QueryError)),
                              "refused": len(refused), "why": refused[:3]}))
"""


def _policy(messages: list[dict[str, Any]]) -> str:
    is_agent = messages[0].get("role") == "system" and "REPL" in str(messages[0].get("content"))
    if not is_agent:
        return "ok"
    if sum(1 for m in messages if m.get("role") == "assistant") <= 2:  # the worked example has one
        return f"```repl\n{CELL}\n```"
    return "```repl\nFINAL('done')\n```"


def _servers() -> dict[str, Any]:
    from rlm.testing import ScriptedServer

    count = tokenizer("o200k_base").count
    return {name: ScriptedServer(policy=_policy, latency_ms=latency, context_window=window, count_tokens=count).start()
            for name, (_, window, latency, _, _) in DEPLOYMENTS.items()}


def _spec(servers: dict[str, Any]) -> Any:
    groups: dict[str, dict[str, Any]] = {}
    for name, (group, window, _, order, in_flight) in DEPLOYMENTS.items():
        entry: dict[str, Any] = {"model": f"openai/{name}", "api_base": servers[name].base_url, "name": name,
                                 "order": order, "tokenizer": "o200k_base"}
        if window:
            entry["context_window"] = window
        if in_flight:
            entry["max_in_flight"] = in_flight
        groups.setdefault(group, {"deployments": []})["deployments"].append(entry)
    routing = {"heavy": {"prompt_tokens": 24_000, "batch_size": 150}}
    return parse_models({"groups": groups, "routing": routing})[0]


def _token_steps() -> tuple[int, int]:
    """How many texts the router has estimated and counted exactly so far (the misses of their caches)."""
    from rlm.routing import tokens

    estimate, exact = tokens._estimate, tokens._exact  # noqa: SLF001 - their caches are the only record of the steps
    return estimate.cache_info().misses, exact.cache_info().misses


def measure() -> dict[str, Any]:
    from rlm.runlog import RunLog
    from rlm.runner import run

    servers = _servers()
    estimated, counted = _token_steps()
    try:
        with tempfile.TemporaryDirectory(prefix="rlm-routing-mix-") as tmp:
            home = Path(tmp)
            context = home / "context.txt"
            context.write_text(corpus() * 10, encoding="utf-8")
            config = RLMConfig(model="openai/root", models=_spec(servers), home=home, max_llm_calls=5000,
                               max_iterations=3, max_concurrency=16, max_completion_tokens=MAX_TOKENS, lm_retries=2,
                               lm_timeout_s=120, sandbox=SandboxConfig(cell_timeout_s=1800, memory_mb=8192,
                                                                       max_call_bytes=256 * 1024 * 1024))
            started = time.monotonic()
            result = run("Route 1,000 sub-calls.", context, config)
            seconds = time.monotonic() - started
            with RunLog(config.runlog_path) as log:
                calls = [c for c in log.lm_calls(result.run_id) if c.purpose == "llm_query"]
        cell = _cell_result(servers["root"])
        estimated_after, counted_after = _token_steps()
        steps = {"estimated": estimated_after - estimated, "counted_exactly": counted_after - counted}
        return {**_summary(calls, servers, cell, seconds, result), "token_steps": steps}
    finally:
        for server in servers.values():
            server.stop()


def _cell_result(root: Any) -> dict[str, Any]:
    for record in reversed(root.requests):
        text = str(record.messages[-1].get("content")) if record.messages else ""
        found = re.search(r"RESULT (\{.*\})", text)
        if found:
            return json.loads(found.group(1))
    return {}


def _fullest(server: Any, window: int | None) -> float | None:
    """The largest share of its window a request to ``server`` took (exact o200k count, as the server counts)."""
    count = tokenizer("o200k_base").count
    sizes = [sum(count(str(m.get("content") or "")) + 4 for m in r.messages) + MAX_TOKENS
             for r in server.requests if r.messages]
    return max(sizes) / window if sizes and window else None


def _kind(reason: str) -> str:
    """A routing reason without its numbers, for counting."""
    reason = re.sub(r"[~\d,.]+ (tokens|bytes)", "N \\1", reason)
    reason = re.sub(r"\d+ in flight", "N in flight", reason)
    return re.sub(r"\d[\d,]*", "N", reason)


def _summary(calls: list[Any], servers: dict[str, Any], cell: dict[str, Any], seconds: float,
             result: Any) -> dict[str, Any]:
    sent = [c for c in calls if c.ok]
    tokens = sum(c.input_tokens or 0 for c in sent) or 1
    per = {}
    for name in DEPLOYMENTS:
        mine = [c for c in sent if c.deployment == name]
        per[name] = {"group": DEPLOYMENTS[name][0], "calls": len(mine), "calls_fraction": len(mine) / max(len(sent), 1),
                     "input_tokens": sum(c.input_tokens or 0 for c in mine),
                     "tokens_fraction": sum(c.input_tokens or 0 for c in mine) / tokens,
                     "server_requests": len(servers[name].requests),
                     "refused_for_size": sum(1 for r in servers[name].requests if r.fault == "context_window"),
                     "fullest": _fullest(servers[name], DEPLOYMENTS[name][1])}
    return {"status": result.status, "seconds": seconds, "sub_calls": len(calls), "sent": len(sent),
            "refused_before_sending": sum(1 for c in calls if not c.ok and "fits no model" in (c.error or "")),
            "failed_otherwise": sum(1 for c in calls if not c.ok and "fits no model" not in (c.error or "")),
            "cell": cell, "deployments": per,
            "reasons": Counter(_kind(c.route_reason or "") for c in calls if c.ok).most_common()}


def report(data: dict[str, Any], command: str) -> str:
    per = data["deployments"]
    refused = sum(row["refused_for_size"] for row in per.values())
    lines = ["# Routing a mixed workload", "", f"Command: `{command}`  ",
             f"Machine: {platform.machine()}, {platform.python_version()}. Run status: {data['status']}, "
             f"{data['seconds']:.1f} s for the whole run.", "",
             f"{data['sub_calls']:,} sub-calls: {data['sent']:,} sent, {data['refused_before_sending']} refused before "
             f"anything was sent (bigger than every window), {data['failed_otherwise']} failed otherwise. "
             f"Context-window errors from the deployments: **{refused}**.", "",
             "| deployment | group | calls | share of calls | input tokens | share of tokens | requests at the server "
             "| refused by the server for size | fullest request (share of window) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in per.items():
        if name == "root":
            continue
        lines.append(f"| {name} | {row['group']} | {row['calls']:,} | {row['calls_fraction']:.1%} | "
                     f"{row['input_tokens']:,} | {row['tokens_fraction']:.1%} | {row['server_requests']:,} | "
                     f"{row['refused_for_size']} | {row['fullest']:.1%} |")
    steps = data["token_steps"]
    lines += ["", f"Texts the size guard had to tokenize (the rest were decided by their bytes alone): "
                  f"{steps['estimated']} estimated from samples, {steps['counted_exactly']} counted exactly "
                  "(estimate within 25% of a window). The root's own turns are among them.", ""]
    lines += ["", "Routing reasons of the calls sent (numbers replaced by N):", "",
              "| reason | calls |", "| --- | ---: |"]
    lines += [f"| {reason} | {count} |" for reason, count in data["reasons"]]
    lines += ["", f"The root's cell saw: {json.dumps(data['cell'])[:600]}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    data = measure()
    text = report(data, "python -m rlm.benchmarks.routing_mix")
    args.output.write_text(text, encoding="utf-8")
    args.output.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    print(text)
    return 0 if data["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
