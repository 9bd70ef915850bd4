"""``rlm bench``: generate tasks, run methods on them, re-render reports, measure efficiency.

Only parsing and printing here; the work is in :mod:`rlm.benchmarks.tasks`,
:mod:`~rlm.benchmarks.runner`, :mod:`~rlm.benchmarks.report` and
:mod:`~rlm.benchmarks.efficiency`.

::

    rlm bench generate SUITE --n N --lengths L1,L2 --seed S --out FILE
    rlm bench generate --preset paper --out FILE
    rlm bench run SUITE --model M [--api-base URL] --n N --lengths L1,L2 --methods base,rlm,rlm-no-sub,peer-rlms \\
        --out DIR [--concurrency C] [--base-window-tokens W] [--memory NS] [--tasks FILE] [--judge-model J]
    rlm bench run --preset paper --model M --out DIR      # the RLM paper's suites, sizes and task counts
    rlm bench report DIR
    rlm bench efficiency [--out FILE] [--peers rlms,pyrlm-runtime,rlmflow,droste] [--skip-huge]
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlm.errors import InputError


def _lengths(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"lengths must be integers separated by commas, not {text!r}") from None
    if not values or any(v < 256 for v in values):
        raise argparse.ArgumentTypeError("each length must be >= 256 tokens")
    return values


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def register(subparsers: Any, add_model_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``rlm bench`` and its sub-commands."""
    from rlm.benchmarks.tasks import ALIASES, SUITES

    suites = sorted([*SUITES, *ALIASES])
    bench = subparsers.add_parser("bench", help="long-context benchmarks: generate, run, report, efficiency")
    sub = bench.add_subparsers(dest="bench_command", required=True)

    gen = sub.add_parser("generate", help="write a suite's tasks to a JSONL file")
    gen.add_argument("suite", nargs="?", choices=suites)
    _task_options(gen)
    gen.add_argument("--out", type=Path, required=True, help="the JSONL file to write")
    gen.set_defaults(func=cmd_generate)

    run = sub.add_parser("run", help="run methods on a suite and write results.jsonl and report.md")
    run.add_argument("suite", nargs="?", choices=suites)
    _task_options(run)
    run.add_argument("--tasks", type=Path, help="run the tasks of this JSONL file instead of generating them")
    run.add_argument("--methods", type=_names, default=["base", "rlm", "rlm-no-sub"],
                     help="comma-separated: base, rlm, rlm-no-sub, peer-rlms (default base,rlm,rlm-no-sub)")
    run.add_argument("--out", type=Path, required=True, help="output folder")
    run.add_argument("--concurrency", type=int, default=2, help="(task, method) pairs in flight (default 2)")
    run.add_argument("--base-window-tokens", type=int, default=128_000,
                     help="context window of the base method; longer contexts are truncated (default 128000)")
    run.add_argument("--memory", metavar="NS", help="use swarm memory namespace NS (default: no memory)")
    run.add_argument("--judge-model", metavar="MODEL", help="grade judged suites (browsecomp-plus-like) with this "
                     "model at the same endpoint, as BrowseComp-Plus does (default: the code match)")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_model_options(run)
    run.set_defaults(func=cmd_run)

    rep = sub.add_parser("report", help="re-render DIR/report.md from DIR/results.jsonl")
    rep.add_argument("out", type=Path)
    rep.set_defaults(func=cmd_report)

    eff = sub.add_parser("efficiency", help="orchestration overhead, fan-out, spawning, huge input; ours vs peers")
    eff.add_argument("--out", type=Path, default=Path("benchmarks/reports/efficiency.md"))
    eff.add_argument("--peers", type=_names, default=["rlms", "pyrlm-runtime", "rlmflow", "droste"])
    eff.add_argument("--only", type=_names, help="scenarios to run (overhead, fanout_latency, fanout_cpu, spawn, huge)")
    eff.add_argument("--huge-bytes", type=int, default=1 << 30, help="size of the huge input (default 1 GiB)")
    eff.add_argument("--iterations", type=int, default=100, help="root iterations of the overhead scenario")
    eff.set_defaults(func=cmd_efficiency)


def _task_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=["paper"], help="paper: the RLM paper's suites (s-niah, oolong, "
                        "oolong-pairs) at its lengths and task counts; a SUITE narrows it to that suite")
    parser.add_argument("--n", type=int, help="tasks per length (default 5, or the preset's)")
    parser.add_argument("--lengths", type=_lengths, help="context lengths in tokens, comma-separated "
                        "(default: the suite's, 2^13 upwards, or the preset's)")
    parser.add_argument("--seed", type=int, default=0)


def _tasks(args: argparse.Namespace) -> list[Any]:
    """The tasks that ``args`` asks for: one suite, or a preset (optionally narrowed to one suite)."""
    from rlm.benchmarks.tasks import canonical, generate, preset

    if not args.preset:
        if not args.suite:
            raise InputError("name a SUITE or a --preset")
        return generate(args.suite, args.n or 5, args.lengths, args.seed)
    runs = [r for r in preset(args.preset) if not args.suite or r.suite == canonical(args.suite)]
    if not runs:
        raise InputError(f"suite {args.suite!r} is not in the {args.preset} preset")
    return [task for r in runs for task in generate(r.suite, args.n or r.n, args.lengths or r.lengths, args.seed)]


def cmd_generate(args: argparse.Namespace, env: dict[str, str]) -> int:
    from rlm.benchmarks.tasks import write_tasks

    tasks = _tasks(args)
    write_tasks(tasks, args.out)
    print(f"wrote {len(tasks)} {args.suite or args.preset} tasks to {args.out}", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace, env: dict[str, str]) -> int:
    from rlm.benchmarks.report import write_report
    from rlm.benchmarks.runner import BenchSettings, make_methods, run_benchmark
    from rlm.benchmarks.tasks import canonical, preset, read_tasks
    from rlm.cli import config_from_args

    if args.concurrency < 1:
        raise InputError("--concurrency must be >= 1")
    config = dataclasses.replace(config_from_args(args, env), memory_namespace=args.memory or None)
    if args.tasks:
        if not args.suite and not args.preset:
            raise InputError("name the SUITE (or --preset) to run from --tasks")
        wanted = {canonical(args.suite)} if args.suite else {r.suite for r in preset(args.preset)}
        tasks = [t for t in read_tasks(args.tasks) if canonical(t.suite) in wanted]
    else:
        tasks = _tasks(args)
    if not tasks:
        raise InputError(f"no {args.suite or args.preset} tasks to run")
    methods = make_methods(args.methods)
    settings = BenchSettings(config=config, base_window_tokens=args.base_window_tokens, log=sys.stderr,
                             judge_model=args.judge_model)
    results = run_benchmark(tasks, methods, settings, args.out, concurrency=args.concurrency,
                            progress=None if args.quiet else sys.stderr)
    name = args.suite or f"{args.preset} preset"
    report = write_report(results, args.out, title=f"{name} benchmark ({config.model})", model=config.model,
                          command="rlm " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None)
    print(f"{len(results)} results in {args.out / 'results.jsonl'}; report {report}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace, env: dict[str, str]) -> int:
    from rlm.benchmarks.report import report_from_dir

    print(report_from_dir(args.out))
    return 0


def cmd_efficiency(args: argparse.Namespace, env: dict[str, str]) -> int:
    from rlm.benchmarks.efficiency import EfficiencyOptions, run_efficiency

    options = EfficiencyOptions(peers=args.peers, only=args.only, huge_bytes=args.huge_bytes,
                                iterations=args.iterations)
    path = run_efficiency(options, args.out, command="rlm " + shlex.join(sys.argv[1:]), log=sys.stderr)
    print(path)
    return 0
