"""Huge-input benchmark: a 1 GiB context through the real loop and the real bubblewrap sandbox.

Not a timed test: :func:`measure` returns numbers and :func:`main` writes them to
``benchmarks/reports/huge_input.md``. What is measured:

* ``load_s`` -- :func:`rlm.inputs.load_context` on the file (the UTF-8 validation
  pass every ``rlm ask FILE`` makes before the first model call), wall and CPU;
* per run of :func:`rlm.run` (``--repeat`` runs, a scripted model server on
  loopback (``rlm.testing``) replaying a two-turn trajectory:
  ``print(len(context)); print(context[:80])`` then ``find`` + ``FINAL``), the
  time from calling it to ``RunStarted`` (input validated, run log open),
  to the first cell's ``CellExecuted``, to ``RunFinished`` (the answer exists),
  and to ``run`` returning (after the sandbox, the run log and the temp dir are
  closed) -- the headline number; and the host process's CPU time over the run;
* ``worker_cpu`` -- the sandbox worker's own CPU time (``time.process_time`` in
  the cell) for each of the two cells, in a fresh sandbox on the validated file:
  CPU time is what the machine's other jobs cannot inflate;
* ``regex_scan_s`` -- one ``context.findall(pattern)`` over the whole input in a
  fresh sandbox, timed by the host around ``Sandbox.execute``;
* memory -- the proportional set size (``Pss`` of ``/proc/PID/smaps_rollup``)
  summed over this process and all its descendants (bwrap, the sandbox's init,
  the worker), sampled every 10 ms during one more run (not a timed one: the
  sampling costs CPU); reported as the peak, the baseline just before it, and
  the worker's own peak.

The input lives in /tmp (never in the repository) and the page cache is warm
(the file was just written or read): these are not cold-disk numbers.

Usage: ``.venv/bin/python -m rlm.benchmarks.huge_input [--size-mib 1024] [--repeat 5] [--output PATH]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from rlm.config import RLMConfig, SandboxConfig
from rlm.events import CellExecuted, Event, EventBus, RunFinished, RunStarted
from rlm.inputs import load_context
from rlm.benchmarks.readings import write_report
from rlm.runlog import wait_for_closes
from rlm.runner import run
from rlm.sandbox.host import Sandbox
from rlm.testing import ScriptedServer

NEEDLE = "the harbour master's launch code is KESTREL-7"
REPORT = Path(__file__).resolve().parent / "reports" / "huge_input.md"
TRAJECTORY = [
    "```repl\nprint(len(context))\nprint(context[:80])\n```",
    "```repl\ni = context.find('launch code is ')\nFINAL(context[i + 15:i + 24])\n```",
]
REGEX = r"launch code is (\S+)"


def make_input(size_bytes: int, directory: Path | None = None) -> Path:
    """An ASCII log of ``size_bytes`` with the needle in its last percent (reused if present).

    It is written to ``directory``, by default the system's temporary directory.
    """
    path = (directory or Path(tempfile.gettempdir())) / f"rlm-huge-input-{size_bytes}.txt"
    if path.exists() and path.stat().st_size == size_bytes:
        return path
    line = b"2025-01-01T00:00:00 INFO worker-17 request served in 12 ms status=200 path=/api/v1/items\n"
    block = line * (4 * 1024 * 1024 // len(line))
    needle_at = size_bytes - size_bytes // 100
    with open(path, "wb") as out:
        written = 0
        while written < size_bytes:
            piece = block[: size_bytes - written]
            if written <= needle_at < written + len(piece):
                cut = needle_at - written
                piece = piece[:cut] + ("\n" + NEEDLE + "\n").encode() + piece[cut + len(NEEDLE) + 2:]
            out.write(piece)
            written += len(piece)
    return path


class TreeMemory:
    """Samples the summed Pss of a process and its descendants on a thread."""

    def __init__(self, root: int = os.getpid(), interval: float = 0.01) -> None:
        self.root = root
        self.interval = interval
        self.peak = 0
        self.worker_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> tuple[int, int]:
        """(Pss of the whole tree, Pss of the largest descendant) in bytes.

        Each address space counts once: a child between ``vfork`` and ``exec`` (how
        ``subprocess`` starts bwrap) shares its parent's memory, and its
        ``smaps_rollup`` is the parent's (same ``[rollup]`` address range).
        """
        own_space, own = _pss(self.root)
        seen, children = {own_space}, []
        for pid in _descendants(self.root):
            space, pss = _pss(pid)
            if space not in seen:
                seen.add(space)
                children.append(pss)
        return own + sum(children), max(children, default=0)

    def _loop(self) -> None:
        while not self._stop.is_set():
            total, worker = self.sample()
            self.peak = max(self.peak, total)
            self.worker_peak = max(self.worker_peak, worker)
            self._stop.wait(self.interval)


def _pss(pid: int) -> tuple[str, int]:
    """(what identifies the process's address space, its Pss in bytes); Pss 0 when it is gone."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        space = lines[0].split()[0] if lines and lines[0].endswith("[rollup]") else f"pid {pid}"
        for line in lines:
            if line.startswith("Pss:"):
                return space, int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return f"pid {pid}", 0


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found += [child, *_descendants(child)]
    return found


def measure(size_bytes: int = 1 << 30, *, home: Path | None = None, repeat: int = 5) -> dict[str, Any]:
    """Run the benchmark on a ``size_bytes`` input (``repeat`` runs); returns the numbers (seconds, bytes)."""
    path = make_input(size_bytes)
    _warm(path)
    load_before = os.getloadavg()[0]
    home = home or Path(tempfile.mkdtemp(prefix="rlm-bench-home-"))
    started, cpu = time.perf_counter(), time.process_time()
    payload = load_context(path, workdir=home)
    load_s, load_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    sandbox = SandboxConfig(cell_timeout_s=120)
    runs: list[dict[str, Any]] = []
    with ScriptedServer(script=TRAJECTORY) as server:
        config = RLMConfig(model="openai/scripted", api_base=server.base_url, api_key="sk-bench", home=home,
                           sandbox=sandbox, max_iterations=4)
        run("warm-up", "tiny warm-up input", config)  # imports litellm etc. outside the measurement
        for _ in range(repeat):
            server.reset(script=TRAJECTORY)
            runs.append(_one_run(path, config))
        server.reset(script=TRAJECTORY)
        memory_run = _one_run(path, config, sample_memory=True)  # its times are not reported: the sampler costs CPU
        tiny = Path(home) / "tiny-input.txt"
        tiny.write_text(f"{NEEDLE}\n")
        tiny_runs = []
        for _ in range(repeat):  # the same two turns on one line: what does not depend on the input's size
            server.reset(script=TRAJECTORY)
            tiny_runs.append(_one_run(tiny, config))
    worker_cpu = _worker_cpu(path, sandbox)
    regex_s, regex_out, regex_memory = _regex_scan(path, sandbox)
    last = runs[-1]
    return {
        "size_bytes": size_bytes, "path": str(path), "answer": last["answer"], "status": last["status"],
        "load_s": load_s, "load_cpu_s": load_cpu_s, "runs": runs, "tiny_runs": tiny_runs,
        "peak_tree_pss": memory_run["peak_tree_pss"], "baseline_tree_pss": memory_run["baseline_tree_pss"],
        "peak_worker_pss": memory_run["peak_worker_pss"], "worker_cpu": worker_cpu,
        "regex_scan_s": regex_s, "regex_result": regex_out,
        "regex_peak_tree_pss": regex_memory, "context_kind": payload.kind,
        "load_average": (load_before, os.getloadavg()[0]),
    }


def _warm(path: Path) -> None:
    """Read the file once so every measurement below sees a warm page cache (as the report says)."""
    with open(path, "rb", buffering=0) as f:
        buffer = bytearray(8 << 20)
        while f.readinto(buffer):
            pass


def _one_run(path: Path, config: RLMConfig, *, sample_memory: bool = False) -> dict[str, Any]:
    """One timed ``rlm.run`` with event time stamps (and the tree's memory, sampled on a thread, if asked).

    Reading ``smaps_rollup`` every 10 ms costs this process a few ms of CPU each time, which
    on 2 cores slows the run it measures: timed runs do not sample.
    """
    stamps: dict[str, float] = {}

    def on_event(event: Event) -> None:
        name = type(event).__name__
        if isinstance(event, (RunStarted, CellExecuted, RunFinished)) and name not in stamps:
            stamps[name] = time.perf_counter()

    bus = EventBus()
    bus.subscribe(on_event)
    memory = TreeMemory()
    baseline, _ = memory.sample()
    with memory if sample_memory else contextlib.nullcontext():
        started, cpu = time.perf_counter(), time.process_time()
        result = run("What is the launch code?", path, config, bus=bus)
        returned_s, host_cpu_s = time.perf_counter() - started, time.process_time() - cpu
        # The run log finishes writing on a thread after the answer is returned (its events are
        # journaled): wait for it here, so the next timed run does not pay for this one's close.
        wait_for_closes(config.runlog_path)
        log_closed_s = time.perf_counter() - started

    def since(name: str) -> float | None:
        return stamps[name] - started if name in stamps else None

    return {
        "answer": result.answer, "status": result.status, "started_s": since("RunStarted"),
        "first_output_s": since("CellExecuted"), "finished_s": since("RunFinished"), "answer_s": returned_s,
        "log_closed_s": log_closed_s,
        "host_cpu_s": host_cpu_s, "peak_tree_pss": memory.peak, "baseline_tree_pss": baseline,
        "peak_worker_pss": memory.worker_peak,
    }


def _worker_cpu(path: Path, config: SandboxConfig) -> list[float]:
    """The worker's CPU seconds for each trajectory cell (the validated file: the host's facts apply)."""
    seconds = []
    with Sandbox(path, config=config) as box:
        for cell in TRAJECTORY:
            code = cell.split("```repl\n", 1)[1].rsplit("```", 1)[0].replace("FINAL(", "print(")
            result = box.execute(f"import time as _t\n_c = _t.process_time()\n{code}\nprint(_t.process_time() - _c)")
            seconds.append(float(result.stdout.split()[-1]) if result.error is None else float("nan"))
    return seconds


def _regex_scan(path: Path, config: SandboxConfig) -> tuple[float, str, int]:
    with Sandbox(path, config=config) as box, TreeMemory() as memory:
        started = time.perf_counter()
        result = box.execute(f"print(context.findall({REGEX!r}))")
        elapsed = time.perf_counter() - started
    return elapsed, (result.stdout.strip() or str(result.error))[:200], memory.peak


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows if r[key] is not None)


def render(numbers: dict[str, Any], command: str) -> str:
    """The Markdown report."""
    size = numbers["size_bytes"]
    gib = size / (1 << 30)
    runs = numbers["runs"]

    def ratio(value: int) -> str:
        return f"{value / (1 << 20):,.0f} MiB ({value / size:.2f}x the input)"

    def spread(key: str, rows: list[dict[str, Any]] = runs) -> str:
        values = [r[key] for r in rows if r[key] is not None]
        if not values:
            return "(none)"
        return f"{statistics.median(values):.3f} s (min {min(values):.3f}, max {max(values):.3f})"

    cells = numbers["worker_cpu"]
    return "\n".join([
        "# Huge input: 1 GiB through the loop and the sandbox",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Linux {platform.release()}; bubblewrap sandbox (default `SandboxConfig`), scripted model server on "
        "loopback; warm page cache. Input: an ASCII log in /tmp, "
        f"{size:,} bytes ({gib:.2f} GiB), needle in the last percent. 1-minute load average "
        f"{numbers['load_average'][0]:.1f} before and {numbers['load_average'][1]:.1f} after (other jobs share "
        "the machine: wall times are noisy, CPU times and memory much less).",
        "",
        f"Each `rlm.run` row is the median of {len(runs)} runs (min, max); each run validates the input itself.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| input validation alone (`load_context`): wall / CPU | {numbers['load_s']:.3f} s / "
        f"{numbers['load_cpu_s']:.3f} s |",
        f"| `rlm.run` start -> `RunStarted` (input validated, run log open, LM client built) | {spread('started_s')} |",
        f"| `rlm.run` start -> first cell's output (`print(len(context))`, `context[:80]`) | "
        f"{spread('first_output_s')} |",
        f"| `rlm.run` start -> `RunFinished` (the answer exists; 2 model turns, `find` + `FINAL`) | "
        f"{spread('finished_s')} |",
        f"| **`rlm.run` start -> answer returned** (sandbox and temp dir closed; events journaled) | "
        f"**{spread('answer_s')}** |",
        f"| `rlm.run` start -> run log closed (its last batch and checkpoint, on a thread after the return) | "
        f"{spread('log_closed_s')} |",
        f"| host process CPU time over the run (all threads, the scripted model server's too) | "
        f"{spread('host_cpu_s')} |",
        f"| the same run on a one-line input (fixed costs): `rlm.run` start -> `RunFinished` | "
        f"{spread('finished_s', numbers['tiny_runs'])} |",
        f"| the same run on a one-line input: `rlm.run` start -> answer returned | "
        f"{spread('answer_s', numbers['tiny_runs'])} |",
        f"| the same run on a one-line input: host CPU time | {spread('host_cpu_s', numbers['tiny_runs'])} |",
        f"| worker CPU time: cell 1 (`len`, `[:80]`) / cell 2 (`find`, slice) | {cells[0]:.3f} s / {cells[1]:.3f} s |",
        f"| answer | `{numbers['answer']}` (status `{numbers['status']}`) |",
        f"| peak Pss of the whole process tree during a run (one more run, sampled every 10 ms) | "
        f"{ratio(numbers['peak_tree_pss'])} |",
        f"| baseline Pss of the tree just before a run (host with litellm loaded) | "
        f"{ratio(numbers['baseline_tree_pss'])} |",
        f"| peak Pss of the sandbox worker alone | {ratio(numbers['peak_worker_pss'])} |",
        f"| regex scan: `context.findall(r'{REGEX}')` over the whole input, fresh sandbox | "
        f"{numbers['regex_scan_s']:.3f} s |",
        f"| regex scan: peak Pss of the tree | {ratio(numbers['regex_peak_tree_pss'])} |",
        f"| regex result | `{numbers['regex_result']}` |",
        "",
        "Targets (issue 3): answer in under 0.5 s at no more than 1.1x the input in memory.",
        "",
        "Where the time goes. Work that grows with the input is two passes over the 1 GiB: the host's UTF-8",
        f"validation before the first model call ({numbers['load_cpu_s']:.3f} s of CPU: `bytearray.isascii` on 1 MiB",
        "chunks read into one reused buffer), and the worker's `find` in the second cell",
        f"({cells[1]:.3f} s of CPU: `preadv` into a reused buffer, `memchr` for the needle's rarest byte). The first",
        f"cell costs the worker {cells[0]:.3f} s: validation hands the length, a pure-ASCII flag and (for other text)",
        "character-offset checkpoints to the sandbox's `init` frame, so `len(context)` and offset conversions never",
        "scan the file. Everything else is fixed per-run cost, the same on a one-line input (rows above): sandbox",
        "start (bubblewrap, Python and the worker's imports, after the first model call), two model calls through",
        "litellm, and the run log (opened before `RunStarted`; its close, the last batch and DuckDB's checkpoint,",
        "runs on a thread after the answer is returned, safe because every event is journaled first).",
        "",
        "Memory: the worker never maps or decodes the whole input (`context` is a `Context` above",
        "`huge_input_bytes`; scans read pieces into reused buffers), and the page cache holding the file is shared,",
        "not counted in any process's Pss. The host's validation buffer is 1 MiB.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5, help="timed rlm.run calls (the report gives the median)")
    parser.add_argument("--output", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    numbers = measure(args.size_mib << 20, repeat=args.repeat)
    command = " ".join([".venv/bin/python -m rlm.benchmarks.huge_input", *(argv if argv is not None else sys.argv[1:])])
    text = render(numbers, command.strip())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_report(args.output, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
