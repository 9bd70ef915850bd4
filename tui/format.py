"""Short, terminal-safe renderings of numbers, statuses and agents for the TUI."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

from rlm.textutil import sanitize_for_terminal

if TYPE_CHECKING:
    from rlm.tui.swarm import AgentView

__all__ = ["agent_label", "fmt_cost", "fmt_seconds", "fmt_tokens", "one_line", "status_text"]

#: Glyph and style per status; limits ("max_llm_calls", "timeout", ...) share one.
_STATUS_STYLES = {
    "running": ("◐", "bold yellow"),
    "ok": ("✔", "bold green"),
    "error": ("✖", "bold red"),
    "cancelled": ("■", "bold magenta"),
    "idle": ("○", "dim"),
}
_LIMIT_STYLE = ("⏱", "bold dark_orange")


def status_text(status: str) -> Text:
    """``✔ ok``, ``◐ running``, ``⏱ max_llm_calls``... styled."""
    glyph, style = _STATUS_STYLES.get(status, _LIMIT_STYLE)
    return Text(f"{glyph} {status}", style=style)


def fmt_tokens(count: int) -> str:
    """``950``, ``12.3k``, ``4.5M``."""
    if count < 1000:
        return str(count)
    if count < 1_000_000:
        return f"{count / 1000:.1f}k"
    return f"{count / 1_000_000:.1f}M"


def fmt_cost(cost: float | None) -> str:
    """``$0.0123``; ``$?`` when a price was unknown."""
    return "$?" if cost is None else f"${cost:.4f}"


def fmt_seconds(seconds: float | None) -> str:
    """``0.4s``, ``12s``, ``3m05s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def one_line(text: str | None, limit: int) -> str:
    """Untrusted text on one line, made inert, clipped to ``limit`` characters."""
    flat = " ".join((text or "").split())
    clean = sanitize_for_terminal(flat, single_line=True)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def agent_label(agent: AgentView) -> Text:
    """One tree row: status, id, depth, model, iterations, tokens, cost, node, prompt."""
    glyph, style = _STATUS_STYLES.get(agent.status, _LIMIT_STYLE)
    label = Text()
    label.append(f"{glyph} ", style=style)
    label.append(agent.agent_id, style="bold")
    label.append(f"  d{agent.depth}  ", style="dim")
    label.append(one_line(agent.model, 28), style="cyan")
    label.append(f"  {agent.n_iterations} it  {fmt_tokens(agent.total_tokens)} tok  {fmt_cost(agent.cost_usd)}")
    if agent.node_id:
        label.append(f"  @{one_line(agent.node_id, 16)}", style="dim")
    if agent.status not in ("running", "ok"):
        label.append(f"  {agent.status}", style=style)
    if agent.depth > 0 and agent.prompt:
        label.append(f"  {one_line(agent.prompt, 40)}", style="italic dim")
    return label
