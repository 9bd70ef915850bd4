"""The sandbox's own package environment: installed offline from a local wheel, bound read-only, importable."""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from rlm.config import SandboxConfig
from rlm.sandbox import packages
from rlm.sandbox.host import Sandbox


def make_wheel(directory: Path, name: str = "tinymod", version: str = "0.1") -> Path:
    """A pure-Python wheel written by hand (no build backend, no network): ``import tinymod`` gives ``ANSWER``."""
    files = {
        f"{name}/__init__.py": b"ANSWER = 42\n",
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{name}-{version}.dist-info/WHEEL":
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for path, data in files.items())
    record += f"{name}-{version}.dist-info/RECORD,,\n"
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{name}-{version}.dist-info/RECORD", record)
    return wheel


@pytest.fixture
def installed(tmp_path: Path) -> tuple[Path, Path]:
    wheel = make_wheel(tmp_path)
    root = tmp_path / "sandbox-packages"
    env = packages.install(root, (f"tinymod @ {wheel.as_uri()}",), defaults=(), pip_options=("--no-index",))
    return root, env


def test_install_records_the_set_and_is_idempotent(installed: tuple[Path, Path]) -> None:
    root, env = installed
    assert os.path.realpath(root / "current") == str(env)
    assert packages.available(root) == ("tinymod 0.1",)
    assert (root / "requirements.txt").read_text().startswith("tinymod @ file://")  # an addition is kept
    stamp = (env / packages.MANIFEST).stat().st_mtime_ns
    again = packages.install(root, defaults=(), pip_options=("--no-index",))  # reads requirements.txt, runs no pip
    assert again == env and (env / packages.MANIFEST).stat().st_mtime_ns == stamp


def test_a_failed_install_keeps_the_current_set(installed: tuple[Path, Path]) -> None:
    root, env = installed
    with pytest.raises(packages.PackagesError, match="no-such-package"):
        packages.install(root, ("no-such-package-anywhere==1.0",), defaults=(), pip_options=("--no-index",))
    assert os.path.realpath(root / "current") == str(env) and packages.available(root) == ("tinymod 0.1",)


def test_requirements_merge_by_project_name(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("Pandas==2.3.3  # pinned back\nscipy\n")
    wanted = packages.requested(tmp_path, ("scipy==1.16.3",))
    assert wanted == ("numpy==2.4.6", "Pandas==2.3.3", "regex==2026.12.2", "scipy==1.16.3")
    with pytest.raises(packages.PackagesError, match="not a package requirement"):
        packages.requested(tmp_path, ("==1.0",))


def test_nothing_installed_means_the_standard_library_only(tmp_path: Path) -> None:
    assert packages.current_env(tmp_path / "missing") is None and packages.available(None) == ()


def test_the_jail_imports_the_installed_set(installed: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = installed
    context = tmp_path / "context.txt"
    context.write_text("x\n")
    with Sandbox(context, config=SandboxConfig(cell_timeout_s=20, packages_dir=str(root))) as box:
        result = box.execute("import sys\nprint('tinymod' in sys.modules)\nimport tinymod\nprint(tinymod.ANSWER)")
    assert (result.error, result.stdout) == (None, "False\n42\n")
    with Sandbox(context, config=SandboxConfig(cell_timeout_s=20, packages_dir=None)) as box:
        result = box.execute("import tinymod")
    assert result.error is not None and "ModuleNotFoundError" in result.error
