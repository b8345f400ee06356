"""End-to-end fixtures: a real cluster (`bollard up --detach`) and a CLI runner.

Everything runs as real processes through ``sys.executable -m bollard``; the CLI finds the
cluster through a context file in a temporary BOLLARD_CONFIG_DIR (never ~/.config). Every
wait polls with a deadline; `bollard down` always runs at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bollard.cli.client import CliError
from bollard.cli.cluster import ClusterRecord, is_running, read_cluster

T = TypeVar("T")
CLI_TIMEOUT = 60.0
UP_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting until {what} (last: {last!r})")
        time.sleep(0.1)  # polling interval, not synchronisation


@dataclass
class Cli:
    """Runs `bollard ...` as a subprocess with a controlled environment."""

    env: dict[str, str]
    data_dir: Path
    history: list[str] = field(default_factory=list)

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        self.history.append(" ".join(args))
        return subprocess.run(
            [sys.executable, "-m", "bollard", *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, timeout: float = CLI_TIMEOUT) -> str:
        result = self.run(*args, timeout=timeout)
        assert result.returncode == 0, (
            f"`bollard {' '.join(args)}` exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result.stdout

    def json(self, *args: str, timeout: float = CLI_TIMEOUT) -> Any:
        out = self.ok(*args, "-o", "json", timeout=timeout)
        return json.loads(out)

    def one_line_error(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Run a command that must fail with exactly one line on stderr; return that line."""
        result = self.run(*args, env=env)
        assert result.returncode != 0, f"`bollard {' '.join(args)}` succeeded: {result.stdout}"
        assert "Traceback" not in result.stderr, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
        assert lines[0].startswith("error: "), lines[0]
        return lines[0]

    # Helpers the tests reach through the fixture (test modules do not import conftest).
    wait_until = staticmethod(wait_until)
    free_port = staticmethod(free_port)

    def cluster(self) -> ClusterRecord:
        record = read_cluster(self.data_dir)
        assert record is not None, f"no cluster.json in {self.data_dir}"
        return record


def _clean_env(config_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOLLARD_")}
    env.update(BOLLARD_CONFIG_DIR=str(config_dir), PYTHONUNBUFFERED="1", COLUMNS="200")
    return env


def _logs(data_dir: Path) -> str:
    parts = []
    for log in sorted((data_dir / "logs").glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()[-25:]
        parts.append(f"--- {log.name} ---\n" + "\n".join(lines))
    return "\n".join(parts)


def _kill_leftovers(data_dir: Path) -> None:
    """Safety net if `bollard down` failed: kill whatever cluster.json still lists."""
    try:
        record = read_cluster(data_dir)
    except CliError:  # a damaged file must not hide the test's own failure
        return
    for proc in record.processes if record else []:
        if is_running(proc.pid, proc.argv):
            os.kill(proc.pid, signal.SIGKILL)


# Agents try the restarted server again within half a second (not up to the default 5 s):
# the tests that kill or restart the server wait for every agent to be back.
QUICK_RECONNECT = ("--agent-reconnect-max", "0.5")


@contextmanager
def local_cluster(root: Path, *up_args: str, env: dict[str, str] | None = None) -> Iterator[Cli]:
    """A cluster started by `bollard up --detach` under `root`, always stopped afterwards;
    `env`: more environment for its processes (e.g. BOLLARD_RECONCILE_SCAN)."""
    cli = Cli(env={**_clean_env(root / "config"), **(env or {})}, data_dir=root / "data")
    try:
        started = cli.run(
            "up", "--detach", *up_args, "--data-dir", str(cli.data_dir),
            "--port", str(free_port()), *QUICK_RECONNECT, timeout=UP_TIMEOUT,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr + _logs(cli.data_dir)
        yield cli
    finally:
        cli.run("down", "--data-dir", str(cli.data_dir), timeout=60)
        _kill_leftovers(cli.data_dir)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    root = tmp_path_factory.mktemp("cluster")
    data_dir = root / "data"
    cli = Cli(env=_clean_env(root / "config"), data_dir=data_dir)
    port = free_port()
    try:
        started = cli.run(
            "up", "--detach", "--nodes", "2", "--sim-latency", "0.05", "--heartbeat", "1",
            "--data-dir", str(data_dir), "--port", str(port), *QUICK_RECONNECT,
            timeout=UP_TIMEOUT,
        )  # fmt: skip
        assert started.returncode == 0, (
            f"bollard up failed ({started.returncode}):\n{started.stdout}\n{started.stderr}\n"
            + _logs(data_dir)
        )
        # The tests on this shared cluster SIGKILL and restart agents. With 1 s heartbeats
        # the default `health.dead_after` (3) would declare such a node dead, and fence it,
        # whenever its restart takes over 3 s (as it may on a loaded 2-core machine). None of
        # them is about fencing (test_failover_e2e and test_partition_e2e are, on clusters of
        # their own), so here a node may miss 60 heartbeats first.
        cli.ok("settings", "set", "health.dead_after", "60")
        yield cli
    finally:
        down = cli.run("down", "--data-dir", str(data_dir), timeout=60)
        _kill_leftovers(data_dir)
        assert down.returncode == 0, down.stderr
