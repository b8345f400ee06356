"""One clock: in `bollard.server`, time is read, slept and waited for only through
`server/clock.py` (so a test, or a simulation, controls all of it)."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "src" / "bollard" / "server"
CLOCK = SERVER / "clock.py"

# module -> the attributes of it that read or spend time
TIMED = {
    "time": {"time", "monotonic", "perf_counter", "sleep", "time_ns", "monotonic_ns"},
    "asyncio": {"sleep", "wait_for", "timeout", "timeout_at"},
    "datetime": {"now", "utcnow", "today"},
}


def _uses_of_time(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in TIMED:
            found += [
                f"{path.name}:{node.lineno}: from {node.module} import {alias.name}"
                for alias in node.names
                if alias.name in TIMED[node.module]
            ]
        elif isinstance(node, ast.Attribute):
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else None
            if name in TIMED and node.attr in TIMED[name]:
                found.append(f"{path.name}:{node.lineno}: {name}.{node.attr}")
            elif node.attr == "time" and isinstance(owner, ast.Call):  # loop.time()
                found.append(f"{path.name}:{node.lineno}: <loop>.time")
    return found


def test_the_server_reads_time_only_through_its_clock() -> None:
    files = [p for p in sorted(SERVER.rglob("*.py")) if p != CLOCK]
    assert files
    offences = [use for path in files for use in _uses_of_time(path)]
    assert offences == []


def test_the_checker_sees_each_way_of_reading_time(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text(
        "import asyncio, time\n"
        "from datetime import datetime\n"
        "from time import monotonic\n"
        "a = time.monotonic()\n"
        "b = datetime.now()\n"
        "async def f():\n"
        "    await asyncio.sleep(1)\n"
        "    await asyncio.wait_for(g(), 1)\n"
        "    return asyncio.get_running_loop().time()\n"
    )
    assert len(_uses_of_time(sample)) == 6
