"""The huge-input ``Context`` object: it must behave like the ``str`` it stands for.

Each test compares a :class:`rlm.sandbox.bigcontext.Context` over a file with the
decoded ``str`` of the same file, with tiny checkpoints, pieces and regex windows
so that every border case (a match or a multi-byte character across a border)
happens on a few kilobytes. The last tests run it in the real sandbox.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest

from rlm.config import SandboxConfig
from rlm.inputs import load_context
from rlm.sandbox.bigcontext import Context, ContextTooLarge, RegexTimeout
from rlm.sandbox.host import Sandbox

# Matches in these texts are far shorter than the 256-byte tail (a match must fit in the tail).
SMALL = dict(checkpoint_bytes=64, piece_bytes=97, window_bytes=211, match_tail_bytes=256)


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
