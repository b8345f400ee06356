"""Host failure with real processes: a sim node loses power; its HA VMs run again on the other
nodes once it is fenced, never on two hosts at once (checked continuously against the
fabric); a failed fence restarts nothing until an operator confirms the node down; a fenced
node that comes back destroys its stale copies and rejoins."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bollard.sim.fabric import Fabric
from tests.e2e.conftest import Cli, free_port, local_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """Three sim nodes, heartbeat 1 s, no start-up grace for the health monitor."""
    root = tmp_path_factory.mktemp("failover")
    with local_cluster(root, "--nodes", "3", "--sim-latency", "0.05", "--heartbeat", "1") as cli:
        cli.ok("settings", "set", "health.startup_grace", "0")
        yield cli


class TwoHostWatch:
    """Reads the fabric (under its lock) over and over; records any VM running on two hosts."""

    def __init__(self, fabric: Fabric) -> None:
        self.fabric = fabric
        self.violations: list[str] = []
        self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TwoHostWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            where: dict[str, list[str]] = {}
            for node, vms in self.fabric.snapshot().items():
                for vm in vms:
                    if vm.power == "running":
                        where.setdefault(vm.name, []).append(node)
            self.reads += 1
            self.violations += [
                f"{name} on {nodes}" for name, nodes in where.items() if len(nodes) > 1
            ]


def _vm(cli: Cli, name: str) -> dict[str, Any]:
    vm: dict[str, Any] = cli.json("vm", "show", name)
    return vm


def _running_in_fabric(cli: Cli) -> dict[str, str]:
    snapshot = Fabric(cli.data_dir / "fabric").snapshot()
    return {vm.name: node for node, vms in snapshot.items() for vm in vms if vm.power == "running"}


def _events(cli: Cli, **filters: str) -> list[dict[str, Any]]:
    args = [arg for key, value in filters.items() for arg in (f"--{key}", value)]
    items: list[dict[str, Any]] = cli.json("events", *args, "--limit", "1000")
    return items


def test_power_loss_fence_restart_and_rejoin(cluster3: Cli) -> None:
    cli = cluster3
    names = [f"ha-{node}-{i}" for node in ("node1", "node2", "node3") for i in (1, 2)]
    for name in names:
        node = name.split("-")[1]
        cli.ok("vm", "create", name, "--vcpus", "1", "--memory", "256", "--node", node, "--start",
               "--wait", *(["--ha-priority", "5"] if name.endswith("2") else []))  # fmt: skip
    cli.ok("vm", "create", "plain", "--vcpus", "1", "--memory", "256", "--node", "node3",
           "--start", "--ha", "none", "--wait")  # fmt: skip
    on_node3 = [n for n in names if "-node3-" in n]
    with TwoHostWatch(Fabric(cli.data_dir / "fabric")) as watch:
        powered_off = time.monotonic()
        cli.ok("sim", "power", "off", "node3", "--data-dir", str(cli.data_dir))

        def recovered() -> bool:
            running = _running_in_fabric(cli)
            return all(running.get(n) in ("node1", "node2") for n in on_node3)

        cli.wait_until("node3's HA VMs run on node1/node2", recovered, timeout=60)
        failover = time.monotonic() - powered_off
        print(json.dumps({"failover_seconds": round(failover, 2), "heartbeat": 1, "nodes": 3}))
        for name in on_node3:
            vm = _vm(cli, name)
            assert vm["node"] in ("node1", "node2") and vm["epoch"] == 2, vm
            assert vm["status"] == "ACTIVE", vm
        assert cli.json("node", "show", "node3")["health"] == "fenced"
        plain = _vm(cli, "plain")
        assert plain["node"] == "node3" and plain["vm_state"] == "stopped"
        kinds = [e["kind"] for e in _events(cli, node="node3")]
        for kind in ("node.suspect", "node.dead", "node.fenced", "node.recovery"):
            assert kind in kinds, kinds
        # The priority-5 VM was started first.
        tasks = [t for t in cli.json("task", "list") if t["type"] == "ha_restart"]
        assert next(t["vm"] for t in tasks) == "ha-node3-2"

        # node3 comes back: it destroys its stale copies before it takes work again.
        cli.ok("sim", "power", "on", "node3", "--data-dir", str(cli.data_dir))
        cli.ok("up", "--restart-process", "node3", "--data-dir", str(cli.data_dir))
        cli.wait_until(
            "node3 rejoins", lambda: cli.json("node", "show", "node3")["health"] == "up", timeout=30
        )
        left = {vm.name for vm in Fabric(cli.data_dir / "fabric").host("node3").list_vms()}
        assert left == {"plain"}, left
        rejoined = [e for e in _events(cli, node="node3") if e["kind"] == "node.up"]
        assert rejoined and "destroyed 2 stale" in rejoined[-1]["message"], rejoined
    assert watch.reads > 50
    assert watch.violations == []


def test_failed_fence_restarts_nothing_until_confirmed_down(cluster3: Cli) -> None:
    cli = cluster3
    cli.ok("vm", "create", "fragile", "--vcpus", "1", "--memory", "256", "--node", "node2",
           "--start", "--wait")  # fmt: skip
    # A BMC that cannot be reached: every fence of node2 fails (its test fails too).
    cli.ok("node", "set", "node2", "--power-driver", "redfish", "--store-untested",
           "--power-address", f"http://127.0.0.1:{free_port()}")  # fmt: skip
    cli.ok("settings", "set", "fencing.timeout", "2")
    record = next(p for p in cli.cluster().processes if p.name == "node2")
    os.kill(record.pid, signal.SIGKILL)  # the agent dies; the host (and the VM) stay up
    cli.wait_until(
        "the fence of node2 fails",
        lambda: cli.json("node", "show", "node2")["health"] == "fence_failed",
        timeout=60,
    )
    vm = _vm(cli, "fragile")
    assert vm["node"] == "node2" and vm["epoch"] == 1
    assert _running_in_fabric(cli)["fragile"] == "node2"
    assert any("NOT restarted" in e["message"] for e in _events(cli, node="node2"))
    # The operator powers it off by hand, then takes responsibility.
    cli.ok("sim", "power", "off", "node2", "--data-dir", str(cli.data_dir))
    cli.ok("node", "confirm-down", "node2", "--yes")
    cli.wait_until(
        "fragile runs elsewhere",
        lambda: _running_in_fabric(cli).get("fragile") in ("node1", "node3"),
    )
    assert _vm(cli, "fragile")["epoch"] == 2
