"""``rlm batch``: the batch-job sub-command (registered through ``rlm.cli.COMMAND_MODULES``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def register(subparsers: Any, add_model_options: Callable[[argparse.ArgumentParser], None]) -> None:
    from rlm.cli import add_executor_options, memory_options, service_option

    batch = subparsers.add_parser(
        "batch", help="answer many questions (a JSONL task file) concurrently on the Ray cluster",
        description="Each TASKS line: {\"id\", \"question\", \"context_path\" or \"context\", optional overrides}. "
                    "One result line per task is appended to --out as it finishes; re-running skips ids "
                    "already there.")
    batch.add_argument("tasks", help="JSONL task file")
    batch.add_argument("--out", required=True, help="JSONL result file (appended; resumable)")
    batch.add_argument("--concurrency", type=int, default=4, help="tasks running at once (default 4)")
    batch.add_argument("--quiet", "-q", action="store_true", help="no progress bar on stderr")
    batch.add_argument("--report", type=Path, metavar="FILE",
                       help="also write score, tokens and calls per task position (markdown) to FILE")
    add_model_options(batch)
    memory_options(batch)
    add_executor_options(batch)
    service_option(batch)
    batch.set_defaults(func=cmd_batch)


def cmd_batch(args: argparse.Namespace, env: dict[str, str]) -> int:
    from rlm.cli import config_from_args, service_for

    from rlm.agents.batch import BatchJob, ProgressLine, read_tasks

    config = config_from_args(args, env)
    tasks = read_tasks(Path(args.tasks))
    progress = None if args.quiet else ProgressLine(sys.stderr)
    client = service_for(args, env, config.home)
    run_fn = None
    if client is not None:  # every task runs in the service
        import functools

        from rlm.service.ask import remote_run

        run_fn = functools.partial(remote_run, client, events=False)  # a batch reads results, not events
    if client is None:
        from rlm.cli import freeze_imports

        freeze_imports()
    job = BatchJob(tasks, config, Path(args.out), concurrency=args.concurrency, progress=progress, run_fn=run_fn)
    try:
        stats = job.run()
    except KeyboardInterrupt:
        if progress is not None:
            progress.close()
        print(f"rlm batch: interrupted; {job.stats.done} results written to {args.out}; "
              "run the same command again to resume", file=sys.stderr)
        return 130
    if progress is not None:
        progress.close()
    if args.report:
        from rlm.agents.batch_report import write_batch_report

        print(f"rlm batch: report {write_batch_report(Path(args.out), args.report)}", file=sys.stderr)
    return 0 if stats.failed == 0 else 1
