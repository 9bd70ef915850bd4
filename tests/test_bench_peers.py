"""Peer drivers and dialects of the efficiency suite, without the peer venvs.

The drivers (``benchmarks/peer_driver_*.py``) import only the standard library at module level
(the peer is imported inside ``main``), so their request parsing is tested here directly. Each
dialect's scripted code is executed against small fakes of the peer's REPL primitives, written
from the peer's documented semantics (droste's 50-prompt batch cap, rlmflow's ``await rlm_wait``,
pyrlm-runtime's ``FINAL_VAR`` as a separate reply), so a dialect that would count wrong fails here.
Only the last test runs a real peer, and it skips when that peer's venv is absent (CI has none).
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from rlm.benchmarks import efficiency, peers
from rlm.benchmarks import peer_driver_droste as droste_driver
from rlm.benchmarks import peer_driver_pyrlm_runtime as pyrlm_driver
from rlm.benchmarks import peer_driver_rlmflow as rlmflow_driver
from rlm.benchmarks.efficiency import DIALECTS, EfficiencyOptions, Measurement, ScenarioPolicy

NEW_PEERS = {"pyrlm-runtime": "pyrlm_runtime", "rlmflow": "rlmflow", "droste": "droste"}
SMALL = EfficiencyOptions(iterations=4, fanout_n=120, spawn_n=7)


def _code(reply: Any, dialect: efficiency.Dialect) -> str:
    content = reply["content"] if isinstance(reply, dict) else reply
    assert content.startswith(dialect.fence + "\n") and content.endswith("\n```"), content
    return content[len(dialect.fence) + 1:-4]


def _root(scenario: str, impl: str) -> tuple[ScenarioPolicy, Any]:
    policy = ScenarioPolicy(scenario, DIALECTS[impl], SMALL)
    return policy, policy([{"role": "user", "content": f"{efficiency.ROOT_MARK}: run"}])


# -- drivers: imports and request parsing ------------------------------------------------------
@pytest.mark.parametrize("peer,module", sorted(NEW_PEERS.items()))
def test_driver_imports_only_stdlib_and_its_peer(peer: str, module: str) -> None:
    path = peers.driver_path(peer)
    assert path.exists(), path
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert "rlm" not in imported  # our package must never enter a peer's process
    assert imported - {module} <= set(sys.stdlib_module_names), imported - {module}
    # and the peer itself is imported inside main() only, so the module loads without the peer
    top = {(n.module if isinstance(n, ast.ImportFrom) else n.names[0].name).split(".")[0]
           for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))}
    assert module not in top


def test_every_peer_has_a_driver_and_a_dialect() -> None:
    for name in peers.PEERS:
        assert peers.driver_path(name).exists(), name
        assert name in DIALECTS, name


def test_load_context_reads_text_and_jsonl_documents(tmp_path: Path) -> None:
    text = tmp_path / "c.txt"
    text.write_text("hello")
    docs = tmp_path / "c.jsonl"
    docs.write_text(json.dumps({"path": "a/b.txt", "text": "B"}) + "\n\n" + json.dumps({"path": "c", "text": "C"}))
    for driver in (pyrlm_driver, rlmflow_driver, droste_driver):
        assert driver.load_context({"context_path": str(text)}) == "hello"
        assert driver.load_context({"context_path": str(docs)}) == [{"path": "a/b.txt", "text": "B"},
                                                                      {"path": "c", "text": "C"}]
        assert driver.load_context({"context": "inline", "context_path": "/nonexistent"}) == "inline"
    assert rlmflow_driver.context_text([{"path": "a", "text": "x"}]) == "=== a ===\nx\n"
    shaped = droste_driver.droste_context([{"path": "a/b.txt", "text": "é"}])
    assert shaped == {"files": [{"path": "a/b.txt", "name": "b.txt", "mime": "text/plain", "size": 2, "text": "é"}]}
    assert droste_driver.droste_context("plain") == "plain"


def test_pyrlm_options_turn_depth_into_recursive_subcalls() -> None:
    rlm_kwargs, policy_kwargs = pyrlm_driver.options({"max_depth": 1, "max_iterations": 105,
                                                      "max_concurrent_subcalls": 64, "max_llm_calls": 10_000})
    assert rlm_kwargs["recursive_subcalls"] is False and rlm_kwargs["parallel_subcalls"] is True
    assert rlm_kwargs["max_concurrent_subcalls"] == 64
    assert policy_kwargs == {"max_steps": 105, "max_subcalls": 10_000, "max_recursion_depth": 1}
    rlm_kwargs, policy_kwargs = pyrlm_driver.options({"max_depth": 2})
    assert rlm_kwargs["recursive_subcalls"] is True and rlm_kwargs["max_recursion_depth"] == 2
    assert rlm_kwargs["max_concurrent_subcalls"] == 10  # the library's default when none is asked
    assert policy_kwargs["max_steps"] == 30


def test_pyrlm_usage_counts_each_model_call_once() -> None:
    class Usage:
        def __init__(self, p: int, c: int) -> None:
            self.prompt_tokens, self.completion_tokens = p, c

    class Step:
        def __init__(self, kind: str, usage: Any, cache_hit: bool = False) -> None:
            self.kind, self.usage, self.cache_hit = kind, usage, cache_hit

    class Trace:
        steps = (Step("root_call", Usage(10, 2)), Step("repl_exec", None), Step("subcall", Usage(3, 1)),
                 Step("subcall", Usage(3, 1), cache_hit=True), Step("recursive_subcall", Usage(0, 0)),
                 Step("sub_root_call", Usage(5, 1)), Step("sub_subcall", Usage(1, 1)))

    assert pyrlm_driver.usage_of(Trace()) == (19, 5, 4)


def test_rlmflow_config_and_http_helpers() -> None:
    assert rlmflow_driver.config_kwargs({"max_depth": 1, "max_iterations": 9, "max_concurrency": 64}) == {
        "max_depth": 1, "max_iterations": 9, "max_concurrency": 64}
    assert rlmflow_driver.config_kwargs({"max_concurrent_subcalls": 16})["max_concurrency"] == 16
    host, port, https, path, body = rlmflow_driver.chat_request("http://127.0.0.1:8123/v1/", "m",
                                                                [{"role": "user", "content": "hi"}])
    assert (host, port, https, path) == ("127.0.0.1", 8123, False, "/v1/chat/completions")
    assert json.loads(body) == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    request = rlmflow_driver.chat_request("https://api.example.com/v1", "m", [])
    assert request[1:4] == (443, True, "/v1/chat/completions")
    reply = {"choices": [{"message": {"content": "ECHO-1"}}], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}
    assert rlmflow_driver.parse_reply(reply) == ("ECHO-1", 7, 2)
    assert rlmflow_driver.parse_reply({"choices": [{"message": {"content": None}}]}) == ("", 0, 0)


def test_rlmflow_client_keeps_usage_per_thread() -> None:
    class LLMClient:  # the shape of rlmflow.LLMClient the driver relies on
        last_usage = None

    class LLMUsage:
        def __init__(self, input_tokens: int = 0, output_tokens: int = 0) -> None:
            self.input_tokens, self.output_tokens = input_tokens, output_tokens

    import threading

    client = rlmflow_driver.make_client(LLMClient, LLMUsage, "http://127.0.0.1:1/v1", "m", "k")
    client.last_usage = LLMUsage(1, 1)
    seen = []
    thread = threading.Thread(target=lambda: seen.append(client.last_usage))
    thread.start()
    thread.join()
    assert seen == [None] and client.last_usage.input_tokens == 1


def test_droste_budget_and_concurrency() -> None:
    kwargs = droste_driver.budget_kwargs({"max_llm_calls": 10_000, "max_depth": 1, "max_iterations": 105})
    assert kwargs["subcalls"] == 10_000 and kwargs["max_iterations"] == 105 and kwargs["depth"] == 1
    assert kwargs["tokens"] >= 10**8 and kwargs["wall_ms"] == 1_800_000
    assert droste_driver.budget_kwargs({"max_timeout": 60})["wall_ms"] == 60_000
    assert droste_driver.concurrency({"max_concurrent_subcalls": 64}) == 64
    assert droste_driver.concurrency({}) == 5  # droste's DEFAULT_SUBCALL_CONCURRENCY


# -- dialects: the scripted code, run against fakes of each peer's primitives --------------------
class Done(Exception):
    pass


def _echo(prompts: list[str]) -> list[str]:
    return ["ECHO-" + p.split("-", 1)[1] for p in prompts]


def _run_pyrlm(code: str, ns: dict[str, Any]) -> dict[str, Any]:
    exec(compile(code, "<pyrlm>", "exec"), ns)
    return ns


def test_pyrlm_dialect_fanout_spawn_and_two_step_final() -> None:
    dialect = DIALECTS["pyrlm-runtime"]
    for scenario, fake in (("fanout_cpu", _echo), ("spawn", lambda ts: [f"child-{t[6:]}-ok" for t in ts])):
        policy, reply = _root(scenario, "pyrlm-runtime")
        ns = _run_pyrlm(_code(reply, dialect), {"llm_batch": fake})
        n = SMALL.fanout_n if scenario == "fanout_cpu" else SMALL.spawn_n
        assert ns["final_answer"] == f"ok={n}"
        # the next root reply is the plain FINAL_VAR line pyrlm-runtime needs, never fenced code
        assert policy([{"role": "user", "content": efficiency.ROOT_MARK}]) == "FINAL_VAR: final_answer"
    # a child RLM sees its task only as `P`; its first turn runs code, its second says FINAL_VAR
    policy = ScenarioPolicy("spawn", dialect, SMALL)
    first = policy([{"role": "system", "content": "sub-RLM"}, {"role": "user", "content": "Answer the question."}])
    ns = _run_pyrlm(_code(first, dialect), {"P": "CHILD-5"})
    assert ns["final_answer"] == "child-5-ok" and first["delay_ms"] == 100
    second = policy([{"role": "system", "content": "sub-RLM"}, {"role": "user", "content": "q"},
                     {"role": "assistant", "content": first["content"]}, {"role": "user", "content": "out"}])
    assert second["content"] == "FINAL_VAR: final_answer"


def test_pyrlm_dialect_overhead_ends_after_the_last_iteration() -> None:
    policy = ScenarioPolicy("overhead", DIALECTS["pyrlm-runtime"], SMALL)
    root = [{"role": "user", "content": efficiency.ROOT_MARK}]
    replies = [policy(root) for _ in range(SMALL.iterations + 1)]
    assert replies[0] == "```python\nstep = 1\nprint(step)\n```"
    assert replies[-2] == "```python\nfinal_answer = str('done-4')\n```"
    assert replies[-1] == "FINAL_VAR: final_answer"


def test_rlmflow_dialect_awaits_delegated_children() -> None:
    dialect = DIALECTS["rlmflow"]
    policy, reply = _root("spawn", "rlmflow")
    code = _code(reply, dialect)
    delegated: list[dict[str, Any]] = []

    def rlm_delegate(*, name: str, query: str, context: str) -> dict[str, Any]:
        delegated.append({"name": name, "query": query, "context": context})
        return delegated[-1]

    async def rlm_wait(*handles: dict[str, Any]) -> list[str]:
        return [f"child-{h['query'][6:]}-ok" for h in handles]

    def done(answer: Any) -> None:
        raise Done(str(answer))

    import asyncio

    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    coro = eval(compile(code, "<rlmflow>", "exec", flags=flags), {"rlm_delegate": rlm_delegate,
                                                                    "rlm_wait": rlm_wait, "done": done})
    with pytest.raises(Done, match=f"^ok={SMALL.spawn_n}$"):
        asyncio.run(coro)
    assert len({d["name"] for d in delegated}) == SMALL.spawn_n and delegated[3]["context"] == "CHILD-3"
    # a child sees CHILD-n in its query and answers with done()
    child = policy([{"role": "system", "content": "agent"}, {"role": "user", "content": "Query: CHILD-3"}])
    with pytest.raises(Done, match="^child-3-ok$"):
        exec(_code(child, dialect), {"done": done})
    # fan-out uses rlmflow's own llm_query_batched
    _, reply = _root("fanout_latency", "rlmflow")
    with pytest.raises(Done, match=f"^ok={SMALL.fanout_n}$"):
        exec(_code(reply, dialect), {"llm_query_batched": _echo, "done": done})


def test_droste_dialect_batches_at_most_50_prompts() -> None:
    dialect = DIALECTS["droste"]
    calls: list[int] = []

    def llm_query_batched(prompts: list[str]) -> list[str]:
        if len(prompts) > 50:  # droste's MAX_BATCH_PROMPTS
            raise ValueError("llm_batch prompt count exceeds max 50")
        calls.append(len(prompts))
        return _echo(prompts)

    _, reply = _root("fanout_cpu", "droste")
    answer = {"content": "", "ready": False}
    exec(_code(reply, dialect), {"llm_query_batched": llm_query_batched, "answer": answer})
    assert answer == {"content": f"ok={SMALL.fanout_n}", "ready": True}
    assert calls == [50, 50, 20]


def test_dialect_fanout_of_a_wrong_library_counts_wrong() -> None:
    """A library that drops or garbles sub-call answers must not produce the expected answer."""
    for impl in ("droste", "rlmflow"):
        _, reply = _root("fanout_cpu", impl)
        answer = {"content": "", "ready": False}

        def done(value: Any) -> None:
            raise Done(str(value))

        def lossy(prompts: list[str]) -> list[str]:
            return _echo(prompts)[:-1] + ["oops"]

        try:
            exec(_code(reply, DIALECTS[impl]), {"llm_query_batched": lossy, "answer": answer, "done": done})
            got = answer["content"]
        except Done as exc:
            got = str(exc)
        assert got != efficiency.EXPECTED["fanout_cpu"](SMALL)


def test_ours_and_rlms_dialects_are_unchanged() -> None:
    for impl in ("ours", "rlms"):
        _, reply = _root("fanout_cpu", impl)
        code = _code(reply, DIALECTS[impl])
        assert code.startswith("res = llm_query_batched(['SUBTASK-' + str(i) for i in range(120)])")
        _, reply = _root("spawn", impl)
        assert _code(reply, DIALECTS[impl]).startswith("res = rlm_query_batched(['CHILD-' + str(i) for i in range(7)])")
    policy = ScenarioPolicy("spawn", DIALECTS["rlms"], SMALL)
    child = policy([{"role": "user", "content": "no marker here"}])
    assert "str(context)" in child["content"]
    _, reply = _root("huge", "ours")
    assert _code(reply, DIALECTS["ours"]) == "i = context.find('launch code is ')\nFINAL(context[i + 15:i + 24])"


def test_huge_reads_the_context_expression_once() -> None:
    _, reply = _root("huge", "rlmflow")
    code = _code(reply, DIALECTS["rlmflow"])
    reads = []

    class Ctx:
        def read(self) -> str:
            reads.append(1)
            return "x" * 10 + "the harbour master's launch code is KESTREL-7\n"

    with pytest.raises(Done, match="^KESTREL-7$"):
        exec(code, {"CONTEXT": Ctx(), "done": lambda v: (_ for _ in ()).throw(Done(v))})
    assert reads == [1]


def test_unsupported_scenario_is_reported_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_install(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an unsupported scenario must not touch the peer venv")

    monkeypatch.setattr(peers, "ensure_peer", no_install)
    m = efficiency.measure("droste", "spawn", SMALL)
    assert m.error and m.error.startswith("not supported by droste: no recursive sub-agents")
    assert efficiency._fmt(m, "spawn") == m.error
    with pytest.raises(ValueError, match="cannot spawn"):
        ScenarioPolicy("spawn", DIALECTS["droste"], SMALL).root_code(1)


def test_a_successful_run_with_a_wrong_answer_renders_wrong() -> None:
    m = Measurement("rlmflow", "fanout_cpu", seconds=2.0, answer="ok=999", correct=False, extra={"window_s": 1.0})
    assert "WRONG: 'ok=999'" in efficiency._fmt(m, "fanout_cpu")
    m = Measurement("pyrlm-runtime", "overhead", seconds=2.0, per_iteration_ms=3.0, answer="LOOP_COLLAPSED")
    assert "WRONG" in efficiency._fmt(m, "overhead")


# -- one real peer run, only where its venv exists -------------------------------------------------
def _installed_peer(name: str) -> Path | None:
    spec = peers.PEERS[name]
    python = peers.venv_python(spec)
    if not python.exists() or not peers._installed(python, spec):
        return None
    return python


@pytest.mark.slow
@pytest.mark.parametrize("peer", sorted(NEW_PEERS))
def test_driver_runs_against_the_scripted_server(peer: str) -> None:
    if _installed_peer(peer) is None:
        pytest.skip(f"{peer} venv not installed under {peers.cache_dir()}/peers (`rlm bench efficiency` installs it)")
    options = EfficiencyOptions(iterations=3, fanout_n=60, spawn_n=3)
    for scenario in ("overhead", "fanout_cpu", "spawn"):
        m = efficiency.measure(peer, scenario, options)
        if scenario in DIALECTS[peer].unsupported:
            assert m.error.startswith(f"not supported by {peer}")
            continue
        assert m.correct, (scenario, m.to_dict())
        assert re.fullmatch(r"done-3|ok=60|ok=3", m.answer or "")
