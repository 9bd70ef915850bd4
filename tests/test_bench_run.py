"""End to end: `rlm bench run` against the scripted server (a policy that solves s-niah), both files written."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from rlm.benchmarks.runner import base_prompt
from rlm.prompts import NO_SUB_CALLS_RULE
from rlm.benchmarks.tasks import Task, read_tasks
from rlm.cli import main

NEEDLE = re.compile(r"special magic numbers for ([\w-]+) is: (\d{7})")
QUESTION_KEY = re.compile(r"special magic number for ([\w-]+) mentioned")


def solver(messages: list[dict[str, Any]]) -> str:
    """Agents get code that greps the needle; a direct (base) prompt gets the number if it is in the prompt."""
    text = "\n".join(str(m.get("content")) for m in messages)
    is_agent = messages[0].get("role") == "system" and "REPL" in str(messages[0].get("content"))
    key = QUESTION_KEY.findall(text)[-1]
    if is_agent:
        return ("```repl\nimport re\n"
                f"m = re.search(r'special magic numbers for {key} is: (\\d+)', context)\n"
                "FINAL(m.group(1) if m else 'not found')\n```")
    found = dict(NEEDLE.findall(text))
    return f"The special magic number for {key} is {found[key]}." if key in found else "I could not find it."


@pytest.mark.slow
def test_bench_run_writes_results_and_report(server_factory, tmp_path: Path, rlm_home: Path, capsys) -> None:
    server = server_factory(policy=solver)
    out = tmp_path / "out"
    tasks_file = tmp_path / "tasks.jsonl"
    assert main(["bench", "generate", "s-niah", "--n", "2", "--lengths", "1024,2048", "--seed", "3",
                 "--out", str(tasks_file)]) == 0
    tasks = read_tasks(tasks_file)
    gold_by_id = {t.id: t for t in tasks}
    code = main(["bench", "run", "s-niah", "--tasks", str(tasks_file), "--model", "openai/scripted",
                 "--api-base", server.base_url, "--methods", "base,rlm,rlm-no-sub", "--out", str(out),
                 "--concurrency", "2", "--base-window-tokens", "1500", "--cell-timeout", "30"])
    assert code == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == len(tasks) * 3
    by_method = {m: [r for r in rows if r["method"] == m] for m in ("base", "rlm", "rlm-no-sub")}
    for method in ("rlm", "rlm-no-sub"):
        assert all(r["status"] == "ok" and r["score"] == 1.0 and r["run_id"] for r in by_method[method]), by_method
        assert all(r["llm_calls"] == 1 and r["input_tokens"] > 0 for r in by_method[method])
    # base sees only the head of the context that fits a 1,500-token window: it scores exactly when
    # the needle is in what it saw; 1,024-token contexts fit whole, 2,048-token ones are cut
    for row in by_method["base"]:
        task = gold_by_id[row["id"]]
        prompt, truncated = base_prompt(task, task.load_context(), 1500, 2000)
        assert truncated == (task.length_tokens == 2048) == row["notes"]["truncated"]
        assert row["score"] == (1.0 if NEEDLE.search(prompt) else 0.0)
        assert row["llm_calls"] == 1 and row["status"] == "ok"
    assert all(r["score"] == 1.0 for r in by_method["base"] if r["length"] == 1024)
    # rlm-no-sub runs told the model that sub-calls are off; rlm runs did not
    systems = [r.messages[0]["content"] for r in server.requests if r.messages[0].get("role") == "system"]
    assert sum(NO_SUB_CALLS_RULE.strip("- \n") in s for s in systems) == len(tasks)
    report = (out / "report.md").read_text()
    assert "## s-niah" in report and "| rlm | 1.000 | 1.000 | 1.000 |" in report
    assert (out / "s-niah_score_vs_length.png").stat().st_size > 1000
    assert (out / "s-niah_cost_vs_length.png").stat().st_size > 1000
    # every run is in the run log: ours through rlm.run, base as a recorded external run
    assert main(["runs", "--json", "--limit", "50"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert len(runs) == len(tasks) * 3
    assert sum(r["question"].startswith("[bench s-niah/base]") for r in runs) == len(tasks)


def test_rlm_no_sub_refuses_sub_calls_and_says_so(server_factory, make_config) -> None:
    from conftest import repl

    from rlm.benchmarks.runner import BenchSettings, RLMNoSubMethod
    from rlm.benchmarks.tasks import Task

    server = server_factory(script=[
        repl("r = llm_query('summarise this')\nprint(r)"),
        repl("FINAL('no sub-calls needed')"),
    ])
    task = Task(id="t-1", suite="multihop", question="What is it?", answer="no sub-calls needed",
                context="some text", length_tokens=3)
    outcome = RLMNoSubMethod().run(task, task.context, BenchSettings(config=make_config(server)))
    assert outcome.status == "ok" and outcome.answer == "no sub-calls needed"
    # the refused sub-call never reached the server and was not counted as an LM call
    assert len(server.requests) == 2 and outcome.llm_calls == 2
    assert NO_SUB_CALLS_RULE.strip("- \n") in server.requests[0].messages[0]["content"]
    assert "sub-calls are disabled" in server.requests[1].messages[-1]["content"]
    assert "llm_query(" not in server.requests[0].messages[0]["content"]  # not offered to the model


def _judged_task(task_id: str, gold: str) -> Task:
    return Task(id=task_id, suite="browsecomp-plus-like", question="Which river flows through Lorzel?", answer=gold,
                context="Lorzel\n\nThe Halce River flows through Lorzel.", length_tokens=16,
                meta={"grading": "judge", "distractors": []})


def judge_or_answer(messages: list[dict[str, Any]]) -> str:
    """As the judge: 'yes' when the response's first-named river is the correct one; as the model: a hedged reply."""
    text = str(messages[-1]["content"])
    if "[correct_answer]" in text:
        response = text.split("[response]:", 1)[1].split("[correct_answer]:", 1)[0]
        correct = text.split("[correct_answer]:", 1)[1].strip().splitlines()[0]
        first = re.search(r"\w+ River", response).group(0)
        return f"extracted_final_answer: {first}\nreasoning: compared\ncorrect: {'yes' if first == correct else 'no'}"
    return "It is the Halce River (not the Seltor River)."


def test_judge_model_grades_judged_suites_and_code_match_is_kept(server_factory, make_config, tmp_path: Path) -> None:
    from rlm.benchmarks.runner import BaseMethod, BenchSettings, run_benchmark

    server = server_factory(policy=judge_or_answer)
    config = make_config(server, record_run=False)
    tasks = [_judged_task("j-1", "Halce River"), _judged_task("j-2", "Seltor River")]
    settings = BenchSettings(config=config, base_window_tokens=4000, judge_model="openai/judge")
    results = run_benchmark(tasks, [BaseMethod()], settings, tmp_path, progress=None)
    assert [r.score for r in results] == [1.0, 0.0]  # the judge's verdicts
    # the code match saw the distractor-free gold in the reply both times
    assert [r.scores["code_match"] for r in results] == [1.0, 1.0]
    assert all(r.notes["judge_model"] == "openai/judge" and "correct:" in r.notes["judge_reply"] for r in results)
    assert sorted(r.model for r in server.requests) == ["judge", "judge", "scripted", "scripted"]
    # without a judge model the code match is the score
    plain = run_benchmark(tasks, [BaseMethod()], BenchSettings(config=config, base_window_tokens=4000),
                          tmp_path / "plain", progress=None)
    assert [r.score for r in plain] == [1.0, 1.0] and all(not r.scores for r in plain)


def test_preset_paper_narrowed_to_a_suite_and_the_paper_table(tmp_path: Path) -> None:
    from rlm.benchmarks.report import write_report
    from rlm.benchmarks.runner import BenchResult

    out = tmp_path / "pairs.jsonl"
    assert main(["bench", "generate", "oolong-pairs", "--preset", "paper", "--n", "2", "--out", str(out)]) == 0
    tasks = read_tasks(out)
    assert [(t.suite, t.length_tokens, t.meta["query"]) for t in tasks] == [("oolong-pairs", 32768, 1),
                                                                            ("oolong-pairs", 32768, 2)]
    rows = [BenchResult(suite=t.suite, id=t.id, length=t.length_tokens, method=m, score=s, answer=None, gold=[],
                        input_tokens=0, output_tokens=0, llm_calls=0, cost_usd=None, seconds=0.0, status="ok")
            for t in tasks for m, s in (("base", 0.0), ("rlm", 0.5))]
    rows.append(BenchResult(suite="oolong", id="o-1", length=8192, method="rlm", score=1.0, answer="Answer: 3",
                            gold="3", input_tokens=0, output_tokens=0, llm_calls=0, cost_usd=None, seconds=0.0,
                            status="ok", scores={"lenient": 1.0}))
    report = write_report(rows, tmp_path, model="openai/m").read_text()
    table = report[report.index("## Compared with the RLM paper"):report.index("## oolong-pairs")]
    assert "| method | OOLONG-Pairs (32K) |" in table  # oolong ran only at 8K: no OOLONG (131K) column
    assert "| base (openai/m) | 0.00 |" in table and "| rlm (openai/m) | 50.00 |" in table
    assert "| *GPT-5, base model (paper)* | 0.04 |" in table and "| *RLM(GPT-5) (paper)* | 58.00 |" in table
    assert "Secondary scores" in report and "| lenient | rlm | 1.000 |" in report


def test_preset_rejects_a_suite_it_does_not_hold(tmp_path: Path, capsys) -> None:
    code = main(["bench", "generate", "codeqa-like", "--preset", "paper", "--out", str(tmp_path / "x.jsonl")])
    assert code != 0 and "not in the paper preset" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.local_model
def test_the_base_method_works_with_the_embedded_default_model(tmp_path: Path, rlm_home: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A new user's `rlm bench run s-niah --methods base` with nothing configured: the embedded model is
    started for the base method too, and a 16k context is cut to what its 8k window takes."""
    for name in ("RLM_MODEL", "RLM_SUB_MODEL", "RLM_API_BASE"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "out"
    code = main(["bench", "run", "s-niah", "--n", "1", "--lengths", "4096,16384", "--methods", "base",
                 "--out", str(out), "--seed", "1"])
    assert code == 0
    rows = sorted((json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()),
                  key=lambda r: r["length"])  # written as they finish
    assert [(r["length"], r["status"], r["llm_calls"]) for r in rows] == [(4096, "ok", 1), (16384, "ok", 1)]
    assert all(r["input_tokens"] > 1000 and r["error"] is None for r in rows)
    assert [r["notes"]["truncated"] for r in rows] == [False, True]
    assert max(r["input_tokens"] for r in rows) <= 8192  # what SmolLM2's server counted: its window held
