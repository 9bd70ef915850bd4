"""The huge-input ``Context`` object: it must behave like the ``str`` it stands for.

Each test compares a :class:`rlm.sandbox.bigcontext.Context` over a file with the
decoded ``str`` of the same file, with tiny checkpoints, pieces and regex windows
so that every border case (a match or a multi-byte character across a border)
happens on a few kilobytes. The last tests run it in the real sandbox.
"""

from __future__ import annotations

import io
import itertools
import random
import re
import time
from pathlib import Path

import pytest

from rlm import inputs
from rlm.config import SandboxConfig
from rlm.inputs import load_context, payload_from_text
from rlm.sandbox.bigcontext import Context, ContextTooLarge, RegexTimeout
from rlm.sandbox.host import Sandbox

# Matches in these texts are far shorter than the 256-byte tail (a match must fit in the tail).
SMALL = dict(checkpoint_bytes=64, piece_bytes=97, window_bytes=211, match_tail_bytes=256, anchor_min_bytes=0)


def _text(seed: int, ascii_only: bool) -> str:
    rng = random.Random(seed)
    words = ["alpha", "beta", "ERROR", "disk", "aa", "aaa", "x=1", "naïve", "日本語", "😀", "\r\n", "\n", " "]
    if ascii_only:
        words = [w for w in words if w.isascii()]
    return "".join(rng.choice(words) for _ in range(3000))


@pytest.fixture(params=[(1, True), (2, False), (3, False)], ids=["ascii", "utf8-a", "utf8-b"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Context, str]:
    text = _text(*request.param)
    path = tmp_path / "ctx.txt"
    path.write_bytes(text.encode("utf-8"))
    return Context(str(path), **SMALL), text


def test_len_index_and_slices_match_str(pair: tuple[Context, str]) -> None:
    ctx, text = pair
    assert len(ctx) == len(text)
    rng = random.Random(7)
    for _ in range(200):
        a, b = rng.randrange(-len(text), len(text)), rng.randrange(-len(text), len(text) + 50)
        assert ctx[a:b] == text[a:b]
        assert ctx[a] == text[a]
    assert ctx[:25] == text[:25] and ctx[-30:] == text[-30:] and ctx[10:200:7] == text[10:200:7]
    assert ctx[::-1][:40] == text[::-1][:40] if len(text) < ctx.max_materialize_chars else True
    with pytest.raises(IndexError):
        ctx[len(text)]


def test_find_count_and_friends_match_str(pair: tuple[Context, str]) -> None:
    ctx, text = pair
    for sub in ["ERROR", "aa", "aaa", "naïve", "日本", "\r\n", "zzz-absent", "a", ""]:
        assert ctx.find(sub) == text.find(sub), sub
        assert ctx.rfind(sub) == text.rfind(sub), sub
        assert ctx.count(sub) == text.count(sub), sub
        assert ctx.find(sub, 100, 900) == text.find(sub, 100, 900), sub
        assert ctx.count(sub, 50, -50) == text.count(sub, 50, -50), sub
        assert (sub in ctx) == (sub in text)
    assert ctx.startswith(text[:7]) and ctx.endswith(text[-7:]) and not ctx.startswith("zzz")
    assert ctx.startswith(("nope", text[:3])) and ctx.endswith(text[-9:-3], 0, len(text) - 3)
    with pytest.raises(ValueError, match="substring not found"):
        ctx.index("zzz-absent")


def test_lines_and_chunks_match_str(pair: tuple[Context, str]) -> None:
    ctx, text = pair
    assert list(ctx.lines()) == text.splitlines()
    assert list(ctx.splitlines(True)) == text.splitlines(True)
    assert list(ctx) == text.splitlines()
    for size, overlap in [(100, 0), (333, 40), (7, 6)]:
        step = size - overlap
        assert list(ctx.chunks(size, overlap)) == [text[i:i + size] for i in range(0, len(text), step)]


@pytest.mark.parametrize("pattern", [
    r"ERROR", r"a+", r"\bdisk\b", r"(?m)^alpha", r"^beta", r"ERROR\s*disk", r"(\w+)=(\d)", r"(?P<w>日本語)",
    r"a*", r"naïve$", r"(?s)ERROR.{0,30}disk", r"(?<=beta)\w+",
])
def test_regex_matches_whole_string_semantics(pair: tuple[Context, str], pattern: str) -> None:
    ctx, text = pair
    assert ctx.findall(pattern) == re.findall(pattern, text)
    got = [(m.span(), m.group()) for m in ctx.finditer(pattern)]
    assert got == [(m.span(), m.group()) for m in re.finditer(pattern, text)]
    first, expected = ctx.search(pattern), re.search(pattern, text)
    assert (first and first.span()) == (expected and expected.span())


def test_matches_spanning_windows_are_whole(tmp_path: Path) -> None:
    text = ("noise " * 30 + "start " + "x" * 180 + " end\n") * 20
    path = tmp_path / "long.txt"
    path.write_text(text)
    ctx = Context(str(path), **SMALL)
    assert [m.span() for m in ctx.finditer(r"start x+ end")] == [m.span() for m in re.finditer(r"start x+ end", text)]
    # a match running to the end of the input: the window grows until it holds all of it
    assert ctx.search(r"(?s)start.*").span() == re.search(r"(?s)start.*", text).span()


def test_guards_explain_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("line\n" * 1000)
    ctx = Context(str(path), max_materialize_chars=100, **SMALL)
    with pytest.raises(ContextTooLarge, match="chunks"):
        str(ctx)
    with pytest.raises(ContextTooLarge):
        ctx[0:5000]
    with pytest.raises(AttributeError, match=r"no \.split\(\).*Slices"):
        ctx.split("\n")
    assert "memory-mapped" in repr(ctx)


def test_catastrophic_regex_hits_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "evil.txt"
    path.write_text("a" * 40 + "b")
    ctx = Context(str(path), regex_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(RegexTimeout, match="budget"):
        ctx.search(r"(a+)+$")
    assert time.monotonic() - started < 3


# -- in the real sandbox ------------------------------------------------------------------


def _huge_config(**overrides: object) -> SandboxConfig:
    values: dict = dict(huge_input_bytes=1024, cell_timeout_s=20, memory_mb=512, regex_timeout_s=1.0)
    values.update(overrides)
    return SandboxConfig(**values)


def test_sandbox_binds_a_context_above_the_threshold(tmp_path: Path) -> None:
    text = "".join(f"{i} ERROR disk {i % 7}\n" if i % 100 == 0 else f"{i} ok\n" for i in range(20_000))
    path = tmp_path / "log.txt"
    path.write_text(text)
    with Sandbox(path, config=_huge_config()) as sandbox:
        assert sandbox.context_type == "Context" and sandbox.huge_context
        result = sandbox.execute(
            "import re\n"
            "print(type(context).__name__, len(context), context[:7].split())\n"
            "print(len(re.findall(r'ERROR disk (\\d)', context)), context.count('ERROR'))\n"
            "print(sum(1 for _ in context.lines()), context.find('19900 ERROR'))\n"
        )
    assert result.error is None, result.error
    assert result.stdout.split("\n")[:3] == [
        f"Context {len(text)} ['0', 'ERROR']", "200 200", f"20000 {text.find('19900 ERROR')}"]


def test_sandbox_small_input_stays_a_str(tmp_path: Path) -> None:
    path = tmp_path / "small.txt"
    path.write_text("tiny input")
    with Sandbox(path, config=_huge_config(huge_input_bytes=1 << 20)) as sandbox:
        result = sandbox.execute("print(type(context).__name__, context.upper())")
    assert result.stdout == "str TINY INPUT\n"


def test_sandbox_catastrophic_regex_is_an_error_not_a_hang(tmp_path: Path) -> None:
    path = tmp_path / "evil.txt"
    path.write_text("a" * 5000 + "b")
    with Sandbox(path, config=_huge_config()) as sandbox:
        result = sandbox.execute("import re\nre.search(r'(a+)+$', context)")
        after = sandbox.execute("print(len(context))")
    assert result.error and "RegexTimeout" in result.error and "catastrophic" in result.error
    assert not result.restarted and after.stdout == "5001\n"


def test_describe_tells_the_model_about_the_context_object(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("x" * 5000)
    payload = load_context(path, workdir=tmp_path)
    assert "Context object" in payload.describe(huge_input_bytes=1024)
    assert "chunks(size" in payload.describe(huge_input_bytes=1024)
    assert payload.describe(huge_input_bytes=1 << 20).startswith("`context` is a str of 5,000 characters.")


# -- the host's validation facts (rlm.inputs.text_facts) ---------------------------------------


def _settled(path: Path, data: bytes) -> Path:
    """Write ``data``; wait until the file counts as settled (facts are kept only for files not being written)."""
    path.write_bytes(data)
    time.sleep(inputs.facts.SETTLE_NS / 1e9 + 0.05)
    return path


def _check_points(raw: bytes, facts: dict) -> None:
    """Every checkpoint is a character boundary with the right character offset."""
    points = facts["checkpoints"]
    assert points[0] == [0, 0] and points[-1] == [len(raw), facts["chars"]]
    for byte, char in points:
        assert len(raw[:byte].decode("utf-8")) == char


def test_validation_hands_length_ascii_and_checkpoints_to_the_sandbox(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ascii_text, utf8_text = _text(1, True), _text(2, False)
    ascii_path = _settled(tmp_path / "ascii.txt", ascii_text.encode())
    utf8_path = _settled(tmp_path / "utf8.txt", utf8_text.encode())
    monkeypatch.setattr(inputs.fileio, "CHUNK_BYTES", 7)  # many chunk borders, inside multi-byte characters too
    assert load_context(ascii_path, workdir=tmp_path / "w").length_chars == len(ascii_text)
    assert inputs.text_facts(ascii_path) == {"size": len(ascii_text), "chars": len(ascii_text), "ascii": True}
    assert load_context(utf8_path, workdir=tmp_path / "w").length_chars == len(utf8_text)
    facts = inputs.text_facts(utf8_path)
    assert facts is not None and facts["ascii"] is False and facts["chars"] == len(utf8_text)
    assert len(facts["checkpoints"]) <= inputs.MAX_CHECKPOINTS
    _check_points(utf8_path.read_bytes(), facts)
    # a changed file has no facts any more (the worker then counts for itself)
    with open(utf8_path, "ab") as out:
        out.write("é".encode())
    assert inputs.text_facts(utf8_path) is None


def test_no_facts_for_a_file_still_being_written(tmp_path: Path) -> None:
    path = tmp_path / "fresh.txt"
    path.write_text("just written\n" * 100)
    load_context(path, workdir=tmp_path / "w")
    assert inputs.text_facts(path) is None


def test_stdin_copy_has_facts(tmp_path: Path) -> None:
    data = "from a pipe ✓\n".encode() * 1000
    payload = load_context("-", workdir=tmp_path / "w", stdin=io.BytesIO(data))
    facts = inputs.text_facts(payload.path)
    assert facts is not None and facts["chars"] == payload.length_chars == len(data.decode())
    _check_points(data, facts)


def test_cleaned_copies_and_written_payloads_have_facts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inputs.fileio, "CHUNK_BYTES", 5)
    bad = _settled(tmp_path / "bad.txt", "héllo wörld ".encode() * 20 + b"\xff tail \xe2\x82")
    payload = load_context(bad, workdir=tmp_path / "w")
    assert payload.warnings and payload.path != bad
    facts = inputs.text_facts(payload.path)
    assert facts is not None and facts["chars"] == payload.length_chars == len(payload.path.read_text())
    _check_points(payload.path.read_bytes(), facts)
    text = payload_from_text("naïve " * 50, workdir=tmp_path / "w")
    assert inputs.text_facts(text.path) == {"size": 350, "chars": 300, "ascii": False}
    plain = payload_from_text("plain " * 50, workdir=tmp_path / "w")
    assert inputs.text_facts(plain.path) == {"size": 300, "chars": 300, "ascii": True}


@pytest.mark.parametrize("seed,ascii_only", [(1, True), (2, False), (3, False)])
def test_context_with_host_facts_matches_str(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, ascii_only: bool) -> None:
    text = _text(seed, ascii_only)
    path = _settled(tmp_path / "ctx.txt", text.encode())
    monkeypatch.setattr(inputs.fileio, "CHUNK_BYTES", 50)
    load_context(path, workdir=tmp_path / "w")
    facts = inputs.text_facts(path)
    assert facts is not None
    ctx = Context(str(path), facts=facts, **SMALL)
    assert ctx._length == len(text) and (ctx._bytes_at is not None)  # nothing left to count
    assert len(ctx) == len(text)
    rng = random.Random(seed)
    for _ in range(200):
        a, b = rng.randrange(-len(text), len(text)), rng.randrange(-len(text), len(text) + 50)
        assert ctx[a:b] == text[a:b]
        assert ctx[a] == text[a]
    for sub in ["ERROR", "aa", "naïve", "日本", "\r\n", "zzz-absent", "😀"]:
        assert ctx.find(sub) == text.find(sub) and ctx.rfind(sub) == text.rfind(sub), sub
        assert ctx.find(sub, 300, -300) == text.find(sub, 300, -300), sub
        assert ctx.count(sub, 50, -50) == text.count(sub, 50, -50), sub
    assert [m.span() for m in ctx.finditer(r"ERROR\w*")] == [m.span() for m in re.finditer(r"ERROR\w*", text)]


@pytest.mark.parametrize("facts", [
    {"size": 1, "chars": 1, "ascii": True},  # another file's size
    "garbage", {"size": "x"}, None,
    {"chars": 5, "ascii": True},
    "BAD_POINTS",  # checkpoints going backwards
])
def test_context_ignores_facts_that_do_not_fit_the_file(tmp_path: Path, facts: object) -> None:
    text = _text(2, False)
    raw = text.encode()
    path = tmp_path / "ctx.txt"
    path.write_bytes(raw)
    if facts == "BAD_POINTS":
        facts = {"size": len(raw), "chars": len(text), "ascii": False, "checkpoints": [[0, 0], [10, 9], [5, 4]]}
    ctx = Context(str(path), facts=facts, **SMALL)  # type: ignore[arg-type]  # malformed facts on purpose
    assert len(ctx) == len(text)
    assert ctx[1000:1100] == text[1000:1100] and ctx.find("日本") == text.find("日本")


def test_sandbox_uses_the_host_facts_and_copes_without_them(tmp_path: Path) -> None:
    text = "".join(f"{i} ok naïve ✓\n" if i % 3 else f"{i} ERROR 日本語 disk\n" for i in range(5000))
    validated = _settled(tmp_path / "validated.txt", text.encode())
    unvalidated = tmp_path / "unvalidated.txt"
    unvalidated.write_bytes(text.encode())
    payload = load_context(validated, workdir=tmp_path / "w")
    assert payload.path == validated and inputs.text_facts(validated) is not None
    code = ("known = (context._length, context._bytes_at is not None)\n"
            "i = context.find('4998 ERROR')\n"
            "print(known, len(context), i, context[i:i + 14], context.rfind('naïve'), context[-3:])\n")
    expected = (f"{len(text)} {text.find('4998 ERROR')} {text[text.find('4998 ERROR'):][:14]} "
                f"{text.rfind('naïve')} {text[-3:]}")
    with Sandbox(validated, config=_huge_config()) as sandbox:
        with_facts = sandbox.execute(code)
    with Sandbox(unvalidated, config=_huge_config()) as sandbox:
        without = sandbox.execute(code)
    assert with_facts.error is None and without.error is None, (with_facts.error, without.error)
    assert with_facts.stdout == f"({len(text)}, True) {expected}\n"
    assert without.stdout == f"(None, False) {expected}\n"


# -- find: anchored on the needle's rarest byte ---------------------------------------------------


@pytest.mark.parametrize("layout", ["rare-anchor", "common-everywhere", "rare-then-common"])
def test_anchored_find_matches_bytes_find(tmp_path: Path, layout: str) -> None:
    rng = random.Random(layout)
    if layout == "rare-anchor":  # 'Q' is rare: memchr candidates only
        text = "".join(rng.choice(["alpha ", "beta ", "gamma\n", "Q", "QX-1 "]) if rng.random() < 0.01
                       else rng.choice(["alpha ", "beta ", "gamma\n"]) for _ in range(20000))
    elif layout == "common-everywhere":  # every byte of the needles is common: the plain search takes over
        text = "".join(rng.choice("ab ") for _ in range(60000))
    else:  # the sample says 'Z' is rare, later it is everywhere: the budget switches to the plain search
        text = "alpha beta " * 2000 + "".join(rng.choice(["Z", "Za", "aZb", " "]) for _ in range(30000))
    path = tmp_path / "t.txt"
    path.write_text(text)
    ctx = Context(str(path), checkpoint_bytes=64, piece_bytes=4096, window_bytes=8192, match_tail_bytes=256,
                  anchor_min_bytes=0)
    needles = ["QX-1", "Q", "alpha beta", "gamma\nQ", "ab ab", "aba", "ZaZ", "aZbZ", "Zab", "beta Z", "nope!",
               "alpha Zb", "ZZZZZZZZZ", "Z Z Za"]
    needles += [text[i:i + n] for i, n in ((rng.randrange(len(text) - 20), rng.randrange(1, 12)) for _ in range(30))]
    for sub in needles:
        assert ctx.find(sub) == text.find(sub), sub
        assert ctx.rfind(sub) == text.rfind(sub), sub
        assert ctx.find(sub, 5000, -3000) == text.find(sub, 5000, -3000), sub
        assert ctx.rfind(sub, 100, 20000) == text.rfind(sub, 100, 20000), sub
        assert (sub in ctx) == (sub in text)


def test_checkpoints_advance_even_when_a_chunk_ends_inside_one_character(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "😀a😀😀b" * 40  # 4-byte characters, 3-byte chunks: some chunks complete no character
    path = _settled(tmp_path / "emoji.txt", text.encode())
    monkeypatch.setattr(inputs.fileio, "CHUNK_BYTES", 3)
    load_context(path, workdir=tmp_path / "w")
    facts = inputs.text_facts(path)
    assert facts is not None
    _check_points(path.read_bytes(), facts)
    assert all(a[0] < b[0] for a, b in itertools.pairwise(facts["checkpoints"]))
    ctx = Context(str(path), facts=facts, **SMALL)
    assert ctx._bytes_at is not None and ctx[37:61] == text[37:61] and ctx.rfind("b😀") == text.rfind("b😀")
