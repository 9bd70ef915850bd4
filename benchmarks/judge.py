"""Grading a reply with a judge model, the way BrowseComp (and so BrowseComp-Plus) grades answers.

BrowseComp's grader (Wei et al. 2025, OpenAI simple-evals) gives a judge model the
question, the response and the correct answer, asks it to extract the response's
final answer, reason about whether it matches the correct answer (allowing small
numeric differences, nothing else) and end with ``correct: yes`` or ``correct: no``.
:data:`JUDGE_PROMPT` asks for the same fields in our own words; :func:`parse_verdict`
reads the last ``correct:`` line. A judge reply without a verdict scores 0 and is
recorded as such.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from rlm.config import RLMConfig
from rlm.errors import LMError

JUDGE_PROMPT = """You are grading an answer to a research question against the correct answer.

[question]: {question}

[response]: {response}

[correct_answer]: {correct_answer}

Decide whether the response's final answer is the correct answer. Judge only that: do not solve
the question yourself and do not give credit for reasoning. Small differences in formatting, or
in a number within a small margin, are fine; any other difference, an ambiguous answer, several
candidate answers or no answer at all is incorrect.

Reply in exactly this format:
extracted_final_answer: <the final answer taken from the response, or None>
reasoning: <why it does or does not match the correct answer>
correct: <yes or no>
"""

_VERDICT = re.compile(r"^\W*correct\W*:\W*(yes|no)\b", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Verdict:
    """The judge's score (1.0 or 0.0) and its raw reply (or the error that stopped it)."""

    score: float
    reply: str | None
    error: str | None = None


def parse_verdict(reply: str) -> float | None:
    """1.0 for a last ``correct: yes``, 0.0 for ``correct: no``, None when there is no verdict."""
    found = _VERDICT.findall(reply or "")
    if not found:
        return None
    return 1.0 if found[-1].lower() == "yes" else 0.0


def judge(question: str, response: str | None, correct_answer: str, config: RLMConfig, judge_model: str) -> Verdict:
    """Ask ``judge_model`` (at ``config``'s endpoint) whether ``response`` answers ``question`` correctly."""
    from rlm.lm import LiteLLMClient

    if not response:
        return Verdict(0.0, None, "no response to judge")
    prompt = JUDGE_PROMPT.format(question=question, response=response, correct_answer=correct_answer)
    client = LiteLLMClient(dataclasses.replace(config, model=judge_model, sub_model=None))
    try:
        reply = client.complete([{"role": "user", "content": prompt}], role="root").text
    except LMError as exc:
        return Verdict(0.0, None, f"judge failed: {exc}")
    finally:
        if hasattr(client, "close"):
            client.close()
    verdict = parse_verdict(reply)
    return Verdict(verdict or 0.0, reply, None if verdict is not None else "the judge gave no verdict")
