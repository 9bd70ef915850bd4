"""`rlm memory ...` and `rlm ask --memory`: the real CLI entry point over a real memory file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import repl

from rlm.cli import build_parser, config_from_args, main
from rlm.memory.store import MemoryStore, memory_path


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_add_list_show_search_edit_delete(capsys, rlm_home):
    code, out, _ = cli(capsys, "memory", "add", "E1042 means the disk quota was exceeded", "-n", "ops",
                       "--kind", "doc", "--title", "E1042", "--tags", "errors,disk", "--id", "d1")
    assert code == 0 and out.strip() == "d1"
    cli(capsys, "memory", "add", "Grep CODE: lines with a regex", "-n", "ops", "--id", "m1")
    cli(capsys, "memory", "add", "unrelated", "-n", "elsewhere")

    code, out, _ = cli(capsys, "memory", "list")
    assert code == 0 and "ops  1 docs, 1 memories" in out and "elsewhere" in out
    code, out, _ = cli(capsys, "memory", "list", "--json")  # JSON only: one document, no text lines after it
    assert json.loads(out) == {"ops": {"doc": 1, "memory": 1}, "elsewhere": {"memory": 1}}
    code, out, _ = cli(capsys, "memory", "list", "-n", "ops", "--json")
    assert [e["id"] for e in json.loads(out)] == ["d1", "m1"]

    code, out, _ = cli(capsys, "memory", "search", "disk quota", "-n", "ops", "--json")
    hits = json.loads(out)
    assert hits[0]["entry"]["id"] == "d1" and hits[0]["score"] > 0

    code, out, _ = cli(capsys, "memory", "edit", "d1", "-n", "ops", "--text", "E1042: disk full", "--reason", "short")
    assert code == 0 and "version 2" in out
    code, out, _ = cli(capsys, "memory", "delete", "m1", "-n", "ops", "--reason", "wrong")
    assert code == 0
    code, out, _ = cli(capsys, "memory", "show", "d1", "-n", "ops")
    assert "v1 add" in out and "v2 edit" in out and "(short)" in out and "written by a person" in out
    code, out, _ = cli(capsys, "memory", "show", "m1", "-n", "ops", "--json")
    shown = json.loads(out)
    assert shown["deleted"] and [v["op"] for v in shown["versions"]] == ["add", "delete"]
    code, out, _ = cli(capsys, "memory", "list", "-n", "ops")
    assert "m1" not in out
    code, out, _ = cli(capsys, "memory", "list", "-n", "ops", "--all")
    assert "[deleted]" in out


def test_export_import_round_trip(capsys, rlm_home, tmp_path, monkeypatch):
    for i in range(3):
        cli(capsys, "memory", "add", f"memory number {i}", "-n", "src", "--id", f"m{i}", "--tags", "t")
    cli(capsys, "memory", "edit", "m0", "-n", "src", "--text", "memory number 0, revised")
    exported = tmp_path / "src.jsonl"
    code, _, err = cli(capsys, "memory", "export", "-n", "src", "-o", str(exported), "--history")
    assert code == 0 and "exported 3 entries" in err
    lines = exported.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["versions"][1]["text"] == "memory number 0, revised"

    monkeypatch.setenv("RLM_HOME", str(tmp_path / "other-home"))  # another machine
    code, _, err = cli(capsys, "memory", "import", str(exported), "-n", "dst")
    assert code == 0 and "3 added" in err
    code, _, err = cli(capsys, "memory", "import", str(exported), "-n", "dst")
    assert "0 added, 0 updated, 3 unchanged" in err
    code, out, _ = cli(capsys, "memory", "export", "-n", "dst")
    copied = [json.loads(line) for line in out.splitlines()]
    assert [(r["id"], r["text"], r["tags"]) for r in copied] == [
        ("m0", "memory number 0, revised", ["t"]), ("m1", "memory number 1", ["t"]), ("m2", "memory number 2", ["t"])]
    assert all(r["provenance"]["source"] == "import" for r in copied)


@pytest.mark.parametrize("content, message", [
    ("{not json\n", "line 1: not JSON"),
    ('[1, 2]\n', "line 1: expected a JSON object"),
    ('{"id": "a", "kind": "memory", "text": "ok"}\n{"id": "b", "text": "x"}\n', "line 2: missing kind"),
    ('{"id": "a", "kind": "secret", "text": "x"}\n', "kind must be one of note, memory, doc"),
    ('{"id": "a", "kind": "memory", "text": "   "}\n', "text must be a non-empty str"),
])
def test_import_rejects_bad_input_clearly_and_writes_nothing(capsys, rlm_home, tmp_path, content, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    code, _, err = cli(capsys, "memory", "import", str(bad), "-n", "dst")
    assert code == 2 and message in err and err.startswith("rlm: error:")
    if memory_path(rlm_home).exists():
        with MemoryStore(memory_path(rlm_home), semantic=False) as store:
            assert store.list("dst") == []


def test_bad_requests_exit_2_with_a_message(capsys, rlm_home):
    code, _, err = cli(capsys, "memory", "show", "nope", "-n", "ops")
    assert code == 2 and "no memory yet" in err
    cli(capsys, "memory", "add", "x", "-n", "ops", "--id", "a")
    code, _, err = cli(capsys, "memory", "show", "nope", "-n", "ops")
    assert code == 2 and "no entry 'nope'" in err
    code, _, err = cli(capsys, "memory", "list", "-n", "bad namespace!")
    assert code == 2 and "invalid memory namespace" in err
    code, _, err = cli(capsys, "memory", "edit", "a", "-n", "ops")
    assert code == 2 and "nothing to change" in err
    code, _, err = cli(capsys, "memory", "import", "/does/not/exist.jsonl", "-n", "ops")
    assert code == 2 and "cannot read" in err


def test_ask_memory_options_map_to_the_config():
    parser = build_parser()
    config = config_from_args(parser.parse_args(["ask", "f", "q", "--memory", "team", "--reflect", "always"]), {})
    assert (config.memory_namespace, config.reflect) == ("team", "always")
    config = config_from_args(parser.parse_args(["ask", "f", "q", "--no-memory"]), {})
    assert config.memory_namespace is None and config.reflect == "success"
    with pytest.raises(SystemExit):
        parser.parse_args(["ask", "f", "q", "--memory", "a", "--no-memory"])


def test_rlm_ask_with_memory_learns_and_the_cli_shows_it(server_factory, rlm_home, tmp_path):
    def policy(messages):
        if str(messages[0].get("content", "")).startswith("You maintain the long-term memory"):
            return ('```json\n[{"op": "add", "kind": "memory", "title": "counting", '
                    '"text": "Count with str.count."}]\n```')
        return repl("FINAL(str(context.count('needle')))")

    server = server_factory(policy=policy)
    doc = tmp_path / "doc.txt"
    doc.write_text("needle hay needle\n")
    # in-process agents: this test is about memory, not the executor (Ray runs use rlm.agents.memory_actor)
    env = {**os.environ, "RLM_HOME": str(rlm_home), "RLM_EXECUTOR": "local"}
    args = ["ask", str(doc), "How many needles?", "--model", "openai/scripted", "--api-base", server.base_url,
            "--memory", "hay", "--json"]
    done = subprocess.run([sys.executable, "-m", "rlm.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["answer"] == "2"
    listed = subprocess.run([sys.executable, "-m", "rlm.cli", "memory", "list", "-n", "hay", "--json"],
                            capture_output=True, text=True, env=env, timeout=120)
    entries = json.loads(listed.stdout)
    assert [(e["kind"], e["text"]) for e in entries] == [("memory", "Count with str.count.")]
    assert entries[0]["provenance"]["run_id"] == json.loads(done.stdout)["run_id"]
    # two stores, no contention: the memory file, and the run recorded in its journal beside the run log
    assert Path(memory_path(rlm_home)).exists() and list(rlm_home.glob("rlm.duckdb.*.journal"))
