"""The TUI's small widgets: recursion tree, agent detail, answer, status bar, question box.

Each widget renders a :class:`~rlm.tui.swarm.SwarmState` (or a part of it) and
owns no run logic; all model-produced text passes through
:func:`~rlm.textutil.sanitize_for_terminal` before it is drawn.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterable

from rich.console import Console, Group, RenderableType
from rich.rule import Rule
from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Input, Markdown, Static, Tree
from textual.widgets.tree import TreeNode

from rlm.textutil import sanitize_for_terminal, truncate_text
from rlm.tui.format import agent_label, fmt_cost, fmt_seconds, fmt_tokens, one_line, status_text
from rlm.tui.history import QuestionHistory
from rlm.tui.swarm import AgentView, CallView, IterationView, SwarmState

__all__ = ["AgentDetail", "AnswerPane", "QuestionInput", "RunStats", "StatusBar", "SwarmTree", "agent_renderable"]

#: Characters of one cell's output shown in the detail pane.
MAX_OUTPUT_CHARS = 3000


# --------------------------------------------------------------------------- tree


class SwarmTree(Tree[str]):
    """The live recursion tree: one node per agent, labels redrawn only when an agent changed."""

    DEFAULT_CSS = """
    SwarmTree { height: 1fr; border: round $primary 50%; border-title-color: $text; }
    SwarmTree:focus { border: round $accent; }
    """

    class AgentSelected(Message):
        """The cursor moved onto an agent."""

        def __init__(self, agent_id: str) -> None:
            super().__init__()
            self.agent_id = agent_id

    def __init__(self, **kwargs: object) -> None:
        super().__init__("no run yet", **kwargs)  # type: ignore[arg-type]  # Textual's own id, classes...
        self.border_title = "swarm"
        self.guide_depth = 3
        self._agent_nodes: dict[str, TreeNode[str]] = {}
        self._versions: dict[str, int] = {}

    def start(self, title: str) -> None:
        """Forget every agent; the root line shows ``title``."""
        self.reset(Text(title, style="bold"))
        self.root.expand()
        self._agent_nodes.clear()
        self._versions.clear()

    def set_title(self, title: Text) -> None:
        self.root.set_label(title)

    def sync(self, state: SwarmState, changed: Iterable[str]) -> None:
        """Add or relabel the agents in ``changed`` (ids in event order)."""
        for agent_id in changed:
            agent = state.agents.get(agent_id)
            if agent is None or self._versions.get(agent_id) == agent.version:
                continue
            self._versions[agent_id] = agent.version
            node = self._agent_nodes.get(agent_id)
            if node is None:
                parent = self._agent_nodes.get(agent.parent_id or "", self.root)
                if parent is not self.root and not parent.allow_expand:
                    parent.allow_expand = True  # its first sub-agent: it becomes a branch
                    parent.expand()
                node = self._agent_nodes[agent_id] = parent.add(agent_label(agent), data=agent_id,
                                                                 allow_expand=False)
                if agent.parent_id is None:  # the root: put the cursor on it (once its line exists)
                    self.call_after_refresh(self.move_cursor, node)
            else:
                node.set_label(agent_label(agent))

    def node_for(self, agent_id: str) -> TreeNode[str] | None:
        return self._agent_nodes.get(agent_id)

    @property
    def agent_count(self) -> int:
        return len(self._agent_nodes)

    def on_tree_node_highlighted(self, message: Tree.NodeHighlighted[str]) -> None:
        message.stop()
        if message.node.data is not None:
            self.post_message(self.AgentSelected(message.node.data))

    def on_tree_node_selected(self, message: Tree.NodeSelected[str]) -> None:
        message.stop()
        if message.node.data is not None:
            self.post_message(self.AgentSelected(message.node.data))


# --------------------------------------------------------------------------- detail


def _iteration_title(iteration: IterationView) -> str:
    label = "final answer" if any(c.purpose == "final" for c in iteration.calls) else f"iteration {iteration.number}"
    if iteration.number is None and not iteration.finished:
        label = "iteration (in progress)"
    took = f"  {fmt_seconds(iteration.duration_s)}" if iteration.duration_s is not None else ""
    return label + took + ("" if iteration.finished else "  (running)")


def _where(call: CallView) -> str:
    """`` via group/deployment on node [reason]`` for a routed call ('' for calls recorded without routing)."""
    if not call.deployment:
        return ""
    node = f" on {one_line(call.node, 30)}" if call.node else ""
    return f" via {one_line(call.group or '?', 20)}/{one_line(call.deployment, 40)}{node} [{one_line(call.reason, 80)}]"


def _turn_lines(iteration: IterationView) -> list[Text]:
    lines = []
    for call in iteration.calls:
        if call.purpose not in ("iteration", "final"):
            continue
        if call.ok and call.cache_hit:
            lines.append(Text(f"model {one_line(call.model, 40)}: answered from the records, no tokens{_where(call)}",
                              style="dim green"))
        elif call.ok:
            lines.append(Text(f"model {one_line(call.model, 40)}: {call.input_tokens:,} in / {call.output_tokens:,} "
                              f"out tokens, {fmt_seconds(call.latency_s)}, {fmt_cost(call.cost_usd)}{_where(call)}",
                              style="dim"))
        else:
            lines.append(Text(f"model call failed: {one_line(call.error, 300)}", style="bold red"))
    return lines


def _route_counts(calls: list[CallView]) -> list[Text]:
    """Sub-calls by where they went and why, with a count each."""
    counts: dict[tuple[str | None, str, str | None, str], int] = {}
    for call in calls:
        if call.deployment:
            key = (call.group, call.deployment, call.node, call.reason)
            counts[key] = counts.get(key, 0) + 1
    return [Text(f"  {n} -> {one_line(group or '?', 20)}/{one_line(deployment, 40)}"
                 f"{' on ' + one_line(node, 30) if node else ''} [{one_line(reason, 80)}]", style="dim cyan")
            for (group, deployment, node, reason), n in counts.items()]


def deployment_lines(agent: AgentView) -> list[Text]:
    """The agent's own calls per deployment: calls, tokens, cost, time."""
    totals: dict[str, list[Any]] = {}
    for iteration in agent.iterations:
        for call in iteration.calls:
            if call.deployment:
                row = totals.setdefault(call.deployment, [0, 0, 0.0, 0.0])
                row[0] += 1
                row[1] += call.input_tokens + call.output_tokens
                row[2] = None if call.cost_usd is None or row[2] is None else row[2] + call.cost_usd
                row[3] += call.latency_s
    return [Text(f"{one_line(name, 40)}: {calls} calls, {fmt_tokens(tokens)} tokens, {fmt_cost(cost)}, "
                 f"{fmt_seconds(seconds)}", style="dim") for name, (calls, tokens, cost, seconds) in totals.items()]


def _cell_renderables(iteration: IterationView) -> list[RenderableType]:
    parts: list[RenderableType] = []
    for cell in iteration.cells:
        marker = "  FINAL" if cell.final else ("  REPL restarted" if cell.restarted else "")
        parts.append(Text(f"cell {cell.index + 1}  {fmt_seconds(cell.duration_s)}{marker}", style="bold"))
        parts.append(Syntax(sanitize_for_terminal(cell.code), "python", theme="monokai", word_wrap=True,
                            background_color="default"))
        for label, value, style in (("output", cell.stdout, ""), ("stderr", cell.stderr, "yellow"),
                                    ("error", cell.error, "red")):
            if value:
                text = sanitize_for_terminal(truncate_text(value.rstrip("\n"), MAX_OUTPUT_CHARS))
                parts.append(Text.assemble((f"{label}: ", "bold " + (style or "green")), (text, style)))
    if not iteration.cells and iteration.reply:
        reply = sanitize_for_terminal(truncate_text(iteration.reply, MAX_OUTPUT_CHARS))
        parts.append(Text.assemble(("reply (no code): ", "bold"), (reply, "italic")))
    return parts


def _subcall_lines(iteration: IterationView, state: SwarmState) -> list[Text]:
    lines = []
    subs = [c for c in iteration.calls if c.purpose not in ("iteration", "final")]
    if subs:
        failed = sum(1 for c in subs if not c.ok)
        hits = sum(1 for c in subs if c.cache_hit)
        tokens = sum(c.input_tokens + c.output_tokens for c in subs)
        kinds = sorted({c.purpose for c in subs})
        recorded = f", {hits} from records" if hits else ""
        lines.append(Text(f"sub-calls: {len(subs)} {'/'.join(kinds)} ({failed} failed{recorded}), "
                          f"{fmt_tokens(tokens)} tokens", style="cyan"))
        lines.extend(_route_counts(subs))
    for child_id in iteration.children:
        child = state.agents.get(child_id)
        if child is not None:
            lines.append(Text.assemble(("sub-agent ", "cyan"), (child_id, "bold cyan"), "  ",
                                       status_text(child.status), f"  {one_line(child.prompt, 60)}"))
    return lines


def agent_renderable(agent: AgentView, state: SwarmState) -> Group:
    """Everything about one agent: header, then per iteration its turn, code, output, sub-calls."""
    header = Text.assemble((agent.agent_id, "bold"), f"  depth {agent.depth}  ", (one_line(agent.model, 40), "cyan"),
                           "  ", status_text(agent.status),
                           f"  {agent.n_iterations} it  {agent.llm_calls} calls"
                           f"{f' ({agent.cache_hits} from records)' if agent.cache_hits else ''}  "
                           f"{fmt_tokens(agent.total_tokens)} tokens  {fmt_cost(agent.cost_usd)}")
    if agent.node_id:
        header.append(f"  node {one_line(agent.node_id, 30)}", style="dim")
    parts: list[RenderableType] = [header]
    if agent.prompt:
        parts.append(Text.assemble(("task: ", "bold"), (one_line(agent.prompt, 400), "italic")))
    for iteration in agent.iterations:
        parts.append(Rule(_iteration_title(iteration), align="left", style="blue"))
        parts.extend(_turn_lines(iteration))
        parts.extend(_cell_renderables(iteration))
        parts.extend(_subcall_lines(iteration, state))
    by_deployment = deployment_lines(agent)
    if by_deployment:
        parts.append(Rule("by deployment", align="left", style="blue"))
        parts.extend(by_deployment)
    if agent.error:
        parts.append(Text(f"error: {sanitize_for_terminal(agent.error)}", style="bold red"))
    if agent.answer is not None and agent.status != "running":
        answer = sanitize_for_terminal(truncate_text(agent.answer, 2000))
        parts.append(Text.assemble(("answer: ", "bold green"), answer))
    return Group(*parts)


def renderable_text(renderable: RenderableType, width: int = 100) -> str:
    """Plain text of a renderable, as it would read on screen (for copying and tests)."""
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


class AgentDetail(VerticalScroll):
    """The selected agent's iterations; follows new output while scrolled to the bottom."""

    DEFAULT_CSS = """
    AgentDetail { height: 2fr; border: round $primary 50%; padding: 0 1; }
    AgentDetail:focus { border: round $accent; }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]  # Textual's own options: id, classes...
        self.border_title = "agent"
        self.agent_id: str | None = None
        self._shown_version: tuple[str, int] | None = None
        self._renderable: RenderableType = Text("Select an agent in the tree to see its iterations.", style="dim")

    def compose(self) -> ComposeResult:
        yield Static(self._renderable, id="detail-body")

    def show(self, agent: AgentView | None, state: SwarmState, force: bool = False) -> None:
        """Draw ``agent`` unless it is already drawn at its current version."""
        key = None if agent is None else (agent.agent_id, agent.version)
        if key == self._shown_version and not force:
            return
        following = self.scroll_y >= self.max_scroll_y - 1
        same_agent = agent is not None and agent.agent_id == self.agent_id
        self._shown_version = key
        self.agent_id = None if agent is None else agent.agent_id
        self.border_title = "agent" if agent is None else f"agent {agent.agent_id}"
        self._renderable = (Text("Select an agent in the tree to see its iterations.", style="dim")
                            if agent is None else agent_renderable(agent, state))
        self.query_one("#detail-body", Static).update(self._renderable)
        if not same_agent:
            self.scroll_home(animate=False)
        elif following:
            self.call_after_refresh(self.scroll_end, animate=False)

    def text(self) -> str:
        """What the pane shows, as plain text."""
        return renderable_text(self._renderable)


# --------------------------------------------------------------------------- answer


class AnswerPane(VerticalScroll):
    """The final answer, rendered as Markdown (links are shown, never opened)."""

    DEFAULT_CSS = """
    AnswerPane { height: 1fr; border: round $success 50%; padding: 0 1; }
    AnswerPane:focus { border: round $accent; }
    AnswerPane > Markdown { margin: 0; padding: 0; }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]  # Textual's own options: id, classes...
        self.border_title = "answer"
        self.source = ""

    def compose(self) -> ComposeResult:
        yield Markdown("*Ask a question below; the answer appears here.*", open_links=False)

    def show(self, markdown: str, title: str = "answer") -> None:
        """Replace the content with ``markdown`` (already sanitised by the caller)."""
        self.source = markdown
        self.border_title = title
        self.query_one(Markdown).update(markdown)
        self.scroll_home(animate=False)

    def on_markdown_link_clicked(self, message: Markdown.LinkClicked) -> None:
        message.stop()
        self.notify(f"link: {one_line(message.href, 200)}", title="not opened")


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class RunStats:
    """What the status bar shows. ``budget_left`` is already formatted."""

    status: str = "idle"
    elapsed_s: float | None = None
    llm_calls: int = 0
    tokens: int = 0
    cost_usd: float | None = 0.0
    budget_left: str = ""
    run_id: str | None = None
    #: Calls answered from records (the sub-call cache, a replay) among ``llm_calls``.
    cache_hits: int = 0
    #: The conversation's turn (from 1) when the run is a session's turn.
    turn: int | None = None


class StatusBar(Static):
    """One line: status, elapsed time, LM calls, tokens, cost, budget left, run id."""

    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; padding: 0 1; }
    """

    stats: reactive[RunStats] = reactive(RunStats, layout=False)

    def render(self) -> Text:
        s = self.stats
        line = Text.assemble(status_text(s.status), "  ")
        if s.turn is not None:
            line.append(f"turn {s.turn}  ", style="bold")
        hits = f" ({s.cache_hits} from records)" if s.cache_hits else ""
        line.append(f"{fmt_seconds(s.elapsed_s)}  {s.llm_calls} LM calls{hits}  {fmt_tokens(s.tokens)} tokens  "
                    f"{fmt_cost(s.cost_usd)}")
        if s.budget_left:
            line.append(f"  left: {s.budget_left}", style="dim")
        if s.run_id:
            line.append(f"  run {s.run_id}", style="dim")
        return line


# --------------------------------------------------------------------------- question


class QuestionInput(Input):
    """The question box: Enter asks, up/down walk the history."""

    BINDINGS = [
        Binding("up", "history_previous", "Previous question", show=False),
        Binding("down", "history_next", "Next question", show=False),
    ]

    def __init__(self, history: QuestionHistory, **kwargs: object) -> None:
        super().__init__(placeholder="Ask a question about the document and press Enter",
                         **kwargs)  # type: ignore[arg-type]  # Textual's own options: id, classes...
        self.history = history

    def action_history_previous(self) -> None:
        self.value = self.history.previous(self.value)
        self.cursor_position = len(self.value)

    def action_history_next(self) -> None:
        self.value = self.history.next()
        self.cursor_position = len(self.value)
