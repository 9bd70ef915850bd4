"""The type check and the lint pass: ``scripts/typecheck.sh`` (mypy, strict on the core and the sandbox; ruff).

Running it here makes the README's test command cover them. The first run checks every module;
mypy's cache under ``build/`` makes later runs check only what changed.
"""

from __future__ import annotations

import subprocess

import pytest

from conftest import REPO


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_type_check_and_the_lint_pass() -> None:
    proc = subprocess.run([str(REPO / "scripts" / "typecheck.sh")], cwd=REPO, capture_output=True, text=True,
                          timeout=840)
    assert proc.returncode == 0, f"scripts/typecheck.sh failed:\n{proc.stdout[-8000:]}\n{proc.stderr[-2000:]}"
