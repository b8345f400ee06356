"""State reconciliation with real processes: changes made behind Bollard's back on a running
cluster (through `bollard sim vm ...`) are detected within two heartbeats, reported in the
right class, and fixed by the automatic policy or the matching `bollard reconcile --fix-*`
flag, with the event recorded. Also: reports delivered out of order never regress the
database, and a task_state left behind across a server crash is released."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bollard.cli.cluster import is_running
from bollard.sim.fabric import Fabric
from bollard.sim.models import SimVm
from tests.e2e.conftest import Cli, local_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

HEARTBEAT = 1.0
# Detection must happen within two heartbeats of the change; the change time is the sim
# record's own timestamp (or, where the record is gone, the moment before the command ran,
# which adds the start-up of one CLI process).
SLACK = 0.3
CLI_START = 1.5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    root = tmp_path_factory.mktemp("reconcile")
    # Every scan of this server runs in its scan worker process (the default, auto, would
    # keep a cluster this small in the server's thread): detection through the worker.
    with local_cluster(
        root, "--nodes", "2", "--sim-latency", "0.02", "--heartbeat", str(HEARTBEAT),
        env={"BOLLARD_RECONCILE_SCAN": "process"},
    ) as cli:  # fmt: skip
        yield cli


def _fabric(cli: Cli) -> Fabric:
    return Fabric(cli.data_dir / "fabric")


def _sim(cli: Cli, *args: str) -> str:
    return cli.ok("sim", *args, "--data-dir", str(cli.data_dir))


def _on_host(cli: Cli, node: str, name: str) -> SimVm | None:
    return next((v for v in _fabric(cli).host(node).list_vms() if v.name == name), None)


def _events(cli: Cli, kind: str, vm: str | None = None) -> list[dict[str, Any]]:
    args = ["--vm", vm] if vm else []
    result = cli.run("events", *args, "--limit", "1000", "-o", "json")
    if vm and result.returncode == 1 and result.stderr.strip() == f"error: no VM named {vm!r}":
        # A VM that only its host runs is unknown to Bollard until the reconciler's first
        # event names it (an unknown --vm is an error): nothing to see yet.
        return []
    assert result.returncode == 0, result.stderr
    items: list[dict[str, Any]] = json.loads(result.stdout)
    return [e for e in items if e["kind"] == kind]


def _event(cli: Cli, kind: str, cls: str, vm: str, after: float) -> dict[str, Any]:
    """Wait for the first `kind` event of class `cls` about `vm` at or after `after`."""

    def probe() -> dict[str, Any] | None:
        for e in _events(cli, kind, vm):
            if (e.get("data") or {}).get("class") == cls and _ts(e["at"]) >= after:
                return e
        return None

    return cli.wait_until(f"{kind} ({cls}) for {vm}", probe, timeout=20)


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _within_two_heartbeats(event: dict[str, Any], changed_at: float, slack: float) -> None:
    latency = _ts(event["at"]) - changed_at
    assert latency <= 2 * HEARTBEAT + slack, f"detected {latency:.2f}s after the change"


def _create(cli: Cli, name: str, *extra: str, start: bool = True) -> dict[str, Any]:
    args = ["vm", "create", name, "--vcpus", "1", "--memory", "256", "--node", "node1"]
    cli.ok(*args, *(["--start"] if start else []), *extra, "--wait")
    vm: dict[str, Any] = cli.json("vm", "show", name)
    return vm


def _vm(cli: Cli, name: str) -> dict[str, Any]:
    vm: dict[str, Any] = cli.json("vm", "show", name)
    return vm


def _differences(cli: Cli, *args: str) -> list[dict[str, Any]]:
    scan: dict[str, Any] = cli.json("reconcile", *args)
    diffs: list[dict[str, Any]] = scan["differences"]
    return diffs


def _two_more_heartbeats(cli: Cli, node: str) -> None:
    """Wait until the node has reported twice more (its sequence moved on by two)."""
    start = int(cli.json("node", "show", node)["last_seq"])
    cli.wait_until(
        f"{node} to report twice more",
        lambda: int(cli.json("node", "show", node)["last_seq"]) >= start + 2,
        timeout=10,
    )


def test_scans_run_in_the_server_s_worker_process(cluster: Cli) -> None:
    scan: dict[str, Any] = cluster.json("reconcile")
    assert scan["scanned_in"] == "process", scan
    server = next(p for p in cluster.cluster().processes if p.name == "server")
    workers = [
        pid
        for pid in _children(server.pid)
        if b"bollard.server.reconcile.scan_worker" in _cmdline(pid)
    ]
    assert len(workers) == 1, f"scan workers of the server: {workers}"
    assert b"bollard.db" not in _cmdline(workers[0])  # the URL goes over its input


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def test_vm_stopped_behind_bollards_back_non_ha_record_follows_host(cluster: Cli) -> None:
    _create(cluster, "plain", "--ha", "none")
    _sim(cluster, "vm", "kill", "node1", "plain")
    killed = _on_host(cluster, "node1", "plain")
    assert killed is not None and killed.power == "stopped"
    detected = _event(cluster, "reconcile.detected", "power", "plain", killed.updated_at - 1)
    _within_two_heartbeats(detected, killed.updated_at, SLACK)
    fixed = _event(cluster, "reconcile.fixed", "power", "plain", killed.updated_at - 1)
    assert fixed["data"]["old"] == "desired running, active"
    assert fixed["data"]["new"] == "stopped"
    vm = _vm(cluster, "plain")
    assert (vm["status"], vm["desired_power"], vm["observed_power"]) == (
        "SHUTOFF",
        "stopped",
        "stopped",
    )
    _two_more_heartbeats(cluster, "node1")
    host = _on_host(cluster, "node1", "plain")
    assert host is not None and host.power == "stopped"  # the record followed; no restart
    assert not _differences(cluster, "--vm", "plain")


def test_crashed_ha_vm_is_restarted_within_its_budget(cluster: Cli) -> None:
    cluster.ok("settings", "set", "reconcile.restart_budget", "1")
    try:
        _create(cluster, "keeper")
        before = time.time()
        _sim(cluster, "vm", "kill", "node1", "keeper", "--crashed")
        # (The reconciler may have restarted it already: the crash is seen in what it found.)
        detected = _event(cluster, "reconcile.detected", "power", "keeper", before - 1)
        assert "crashed" in detected["data"]["new"], detected
        _within_two_heartbeats(detected, before, SLACK)
        cluster.wait_until(
            "keeper running again on its host",
            lambda: (
                (v := _on_host(cluster, "node1", "keeper")) is not None and v.power == "running"
            ),
        )
        assert _events(cluster, "reconcile.restart", "keeper")
        cluster.wait_until(
            "keeper ACTIVE again", lambda: _vm(cluster, "keeper")["status"] == "ACTIVE"
        )

        # A second crash exhausts the budget of one: the VM is left off, with a fault.
        _sim(cluster, "vm", "kill", "node1", "keeper", "--crashed")
        again = _on_host(cluster, "node1", "keeper")
        assert again is not None
        cluster.wait_until(
            "the restart budget to be exhausted",
            lambda: _events(cluster, "reconcile.restart_budget_exhausted", "keeper"),
        )
        vm = _vm(cluster, "keeper")
        assert vm["status"] == "SHUTOFF" and vm["desired_power"] == "stopped"
        assert "restart budget" in (vm["fault"] or "")
        _two_more_heartbeats(cluster, "node1")
        host = _on_host(cluster, "node1", "keeper")
        assert host is not None and host.power == "crashed"
        assert len(_events(cluster, "reconcile.restart", "keeper")) == 1
    finally:
        cluster.ok("settings", "set", "reconcile.restart_budget", "3")


def test_undefined_vm_is_stale_reported_then_fixed_by_flag(cluster: Cli) -> None:
    _create(cluster, "vanished", start=False)
    before = time.time()
    _sim(cluster, "vm", "undefine", "node1", "vanished")
    detected = _event(cluster, "reconcile.detected", "stale", "vanished", before)
    _within_two_heartbeats(detected, before, SLACK + CLI_START)
    _two_more_heartbeats(cluster, "node1")
    # Reported, never fixed by itself (reconcile.auto.stale defaults to report).
    diffs = _differences(cluster, "--vm", "vanished")
    assert [(d["class"], d["node"], d["host"]) for d in diffs] == [("stale", "node1", "absent")]
    assert _vm(cluster, "vanished")["name"] == "vanished"

    out = cluster.ok("reconcile", "--vm", "vanished", "--fix-stale")
    assert "fixed" in out and "stale" in out
    cluster.wait_until(
        "the stale record to be deleted",
        lambda: cluster.run("vm", "show", "vanished").returncode != 0,
    )
    fixed = _event(cluster, "reconcile.fixed", "stale", "vanished", before)
    assert fixed["data"]["new"] == "absent"


def test_unknown_vm_is_orphan_reported_then_destroyed_by_flag(cluster: Cli) -> None:
    _sim(cluster, "vm", "define", "node2", "stray", "--memory", "128")
    stray = _on_host(cluster, "node2", "stray")
    assert stray is not None
    detected = _event(cluster, "reconcile.detected", "orphan", "stray", stray.updated_at - 1)
    _within_two_heartbeats(detected, stray.updated_at, SLACK)
    _two_more_heartbeats(cluster, "node2")
    assert _on_host(cluster, "node2", "stray") is not None  # reported, never destroyed
    diffs = _differences(cluster, "--node", "node2")
    assert [(d["class"], d["vm"], d["record"]) for d in diffs] == [
        ("orphan", "stray", "not in the database")
    ]

    fix: dict[str, Any] = cluster.json("reconcile", "--node", "node2", "--fix-orphans")
    assert [(f["class"], f["vm"]) for f in fix["fixed"]] == [("orphan", "stray")]
    assert not fix["failed"]
    assert _on_host(cluster, "node2", "stray") is None
    _event(cluster, "reconcile.fixed", "orphan", "stray", stray.updated_at - 1)


def test_spec_changed_on_host_reported_then_record_follows_by_flag(cluster: Cli) -> None:
    _create(cluster, "sized")
    allocated = int(cluster.json("node", "show", "node1")["allocated"]["memory_mb"])
    _sim(cluster, "vm", "set", "node1", "sized", "--memory", "512")
    resized = _on_host(cluster, "node1", "sized")
    assert resized is not None and resized.memory_mb == 512
    detected = _event(cluster, "reconcile.detected", "spec", "sized", resized.updated_at - 1)
    _within_two_heartbeats(detected, resized.updated_at, SLACK)
    assert detected["data"] == {"class": "spec", "old": "1 vCPU, 256 MiB", "new": "1 vCPU, 512 MiB"}
    shown = _vm(cluster, "sized")
    assert (shown["memory_mb"], shown["observed_memory_mb"]) == (256, 512)

    cluster.ok("reconcile", "--vm", "sized", "--fix-spec")
    assert _vm(cluster, "sized")["memory_mb"] == 512
    assert int(cluster.json("node", "show", "node1")["allocated"]["memory_mb"]) == allocated + 256
    fixed = _event(cluster, "reconcile.fixed", "spec", "sized", resized.updated_at - 1)
    assert "record now 1 vCPU, 512 MiB" in fixed["data"]["action"]
    assert not _differences(cluster, "--vm", "sized")


def test_reports_delivered_out_of_order_never_regress(cluster: Cli) -> None:
    cluster.ok("settings", "set", "reconcile.auto.power", "report")
    try:
        _create(cluster, "ordered", "--ha", "none")
        seq_before = int(cluster.json("node", "show", "node1")["last_seq"])
        _sim(cluster, "report", "hold", "node1")
        host = _fabric(cluster).host("node1")
        cluster.wait_until(
            "the agent to hold a report back",
            lambda: (r := host.record()) is not None and r.hold_reports == 0,
        )
        _sim(cluster, "vm", "kill", "node1", "ordered")  # the held report says running
        ignored = cluster.wait_until(
            "the late report to be ignored",
            lambda: [
                e
                for e in _events(cluster, "node.report_ignored")
                if e["node"] == "node1" and e["data"]["seq"] > seq_before
            ],
        )[0]
        assert ignored["data"]["seq"] < ignored["data"]["stored_seq"]
        assert ignored["data"]["host_time"] < ignored["data"]["stored_host_time"]
        vm = _vm(cluster, "ordered")
        assert vm["observed_power"] == "stopped"  # not back to the held report's "running"
        assert vm["observed_seq"] <= ignored["data"]["stored_seq"]
        _two_more_heartbeats(cluster, "node1")
        assert _vm(cluster, "ordered")["observed_power"] == "stopped"
        diffs = _differences(cluster, "--vm", "ordered")
        assert [(d["class"], d["host"]) for d in diffs] == [("power", "stopped")]
    finally:
        cluster.ok("settings", "set", "reconcile.auto.power", "fix")


def _server_pid(cli: Cli) -> tuple[int, list[str]]:
    proc = next(p for p in cli.cluster().processes if p.name == "server")
    return proc.pid, proc.argv


def _ready(cli: Cli) -> bool:
    result = cli.run("status", "-o", "json")
    if result.returncode != 0:
        return False
    nodes = json.loads(result.stdout)["nodes"]
    return bool(nodes["connected"] == nodes["total"])


def test_task_state_left_by_a_killed_server_is_released(cluster: Cli) -> None:
    """This server ends a task and releases its VM in one transaction, so no crash of it
    leaves a VM pointing at an ended task. The leftover is written into the database while
    the server is down, as a crash of a server without that guarantee (or a restored
    backup) would leave it; the restarted server must release the VM by itself."""
    _create(cluster, "held", start=False)
    tasks: list[dict[str, Any]] = cluster.json("task", "list", "--vm", "held")
    create_task = next(t["id"] for t in tasks if t["type"] == "create")
    pid, argv = _server_pid(cluster)
    os.kill(pid, signal.SIGKILL)
    cluster.wait_until("the server to be gone", lambda: not is_running(pid, argv))
    with sqlite3.connect(cluster.data_dir / "bollard.db") as db:
        db.execute(
            "UPDATE vms SET task_state = 'powering-on', task_id = ? WHERE name = 'held'",
            (create_task,),
        )
    restarted = time.time()
    cluster.ok("up", "--restart-process", "server", "--data-dir", str(cluster.data_dir))
    cluster.wait_until("the server to answer with both nodes connected", lambda: _ready(cluster))
    fixed = _event(cluster, "reconcile.fixed", "pending", "held", restarted - 1)
    assert fixed["data"]["old"] == f"task_state powering-on (task {create_task})"
    assert fixed["data"]["new"] == "task ended succeeded"
    vm = _vm(cluster, "held")
    assert vm["task_state"] is None and vm["task_id"] is None and vm["status"] == "SHUTOFF"
    cluster.ok("vm", "start", "held", "--wait")
    assert _vm(cluster, "held")["status"] == "ACTIVE"
