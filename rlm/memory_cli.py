"""``rlm memory``: look at and curate swarm memory. Only parses, renders and calls :mod:`rlm.memory`.

::

    rlm memory list    [--namespace NS] [--kind K] [--all] [--json]   (no namespace: the namespaces)
    rlm memory show    ID --namespace NS [--json]                     (the entry and its history)
    rlm memory search  QUERY --namespace NS [-k N] [--kind K] [--tag T] [--json]
    rlm memory add     TEXT|- --namespace NS [--kind memory|doc] [--title T] [--tags a,b]
    rlm memory edit    ID --namespace NS [--text TEXT|-] [--title T] [--tags a,b]
    rlm memory delete  ID --namespace NS [--reason R]
    rlm memory export  [--namespace NS] [--output FILE] [--history] [--include-deleted]
    rlm memory import  FILE|- [--namespace NS]

Export writes JSONL, one entry per line (``Entry.to_dict()``, plus ``versions``
with ``--history``); import reads the same, so memories move between machines
and models. Exit codes: 0 ok, 2 bad input (unknown id, invalid line), 1 other
errors (e.g. the store is locked by a running run).

While a service runs for RLM_HOME it holds the only read-write connection to
``memory.duckdb``, so every sub-command is sent to it (``--no-service`` or
``RLM_NO_SERVICE=1`` opens the file here instead). Either way one function,
:func:`execute`, does the work: the client resolves what only it can read
(``-`` for stdin, the import file) into a :func:`request`, and the side that
holds the store executes it and returns the text to print.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from rlm.config import RLMConfig
from rlm.errors import InputError
from rlm.textutil import sanitize_for_terminal

__all__ = ["register", "request", "execute", "Stores", "FileStores"]


def register(subparsers: Any, add_model_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``rlm memory`` and its sub-commands."""
    memory = subparsers.add_parser("memory", help="list, search and curate swarm memory")
    sub = memory.add_subparsers(dest="memory_command", required=True)

    from rlm.cli import service_option

    def command(name: str, help_: str, namespace_required: bool = True) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_)
        parser.add_argument("--namespace", "-n", required=namespace_required, help="memory namespace")
        service_option(parser)
        parser.set_defaults(func=cmd_memory)
        return parser

    listing = command("list", "entries of a namespace (without --namespace: the namespaces)", False)
    listing.add_argument("--kind", choices=("note", "memory", "doc"))
    listing.add_argument("--all", action="store_true", help="include deleted entries")
    listing.add_argument("--json", action="store_true")
    show = command("show", "one entry and its version history")
    show.add_argument("entry_id")
    show.add_argument("--json", action="store_true")
    search = command("search", "ranked full-text (and semantic) search")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=10)
    search.add_argument("--kind", choices=("note", "memory", "doc"))
    search.add_argument("--tag", action="append", help="only entries with this tag (repeatable)")
    search.add_argument("--json", action="store_true")
    add = command("add", "write a memory or doc by hand")
    add.add_argument("text", help="the text, or - to read it from stdin")
    add.add_argument("--kind", choices=("memory", "doc", "note"), default="memory")
    add.add_argument("--title", default="")
    add.add_argument("--tags", default="", help="comma-separated")
    add.add_argument("--id", dest="entry_id", help="the entry id (default: generated)")
    edit = command("edit", "change an entry (the old version is kept)")
    edit.add_argument("entry_id")
    edit.add_argument("--text", help="new text, or - to read it from stdin")
    edit.add_argument("--title")
    edit.add_argument("--tags", help="comma-separated; replaces the tags")
    edit.add_argument("--reason", default="")
    delete = command("delete", "delete an entry (its history is kept)")
    delete.add_argument("entry_id")
    delete.add_argument("--reason", default="")
    export = command("export", "write JSONL (default: stdout)", False)
    export.add_argument("--output", "-o", help="file to write (default: stdout)")
    export.add_argument("--history", action="store_true", help="include every version of every entry")
    export.add_argument("--include-deleted", action="store_true")
    imp = command("import", "read JSONL written by export", False)
    imp.add_argument("file", help="a JSONL file, or - for stdin")


# -- where the store is --------------------------------------------------------------


class Stores(Protocol):
    """The memory store of one RLM_HOME, as the side executing a request holds it."""

    def open(self, *, write: bool) -> contextlib.AbstractContextManager[Any]:
        """A context giving the store (a :class:`rlm.memory.store.MemoryStore`), or ``None`` when reading
        and nothing was ever written."""
        ...


class FileStores:
    """The store opened from its file for one request (no service holds it)."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def open(self, *, write: bool) -> contextlib.AbstractContextManager[Any]:
        from rlm.memory.store import MemoryStore, memory_path

        path = memory_path(self.home)
        if not write and not path.exists():
            return contextlib.nullcontext(None)
        return MemoryStore(path, read_only=not write)


class Out:
    """What a command prints, kept until the command ends (the service sends it back whole)."""

    def __init__(self) -> None:
        self.stdout, self.stderr = io.StringIO(), io.StringIO()

    def print(self, text: str = "") -> None:
        self.stdout.write(text + "\n")

    def note(self, text: str) -> None:
        self.stderr.write(text + "\n")

    def json(self, data: Any) -> None:
        self.print(json.dumps(data, ensure_ascii=False, default=str))


# -- the command line's side ---------------------------------------------------------


def request(args: argparse.Namespace) -> dict[str, Any]:
    """The ``memory`` request of parsed arguments: the sub-command, its options, and what the client must read
    itself (the text ``-`` stands for, the records of an import file, validated)."""
    params = {key: value for key, value in vars(args).items()
              if key not in ("func", "command", "memory_command", "no_service", "output")}
    if args.memory_command in ("add", "edit") and params.get("text") is not None:
        params["text"] = _text(params["text"])
    if args.memory_command == "import":
        params["records"] = list(_read_jsonl(params.pop("file")))
    return {"op": "memory", "command": args.memory_command, **params}


def cmd_memory(args: argparse.Namespace, env: dict[str, str]) -> int:
    """Any ``rlm memory`` sub-command: executed by the service when one runs for RLM_HOME, else here."""
    from rlm.cli import service_for

    home = RLMConfig.from_env(env).home
    message = request(args)
    client = service_for(args, env, home)
    if client is not None:
        reply = client.call(message)
        stdout, stderr = str(reply.get("stdout") or ""), str(reply.get("stderr") or "")
    else:
        stdout, stderr = execute(message, FileStores(home))
    output = getattr(args, "output", None)
    if output:  # export -o FILE: the client writes the file, wherever the store was read
        try:
            Path(output).write_text(stdout, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write {output}: {exc}") from exc
        stderr += f"exported {stdout.count(chr(10))} entries to {output}\n"
        stdout = ""
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    return 0


def execute(message: dict[str, Any], stores: Stores) -> tuple[str, str]:
    """Run one ``memory`` request against ``stores``; the text for stdout and for stderr.

    Bad input raises :class:`InputError` (the command exits 2), as from the command line.
    """
    handler = HANDLERS.get(str(message.get("command")))
    if handler is None:
        raise InputError(f"unknown memory command {message.get('command')!r} (one of {', '.join(HANDLERS)})")
    out = Out()
    handler(message, stores, out)
    return out.stdout.getvalue(), out.stderr.getvalue()


def _tags(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def _text(value: str) -> str:
    return sys.stdin.read() if value == "-" else value


def _line(entry: Any, width: int = 90) -> str:
    flags = "".join([" [deleted]" if entry.deleted else "", " [quarantined]" if entry.quarantined else ""])
    title = f"{entry.title}: " if entry.title else ""
    text = sanitize_for_terminal(" ".join(f"{title}{entry.text}".split()))
    if len(text) > width:
        text = text[: width - 1] + "…"
    return f"{entry.id}  {entry.kind:<6} v{entry.version}{flags}  {text}"


# -- the commands, wherever the store is -----------------------------------------------


def cmd_list(p: dict[str, Any], stores: Stores, out: Out) -> None:
    with stores.open(write=False) as store:
        if store is None:
            out.note("no memory yet")
            if p["json"]:
                out.json([] if p["namespace"] else {})
            return
        if not p["namespace"]:
            namespaces = store.namespaces()
            if p["json"]:
                out.json(namespaces)
                return
            for name, kinds in namespaces.items():
                plural = {"note": "notes", "memory": "memories", "doc": "docs"}
                counts = ", ".join(f"{n} {plural.get(kind, kind)}" for kind, n in sorted(kinds.items()))
                out.print(f"{name}  {counts}")
            return
        entries = store.list(p["namespace"], kind=p["kind"], include_deleted=p["all"])
    if p["json"]:
        out.json([e.to_dict() for e in entries])
    else:
        for entry in entries:
            out.print(_line(entry))


def cmd_show(p: dict[str, Any], stores: Stores, out: Out) -> None:
    with _require(stores, write=False) as store:
        entry = store.get(p["namespace"], p["entry_id"])
        versions = store.history(p["namespace"], p["entry_id"])
    if p["json"]:
        out.json({**entry.to_dict(), "versions": [v.to_dict() for v in versions]})
        return
    out.print(_line(entry, width=200))
    out.print(f"origin: {entry.provenance.label()}; tags: {', '.join(entry.tags) or '-'}")
    if entry.provenance.evidence:
        out.print(f"evidence: {json.dumps(entry.provenance.evidence, ensure_ascii=False)}")
    out.print(sanitize_for_terminal(entry.text))
    out.print("\nhistory:")
    for v in versions:
        reason = f" ({sanitize_for_terminal(v.reason)})" if v.reason else ""
        text = sanitize_for_terminal(" ".join(v.text.split()))[:100]
        out.print(f"  v{v.version} {v.op:<6} by {v.provenance.label()}{reason}: {text}")


def cmd_search(p: dict[str, Any], stores: Stores, out: Out) -> None:
    with _require(stores, write=False) as store:
        hits = store.search(p["namespace"], p["query"], k=p["k"], kinds=[p["kind"]] if p["kind"] else None,
                            tags=p["tag"])
    if p["json"]:
        out.json([h.to_dict() for h in hits])
    else:
        for hit in hits:
            out.print(f"{hit.score:8.4f}  {_line(hit.entry)}")
        if not hits:
            out.note("no matches")


def cmd_add(p: dict[str, Any], stores: Stores, out: Out) -> None:
    with stores.open(write=True) as store:
        entry = store.add(p["namespace"], p["text"], kind=p["kind"], title=p["title"],
                          tags=_tags(p["tags"]) or (), entry_id=p["entry_id"])
    out.print(entry.id)


def cmd_edit(p: dict[str, Any], stores: Stores, out: Out) -> None:
    if p.get("text") is None and p.get("title") is None and p.get("tags") is None:
        raise InputError("nothing to change: give --text, --title or --tags")
    with _require(stores, write=True) as store:
        entry = store.edit(p["namespace"], p["entry_id"], text=p.get("text"), title=p.get("title"),
                           tags=_tags(p.get("tags")), reason=p["reason"])
    out.print(f"{entry.id} is now version {entry.version}")


def cmd_delete(p: dict[str, Any], stores: Stores, out: Out) -> None:
    with _require(stores, write=True) as store:
        entry = store.delete(p["namespace"], p["entry_id"], reason=p["reason"])
    out.print(f"{entry.id} deleted (version {entry.version}; `rlm memory show` keeps its history)")


def cmd_export(p: dict[str, Any], stores: Stores, out: Out) -> None:
    records: list[dict[str, Any]] = []
    with stores.open(write=False) as store:
        if store is not None:
            names = [p["namespace"]] if p["namespace"] else list(store.namespaces())
            for name in names:
                records += store.export(name, include_deleted=p["include_deleted"], history=p["history"])
    for record in records:
        out.json(record)


def cmd_import(p: dict[str, Any], stores: Stores, out: Out) -> None:
    records = p["records"]
    with stores.open(write=True) as store:
        counts = store.import_records(records, namespace=p["namespace"])
    out.note(f"imported {len(records)} entries: {counts['added']} added, {counts['updated']} updated, "
             f"{counts['unchanged']} unchanged")


HANDLERS: dict[str, Callable[[dict[str, Any], Stores, Out], None]] = {
    "list": cmd_list, "show": cmd_show, "search": cmd_search, "add": cmd_add, "edit": cmd_edit,
    "delete": cmd_delete, "export": cmd_export, "import": cmd_import}


@contextlib.contextmanager
def _require(stores: Stores, *, write: bool) -> Iterator[Any]:
    with stores.open(write=write) as store:
        if store is None:
            raise InputError("no memory yet: nothing was written to memory under this RLM_HOME")
        yield store


def _read_jsonl(name: str) -> Iterator[dict[str, Any]]:
    """Validated records; a bad line raises :class:`InputError` naming it (nothing is imported then)."""
    from rlm.memory.records import KINDS

    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {name}: {exc}") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{name}, line {number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise InputError(f"{name}, line {number}: expected a JSON object")
        missing = [key for key in ("id", "kind", "text") if key not in record]
        if missing:
            raise InputError(f"{name}, line {number}: missing {', '.join(missing)}")
        if record["kind"] not in KINDS:
            raise InputError(f"{name}, line {number}: kind must be one of {', '.join(KINDS)}")
        yield record
