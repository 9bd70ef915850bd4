"""Continual-learning harness: does swarm memory make the next task of a family better or cheaper?

A *stream* interleaves tasks of one family (``harbour``: find a ship's
passphrase in a generated logbook; a reusable regex solves every instance)
with dissimilar tasks (``errors``: count one service's ERROR lines in a
generated log). Every stream runs in three arms (CONTINUAL_LEARNING.md):

``off``     no memory at all (the plain scaffold);
``wiped``   the memory scaffold (note/recall, the prompt block, reflection) with
            the namespace wiped before every task: the control that isolates
            what the *stored* memories add;
``on``      one namespace kept across the stream.

After each task the answer is checked by code, and reflection is run with that
verdict as evidence (``verified``), so memories are written from checked
outcomes (lesson 3), with provenance. Per stream position the report gives
score, tokens and LM calls (task plus reflection), wall time, and memory size
(memories and their tokens in the prompt block), averaged over several random
orders of the stream (position is confounded with difficulty otherwise).

Any model works (``--model``/``--api-base``, keys from the environment). With no
model given, the scripted server plays a deterministic model that *uses* a
memory when its prompt holds one and writes one when reflection shows a
verified success: that proves the mechanics end to end (writes, provenance,
prompt injection, isolation of dissimilar tasks, costs), not that a real model
learns. ``python -m rlm.benchmarks.continual`` writes ``benchmarks/reports/continual.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlm.config import RLMConfig, SandboxConfig
from rlm.events import EventBus

ARMS = ("off", "wiped", "on")
REPORT = Path(__file__).resolve().parent / "reports" / "continual.md"
SHIPS = ["Albatross", "Boreas", "Cormorant", "Dauntless", "Eider", "Fulmar", "Gannet", "Heron", "Ibis", "Jackdaw"]
SERVICES = ["auth", "billing", "search", "mailer", "cache"]


@dataclass(frozen=True)
class Task:
    family: str
    question: str
    context: str
    answer: str


# -- task generators ----------------------------------------------------------------------


def harbour_task(rng: random.Random, lines: int = 400) -> Task:
    ship = rng.choice(SHIPS)
    codes = {s: f"{rng.choice('ABCDEFGH')}{rng.randint(100, 999)}-{rng.choice('XYZW')}" for s in SHIPS}
    body = [f"1887-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {s}: wind {rng.choice(['W', 'NE', 'S'])}, "
            f"{rng.choice(['fished', 'mended sails', 'rain', 'calm'])}." for s in rng.choices(SHIPS, k=lines)]
    for s, code in codes.items():
        body.insert(rng.randrange(len(body)), f"Harbour master notes: the passphrase for {s} is {code}.")
    return Task("harbour", f"What is the passphrase for the ship {ship}?", "\n".join(body), codes[ship])


def errors_task(rng: random.Random, lines: int = 400) -> Task:
    service = rng.choice(SERVICES)
    body = [f"2026-01-01T00:{i // 60:02d}:{i % 60:02d} {rng.choice(['INFO', 'WARN', 'ERROR'])} "
            f"[{rng.choice(SERVICES)}] request {i}" for i in range(lines)]
    count = sum(1 for line in body if " ERROR " in line and f"[{service}]" in line)
    return Task("errors", f"How many ERROR lines does the service {service} have?", "\n".join(body), str(count))


def make_stream(seed: int, family_tasks: int = 6, other_tasks: int = 3) -> list[Task]:
    """``family_tasks`` harbour tasks with ``other_tasks`` errors tasks at random positions (never first)."""
    rng = random.Random(seed)
    stream = [harbour_task(rng) for _ in range(family_tasks)]
    for _ in range(other_tasks):
        stream.insert(rng.randint(1, len(stream)), errors_task(rng))
    return stream


def score(task: Task, answer: str | None) -> float:
    return 1.0 if answer is not None and answer.strip().strip("'\"") == task.answer else 0.0


# -- the scripted model: deterministic, memory-aware ---------------------------------------

MEMORY_TEXT = ("Ship passphrases sit on lines 'the passphrase for <ship> is <CODE>': use "
               "re.search(r'passphrase for SHIP is (\\S+?)\\.', context). Only for harbour logbooks.")


def _first_group(pattern: str, question: str) -> str:
    """What ``pattern``'s group found in a question of this benchmark (each has the words it looks for)."""
    match = re.search(pattern, question)
    if match is None:
        raise ValueError(f"not a question of this benchmark: {question[:200]!r}")
    return match.group(1)


def scripted_model(messages: list[dict[str, Any]]) -> str:
    """Explores in 3 steps without a memory, 1 step with one; reflects only on verified harbour successes."""
    system = str(messages[0].get("content", ""))
    if system.startswith("You maintain the long-term memory"):
        return _scripted_reflection(system, str(messages[-1].get("content", "")))
    user = [str(m.get("content", "")) for m in messages if m.get("role") == "user"]
    question = next((u for u in user if "Question:" in u and "captain's secret" not in u), "")
    turn = sum(1 for m in messages if m.get("role") == "assistant") - 2  # minus the worked example
    if "ERROR lines" in question:
        service = _first_group(r"service (\w+)", question)
        return _repl(f"FINAL(str(sum(1 for l in context.splitlines() if ' ERROR ' in l and '[{service}]' in l)))")
    ship = _first_group(r"ship (\w+)\?", question)
    regex = f"FINAL(re.search(r'passphrase for {ship} is (\\S+?)\\.', context).group(1))"
    if "passphrase for SHIP is" in system:  # a memory told it how
        return _repl(f"import re\n{regex}")
    steps = ["print(context[:300])", f"print([l for l in context.splitlines() if '{ship}' in l and 'pass' in l][:3])",
             f"import re\n{regex}"]
    return _repl(steps[min(turn, 2)])


def _scripted_reflection(system: str, prompt: str) -> str:
    if system.startswith("You maintain the long-term memory of an AI agent system. The memories below"):
        return "```json\n[]\n```"
    learned = ("SUCCEEDED" in prompt and "verified by an external check" in prompt and "passphrase for" in prompt
               and "passphrase for SHIP" not in prompt.split("Current memories", 1)[-1])
    ops = [{"op": "add", "kind": "memory", "title": "Ship passphrases", "text": MEMORY_TEXT,
            "tags": ["harbour"]}] if learned else []
    return "```json\n" + json.dumps(ops) + "\n```"


def _repl(code: str) -> str:
    return f"```repl\n{code}\n```"


# -- running ------------------------------------------------------------------------------------


@dataclass
class TaskRecord:
    arm: str
    order: int
    position: int
    family: str
    score: float
    tokens: int
    llm_calls: int
    seconds: float
    memories: int
    memory_tokens: int
    status: str


def run_task(task: Task, config: RLMConfig, *, reflect: bool) -> dict[str, Any]:
    """One task through the public API, then (memory arms) a reflection judged by the checker."""
    import rlm
    from rlm.memory.prompt import memories_tokens
    from rlm.memory.reflect import Outcome, Reflector
    from rlm.memory.store import MemoryStore, memory_path
    from rlm.memory.trajectory import TrajectoryRecorder

    memories = memory_tokens = 0
    if config.memory_namespace:  # what this task's prompt will carry
        with MemoryStore(memory_path(config.home)) as store:
            live = store.list(config.memory_namespace, kind="memory", include_quarantined=False)
            memories, memory_tokens = len(live), memories_tokens(live)
    bus, recorder = EventBus(), TrajectoryRecorder()
    bus.subscribe(recorder)
    started = time.monotonic()
    result = rlm.run(task.question, task.context, config, bus=bus)
    value = score(task, result.answer)
    tokens, calls = result.usage.input_tokens + result.usage.output_tokens, result.usage.llm_calls
    if config.memory_namespace and reflect:
        outcome = Outcome(status=result.status, answer=result.answer, succeeded=value == 1.0, verified=True,
                          check=f"answer compared with the generator's ({value:.0f})")
        with MemoryStore(memory_path(config.home)) as store:
            report = Reflector(store, config.memory_namespace, _reflection_lm(config), run_id=result.run_id,
                               budget_tokens=config.memory_budget_tokens).reflect(
                task.question, recorder.summary(), outcome)
        tokens += report.input_tokens + report.output_tokens
        calls += report.lm_calls
    return {"score": value, "tokens": tokens, "llm_calls": calls, "seconds": time.monotonic() - started,
            "memories": memories, "memory_tokens": memory_tokens, "status": result.status}


_LM_CLIENTS: dict[tuple[str, str | None], Any] = {}


def _reflection_lm(config: RLMConfig) -> Any:
    """One LM client per model for all reflections (each client is a litellm Router with its own callbacks)."""
    from rlm.lm import LiteLLMClient

    key = (config.model, config.api_base)
    if key not in _LM_CLIENTS:
        _LM_CLIENTS[key] = LiteLLMClient(config)
    return _LM_CLIENTS[key]


def measure(*, model: str | None = None, api_base: str | None = None, orders: int = 3, family_tasks: int = 6,
            other_tasks: int = 3, seed: int = 0, home: Path | None = None, max_iterations: int = 8,
            unsafe_no_sandbox: bool = False) -> dict[str, Any]:
    """Run every arm over ``orders`` random streams; returns per-task records and per-position summaries."""
    server = None
    if model is None:
        from rlm.testing import ScriptedServer

        server = ScriptedServer(policy=scripted_model).start()
        model, api_base = "openai/scripted", server.base_url
    workdir = Path(home) if home else Path(tempfile.mkdtemp(prefix="rlm-continual-"))
    base = RLMConfig.from_env(os.environ, model=model, api_base=api_base, home=workdir,
                              max_iterations=max_iterations, reflect="never",
                              sandbox=SandboxConfig(mode="unsafe" if unsafe_no_sandbox else "bwrap"))
    if server is not None:
        base = dataclasses.replace(base, api_key="sk-scripted")
    records: list[TaskRecord] = []
    try:
        for order in range(orders):
            stream = make_stream(seed + order, family_tasks, other_tasks)
            for arm in ARMS:
                records += _run_stream(stream, arm, order, base)
    finally:
        if server is not None:
            server.stop()
    return {"model": model, "scripted": server is not None, "orders": orders, "family_tasks": family_tasks,
            "other_tasks": other_tasks, "records": [asdict(r) for r in records], "summary": summarise(records)}


def _run_stream(stream: list[Task], arm: str, order: int, base: RLMConfig) -> list[TaskRecord]:
    records = []
    for position, task in enumerate(stream):
        namespace = {"off": None, "wiped": f"wiped-{order}-{position}", "on": f"on-{order}"}[arm]
        config = dataclasses.replace(base, memory_namespace=namespace)
        outcome = run_task(task, config, reflect=arm != "off")
        records.append(TaskRecord(arm=arm, order=order, position=position, family=task.family, **outcome))
    return records


def summarise(records: list[TaskRecord]) -> dict[str, Any]:
    """Means per (arm, position) and overall per (arm, family); paired on-vs-wiped wins and losses."""
    by_position: dict[str, dict[int, dict[str, float | str]]] = {}
    for arm in ARMS:
        for position in sorted({r.position for r in records}):
            rows = [r for r in records if r.arm == arm and r.position == position]
            if rows:
                by_position.setdefault(arm, {})[position] = _means(rows)
    by_family = {arm: {family: _means([r for r in records if r.arm == arm and r.family == family])
                       for family in sorted({r.family for r in records})} for arm in ARMS}
    wins = losses = 0
    for on in (r for r in records if r.arm == "on"):
        wiped = next(r for r in records if r.arm == "wiped" and r.order == on.order and r.position == on.position)
        wins += on.score > wiped.score
        losses += on.score < wiped.score
    return {"by_position": by_position, "by_family": by_family, "paired_on_vs_wiped": {"wins": wins, "losses": losses}}


def _means(rows: list[TaskRecord]) -> dict[str, float | str]:
    keys = ("score", "tokens", "llm_calls", "seconds", "memories", "memory_tokens")
    means: dict[str, float | str] = {key: statistics.fmean(getattr(r, key) for r in rows) for key in keys}
    means["n"] = len(rows)
    means["family"] = ",".join(sorted({r.family for r in rows}))
    return means


# -- report -------------------------------------------------------------------------------------


SCRIPTED_NOTE = " (the scripted server: a deterministic policy, not a language model)"


def render_report(data: dict[str, Any], command: str) -> str:
    summary = data["summary"]
    lines = [
        "# Continual learning with swarm memory",
        "",
        f"Command: `{command}`  ",
        f"Model: `{data['model']}`{SCRIPTED_NOTE if data['scripted'] else ''}  ",
        f"Streams: {data['orders']} random orders of {data['family_tasks']} `harbour` tasks (same family) "
        f"with {data['other_tasks']} dissimilar `errors` tasks interleaved.",
        "",
        "Arms: `off` = no memory; `wiped` = the memory scaffold with the namespace wiped before every task "
        "(control); `on` = one namespace kept across the stream. Reflection after each task is judged by the "
        "task's checker (`verified` evidence). Tokens and LM calls include reflection.",
        "",
        "## Per family (mean over all positions and orders)",
        "",
        "| arm | family | score | tokens | LM calls | seconds | memories | memory tokens in prompt |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for arm, families in summary["by_family"].items():
        for family, m in families.items():
            lines.append(f"| {arm} | {family} | {m['score']:.2f} | {m['tokens']:,.0f} | {m['llm_calls']:.2f} | "
                         f"{m['seconds']:.2f} | {m['memories']:.1f} | {m['memory_tokens']:.0f} |")
    lines += ["", "## Per position (mean over orders; the family at a position varies with the order)", "",
              "| position | " + " | ".join(f"{a} score / tokens / calls / mem tokens" for a in ARMS) + " |",
              "| ---: | " + " | ".join("---" for _ in ARMS) + " |"]
    positions = sorted({int(p) for arm in summary["by_position"].values() for p in arm})
    for position in positions:
        cells = []
        for arm in ARMS:
            m = summary["by_position"][arm][position]
            cells.append(f"{m['score']:.2f} / {m['tokens']:,.0f} / {m['llm_calls']:.1f} / {m['memory_tokens']:.0f}")
        lines.append(f"| {position} | " + " | ".join(cells) + " |")
    paired = summary["paired_on_vs_wiped"]
    lines += ["", f"Paired on-vs-wiped (same order, same position): {paired['wins']} wins, {paired['losses']} losses.",
              ""]
    lines += _headline(summary["by_family"])
    if data["scripted"]:
        lines += [
            "## What this run shows, and what it cannot",
            "",
            "The model here is a scripted policy: it explores in three steps, or solves a `harbour` task in one "
            "step *when a memory with the procedure is in its prompt*, and its reflection adds that memory only "
            "after a success verified by the checker. So the score cannot change (the policy always answers "
            "correctly) and the savings are programmed. What the run does prove is the machinery, end to end "
            "through the real sandbox and the real HTTP path: the memory is written once from a verified run, "
            "with provenance; it reaches the next tasks' prompts; the `wiped` control never sees it and pays the "
            "scaffold's cost (the memory block and reflection calls) without the benefit; the dissimilar `errors` "
            "tasks carry the foreign memory's tokens but are otherwise unaffected; and the memory block stays at "
            "one short item instead of growing. Whether a real model writes *useful* memories and uses them "
            "narrowly must be measured by running this harness with `--model` on a real provider.",
        ]
    return "\n".join(lines) + "\n"


def _headline(by_family: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """On vs the wiped control, per family, as sentences (the numbers the tables hold)."""
    lines = ["## In short", ""]
    for family, on in by_family["on"].items():
        wiped, off = by_family["wiped"][family], by_family["off"][family]
        change = (on["tokens"] - wiped["tokens"]) / wiped["tokens"] * 100 if wiped["tokens"] else 0.0
        lines.append(f"- `{family}`: score {on['score']:.2f} on vs {wiped['score']:.2f} wiped vs {off['score']:.2f} "
                     f"off; tokens {on['tokens']:,.0f} on vs {wiped['tokens']:,.0f} wiped ({change:+.0f}%) vs "
                     f"{off['tokens']:,.0f} off; LM calls {on['llm_calls']:.2f} / {wiped['llm_calls']:.2f} / "
                     f"{off['llm_calls']:.2f}.")
    lines += ["- Every memory arm pays one reflection call per task, learned or not; that, not the memory block, "
              "is the main overhead of the scaffold (compare `wiped` with `off`).", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="litellm model string (default: the scripted server)")
    parser.add_argument("--api-base")
    parser.add_argument("--orders", type=int, default=3)
    parser.add_argument("--family-tasks", type=int, default=6)
    parser.add_argument("--other-tasks", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=REPORT)
    parser.add_argument("--json", type=Path, help="also write the raw records here")
    parser.add_argument("--unsafe-no-sandbox", action="store_true")
    args = parser.parse_args(argv)
    data = measure(model=args.model, api_base=args.api_base, orders=args.orders, family_tasks=args.family_tasks,
                   other_tasks=args.other_tasks, seed=args.seed, unsafe_no_sandbox=args.unsafe_no_sandbox)
    command = "python -m rlm.benchmarks.continual " + " ".join(argv if argv is not None else sys.argv[1:])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render_report(data, command.strip()), encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(data, indent=1), encoding="utf-8")
    print(render_report(data, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
