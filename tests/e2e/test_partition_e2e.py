"""A network partition with real processes: node3's agent is cut off from the server while
its host stays on and its VMs keep running (`bollard sim partition node3`). The server
declares node3 dead and fences it (the sim power driver switches it off, stopping its VMs)
before any of its HA VMs starts elsewhere; at no time does a VM run on two hosts (checked
continuously against the fabric). Healed, powered on and restarted, node3 destroys its
stale copies and rejoins."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bollard.cli.cluster import is_running
from bollard.sim.fabric import Fabric
from bollard.sim.models import HostPower
from tests.e2e.conftest import Cli, local_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CUT = "node3"
OTHERS = ("node1", "node2")


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """Three sim nodes, heartbeat 1 s, no start-up grace for the health monitor."""
    root = tmp_path_factory.mktemp("partition")
    with local_cluster(root, "--nodes", "3", "--sim-latency", "0.05", "--heartbeat", "1") as cli:
        cli.ok("settings", "set", "health.startup_grace", "0")
        yield cli


@dataclass
class FabricWatch:
    """Reads the fabric (one consistent cut under its lock) every 20 ms in a thread.

    Records any VM running on two hosts, and for the watched VMs of the cut-off node: when
    they were last seen running there while it was partitioned, when the node was first seen
    powered off, and when one of them was first seen running on another node.
    """

    fabric: Fabric
    watched: frozenset[str]
    violations: list[str] = field(default_factory=list)
    reads: int = 0
    partitioned_running_reads: int = 0  # reads: partitioned, on, watched VMs all running
    cut_off_at: float | None = None  # first read with the node powered off
    elsewhere_at: float | None = None  # first read with a watched VM running on another node
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> FabricWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self._read_once()
            except Exception as exc:  # noqa: BLE001 - reported by the test, not lost in a thread
                self.errors.append(repr(exc))

    def _read_once(self) -> None:
        with self.fabric.lock():
            snapshot = self.fabric.snapshot()
            record = self.fabric.host(CUT).record()
        now = time.monotonic()
        self.reads += 1
        where: dict[str, list[str]] = {}
        for node, vms in snapshot.items():
            for vm in vms:
                if vm.power == "running":
                    where.setdefault(vm.name, []).append(node)
        self.violations += [f"{name} on {nodes}" for name, nodes in where.items() if len(nodes) > 1]
        assert record is not None
        if record.power == HostPower.OFF and self.cut_off_at is None:
            self.cut_off_at = now
        on_cut = {name for name, nodes in where.items() if CUT in nodes}
        if record.partitioned and record.power == HostPower.ON and self.watched <= on_cut:
            self.partitioned_running_reads += 1
        moved = any(set(where.get(name, ())) & set(OTHERS) for name in self.watched)
        if moved and self.elsewhere_at is None:
            self.elsewhere_at = now


def _running_in_fabric(cli: Cli) -> dict[str, str]:
    snapshot = Fabric(cli.data_dir / "fabric").snapshot()
    return {vm.name: node for node, vms in snapshot.items() for vm in vms if vm.power == "running"}


def _events(cli: Cli, node: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cli.json("events", "--node", node, "--limit", "1000")
    return items


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _sim_hosts(cli: Cli) -> dict[str, dict[str, Any]]:
    data = cli.json("sim", "list", "--data-dir", str(cli.data_dir))
    return {h["node"]: h for h in data["hosts"]}


def test_partitioned_node_is_fenced_before_its_vms_restart_elsewhere(cluster3: Cli) -> None:
    cli = cluster3
    data_dir = ["--data-dir", str(cli.data_dir)]
    on_cut = [f"ha-{CUT}-{i}" for i in (1, 2, 3)]
    for name in [*on_cut, "ha-node1-1", "ha-node2-1"]:
        node = name.split("-")[1]
        cli.ok("vm", "create", name, "--vcpus", "1", "--memory", "256", "--node", node,
               "--start", "--wait")  # fmt: skip
    agent = cli.cluster().find(CUT)
    assert agent is not None and is_running(agent.pid, agent.argv)

    fabric = Fabric(cli.data_dir / "fabric")
    with FabricWatch(fabric, frozenset(on_cut)) as watch:
        cli.ok("sim", "partition", CUT, *data_dir)
        assert _sim_hosts(cli)[CUT]["partitioned"] is True
        # The agent drops its connection; the host, its agent process and its VMs live on.
        cli.wait_until(
            f"the server sees {CUT} disconnected",
            lambda: not cli.json("node", "show", CUT)["connected"],
            timeout=10,
        )
        alive, running = is_running(agent.pid, agent.argv), _running_in_fabric(cli)
        # (Read last: a fence that came first has left the node fencing or fenced by now.)
        if cli.json("node", "show", CUT)["health"] not in ("dead", "fencing", "fenced"):
            assert alive, "the partition killed the agent"
            assert all(running.get(n) == CUT for n in on_cut), running

        def recovered() -> bool:
            running = _running_in_fabric(cli)
            return all(running.get(n) in OTHERS for n in on_cut)

        cli.wait_until(f"{CUT}'s HA VMs run on node1/node2", recovered, timeout=40)
        # The watcher's reads may all predate the restarts (they can land between two of its
        # reads, just before ours). Its count goes up right after each snapshot: read
        # seen + 2 began after ours, and read seen + 3 only once that one was fully recorded.
        seen = watch.reads
        cli.wait_until("the watcher to read the fabric again", lambda: watch.reads >= seen + 3,
                       timeout=10)  # fmt: skip

        # Fenced first: powered off (its VMs stopped, its agent killed), then restarts.
        assert watch.cut_off_at is not None and watch.elsewhere_at is not None
        assert watch.cut_off_at < watch.elsewhere_at, (watch.cut_off_at, watch.elsewhere_at)
        assert watch.partitioned_running_reads > 0  # the partition itself stopped nothing
        assert not is_running(agent.pid, agent.argv)
        # The agent dropped the connection itself and did not dial again until the fence.
        agent_log = Path(agent.log).read_text().splitlines()
        cuts = [i for i, line in enumerate(agent_log) if "partitioned from the server" in line]
        assert cuts, agent_log[-20:]
        after = agent_log[cuts[0] :]
        assert not [line for line in after if "connected to" in line], after
        assert cli.json("node", "show", CUT)["health"] == "fenced"
        events = _events(cli, CUT)
        kinds = [e["kind"] for e in events]
        for kind in ("node.suspect", "node.dead", "node.fenced", "node.recovery"):
            assert kind in kinds, kinds
        fenced_at = _at(next(e["at"] for e in events if e["kind"] == "node.fenced"))
        restarts = [t for t in cli.json("task", "list") if t["type"] == "ha_restart"]
        assert sorted(t["vm"] for t in restarts) == sorted(on_cut), restarts
        assert all(_at(t["created_at"]) >= fenced_at for t in restarts), (fenced_at, restarts)
        starts = [
            e
            for name in on_cut
            for e in cli.json("events", "--vm", name, "--limit", "1000")
            if e["node"] in OTHERS
        ]
        assert starts and all(_at(e["at"]) >= fenced_at for e in starts)
        for name in on_cut:
            vm = cli.json("vm", "show", name)
            assert vm["node"] in OTHERS and vm["epoch"] == 2 and vm["status"] == "ACTIVE", vm
        assert _running_in_fabric(cli)["ha-node1-1"] == "node1"
        assert _running_in_fabric(cli)["ha-node2-1"] == "node2"

        # Healed, powered on and restarted: node3 destroys its stale copies and rejoins.
        cli.ok("sim", "heal", CUT, *data_dir)
        assert _sim_hosts(cli)[CUT]["partitioned"] is False
        cli.ok("sim", "power", "on", CUT, *data_dir)
        cli.ok("up", "--restart-process", CUT, *data_dir)
        cli.wait_until(
            f"{CUT} rejoins", lambda: cli.json("node", "show", CUT)["health"] == "up", timeout=30
        )
        left = {vm.name for vm in fabric.host(CUT).list_vms()}
        assert left == set(), left
        rejoined = [e for e in _events(cli, CUT) if e["kind"] == "node.up"]
        assert rejoined and "destroyed 3 stale" in rejoined[-1]["message"], rejoined
        assert all(_running_in_fabric(cli).get(n) in OTHERS for n in on_cut)
    assert watch.errors == []
    assert watch.reads > 50
    assert watch.violations == []
