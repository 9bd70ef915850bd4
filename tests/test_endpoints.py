"""The OpenAI-compatible endpoint of ``rlm serve --http``: the real ``openai`` client (sync, async,
streaming) and litellm against a real service process, real sandboxes and the scripted model."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from endpoints_support import (
    ServiceProcess,
    endpoint_policy,
    in_process_service,
    scripted_model,  # noqa: F401 - registers the module's `model` fixture
    start_service_process,
    stop_service_process,
)
from rlm.errors import ConfigError
from rlm.service.paths import read_token
from rlm.service.server import ServiceSettings
from rlm.testing import ScriptedServer, estimate_tokens

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, model: ScriptedServer) -> Iterator[ServiceProcess]:
    running = start_service_process(tmp_path_factory.mktemp("endpoint"), model.base_url)
    yield running
    stop_service_process(running)


def client(service: ServiceProcess, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=service.url + "/v1", api_key=service.token, max_retries=0, **options)


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def allowed_file(service: ServiceProcess, name: str, text: str) -> Path:
    path = service.allowed / name
    path.write_text(text, encoding="utf-8")
    return path


def run_row(service: ServiceProcess, run_id: str) -> dict[str, Any]:
    done = service.rlm("runs", "--json", "--limit", "200")
    assert done.returncode == 0, done.stderr
    return next(row for row in json.loads(done.stdout) if row["run_id"] == run_id)


# -- answers ------------------------------------------------------------------------------------
def test_a_completion_is_a_run_its_id_works_with_rlm_show(service):
    doc = allowed_file(service, "facts.txt", "the launch code is KESTREL-7")
    reply = client(service).chat.completions.create(
        model="rlm", messages=[user("ECHO the facts")], extra_body={"rlm": {"context_path": str(doc)}})
    assert reply.choices[0].message.content == "ctx=the launch code is KESTREL-7"
    assert reply.choices[0].finish_reason == "stop"
    extension = reply.model_extra["rlm"]
    assert extension["run_id"] == reply.id and extension["status"] == "ok"
    assert extension["cost_usd"] is None  # the scripted model has no price
    shown = service.rlm("show", reply.id)
    assert shown.returncode == 0 and reply.id in shown.stdout and "ECHO the facts" in shown.stdout
    row = run_row(service, reply.id)
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (row["input_tokens"], row["output_tokens"])
    assert row["llm_calls"] == extension["llm_calls"] == 1


def test_models_lists_rlm_and_the_root_model(service):
    names = [m.id for m in client(service).models.list().data]
    assert names == ["rlm", "rlm/openai/scripted"]
    assert client(service).models.retrieve("rlm/openai/scripted").id == "rlm/openai/scripted"


def test_rlm_slash_model_names_the_root_model(service):
    reply = client(service).chat.completions.create(model="rlm/openai/scripted", messages=[user("ECHO x")])
    assert reply.model == "rlm/openai/scripted"
    row = run_row(service, reply.id)
    assert row["model"] == "openai/scripted"


def test_async_clients_at_once_each_get_their_own_answer(service):
    async def ask(i: int) -> tuple[int, str | None]:
        async with openai.AsyncOpenAI(base_url=service.url + "/v1", api_key=service.token, max_retries=0) as aclient:
            reply = await aclient.chat.completions.create(
                model="rlm", messages=[user(f"document number {i} of the batch"), user("ECHO it")])
            return i, reply.choices[0].message.content

    async def main() -> list[tuple[int, str | None]]:
        return await asyncio.gather(*(ask(i) for i in range(8)))

    for i, content in asyncio.run(main()):
        assert content == f"ctx=document number {i} of the batch"


def test_streaming_sends_progress_as_it_happens_then_the_answer(service):
    chunks: list[tuple[float, Any]] = []
    stream = client(service).chat.completions.create(model="rlm", messages=[user("STEPS please")], stream=True,
                                                    stream_options={"include_usage": True})
    for chunk in stream:
        chunks.append((time.monotonic(), chunk))
    run_ids = {c.id for _, c in chunks}
    assert len(run_ids) == 1
    progress = [(t, c.model_extra["rlm"]) for t, c in chunks if c.choices and (c.model_extra or {}).get("rlm")
                and "event" in c.model_extra["rlm"]]
    kinds = [p["event"]["type"] for _, p in progress]
    assert kinds[:3] == ["RunStarted", "AgentStarted", "LMCalled"] and kinds[-1] == "RunFinished"
    assert kinds.count("IterationFinished") == 2
    first_iteration = next(t for t, p in progress if p["event"]["type"] == "IterationFinished")
    content = [(t, c.choices[0].delta.content) for t, c in chunks if c.choices and c.choices[0].delta.content]
    assert [text for _, text in content] == ["stepped"]
    assert content[0][0] - first_iteration > 1.0  # the first iteration was told 1.5 s before the answer came
    finish = [c.choices[0].finish_reason for _, c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    usage = chunks[-1][1].usage
    totals = progress[-1][1]["totals"]
    assert (usage.prompt_tokens, usage.completion_tokens) == (totals["input_tokens"], totals["output_tokens"])
    assert totals["llm_calls"] == 2 and totals["iterations"] == 2


def test_progress_can_be_turned_off(service):
    stream = client(service).chat.completions.create(model="rlm", messages=[user("ECHO quiet")], stream=True,
                                                    extra_body={"rlm": {"progress": False}})
    chunks = list(stream)
    assert not [c for c in chunks if c.choices and "event" in ((c.model_extra or {}).get("rlm") or {})]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "ctx="


def test_litellm_as_a_client(service):
    import litellm

    doc = allowed_file(service, "litellm.txt", "read by litellm")
    options = dict(model="openai/rlm", api_base=service.url + "/v1", api_key=service.token, num_retries=0,
                   extra_body={"rlm": {"context_path": str(doc)}})
    reply = litellm.completion(messages=[user("ECHO via litellm")], **options)
    assert reply.choices[0].message.content == "ctx=read by litellm"
    assert reply.choices[0].finish_reason == "stop"
    streamed = litellm.completion(messages=[user("ECHO streamed via litellm")], stream=True, **options)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == "ctx=read by litellm"

    async def streamed_async() -> str:
        response = await litellm.acompletion(messages=[user("ECHO async litellm")], stream=True, **options)
        return "".join([c.choices[0].delta.content or "" async for c in response])

    assert asyncio.run(streamed_async()) == "ctx=read by litellm"


# -- contexts -----------------------------------------------------------------------------------
def test_context_from_an_upload_a_file_part_and_several_messages(service):
    api = client(service)
    uploaded = api.files.create(file=("notes.md", b"# Notes\nuploaded text"), purpose="user_data")
    assert uploaded.filename == "notes.md" and uploaded.bytes == len(b"# Notes\nuploaded text")
    assert uploaded.id in [f.id for f in api.files.list().data]
    by_id = api.chat.completions.create(model="rlm", messages=[user("ECHO the upload")],
                                        extra_body={"rlm": {"file_id": uploaded.id}})
    assert by_id.choices[0].message.content == "ctx=# Notes\nuploaded text"
    part = {"role": "user", "content": [{"type": "file", "file": {"file_id": uploaded.id}},
                                        {"type": "text", "text": "ECHO the attached file"}]}
    assert api.chat.completions.create(model="rlm", messages=[part]).choices[0].message.content == \
        "ctx=# Notes\nuploaded text"
    api.files.delete(uploaded.id)
    with pytest.raises(openai.BadRequestError, match="no uploaded file"):
        api.chat.completions.create(model="rlm", messages=[user("ECHO it")],
                                    extra_body={"rlm": {"file_id": uploaded.id}})
    several = api.chat.completions.create(model="rlm", messages=[
        {"role": "system", "content": "Be brief."}, user("first part"), {"role": "assistant", "content": "noted"},
        user("ECHO both")])
    assert several.choices[0].message.content == "ctx=messages/0-user=first part | messages/1-assistant=noted"
    assert run_row(service, several.id)["question"] == "Be brief.\n\nECHO both"  # instructions go before it


def test_a_directory_under_the_roots_is_a_list_of_documents(service):
    folder = service.allowed / "folder"
    folder.mkdir(exist_ok=True)
    (folder / "a.txt").write_text("alpha", encoding="utf-8")
    (folder / "b.txt").write_text("beta", encoding="utf-8")
    reply = client(service).chat.completions.create(model="rlm", messages=[user("ECHO the folder")],
                                                    extra_body={"rlm": {"context_path": str(folder)}})
    assert reply.choices[0].message.content == "ctx=a.txt=alpha | b.txt=beta"


# -- errors -------------------------------------------------------------------------------------
def test_a_request_without_the_right_token_is_401(service):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=service.url + "/v1", api_key="not-the-token", max_retries=0).models.list()
    for headers in ({}, {"Authorization": f"Basic {service.token}"}):
        request = urllib.request.Request(service.url + "/v1/models", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=10)
        assert raised.value.code == 401
        assert json.loads(raised.value.read())["error"]["code"] == "invalid_api_key"
    request = urllib.request.Request(service.url + "/v1/nowhere")  # unknown paths too: no probing without it
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 401


def test_paths_outside_the_roots_are_403_symlinks_resolved(service, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("not for HTTP", encoding="utf-8")
    link = service.allowed / "link-out.txt"
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
    for path in (outside, link, service.allowed / ".." / "serve.log"):
        with pytest.raises(openai.PermissionDeniedError) as raised:
            client(service).chat.completions.create(model="rlm", messages=[user("ECHO")],
                                                    extra_body={"rlm": {"context_path": str(path)}})
        assert raised.value.body["code"] == "path_not_allowed"
        assert "outside the directories" in raised.value.body["message"]


@pytest.mark.parametrize("body, message", [
    ({"messages": [user("ECHO"), {"role": "assistant", "content": "x"}]}, "last message must be the user's"),
    ({"messages": []}, "messages must be a non-empty list"),
    ({"messages": [user("ECHO")], "rlm": {"context": "x"}}, "unknown rlm field"),
    ({"messages": [user("ECHO")], "rlm": {"max_llm_calls": "many"}}, "max_llm_calls must be int"),
    ({"messages": [user("ECHO")], "rlm": {"max_llm_calls": 0}}, "max_llm_calls must be >= 1"),
    ({"messages": [user("ECHO")], "rlm": {"context_path": "relative.txt"}}, "must be an absolute path"),
    ({"messages": [user("ECHO")], "n": 2}, "n must be 1"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "unsupported content part"),
])
def test_bad_requests_are_400_in_openai_shape(service, body, message):
    with pytest.raises(openai.BadRequestError) as raised:
        client(service).chat.completions.create(model="rlm", **{k: v for k, v in body.items() if k != "rlm"},
                                                extra_body={"rlm": body["rlm"]} if "rlm" in body else None)
    assert message in raised.value.body["message"]
    assert raised.value.body["type"] == "invalid_request_error"


def test_a_missing_file_under_the_roots_is_400_and_an_unknown_model_404(service):
    with pytest.raises(openai.BadRequestError, match="no such file"):
        client(service).chat.completions.create(model="rlm", messages=[user("ECHO")], extra_body={
            "rlm": {"context_path": str(service.allowed / "missing.txt")}})
    with pytest.raises(openai.NotFoundError) as raised:
        client(service).chat.completions.create(model="gpt-4o", messages=[user("ECHO")])
    assert raised.value.body["code"] == "model_not_found"


def test_a_run_ended_by_a_limit_returns_its_partial_answer_with_length(service):
    limits = {"rlm": {"max_iterations": 1}}
    reply = client(service).chat.completions.create(model="rlm", messages=[user("LOOP forever")], extra_body=limits)
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content == "partial: looped"
    assert reply.model_extra["rlm"]["status"] == "max_iterations"
    stream = client(service).chat.completions.create(model="rlm", messages=[user("LOOP again")], extra_body=limits,
                                                    stream=True)
    chunks = list(stream)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "partial: looped"


def test_a_client_that_hangs_up_cancels_its_run(service):
    stream = client(service).chat.completions.create(model="rlm", messages=[user("HANG on")], stream=True)
    run_id = next(iter(stream)).id
    stream.close()
    deadline = time.monotonic() + 30
    while (status := run_row(service, run_id)["status"]) == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert status == "cancelled"


# -- the service's settings -----------------------------------------------------------------------
def test_busy_is_429_with_retry_after(rlm_home, server_factory):
    model = server_factory(policy=endpoint_policy)
    with in_process_service(rlm_home, model.base_url, max_running=1, max_queued=0) as service:
        api = openai.OpenAI(base_url=service.state.http + "/v1", api_key=read_token(rlm_home), max_retries=0)
        first = threading.Thread(target=lambda: api.chat.completions.create(
            model="rlm", messages=[user("STEPS first")]), daemon=True)
        first.start()
        deadline = time.monotonic() + 30
        while service.status()["running"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(openai.RateLimitError) as raised:
            api.chat.completions.create(model="rlm", messages=[user("ECHO second")])
        assert raised.value.response.headers["Retry-After"] == "5"
        assert raised.value.body["code"] == "service_busy"
        first.join(timeout=60)


def test_usage_sums_every_call_of_the_tree(rlm_home, server_factory):
    model = server_factory(policy=endpoint_policy)
    with in_process_service(rlm_home, model.base_url) as service:
        api = openai.OpenAI(base_url=service.state.http + "/v1", api_key=read_token(rlm_home), max_retries=0)
        reply = api.chat.completions.create(model="rlm", messages=[user("SPAWN 3 children")])
    assert reply.choices[0].message.content == "ok=3"
    records = [r for r in model.requests if r.path.endswith("/chat/completions")]
    assert reply.model_extra["rlm"]["llm_calls"] == len(records) == 4
    prompt = sum(estimate_tokens(sum(len(str(m.get("content"))) for m in r.messages)) for r in records)
    completion = sum(estimate_tokens(r.reply or "") for r in records)
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt, completion)
    assert reply.model_extra["rlm"]["depth_reached"] == 1


def test_http_on_another_interface_needs_the_flag_and_still_the_token(rlm_home, server_factory):
    with pytest.raises(ConfigError, match="not a loopback address"):
        ServiceSettings(home=rlm_home, http="0.0.0.0:0")
    model = server_factory(policy=endpoint_policy)
    with in_process_service(rlm_home, model.base_url, http="0.0.0.0:0", http_any_interface=True) as service:
        port = service.state.http.rsplit(":", 1)[1]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="guess", max_retries=0).models.list()
        names = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=read_token(rlm_home),
                              max_retries=0).models.list()
        assert [m.id for m in names.data][0] == "rlm"


def test_a_plain_ask_imports_neither_the_http_nor_the_mcp_stack():
    code = ("import sys, rlm.cli; rlm.cli.build_parser(); "
            "print(sorted(m for m in ('aiohttp', 'mcp', 'starlette', 'uvicorn', 'litellm') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
