"""Tests for rlm.inputs: turning files, directories and stdin into context payloads."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

from rlm import inputs
from rlm.errors import InputError, RLMError
from rlm.inputs import (
    ContextPayload,
    DocumentInfo,
    load_context,
    payload_from_documents,
    payload_from_text,
)

# --------------------------------------------------------------------------- helpers


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF (Helvetica text, one content stream per page, exact xref)."""
    n = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode() if text else b""
        objects.append(
            (
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>"
            ).encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def read_context(payload: ContextPayload) -> str | list[dict[str, str]]:
    """What the sandbox worker would build from the payload file."""
    raw = payload.path.read_bytes()
    text = raw.decode("utf-8")  # strict: the payload file must be valid UTF-8
    assert not text.startswith("\ufeff")
    if payload.kind == "documents":
        return json.loads(text)
    return text


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "work"


def workdir_files(workdir: Path) -> list[Path]:
    return sorted(workdir.iterdir()) if workdir.exists() else []


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- plain text


def test_valid_text_file_is_used_in_place(tmp_path: Path, workdir: Path) -> None:
    text = "# Título\n\nZeile mit Ümlauten — and emoji 🎉\n" * 3
    src = write(tmp_path / "notes.md", text)
    payload = load_context(src, workdir=workdir)
    assert payload.path == src
    assert payload.owned is False
    assert payload.kind == "text"
    assert payload.length_chars == len(text)
    assert payload.size_bytes == len(text.encode("utf-8"))
    assert payload.preview == text[: inputs.PREVIEW_CHARS]
    assert payload.documents == [] and payload.skipped == [] and payload.warnings == []
    assert workdir_files(workdir) == []
    payload.cleanup()
    assert src.exists()


def test_preview_is_limited(tmp_path: Path, workdir: Path) -> None:
    src = write(tmp_path / "big.log", "x" * 10_000)
    payload = load_context(str(src), workdir=workdir)
    assert payload.preview == "x" * inputs.PREVIEW_CHARS
    assert payload.length_chars == 10_000


def test_a_file_validated_before_is_loaded_without_a_second_scan_until_it_changes(
    tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from rlm.inputs import load

    src = write(tmp_path / "notes.txt", "h\u00e9llo w\u00f6rld, \u4e16\u754c\n" * 2000)
    time.sleep(0.15)  # settled: a file written within the last timestamp tick is never remembered
    first = load_context(src, workdir=workdir)
    scans: list[Path] = []
    real_scan = load.scan_utf8
    monkeypatch.setattr(load, "scan_utf8", lambda path, *a, **k: scans.append(path) or real_scan(path, *a, **k))
    again = load_context(src, workdir=workdir)
    assert scans == []
    assert (again.path, again.size_bytes, again.length_chars, again.preview) == (
        first.path, first.size_bytes, first.length_chars, first.preview)
    assert len(again.preview) == inputs.PREVIEW_CHARS
    with src.open("a", encoding="utf-8") as handle:
        handle.write("\u00e9t\u00e9\n")
    changed = load_context(src, workdir=workdir)
    assert scans == [src] and changed.length_chars == first.length_chars + 4


def test_unknown_extension_text_is_read(tmp_path: Path, workdir: Path) -> None:
    src = write(tmp_path / "Makefile", "all:\n\techo hi\n")
    payload = load_context(src, workdir=workdir)
    assert payload.path == src and read_context(payload) == "all:\n\techo hi\n"


def test_multibyte_characters_across_chunk_boundaries(
    tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inputs.fileio, "CHUNK_BYTES", 5)
    text = "aé€🎉" * 50
    src = write(tmp_path / "chunks.txt", text)
    payload = load_context(src, workdir=workdir)
    assert payload.path == src
    assert payload.length_chars == len(text)
    assert payload.warnings == []


@pytest.mark.parametrize("chunk", [3, 4, 5, 7, 4 * 1024 * 1024])
def test_invalid_utf8_offset_is_exact_whatever_the_chunking(
    tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(inputs.fileio, "CHUNK_BYTES", chunk)
    data = "héllo €".encode() + b"\xe2\x82" + b" world \xff end"  # truncated euro sign at 10
    src = write(tmp_path / "bad.txt", data)
    payload = load_context(src, workdir=workdir)
    assert len(payload.warnings) == 1
    assert "byte offset 10" in payload.warnings[0]
    assert str(src) in payload.warnings[0]
    assert payload.owned is True and payload.path != src
    assert payload.path.parent == workdir
    assert read_context(payload) == data.decode("utf-8", "replace")
    assert src.read_bytes() == data  # the original is untouched
    payload.cleanup()
    assert not payload.path.exists()
    assert src.exists()


def test_invalid_utf8_at_end_of_file(tmp_path: Path, workdir: Path) -> None:
    src = write(tmp_path / "tail.txt", b"abc\xe2\x82")
    payload = load_context(src, workdir=workdir)
    assert "byte offset 3" in payload.warnings[0]
    assert read_context(payload) == "abc\ufffd"


def test_utf8_bom_is_dropped(tmp_path: Path, workdir: Path) -> None:
    src = write(tmp_path / "bom.txt", b"\xef\xbb\xbfhello")
    payload = load_context(src, workdir=workdir)
    assert read_context(payload) == "hello"
    assert payload.length_chars == 5 and payload.owned and payload.warnings == []


def test_bom_only_file_is_empty(tmp_path: Path, workdir: Path) -> None:
    src = write(tmp_path / "bom.txt", b"\xef\xbb\xbf")
    with pytest.raises(InputError, match="is empty"):
        load_context(src, workdir=workdir)
    assert workdir_files(workdir) == []


# --------------------------------------------------------------------------- stdin


def test_stdin_is_copied_into_workdir(workdir: Path) -> None:
    payload = load_context("-", workdir=workdir, stdin=io.BytesIO("from a pipe ✓\n".encode()))
    assert payload.owned is True
    assert payload.path.parent == workdir
    assert payload.kind == "text"
    assert read_context(payload) == "from a pipe ✓\n"
    assert payload.source == "stdin"
    payload.cleanup()
    assert workdir_files(workdir) == []


def test_stdin_with_invalid_utf8_leaves_one_file(workdir: Path) -> None:
    payload = load_context("-", workdir=workdir, stdin=io.BytesIO(b"ok \xff"))
    assert "stdin" in payload.warnings[0] and "byte offset 3" in payload.warnings[0]
    assert workdir_files(workdir) == [payload.path]
    assert read_context(payload) == "ok \ufffd"


def test_empty_stdin(workdir: Path) -> None:
    with pytest.raises(InputError, match="^stdin is empty$"):
        load_context("-", workdir=workdir, stdin=io.BytesIO(b""))
    assert workdir_files(workdir) == []


# --------------------------------------------------------------------------- formats


def test_json_is_pretty_printed(tmp_path: Path, workdir: Path) -> None:
    src = write(tmp_path / "data.json", '{"b": [1, 2], "name": "Zoë"}')
    payload = load_context(src, workdir=workdir)
    assert payload.kind == "text" and payload.owned and payload.path.parent == workdir
    assert read_context(payload) == '{\n  "b": [\n    1,\n    2\n  ],\n  "name": "Zoë"\n}'


def test_invalid_json_names_file_line_and_column(tmp_path: Path, workdir: Path) -> None:
    src = write(tmp_path / "broken.json", '{\n  "a": 1,\n  "b": oops\n}')
    with pytest.raises(InputError) as err:
        load_context(src, workdir=workdir)
    message = str(err.value)
    assert str(src) in message and "line 3" in message and "column 8" in message
    assert workdir_files(workdir) == []


def test_jsonl_is_validated_and_used_in_place(tmp_path: Path, workdir: Path) -> None:
    text = '{"a": 1}\n\n[1, 2]\n"x"\n'
    src = write(tmp_path / "rows.jsonl", text)
    payload = load_context(src, workdir=workdir)
    assert payload.path == src and not payload.owned
    assert read_context(payload) == text


def test_jsonl_bad_line_number(tmp_path: Path, workdir: Path) -> None:
    src = write(tmp_path / "rows.jsonl", '{"a": 1}\n{"b": 2}\n{"c": \n')
    with pytest.raises(InputError, match=r"rows\.jsonl: line 3 is not valid JSON"):
        load_context(src, workdir=workdir)


def test_csv_and_tsv_are_kept_as_text(tmp_path: Path, workdir: Path) -> None:
    csv_text = 'name,quote\r\nann,"said ""hi"", then left"\r\nbob,"multi\nline"\r\n'
    csv_src = write(tmp_path / "t.csv", csv_text)
    payload = load_context(csv_src, workdir=workdir)
    assert payload.path == csv_src and payload.kind == "text"
    assert csv_src.read_bytes().decode() == read_context(payload)
    tsv_src = write(tmp_path / "t.tsv", "a\tb\n1\t2\n")
    assert load_context(tsv_src, workdir=workdir).path == tsv_src


def test_csv_that_does_not_parse(tmp_path: Path, workdir: Path) -> None:
    src = write(tmp_path / "t.csv", 'a,b\n1,"unterminated\n')
    with pytest.raises(InputError, match=r"t\.csv: not valid CSV at line \d+"):
        load_context(src, workdir=workdir)


def test_csv_with_huge_field_is_fine(tmp_path: Path, workdir: Path) -> None:
    src = write(tmp_path / "wide.csv", "a,b\n1," + "x" * 300_000 + "\n")
    assert load_context(src, workdir=workdir).path == src


HTML = """<!doctype html>
<html><head><title>Tom &amp; Jerry</title>
<style>p { color: red }</style><script>var s = "<p>hidden</p>";</script></head>
<body>
  <h1>Big   heading</h1>
  <p>First paragraph
     wraps &lt;here&gt; caf&eacute; &#8364;5</p>
  <p>Line one<br>Line two</p>
  <ul><li>apple</li><li>pear <b>ripe</b></li></ul>
  <pre>  keep
    indent</pre>
  <noscript>enable js</noscript>
</body></html>"""


def test_html_visible_text(tmp_path: Path, workdir: Path) -> None:
    src = write(tmp_path / "page.html", HTML)
    payload = load_context(src, workdir=workdir)
    assert payload.kind == "text" and payload.owned
    assert read_context(payload) == (
        "Tom & Jerry\n\nBig heading\n\nFirst paragraph wraps <here> café €5\n\n"
        "Line one\nLine two\n\napple\npear ripe\n\n  keep\n    indent"
    )


def test_html_without_visible_text(tmp_path: Path, workdir: Path) -> None:
    src = write(tmp_path / "blank.htm", "<html><script>x()</script></html>")
    with pytest.raises(InputError, match="no visible text"):
        load_context(src, workdir=workdir)


def test_pdf_text_is_extracted(tmp_path: Path, workdir: Path) -> None:
    pytest.importorskip("pypdf")
    src = write(tmp_path / "report.pdf", make_pdf(["Hello PDF world", "Second page here"]))
    payload = load_context(src, workdir=workdir)
    assert payload.kind == "text" and payload.owned
    text = read_context(payload)
    assert isinstance(text, str)
    assert "Hello PDF world" in text and "Second page here" in text
    assert text.index("Hello") < text.index("Second")


def test_pdf_without_text(tmp_path: Path, workdir: Path) -> None:
    pytest.importorskip("pypdf")
    src = write(tmp_path / "scan.pdf", make_pdf([""]))
    with pytest.raises(InputError, match="no text could be extracted"):
        load_context(src, workdir=workdir)


def test_corrupt_pdf(tmp_path: Path, workdir: Path) -> None:
    pytest.importorskip("pypdf")
    src = write(tmp_path / "junk.pdf", b"this is not a pdf at all")
    with pytest.raises(InputError, match=r"junk\.pdf: not a readable PDF"):
        load_context(src, workdir=workdir)


def test_pdf_without_pypdf_gives_install_hint(
    tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pypdf", None)  # makes `import pypdf` raise ImportError
    src = write(tmp_path / "report.pdf", make_pdf(["Hello"]))
    with pytest.raises(InputError, match="pip install pypdf"):
        load_context(src, workdir=workdir)


# --------------------------------------------------------------------------- directories


def build_tree(root: Path) -> None:
    write(root / "b.md", "# B\n")
    write(root / "a.txt", "alpha")
    write(root / "sub" / "z.py", "print('z')\n")
    write(root / "sub" / "deeper" / "c.log", "line\n")
    write(root / "sub" / "data.json", '{"k":1}')
    write(root / "page.html", "<p>hello <i>html</i></p>")
    write(root / "image.png", b"\x89PNG\r\n\x1a\n")
    write(root / "blob.dat", b"abc\x00def")
    write(root / "empty.txt", b"")
    write(root / ".git" / "config", "[core]\n")
    write(root / ".env", "SECRET=1\n")
    write(root / "__pycache__" / "m.cpython-311.pyc", "not really")
    write(root / "node_modules" / "x" / "index.js", "module.exports = 1\n")


def test_directory_becomes_sorted_documents(tmp_path: Path, workdir: Path) -> None:
    root = tmp_path / "proj"
    build_tree(root)
    payload = load_context(root, workdir=workdir)
    assert payload.kind == "documents" and payload.owned
    names = [doc.name for doc in payload.documents]
    assert names == ["a.txt", "b.md", "page.html", "sub/data.json", "sub/deeper/c.log", "sub/z.py"]
    context = read_context(payload)
    assert [d["path"] for d in context] == names
    assert all(set(d) == {"path", "text"} for d in context)
    by_name = {d["path"]: d["text"] for d in context}
    assert by_name["a.txt"] == "alpha"
    assert by_name["page.html"] == "hello html"
    assert by_name["sub/data.json"] == '{\n  "k": 1\n}'
    assert payload.documents[0] == DocumentInfo(name="a.txt", chars=5)
    assert payload.length_chars == sum(len(t) for t in by_name.values())
    assert payload.preview == "alpha"
    assert payload.skipped == [
        "blob.dat: binary file (NUL bytes)",
        "empty.txt: empty file",
        "image.png: binary file (.png)",
    ]
    assert payload.size_bytes == payload.path.stat().st_size


def test_directory_order_is_deterministic(tmp_path: Path, workdir: Path) -> None:
    root = tmp_path / "proj"
    for name in ["m.txt", "B.txt", "a.txt", "z/1.txt", "a_dir/x.txt", "10.txt", "9.txt"]:
        write(root / name, name)
    first = load_context(root, workdir=workdir)
    second = load_context(root, workdir=workdir)
    assert first.path != second.path
    assert first.path.read_bytes() == second.path.read_bytes()
    assert [d.name for d in first.documents] == [
        "10.txt", "9.txt", "B.txt", "a.txt", "a_dir/x.txt", "m.txt", "z/1.txt"
    ]


def test_directory_symlinks(tmp_path: Path, workdir: Path) -> None:
    outside = write(tmp_path / "secret.txt", "outside")
    root = tmp_path / "proj"
    write(root / "real" / "inside.txt", "inside")
    (root / "link_out.txt").symlink_to(outside)
    (root / "link_in.txt").symlink_to(root / "real" / "inside.txt")
    (root / "link_dir").symlink_to(root / "real", target_is_directory=True)
    (root / "broken").symlink_to(root / "missing")
    payload = load_context(root, workdir=workdir)
    assert [d.name for d in payload.documents] == ["link_in.txt", "real/inside.txt"]
    assert payload.skipped == [
        "broken: broken symlink",
        "link_dir: symlink to a directory (not followed)",
        "link_out.txt: symlink pointing outside the directory",
    ]
    assert "outside" not in payload.path.read_text(encoding="utf-8")


def test_directory_special_files_are_skipped_without_blocking(tmp_path: Path, workdir: Path) -> None:
    root = tmp_path / "proj"
    write(root / "a.txt", "a")
    os.mkfifo(root / "pipe")
    (root / "loop").symlink_to(root / "loop")
    payload = load_context(root, workdir=workdir)
    assert [d.name for d in payload.documents] == ["a.txt"]
    assert payload.skipped == ["loop: broken symlink", "pipe: not a regular file"]


def test_directory_members_that_do_not_parse_are_kept_raw(tmp_path: Path, workdir: Path) -> None:
    root = tmp_path / "proj"
    write(root / "tsconfig.json", '{ // comments are not JSON\n "a": 1 }')
    write(root / "rows.jsonl", '{"ok": 1}\nnope\n')
    write(root / "latin1.txt", b"caf\xe9")
    payload = load_context(root, workdir=workdir)
    context = read_context(payload)
    assert {d["path"]: d["text"] for d in context} == {
        "latin1.txt": "caf\ufffd",
        "rows.jsonl": '{"ok": 1}\nnope\n',
        "tsconfig.json": '{ // comments are not JSON\n "a": 1 }',
    }
    assert len(payload.warnings) == 3
    assert any("latin1.txt at byte offset 3" in w for w in payload.warnings)
    assert any("tsconfig.json: not valid JSON" in w and "line 1" in w for w in payload.warnings)
    assert any("rows.jsonl: line 2" in w for w in payload.warnings)


def test_directory_with_pdf(tmp_path: Path, workdir: Path) -> None:
    pytest.importorskip("pypdf")
    root = tmp_path / "papers"
    write(root / "paper.pdf", make_pdf(["Quantum ducks"]))
    write(root / "broken.pdf", b"garbage")
    payload = load_context(root, workdir=workdir)
    assert [d.name for d in payload.documents] == ["paper.pdf"]
    assert "Quantum ducks" in read_context(payload)[0]["text"]
    assert len(payload.skipped) == 1 and payload.skipped[0].startswith("broken.pdf: not a readable PDF")


def test_directory_pdf_without_pypdf_is_skipped(
    tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pypdf", None)
    root = tmp_path / "papers"
    write(root / "paper.pdf", make_pdf(["x"]))
    write(root / "notes.txt", "notes")
    payload = load_context(root, workdir=workdir)
    assert [d.name for d in payload.documents] == ["notes.txt"]
    assert "pip install pypdf" in payload.skipped[0]


def test_workdir_inside_the_directory_is_not_read(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    write(root / "a.txt", "a")
    workdir = root / "rlm-work"
    write(workdir / "context-old.txt", "stale payload")
    payload = load_context(root, workdir=workdir)
    assert [d.name for d in payload.documents] == ["a.txt"]


def test_directory_without_text_files(tmp_path: Path, workdir: Path) -> None:
    root = tmp_path / "pics"
    write(root / "a.png", b"\x89PNG")
    write(root / ".git" / "HEAD", "ref: main\n")
    with pytest.raises(InputError) as err:
        load_context(root, workdir=workdir)
    assert "no readable text files" in str(err.value)
    assert "a.png: binary file (.png)" in str(err.value)
    assert workdir_files(workdir) == []


def test_empty_directory(tmp_path: Path, workdir: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no readable text files"):
        load_context(tmp_path / "empty", workdir=workdir)


# --------------------------------------------------------------------------- errors


def test_missing_path(tmp_path: Path, workdir: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(InputError) as err:
        load_context(missing, workdir=workdir)
    assert str(err.value) == f"no such file or directory: {missing}"


def test_path_through_a_file_is_missing(tmp_path: Path, workdir: Path) -> None:
    src = write(tmp_path / "file.txt", "x")
    with pytest.raises(InputError, match="no such file or directory"):
        load_context(f"{src}/child", workdir=workdir)


def test_empty_file(tmp_path: Path, workdir: Path) -> None:
    src = write(tmp_path / "empty.md", "")
    with pytest.raises(InputError) as err:
        load_context(src, workdir=workdir)
    assert str(err.value) == f"{src} is empty"


def test_fifo_is_rejected_without_blocking(tmp_path: Path, workdir: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file or directory \\(a FIFO\\)"):
        load_context(fifo, workdir=workdir)


def test_device_is_rejected(workdir: Path) -> None:
    with pytest.raises(InputError, match="character device"):
        load_context("/dev/null", workdir=workdir)


def test_binary_files_are_rejected(tmp_path: Path, workdir: Path) -> None:
    with pytest.raises(InputError, match=r"binary file \(\.png\)"):
        load_context(write(tmp_path / "x.png", b"\x89PNG"), workdir=workdir)
    with pytest.raises(InputError, match="looks like a binary file"):
        load_context(write(tmp_path / "x.weird", b"ab\x00cd"), workdir=workdir)


def _deny(monkeypatch: pytest.MonkeyPatch, denied: Path) -> None:
    """Make opening ``denied`` fail with EACCES even when the tests run as root."""
    real_open = Path.open

    def fake_open(self: Path, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]  # as Path.open
        if self == denied:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]  # Path.open's own arguments

    monkeypatch.setattr(Path, "open", fake_open)


def test_permission_denied_file(tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write(tmp_path / "private.txt", "secret")
    _deny(monkeypatch, src)
    with pytest.raises(InputError) as err:
        load_context(src, workdir=workdir)
    assert str(err.value) == f"permission denied: {src}"


def test_permission_denied_member_is_skipped(
    tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "proj"
    write(root / "ok.txt", "ok")
    private = write(root / "private.txt", "secret")
    _deny(monkeypatch, private)
    payload = load_context(root, workdir=workdir)
    assert [d.name for d in payload.documents] == ["ok.txt"]
    assert payload.skipped == ["private.txt: permission denied"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_permission_denied_for_real(tmp_path: Path, workdir: Path) -> None:
    src = write(tmp_path / "private.txt", "secret")
    src.chmod(0)
    try:
        with pytest.raises(InputError, match="permission denied"):
            load_context(src, workdir=workdir)
    finally:
        src.chmod(0o600)


def test_unwritable_workdir(tmp_path: Path) -> None:
    blocker = write(tmp_path / "not-a-dir", "x")
    with pytest.raises(RLMError, match="cannot create a context file"):
        load_context("-", workdir=blocker, stdin=io.BytesIO(b"data"))


# --------------------------------------------------------------------------- describe / info


def test_describe_text(tmp_path: Path, workdir: Path) -> None:
    src = write(tmp_path / "log.txt", "0123456789" * 100)
    description = load_context(src, workdir=workdir).describe()
    assert "`context` is a str of 1,000 characters." in description
    assert "first 300 characters" in description
    assert "0123456789" * 30 in description


def test_describe_short_text_says_whole(tmp_path: Path, workdir: Path) -> None:
    description = load_context(write(tmp_path / "s.txt", "tiny"), workdir=workdir).describe()
    assert "the whole text" in description and "tiny" in description


def test_describe_documents_lists_first_20(tmp_path: Path, workdir: Path) -> None:
    root = tmp_path / "many"
    for i in range(25):
        write(root / f"doc{i:02d}.txt", f"document number {i}")
    payload = load_context(root, workdir=workdir)
    description = payload.describe()
    assert "`context` is a list of 25 documents" in description
    assert '"path": str, "text": str' in description
    assert "  - doc00.txt (17 chars)" in description
    assert "doc19.txt" in description and "doc20.txt" not in description
    assert "... and 5 more" in description
    assert "Preview of the first document (doc00.txt)" in description
    assert "document number 0" in description


def test_info_is_json_able(tmp_path: Path, workdir: Path) -> None:
    root = tmp_path / "proj"
    build_tree(root)
    info = load_context(root, workdir=workdir).info()
    assert json.loads(json.dumps(info)) == info
    assert info["kind"] == "documents"
    assert info["n_documents"] == 6 and info["n_skipped"] == 3
    assert info["length_chars"] > 0 and info["size_bytes"] > 0
    assert info["warnings"] == []


# --------------------------------------------------------------------------- Python API


def test_payload_from_text(workdir: Path) -> None:
    with payload_from_text("héllo\nworld", workdir=workdir) as payload:
        assert payload.kind == "text" and payload.owned
        assert read_context(payload) == "héllo\nworld"
        assert payload.length_chars == 11 and payload.size_bytes == 12
    assert not payload.path.exists()


def test_payload_from_text_with_lone_surrogate(workdir: Path) -> None:
    payload = payload_from_text("a\ud800b", workdir=workdir)
    assert read_context(payload) == "a?b"
    assert payload.warnings and "surrogate" in payload.warnings[0]


def test_payload_from_empty_text(workdir: Path) -> None:
    payload = payload_from_text("", workdir=workdir)
    assert payload.kind == "text" and payload.size_bytes == 0 and payload.length_chars == 0
    assert "`context` is a str of 0 characters." in payload.describe()


def test_payload_from_empty_documents(workdir: Path) -> None:
    payload = payload_from_documents([], workdir=workdir)
    assert read_context(payload) == []
    assert payload.describe() == (
        '`context` is a list of 0 documents, each a dict {"path": str, "text": str}; '
        "0 characters of text in total."
    )


def test_payload_from_text_errors(workdir: Path) -> None:
    with pytest.raises(InputError, match="must be a str"):
        payload_from_text(b"bytes", workdir=workdir)  # type: ignore[arg-type]  # the wrong type on purpose


def test_payload_from_documents(workdir: Path) -> None:
    docs = [{"path": "b.txt", "text": "bee"}, {"path": "a.txt", "text": "ä\n\"quoted\""}]
    payload = payload_from_documents(docs, workdir=workdir)
    assert payload.kind == "documents" and payload.owned
    assert read_context(payload) == docs  # order kept as given
    assert payload.documents == [DocumentInfo("b.txt", 3), DocumentInfo("a.txt", 10)]
    assert payload.length_chars == 13 and payload.preview == "bee"
    payload.cleanup()
    assert workdir_files(workdir) == []


@pytest.mark.parametrize(
    "docs, message",
    [
        ("not a list", "must be a list"),
        ([{"path": "a"}], "exactly the keys"),
        ([{"path": "a", "text": "t", "extra": 1}], "exactly the keys"),
        ([{"path": 1, "text": "t"}], "must both be str"),
        (["text"], "document 0"),
    ],
)
def test_payload_from_documents_errors(workdir: Path, docs: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        payload_from_documents(docs, workdir=workdir)  # type: ignore[arg-type]  # wrong types on purpose
    assert workdir_files(workdir) == []
