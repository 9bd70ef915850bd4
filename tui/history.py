"""Question history for the TUI's input box (up/down), kept across sessions.

The file (``$RLM_HOME/tui-history.jsonl``) holds one JSON string per line,
oldest first, at most :data:`MAX_ENTRIES`; a missing or unreadable file is an
empty history, never an error.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["QuestionHistory"]

MAX_ENTRIES = 200


class QuestionHistory:
    """Past questions and a browsing cursor, like a shell's history."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.entries: list[str] = self._read() if path is not None else []
        self._cursor = len(self.entries)
        self._draft = ""

    def _read(self) -> list[str]:
        assert self.path is not None
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        entries = []
        for line in lines:
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, str) and value.strip():
                entries.append(value)
        return entries[-MAX_ENTRIES:]

    def add(self, question: str) -> None:
        """Record ``question`` (a repeat of the last one is not added twice) and reset the cursor."""
        question = question.strip()
        if question and (not self.entries or self.entries[-1] != question):
            self.entries.append(question)
            del self.entries[:-MAX_ENTRIES]
            self._save()
        self._cursor = len(self.entries)
        self._draft = ""

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("".join(json.dumps(q) + "\n" for q in self.entries), encoding="utf-8")
        except OSError:
            pass  # history is a convenience: never fail a run over it

    def previous(self, current: str) -> str:
        """The entry before the cursor (the text being typed is kept as a draft)."""
        if self._cursor == len(self.entries):
            self._draft = current
        if self._cursor > 0:
            self._cursor -= 1
        return self.entries[self._cursor] if self.entries else current

    def next(self) -> str:
        """The entry after the cursor; past the newest, the draft."""
        if self._cursor < len(self.entries):
            self._cursor += 1
        return self.entries[self._cursor] if self._cursor < len(self.entries) else self._draft
