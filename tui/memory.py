"""The memory pane: browse and search the namespace's notes, memories and docs.

The pane depends only on :class:`MemorySource` (two methods). Swarm memory
(:mod:`rlm.memory.store`, built separately) is adapted by :class:`StoreAdapter`;
:func:`open_memory_source` returns ``None`` (and the app shows no memory pane)
unless that module imports and its database file exists under ``RLM_HOME``.
The store is opened per request and closed at once, so the TUI never holds the
file while a run (in this process or another) writes to it. While a service
runs for RLM_HOME it holds the file, and :class:`ServiceMemory` reads through
it (``rlm memory``'s requests, as JSON). Every call is guarded: a failure is
shown in the pane, never raised.

What the adapter uses of :mod:`rlm.memory.store`::

    memory_path(home) -> Path
    MemoryStore(path, semantic=...)            # a context manager
    store.namespaces() -> {namespace: {kind: count}}
    store.list(namespace, kind=None, limit=N) -> [Entry]
    store.search(namespace, query, k=N) -> [Hit]   # Hit.entry is an Entry
    # Entry: id, kind, text, title, tags, provenance.run_id
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Input, Static

from rlm.config import RLMConfig
from rlm.tui.format import one_line

__all__ = ["MemoryEntry", "MemoryPane", "MemorySource", "StoreAdapter", "ServiceMemory", "open_memory_source"]


@dataclass(frozen=True)
class MemoryEntry:
    """One note, memory or doc, as the pane lists it."""

    entry_id: str
    kind: str
    text: str
    tags: tuple[str, ...] = ()
    run_id: str | None = None


@runtime_checkable
class MemorySource(Protocol):
    """What the pane reads: a namespace's entries, listed or searched."""

    namespace: str

    def entries(self, kind: str | None = None, limit: int = 200) -> list[MemoryEntry]: ...

    def search(self, query: str, limit: int = 50) -> list[MemoryEntry]: ...


def _memory_entry(entry_id: Any, kind: Any, title: Any, text: Any, tags: Any, run_id: Any) -> MemoryEntry:
    """The pane's entry from a stored entry's fields, however they arrived (an object, or its dict)."""
    title, text = str(title or ""), str(text)
    return MemoryEntry(entry_id=str(entry_id), kind=str(kind), text=f"{title}: {text}" if title else text,
                       tags=tuple(str(t) for t in tags or ()), run_id=run_id)


def _entry(item: Any) -> MemoryEntry:
    """A store ``Entry`` (or a search ``Hit`` holding one) as a :class:`MemoryEntry`."""
    entry = getattr(item, "entry", item)
    return _memory_entry(getattr(entry, "id", ""), getattr(entry, "kind", "note"), getattr(entry, "title", ""),
                         getattr(entry, "text", ""), getattr(entry, "tags", ()),
                         getattr(getattr(entry, "provenance", None), "run_id", None))


def _entry_of(data: dict[str, Any]) -> MemoryEntry:
    """An entry as ``Entry.to_dict()`` gives it (what the service sends)."""
    return _memory_entry(data.get("id", ""), data.get("kind", "note"), data.get("title"), data.get("text") or "",
                         data.get("tags"), (data.get("provenance") or {}).get("run_id"))


class StoreAdapter:
    """A :class:`MemorySource` over :mod:`rlm.memory.store` (see the module docstring)."""

    def __init__(self, module: Any, path: Path, namespace: str) -> None:
        self.module = module
        self.path = path
        self.namespace = namespace

    def entries(self, kind: str | None = None, limit: int = 200) -> list[MemoryEntry]:
        with self.module.MemoryStore(self.path, semantic=False) as store:
            return [_entry(item) for item in store.list(self.namespace, kind=kind, limit=limit)]

    def search(self, query: str, limit: int = 50) -> list[MemoryEntry]:
        with self.module.MemoryStore(self.path) as store:
            return [_entry(item) for item in store.search(self.namespace, query, k=min(limit, 100))]


class ServiceMemory:
    """A :class:`MemorySource` read through the running service (``rlm.service.client.ServiceClient``)."""

    def __init__(self, service: Any, namespace: str) -> None:
        self.service = service
        self.namespace = namespace

    def entries(self, kind: str | None = None, limit: int = 200) -> list[MemoryEntry]:
        listed = _ask(self.service, {"command": "list", "namespace": self.namespace, "kind": kind, "all": False})
        return [_entry_of(item) for item in listed[:limit]]

    def search(self, query: str, limit: int = 50) -> list[MemoryEntry]:
        hits = _ask(self.service, {"command": "search", "namespace": self.namespace, "query": query,
                                   "k": min(limit, 100), "kind": None, "tag": None})
        return [_entry_of(hit["entry"]) for hit in hits]


def _ask(service: Any, request: dict[str, Any]) -> Any:
    """What ``rlm memory COMMAND --json`` prints, from the service."""
    stdout = str(service.call({"op": "memory", "json": True, **request}).get("stdout") or "")
    return json.loads(stdout) if stdout.strip() else []


def open_memory_source(config: RLMConfig, service: Any = None) -> MemorySource | None:
    """The configured namespace's memory (else the first one), or ``None`` when there is none; through
    ``service`` (a running service's client) when given."""
    if service is not None:
        try:
            namespace = config.memory_namespace or next(iter(_ask(service, {"command": "list", "namespace": None,
                                                                           "kind": None, "all": False})), None)
        except Exception:  # noqa: BLE001 -- an optional feature must never stop the app
            return None
        return None if namespace is None else ServiceMemory(service, namespace)
    try:
        module = importlib.import_module("rlm.memory.store")
        path = Path(module.memory_path(config.home))
        if not path.exists():
            return None
        namespace = config.memory_namespace
        if namespace is None:
            with module.MemoryStore(path, semantic=False) as store:
                namespace = next(iter(store.namespaces()), None)
    except Exception:  # noqa: BLE001 -- an optional feature must never stop the app
        return None
    return None if namespace is None else StoreAdapter(module, path, namespace)


def render_entries(entries: list[MemoryEntry]) -> Text:
    """One block per entry: kind, id, tags, then the text (clipped, inert)."""
    if not entries:
        return Text("nothing here yet", style="dim")
    out = Text()
    for entry in entries:
        out.append(f"[{entry.kind}] ", style="bold magenta")
        out.append(one_line(entry.entry_id, 24), style="dim")
        if entry.tags:
            out.append("  " + " ".join(f"#{one_line(t, 20)}" for t in entry.tags), style="cyan")
        out.append("\n" + one_line(entry.text, 600) + "\n\n")
    return out


class MemoryPane(Vertical):
    """A search box over the namespace's entries; empty search lists them all."""

    DEFAULT_CSS = """
    MemoryPane { height: 1fr; }
    MemoryPane > #memory-header { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    MemoryPane > VerticalScroll { height: 1fr; padding: 0 1; }
    """

    def __init__(self, source: MemorySource, **kwargs: Any) -> None:  # the widget's own options (id, classes...)
        super().__init__(**kwargs)
        self.source = source
        self.shown: list[MemoryEntry] = []

    def compose(self) -> ComposeResult:
        yield Static(f"namespace {one_line(self.source.namespace, 40)}", id="memory-header")
        yield Input(placeholder="search notes, memories and docs (Enter)", id="memory-search")
        with VerticalScroll():
            yield Static(Text("loading...", style="dim"), id="memory-body")

    def on_mount(self) -> None:
        self.refresh_entries("")

    def on_input_submitted(self, message: Input.Submitted) -> None:
        message.stop()
        self.refresh_entries(message.value.strip())

    @work(thread=True, exclusive=True, group="memory")
    def refresh_entries(self, query: str) -> None:
        """List (empty ``query``) or search the namespace in the background."""
        try:
            entries = self.source.search(query) if query else self.source.entries()
        except Exception as exc:  # noqa: BLE001 -- shown, not raised
            self.app.call_from_thread(self._show_error, f"{type(exc).__name__}: {exc}")
            return
        self.app.call_from_thread(self._show, entries)

    def _show(self, entries: list[MemoryEntry]) -> None:
        self.shown = entries
        self.query_one("#memory-body", Static).update(render_entries(entries))

    def _show_error(self, message: str) -> None:
        self.shown = []
        self.query_one("#memory-body", Static).update(Text(f"memory unavailable: {one_line(message, 300)}",
                                                          style="bold red"))
