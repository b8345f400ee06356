"""`bollard up --cells 2 --nodes 2`, end to end through the CLI only: an API server, two cell
servers with their own databases, two sim agents per cell; the cells are up, the nodes and
VMs name their cell, a VM lands in a cell (the one asked for, or one the API server picks),
and `bollard down` leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bollard.cli.client import CliError
from bollard.cli.cluster import ProcessRecord, is_running, read_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CELLS = ("cell1", "cell2")
NODES = ("cell1-node1", "cell1-node2", "cell2-node1", "cell2-node2")


def free_ports(count: int) -> int:
    """A port P such that P .. P + count - 1 are all free now (the API server's and the
    cells')."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base + count > 65536:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    pytest.fail(f"found no {count} free consecutive ports")


class Cli:
    def __init__(self, root: Path) -> None:
        self.data_dir = root / "data"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BOLLARD_")}
        self.env.update(
            BOLLARD_CONFIG_DIR=str(root / "config"), PYTHONUNBUFFERED="1", COLUMNS="200"
        )

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bollard", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, timeout: float = 60.0) -> str:
        result = self.run(*args, timeout=timeout)
        assert result.returncode == 0, (
            f"`bollard {' '.join(args)}` exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}\n{self.logs()}"
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-o", "json"))

    def logs(self) -> str:
        parts = []
        for log in sorted((self.data_dir / "logs").glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-20:]
            parts.append(f"--- {log.name} ---\n" + "\n".join(lines))
        return "\n".join(parts)


def gone(procs: list[ProcessRecord], timeout: float = 20.0) -> list[str]:
    """The processes still running after ``timeout`` (none, normally)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [f"{p.name} (pid {p.pid})" for p in procs if is_running(p.pid, p.argv)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)  # polling the process table: there is no event to wait on


def kill_leftovers(data_dir: Path) -> None:
    """Safety net if `bollard down` failed: kill whatever cluster.json still lists."""
    try:
        record = read_cluster(data_dir)
    except CliError:
        return
    for proc in record.processes if record else []:
        if is_running(proc.pid, proc.argv):
            os.kill(proc.pid, signal.SIGKILL)


def test_up_with_two_cells_lands_vms_in_cells_and_down_stops_everything(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    port = free_ports(3)
    procs: list[ProcessRecord] = []
    try:
        cli.ok(
            "up", "--detach", "--cells", "2", "--nodes", "2", "--sim-latency", "0.05",
            "--heartbeat", "1", "--agent-reconnect-max", "0.5",
            "--data-dir", str(cli.data_dir), "--port", str(port), timeout=150,
        )  # fmt: skip
        record = read_cluster(cli.data_dir)
        assert record is not None and record.url == f"https://127.0.0.1:{port}"
        procs = list(record.processes)
        assert sorted(p.name for p in procs) == sorted(["api", *CELLS, *NODES])
        for cell in CELLS:
            assert (cli.data_dir / "cells" / cell / "bollard.db").is_file()
            assert (cli.data_dir / "cells" / cell / "fabric").is_dir()

        cells = cli.json("cell", "list")
        assert [(c["name"], c["state"]) for c in cells] == [("cell1", "up"), ("cell2", "up")]
        assert cells[1]["url"] == f"https://127.0.0.1:{port + 2}"

        nodes = cli.json("node", "list")
        assert sorted((n["name"], n["cell"], n["connected"]) for n in nodes) == [
            (name, name.partition("-")[0], True) for name in NODES
        ]
        status = cli.json("status")
        assert status["mode"] == "cells" and status["nodes"]["connected"] == 4

        created = cli.json("vm", "create", "e2e-cell", "--vcpus", "1", "--memory", "64", "--wait")
        assert created["task"]["state"] == "succeeded", created
        vm = created["vm"]
        assert vm["cell"] in CELLS and vm["node"].startswith(f"{vm['cell']}-")
        asked = cli.json(
            "vm", "create", "e2e-cell2", "--vcpus", "1", "--memory", "64", "--cell", "cell2",
            "--wait",
        )  # fmt: skip
        assert asked["vm"]["cell"] == "cell2" and asked["vm"]["node"].startswith("cell2-")

        listed = {v["name"]: v for v in cli.json("vm", "list")}
        assert listed["e2e-cell"]["cell"] == vm["cell"]
        assert listed["e2e-cell2"]["cell"] == "cell2"
        table = cli.ok("vm", "list")
        assert "CELL" in table.splitlines()[0]
        # The sim fabric of cell2 holds its VM; `bollard sim` finds a node's cell by itself.
        on_hosts = cli.json("sim", "list", "--data-dir", str(cli.data_dir / "cells" / "cell2"))
        assert [v["node"] for v in on_hosts["vms"] if v["name"] == "e2e-cell2"] == [
            asked["vm"]["node"]
        ]
        cli.ok("sim", "load", "set", "cell2-node2", "0.25")
    finally:
        down = cli.run("down", "--data-dir", str(cli.data_dir), timeout=90)
        kill_leftovers(cli.data_dir)
    assert down.returncode == 0, down.stderr
    assert "api" in down.stdout and "cell2-node2" in down.stdout
    assert gone(procs) == []
    assert read_cluster(cli.data_dir) is None
    assert not (tmp_path / "config" / "context.json").exists()
