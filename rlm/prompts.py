"""What the models are told: the system prompt, the task turn, observations, the forced answer.

The root model never sees the input itself, only a description of ``context``
(type, size, a short preview). Two styles, chosen by the root model's window
(:class:`rlm.capacity.Capacity`):

* **full** — the system prompt teaches decomposition (look first; filter with
  code, read with sub-calls; map over chunks with a batched call and reduce in
  code; an in-order read with a buffer; FINAL only after seeing the output it
  rests on) with one worked map-reduce block;
* **compact** — for small windows (the embedded 8k-token model): a short system
  prompt, and a worked example sent as real chat turns before the task, because
  small models copy the shape of a trajectory better than they follow rules.

Every observation ends with a footer (:func:`footer`): the turn count and the
turns left, the LM calls left in the run, the REPL's variables, and the
question restated, so a long trajectory never loses the task and the model
learns of its limits before it is forced to answer. ``docs/prompts.md`` says
which published prompt each part follows and where ours differs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rlm.capacity import Capacity

__all__ = [
    'QUESTION_RESTATED_CHARS',
    'WARN_TURNS_LEFT',
    'SUB_CALL_FUNCTIONS',
    'RLM_FUNCTIONS',
    'RLM_FUNCTIONS_AT_MAX_DEPTH',
    'FULL_SYSTEM',
    'READ_WITH_SUB_CALLS',
    'READ_WITHOUT_SUB_CALLS',
    'MAP_REDUCE',
    'MAP_REDUCE_NO_SUB_CALLS',
    'MAP_REDUCE_EXAMPLE',
    'COMPACT_SYSTEM',
    'COMPACT_CHUNKS',
    'NO_SUB_CALLS_RULE',
    'PACKAGES',
    'NO_PACKAGES',
    'EXAMPLE_TURNS',
    'EXAMPLE_ANSWER',
    'EXAMPLE_LEAK',
    'AFTER_EXAMPLE',
    'TASK',
    'FIRST_STEP',
    'FIRST_STEP_FULL',
    'CHILD_NOTE',
    'NO_CODE',
    'AMBIGUOUS_FINAL',
    'FORCE_FINAL',
    'OBSERVATION_HEADER',
    'PromptSpec',
    'TurnState',
    'system_prompt',
    'example_turns',
    'task_prompt',
    'task_index',
    'short_question',
    'footer',
    'observation_header',
    'trimmed_observation',
    'force_final',
    'without_timing',
    'SESSION_VARIABLES',
    'FOLLOW_UP',
    'FOLLOW_UP_STEP',
    'SUMMARY_REQUEST',
    'COMPACTED',
    'EarlierTurn',
    'follow_up',
    'summary_request',
    'compacted',
]

#: How much of the question each footer restates.
QUESTION_RESTATED_CHARS = 300
#: Turns left at which the footer starts warning.
WARN_TURNS_LEFT = 2

_FUNCTIONS = """\
- `context` — the input (its type and size are in the task message).
{sub_call_functions}\
- `FINAL(answer)` — ends the task with `answer`. `FINAL_VAR(name)` ends it with the REPL variable named `name`.
{session_variables}{extra_functions}"""

#: In a conversation (a session, a fork, a compacted history): the one naming scheme of earlier turns.
SESSION_VARIABLES = """\
- `answers[k]`, `history[k]` — in a conversation of several questions, turn k (1, 2, ...): its answer (a str) \
and its whole message history (a list of {{"role": ..., "content": ...}} dicts). They appear from the second \
question on, or when your history is cut to fit your window.
"""

SUB_CALL_FUNCTIONS = """\
- `llm_query(prompt)` — one call to a sub-model; returns its reply (a str). The sub-model sees only \
`prompt`: nothing of `context` or of this conversation that you do not put into it. It reads about \
{sub_chars} characters per call.
- `llm_query_batched(prompts)` — many `llm_query` calls at once ({concurrency} run in parallel); returns \
a list in the same order. An item that failed is a `QueryError` instead of a str (falsy; `str()` tells \
why): check with `isinstance(x, QueryError)`.
{rlm_functions}"""

RLM_FUNCTIONS = """\
- `rlm_query(prompt, context=None)` — hands a sub-task to a helper agent with its own REPL: it can explore, \
run code and call sub-models itself, and returns its answer (a str). With `context=piece` the helper's \
`context` is that piece; with no `context` it works on your whole `context` (nothing is copied). Prefer it \
to `llm_query` when the sub-task needs several steps of its own, such as searching a large piece.
- `rlm_query_batched(prompts, contexts=None)` — many helper agents in parallel; failed items are `QueryError`.
"""
RLM_FUNCTIONS_AT_MAX_DEPTH = """\
- `rlm_query(prompt, context=None)`, `rlm_query_batched(prompts, contexts=None)` — at this depth no helper \
agents can be started: each is one sub-model call on `prompt` followed by the `context` you pass (as text).
"""

FULL_SYSTEM = """\
You answer a question about an input that is too large to read at once. The input is the variable \
`context` in a Python REPL. You work by writing Python code in a ```repl block: it runs, and you see \
what it prints. Variables persist between blocks.

## The REPL
{functions}{packages}
## How to work
1. Look before you answer: print `len(context)`, the start of it, and how it is structured (lines, \
records, separators, headings).
2. {read_with}
3. When the answer depends on the whole input (counting, totals, "all", "every", "most", pairs of \
items), cover all of it. {map_reduce} A search that found some matches is not a count of all of them.
4. When later parts depend on earlier ones, read the pieces in order and carry a short buffer of what \
you know so far from one step to the next.
5. Print what your answer rests on and read it before you answer. Do not answer in your first reply, \
and never call FINAL in the same block as the code whose result you have not seen yet.
{example}
## Rules
- Exactly one ```repl block per reply; then stop and wait for its output.
- Print short results: an output longer than {obs_chars} characters is cut (you are told its full length).
- You have {max_iterations} turns; every output tells you how many are left.
- Give the answer by calling FINAL(answer) inside a ```repl block.
{no_sub_calls}"""

READ_WITH_SUB_CALLS = ("Filter with code, read with sub-calls. Code (`re`, string methods, counting) finds where "
                       "things are and does exact work; `llm_query` reads for meaning (classifying, judging, "
                       "extracting what no pattern finds). Put the question and the text into every sub-call prompt.")
READ_WITHOUT_SUB_CALLS = ("Filter with code: `re`, string methods and counting find where things are and do exact "
                          "work; print the text you found and read it yourself.")
MAP_REDUCE = ("Split `context` into pieces of at most {sub_chars} characters, ask the same instruction "
              "about every piece with one `llm_query_batched` call (map), then combine the answers in code "
              "(reduce).")
MAP_REDUCE_NO_SUB_CALLS = "Loop over all of `context` in code and combine the results."

MAP_REDUCE_EXAMPLE = """
A map over pieces of `context` and a reduce in code look like this:
```repl
size = {sub_chars_literal}
pieces = [context[i:i + size] for i in range(0, len(context), size)]
prompts = [f"List every cancelled order number in this part of a shop log, one per line, or NONE.\\n\\n{{p}}"
           for p in pieces]
replies = llm_query_batched(prompts)
failed = [i for i, r in enumerate(replies) if isinstance(r, QueryError)]
orders = {{line.strip() for r in replies if r for line in r.splitlines() if line.strip() not in ("", "NONE")}}
print(len(pieces), "pieces;", len(failed), "failed;", len(orders), "cancelled orders, e.g.", sorted(orders)[:5])
```
"""

COMPACT_SYSTEM = """\
You answer a question about a large input stored in the variable `context` of a Python REPL. Write \
Python code in one ```repl block per reply; you then see what it prints. Variables persist.

Functions:
{functions}{packages}
Rules:
- Look at `context` with code first: print slices, search with `re`, count.
- {compact_chunks}
- Print short results: outputs over {obs_chars} characters are cut.
- Call FINAL(answer) in a ```repl block only after you have seen the output your answer comes from.
"""

COMPACT_CHUNKS = ("For questions about the whole input (how many, all, most), split it into pieces of "
                  "{sub_chars} characters, use llm_query_batched on them and combine the answers in code.")
#: Said in both styles when the run has no sub-calls (the paper's "RLM without sub-calls" ablation).
NO_SUB_CALLS_RULE = ("- Sub-calls (llm_query, rlm_query) are disabled in this run: answer with code over "
                     "`context` alone.\n")

PACKAGES = ("\nBesides the standard library you can import: {names}. "
            "No network, no new processes; files only under /tmp.\n")
NO_PACKAGES = "\nOnly the standard library can be imported. No network, no new processes; files only under /tmp.\n"

#: The compact style's worked example, sent as real chat turns before the task.
EXAMPLE_TURNS = [
    ("user", "Question: What is the ship captain's secret code?\n\n"
             "Context: `context` is a str of 52,311 characters.\nPreview, first 300 characters:\n<<<\n"
             "1887-03-01 - Wind from the west. Sails mended. Crew of nine.\n"
             "1887-03-02 - Calm. Fished for cod.\n1887-03-03 - Rain. Cook sick.\n>>>\n\n"
             "Write a ```repl block to start exploring `context`."),
    ("assistant", "```repl\nlines = [line for line in context.splitlines() if \"secret code\" in line]\n"
                  "print(lines[:5])\n```"),
    # The example's observation has the footer every real one has: a 135M model answered only when the shapes matched.
    ("user", "Output of your code (75 characters):\n"
             "[\"1887-06-11 - Note: the captain's secret code is ZEBRA-42. Keep it safe.\"]\n\n"
             "[turn 1 of 20 done; 19 left; 199 LM calls left in this run]\nVariables: lines (list, 1)\n"
             "Question: What is the ship captain's secret code?"),
    ("assistant", "```repl\nFINAL(\"ZEBRA-42\")\n```"),
]
#: The worked example's answer: small models copy it when they find nothing (see :data:`EXAMPLE_LEAK`).
EXAMPLE_ANSWER = "ZEBRA-42"
EXAMPLE_LEAK = (f"{EXAMPLE_ANSWER} is the answer of the worked example, not of this task: no output of your code "
                "showed it. Print the text your answer comes from, then call FINAL(answer).")
#: Opens the task turn after :data:`EXAMPLE_TURNS`; :func:`task_index` finds the task by it.
AFTER_EXAMPLE = "Correct. That was an example. Now the real task, with a new `context`.\n\n"

TASK = """\
Question: {question}

Context: {context_description}

{first_step}"""
FIRST_STEP = "Write a ```repl block to start exploring `context`."
FIRST_STEP_FULL = ("Start by looking at `context` in a ```repl block; do not answer yet: first see what the "
                   "input holds.")

CHILD_NOTE = "You are a helper agent working on a sub-task for another agent; answer only the sub-task."

NO_CODE = ("Your reply had no ```repl code block. Write Python code in a ```repl block to explore "
           "`context`, or call FINAL(answer) inside a ```repl block when you know the answer.")
AMBIGUOUS_FINAL = ("Your reply mentions FINAL more than once outside a code block, so the answer is "
                   "ambiguous. Call FINAL(answer) exactly once inside a ```repl block.")
FORCE_FINAL = ("You have used all {max_iterations} turns. Question: {question}\n"
               "Based on what you found so far, give your best final answer now: reply with a ```repl block "
               "that calls FINAL(answer).")

OBSERVATION_HEADER = "Output of your code"


@dataclass(frozen=True, slots=True)
class PromptSpec:
    """Everything the system prompt depends on (so a snapshot of it is a function of this record)."""

    capacity: Capacity
    max_iterations: int = 20
    max_concurrency: int = 16
    observation_chars: int | None = None  # None: from ``capacity``
    child: bool = False
    sub_calls: bool = True
    #: False at the deepest level (``max_depth``): ``rlm_query`` is then a plain sub-model call.
    children: bool = True
    packages: Sequence[str] = ()
    extra_functions: Sequence[str] = ()
    extra: str = ""
    #: A session's root: the system prompt names ``answers[k]`` and ``history[k]``.
    session: bool = False

    @property
    def obs_chars(self) -> int:
        """Characters of REPL output shown per turn."""
        return self.observation_chars or self.capacity.observation_chars

    @property
    def compact(self) -> bool:
        return self.capacity.compact


@dataclass(frozen=True, slots=True)
class TurnState:
    """What an observation's footer reports after a turn."""

    turn: int
    max_turns: int
    question: str
    calls_left: int | None = None
    variables: Sequence[str] = field(default_factory=tuple)


def system_prompt(spec: PromptSpec) -> str:
    """The system prompt for ``spec`` (full or compact style)."""
    sub_chars = f"{spec.capacity.sub_call_chars:,}"
    sub_call_functions = SUB_CALL_FUNCTIONS.format(
        sub_chars=sub_chars, concurrency=spec.max_concurrency,
        rlm_functions=RLM_FUNCTIONS if spec.children else RLM_FUNCTIONS_AT_MAX_DEPTH)
    functions = _FUNCTIONS.format(sub_call_functions=sub_call_functions if spec.sub_calls else "",
                                  session_variables=SESSION_VARIABLES.format() if spec.session else "",
                                  extra_functions="".join(f"- {doc}\n" for doc in spec.extra_functions))
    packages = PACKAGES.format(names=", ".join(spec.packages)) if spec.packages else NO_PACKAGES
    text = _compact(spec, functions, packages, sub_chars) if spec.compact else _full(
        spec, functions, packages, sub_chars)
    if spec.extra.strip():
        text = f"{text}\n{spec.extra.strip()}\n"
    return f"{CHILD_NOTE}\n\n{text}" if spec.child else text


def _full(spec: PromptSpec, functions: str, packages: str, sub_chars: str) -> str:
    example = MAP_REDUCE_EXAMPLE.format(sub_chars_literal=f"{spec.capacity.sub_call_chars:_}") if spec.sub_calls else ""
    return FULL_SYSTEM.format(
        functions=functions, packages=packages, example=example, obs_chars=f"{spec.obs_chars:,}",
        max_iterations=spec.max_iterations, no_sub_calls="" if spec.sub_calls else NO_SUB_CALLS_RULE,
        read_with=READ_WITH_SUB_CALLS if spec.sub_calls else READ_WITHOUT_SUB_CALLS,
        map_reduce=MAP_REDUCE.format(sub_chars=sub_chars) if spec.sub_calls else MAP_REDUCE_NO_SUB_CALLS)


def _compact(spec: PromptSpec, functions: str, packages: str, sub_chars: str) -> str:
    chunks = COMPACT_CHUNKS.format(sub_chars=sub_chars) if spec.sub_calls else NO_SUB_CALLS_RULE.strip("- \n")
    return COMPACT_SYSTEM.format(functions=functions, packages=packages, compact_chunks=chunks,
                                 obs_chars=f"{spec.obs_chars:,}")


def example_turns(spec: PromptSpec) -> list[tuple[str, str]]:
    """The worked example sent as chat turns before the task: compact style only."""
    return list(EXAMPLE_TURNS) if spec.compact else []


def task_prompt(spec: PromptSpec, question: str, context_description: str) -> str:
    """The task turn; after :func:`example_turns` it opens with :data:`AFTER_EXAMPLE`."""
    text = TASK.format(question=question, context_description=context_description,
                       first_step=FIRST_STEP if spec.compact else FIRST_STEP_FULL)
    return AFTER_EXAMPLE + text if example_turns(spec) else text


def task_index(messages: Sequence[Mapping[str, Any]]) -> int | None:
    """Index of the task turn in an agent's messages (after any worked example), or ``None``."""
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    for index in users:
        if str(messages[index].get("content", "")).startswith(AFTER_EXAMPLE):
            return index
    return users[0] if users else None


def short_question(question: str, limit: int = QUESTION_RESTATED_CHARS) -> str:
    """The question on one line, cut to ``limit`` characters."""
    flat = " ".join(question.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def footer(state: TurnState) -> str:
    """The lines closing every observation: budget, variables, the question restated."""
    left = state.max_turns - state.turn
    budget = f"[turn {state.turn} of {state.max_turns} done; {left} left"
    if state.calls_left is not None:
        budget += f"; {state.calls_left:,} LM calls left in this run"
    lines = [budget + "]"]
    if left <= WARN_TURNS_LEFT:
        lines.append(f"Only {left} turn{'s' if left != 1 else ''} left: make sure to call FINAL(answer) "
                     "with your best answer before they run out." if left else
                     "No turns left after this one.")
    if state.variables:
        lines.append("Variables: " + ", ".join(state.variables))
    lines.append(f"Question: {short_question(state.question)}")
    return "\n".join(lines)


_CALLS_LEFT = re.compile(r"; [\d,]+ LM calls left in this run\]")


def without_timing(text: str) -> str:
    """``text`` without the footer's count of LM calls left: the one part of a request that depends on how
    agents running beside each other interleave (a request key leaves it out, so a replay matches)."""
    return _CALLS_LEFT.sub("; LM calls left in this run]", text) if "LM calls left" in text else text


def observation_header(total_chars: int, shown_head: int | None = None, shown_tail: int = 0) -> str:
    """``Output of your code (N characters...):`` with the output's full length and how much of it is shown."""
    size = f"{total_chars:,} character{'s' if total_chars != 1 else ''}"
    if shown_head is not None:
        size += f"; showing the first {shown_head:,}" + (f" and the last {shown_tail:,}" if shown_tail else "")
    return f"{OBSERVATION_HEADER} ({size}):"


def trimmed_observation(observation: str) -> str:
    """An old observation cut to its header and a note, when the conversation outgrows the window."""
    header = observation.split("\n", 1)[0]
    return f"{header}\n[trimmed to fit the model's window: print it again if you still need it]"


def force_final(max_iterations: int, question: str) -> str:
    """The last turn's request for an answer, with the question restated."""
    return FORCE_FINAL.format(max_iterations=max_iterations, question=short_question(question))


# -- conversations: follow-up questions and compaction ------------------------------------------------

FOLLOW_UP = """\
Next question (turn {turn} of this conversation): {question}

Earlier turns (`answers[k]` holds the answer of turn k, `history[k]` its whole conversation):
{turns}
`context` is the same input, and the REPL variables you made are still defined.

{first_step}"""
FOLLOW_UP_STEP = ("Work on it in a ```repl block; call FINAL(answer) once you have seen the output your answer "
                  "rests on.")
#: Characters of an earlier question and answer shown in the list of earlier turns.
EARLIER_CHARS = 160

SUMMARY_REQUEST = ("Your conversation is close to the size of your context window and will be cut. Summarise "
                   "your progress on the question: what you found (exact values), which REPL variables hold "
                   "what, and what is left to do. Reply with the summary only, without code.")
COMPACTED = """\
[The conversation was cut to fit your context window. Its whole text is in the REPL variable \
`history[{turn}]` (a list of {{"role": ..., "content": ...}} dicts){earlier}.]

Your summary of the work so far:
{summary}

Question: {question}

Continue in a ```repl block."""


@dataclass(frozen=True, slots=True)
class EarlierTurn:
    """What a follow-up question says about an earlier turn."""

    turn: int
    question: str
    answer: str | None
    status: str


def follow_up(turn: int, question: str, earlier: Sequence[EarlierTurn]) -> str:
    """The user turn that asks turn ``turn``'s question of a conversation, listing the earlier turns."""
    lines = []
    for t in earlier:
        answer = short_question(t.answer, EARLIER_CHARS) if t.answer else "(no answer)"
        status = "" if t.status == "ok" else f" [ended: {t.status}]"
        lines.append(f"- turn {t.turn}: {short_question(t.question, EARLIER_CHARS)!r} -> {answer!r}{status}")
    return FOLLOW_UP.format(turn=turn, question=question, turns="\n".join(lines), first_step=FOLLOW_UP_STEP)


def summary_request(last_observation: str) -> str:
    """The last observation with the request to summarise appended (no two user turns in a row)."""
    return f"{last_observation}\n\n{SUMMARY_REQUEST}"


def compacted(turn: int, summary: str, question: str) -> str:
    """The user turn that replaces a cut history: the pointer to ``history[turn]``, the summary, the question."""
    earlier = f"; earlier turns are in `history[1]` to `history[{turn - 1}]`" if turn > 2 else (
        "; the first turn is in `history[1]`" if turn == 2 else "")
    return COMPACTED.format(turn=turn, earlier=earlier, summary=summary.strip() or "(no summary)",
                            question=short_question(question))
