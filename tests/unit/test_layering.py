"""The layering rules of DESIGN.md section 3, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "bollard"

# package -> bollard packages it must never import
FORBIDDEN = {
    "domain": {"store", "server", "agent", "sim", "cli", "power"},
    "store": {"server", "agent", "sim", "cli"},
    "server": {"agent", "sim", "cli"},
    "agent": {"server", "store", "cli"},
    "sim": {"server", "store", "agent", "cli"},
    "power": {"server", "store", "agent", "cli"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name.split(".")[1] for name in found if name.startswith("bollard.") and name.count(".")}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_layering(package: str) -> None:
    files = sorted((SRC / package).rglob("*.py"))
    assert files, f"no sources found for {package}"
    offences = [
        f"{path.relative_to(SRC)} imports bollard.{imported}"
        for path in files
        for imported in sorted(_imports(path) & FORBIDDEN[package])
    ]
    assert offences == []


def test_the_checker_sees_imports(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("from bollard.server.app import create_app\nimport bollard.agent.process\n")
    assert _imports(sample) == {"server", "agent"}
