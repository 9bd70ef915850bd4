"""The efficiency suite: ours vs peer RLM libraries on the same scripted trajectories.

Every implementation runs as its own process tree through a driver script
(``peer_driver_ours.py`` with our venv, ``peer_driver_rlms.py`` with the ``rlms``
venv, ...) against one :class:`rlm.testing.ScriptedServer` whose *policy* plays the
model. The policy recognises the root agent by the marker ``EFFICIENCY-ROOT`` in
its question, a sub-call by ``SUBTASK-<n>`` and a child agent by ``CHILD-<n>``; the
code it replies with is written in each library's dialect (how it ends a run, how
it fans out). Scenarios:

* ``overhead`` -- 100 root iterations of a trivial cell at zero latency; the
  orchestration overhead per iteration is the client-side gap between the server's
  answer to request *i* and the arrival of request *i+1* (server time excluded, from
  the server's own timestamps);
* ``fanout_latency`` -- 1,000 sub-calls at 500 ms each (``llm_query_batched``), 64 in
  flight where the library lets us choose;
* ``fanout_cpu`` -- 1,000 sub-calls at zero latency (client CPU bound);
* ``spawn`` -- 200 child agents at 100 ms per model call, 16 in flight;
* ``huge`` -- a 1 GiB input: time to answer and peak RSS of the process tree
  (ours: :mod:`rlm.benchmarks.huge_input` when present).

Every answer is checked by content (``ok=1000``, ``ok=200``, the needle), so a library
that silently drops children is caught. The Ray engineer's ``benchmarks/fanout.py``
(``measure_latency_bound``/``measure_cpu_bound``/``measure_spawn``) is used for ours
when present; otherwise the scenarios above measure ours too.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rlm.benchmarks import peers
from rlm.benchmarks.readings import write_report

HERE = Path(__file__).resolve().parent
ROOT_MARK = "EFFICIENCY-ROOT"


def _batched(fn: str, chunk: int | None = None) -> Callable[[str], str]:
    """Code that sets ``res`` to ``fn(tasks)``, in calls of at most ``chunk`` items when the library caps a batch."""
    if chunk is None:
        return lambda tasks: f"res = {fn}({tasks})"
    return lambda tasks: (f"_tasks = {tasks}\nres = []\nfor _k in range(0, len(_tasks), {chunk}):\n"
                          f"    res += {fn}(_tasks[_k:_k + {chunk}])")


def _rlmflow_spawn(tasks: str) -> str:
    # rlm_delegate starts a named child agent per task; `await rlm_wait(...)` suspends the block until all are done
    return (f"_handles = [rlm_delegate(name='c' + str(_i), query=_t, context=_t) for _i, _t in enumerate({tasks})]\n"
            "res = await rlm_wait(*_handles)")


@dataclass(frozen=True)
class Dialect:
    """How one library's model code ends a run, fans out, spawns children and reads its context.

    ``final`` turns an expression into code that ends the agent with it. Libraries that cannot end a
    run from inside executed code (pyrlm-runtime: ``FINAL_VAR: name`` must be a separate, unfenced
    reply) set ``finish``: the reply that follows the turn whose code ran ``final``. ``fanout`` and
    ``spawn`` turn a list expression into code that sets ``res`` (one answer per item, in order);
    ``unsupported`` maps a scenario to why this library cannot run it (reported, never faked).
    """

    final: Callable[[str], str]  # python expression -> code that ends the agent with it
    fence: str = "```repl"
    max_depth_for_children: int = 1  # the max_depth at which rlm_query starts real child agents
    fanout: Callable[[str], str] = _batched("llm_query_batched")  # sub-LM calls, one per item
    spawn: Callable[[str], str] | None = _batched("rlm_query_batched")  # child agents, one per item
    context: str = "context"  # the REPL expression that is the context text
    finish: str | None = None  # a second, plain reply that ends the run after `final`'s code ran
    unsupported: Mapping[str, str] = field(default_factory=dict)  # scenario -> why not


DIALECTS: dict[str, Dialect] = {
    "ours": Dialect(final=lambda expr: f"FINAL({expr})"),
    "rlms": Dialect(final=lambda expr: f'answer["content"] = str({expr})\nanswer["ready"] = True',
                    max_depth_for_children=2),
    # pyrlm-runtime 1.0.3: `FINAL_VAR: name` ends the run only as a plain (unfenced) reply after the code
    # that set the variable ran; llm_batch always runs in parallel (max_concurrent_subcalls threads); with
    # recursive_subcalls (max_depth >= 2) each llm_batch prompt is a child RLM with its own REPL (`P`).
    "pyrlm-runtime": Dialect(final=lambda expr: f"final_answer = str({expr})", fence="```python",
                             finish="FINAL_VAR: final_answer", max_depth_for_children=2,
                             fanout=_batched("llm_batch"), spawn=_batched("llm_batch"), context="P"),
    # rlmflow 0.3.2: done(x) ends an agent; llm_query_batched for one-shot calls; rlm_delegate + await
    # rlm_wait for child agents (allowed while depth < max_depth); the context is the CONTEXT object.
    "rlmflow": Dialect(final=lambda expr: f"done({expr})", spawn=_rlmflow_spawn, context="CONTEXT.read()"),
    # droste 0.26.0: the rlms-style answer dict; llm_query_batched takes at most 50 prompts per call
    # (MAX_BATCH_PROMPTS); there is no way for model code to start a child agent.
    "droste": Dialect(final=lambda expr: f'answer["content"] = str({expr})\nanswer["ready"] = True',
                      fence="```python", fanout=_batched("llm_query_batched", 50), spawn=None,
                      unsupported={"spawn": "no recursive sub-agents: model code only has one-shot "
                                            "llm_query/llm_query_batched sub-calls (its depth budget and "
                                            "BudgetLedger.child() are not used by the 0.26.0 loop)"}),
}


@dataclass
class EfficiencyOptions:
    peers: list[str] = field(default_factory=lambda: ["rlms", "pyrlm-runtime", "rlmflow", "droste"])
    only: list[str] | None = None
    huge_bytes: int = 1 << 30
    iterations: int = 100
    home: Path | None = None
    fanout_n: int = 1000
    spawn_n: int = 200


def _reply(dialect: Dialect, code: str) -> str:
    return f"{dialect.fence}\n{code}\n```"


class ScenarioPolicy:
    """The scripted model of one scenario, in one dialect; thread-safe (the server runs it on its loop)."""

    def __init__(self, scenario: str, dialect: Dialect, options: EfficiencyOptions) -> None:
        self.scenario, self.dialect, self.options = scenario, dialect, options
        self.root_turns = 0
        self.root_final_turn: int | None = None  # the root turn whose code ran `final` (two-step dialects)
        self.lock = threading.Lock()

    def __call__(self, messages: list[dict[str, Any]]) -> Any:
        text = "\n".join(str(m.get("content")) for m in messages)
        if ROOT_MARK in text:
            with self.lock:
                self.root_turns += 1
                turn = self.root_turns
                if self.dialect.finish is not None and self.root_final_turn is not None:
                    return self.dialect.finish
                code = self.root_code(turn)
                if self.dialect.finish is not None and self._ends(turn):
                    self.root_final_turn = turn
            return _reply(self.dialect, code)
        last_user = next((str(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        if match := re.search(r"SUBTASK-(\d+)", last_user):
            delay = 500 if self.scenario == "fanout_latency" else 0
            return {"content": f"ECHO-{match.group(1)}", "delay_ms": delay}
        if self.dialect.finish is not None and any(m.get("role") == "assistant" for m in messages):
            # a child of a two-step dialect already ran its `final` code: end it
            return {"content": self.dialect.finish, "delay_ms": 100}
        if children := re.findall(r"CHILD-(\d+)", text):
            return {"content": _reply(self.dialect, self.dialect.final(repr(f"child-{children[0]}-ok"))),
                    "delay_ms": 100}
        # a child that was handed its task as its context only (rlms, pyrlm-runtime): read the marker from there
        code = f"import re\nn = re.search(r'CHILD-(\\d+)', str({self.dialect.context})).group(1)\n"
        return {"content": _reply(self.dialect, code + self.dialect.final("'child-' + n + '-ok'")), "delay_ms": 100}

    def _ends(self, turn: int) -> bool:
        """Whether root turn ``turn`` runs ``final`` (every scenario but ``overhead`` ends on its first turn)."""
        return self.scenario != "overhead" or turn >= self.options.iterations

    def root_code(self, turn: int) -> str:
        final, dialect = self.dialect.final, self.dialect
        if self.scenario == "overhead":
            n = self.options.iterations
            return f"step = {turn}\nprint(step)" if turn < n else final(repr(f"done-{n}"))
        if self.scenario in ("fanout_latency", "fanout_cpu"):
            n = self.options.fanout_n
            return (dialect.fanout(f"['SUBTASK-' + str(i) for i in range({n})]") + "\n"
                    "ok = sum(1 for i, r in enumerate(res) if str(r).strip() == 'ECHO-' + str(i))\n"
                    + final("'ok=' + str(ok)"))
        if self.scenario == "spawn":
            n = self.options.spawn_n
            if dialect.spawn is None:
                raise ValueError(f"this dialect cannot spawn child agents: {dialect.unsupported.get('spawn')}")
            return (dialect.spawn(f"['CHILD-' + str(i) for i in range({n})]") + "\n"
                    "ok = sum(1 for i, r in enumerate(res) if 'child-' + str(i) + '-ok' in str(r))\n"
                    + final("'ok=' + str(ok)"))
        if self.scenario == "huge":
            ctx = dialect.context
            if not ctx.isidentifier():  # an expression (CONTEXT.read()): evaluate it once
                ctx = "_text"
                code = f"_text = {dialect.context}\n"
            else:
                code = ""
            return code + f"i = {ctx}.find('launch code is ')\n" + final(f"{ctx}[i + 15:i + 24]")
        raise ValueError(self.scenario)


EXPECTED = {"overhead": lambda o: f"done-{o.iterations}", "fanout_latency": lambda o: f"ok={o.fanout_n}",
            "fanout_cpu": lambda o: f"ok={o.fanout_n}", "spawn": lambda o: f"ok={o.spawn_n}",
            "huge": lambda o: "KESTREL-7"}


# -- process-tree memory ------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        try:
            for tid in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{tid}/children") as fh:
                    kids = [int(k) for k in fh.read().split()]
                found += kids
                stack += kids
        except OSError:
            continue
    return found


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class TreeSampler:
    """Samples the summed RSS of a process and its descendants every 20 ms; ``peak`` in bytes."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._pid: int | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def watch(self, pid: int) -> None:
        self._pid = pid
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._pid is not None:
                self.peak = max(self.peak, sum(_rss(p) for p in [self._pid, *_children(self._pid)]))
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


# -- running one (implementation, scenario) -------------------------------------------------
@dataclass
class Measurement:
    """One implementation on one scenario."""

    impl: str
    scenario: str
    seconds: float | None = None
    per_iteration_ms: float | None = None
    peak_rss_bytes: int | None = None
    answer: str | None = None
    correct: bool = False
    requests: int = 0
    max_in_flight: int = 0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _run_driver_sampled(python: Path, driver: Path, request: dict[str, Any],
                        timeout: float) -> tuple[dict[str, Any], int]:
    """Like :func:`peers.run_driver`, sampling the driver's process-tree RSS."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    sampler = TreeSampler()
    with tempfile.TemporaryDirectory(prefix="rlm-eff-") as cwd:
        proc = subprocess.Popen([str(python), str(driver)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
        sampler.watch(proc.pid)
        try:
            out, err = proc.communicate(json.dumps(request), timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise peers.PeerError(f"{driver.name} timed out after {timeout:.0f}s", peer=driver.stem) from None
        finally:
            sampler.stop()
    lines = [line for line in out.splitlines() if line.strip()]
    try:
        return json.loads(lines[-1]), sampler.peak
    except (IndexError, json.JSONDecodeError):
        raise peers.PeerError(f"{driver.name} exited {proc.returncode}: {(err or out)[-600:]}",
                              peer=driver.stem) from None


def _context_file(scenario: str, options: EfficiencyOptions, tmp: Path) -> Path:
    if scenario == "huge":
        return _huge_file(options.huge_bytes)
    path = tmp / "context.txt"
    path.write_text("efficiency benchmark context\n" * 100, encoding="utf-8")
    return path


def _huge_file(size: int) -> Path:
    try:
        from rlm.benchmarks import huge_input

        return huge_input.make_input(size)
    except ImportError:
        path = Path(tempfile.gettempdir()) / f"rlm-eff-huge-{size}.txt"
        if not (path.exists() and path.stat().st_size == size):
            line = b"2025-01-01T00:00:00 INFO worker-17 request served in 12 ms status=200\n"
            needle = b"the harbour master's launch code is KESTREL-7\n"
            with path.open("wb") as fh:
                body = size - len(needle)
                block = line * (1 << 20 // len(line))
                while fh.tell() + len(block) <= body:
                    fh.write(block)
                fh.write(b"x" * (body - fh.tell()) + needle)
        return path


def measure(impl: str, scenario: str, options: EfficiencyOptions, log: TextIO | None = None) -> Measurement:
    """Run ``impl`` (``ours`` or a peer name) on ``scenario`` against a fresh scripted server."""
    from rlm.testing import ScriptedServer

    if impl not in DIALECTS:
        return Measurement(impl, scenario,
                           error="no driver for this library's API yet (it is installed in its own venv, but not run)")
    dialect = DIALECTS[impl]
    if scenario in dialect.unsupported:
        return Measurement(impl, scenario, error=f"not supported by {impl}: {dialect.unsupported[scenario]}",
                           extra={"unsupported": True})
    try:
        python = Path(sys.executable) if impl == "ours" else peers.ensure_peer(impl, log=log)
    except peers.PeerError as exc:
        return Measurement(impl, scenario, error=str(exc))
    policy = ScenarioPolicy(scenario, dialect, options)
    with tempfile.TemporaryDirectory(prefix="rlm-eff-") as tmp, ScriptedServer(policy=policy) as server:
        context = _context_file(scenario, options, Path(tmp))
        request = {"model": "openai/scripted" if impl == "ours" else "scripted", "api_base": server.base_url,
                   "api_key": "sk-bench", "question": f"{ROOT_MARK}: run the {scenario} scenario.",
                   "context_path": str(context), "home": str(Path(tmp) / "home"),
                   "max_iterations": options.iterations + 5, "max_llm_calls": 10_000,
                   "max_depth": dialect.max_depth_for_children if scenario == "spawn" else 1,
                   "max_concurrency": 64 if scenario.startswith("fanout") else 16,
                   "max_concurrent_subcalls": 64 if scenario.startswith("fanout") else 16}
        started = time.perf_counter()
        try:
            result, peak = _run_driver_sampled(python, peers.driver_path(impl), request, timeout=1800)
        except peers.PeerError as exc:
            return Measurement(impl, scenario, error=str(exc))
        seconds = time.perf_counter() - started
        records = server.requests
    answer = result.get("answer")
    m = Measurement(impl, scenario, seconds=result.get("seconds") or seconds, peak_rss_bytes=peak,
                    answer=None if answer is None else str(answer)[:200],
                    correct=str(answer or "").strip().strip("'\"") == EXPECTED[scenario](options),
                    requests=len(records), max_in_flight=_in_flight(records), error=result.get("error"))
    if scenario == "overhead":
        m.per_iteration_ms = _per_iteration_ms(records, ROOT_MARK)
    m.extra["window_s"] = _window_s(records, ROOT_MARK, roots=scenario in ("overhead", "huge"))
    return m


def _in_flight(records: list[Any]) -> int:
    from rlm.testing import max_concurrency

    return max_concurrency(records)


def _window_s(records: list[Any], mark: str, *, roots: bool) -> float | None:
    """Server-side span from the first to the last answered request (sub-calls only unless ``roots``).

    For fan-out and spawning this is the fan-out itself, without process start-up and imports.
    """
    chosen = [r for r in records if r.responded_at is not None
              and (roots or not any(mark in str(m.get("content")) for m in r.messages or []))]
    if not chosen:
        return None
    return max(r.responded_at for r in chosen) - min(r.received_at for r in chosen)


def _per_iteration_ms(records: list[Any], mark: str) -> float | None:
    """Median client-side gap between a root reply and the next root request, in ms."""
    roots = sorted((r for r in records if any(mark in str(m.get("content")) for m in r.messages or [])),
                   key=lambda r: r.received_at)
    gaps = [b.received_at - a.responded_at for a, b in itertools.pairwise(roots) if a.responded_at is not None]
    return statistics.median(gaps) * 1000 if gaps else None


# -- ours through the other engineers' modules, when present ---------------------------------
def _optional(module: str) -> Any:
    try:
        return importlib.import_module(f"rlm.benchmarks.{module}")
    except ImportError:
        return None


def measure_ours_external(scenario: str, options: EfficiencyOptions) -> dict[str, Any] | None:
    """Ours through ``fanout.py`` / ``huge_input.py`` if their owners have written them, else None."""
    if scenario == "huge" and (huge := _optional("huge_input")) is not None:
        return huge.measure(options.huge_bytes)
    fanout = _optional("fanout")
    names = {"fanout_latency": "measure_latency_bound", "fanout_cpu": "measure_cpu_bound", "spawn": "measure_spawn"}
    if fanout is not None and hasattr(fanout, names.get(scenario, "")):
        return getattr(fanout, names[scenario])()
    return None


SCENARIOS = ("overhead", "fanout_latency", "fanout_cpu", "spawn", "huge")
TARGETS = {"overhead": "<= 3 ms per iteration", "fanout_latency": "<= 8.5 s", "spawn": "<= 1.5 s",
           "huge": "< 0.5 s at <= 1.1x the input", "fanout_cpu": "(no target)"}


def run_efficiency(options: EfficiencyOptions, out: Path, *, command: str = "", log: TextIO | None = None) -> Path:
    """Run every scenario for ours and the peers; write the markdown report to ``out``."""
    scenarios = [s for s in SCENARIOS if not options.only or s in options.only]
    results: list[Measurement] = []
    external: dict[str, Any] = {}
    for scenario in scenarios:
        for impl in ["ours", *options.peers]:
            if log:
                print(f"[efficiency] {scenario}: {impl} ...", file=log, flush=True)
            results.append(measure(impl, scenario, options, log))
            if log:
                print(f"[efficiency]   {json.dumps(results[-1].to_dict(), default=str)[:400]}", file=log, flush=True)
        try:
            ext = measure_ours_external(scenario, options)
        except Exception as exc:  # noqa: BLE001 - a failing external measurement must not lose the others
            ext = {"error": f"{type(exc).__name__}: {exc}"}
        if ext is not None:
            external[scenario] = ext
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.with_suffix(".json")).write_text(json.dumps({"measurements": [m.to_dict() for m in results],
                                                      "external": external}, indent=1, default=str))
    write_report(out, render(results, external, options, command))
    return out


def rerender(json_path: Path, out: Path, options: EfficiencyOptions, command: str) -> Path:
    """Write the markdown report again from a saved ``efficiency.json``."""
    data = json.loads(json_path.read_text())
    results = [Measurement(**m) for m in data["measurements"]]
    write_report(out, render(results, data.get("external", {}), options, command))
    return out


def _fmt(m: Measurement, scenario: str) -> str:
    if m.extra.get("unsupported"):
        return m.error or "not supported"
    if m.error and m.seconds is None:
        return f"not run: {m.error[:160]}"
    window = m.extra.get("window_s")
    if scenario == "overhead" and m.per_iteration_ms is not None:
        value = f"{m.per_iteration_ms:.1f} ms/iter"
    elif scenario in ("fanout_latency", "fanout_cpu", "spawn") and window is not None:
        value = f"{window:.2f} s fan-out ({m.seconds:.1f} s whole run, {m.max_in_flight} in flight)"
    else:
        value = f"{m.seconds:.2f} s" if m.seconds is not None else "-"
    mem = f", peak RSS {m.peak_rss_bytes / 2**20:,.0f} MiB" if m.peak_rss_bytes else ""
    return f"{value}{mem}, {'correct' if m.correct else 'WRONG: ' + repr(m.answer)[:60]}"


def _headline(m: Measurement, scenario: str) -> float | None:
    """The number a scenario is judged by: ms/iteration, the fan-out window, or the whole run."""
    if scenario == "overhead":
        return m.per_iteration_ms
    if scenario in ("fanout_latency", "fanout_cpu", "spawn"):
        return m.extra.get("window_s")
    return m.seconds


def render(results: list[Measurement], external: dict[str, Any], options: EfficiencyOptions, command: str) -> str:
    impls = list(dict.fromkeys(m.impl for m in results))
    scenarios = list(dict.fromkeys(m.scenario for m in results))
    lines = ["# Efficiency: ours vs peer RLM libraries (scripted server)", "",
             f"Command: `{command}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
             f"load average {os.getloadavg()[0]:.1f} when the report was written (the machine is shared: "
             "other test runs inflate these numbers); peers pinned as in `rlm.benchmarks.peers.PEERS`.", "",
             "| scenario | target | " + " | ".join(impls) + " |", "| --- | --- |" + " --- |" * len(impls)]
    for scenario in scenarios:
        row = {m.impl: m for m in results if m.scenario == scenario}
        cells = " | ".join(_fmt(row[i], scenario) for i in impls)
        lines.append(f"| {scenario} | {TARGETS[scenario]} | {cells} |")
    lines += ["", "Ratios (peer / ours; > 1 means ours is faster):", ""]
    for scenario in scenarios:
        row = {m.impl: m for m in results if m.scenario == scenario}
        ours = row.get("ours")
        base = _headline(ours, scenario) if ours else None
        peers = {impl: _headline(m, scenario) for impl, m in row.items() if impl != "ours" and m.correct}
        parts = [f"{impl} {value / base:.2f}x" for impl, value in peers.items() if base and value]
        lines.append(f"- {scenario}: " + (", ".join(parts) if parts else "no comparable peer result"))
    if external:
        lines += ["", "Ours through the other engineers' benchmark modules:", ""]
        for scenario, numbers in external.items():
            lines.append(f"- {scenario}: `{json.dumps(numbers, default=str)[:600]}`")
    lines += ["", "Details (one JSON object per measurement) are in the `.json` file next to this report.", ""]
    return "\n".join(lines)
