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
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rlm.config import RLMConfig
from rlm.errors import InputError
from rlm.textutil import sanitize_for_terminal


def register(subparsers: Any, add_model_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``rlm memory`` and its sub-commands."""
    memory = subparsers.add_parser("memory", help="list, search and curate swarm memory")
    sub = memory.add_subparsers(dest="memory_command", required=True)

    def command(name: str, handler: Callable[[argparse.Namespace, dict[str, str]], int], help_: str,
                namespace_required: bool = True) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_)
        parser.add_argument("--namespace", "-n", required=namespace_required, help="memory namespace")
        parser.set_defaults(func=handler)
        return parser

    listing = command("list", cmd_list, "entries of a namespace (without --namespace: the namespaces)", False)
    listing.add_argument("--kind", choices=("note", "memory", "doc"))
    listing.add_argument("--all", action="store_true", help="include deleted entries")
    listing.add_argument("--json", action="store_true")
    show = command("show", cmd_show, "one entry and its version history")
    show.add_argument("entry_id")
    show.add_argument("--json", action="store_true")
    search = command("search", cmd_search, "ranked full-text (and semantic) search")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=10)
    search.add_argument("--kind", choices=("note", "memory", "doc"))
    search.add_argument("--tag", action="append", help="only entries with this tag (repeatable)")
    search.add_argument("--json", action="store_true")
    add = command("add", cmd_add, "write a memory or doc by hand")
    add.add_argument("text", help="the text, or - to read it from stdin")
    add.add_argument("--kind", choices=("memory", "doc", "note"), default="memory")
    add.add_argument("--title", default="")
    add.add_argument("--tags", default="", help="comma-separated")
    add.add_argument("--id", dest="entry_id", help="the entry id (default: generated)")
    edit = command("edit", cmd_edit, "change an entry (the old version is kept)")
    edit.add_argument("entry_id")
    edit.add_argument("--text", help="new text, or - to read it from stdin")
    edit.add_argument("--title")
    edit.add_argument("--tags", help="comma-separated; replaces the tags")
    edit.add_argument("--reason", default="")
    delete = command("delete", cmd_delete, "delete an entry (its history is kept)")
    delete.add_argument("entry_id")
    delete.add_argument("--reason", default="")
    export = command("export", cmd_export, "write JSONL (default: stdout)", False)
    export.add_argument("--output", "-o", help="file to write (default: stdout)")
    export.add_argument("--history", action="store_true", help="include every version of every entry")
    export.add_argument("--include-deleted", action="store_true")
    imp = command("import", cmd_import, "read JSONL written by export", False)
    imp.add_argument("file", help="a JSONL file, or - for stdin")


# -- plumbing ------------------------------------------------------------------------


def _open(env: dict[str, str], *, write: bool) -> Any:
    from rlm.memory.store import MemoryStore, memory_path

    path = memory_path(RLMConfig.from_env(env).home)
    if not write and not path.exists():
        return None
    return MemoryStore(path, read_only=not write)


def _tags(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def _text(value: str) -> str:
    return sys.stdin.read() if value == "-" else value


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, default=str))


def _line(entry: Any, width: int = 90) -> str:
    flags = "".join([" [deleted]" if entry.deleted else "", " [quarantined]" if entry.quarantined else ""])
    title = f"{entry.title}: " if entry.title else ""
    text = sanitize_for_terminal(" ".join(f"{title}{entry.text}".split()))
    if len(text) > width:
        text = text[: width - 1] + "…"
    return f"{entry.id}  {entry.kind:<6} v{entry.version}{flags}  {text}"


# -- commands ----------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace, env: dict[str, str]) -> int:
    store = _open(env, write=False)
    if store is None:
        print("no memory yet", file=sys.stderr)
        if args.json:
            _print_json([] if args.namespace else {})
        return 0
    with store:
        if not args.namespace:
            namespaces = store.namespaces()
            if args.json:
                _print_json(namespaces)
            for name, kinds in namespaces.items():
                plural = {"note": "notes", "memory": "memories", "doc": "docs"}
                counts = ", ".join(f"{n} {plural.get(kind, kind)}" for kind, n in sorted(kinds.items()))
                print(f"{name}  {counts}")
            return 0
        entries = store.list(args.namespace, kind=args.kind, include_deleted=args.all)
    if args.json:
        _print_json([e.to_dict() for e in entries])
    else:
        for entry in entries:
            print(_line(entry))
    return 0


def cmd_show(args: argparse.Namespace, env: dict[str, str]) -> int:
    store = _require(env, write=False)
    with store:
        entry = store.get(args.namespace, args.entry_id)
        versions = store.history(args.namespace, args.entry_id)
    if args.json:
        _print_json({**entry.to_dict(), "versions": [v.to_dict() for v in versions]})
        return 0
    print(_line(entry, width=200))
    print(f"origin: {entry.provenance.label()}; tags: {', '.join(entry.tags) or '-'}")
    if entry.provenance.evidence:
        print(f"evidence: {json.dumps(entry.provenance.evidence, ensure_ascii=False)}")
    print(sanitize_for_terminal(entry.text))
    print("\nhistory:")
    for v in versions:
        reason = f" ({sanitize_for_terminal(v.reason)})" if v.reason else ""
        text = sanitize_for_terminal(" ".join(v.text.split()))[:100]
        print(f"  v{v.version} {v.op:<6} by {v.provenance.label()}{reason}: {text}")
    return 0


def cmd_search(args: argparse.Namespace, env: dict[str, str]) -> int:
    store = _require(env, write=False)
    with store:
        hits = store.search(args.namespace, args.query, k=args.k, kinds=[args.kind] if args.kind else None,
                            tags=args.tag)
    if args.json:
        _print_json([h.to_dict() for h in hits])
    else:
        for hit in hits:
            print(f"{hit.score:8.4f}  {_line(hit.entry)}")
        if not hits:
            print("no matches", file=sys.stderr)
    return 0


def cmd_add(args: argparse.Namespace, env: dict[str, str]) -> int:
    with _open(env, write=True) as store:
        entry = store.add(args.namespace, _text(args.text), kind=args.kind, title=args.title,
                          tags=_tags(args.tags) or (), entry_id=args.entry_id)
    print(entry.id)
    return 0


def cmd_edit(args: argparse.Namespace, env: dict[str, str]) -> int:
    if args.text is None and args.title is None and args.tags is None:
        raise InputError("nothing to change: give --text, --title or --tags")
    with _require(env, write=True) as store:
        entry = store.edit(args.namespace, args.entry_id, text=None if args.text is None else _text(args.text),
                           title=args.title, tags=_tags(args.tags), reason=args.reason)
    print(f"{entry.id} is now version {entry.version}")
    return 0


def cmd_delete(args: argparse.Namespace, env: dict[str, str]) -> int:
    with _require(env, write=True) as store:
        entry = store.delete(args.namespace, args.entry_id, reason=args.reason)
    print(f"{entry.id} deleted (version {entry.version}; `rlm memory show` keeps its history)")
    return 0


def cmd_export(args: argparse.Namespace, env: dict[str, str]) -> int:
    store = _open(env, write=False)
    records: list[dict[str, Any]] = []
    if store is not None:
        with store:
            names = [args.namespace] if args.namespace else list(store.namespaces())
            for name in names:
                records += store.export(name, include_deleted=args.include_deleted, history=args.history)
    lines = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
    if args.output:
        Path(args.output).write_text(lines, encoding="utf-8")
        print(f"exported {len(records)} entries to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(lines)
    return 0


def cmd_import(args: argparse.Namespace, env: dict[str, str]) -> int:
    records = list(_read_jsonl(args.file))
    with _open(env, write=True) as store:
        counts = store.import_records(records, namespace=args.namespace)
    print(f"imported {len(records)} entries: {counts['added']} added, {counts['updated']} updated, "
          f"{counts['unchanged']} unchanged", file=sys.stderr)
    return 0


def _require(env: dict[str, str], *, write: bool) -> Any:
    store = _open(env, write=write)
    if store is None:
        raise InputError("no memory yet: nothing was written to memory under this RLM_HOME")
    return store


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
