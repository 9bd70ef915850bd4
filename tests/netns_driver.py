"""The driver of tests/test_models_netns.py, run inside the head node's network namespace.

It joins the cluster, starts the SmolLM2 deployment (it needs the worker's logical GPU) behind
Serve's proxy on the head's link address, and makes two runs against scripted deployments also
listening there (every node must reach the model endpoints, as on real machines):

1. on the Ray executor: children with contexts too big to travel inline (they reach the other node
   through the object store), a heavy call and a light one;
2. after the test killed the GPU node (the driver waits for a line on stdin): a heavy call, which
   must be answered by the group's next order.

It prints ``RESULT <json>`` lines (the nodes, then one per run) and ``RESULT "KILL"`` between the runs
(Ray prints its own lines to stdout too).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import first_user, is_agent_prompt, repl, turn

from rlm.config import RLMConfig, SandboxConfig
from rlm.routing.spec import parse_models
from rlm.runlog import RunLog
from rlm.runner import run
from rlm.testing import ScriptedServer

RUN1 = ("kids = rlm_query_batched(['CHILD'] * 4, ['x' * 100_000 + f'chunk-{i}' for i in range(4)])\n"
        "heavy = llm_query('Say hi.', model='heavy')\nlight = llm_query('small')\nFINAL(' '.join(kids))")
RUN2 = "heavy = llm_query('Say hi.', model='heavy')\nprint(heavy)"


def policy(code: str):
    def reply(messages):
        if not is_agent_prompt(messages):
            return "scripted reply"
        if "Question: CHILD" in first_user(messages):
            return repl("FINAL(context[-7:])")
        return repl(code) if turn(messages) == 0 else repl("FINAL('done')")

    return reply


def summary(config: RLMConfig, result) -> dict:
    with RunLog(config.runlog_path) as log:
        agents = [(a.agent_id, a.depth, a.node_id, a.status) for a in log.agents(result.run_id)]
        calls = [(c.purpose, c.model_group, c.deployment, c.node, c.ok, c.route_reason)
                 for c in log.lm_calls(result.run_id)]
    return {"status": result.status, "answer": result.answer, "error": result.error, "agents": agents, "calls": calls,
            "llm_calls": result.usage.llm_calls}


def main() -> None:
    args = json.loads(sys.argv[1])
    host, home = args["host"], Path(args["home"])
    from ray import serve

    from rlm.agents.cluster import ensure_ray
    from rlm.agents.serving import serve_models

    servers = [ScriptedServer(policy=policy(code), host=host).start() for code in (RUN1, RUN2)]
    hosted = ScriptedServer(policy=lambda m: "hosted reply", host=host).start()
    spec, options = parse_models({
        "serve": {"host": host, "port": args["serve_port"], "smol-gpu": {"num_gpus": 1, "num_cpus": 1}},
        "groups": {"heavy": {"deployments": [{"serve": "smol-gpu", "order": 1},
                                             {"model": "openai/scripted", "api_base": hosted.base_url,
                                              "name": "hosted", "order": 2}]}}})
    base = dict(api_base=None, api_key="sk-test", home=home, models=spec, max_depth=1, lm_retries=2,
                max_completion_tokens=16, sandbox=SandboxConfig(cell_timeout_s=240))
    first = RLMConfig(model="openai/scripted", **{**base, "api_base": servers[0].base_url}, executor="ray",
                      ray_address=args["address"], ray_hosts_per_node=1, sandbox_pool_size=0, lm_timeout_s=120)
    ray = ensure_ray(first)
    while sum(1 for n in ray.nodes() if n["Alive"]) < 2:
        time.sleep(0.5)
    gpu_node = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU"))
    serve_models(options)
    while (app := serve.status().applications.get("smol-gpu")) is None or app.status != "RUNNING":
        time.sleep(0.5)
    say({"gpu_node": gpu_node, "head_node": ray.get_runtime_context().get_node_id()})
    result = run("q", Path(args["doc"]), first)
    say(summary(first, result))
    say("KILL")
    sys.stdin.readline()
    second = RLMConfig(model="openai/scripted", **{**base, "api_base": servers[1].base_url}, lm_timeout_s=20)
    result = run("q", Path(args["doc"]), second)
    say({**summary(second, result), "hosted_requests": len(hosted.requests)})


def say(value: object) -> None:
    print("RESULT " + json.dumps(value), flush=True)


if __name__ == "__main__":
    main()
