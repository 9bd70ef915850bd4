"""Prompts before and after a change, on the embedded model: the README question on seeded logbooks, s-niah.

The embedded SmolLM2-135M answers at temperature 0, so its runs are repeatable;
the *seeds* vary the inputs instead: each seed writes a lighthouse logbook like
``examples/logbook.txt`` with its own launch code at its own depth, and asks
the README's question about it ("What is the harbour master's launch code?").
A few s-niah tasks (RULER's single needle) and logbook counting questions
(how many days a ship was sighted: a whole-input aggregation) are run too.

Only :func:`rlm.runner.run` and the config are used, so the same file runs
against an older checkout of rlm (``PYTHONPATH`` pointing at it) to measure the
prompts *before* a change::

    python -m rlm.benchmarks.prompt_compare run --label after --out results/after.json
    PYTHONPATH=/path/to/old python benchmarks/prompt_compare.py run --label before --out results/before.json
    python -m rlm.benchmarks.prompt_compare report results/*.json --out benchmarks/reports/prompts.md

Each result records the answer, the score, the status, the iterations, the
tokens, whether the answer is the worked example's (``ZEBRA-42``, a leak),
whether the first reply already called FINAL, and the shapes of the agents'
replies (without a code block, with more than one).

``--grammar on|off`` and ``--stop S`` override the embedded model's profile
(:mod:`rlm.profiles`) for the run, through the models file's deployment keys,
to measure what llama.cpp's reply grammar and stop sequences change::

    python -m rlm.benchmarks.prompt_compare run --label grammar --grammar on --out results/grammar.json
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import random
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

QUESTION = "What is the harbour master's launch code?"
COUNT_QUESTION = "On how many days was {ship} sighted?"
EXAMPLE_ANSWER = "ZEBRA-42"
WEATHER = ["calm seas", "light fog", "heavy rain", "north-westerly gale", "clear skies", "drizzle and haze"]
SHIPS = ["the trawler Marigold", "a coal barge", "the ferry Saint Ives", "two fishing smacks", "the cutter Osprey"]
TASKS = ["cleaned the lens", "trimmed the wicks", "painted the gallery rail", "oiled the clockwork",
         "mended the fog bell rope", "logged the barometer", "restocked the paraffin store"]
WORDS = ["ORCA", "HERON", "GULL", "PIKE", "WREN", "SEAL", "KITE", "TERN"]


def logbook(seed: int, days: int = 2000) -> tuple[str, str, dict[str, int]]:
    """(text, launch code, days each ship was sighted) of a seeded logbook of ``days`` entries."""
    rng = random.Random(f"prompt-compare/{seed}")
    code = f"{rng.choice(WORDS)}-{rng.randint(1000, 9999)}"
    note_at = rng.randint(days // 10, days - days // 10)
    day, lines, sightings = date(1901, 1, 1), [], {ship: 0 for ship in SHIPS}
    for index in range(days):
        ship = rng.choice(SHIPS)
        sightings[ship] += 1
        lines.append(f"{day.isoformat()} - Weather: {rng.choice(WEATHER)}. Sighted {ship} at "
                     f"{rng.randint(1, 12)} o'clock. Keeper {rng.choice(['Hale', 'Morrow', 'Penn'])} "
                     f"{rng.choice(TASKS)}. Lamp lit at {rng.randint(16, 19)}:{rng.randint(0, 59):02d}.\n")
        if index == note_at:
            lines.append(f"{day.isoformat()} - Note: the harbour master's launch code is {code}. "
                         "Keep it in the locked drawer.\n")
        day += timedelta(days=1)
    return "".join(lines), code, sightings


@dataclasses.dataclass(frozen=True)
class Case:
    """One question on one input, with its gold answer."""

    id: str
    kind: str
    question: str
    context: str
    gold: str


def cases(seeds: int, sniah: int, counts: int) -> list[Case]:
    """``seeds`` launch-code questions, ``sniah`` s-niah tasks (8k and 32k tokens), ``counts`` counting questions."""
    out = []
    for seed in range(seeds):
        text, code, _ = logbook(seed)
        out.append(Case(f"launch-{seed}", "launch code", QUESTION, text, code))
    from rlm.benchmarks import sniah as suite

    for task in suite.generate((sniah + 1) // 2, [8_192, 32_768], seed=11)[:sniah]:
        gold = task.answer[0] if isinstance(task.answer, list) else task.answer
        out.append(Case(task.id, "s-niah", task.question, str(task.context), gold))
    for seed in range(counts):
        text, _, sightings = logbook(100 + seed, days=300)
        ship = SHIPS[seed % len(SHIPS)]
        out.append(Case(f"count-{seed}", "count", COUNT_QUESTION.format(ship=ship), text, str(sightings[ship])))
    return out


def score(case: Case, answer: str | None) -> float:
    """1.0 when the gold string is in the answer (case-insensitive; a count must stand as a whole number)."""
    if not answer:
        return 0.0
    if case.kind == "count":
        import re

        return float(case.gold in re.findall(r"\d+", answer))
    return float(case.gold.lower() in answer.lower())


def run_cases(label: str, selected: list[Case], max_iterations: int, timeout_s: float,
              overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run every case with the embedded model (one llama.cpp server for all); one result dict each.

    ``overrides``: models-file deployment keys (``grammar``, ``stop``) for the embedded model.
    """
    from rlm.config import LOCAL_MODEL, RLMConfig
    from rlm.events import EventBus
    from rlm.local_model import LocalModelServer, point_at
    from rlm.runner import run

    results = []
    with tempfile.TemporaryDirectory() as home, LocalModelServer() as server:
        base = RLMConfig(model=LOCAL_MODEL, home=Path(home), executor="local", max_iterations=max_iterations,
                         timeout_s=timeout_s, models=_models(overrides) if overrides else None)
        config = point_at(base, server)
        for case in selected:
            replies: list[str] = []
            bus = EventBus()
            bus.subscribe(functools.partial(_keep_reply, replies))
            started = time.monotonic()
            result = run(case.question, case.context, config, bus=bus)
            results.append(_record(label, case, result, time.monotonic() - started, replies))
            print(f"[{label}] {case.id}: {results[-1]['score']:.0f} {result.status} {result.answer!r:.60}",
                  file=sys.stderr)
    return results


def _keep_reply(replies: list[str], event: object) -> None:
    from rlm.events import IterationFinished

    if isinstance(event, IterationFinished):
        replies.append(event.reply)


def _models(overrides: dict[str, Any]) -> Any:
    """A models file's groups: the embedded model as ``root``, with ``overrides`` of its profile."""
    from rlm.config import LOCAL_MODEL
    from rlm.routing.spec import Deployment, Group, ModelsSpec

    return ModelsSpec((Group("root", (Deployment(LOCAL_MODEL, **overrides),)),), source="prompt_compare")


def _record(label: str, case: Case, result: Any, seconds: float, replies: list[str]) -> dict[str, Any]:
    from rlm.parsing import extract_code_blocks, visible_text

    blocks = [len(extract_code_blocks(visible_text(reply))) for reply in replies]
    return {"label": label, "id": case.id, "kind": case.kind, "gold": case.gold, "answer": result.answer,
            "score": score(case, result.answer), "status": result.status, "iterations": result.iterations,
            "tokens": result.usage.input_tokens + result.usage.output_tokens, "llm_calls": result.usage.llm_calls,
            "example_leak": bool(result.answer and EXAMPLE_ANSWER in result.answer),
            "final_first": result.status == "ok" and result.iterations == 1, "seconds": round(seconds, 1),
            "replies": len(replies), "no_code_replies": blocks.count(0),
            "multi_block_replies": sum(n > 1 for n in blocks)}


def report(paths: list[Path]) -> str:
    """A Markdown table: per label and kind, the mean score and what the runs looked like."""
    rows = [r for path in paths for r in json.loads(path.read_text(encoding="utf-8"))]
    labels = list(dict.fromkeys(r["label"] for r in rows))
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    lines = ["| prompts | task | runs | score | FINAL in 1st reply | example's answer | ended at turn limit "
             "| mean iterations | mean tokens | replies without code | replies with 2+ blocks | mean seconds |",
             "|" + " --- |" * 12]
    for label in labels:
        for kind in kinds:
            group = [r for r in rows if r["label"] == label and r["kind"] == kind]
            if not group:
                continue
            n = len(group)
            lines.append(
                f"| {label} | {kind} | {n} | {sum(r['score'] for r in group) / n:.2f} "
                f"| {sum(r['final_first'] for r in group)} | {sum(r['example_leak'] for r in group)} "
                f"| {sum(r['status'] == 'max_iterations' for r in group)} "
                f"| {sum(r['iterations'] for r in group) / n:.1f} | {sum(r['tokens'] for r in group) / n:,.0f} "
                f"| {_shapes(group)} | {sum(r['seconds'] for r in group) / n:.1f} |")
    return "\n".join(lines) + "\n"


def _shapes(group: list[dict[str, Any]]) -> str:
    """Replies without a code block and with several, of all replies (``-`` for results that did not count them)."""
    if any("replies" not in r for r in group):
        return "- | -"
    replies = sum(r["replies"] for r in group)
    return (f"{sum(r['no_code_replies'] for r in group)} of {replies} "
            f"| {sum(r['multi_block_replies'] for r in group)} of {replies}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    running = commands.add_parser("run", help="run the cases with the rlm importable here")
    running.add_argument("--label", required=True)
    running.add_argument("--out", type=Path, required=True)
    running.add_argument("--seeds", type=int, default=8)
    running.add_argument("--sniah", type=int, default=4)
    running.add_argument("--counts", type=int, default=2)
    running.add_argument("--max-iterations", type=int, default=20)
    running.add_argument("--timeout", type=float, default=240.0)
    running.add_argument("--grammar", choices=("profile", "on", "off"), default="profile",
                         help="llama.cpp's reply grammar on the agents' turns (default: as the profile says)")
    running.add_argument("--stop", action="append", default=None,
                         help="a stop sequence for the agents' turns (repeatable; '' for none)")
    reporting = commands.add_parser("report", help="a Markdown table from result files")
    reporting.add_argument("results", type=Path, nargs="+")
    reporting.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "run":
        overrides: dict[str, Any] = {}
        if args.grammar != "profile":
            overrides["grammar"] = args.grammar == "on"
        if args.stop is not None:
            overrides["stop"] = tuple(s.encode().decode("unicode_escape") for s in args.stop if s)
        results = run_cases(args.label, cases(args.seeds, args.sniah, args.counts), args.max_iterations,
                            args.timeout, overrides)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")
        return 0
    table = report(args.results)
    if args.out:
        args.out.write_text(table, encoding="utf-8")
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
