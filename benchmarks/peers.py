"""Peer RLM libraries, each installed from PyPI into its own venv under a cache dir.

Peers never enter our venv: the official ``rlms`` imports as ``rlm`` and would
shadow us. A peer is run by a *driver* script (``benchmarks/peer_driver_*.py``,
standard library plus the peer only) executed by the peer venv's python; the
request goes in as one JSON object on stdin and the result comes back as one
JSON object on the last line of stdout.

Cache dir: ``$RLM_BENCH_CACHE`` or ``~/.cache/rlm-bench``; each peer lives in
``<cache>/peers/<name>/venv``. Installing happens at benchmark time (a benchmark
step, not a test or an rlm run) and is skipped when the venv already has the
pinned version.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm.errors import RLMError

HERE = Path(__file__).resolve().parent


class PeerError(RLMError):
    """A peer could not be installed or its driver failed; ``peer`` names it."""

    def __init__(self, message: str, *, peer: str) -> None:
        super().__init__(message)
        self.peer = peer


@dataclass(frozen=True)
class PeerSpec:
    """A peer library: PyPI requirement, the Python minor version it needs, its import name."""

    name: str
    requirement: str
    python: str  # "3.11", "3.12"
    module: str


PEERS: dict[str, PeerSpec] = {
    "rlms": PeerSpec("rlms", "rlms==0.1.3", "3.11", "rlm"),
    "pyrlm-runtime": PeerSpec("pyrlm-runtime", "pyrlm-runtime==1.0.3", "3.12", "pyrlm_runtime"),
    "rlmflow": PeerSpec("rlmflow", "rlmflow==0.3.2", "3.11", "rlmflow"),
    "droste": PeerSpec("droste", "droste==0.26.0", "3.11", "droste"),
}


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where peer venvs live (``$RLM_BENCH_CACHE`` or ``~/.cache/rlm-bench``)."""
    env = os.environ if env is None else env
    if env.get("RLM_BENCH_CACHE"):
        return Path(env["RLM_BENCH_CACHE"]).expanduser()
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rlm-bench"


def find_python(version: str) -> Path:
    """An interpreter of ``version`` (``3.12``): ours if it matches, else pyenv's, else on PATH."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return Path(sys.base_prefix) / "bin" / f"python{version}"
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for candidate in sorted(pyenv.glob(f"{version}.*"), reverse=True):
        if (candidate / "bin" / "python").exists():
            return candidate / "bin" / "python"
    found = shutil.which(f"python{version}")
    if found:
        return Path(found)
    raise PeerError(f"no Python {version} interpreter found (pyenv or PATH)", peer=version)


def venv_python(spec: PeerSpec, root: Path | None = None) -> Path:
    return (root or cache_dir()) / "peers" / spec.name / "venv" / "bin" / "python"


def ensure_peer(name: str, root: Path | None = None, *, log: Any = None) -> Path:
    """The peer venv's python, creating the venv and installing the pinned peer if needed."""
    spec = PEERS.get(name)
    if spec is None:
        raise PeerError(f"unknown peer {name!r}; known: {', '.join(PEERS)}", peer=name)
    python = venv_python(spec, root)
    if python.exists() and _installed(python, spec):
        return python
    venv = python.parent.parent
    if log is not None:
        print(f"[bench] installing {spec.requirement} into {venv} ...", file=log, flush=True)
    try:
        if not python.exists():
            subprocess.run([str(find_python(spec.python)), "-m", "venv", str(venv)], check=True,
                           capture_output=True, text=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", spec.requirement], check=True,
                       capture_output=True, text=True, timeout=1800)
    except subprocess.CalledProcessError as exc:
        raise PeerError(f"installing {spec.requirement} failed: {(exc.stderr or exc.stdout or '')[-800:]}",
                        peer=name) from None
    except subprocess.TimeoutExpired:
        raise PeerError(f"installing {spec.requirement} timed out", peer=name) from None
    return python


def _installed(python: Path, spec: PeerSpec) -> bool:
    version = spec.requirement.split("==", 1)[1]
    probe = subprocess.run([str(python), "-m", "pip", "show", spec.name], capture_output=True, text=True)
    return probe.returncode == 0 and f"Version: {version}" in probe.stdout


def driver_path(name: str) -> Path:
    """The driver script for a peer (``peer_driver_rlms.py`` for ``rlms``)."""
    return HERE / f"peer_driver_{name.replace('-', '_')}.py"


def run_driver(python: Path, driver: Path, request: dict[str, Any], *, timeout: float,
               env: Mapping[str, str] | None = None, cwd: Path | None = None) -> dict[str, Any]:
    """Run ``driver`` with the peer's python; ``request`` on stdin, the last stdout line parsed as JSON.

    The environment is ours minus ``PYTHONPATH``/``VIRTUAL_ENV`` (so our ``rlm`` can never be imported
    by the peer) plus ``env``.
    """
    child_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    child_env.update(env or {})
    try:
        proc = subprocess.run([str(python), str(driver)], input=json.dumps(request), capture_output=True,
                              text=True, timeout=timeout, env=child_env, cwd=str(cwd) if cwd else None)
    except subprocess.TimeoutExpired:
        raise PeerError(f"{driver.name} timed out after {timeout:.0f}s", peer=driver.stem) from None
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise PeerError(f"{driver.name} exited {proc.returncode} without a JSON result: "
                        f"{(proc.stderr or proc.stdout)[-800:]}", peer=driver.stem) from None
    if not isinstance(result, dict):
        raise PeerError(f"{driver.name} printed {type(result).__name__}, not an object", peer=driver.stem)
    return result


def openai_model_name(model: str) -> str:
    """A litellm model string as an OpenAI-compatible endpoint names it (``openai/x`` -> ``x``)."""
    return model.split("/", 1)[1] if model.startswith(("openai/", "hosted_vllm/", "vllm/")) else model
