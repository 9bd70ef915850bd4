"""What the models are told: the system prompt, the first user turn, observations.

The root model never sees the input itself, only a description of ``context``
(type, size, a short preview). A worked example goes before the task as real
chat turns: small models copy its shape, and it shows one correct trajectory.
"""

from __future__ import annotations

__all__ = [
    'SYSTEM_PROMPT',
    'EXAMPLE_TURNS',
    'AFTER_EXAMPLE',
    'USER_PROMPT',
    'CHILD_NOTE',
    'SUB_CALL_FUNCTIONS',
    'CHUNK_RULE',
    'NO_SUB_CALLS_RULE',
    'NO_CODE',
    'AMBIGUOUS_FINAL',
    'FORCE_FINAL',
    'OBSERVATION_HEADER',
    'system_prompt',
    'user_prompt',
]

SYSTEM_PROMPT = """\
You answer questions about a large input that you cannot read directly. It is stored \
in the variable `context` inside a Python REPL. You explore it by writing Python code \
in a ```repl block; the code runs and you see what it prints. Variables persist \
between blocks.

Functions available in the REPL:
- `context` — the input (see its description in the question).
{sub_call_functions}- `FINAL(answer)` — call this in code when you know the answer. It ends the task.
{extra_functions}
Rules:
- Write exactly one ```repl block per reply, then stop and wait for its output.
- Look at the data with code (print slices, search with `re`, count) before answering.
- `print` only short results: outputs longer than {obs_chars} characters are cut.
{chunk_rule}- When you know the answer, call FINAL("...") inside a ```repl block.

"""

#: A worked example, sent as real chat turns before the task: small models copy its shape.
EXAMPLE_TURNS = [
    ("user", "Question: What is the ship captain's secret code?\n\n"
             "Context: `context` is a str of 52,311 characters.\nPreview, first 300 characters:\n<<<\n"
             "1887-03-01 - Wind from the west. Sails mended. Crew of nine.\n"
             "1887-03-02 - Calm. Fished for cod.\n1887-03-03 - Rain. Cook sick.\n>>>\n\n"
             "Write a ```repl block to start exploring `context`."),
    ("assistant", "```repl\nimport re\nprint(re.findall(r\"secret code is ([\\w-]+)\", context))\n```"),
    ("user", "Output of your code:\n['ZEBRA-42']"),
    ("assistant", "```repl\nFINAL(\"ZEBRA-42\")\n```"),
]
AFTER_EXAMPLE = "Correct. That was an example. Now the real task, with a new `context`.\n\n"

USER_PROMPT = """\
Question: {question}

Context: {context_description}

Write a ```repl block to start exploring `context`."""

CHILD_NOTE = "You are a helper agent working on a sub-task for another agent; answer only the sub-task."

SUB_CALL_FUNCTIONS = """\
- `llm_query(prompt)` — ask a language model one question about a piece of text \
(it can read about {sub_chars} characters at once); returns a string.
- `llm_query_batched(prompts)` — many `llm_query` calls at once, in parallel; returns a list of strings.
- `rlm_query(prompt, context=chunk)` — hand a sub-task to a helper agent with its own REPL and \
its own `context`; returns its answer as a string.
- `rlm_query_batched(prompts, contexts)` — many helper agents in parallel.
"""
CHUNK_RULE = "- For long inputs, split `context` into chunks and use `llm_query_batched` on them.\n"
NO_SUB_CALLS_RULE = ("- Sub-calls (llm_query, rlm_query) are disabled in this run: answer with code over "
                     "`context` alone.\n")

NO_CODE = ("Your reply had no ```repl code block. Write Python code in a ```repl block to explore "
           "`context`, or call FINAL(answer) inside a ```repl block when you know the answer.")

AMBIGUOUS_FINAL = ("Your reply mentions FINAL more than once outside a code block, so the answer is "
                   "ambiguous. Call FINAL(answer) exactly once inside a ```repl block.")

FORCE_FINAL = ("You have used all your iterations. Based on what you found so far, give your best "
               "final answer now: reply with a ```repl block that calls FINAL(answer).")

OBSERVATION_HEADER = "Output of your code:"


def system_prompt(*, sub_chars: int, obs_chars: int, child: bool = False, sub_calls: bool = True,
                  extra_functions: list[str] | None = None, extra: str = "") -> str:
    """The system prompt; ``extra_functions`` are one-line docs of more REPL functions."""
    functions = "".join(f"- {doc}\n" for doc in extra_functions or [])
    text = SYSTEM_PROMPT.format(
        obs_chars=f"{obs_chars:,}", extra_functions=functions,
        sub_call_functions=SUB_CALL_FUNCTIONS.format(sub_chars=f"{sub_chars:,}") if sub_calls else "",
        chunk_rule=CHUNK_RULE if sub_calls else NO_SUB_CALLS_RULE)
    if extra:
        text = f"{text}\n{extra.strip()}\n"
    return f"{CHILD_NOTE}\n\n{text}" if child else text


def user_prompt(question: str, context_description: str) -> str:
    """The task turn; it follows :data:`EXAMPLE_TURNS`."""
    return AFTER_EXAMPLE + USER_PROMPT.format(question=question, context_description=context_description)
