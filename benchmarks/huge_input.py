"""Huge-input benchmark: a 1 GiB context through the real loop and the real bubblewrap sandbox.

Not a timed test: :func:`measure` returns numbers and :func:`main` writes them to
``benchmarks/reports/huge_input.md``. What is measured:

* ``load_s`` -- :func:`rlm.inputs.load_context` on the file (the UTF-8 validation
  pass every ``rlm ask FILE`` makes before the first model call);
* ``first_output_s`` / ``answer_s`` -- from calling :func:`rlm.run` to the first
  cell's ``CellExecuted`` event, and to the returned answer, with a scripted
  model server on loopback (``rlm.testing``) replaying a two-turn trajectory:
  ``print(len(context)); print(context[:80])`` then ``find`` + ``FINAL``;
* ``regex_scan_s`` -- one ``context.findall(pattern)`` over the whole input in a
  fresh sandbox, timed by the host around ``Sandbox.execute``;
* memory -- the proportional set size (``Pss`` of ``/proc/PID/smaps_rollup``)
  summed over this process and all its descendants (bwrap, the sandbox's init,
  the worker), sampled every 10 ms; reported as the peak during the run, the
  baseline just before it, and the worker's own peak.

The input lives in /tmp (never in the repository) and the page cache is warm
(the file was just written or read): these are not cold-disk numbers.

Usage: ``.venv/bin/python -m rlm.benchmarks.huge_input [--size-mib 1024] [--output PATH]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from rlm.config import RLMConfig, SandboxConfig  # noqa: E402
from rlm.events import CellExecuted, EventBus  # noqa: E402
from rlm.inputs import load_context  # noqa: E402
from rlm.runner import run  # noqa: E402
from rlm.sandbox.host import Sandbox  # noqa: E402
from rlm.testing import ScriptedServer  # noqa: E402

NEEDLE = "the harbour master's launch code is KESTREL-7"
REPORT = Path(__file__).resolve().parent / "reports" / "huge_input.md"
TRAJECTORY = [
    "```repl\nprint(len(context))\nprint(context[:80])\n```",
    "```repl\ni = context.find('launch code is ')\nFINAL(context[i + 15:i + 24])\n```",
]
REGEX = r"launch code is (\S+)"


def make_input(size_bytes: int, directory: Path = Path(tempfile.gettempdir())) -> Path:
    """An ASCII log of ``size_bytes`` with the needle in its last percent (reused if present)."""
    path = directory / f"rlm-huge-input-{size_bytes}.txt"
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

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> tuple[int, int]:
        """(Pss of the whole tree, Pss of the largest descendant) in bytes."""
        own = _pss(self.root)
        children = [_pss(pid) for pid in _descendants(self.root)]
        return own + sum(children), max(children, default=0)

    def _loop(self) -> None:
        while not self._stop.is_set():
            total, worker = self.sample()
            self.peak = max(self.peak, total)
            self.worker_peak = max(self.worker_peak, worker)
            self._stop.wait(self.interval)


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


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


def measure(size_bytes: int = 1 << 30, *, home: Path | None = None) -> dict[str, Any]:
    """Run the benchmark once on a ``size_bytes`` input; returns the numbers (seconds, bytes)."""
    path = make_input(size_bytes)
    load_before = os.getloadavg()[0]
    home = home or Path(tempfile.mkdtemp(prefix="rlm-bench-home-"))
    started = time.perf_counter()
    payload = load_context(path, workdir=home)
    load_s = time.perf_counter() - started
    sandbox = SandboxConfig(cell_timeout_s=120)
    first_output: list[float] = []
    with ScriptedServer(script=TRAJECTORY) as server:
        config = RLMConfig(model="openai/scripted", api_base=server.base_url, api_key="sk-bench", home=home,
                           sandbox=sandbox, max_iterations=4)
        run("warm-up", "tiny warm-up input", config)  # imports litellm etc. outside the measurement
        server.reset(script=TRAJECTORY)
        bus = EventBus()
        bus.subscribe(lambda e: first_output.append(time.perf_counter()) if isinstance(e, CellExecuted) else None)
        with TreeMemory() as memory:
            baseline, _ = memory.sample()
            started = time.perf_counter()
            result = run("What is the launch code?", path, config, bus=bus)
            answer_s = time.perf_counter() - started
    regex_s, regex_out, regex_memory = _regex_scan(path, sandbox)
    return {
        "size_bytes": size_bytes, "path": str(path), "answer": result.answer, "status": result.status,
        "load_s": load_s, "first_output_s": first_output[0] - started if first_output else None,
        "answer_s": answer_s, "peak_tree_pss": memory.peak, "baseline_tree_pss": baseline,
        "peak_worker_pss": memory.worker_peak, "regex_scan_s": regex_s, "regex_result": regex_out,
        "regex_peak_tree_pss": regex_memory, "context_kind": payload.kind,
        "load_average": (load_before, os.getloadavg()[0]),
    }


def _regex_scan(path: Path, config: SandboxConfig) -> tuple[float, str, int]:
    with Sandbox(path, config=config) as box, TreeMemory() as memory:
        started = time.perf_counter()
        result = box.execute(f"print(context.findall({REGEX!r}))")
        elapsed = time.perf_counter() - started
    return elapsed, (result.stdout.strip() or str(result.error))[:200], memory.peak


def render(numbers: dict[str, Any], command: str) -> str:
    """The Markdown report."""
    size = numbers["size_bytes"]
    gib = size / (1 << 30)

    def ratio(value: int) -> str:
        return f"{value / (1 << 20):,.0f} MiB ({value / size:.2f}x the input)"

    first = numbers["first_output_s"]
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
        "the machine: times are noisy, memory is not).",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| input validation (`load_context`, before the first model call) | {numbers['load_s']:.3f} s |",
        f"| `rlm.run` start -> first cell's output (`print(len(context))`, `context[:80]`) | "
        f"{first:.3f} s |" if first is not None else "| first cell's output | (none) |",
        f"| `rlm.run` start -> answer (2 model turns, `find` + `FINAL`), validation included | "
        f"{numbers['answer_s']:.3f} s |",
        f"| answer | `{numbers['answer']}` (status `{numbers['status']}`) |",
        f"| peak Pss of the whole process tree during the run | {ratio(numbers['peak_tree_pss'])} |",
        f"| baseline Pss of the tree just before the run (host with litellm loaded) | "
        f"{ratio(numbers['baseline_tree_pss'])} |",
        f"| peak Pss of the sandbox worker alone | {ratio(numbers['peak_worker_pss'])} |",
        f"| regex scan: `context.findall(r'{REGEX}')` over the whole input, fresh sandbox | "
        f"{numbers['regex_scan_s']:.3f} s |",
        f"| regex scan: peak Pss of the tree | {ratio(numbers['regex_peak_tree_pss'])} |",
        f"| regex result | `{numbers['regex_result']}` |",
        "",
        "Targets (issue 3): answer in under 0.5 s at no more than 1.1x the input in memory.",
        "",
        "Reading: memory is far under the target because the worker never maps or decodes the whole input",
        "(`context` is a `Context` above `huge_input_bytes`; scans `pread` pieces into reused buffers), and the",
        "page cache holding the file is shared, not counted in any process's Pss. The time target is not met:",
        f"{numbers['answer_s'] - numbers['load_s']:.3f} s of the answer time is the loop after input validation",
        "(two model turns, sandbox start, one pass over the file for `len(context)` and one for `find`),",
        "the rest is `rlm.inputs` validating 1 GiB of UTF-8 before the first model call. Each full pass is",
        "memory-bound (~0.3-1 s per GiB here depending on load); pyrlm-runtime and droste reach 0.007-0.018 s",
        "by never touching the input in the measured path and running model code in the host process.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--output", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    numbers = measure(args.size_mib << 20)
    command = " ".join([".venv/bin/python -m rlm.benchmarks.huge_input", *(argv if argv is not None else sys.argv[1:])])
    text = render(numbers, command.strip())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
