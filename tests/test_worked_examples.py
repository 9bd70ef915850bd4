"""The strategies the published RLM prompts teach, as code run in our REPL against the scripted server.

Each test is one worked example: the root's code is written as a model
following the prompt would write it, with our function names, and runs in the
real sandbox; the sub-model is a scripted policy that answers from the text it
is given (and only from it), so the example gets the right answer only if the
strategy hands the sub-calls the right text. Patterns, not text, follow:

* our own system prompt's map-reduce block, taken from the rendered prompt;
* the official implementation's (alexzhang13/rlm, ``rlm/utils/prompts.py``):
  one chunk to ``llm_query``; ten chunks to ``llm_query_batched`` then an
  aggregating call; sections read in order with a buffer; splitting by Markdown
  headers and summarising each, then ``FINAL_VAR``; an ``rlm_query`` child whose
  answer the parent branches on;
* dspy's ``dspy.RLM`` (``dspy/predict/rlm.py``): explore first, ``llm_query``
  for meaning, submit only after seeing the output.
"""

from __future__ import annotations

import re
import textwrap

from conftest import first_user, is_agent_prompt, repl, turn

from rlm import prompts
from rlm.capacity import Capacity
from rlm.runner import run

SHOP_LOG = "".join(
    f"2026-03-{1 + i % 28:02d} order {1000 + i} {'CANCELLED' if i % 7 == 3 else 'shipped'} "
    f"to {['Oslo', 'Lima', 'Pune'][i % 3]}\n"
    for i in range(3000))
CANCELLED = {str(1000 + i) for i in range(3000) if i % 7 == 3}


def sub_model(prompt: str) -> str:
    """The scripted sub-model: answers a handful of instructions from the text of ``prompt`` alone."""
    if prompt.startswith("List every cancelled order number"):
        found = re.findall(r"order (\d+) CANCELLED", prompt)
        return "\n".join(found) if found else "NONE"
    if "magic number" in prompt:
        numbers = re.findall(r"magic number is (\d+)", prompt)
        return numbers[0] if numbers else "not in this part"
    if prompt.startswith("How many jobs"):
        return str(len(re.findall(r"\bHe worked as\b", prompt)))
    if prompt.startswith("Add up"):
        return str(sum(int(n) for n in re.findall(r"^\d+$", prompt.split("Answers:", 1)[1], re.MULTILINE)))
    if prompt.startswith("Summarise"):
        return "; ".join(re.findall(r"(\w+ moved to \w+)", prompt)) or "nothing"
    if prompt.startswith("Where does"):
        return re.findall(r"(\w+) moved to (\w+)", prompt)[-1][1]
    if prompt.startswith("Reading section"):  # the in-order buffer: notes so far + this section
        notes = prompt.split("Notes so far:", 1)[1].split("Section:", 1)[0].strip()
        section = prompt.split("Section:", 1)[1]
        keys = re.findall(r"key (\w+)", section)
        return " ".join(filter(None, [notes if notes != "(none)" else "", *keys]))
    if prompt.startswith("Classify"):
        return "complaint" if "broken" in prompt or "refund" in prompt else "praise"
    return "unknown"


def is_child(messages) -> bool:
    return str(messages[0]["content"]).startswith(prompts.CHILD_NOTE)


def script(root_turns: list[str], child: str | None = None):
    """A policy: the root (and a child agent, if any) replay their turns; sub-calls go to :func:`sub_model`."""
    def policy(messages):
        if not is_agent_prompt(messages):
            return sub_model(first_user(messages))
        turns = root_turns
        if child is not None and is_child(messages):
            turns = [child]
        return turns[min(turn(messages), len(turns) - 1)]
    return policy


def solve(server_factory, make_config, text_file, question, context, root_turns, child=None, **overrides):
    server = server_factory(policy=script(root_turns, child))
    result = run(question, text_file(context), make_config(server, **overrides))
    return result, server


def observation(server, index: int) -> str:
    """The observation the root model saw before its ``index``-th turn (1-based)."""
    agent_requests = [r for r in server.requests if is_agent_prompt(r.messages) and not is_child(r.messages)]
    return agent_requests[index].messages[-1]["content"]


def test_our_map_reduce_example_runs_verbatim(server_factory, make_config, text_file):
    system = prompts.system_prompt(prompts.PromptSpec(capacity=Capacity(None, 8_192)))
    block = system.split("look like this:\n```repl\n", 1)[1].split("```", 1)[0]
    assert "size = 12_000" in block  # the prompt's own number for a sub-model with an 8k window
    result, server = solve(server_factory, make_config, text_file, "Which orders were cancelled?", SHOP_LOG, [
        repl(block),
        repl("FINAL(f'{len(orders)} cancelled: ' + ', '.join(sorted(orders)))"),
    ])
    assert result.status == "ok"
    assert result.answer == f"{len(CANCELLED)} cancelled: " + ", ".join(sorted(CANCELLED))
    pieces = -(-len(SHOP_LOG) // 12_000)
    assert f"{pieces} pieces; 0 failed; {len(CANCELLED)} cancelled orders" in observation(server, 1)


def test_one_chunk_to_llm_query(server_factory, make_config, text_file):
    context = "filler line\n" * 300 + "the magic number is 4817\n" + "filler line\n" * 3000
    result, _ = solve(server_factory, make_config, text_file, "What is the magic number?", context, [
        repl("chunk = context[:10_000]\nanswer = llm_query(f'What is the magic number? Here is the text:\\n{chunk}')\n"
             "print(answer)"),
        repl("FINAL(answer)"),
    ])
    assert result.answer == "4817"


def test_ten_chunks_batched_then_an_aggregating_call(server_factory, make_config, text_file):
    jobs = ["He worked as a clerk.", "He worked as a sailor.", "He worked as a teacher.", "He worked as a cook."]
    lines = [f"Line {i} of a long biography." for i in range(4000)]
    for n, job in enumerate(jobs):
        lines.insert(700 + n * 900, job)
    context = "\n".join(lines)
    code = textwrap.dedent("""\
        question = "How many jobs did he have?"
        size = len(context) // 10 + 1
        chunks = [context[i * size:(i + 1) * size] for i in range(10)]
        answers = llm_query_batched([f"How many jobs are mentioned in this text?\\n{c}" for c in chunks])
        print(answers)
        ask = "Add up the numbers, one per line, and give only the sum.\\nAnswers:\\n"
        total = llm_query(ask + "\\n".join(answers))
        print(total)""")
    result, server = solve(server_factory, make_config, text_file, "How many jobs did he have?", context, [
        repl(code), repl("FINAL(total)")])
    assert result.answer == "4"
    assert observation(server, 1).count("'1'") == 4  # four chunks saw one job each


def test_sections_read_in_order_with_a_buffer(server_factory, make_config, text_file):
    context = "".join(f"## Part {i}\nThe page mentions key K{i}.\n" + "text\n" * 200 for i in range(6))
    code = textwrap.dedent("""\
        import re
        sections = [s for s in re.split(r'^## ', context, flags=re.MULTILINE) if s.strip()]
        notes = "(none)"
        for i, section in enumerate(sections):
            notes = llm_query(f"Reading section {i + 1} of {len(sections)}; collect every key.\\n"
                              f"Notes so far: {notes}\\nSection: {section}")
            print(i, notes)""")
    result, _ = solve(server_factory, make_config, text_file, "Which keys appear, in order?", context, [
        repl(code), repl("FINAL(notes)")])
    assert result.answer == "K0 K1 K2 K3 K4 K5"


def test_headers_summarised_then_final_var(server_factory, make_config, text_file):
    context = ("### Monday\nAnna moved to Bergen.\n" + "note\n" * 100 + "### Tuesday\nAnna moved to Tromso.\n"
               + "note\n" * 100 + "### Wednesday\nNothing happened.\n")
    code = textwrap.dedent("""\
        import re
        parts = re.split(r'^### (.+)$', context, flags=re.MULTILINE)
        summaries = []
        for header, body in zip(parts[1::2], parts[2::2]):
            summaries.append(f"{header}: " + llm_query(f"Summarise the moves in this {header} section:\\n{body}"))
        print(summaries)
        final_answer = llm_query("Where does Anna live now? Summaries in order:\\n" + "\\n".join(summaries))
        print(final_answer)""")
    result, _ = solve(server_factory, make_config, text_file, "Where does Anna live now?", context, [
        repl(code), repl("FINAL_VAR('final_answer')")])
    assert result.answer == "Tromso"


def test_a_child_agent_answers_and_the_parent_branches(server_factory, make_config, text_file):
    child = repl("words = context.split()\nFINAL('up' if words.count('rose') > words.count('fell') else 'down')")
    code = textwrap.dedent("""\
        trend = rlm_query("Did the price mostly rise or fall? Answer up or down.", context=context[:5_000])
        advice = "buy more" if "up" in trend.lower() else "hedge"
        print(trend, advice)""")
    context = "price rose\n" * 300 + "price fell\n" * 100
    result, server = solve(server_factory, make_config, text_file, "What should we do?", context, [
        repl(code), repl("FINAL(advice)")], child=child)
    assert result.answer == "buy more" and result.depth_reached == 1
    assert "up buy more" in observation(server, 1)


def test_explore_then_read_for_meaning_then_submit_after_seeing(server_factory, make_config, text_file):
    reviews = ["The lid arrived broken.", "Lovely colour, works well.", "I want a refund.", "Great value."] * 25
    context = "\n".join(f"review {i}: {text}" for i, text in enumerate(reviews))
    result, server = solve(server_factory, make_config, text_file, "How many reviews are complaints?", context, [
        repl("print(type(context).__name__, len(context))\nprint(context[:200])"),
        repl("lines = context.splitlines()\n"
             "labels = llm_query_batched([f'Classify as complaint or praise: {line}' for line in lines])\n"
             "complaints = sum(label == 'complaint' for label in labels)\nprint(len(lines), complaints)"),
        repl("FINAL(str(complaints))"),
    ])
    assert result.answer == "50" and result.iterations == 3
    assert observation(server, 1).startswith("Output of your code") and "review 0: The lid" in observation(server, 1)
    assert "100 50" in observation(server, 2)
