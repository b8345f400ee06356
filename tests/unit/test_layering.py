"""The layering rules of DESIGN.md section 3, checked on the source.

Two checks of the same rules: the tests here read each file's own imports (any import
statement, lazy and TYPE_CHECKING ones too); ``lint-imports`` (the contracts in
pyproject.toml's ``[tool.importlinter]``) also follows chains of imports through other
packages. ``test_import_linter_contracts_are_kept`` runs it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "bollard"
LINT_TIMEOUT = 180.0  # seconds; the whole check takes a few

# package -> bollard packages it must never import (cli, the top, has its own rule below)
FORBIDDEN = {
    "domain": {"durable", "store", "server", "cells", "agent", "sim", "power", "fleet", "cli"},
    "durable": {"domain", "store", "server", "cells", "agent", "sim", "power", "fleet", "cli"},
    "byte_relay": {
        "domain",
        "durable",
        "store",
        "server",
        "cells",
        "agent",
        "sim",
        "power",
        "fleet",
        "cli",
    },
    "store": {"server", "cells", "agent", "sim", "fleet", "cli"},
    "server": {"cells", "agent", "sim", "fleet", "cli"},
    "cells": {"agent", "sim", "fleet", "cli"},  # the API server in front of cells
    "agent": {"server", "cells", "store", "fleet", "cli"},
    "sim": {"server", "cells", "store", "agent", "power", "fleet", "cli"},
    "power": {"server", "cells", "store", "agent", "fleet", "cli"},
    "fleet": {"server", "cells", "store", "sim", "power", "cli"},
}
# The cli asks the server's API for everything; it imports the server and the store only to
# run the server and manage its database (`bollard server`, `bollard db`), through these.
CLI_ENTRY_POINTS = {
    "bollard.cells.main",
    "bollard.cells.config",
    "bollard.server.main",
    "bollard.server.config",
    "bollard.store.db",
    "bollard.store.migrate",
}
# The only agent modules that may import bollard.sim: the sim driver.
AGENT_SIM_DRIVER = "agent/drivers/sim*.py"


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str, src: Path) -> bool:
    path = src.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imported_modules(path: Path, src: Path = SRC) -> set[str]:
    """The modules of ``src``'s package that ``path`` imports: ``from a.b import c`` is
    ``a.b.c`` when that is a module, else ``a.b``; relative imports are resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _module_name(path, src).split(".")
                if path.name != "__init__.py":
                    package.pop()
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if _is_module(candidate, src) else base)
    root = src.name
    return {name for name in found if name == root or name.startswith(f"{root}.")}


def _imports(path: Path) -> set[str]:
    """The bollard packages (and top-level modules) that ``path`` imports."""
    return {name.split(".")[1] for name in _imported_modules(path) if name.count(".")}


def _files(package: str) -> list[Path]:
    directory = SRC / package
    return sorted(directory.rglob("*.py")) if directory.is_dir() else [SRC / f"{package}.py"]


def _import_cycles(src: Path, package: str) -> list[list[str]]:
    """The import cycles among the modules of ``package`` (a dotted name under ``src``):
    each strongly connected component of more than one module, or a module importing
    itself (Tarjan's algorithm)."""
    directory = src.parent.joinpath(*package.split("."))
    modules = {_module_name(path, src): path for path in sorted(directory.rglob("*.py"))}
    graph = {name: _imported_modules(path, src) & set(modules) for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in sorted(graph[module]):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component: list[str] = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1 or module in graph[module]:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_every_package_has_rules() -> None:
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in SRC.glob("*.py")} - {"__init__", "__main__"}
    assert packages | modules == set(FORBIDDEN) | {"cli"}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_layering(package: str) -> None:
    files = _files(package)
    assert files, f"no sources found for {package}"
    offences = [
        f"{path.relative_to(SRC)} imports bollard.{imported}"
        for path in files
        for imported in sorted(_imports(path) & FORBIDDEN[package])
    ]
    assert offences == []


def test_cli_reaches_server_and_store_only_through_their_entry_points() -> None:
    offences = [
        f"{path.relative_to(SRC)} imports {module}"
        for path in _files("cli")
        for module in sorted(_imported_modules(path))
        if module.split(".")[1:2] in (["server"], ["store"]) and module not in CLI_ENTRY_POINTS
    ]
    assert offences == []


def test_agent_imports_sim_only_in_its_sim_driver() -> None:
    offences = [
        f"{path.relative_to(SRC)} imports bollard.sim"
        for path in _files("agent")
        if "sim" in _imports(path) and not fnmatch(str(path.relative_to(SRC)), AGENT_SIM_DRIVER)
    ]
    assert offences == []


def test_cli_modules_import_one_another_without_cycles() -> None:
    assert _import_cycles(SRC, "bollard.cli") == []


def test_import_linter_contracts_mirror_the_table() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    forbidden: dict[str, set[str]] = {}
    for contract in config["contracts"]:
        if contract["type"] == "forbidden":
            for source in contract["source_modules"]:
                package = source.removeprefix("bollard.")
                names = {m.removeprefix("bollard.") for m in contract["forbidden_modules"]}
                forbidden.setdefault(package, set()).update(names)
    missing = {
        package: sorted(banned - forbidden.get(package, set()))
        for package, banned in FORBIDDEN.items()
        if banned - forbidden.get(package, set())
    }
    assert missing == {}


def test_import_linter_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    assert lint_imports.is_file(), f"{lint_imports} is missing: install the `test` extra"
    done = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=LINT_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_checker_sees_imports(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("from bollard.server.app import create_app\nimport bollard.agent.process\n")
    assert _imports(sample) == {"server", "agent"}


def test_the_checker_resolves_modules_imported_from_packages(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text(
        "from bollard import durable\n"
        "from bollard.store import migrate\n"
        "from bollard.cli.output import console\n"
    )
    assert _imported_modules(sample) == {
        "bollard.durable",
        "bollard.store.migrate",
        "bollard.cli.output",
    }
    assert _imports(sample) == {"durable", "store", "cli"}


def test_the_cycle_finder_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    src = tmp_path / "pkg"
    (src / "cmds").mkdir(parents=True)
    for path in (src / "__init__.py", src / "cmds" / "__init__.py"):
        path.write_text("")
    (src / "cmds" / "a.py").write_text("def f() -> None:\n    from pkg.cmds import b\n")
    (src / "cmds" / "b.py").write_text("from .c import g\n")
    (src / "cmds" / "c.py").write_text("from . import a\n\ndef g() -> None: ...\n")
    (src / "cmds" / "leaf.py").write_text("import pkg.cmds.leaf\n")
    assert _import_cycles(src, "pkg.cmds") == [
        ["pkg.cmds.a", "pkg.cmds.b", "pkg.cmds.c"],
        ["pkg.cmds.leaf"],
    ]
    (src / "cmds" / "c.py").write_text("def g() -> None: ...\n")
    (src / "cmds" / "leaf.py").write_text("")
    assert _import_cycles(src, "pkg.cmds") == []
