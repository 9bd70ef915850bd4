"""The `rlm` command as a user runs it: a real subprocess, a real run log, the scripted server."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import main_loading, repl

DOC = "line one\nline two has the word needle\nline three\n"


def rlm(*args: str, home: Path, stdin: bytes | None = None, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "RLM_HOME": str(home), **(env or {})}
    return subprocess.run([sys.executable, "-m", "rlm.cli", *args], input=stdin.decode() if stdin else None,
                          capture_output=True, text=True, env=full_env, timeout=timeout)


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    path = tmp_path / "doc.txt"
    path.write_text(DOC)
    return path


def model_args(server) -> list[str]:
    return ["--model", "openai/scripted", "--api-base", server.base_url]


def test_a_one_cell_run_in_process_loads_only_what_it_uses(server_factory, rlm_home, doc):
    """No event loop (a run without a fan-out), no run-log database or schema (it journals), no package metadata."""
    server = server_factory(script=[repl("FINAL('small')")])
    argv = ["ask", str(doc), "q", *model_args(server), "--json", "-q", "--no-service"]
    unused = ("asyncio", "duckdb", "rlm.runlog.schema", "rlm.runlog.writer", "importlib.metadata", "litellm")
    done, loaded, code = main_loading(argv, unused, rlm_home)
    assert json.loads(done.stdout)["answer"] == "small", done.stderr
    assert (code, loaded) == (0, [])


def test_ask_json_prints_exactly_one_object(server_factory, rlm_home, doc):
    server = server_factory(script=[repl("print(context.count('needle'))"), repl("FINAL('one needle')")])
    done = rlm("ask", str(doc), "How many needles?", *model_args(server), "--json", home=rlm_home)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["answer"] == "one needle"
    assert result["status"] == "ok"
    assert set(result["usage"]) >= {"input_tokens", "output_tokens", "llm_calls"}
    assert result["usage"]["llm_calls"] == 2
    assert result["cost_usd"] is None
    assert result["iterations"] == 2 and result["depth_reached"] == 0
    assert result["run_id"]


def test_ask_plain_prints_answer_and_summary(server_factory, rlm_home, doc):
    server = server_factory(script=[repl("FINAL('the answer')")])
    done = rlm("ask", str(doc), "q?", *model_args(server), home=rlm_home)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "the answer"
    summary = done.stderr.strip().splitlines()[-1]
    assert "1 iterations" in summary and "1 LM calls" in summary and "tokens" in summary


def test_env_variables_configure_the_model(server_factory, rlm_home, doc):
    server = server_factory(script=[repl("FINAL('via env')")])
    env = {"RLM_MODEL": "openai/scripted", "RLM_API_BASE": server.base_url}
    done = rlm("ask", str(doc), "q?", "--json", home=rlm_home, env=env)
    assert json.loads(done.stdout)["answer"] == "via env"


def test_stdin_input(server_factory, rlm_home):
    server = server_factory(script=[repl("FINAL(context.strip())")])
    done = rlm("ask", "-", "echo", *model_args(server), "--json", home=rlm_home, stdin=b"from stdin\n")
    assert json.loads(done.stdout)["answer"] == "from stdin"


def test_limit_status_in_json_and_exit_code(server_factory, rlm_home, doc):
    server = server_factory(script=[repl("print('step')")] * 5)
    done = rlm("ask", str(doc), "q?", *model_args(server), "--json", "--max-llm-calls", "2", home=rlm_home)
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["status"] == "max_llm_calls" and result["answer"] == "step"


def test_runs_and_show_read_the_run_log(server_factory, rlm_home, doc):
    server = server_factory(script=[repl("x = 40 + 2\nprint('computed', x)"), repl("FINAL(x)")])
    first = json.loads(rlm("ask", str(doc), "first question", *model_args(server), "--json", home=rlm_home).stdout)
    server.reset(script=[repl("FINAL('second')")])
    second = json.loads(rlm("ask", str(doc), "second question", *model_args(server), "--json", home=rlm_home).stdout)
    # A command records its run in a journal of its own; the next read-write open of the log stores it.
    assert len(list(rlm_home.glob("rlm.duckdb.*.journal"))) == 2 and not (rlm_home / "rlm.duckdb").exists()

    listed = rlm("runs", home=rlm_home)
    assert listed.returncode == 0
    assert (rlm_home / "rlm.duckdb").is_file() and not list(rlm_home.glob("rlm.duckdb.*.journal"))
    lines = listed.stdout.strip().splitlines()
    assert lines[0].startswith(second["run_id"]) and lines[1].startswith(first["run_id"])  # newest first

    shown = rlm("show", first["run_id"], home=rlm_home)
    assert shown.returncode == 0, shown.stderr
    assert "x = 40 + 2" in shown.stdout and "computed 42" in shown.stdout and "first question" in shown.stdout

    as_json = json.loads(rlm("show", first["run_id"][:19], "--json", home=rlm_home).stdout)
    assert as_json["run"]["run_id"] == first["run_id"]
    assert as_json["run"]["status"] == "ok"
    root = as_json["root"]
    cells = [cell for it in root["iterations"] for cell in it["cells"]]
    assert [c["code"] for c in cells] == ["x = 40 + 2\nprint('computed', x)", "FINAL(x)"]


def test_show_unknown_run_is_a_clear_error(server_factory, rlm_home, doc):
    server = server_factory(script=[repl("FINAL(1)")])
    rlm("ask", str(doc), "q", *model_args(server), home=rlm_home)
    done = rlm("show", "no-such-run", home=rlm_home)
    assert done.returncode != 0
    assert "no-such-run" in done.stderr and "Traceback" not in done.stderr


def test_runs_with_no_log_yet(rlm_home):
    done = rlm("runs", home=rlm_home)
    assert done.returncode == 0 and "no runs yet" in done.stderr


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing.txt", "no such file or directory"),
    (lambda tmp: (tmp / "empty.txt").write_text("") and tmp / "empty.txt" or tmp / "empty.txt", "is empty"),
    (lambda tmp: (tmp / "emptydir").mkdir() or tmp / "emptydir", "no readable text files"),
])
def test_bad_input_is_a_clear_error(tmp_path, rlm_home, server_factory, make, message):
    path = make(tmp_path)
    server = server_factory(script=[])
    done = rlm("ask", str(path), "q", *model_args(server), home=rlm_home)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_invalid_utf8_is_replaced_with_a_warning(server_factory, rlm_home, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf\xe9 au lait\n")
    server = server_factory(script=[repl("FINAL(context.strip())")])
    done = rlm("ask", str(path), "q", *model_args(server), "--json", home=rlm_home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["answer"] == "caf\ufffd au lait"
    assert "invalid UTF-8" in done.stderr and "offset 3" in done.stderr


def test_directory_becomes_a_list_of_documents(server_factory, rlm_home, tmp_path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("alpha")
    (folder / "sub" / "b.txt").write_text("beta")
    server = server_factory(script=[repl("FINAL(', '.join(d['path'] + '=' + d['text'] for d in context))")])
    done = rlm("ask", str(folder), "q", *model_args(server), "--json", home=rlm_home)
    assert json.loads(done.stdout)["answer"] == "a.md=alpha, sub/b.txt=beta"


def test_configuration_mistakes_fail_fast_in_one_line(rlm_home, doc):
    import socket
    import time

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    done = rlm("ask", str(doc), "q", "--model", "openai/x", "--api-base", f"http://127.0.0.1:{port}/v1",
               home=rlm_home)
    assert done.returncode == 2, done.stderr
    assert f"cannot reach the model server at http://127.0.0.1:{port}/v1" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    env = {"OPENAI_API_KEY": "", "RLM_API_KEY": ""}
    done = rlm("ask", str(doc), "q", "--model", "openai/gpt-4.1-mini", home=rlm_home, env=env)
    assert done.returncode == 2 and "needs OPENAI_API_KEY" in done.stderr, done.stderr
    done = rlm("ask", str(doc), "q", "--model", "anthropic/claude-sonnet-4-5", home=rlm_home,
               env={**env, "ANTHROPIC_API_KEY": ""})
    assert done.returncode == 2 and "needs ANTHROPIC_API_KEY" in done.stderr, done.stderr
    assert time.monotonic() - started < 20  # three whole commands; each fails before any run starts
    assert not (rlm_home / "rlm.duckdb").exists()  # nothing was recorded as a run


def test_bad_options_are_clear_errors(rlm_home, doc):
    done = rlm("ask", str(doc), "q", "--max-iterations", "0", "--model", "x/y", home=rlm_home)
    assert done.returncode == 2 and "max_iterations must be >= 1" in done.stderr
    done = rlm("ask", str(doc), "q", "--timeout", "-3", home=rlm_home)
    assert done.returncode == 2 and "must be > 0" in done.stderr


def test_unsafe_mode_warns_loudly(server_factory, rlm_home, doc):
    server = server_factory(script=[repl("FINAL('ran')")])
    done = rlm("ask", str(doc), "q", *model_args(server), "--unsafe-no-sandbox", home=rlm_home)
    assert done.stdout.strip() == "ran"
    assert "WITHOUT isolation" in done.stderr


def test_ask_runs_in_process_by_default_without_starting_ray(server_factory, rlm_home, doc):
    import socket

    server = server_factory(script=[repl("FINAL(context.count('line'))")])
    done = rlm("ask", str(doc), "q", *model_args(server), "--json", home=rlm_home,
               env={"RLM_EXECUTOR": "", "RAY_ADDRESS": ""})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["answer"] == "3"
    tree = json.loads(rlm("show", result["run_id"], "--json", home=rlm_home).stdout)
    assert tree["root"]["node_id"] == socket.gethostname()
    assert not (rlm_home / "ray").exists() and not (rlm_home / "ray-auth-token").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_ask_runs_on_an_embedded_ray_cluster_when_asked(server_factory, rlm_home, doc):
    server = server_factory(script=[repl("FINAL(context.count('line'))")])
    done = rlm("ask", str(doc), "q", *model_args(server), "--json", "--executor", "ray", home=rlm_home,
               env={"RLM_EXECUTOR": ""}, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["answer"] == "3"
    tree = json.loads(rlm("show", result["run_id"], "--json", home=rlm_home).stdout)
    node_id = tree["root"]["node_id"]
    assert re.fullmatch(r"[0-9a-f]{56}", node_id), node_id  # a Ray node id, not the host name


def test_ctrl_c_records_the_run_as_cancelled_with_the_calls_it_made(server_factory, rlm_home, doc):
    import signal
    import time

    server = server_factory(policy=lambda messages: repl("import time\ntime.sleep(0.5)\nprint('step')"),
                            latency_ms=200)
    env = {**os.environ, "RLM_HOME": str(rlm_home)}
    proc = subprocess.Popen([sys.executable, "-m", "rlm.cli", "ask", str(doc), "q?", *model_args(server),
                             "--max-iterations", "50"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while len(server.requests) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    runs = rlm("runs", "--json", home=rlm_home)
    assert runs.returncode == 0, runs.stderr
    (run,) = json.loads(runs.stdout)
    assert run["status"] == "cancelled"
    assert run["llm_calls"] >= 2  # the calls made before Ctrl-C are counted
