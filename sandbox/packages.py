"""The analysis packages model code may import in the sandbox: numpy, pandas, regex, and what a user adds.

Models write ``import numpy as np``, ``import pandas as pd`` and ``import regex``
in an RLM REPL as a matter of course. The worker runs with ``python -I -S`` and
sees no site-packages, least of all the host's venv (which holds litellm, Ray,
API clients). So these packages live in an environment of their own, installed
by ``pip install --target`` with the venv's interpreter (same ABI as the
jail's) into a directory that only the jail uses, and bound read-only into it at
``/opt/rlm-packages`` (:mod:`rlm.sandbox.jail`). The worker appends that path to
``sys.path``: nothing is imported until model code imports it, so a pre-started
worker pays nothing for pandas it never uses.

Why these three: ``numpy`` and ``pandas`` are what models reach for to count,
group and tabulate records (OOLONG-style aggregation), ``regex`` for patterns
``re`` lacks (fuzzy matching, ``\\p{L}``, overlapped matches). Their transitive
dependencies (python-dateutil, tzdata) come along.

Layout of the directory (default ``<venv>/rlm-sandbox-packages``)::

    requirements.txt        the requested set: the defaults plus what users added
    envs/<digest>/          one installed set; rlm-sandbox.json is its manifest
    current -> envs/<digest>

An install builds a new ``envs/<digest>`` beside the old one and then swaps the
``current`` link, so a sandbox that is running keeps the set it started with.
Run ``python -m rlm.sandbox.packages install`` (what ``scripts/setup.sh`` does;
idempotent) or ``python -m rlm.sandbox.packages add NAME[==VERSION] ...``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm.config import default_packages_dir
from rlm.errors import RLMError

if TYPE_CHECKING:
    from importlib import metadata

__all__ = ["DEFAULT_REQUIREMENTS", "Manifest", "PackagesError", "default_dir", "current_env", "available", "install",
           "main"]

#: Pinned for Python 3.11+ on Linux (wheels on PyPI); numpy's OpenBLAS is held to one thread in the jail.
DEFAULT_REQUIREMENTS = ("numpy==2.4.6", "pandas==3.1.1", "regex==2026.12.2")
MANIFEST = "rlm-sandbox.json"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_SKIP_TOP = {"bin", "__pycache__", "share", "include"}


class PackagesError(RLMError):
    """An install of the sandbox packages failed (pip's message is in it)."""


@dataclass(frozen=True, slots=True)
class Manifest:
    """What one installed set holds: requested requirements, importable modules with versions, the interpreter."""

    requirements: tuple[str, ...]
    modules: tuple[tuple[str, str], ...]
    python: str

    def to_dict(self) -> dict[str, object]:
        return {"requirements": list(self.requirements), "modules": [list(m) for m in self.modules],
                "python": self.python}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        return cls(tuple(str(r) for r in data["requirements"]),
                   tuple((str(m), str(v)) for m, v in data["modules"]), str(data["python"]))


def python_tag() -> str:
    """The interpreter an installed set is built for (its ABI and machine)."""
    return f"{sys.implementation.cache_tag}-{platform.machine()}"


def default_dir() -> str:
    """``<venv>/rlm-sandbox-packages``: beside the venv's own packages, never among them."""
    return default_packages_dir()


def current_env(directory: str | os.PathLike[str] | None) -> Path | None:
    """The installed set to bind into the jail, or ``None`` (no directory, nothing installed, another Python)."""
    manifest = _manifest_of(directory)
    return None if manifest is None else manifest[0]


def available(directory: str | os.PathLike[str] | None) -> tuple[str, ...]:
    """``module version`` of each requested package that model code can import, for the system prompt."""
    manifest = _manifest_of(directory)
    return () if manifest is None else tuple(f"{module} {version}" for module, version in manifest[1].modules)


def _manifest_of(directory: str | os.PathLike[str] | None) -> tuple[Path, Manifest] | None:
    if directory is None:
        return None
    try:
        env = Path(os.path.realpath(Path(directory) / "current"))
        stamp = os.stat(env / MANIFEST).st_mtime_ns
    except OSError:
        return None
    manifest = _read_manifest(env, stamp)
    return None if manifest is None or manifest.python != python_tag() else (env, manifest)


@functools.lru_cache(maxsize=8)
def _read_manifest(env: Path, stamp: int) -> Manifest | None:
    try:
        return Manifest.from_dict(json.loads((env / MANIFEST).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def project_name(requirement: str) -> str:
    """The normalized project name of a requirement (``Pandas>=2`` -> ``pandas``)."""
    match = _NAME.match(requirement)
    if match is None:
        raise PackagesError(f"not a package requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requested(directory: Path, add: tuple[str, ...] = (),
              defaults: tuple[str, ...] = DEFAULT_REQUIREMENTS) -> tuple[str, ...]:
    """The defaults, then ``requirements.txt``, then ``add``; a later entry for the same project wins."""
    chosen: dict[str, str] = {}
    listed = directory / "requirements.txt"
    lines = listed.read_text(encoding="utf-8").splitlines() if listed.exists() else []
    for requirement in (*defaults, *lines, *add):
        requirement = requirement.split("#", 1)[0].strip()
        if requirement:
            chosen[project_name(requirement)] = requirement
    return tuple(chosen.values())


def install(directory: str | os.PathLike[str], add: tuple[str, ...] = (), *, quiet: bool = True,
            defaults: tuple[str, ...] = DEFAULT_REQUIREMENTS, pip_options: tuple[str, ...] = ()) -> Path:
    """Make ``directory/current`` hold the requested set (installing only when it changed); returns the env.

    ``defaults`` and ``pip_options`` (e.g. ``--no-index``) exist for tests that install a local wheel offline.

    Raises:
        PackagesError: pip failed (nothing is swapped: the previous set stays current).
    """
    root = Path(directory)
    (root / "envs").mkdir(parents=True, exist_ok=True)
    wanted = requested(root, add, defaults)
    digest = hashlib.sha256("\n".join([python_tag(), *sorted(wanted)]).encode()).hexdigest()[:16]
    env = root / "envs" / digest
    if not (env / MANIFEST).exists():
        _build(env, wanted, quiet=quiet, pip_options=pip_options)
    _point_current(root, env)
    # The user's additions and overrides only: the defaults follow rlm's pins when it is upgraded.
    own = [r for r in wanted if r not in defaults]
    (root / "requirements.txt").write_text("".join(f"{r}\n" for r in own), encoding="utf-8")
    _prune(root, keep={env, _previous(root)})
    return env


def _build(env: Path, wanted: tuple[str, ...], *, quiet: bool, pip_options: tuple[str, ...]) -> None:
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=env.parent))
    try:
        command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-warn-conflicts",
                   "--no-input", *pip_options, "--target", str(staging), *wanted]
        done = subprocess.run(command + (["-q"] if quiet else []), capture_output=quiet, text=True)
        if done.returncode != 0:
            detail = (done.stderr or "").strip().splitlines()[-5:] if quiet else []
            raise PackagesError(f"pip could not install {' '.join(wanted)}: {' | '.join(detail)}")
        manifest = Manifest(wanted, _modules(staging, wanted), python_tag())
        (staging / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=1), encoding="utf-8")
        os.chmod(staging, 0o755)  # mkdtemp made it 0700
        os.rename(staging, env)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _modules(target: Path, wanted: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The top-level import names (with versions) of the requested projects installed in ``target``."""
    from importlib import metadata  # with email's parser, ~5 ms: only when the manifest is (re)built

    names = {project_name(r) for r in wanted}
    found: list[tuple[str, str]] = []
    for dist in metadata.distributions(path=[str(target)]):
        if project_name(dist.metadata["Name"]) not in names:
            continue
        for module in _top_level(dist):
            found.append((module, dist.version))
    return tuple(sorted(set(found)))


def _top_level(dist: metadata.Distribution) -> list[str]:
    listed = dist.read_text("top_level.txt")
    if listed:
        return [line.strip() for line in listed.splitlines() if line.strip() and not line.startswith("_")]
    tops = set()
    for file in dist.files or []:
        top = file.parts[0]
        if top.endswith((".dist-info", ".libs", ".data")) or top in _SKIP_TOP or top.startswith("_"):
            continue
        name = top[:-3] if top.endswith(".py") else top.split(".")[0]
        if name.isidentifier():
            tops.add(name)
    return sorted(tops)


def _point_current(root: Path, env: Path) -> None:
    """Swap ``current`` to ``env`` atomically (a new link renamed over the old one)."""
    link = root / "current"
    target = os.path.relpath(env, root)
    if link.is_symlink() and os.readlink(link) == target:
        return
    if link.is_symlink():
        (root / ".previous").unlink(missing_ok=True)
        os.symlink(os.readlink(link), root / ".previous")
    staging = root / f".current-{os.getpid()}"
    staging.unlink(missing_ok=True)
    os.symlink(target, staging)
    os.replace(staging, link)


def _previous(root: Path) -> Path | None:
    link = root / ".previous"
    return Path(os.path.realpath(link)) if link.is_symlink() else None


def _prune(root: Path, keep: set[Path | None]) -> None:
    """Remove installed sets other than the current and the previous one (a running sandbox may use that)."""
    kept = {os.path.realpath(k) for k in keep if k is not None}
    for entry in (root / "envs").iterdir():
        if os.path.realpath(entry) not in kept:
            shutil.rmtree(entry, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m rlm.sandbox.packages install|add|list [--dir DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m rlm.sandbox.packages",
                                     description="The packages model code can import inside rlm's sandbox.")
    parser.add_argument("--dir", default=default_dir(), help="where the sandbox packages live (default: %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("install", help="install the requested set (idempotent)")
    adding = commands.add_parser("add", help="add packages to the set and install it")
    adding.add_argument("requirements", nargs="+", metavar="NAME[==VERSION]")
    commands.add_parser("list", help="print the importable modules")
    args = parser.parse_args(argv)
    try:
        if args.command != "list":
            install(args.dir, tuple(getattr(args, "requirements", ())), quiet=False)
    except PackagesError as exc:
        print(f"rlm.sandbox.packages: {exc}", file=sys.stderr)
        return 1
    modules = available(args.dir)
    print("\n".join(modules) if modules else "(no sandbox packages installed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
