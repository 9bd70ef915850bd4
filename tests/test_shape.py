"""The shape of the code, checked: which way imports point, no import cycles, the exception tree, ``__all__``.

Imports are read from the source with ``ast`` (module-level, function-level and
``TYPE_CHECKING`` ones alike), so a lazy or type-only import counts as much as
any other.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import networkx as nx
import pytest

from conftest import REPO

#: Folders mapped into the rlm namespace (pyproject's package-dir).
MAPPED = {"sandbox": "rlm.sandbox", "agents": "rlm.agents", "tui": "rlm.tui", "benchmarks": "rlm.benchmarks"}
#: What the core may not import: the layers above it.
ABOVE_CORE = ("rlm.agents", "rlm.tui", "rlm.benchmarks", "rlm.service")
#: rlm/ modules that are not core: the command line and its command modules.
NOT_CORE = {"rlm.cli", "rlm.memory_cli", "rlm.models_cli", "rlm.sessions_cli"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in (REPO / "rlm").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for folder, package in MAPPED.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            name = ".".join((package, *(parts[:-1] if parts[-1] == "__init__" else parts)))
            found[name.rstrip(".")] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path) -> set[str]:
    """Every rlm module ``module`` imports, wherever the import statement is."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {_known(name) for name in names if name.startswith("rlm") and _known(name)}


def _known(name: str) -> str:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _graph(modules: set[str]) -> nx.DiGraph:
    graph = nx.DiGraph()
    for module in modules:
        graph.add_node(module)
        for target in _imports(module, MODULES[module]):
            if target in modules and target != module and not module.startswith(target + "."):
                graph.add_edge(module, target)
    return graph


def _under(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _is_core(module: str) -> bool:
    return _under(module, ("rlm",)) and not _under(module, (*ABOVE_CORE, "rlm.sandbox", "rlm.testing")) \
        and module not in NOT_CORE


def test_the_core_imports_nothing_from_the_layers_above_it():
    wrong = {module: sorted(t for t in _imports(module, MODULES[module]) if _under(t, ABOVE_CORE))
             for module in MODULES if _is_core(module)}
    assert {m: t for m, t in wrong.items() if t} == {}


def test_the_jail_side_of_the_sandbox_imports_nothing_of_rlm_but_itself():
    for name in ("worker", "zygote", "protocol", "bigcontext"):
        module = f"rlm.sandbox.{name}"
        outside = {t for t in _imports(module, MODULES[module]) if not t.startswith("rlm.sandbox.")} - {"rlm.sandbox"}
        assert outside == set(), (module, outside)


def test_there_are_no_import_cycles_type_only_ones_included():
    core = {m for m in MODULES if _is_core(m) or m.startswith("rlm.sandbox")}
    cycles = list(nx.simple_cycles(_graph(core)))
    assert cycles == []


def test_every_exception_rlm_raises_for_a_caller_is_in_the_tree():
    from rlm import errors

    documented = errors.__doc__ or ""
    strays = []
    for module in MODULES:
        if module.startswith(("rlm.tui", "rlm.benchmarks.peer_driver")) or module.endswith("__main__"):
            continue
        try:
            loaded = importlib.import_module(module)
        except ImportError:
            continue
        for name, value in vars(loaded).items():
            if inspect.isclass(value) and issubclass(value, Exception) and value.__module__ == module \
                    and not name.startswith("_"):
                if not issubclass(value, errors.RLMError) or name not in documented:
                    strays.append(f"{module}.{name}")
    # Raised and caught inside one part, never by a caller: the sandbox's frames and regex budget, the
    # service's wire, the scripted server's HTTP errors.
    allowed = {"rlm.sandbox.protocol.FrameError", "rlm.sandbox.bigcontext.RegexTimeout",
               "rlm.sandbox.bigcontext.ContextTooLarge", "rlm.service.wire.WireError",
               "rlm.testing.openai_api.ApiError"}
    assert sorted(set(strays) - allowed) == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _is_core(m) and m.count(".") >= 1
                                          and not m.endswith("__main__")))
def test_public_core_modules_declare_all(module):
    loaded = importlib.import_module(module)
    assert hasattr(loaded, "__all__"), f"{module} has no __all__"
    missing = [name for name in loaded.__all__ if not hasattr(loaded, name)]
    assert missing == []


def test_no_source_file_is_over_800_lines():
    long = {str(path.relative_to(REPO)): n for path in MODULES.values()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > 800}
    assert long == {}


def test_every_type_ignore_says_why_on_its_line():
    import re

    silent = re.compile(r"#\s*type:\s*ignore(\[[^\]]*\])?\s*$")
    bare = [f"{path.relative_to(REPO)}:{number}" for path in MODULES.values()
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
            if silent.search(line)]
    assert bare == []


def test_every_package_folder_is_in_pyproject():
    import tomllib

    packages = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    assert folders - packages == set()


def test_the_modules_can_be_walked():
    import rlm

    assert {m.name for m in pkgutil.iter_modules(rlm.__path__)} >= {"agent", "runner", "lm", "service"}
