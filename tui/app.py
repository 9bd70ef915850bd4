"""The rlm TUI: a document, a question, and the recursion tree answering it, live.

Layout: the document (and, when swarm memory is installed, a memory tab) and
the answer on the left; the recursion tree and the selected agent's iterations
on the right; the question box, a status bar and the key footer at the bottom.

Threading: :func:`rlm.runner.run` runs in a thread worker. Its
:class:`~rlm.events.EventBus` subscriber only puts events on a queue; a 10 Hz
timer on the UI thread drains the queue, folds the batch into a
:class:`~rlm.tui.swarm.SwarmState` and redraws only the agents that changed,
so a tree of hundreds of agents emitting thousands of events stays responsive.
Cancelling calls ``budget.stop("cancelled")``: every agent stops at its next
step (after the LM call or cell in progress) and the run is logged as
``cancelled``.

Questions about one document are a conversation (:mod:`rlm.sessions`): each is
a turn whose root continues the last one's REPL and history (``answers[k]``,
``history[k]``), kept alive in this process or, with a service, in the service.
Opening another document, or ``ctrl+n``, starts a new conversation.
"""

from __future__ import annotations

import queue
import time
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import Footer, Header, Input, TabbedContent, TabPane

from rlm.budget import Budget
from rlm.config import RLMConfig
from rlm.errors import RLMError
from rlm.events import Event, EventBus
from rlm.textutil import sanitize_for_terminal
from rlm.tui.document import DocumentPane
from rlm.tui.format import fmt_tokens, one_line, status_text
from rlm.tui.history import QuestionHistory
from rlm.tui.memory import MemoryPane, MemorySource, open_memory_source
from rlm.tui.screens import OpenScreen, RunsScreen, SettingsScreen
from rlm.tui.swarm import SwarmState
from rlm.tui.widgets import AgentDetail, AnswerPane, QuestionInput, RunStats, StatusBar, SwarmTree

__all__ = ["RLMApp", "answer_markdown", "budget_left"]

#: Seconds between two redraws of a live run.
DRAIN_INTERVAL = 0.1
_AUTO: Any = object()
_MAIN_SCREEN_ACTIONS = frozenset(
    {"open_document", "search", "next_match", "previous_match", "runs", "settings", "toggle_memory",
     "new_conversation"})


def answer_markdown(status: str, answer: str | None, error: str | None) -> str:
    """The answer pane's Markdown: the answer, preceded by how the run ended if not ``ok``."""
    parts = []
    if status != "ok":
        parts.append(f"**The run ended: {status}**")
    if error:
        fenced = sanitize_for_terminal(error).replace("```", "'''")
        parts.append(f"Error:\n\n```text\n{fenced}\n```")
    if answer:
        parts.append(("Best partial answer:\n\n" if status != "ok" else "") + sanitize_for_terminal(answer))
    elif not error:
        parts.append("*(no answer)*")
    return "\n\n".join(parts)


def budget_left(budget: Budget) -> str:
    """What remains of each limit, e.g. ``194 calls, 12.0k tokens, 41s``."""
    usage = budget.usage()
    parts = [f"{max(budget.max_llm_calls - usage.llm_calls, 0)} calls"]
    if budget.max_tokens is not None:
        parts.append(f"{fmt_tokens(max(budget.max_tokens - usage.total_tokens, 0))} tokens")
    if budget.max_cost_usd is not None and usage.cost_usd is not None:
        parts.append(f"${max(budget.max_cost_usd - usage.cost_usd, 0.0):.4f}")
    remaining = budget.remaining_time()
    if remaining is not None:
        parts.append(f"{remaining:.0f}s")
    return ", ".join(parts)


class RLMApp(App[None]):
    """``rlm tui``: ask questions about a document and watch the recursion tree work."""

    TITLE = "rlm"
    CSS = """
    #main { height: 1fr; }
    #left, #right { width: 1fr; }
    #left-tabs { height: 2fr; }
    #left-tabs > ContentSwitcher { height: 1fr; }
    #left-tabs TabPane { height: 1fr; padding: 0; }
    QuestionInput { height: 3; }
    """
    BINDINGS = [
        Binding("ctrl+o", "open_document", "Open"),
        Binding("ctrl+f", "search", "Search"),
        Binding("f3", "next_match", "Next match", show=False),
        Binding("shift+f3", "previous_match", "Previous match", show=False),
        Binding("ctrl+x", "cancel_run", "Cancel run", priority=True),
        Binding("ctrl+n", "new_conversation", "New conversation"),
        Binding("ctrl+r", "runs", "Runs"),
        Binding("f2", "settings", "Settings"),
        Binding("ctrl+t", "toggle_memory", "Memory", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, config: RLMConfig | None = None, path: str | Path | None = None, *,
                 memory: MemorySource | None = _AUTO, history: QuestionHistory | None = None,
                 service: Any = None) -> None:
        super().__init__()
        self.config = config or RLMConfig()
        #: The running service's client (``rlm.service.client.ServiceClient``): runs and the run log go
        #: through it; ``None``: runs in this process, the run log opened here.
        self.service = service
        self.start_path = Path(path) if path is not None else None
        self.memory = open_memory_source(self.config, service) if memory is _AUTO else memory
        self.history = history or QuestionHistory(self.config.home / "tui-history.jsonl")
        self.doc_path: Path | None = None
        self.state = SwarmState()
        self.running = False
        self.last_result: Any = None
        self.last_error: str | None = None
        self._inbox: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._budget: Budget | None = None
        self._cancel_requested = False
        self._started = 0.0
        self._selected: str | None = None
        self.notices: list[str] = []  # every notification shown, oldest first
        #: The conversation the next question continues: its session's name, the session when it lives in
        #: this process (``rlm.sessions.Session``), and the turns it had.
        self.conversation: str | None = None
        self._session: Any = None
        self.turns = 0

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The main screen's actions do nothing while a dialog (runs, settings, open) is on top."""
        if action in _MAIN_SCREEN_ACTIONS and len(self.screen_stack) > 1:
            return False
        return True

    def notify(self, message: str, *args: Any, **kwargs: Any) -> None:
        self.notices.append(message)
        super().notify(message, *args, **kwargs)

    # -- layout ---------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            with Vertical(id="left"):
                with TabbedContent(id="left-tabs"):
                    with TabPane("document", id="tab-document"):
                        yield DocumentPane(id="document")
                    if self.memory is not None:
                        with TabPane("memory", id="tab-memory"):
                            yield MemoryPane(self.memory, id="memory")
                yield AnswerPane(id="answer")
            with Vertical(id="right"):
                yield SwarmTree(id="tree")
                yield AgentDetail(id="detail")
        yield QuestionInput(self.history, id="question")
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self._timer = self.set_interval(DRAIN_INTERVAL, self._drain, pause=True)
        self.query_one(SwarmTree).root.set_label(Text("no run yet: ask a question below", style="dim"))
        if self.start_path is not None:
            self.open_document(self.start_path)
        self.query_one(QuestionInput).focus()

    # -- the document ---------------------------------------------------------

    def open_document(self, path: Path) -> None:
        """Show ``path`` (a file or a directory) and make it the context of the next question (a new conversation)."""
        self._end_conversation()
        self.doc_path = path
        self.sub_title = one_line(str(path), 80)
        self.query_one(DocumentPane).open(path)

    def on_document_pane_opened(self, message: DocumentPane.Opened) -> None:
        if message.error is not None:
            self.doc_path = None
            self.notify(message.error, title="cannot open", severity="error")

    def action_open_document(self) -> None:
        start = self.doc_path.parent if self.doc_path is not None and self.doc_path.parent.is_dir() else Path.cwd()
        self.push_screen(OpenScreen(start), self._opened)

    def _opened(self, path: Path | None) -> None:
        if path is not None:
            self.open_document(path)
            self.query_one(QuestionInput).focus()

    def action_search(self) -> None:
        self.query_one(TabbedContent).active = "tab-document"
        self.query_one(DocumentPane).start_search()

    def action_next_match(self) -> None:
        pane = self.query_one(DocumentPane)
        pane.find(pane.query_one("#doc-search", Input).value)

    def action_previous_match(self) -> None:
        pane = self.query_one(DocumentPane)
        pane.find(pane.query_one("#doc-search", Input).value, backwards=True)

    def action_toggle_memory(self) -> None:
        tabs = self.query_one(TabbedContent)
        if self.memory is not None:
            tabs.active = "tab-memory" if tabs.active == "tab-document" else "tab-document"

    # -- asking ---------------------------------------------------------------

    def on_input_submitted(self, message: Input.Submitted) -> None:
        if isinstance(message.input, QuestionInput):
            message.stop()
            self.ask(message.value)

    def ask(self, question: str) -> bool:
        """Start a run on the open document; False (and a notice) if it cannot start."""
        question = question.strip()
        if not question:
            return False
        if self.running:
            self.notify("A run is in progress: wait, or cancel it with ctrl+x.", severity="warning")
            return False
        if self.doc_path is None:
            self.notify("Open a document first (ctrl+o).", severity="error")
            return False
        self.history.add(question)
        self.query_one(QuestionInput).value = ""
        self._begin(question)
        return True

    def _begin(self, question: str) -> None:
        self.state = SwarmState()
        self.running, self.last_result, self.last_error = True, None, None
        self._budget, self._cancel_requested, self._selected = None, False, None
        self._inbox = queue.SimpleQueue()
        self._started = time.monotonic()
        self.query_one(SwarmTree).start(f"run (starting)  {one_line(question, 60)}")
        self.query_one(AgentDetail).show(None, self.state, force=True)
        self.query_one(AnswerPane).show("*Working...*", title="answer")
        self.query_one(StatusBar).stats = RunStats(status="running", elapsed_s=0.0)
        self._timer.resume()
        self._run_worker(question, self.doc_path, self.config)

    @work(thread=True, exclusive=True, group="run", exit_on_error=False)
    def _run_worker(self, question: str, path: Path, config: RLMConfig) -> None:
        bus = EventBus()
        bus.subscribe(self._inbox.put)
        try:
            result = self._ask_turn(question, path, config, bus)
        except RLMError as exc:
            self.call_from_thread(self._run_failed, str(exc))
        except Exception as exc:  # noqa: BLE001 -- the UI must survive anything a run throws
            self.call_from_thread(self._run_failed, f"unexpected {type(exc).__name__}: {exc}")
        else:
            self.call_from_thread(self._run_done, result)

    def _ask_turn(self, question: str, path: Path, config: RLMConfig, bus: EventBus) -> Any:
        """The question as the conversation's next turn (in the service, or in this process's session)."""
        if self.conversation is None:
            from rlm.sessions import new_session_name

            self.conversation = new_session_name().replace("chat-", "tui-", 1)
        if self.service is not None:
            from rlm.service.ask import remote_run

            return remote_run(self.service, question, path, config, bus=bus, on_start=self._on_run_start,
                              session=self.conversation)
        if self._session is None:
            from rlm.sessions import Session

            self._session = Session(self.conversation, path, config)
        return self._session.ask(question, config=config, bus=bus, on_start=self._on_run_start)

    def _end_conversation(self) -> None:
        """The next question starts a new conversation; a session of this process stops its REPL."""
        session, self._session = self._session, None
        self.conversation, self.turns = None, 0
        if session is not None:
            session.close()

    def action_new_conversation(self) -> None:
        if self.running:
            self.notify("A run is in progress: a new conversation starts when it ends.", severity="warning")
            return
        self._end_conversation()
        self.notify("The next question starts a new conversation.")

    def _on_run_start(self, run_id: str, budget: Any) -> None:
        """Called in the run's thread once it has an id and a budget."""
        self._budget = budget
        if self._cancel_requested:  # cancel pressed before the budget existed
            budget.stop("cancelled")

    # -- live updates ---------------------------------------------------------

    def _drain(self) -> None:
        """Fold every queued event in, then redraw what changed (once per batch)."""
        changed: dict[str, None] = {}
        while True:
            try:
                event = self._inbox.get_nowait()
            except queue.Empty:
                break
            agent_id = self.state.apply(event)
            if agent_id is not None:
                changed[agent_id] = None
        tree = self.query_one(SwarmTree)
        if changed:
            tree.sync(self.state, changed)
            if self.state.run_id:
                tree.set_title(self._run_title())
        self._show_selected()
        if self.running:
            self._live_stats()

    def _run_title(self) -> Text:
        title = Text.assemble(("run ", "bold"), (self.state.run_id or "", "bold"), "  ")
        title.append_text(status_text(self.state.status))
        title.append(f"  {len(self.state.agents)} agents  {one_line(self.state.question, 50)}", style="dim")
        return title

    def _show_selected(self) -> None:
        agent_id = self._selected or self.state.root_id
        agent = self.state.agents.get(agent_id) if agent_id else None
        try:
            detail = self.query_one(AgentDetail)
        except NoMatches:  # a selection still queued while the app closes: nothing left to show it in
            return
        detail.show(agent, self.state)

    def _live_stats(self) -> None:
        budget = self._budget
        usage = budget.usage() if budget is not None else None
        status = "cancelling" if self._cancel_requested else "running"
        self.query_one(StatusBar).stats = RunStats(
            status=status, elapsed_s=time.monotonic() - self._started,
            llm_calls=usage.llm_calls if usage else 0, tokens=usage.total_tokens if usage else 0,
            cost_usd=usage.cost_usd if usage else 0.0, budget_left=budget_left(budget) if budget else "",
            run_id=self.state.run_id, cache_hits=self._live_hits(), turn=self.turns + 1)

    def _live_hits(self) -> int:
        return sum(agent.cache_hits for agent in self.state.agents.values())

    def on_swarm_tree_agent_selected(self, message: SwarmTree.AgentSelected) -> None:
        self._selected = message.agent_id
        self._show_selected()

    # -- the end of a run -----------------------------------------------------

    def _finish(self) -> None:
        self._drain()
        self._timer.pause()
        self.running = False

    def _run_done(self, result: Any) -> None:
        self._finish()
        self.turns += 1
        self.last_result = result
        self.state.status = result.status
        self.query_one(SwarmTree).set_title(self._run_title())
        self.query_one(AnswerPane).show(answer_markdown(result.status, result.answer, result.error),
                                        title=f"answer: {result.status}")
        usage = result.usage
        self.query_one(StatusBar).stats = RunStats(status=result.status, elapsed_s=result.duration_s,
                                                   llm_calls=usage.llm_calls, tokens=usage.total_tokens,
                                                   cost_usd=usage.cost_usd, run_id=result.run_id,
                                                   cache_hits=usage.cache_hits, turn=self.turns)
        if result.status != "ok":
            detail = f": {one_line(result.error, 200)}" if result.error else ""
            self.notify(f"The run ended: {result.status}{detail}", severity="error" if result.error else "warning")

    def _run_failed(self, message: str) -> None:
        self._finish()
        self.last_error = message
        self.query_one(SwarmTree).set_title(Text.assemble(status_text("error"), "  the run could not start"))
        self.query_one(AnswerPane).show(answer_markdown("error", None, message), title="answer: error")
        self.query_one(StatusBar).stats = RunStats(status="error", elapsed_s=time.monotonic() - self._started)
        self.notify(one_line(message, 300), title="run failed", severity="error")

    def action_cancel_run(self) -> None:
        """Stop the run in progress: every agent ends at its next step; logged as cancelled."""
        if not self.running:
            self.notify("No run in progress.")
            return
        self._request_cancel()
        self._live_stats()
        self.notify("Cancelling: the run stops after the step in progress.")

    def _request_cancel(self) -> None:
        """Every agent stops at its next step (before the run has a budget: as soon as it does)."""
        self._cancel_requested = True
        budget = self._budget  # set from the run's thread
        if budget is not None:
            budget.stop("cancelled")

    def on_unmount(self) -> None:
        """However the app closes, a run still going is told to stop: its thread would otherwise
        keep the closing process alive until the run ended on its own. The conversation's REPL stops
        (its turns stay in the run log and the session file)."""
        if self.running:
            self._request_cancel()
        else:
            self._end_conversation()

    async def action_quit(self) -> None:
        if self.running:  # let the run wind down instead of leaving a thread working
            self.action_cancel_run()
        self.exit()

    # -- past runs and settings -------------------------------------------------

    def action_runs(self) -> None:
        if self.running:
            self.notify("A run is in progress: past runs open when it ends.", severity="warning")
            return
        self.push_screen(RunsScreen(self.config), self._open_run)

    def _open_run(self, run_id: str | None) -> None:
        if run_id is not None:
            self._load_run(run_id)

    @work(thread=True, exclusive=True, group="past-run", exit_on_error=False)
    def _load_run(self, run_id: str) -> None:
        from rlm.events import event_from_dict
        from rlm.runlog import RunLog

        try:
            if self.service is not None:
                reply = self.service.call({"op": "events", "run_id": run_id})
                events = [event_from_dict(e) for e in reply["events"]]
            else:
                with RunLog(self.config.runlog_path) as log:
                    events = log.events(run_id)
        except RLMError as exc:
            self.call_from_thread(self.notify, str(exc), title="cannot open run", severity="error")
            return
        self.call_from_thread(self.show_events, events)

    def show_events(self, events: list[Event]) -> None:
        """Show a finished run from its events (a past run from the log)."""
        state = SwarmState.from_events(events)
        self.state, self._selected = state, None
        tree = self.query_one(SwarmTree)
        tree.start("")
        tree.sync(state, list(state.agents))
        tree.set_title(self._run_title())
        self.query_one(AgentDetail).show(None, state, force=True)
        self._show_selected()
        totals = state.totals
        self.query_one(AnswerPane).show(answer_markdown(state.status, state.answer, state.error),
                                        title=f"answer: {state.status}  (past run)")
        self.query_one(StatusBar).stats = RunStats(
            status=state.status, elapsed_s=totals.duration_s if totals else None,
            llm_calls=totals.llm_calls if totals else 0,
            tokens=(totals.input_tokens + totals.output_tokens) if totals else 0,
            cost_usd=totals.cost_usd if totals else None, run_id=state.run_id)
        self.query_one(SwarmTree).focus()

    def action_settings(self) -> None:
        self.push_screen(SettingsScreen(self.config), self._settings_saved)

    def _settings_saved(self, config: RLMConfig | None) -> None:
        if config is not None:
            self.config = config
            self.notify(f"Next runs use {one_line(config.model, 60)}, max depth {config.max_depth}, "
                        f"{config.max_llm_calls} LM calls.", title="settings saved")
