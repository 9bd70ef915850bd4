"""Sessions and reruns through the resident service: the session stays live between turns there.

The first turn prints a random token; a session rebuilt by replaying that turn would print another
one and stop (a replay diverges when a cell prints something else), so a second turn that answers
with the first token proves the service kept the root's REPL running. Real ``rlm serve`` processes,
the real CLI, the OpenAI endpoint with the ``openai`` client, the scripted model.
"""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from conftest import is_agent_prompt, repl
from endpoints_support import in_process_service
from rlm.service.paths import read_token
from test_service import Served, rlm
from test_sessions import session_turn

pytestmark = [pytest.mark.slow]


def token_policy(messages):
    if not is_agent_prompt(messages):
        return "sub"
    number, step = session_turn(messages)
    if number == 1:
        return repl("import secrets\ntoken = secrets.token_hex(8)\nprint(token)") if step == 0 else \
            repl("FINAL(token)")
    return repl("FINAL(token)")


def model_env(server) -> dict[str, str]:
    return {"RLM_MODEL": "openai/scripted", "RLM_API_BASE": server.base_url, "RLM_API_KEY": "sk-test"}


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    path = tmp_path / "doc.txt"
    path.write_text("a line\n" * 20, encoding="utf-8")
    return path


def test_rlm_ask_session_through_the_service_keeps_the_repl_live(server_factory, rlm_home, doc):
    server = server_factory(policy=token_policy)
    service = Served(rlm_home)
    try:
        answers = []
        for question in ("Make a token", "Which token?"):
            done = rlm("ask", str(doc), question, "--session", "live", "--json", "--quiet", home=rlm_home,
                       env=model_env(server))
            assert done.returncode == 0, done.stderr + service.output()
            answers.append(json.loads(done.stdout)["answer"])
        assert len(answers[0]) == 16 and answers[1] == answers[0]
        chat = rlm("chat", str(doc), "--session", "talk", home=rlm_home, env=model_env(server),
                   stdin="Make a token\nWhich token?\n")
        assert chat.returncode == 0, chat.stderr
        lines = chat.stdout.split()
        assert len(lines) == 2 and lines[0] == lines[1] and len(lines[0]) == 16
    finally:
        service.stop()


def test_rlm_replay_through_the_service(server_factory, rlm_home, doc):
    def steady(messages):
        return repl("n = len(context)\nprint(n, {w for w in context.split()})") if len(messages) == 2 else \
            repl("FINAL(str(n))")

    server = server_factory(policy=steady)
    service = Served(rlm_home)
    try:
        done = rlm("ask", str(doc), "How long?", "--json", "--quiet", home=rlm_home, env=model_env(server))
        run_id = json.loads(done.stdout)["run_id"]
        sent = len(server.requests)
        replayed = rlm("replay", run_id, "--quiet", home=rlm_home, env=model_env(server))
        assert replayed.returncode == 0, replayed.stderr + service.output()
        assert "identical (2 cells, the same answer, 0 model calls made, 2 answered from the records)" in \
            replayed.stderr
        assert len(server.requests) == sent
    finally:
        service.stop()


def test_a_session_in_the_openai_endpoint(server_factory, rlm_home, tmp_path):
    server = server_factory(policy=token_policy)
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    doc = allowed / "doc.txt"
    doc.write_text("text\n", encoding="utf-8")
    with in_process_service(rlm_home, server.base_url, allow_paths=(allowed,)) as service:
        client = openai.OpenAI(base_url=service.state.http + "/v1", api_key=str(read_token(rlm_home)),
                               max_retries=0)
        first = client.chat.completions.create(
            model="rlm", messages=[{"role": "user", "content": "Make a token"}],
            extra_body={"rlm": {"session": "web", "context_path": str(doc)}})
        token = first.choices[0].message.content
        second = client.chat.completions.create(
            model="rlm", extra_body={"rlm": {"session": "web"}},
            messages=[{"role": "user", "content": "Make a token"}, {"role": "assistant", "content": token},
                      {"role": "user", "content": "Which token?"}])
    assert len(token) == 16 and second.choices[0].message.content == token
    assert second.model_extra["rlm"]["run_id"] != first.id
