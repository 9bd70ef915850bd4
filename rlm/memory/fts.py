"""DuckDB's ``fts`` extension, loaded offline from its PyPI package.

DuckDB normally downloads extensions on first use; these machines have no
internet. The PyPI package ``duckdb-ext-fts`` (version ``1.4.4.20260205`` for
``duckdb==1.4.4``) ships the binary at
``duckdb_ext/extensions/v<duckdb version>/<platform>/fts.duckdb_extension``,
which is exactly DuckDB's own extension-directory layout. So we point the
connection's ``extension_directory`` at the package's ``extensions`` folder and
turn automatic install and load off: ``LOAD fts`` then reads the local file
and never touches the network, and a missing or mismatched package fails at
once with :class:`FTSUnavailable` instead of hanging on a download.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import duckdb

from rlm.errors import RLMError

__all__ = ['PACKAGE_HINT', 'FTSUnavailable', 'extension_directory', 'offline_config', 'load_fts']

PACKAGE_HINT = "pip install duckdb-ext-fts==1.4.4.20260205  # must match duckdb==" + duckdb.__version__


class FTSUnavailable(RLMError):
    """DuckDB's fts extension is not installed for this DuckDB version; the message says how to fix it."""


def extension_directory() -> Path | None:
    """The ``extensions`` folder of the installed ``duckdb-ext-*`` packages, or ``None``."""
    spec = importlib.util.find_spec("duckdb_ext")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "extensions"
        if path.is_dir():
            return path
    return None


def offline_config() -> dict[str, Any]:
    """``duckdb.connect(config=...)`` settings that make extension loading local-only."""
    config: dict[str, Any] = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    directory = extension_directory()
    if directory is not None:
        config["extension_directory"] = str(directory)
    return config


def load_fts(conn: duckdb.DuckDBPyConnection) -> None:
    """``LOAD fts`` from the package's folder.

    Raises:
        FTSUnavailable: the package is missing or built for another DuckDB version.
    """
    try:
        conn.execute("LOAD fts")
    except duckdb.Error as exc:
        where = extension_directory()
        raise FTSUnavailable(
            f"cannot load DuckDB's fts extension for duckdb {duckdb.__version__} "
            f"(looked in {where or 'no duckdb_ext package'}): {str(exc).splitlines()[0]}; "
            f"install it with: {PACKAGE_HINT}"
        ) from exc
