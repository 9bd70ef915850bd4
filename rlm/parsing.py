"""Reading model replies: fenced code blocks, and the plain-text ``FINAL(...)`` fallback.

The answer is normally given by calling ``FINAL`` *in code*. Small models
sometimes write ``FINAL(...)`` as prose instead. That is accepted only when it is
unambiguous (:func:`plain_final`):

* the reply contains no code block at all (with code present, a prose FINAL was
  written before the code's output was seen, so it is ignored), and
* ``FINAL(`` occurs exactly once, at the start of a line, and its parenthesis
  closes on the rest of the reply.

What is inside is then either Python (``FINAL("x")``, ``FINAL(total)``), which
the agent runs as a cell so variables resolve, or free text that does not parse
as Python (``FINAL(The answer is 42)``), which is taken verbatim.

Reasoning models served without a reasoning parser (DeepSeek-R1 or Qwen3 on
vLLM or llama.cpp, gpt-oss) put their drafts in the reply text. Code drafted
there is never run: :func:`split_reasoning` separates the reasoning
(``<think>...</think>``, a ``</think>`` whose opening tag was in the chat
template, an unclosed ``<think>`` of a reply cut short, gpt-oss's ``analysis``
channel) from the visible reply, and only the visible reply is read for code
and FINAL. Reasoning a server returns separately (``reasoning_content``) never
reaches the reply text at all.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

__all__ = [
    'extract_code_blocks',
    'PlainFinal',
    'plain_final',
    'strip_code',
]

_FENCE = re.compile(r"```(repl|python|py)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_FINAL_AT_LINE_START = re.compile(r"^[ \t]*FINAL(?:_VAR)?\(", re.MULTILINE)
_THINK_BLOCK = re.compile(r"<(think|thinking|reasoning)>(.*?)(?:</\1>|\Z)", re.DOTALL | re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</(?:think|thinking|reasoning)>", re.IGNORECASE)
_HARMONY_ANALYSIS = re.compile(r"<\|channel\|>analysis<\|message\|>(.*?)(?=<\|end\|>|<\|start\|>|\Z)", re.DOTALL)
_HARMONY_TOKEN = re.compile(r"<\|(?:start|end|return|call|message|channel|constrain)\|>(?:assistant|final|commentary)?")


def split_reasoning(reply: str) -> tuple[str, str]:
    """``(reasoning, visible)``: the reply's reasoning sections, and the rest, which alone is acted on."""
    reasoning: list[str] = []
    opening = _THINK_BLOCK.search(reply)
    closing = _THINK_CLOSE.search(reply)
    if closing is not None and (opening is None or closing.start() < opening.start()):
        # The template opened the reasoning in the prompt: everything up to the first closing tag is reasoning.
        reasoning.append(reply[:closing.start()])
        reply = reply[closing.end():]

    def keep(match: re.Match[str]) -> str:
        reasoning.append(match.group(match.lastindex or 0))
        return ""

    visible = _THINK_BLOCK.sub(keep, reply)
    if "<|channel|>" in visible:
        visible = _HARMONY_TOKEN.sub("", _HARMONY_ANALYSIS.sub(keep, visible))
    return "\n".join(part.strip() for part in reasoning if part.strip()), visible.strip()


def visible_text(reply: str) -> str:
    """The reply without its reasoning sections (see :func:`split_reasoning`)."""
    return split_reasoning(reply)[1]


def extract_code_blocks(reply: str) -> list[str]:
    """Code of every ```repl / ```python block, in order (an unclosed last block counts)."""
    blocks = []
    for match in _FENCE.finditer(reply):
        code = match.group(2).strip("\n")
        if code.strip():
            blocks.append(code)
    return blocks


@dataclass(frozen=True, slots=True)
class PlainFinal:
    """A prose FINAL: either ``code`` to run, or a literal ``text`` answer; ``ambiguous`` if neither."""

    code: str | None = None
    text: str | None = None
    ambiguous: bool = False


def plain_final(reply: str) -> PlainFinal | None:
    """The prose ``FINAL(...)`` of a reply without code blocks, or ``None`` if there is none."""
    if "```" in reply:
        return None
    starts = list(_FINAL_AT_LINE_START.finditer(reply))
    if not starts:
        return None
    if len(starts) > 1 or reply.count("FINAL(") + reply.count("FINAL_VAR(") > 1:
        return PlainFinal(ambiguous=True)
    start = starts[0]
    open_at = start.end() - 1
    close_at = _matching_paren(reply, open_at)
    if close_at is None:
        return PlainFinal(ambiguous=True)
    call = reply[start.start():close_at + 1].strip()
    if _is_call(call):
        return PlainFinal(code=call)
    inner = reply[open_at + 1:close_at].strip()
    return PlainFinal(text=inner) if inner else PlainFinal(ambiguous=True)


def _matching_paren(text: str, open_at: int) -> int | None:
    depth = 0
    for index in range(open_at, len(text)):
        char = text[index]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index
    return None


def _is_call(source: str) -> bool:
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError:
        return False
    return isinstance(tree.body, ast.Call) and isinstance(tree.body.func, ast.Name)


def strip_code(reply: str) -> str:
    """The prose of a reply with its code blocks removed (used for partial answers)."""
    return _FENCE.sub("", reply).strip()
