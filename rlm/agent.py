"""The agent loop: model reply -> code blocks -> sandbox -> observation -> model ...

Plain Python, no Ray: :class:`Agent` runs one agent (root or child) with the
services of its run (:class:`~rlm.services.RunServices`: config, LM, the
tree-wide budget, the event sink, the placement of children). Model mistakes —
syntax errors, exceptions, a reply without code — go back to the model as
observations. Infrastructure faults (:class:`rlm.errors.LMError`, sandbox
failures) end the agent with status ``"error"``. A tripped tree-wide limit ends
every agent of the tree with the limit's name as status and the best partial
answer.

The agent's model calls go through its :class:`~rlm.calls.CallMeter`; what its
REPL calls on the host (sub-calls, children, extension functions) is served by
its :class:`~rlm.subcalls.SubCalls`.

The *partial answer* of an agent stopped early is the last non-empty output of
its cells, or else the prose of the model's last reply.

A root given a :class:`~rlm.conversation.Conversation` continues it: its first
message is the follow-up question (with short notes on the earlier turns), its
REPL is the conversation's running sandbox (``answers[k]`` and ``history[k]``
set in it first), and at its end it hands the conversation back with its
messages and the sandbox still running. When the root's own history reaches
``RLMConfig.compact_at`` of its model's window, the root summarises its
progress and the history is cut to the system prompt, the summary and a
pointer to ``history[turn]`` (:meth:`Agent._compact`); the cut segment is
recorded in a :class:`~rlm.events.HistoryCompacted` event.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from rlm import prompts
from rlm.calls import PREVIEW_CHARS, CallMeter
from rlm.capacity import capacity
from rlm.conversation import Conversation, TurnRecord, variables_cell
from rlm.errors import LimitReached, RLMError
from rlm.events import AgentFinished, AgentStarted, CellExecuted, Event, HistoryCompacted, IterationFinished
from rlm.inputs import ContextPayload
from rlm.lm import Message
from rlm.parsing import extract_code_blocks, plain_final, strip_code, visible_text
from rlm.results import AgentResult
from rlm.sandbox import packages
from rlm.sandbox.host import CellResult, Sandbox
from rlm.services import RunServices
from rlm.subcalls import SubCalls

__all__ = ["Agent", "AgentResult", "PREVIEW_CHARS"]

#: Variables listed in an observation's footer.
MAX_LISTED_VARIABLES = 20


class Agent:
    """One agent: its prompt, its context payload, its own sandbox, its message history."""

    def __init__(self, services: RunServices, *, prompt: str, payload: ContextPayload, depth: int = 0,
                 parent_id: str | None = None, agent_id: str | None = None, group: str | None = None,
                 conversation: Conversation | None = None, stop_after: int | None = None) -> None:
        self.services = services
        self.config = services.config
        self.prompt = prompt
        self.payload = payload
        self.depth = depth
        self.parent_id = parent_id
        self.agent_id = agent_id or services.new_id("a")
        #: The model group this agent's own turns ask for (its parent's ``rlm_query(..., model=...)``).
        self.group = group
        #: The conversation a session's root continues and hands back (None: a run of its own).
        self.conversation = conversation
        #: Iterations after which the agent ends without an answer (a fork replaying its parent).
        self.stop_after = stop_after
        self.calls = CallMeter(services, self.agent_id, depth, group)
        self.subcalls = SubCalls(self)
        self.role = "root" if depth == 0 else "sub"
        self.model = self.config.model if depth == 0 else self.config.effective_sub_model
        self.spec = self._prompt_spec()
        self.iterations = 0
        self._variables: tuple[str, ...] = ()
        #: Whether the example's answer may be given: not yet refused once, or seen in an output of this agent.
        self._example_answer_ok = not prompts.example_turns(self.spec)
        self._partial: str | None = None
        self._sandbox: Sandbox | None = None
        self._sandbox_starting: Future[Sandbox] | None = None
        self.turn = conversation.next_turn if conversation is not None else 1
        #: This turn's messages as the model saw them, never cut (``history[turn]``).
        self._turn_log: list[Message] = []
        self._messages: list[Message] = []
        self._compacted_at = -1  # len(messages) after the last compaction

    # -- the loop ----------------------------------------------------------------
    def run(self) -> AgentResult:
        """Run to a FINAL answer, a limit, or an infrastructure error. Never raises for those."""
        started = time.monotonic()
        self.services.tracker.reached(self.depth)
        self._emit(AgentStarted, parent_id=self.parent_id, depth=self.depth, model=self.model,
                   prompt=self.prompt[:PREVIEW_CHARS], context_info=self.payload.info(),
                   node_id=self.services.node_id)
        self._take_or_start_sandbox()
        try:
            result = self._loop()
        except LimitReached as exc:
            result = self._result(None, exc.limit)
        except RLMError as exc:
            result = self._result(None, "error", error=str(exc))
        finally:
            starting, self._sandbox_starting = self._sandbox_starting, None
            if starting is not None and starting.exception() is None:  # ended before its first cell
                self._sandbox = starting.result()
            if self.conversation is None and self._sandbox is not None:
                self._sandbox.close()
        if self.conversation is not None:
            self._hand_back(result)
        totals = self.calls.totals()
        self._emit(AgentFinished, status=result.status, answer=result.answer, iterations=self.iterations,
                   input_tokens=totals.input_tokens, output_tokens=totals.output_tokens, llm_calls=totals.llm_calls,
                   duration_s=time.monotonic() - started, error=result.error)
        return result

    def _loop(self) -> AgentResult:
        messages = self._messages = self._start_messages()
        for _ in range(self.config.max_iterations):
            if self.stop_after is not None and self.iterations >= self.stop_after:
                return self._result(None, "stopped")
            self.iterations += 1
            self._compact_if_full(messages)
            answer = self._iteration(messages, purpose="iteration")
            if answer is not None:
                return self._result(answer, "ok")
        return self._force_final(messages)

    def _say(self, messages: list[Message], role: str, content: str) -> None:
        """Append a message to the history the model sees and to this turn's full log."""
        message = {"role": role, "content": content}
        messages.append(message)
        self._turn_log.append(message)

    def _iteration(self, messages: list[Message], *, purpose: str) -> str | None:
        """One model turn and its cells; returns the answer if FINAL was called."""
        started = time.monotonic()
        self.services.budget.check()
        reply = self.calls.call(self._fitted(messages), role=self.role, purpose=purpose).text
        visible = visible_text(reply)  # code drafted in a reasoning section is never run
        self._say(messages, "assistant", visible)
        answer, observation, n_cells = self._act(visible)
        self._emit(IterationFinished, iteration=self.iterations, reply=reply, n_cells=n_cells,
                   duration_s=time.monotonic() - started)
        if answer is not None:
            return answer
        self._say(messages, "user", f"{observation}\n\n{self._footer()}")
        self.services.budget.check()
        return None

    def _act(self, reply: str) -> tuple[str | None, str, int]:
        """Run the reply's code; returns (answer or None, observation for the model, cells run)."""
        blocks = extract_code_blocks(reply)
        if not blocks:
            return self._act_on_prose(reply)
        parts: list[str] = []
        dropped = 0
        for index, code in enumerate(blocks):
            result = self._run_cell(code, index)
            if result.final is not None and self._copied_example(result.final):
                parts.append(prompts.EXAMPLE_LEAK)
                return None, self._observation(parts, dropped), index + 1
            if result.final is not None:
                return result.final, "", index + 1
            parts.append(self._format_cell(index, len(blocks), result))
            dropped += result.truncated
            if result.error is not None and index + 1 < len(blocks):
                parts.append(f"[blocks {index + 2}-{len(blocks)} were not run because block {index + 1} failed]")
                return None, self._observation(parts, dropped), index + 1
        return None, self._observation(parts, dropped), len(blocks)

    def _act_on_prose(self, reply: str) -> tuple[str | None, str, int]:
        self._partial = strip_code(reply) or self._partial
        final = plain_final(reply)
        if final is None:
            return None, prompts.NO_CODE, 0
        if final.ambiguous:
            return None, prompts.AMBIGUOUS_FINAL, 0
        if final.text is not None:
            return (None, prompts.EXAMPLE_LEAK, 0) if self._copied_example(final.text) else (final.text, "", 0)
        result = self._run_cell(final.code or "", 0)
        if result.final is not None:
            if self._copied_example(result.final):
                return None, prompts.EXAMPLE_LEAK, 1
            return result.final, "", 1
        return None, self._observation([self._format_cell(0, 1, result)], result.truncated), 1

    def _copied_example(self, answer: str) -> bool:
        """True, once, for an answer holding the worked example's answer that no output of this agent showed."""
        if self._example_answer_ok or prompts.EXAMPLE_ANSWER not in answer:
            return False
        self._example_answer_ok = True  # refused once: a model that insists is answered
        return True

    def _force_final(self, messages: list[Message]) -> AgentResult:
        """Out of iterations: ask once for a final answer from what the model has."""
        # Appended to the last observation: two user turns in a row break some chat templates.
        request = prompts.force_final(self.config.max_iterations, self.prompt)
        messages[-1] = {"role": "user", "content": f"{messages[-1]['content']}\n\n{request}"}
        if self._turn_log:
            self._turn_log[-1] = messages[-1]
        reply = visible_text(self.calls.call(self._fitted(messages), role=self.role, purpose="final").text)
        self._say(messages, "assistant", reply)
        answer, _, _ = self._act(reply)
        if answer is None:
            answer = strip_code(reply) or self._partial
        return AgentResult(self.agent_id, answer, "max_iterations", self.iterations)

    def child(self, prompt: str, payload: ContextPayload, agent_id: str | None = None,
              group: str | None = None) -> Agent:
        """A child agent of this one at depth + 1 (not started), its own turns on ``group`` if given."""
        return Agent(self.services, prompt=prompt, payload=payload, depth=self.depth + 1, parent_id=self.agent_id,
                     agent_id=agent_id, group=group)

    # -- pieces ------------------------------------------------------------------
    def _prompt_spec(self) -> prompts.PromptSpec:
        extra = self.services.prompt_extra
        if self.depth == 0 and self.services.root_prompt_extra:
            extra = f"{extra}\n\n{self.services.root_prompt_extra}".strip()
        config = self.config
        return prompts.PromptSpec(
            capacity=capacity(self.model, config.effective_sub_model), max_iterations=config.max_iterations,
            max_concurrency=config.max_concurrency, observation_chars=config.max_observation_chars,
            child=self.depth > 0, sub_calls=config.sub_calls, children=self.depth < config.max_depth,
            packages=packages.available(config.sandbox.packages_dir),
            extra_functions=tuple(f.doc for f in self.services.host_functions.values()), extra=extra,
            session=self.conversation is not None and self.conversation.named)

    def _initial_messages(self) -> list[Message]:
        example = [{"role": role, "content": text} for role, text in prompts.example_turns(self.spec)]
        description = self.payload.describe(self.config.sandbox.huge_input_bytes)
        messages = [{"role": "system", "content": prompts.system_prompt(self.spec)}, *example]
        self._say(messages, "user", prompts.task_prompt(self.spec, self.prompt, description))
        return messages

    def _start_messages(self) -> list[Message]:
        """A new history, or the conversation's with this turn's question (its REPL variables set first)."""
        conversation = self.conversation
        if conversation is None or not conversation.messages:
            return self._initial_messages()
        previous = conversation.turns[-1]
        self._set_variables({t.turn: t.answer for t in conversation.turns}, {previous.turn: previous.history})
        earlier = [prompts.EarlierTurn(t.turn, t.question, t.answer, t.status) for t in conversation.turns]
        messages = list(conversation.messages)
        question = prompts.follow_up(self.turn, self.prompt, earlier)
        self._turn_log.append({"role": "user", "content": question})
        if messages[-1]["role"] == "user":  # the last turn ended on an output (a fork, a stop): no two user turns
            messages[-1] = {"role": "user", "content": f"{messages[-1]['content']}\n\n{question}"}
        else:
            messages.append({"role": "user", "content": question})
        return messages

    # -- conversations --------------------------------------------------------------
    def _take_or_start_sandbox(self) -> None:
        """The conversation's running sandbox, now serving this agent's calls; else one started now
        (from the factory's pool or cold) while the first model call is in flight."""
        carried = self.conversation.sandbox if self.conversation is not None else None
        if carried is not None and carried.pid is not None:
            carried.handler = self.subcalls
            self._sandbox = carried
            return
        self._sandbox_starting = _sandbox_starter().submit(self._make_sandbox)

    def _hand_back(self, result: AgentResult) -> None:
        """Give the conversation this turn: its messages, the running sandbox, its record."""
        conversation = self.conversation
        assert conversation is not None
        conversation.messages = self._messages
        conversation.sandbox = self._sandbox
        conversation.turns.append(TurnRecord(self.turn, self.prompt, result.answer, result.status,
                                             tuple(self._turn_log), self.services.run_id))

    def _set_variables(self, answers: dict[int, str | None], histories: dict[int, Any]) -> None:
        """Set ``answers[k]``/``history[k]`` in the REPL (not a cell of the model's: not recorded as one)."""
        sandbox = self._ready_sandbox()
        result = sandbox.execute(variables_cell(answers, histories), timeout=self.config.sandbox.cell_timeout_s)
        if result.error is None:
            self._variables = result.variables

    def _compact_if_full(self, messages: list[Message]) -> None:
        """Summarise and cut the root's history when it takes ``compact_at`` of its model's window (counted
        by the routing's tokenizer of the root's deployment; a child never compacts, it trims)."""
        if self.depth > 0 or self.config.compact_at is None or len(messages) <= self._compacted_at + 1:
            return
        if messages[-1]["role"] != "user":
            return
        used = self.services.lm.room_used(messages, self.group)
        if used is not None and used > self.config.compact_at:
            self._compact(messages, sum(len(m["content"]) for m in messages))

    def _compact(self, messages: list[Message], size: int) -> None:
        fitted = self._fitted(messages)
        asked = [*fitted[:-1], {"role": "user", "content": prompts.summary_request(fitted[-1]["content"])}]
        summary = strip_code(visible_text(self.calls.call(asked, role=self.role, purpose="summary").text))
        keep = 1 + len(prompts.example_turns(self.spec))  # the system prompt and the worked example
        segment = messages[keep:]
        self._set_variables({}, {self.turn: list(self._turn_log)})
        messages[keep:] = [{"role": "user", "content": prompts.compacted(self.turn, summary, self.prompt)}]
        self._turn_log.append(messages[-1])
        self._compacted_at = len(messages)
        self._emit(HistoryCompacted, iteration=self.iterations, turn=self.turn, summary=summary,
                   messages=[dict(m) for m in segment], chars_before=size,
                   chars_after=sum(len(m["content"]) for m in messages))

    def _footer(self) -> str:
        budget = self.services.budget
        calls_left = max(0, budget.max_llm_calls - budget.usage().llm_calls)
        return prompts.footer(prompts.TurnState(self.iterations, self.config.max_iterations, self.prompt,
                                                calls_left, self._variables[:MAX_LISTED_VARIABLES]))

    def _fitted(self, messages: list[Message]) -> list[Message]:
        """``messages`` as sent: when they outgrow the root window, the oldest outputs are cut to a note.

        Measured as the router's size guard measures a prompt (the deployment's tokenizer, with room for
        the reply) when a window is known there; else by the capacity's characters.
        """
        if self._fit(messages):
            return messages
        fitted = list(messages)
        task = prompts.task_index(fitted) or 0  # the worked example before the task stays as it is
        observations = [i for i, m in enumerate(fitted) if i > task and m["role"] == "user" and m[
            "content"].startswith(prompts.OBSERVATION_HEADER)][:-1]  # the latest output always stays whole
        for index in observations:
            fitted[index] = {"role": "user", "content": prompts.trimmed_observation(fitted[index]["content"])}
            if self._fit(fitted):
                break
        return fitted

    def _fit(self, messages: list[Message]) -> bool:
        fits = self.services.lm.fits(messages, role=self.role, model=self.calls.group)
        if fits is not None:
            return fits
        room = self.spec.capacity.history_chars
        return room is None or sum(len(m["content"]) for m in messages) <= room

    def _result(self, answer: str | None, status: str, *, error: str | None = None) -> AgentResult:
        if answer is None and status != "ok":
            answer = self._partial
        return AgentResult(self.agent_id, answer, status, self.iterations, error)

    def _make_sandbox(self) -> Sandbox:
        """This agent's started sandbox: the run's factory's (e.g. a host's pool) or a cold start.

        A conversation's sandbox is always a jail of its own: it outlives the run (and its factory).
        """
        extra = {f.name: list(f.params) for f in self.services.host_functions.values()}
        pooled = None if self.conversation is not None else self.services.placement.sandbox_for(
            self, self.subcalls, extra)
        sandbox = pooled or Sandbox(self.payload.path, self.payload.kind, config=self.config.sandbox,
                                    handler=self.subcalls, extra_functions=extra)
        try:
            sandbox.start()
        except BaseException:
            sandbox.close()
            raise
        return sandbox

    def _ready_sandbox(self) -> Sandbox:
        if self._sandbox is None:
            starting, self._sandbox_starting = self._sandbox_starting, None
            # A failed start is raised here, on the agent's thread, as it would be at a cold start.
            self._sandbox = starting.result() if starting is not None else self._make_sandbox()
        return self._sandbox

    def _run_cell(self, code: str, index: int) -> CellResult:
        sandbox = self._ready_sandbox()
        remaining = self.services.budget.remaining_time()
        timeout = self.config.sandbox.cell_timeout_s if remaining is None else min(
            self.config.sandbox.cell_timeout_s, max(remaining, 0.001))
        result = sandbox.execute(code, timeout=timeout,
                                 should_stop=lambda: self.services.budget.stop_reason is not None)
        if result.stdout.strip():
            self._partial = result.stdout.strip()[-PREVIEW_CHARS:]
        if prompts.EXAMPLE_ANSWER in result.stdout:
            self._example_answer_ok = True  # the input itself holds it
        self._variables = result.variables
        self._emit(CellExecuted, iteration=self.iterations, index=index, code=code,
                   stdout=result.stdout[:self.config.sandbox.max_output_chars],
                   stderr=result.stderr[:self.config.sandbox.max_output_chars], error=result.error,
                   duration_s=result.duration_s, final=result.final is not None, restarted=result.restarted)
        return result

    def _format_cell(self, index: int, total: int, result: CellResult) -> str:
        lines = [f"[block {index + 1} of {total}]"] if total > 1 else []
        if result.stdout:
            lines.append(result.stdout.rstrip("\n"))
        if result.stderr:
            lines.append("[stderr]\n" + result.stderr.rstrip("\n"))
        if result.error:
            lines.append("[error]\n" + result.error.rstrip("\n"))
        if result.truncated:
            lines.append(f"[{result.truncated:,} more characters of output were dropped by the sandbox]")
        if not (result.stdout or result.stderr or result.error):
            lines.append("(no output)")
        return "\n".join(lines)

    def _observation(self, parts: list[str], dropped: int = 0) -> str:
        """The cells' outputs for the model: headed by their full length (``dropped``: what the sandbox kept back)."""
        text = "\n".join(parts)
        limit = self.spec.obs_chars
        if len(text) <= limit:
            shown = len(text) if dropped else None
            return f"{prompts.observation_header(len(text) + dropped, shown)}\n{text}"
        head, tail = text[: limit * 3 // 4], text[-(limit // 4):]
        cut = len(text) - len(head) - len(tail)
        return (f"{prompts.observation_header(len(text) + dropped, len(head), len(tail))}\n"
                f"{head}\n[... {cut:,} characters not shown ...]\n{tail}")

    def _emit(self, event_type: type[Event], **fields: Any) -> None:
        self.services.emit(event_type(run_id=self.services.run_id, agent_id=self.agent_id, **fields))


_starter: ThreadPoolExecutor | None = None
_starter_lock = threading.Lock()


def _sandbox_starter() -> ThreadPoolExecutor:
    """Threads that start agents' sandboxes while their first model call is in flight."""
    global _starter
    with _starter_lock:
        if _starter is None:
            _starter = ThreadPoolExecutor(max_workers=32, thread_name_prefix="rlm-sandbox-start")
        return _starter


