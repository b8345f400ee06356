"""The HA scenario suite: each file of tests/scenarios/ (not pending/) is one test, run with
`bollard sim scenario run FILE -o json` as a real process, which starts a cluster of its own
(server and sim agents on a free port), plays the fault timeline, watches the must-nevers on
the sim fabric and checks the expected end state. A failing scenario shows its timeline.

Each scenario has its own cluster, data dir and ports, so they run several at a time
(BOLLARD_SCENARIO_JOBS, default 3): the runs of the selected tests start, in file order, as
soon as the module's first test starts; each test waits for its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
FILES = sorted(SCENARIOS.glob("*.yaml"))
RUN_TIMEOUT = 240.0  # one scenario's run, set-up and tear-down included
JOBS = max(1, int(os.environ.get("BOLLARD_SCENARIO_JOBS", "3")))

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOLLARD_")}
    env.update(BOLLARD_CONFIG_DIR=str(root / "config"), PYTHONUNBUFFERED="1")
    return env


def _run(path: Path, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "bollard",
            "sim",
            "scenario",
            "run",
            str(path),
            "-o",
            "json",
            "--data-dir",
            str(root / "data"),
        ],
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[Path, Future[subprocess.CompletedProcess[str]]]]:
    """The runs of the scenarios whose tests are selected, JOBS at a time, in file order."""
    selected = [
        item.callspec.params["path"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_scenario" and hasattr(item, "callspec")
    ]
    with ThreadPoolExecutor(max_workers=JOBS, thread_name_prefix="scenario") as pool:
        futures = {
            path: pool.submit(_run, path, tmp_path_factory.mktemp(path.stem)) for path in selected
        }
        yield futures
        for future in futures.values():
            future.cancel()  # those not started yet (a run stopped early)


def _report(result: dict[str, Any]) -> str:
    lines = [f"{e['t']:7.2f}  {e['kind']:<6}  {e['text']}" for e in result.get("timeline", [])]
    return "\n".join(lines)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_scenario(path: Path, runs: dict[Path, Future[subprocess.CompletedProcess[str]]]) -> None:
    done = runs[path].result(timeout=RUN_TIMEOUT * (1 + len(runs) // JOBS))
    assert "Traceback" not in done.stderr, done.stderr
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"no JSON result (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    summary = f"{path.name}: {result.get('error')}\n" + "\n".join(
        result.get("violations", []) + result.get("misses", [])
    )
    assert result["passed"], summary + "\n--- timeline ---\n" + _report(result)
    assert done.returncode == 0, done.stderr
    assert result["violations"] == [] and result["fabric_reads"] > 10, result


BROKEN = """\
name: a run that must fail
cluster:
  nodes: [node1]
  vms:
    - {name: a, node: node1}
never:
  running: [a]                # a runs from the start: a violation at once
expect:
  within: 1
  vms:
    a: {state: stopped}       # it keeps running: a miss
"""


def test_a_miss_and_a_violation_fail_the_run(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    done = _run(path, tmp_path)
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["passed"] is False
    assert result["violations"] == ["a runs on node1 but must stay stopped"], result
    assert result["misses"] == ["expect (line 8): vm a: expected stopped, it runs on node1"]
    assert result["data_dir"] == str(tmp_path / "data")
    assert (tmp_path / "data" / "logs" / "server.log").is_file()
    kinds = [e["kind"] for e in result["timeline"]]
    assert "NEVER" in kinds and "miss" in kinds and kinds[-2:] == ["result", "result"], kinds
