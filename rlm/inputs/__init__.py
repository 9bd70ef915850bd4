"""Turn what the user passes to ``rlm ask PATH`` into a context payload.

The user's input never goes into a prompt: it becomes the variable ``context``
inside the sandboxed REPL worker. This package turns a path (a file, a
directory, or ``-`` for stdin), a string or a list of documents into a
:class:`ContextPayload`: one file on disk plus the facts the prompt needs
(:meth:`ContextPayload.describe`) and the run log records
(:meth:`ContextPayload.info`).

Payload file formats (the contract with the sandbox worker)
-----------------------------------------------------------
The worker memory-maps ``payload.path`` read-only and builds ``context`` from
it according to ``payload.kind``:

``"text"``
    The file is valid UTF-8 with no byte-order mark. ``context`` is the decoded
    ``str`` (``payload.length_chars`` characters). Only
    :func:`payload_from_text` can produce an empty file (``context == ""``;
    ``mmap`` cannot map zero bytes, so the worker must special-case size 0).
    Line endings are left as they were in the input.

``"documents"``
    The file is a UTF-8 JSON array (no BOM) of objects with exactly two string
    keys, in a deterministic order::

        [
        {"path": "notes/a.md", "text": "..."},
        {"path": "report.pdf", "text": "..."}
        ]

    ``context`` is ``json.loads`` of it: a ``list`` of ``dict``. Directory
    inputs use POSIX paths relative to the directory, sorted as a depth-first
    walk with entries ordered by name.

Where the file comes from
-------------------------
* A plain UTF-8 text file (text, Markdown, logs, source code, and CSV/TSV and
  JSONL after validation) is used **in place**: no copy, ``owned`` is False.
  It is validated in one streaming pass over a reused buffer, so memory stays
  flat even for a 1 GiB input: pure-ASCII chunks are checked with
  ``bytearray.isascii`` (a C scan, no decoding), other chunks go through a
  strict incremental UTF-8 decoder. The same pass counts characters and notes
  where character offsets fall (:func:`text_facts`), so the sandbox worker never
  scans the file again to answer ``len(context)`` or turn byte offsets into
  character offsets.
* Invalid UTF-8 (or a UTF-8 BOM) makes a cleaned copy in ``workdir``, decoded
  with ``errors="replace"``; a warning names the file and the byte offset of
  the first bad byte.
* JSON, HTML and PDF files are converted (pretty-printed JSON, visible text,
  extracted page text) and the text is written to ``workdir``.
* ``-`` copies stdin to ``workdir``.
* A directory becomes ``"documents"``: hidden entries (``.git``, ``.env``...),
  ``__pycache__`` and ``node_modules`` are ignored; binary files, empty files,
  unreadable files, PDFs without extractable text (or without pypdf), special
  files, symlinked directories and symlinks that leave the directory are listed
  in ``skipped``. Inside a directory a JSON/JSONL/CSV file that does not parse is
  kept as raw text with a warning (a single such file is an error).

Files written to ``workdir`` (mode 0600, via :func:`tempfile.mkstemp`) are owned by the payload (``owned`` is True) and
deleted by :meth:`ContextPayload.cleanup`. Bad input raises
:class:`~rlm.errors.InputError` with a message meant for the user; failing to
write into ``workdir`` raises :class:`~rlm.errors.RLMError`.

Modules, one job each: :mod:`~rlm.inputs.payload` (the payload model),
:mod:`~rlm.inputs.load` (the loaders), :mod:`~rlm.inputs.utf8` (the
streaming UTF-8 scan and the cleaned copy), :mod:`~rlm.inputs.facts` (the cache
of what the scan learnt, for the sandbox), :mod:`~rlm.inputs.formats` (JSON,
JSONL, CSV, HTML and PDF), :mod:`~rlm.inputs.documents` (the directory walker
and the ``"documents"`` writer) and :mod:`~rlm.inputs.fileio` (reading inputs,
writing payload files). This package re-exports the public names.
"""

from __future__ import annotations

from rlm.inputs.facts import MAX_CHECKPOINTS, text_facts
from rlm.inputs.load import load_context, payload_from_documents, payload_from_text
from rlm.inputs.payload import PREVIEW_CHARS, ContextPayload, DocumentInfo

__all__ = [
    "MAX_CHECKPOINTS",
    "PREVIEW_CHARS",
    "ContextPayload",
    "DocumentInfo",
    "load_context",
    "payload_from_documents",
    "payload_from_text",
    "text_facts",
]
