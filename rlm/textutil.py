"""Small text helpers for showing untrusted (model- or sandbox-produced) text.

Code written by a model and the output of that code can contain anything:
ANSI/OSC escape sequences that recolour, retitle or clear the terminal, a bare
``\\r`` that overwrites the start of a line, or Unicode bidirectional overrides
that make text read differently from how it is stored ("Trojan Source").
:func:`sanitize_for_terminal` makes all of these visible and inert before the
text is printed; :func:`truncate_text` shortens long output with an explicit
marker.
"""

from __future__ import annotations

__all__ = ["sanitize_for_terminal", "truncate_text"]

# Unicode bidirectional formatting characters (embeddings, overrides, isolates,
# marks) and the line/paragraph separators some terminals treat as newlines.
_BIDI_AND_SEPARATORS = (
    "\u061c",  # ARABIC LETTER MARK
    "\u200e",  # LEFT-TO-RIGHT MARK
    "\u200f",  # RIGHT-TO-LEFT MARK
    "\u202a",  # LEFT-TO-RIGHT EMBEDDING
    "\u202b",  # RIGHT-TO-LEFT EMBEDDING
    "\u202c",  # POP DIRECTIONAL FORMATTING
    "\u202d",  # LEFT-TO-RIGHT OVERRIDE
    "\u202e",  # RIGHT-TO-LEFT OVERRIDE
    "\u2066",  # LEFT-TO-RIGHT ISOLATE
    "\u2067",  # RIGHT-TO-LEFT ISOLATE
    "\u2068",  # FIRST STRONG ISOLATE
    "\u2069",  # POP DIRECTIONAL ISOLATE
    "\u2028",  # LINE SEPARATOR
    "\u2029",  # PARAGRAPH SEPARATOR
)


def _escape(codepoint: int) -> str:
    return f"\\x{codepoint:02x}" if codepoint < 0x100 else f"\\u{codepoint:04x}"


def _build_table(keep: str) -> dict[int, str]:
    # C0 controls, DEL and C1 controls (0x9b is a one-byte CSI on some terminals).
    codepoints = [*range(0x20), *range(0x7F, 0xA0), *map(ord, _BIDI_AND_SEPARATORS)]
    table = {cp: _escape(cp) for cp in codepoints if chr(cp) not in keep}
    table[ord("\r")] = "\\r"
    return table


_MULTILINE_TABLE = _build_table(keep="\n\t")
_SINGLE_LINE_TABLE = {**_build_table(keep=""), ord("\n"): "\\n", ord("\t"): "\\t"}


def sanitize_for_terminal(text: str, *, single_line: bool = False) -> str:
    """Return ``text`` with every terminal control character made visible.

    ESC (so every ANSI CSI/OSC sequence), the other C0 and C1 control
    characters, DEL, a ``\\r`` that is not part of ``\\r\\n``, bidirectional
    override/isolate/mark characters and U+2028/U+2029 are replaced by their
    backslash escapes (``\\x1b``, ``\\r``, ``\\u202e``...), so the text prints
    as what it is instead of acting on the terminal. ``\\r\\n`` becomes ``\\n``.
    Newlines and tabs are kept unless ``single_line`` is true, in which case
    they are escaped too (for one-line fields such as headers).
    """
    table = _SINGLE_LINE_TABLE if single_line else _MULTILINE_TABLE
    return text.replace("\r\n", "\n").translate(table)


def truncate_text(text: str, limit: int) -> str:
    """Return at most ``limit`` characters of ``text``, then ``... [N more chars]`` if cut.

    ``limit`` below zero is treated as zero. The marker is not counted in the limit.
    """
    limit = max(limit, 0)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more chars]"
