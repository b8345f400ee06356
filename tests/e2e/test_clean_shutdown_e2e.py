"""Clean shutdowns with real processes (`bollard up`, sim hosts): `bollard sim node shutdown
NODE [--reboot]` marks the host, SIGTERMs its agent, waits for it to exit, then powers the host
off (and on again). Each shutdown policy, watched through the CLI and the fabric:

- migrate (node3's own policy): its VMs run elsewhere before its agent exits; back with it;
- conditional (the default) on a reboot: freeze: nothing is fenced or recovered, its VMs run
  again on it once its agent is back;
- conditional on a power-off: failover: fenced and recovered as soon as it reads off, far
  sooner than the dead threshold (set huge here).

The timings printed (run with -s) are those of the README's table.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from bollard.sim.fabric import Fabric
from tests.e2e.conftest import Cli, local_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """Three sim nodes, heartbeat 1 s, no start-up grace for the health monitor."""
    root = tmp_path_factory.mktemp("shutdown")
    with local_cluster(root, "--nodes", "3", "--sim-latency", "0.05", "--heartbeat", "1") as cli:
        cli.ok("settings", "set", "health.startup_grace", "0")
        yield cli


def _running(cli: Cli) -> dict[str, list[str]]:
    snapshot = Fabric(cli.data_dir / "fabric").snapshot()
    where: dict[str, list[str]] = {}
    for node, vms in snapshot.items():
        for vm in vms:
            if vm.power == "running":
                where.setdefault(vm.name, []).append(node)
    return where


def _on(cli: Cli, names: list[str], nodes: set[str]) -> bool:
    where = _running(cli)
    return all(len(where.get(n, [])) == 1 and where[n][0] in nodes for n in names)


def _node(cli: Cli, name: str) -> dict[str, Any]:
    node: dict[str, Any] = cli.json("node", "show", name)
    return node


def _kinds(cli: Cli, node: str) -> list[str]:
    return [e["kind"] for e in cli.json("events", "--node", node, "--limit", "1000")]


def _shutdown(cli: Cli, node: str, *reboot: str) -> dict[str, Any]:
    done: dict[str, Any] = cli.json(
        "sim", "node", "shutdown", node, *reboot, "--timeout", "120",
        "--data-dir", str(cli.data_dir), timeout=150,
    )  # fmt: skip
    assert done["agent_exited"] is True, done
    return done


def _create(cli: Cli, names: list[str], node: str) -> None:
    for name in names:
        cli.ok("vm", "create", name, "--vcpus", "1", "--memory", "256", "--node", node,
               "--start", "--wait")  # fmt: skip


def test_migrate_then_freeze_then_failover(cluster3: Cli) -> None:
    cli = cluster3
    data_dir = ["--data-dir", str(cli.data_dir)]

    # -- migrate: node3 drains before its agent exits -----------------------------------
    on3 = ["mig-1", "mig-2", "mig-3"]
    _create(cli, on3, "node3")
    shown = cli.json("node", "set", "node3", "--shutdown-policy", "migrate")
    assert (shown["shutdown_policy"], shown["shutdown_policy_effective"]) == ("migrate",) * 2
    shown_text = cli.ok("node", "show", "node3")
    assert "shutdown policy" in shown_text and "migrate (its own)" in shown_text
    done = _shutdown(cli, "node3", "--reboot")
    print(f"\nmigrate: 3 VMs drained, agent exited after {done['agent_seconds']:.1f} s")
    assert _on(cli, on3, {"node1", "node2"}), _running(cli)  # moved before the power went
    assert _node(cli, "node3")["maintenance"] is True
    began = time.monotonic()
    cli.ok("up", "--restart-process", "node3", *data_dir)
    cli.wait_until("node3's VMs to come back", lambda: _on(cli, on3, {"node3"}), timeout=60)
    print(f"migrate: back on node3 {time.monotonic() - began:.1f} s after its agent restarted")
    node = _node(cli, "node3")
    assert (node["maintenance"], node["shutdown_kind"]) == (False, None), node
    assert "node.fenced" not in _kinds(cli, "node3")

    # -- conditional on a reboot: freeze ------------------------------------------------
    cli.ok("node", "set", "node3", "--shutdown-policy", "default")
    assert _node(cli, "node3")["shutdown_policy_effective"] == "conditional"
    _shutdown(cli, "node3", "--reboot")
    assert _node(cli, "node3")["shutdown_kind"] == "reboot"
    assert "reboot, announced" in cli.ok("node", "show", "node3")
    cli.wait_until(
        "node3 to be dead and not fenced",
        lambda: "node.fence_skipped" in _kinds(cli, "node3"),
        timeout=30,
    )
    assert not any(_running(cli).get(n) for n in on3)  # they went down with it, stay there
    assert all(cli.json("vm", "show", n)["node"] == "node3" for n in on3)
    began = time.monotonic()
    cli.ok("up", "--restart-process", "node3", *data_dir)
    cli.wait_until("node3's VMs to run again", lambda: _on(cli, on3, {"node3"}), timeout=60)
    print(f"freeze: VMs running again {time.monotonic() - began:.1f} s after the agent restart")
    assert _node(cli, "node3")["shutdown_kind"] is None
    assert "node.fenced" not in _kinds(cli, "node3")
    assert [t for t in cli.json("task", "list") if t["type"] == "ha_restart"] == []

    # -- conditional on a power-off: failover, without the dead threshold ---------------
    cli.ok("settings", "set", "health.dead_after", "1000")
    cli.ok("settings", "set", "fencing.fast", "false")  # only the shutdown policy acts
    on2 = ["fail-1", "fail-2"]
    _create(cli, on2, "node2")
    done = _shutdown(cli, "node2")
    cli.wait_until("node2's VMs recovered", lambda: _on(cli, on2, {"node1", "node3"}),
                   timeout=30)  # fmt: skip
    record = Fabric(cli.data_dir / "fabric").host("node2").record()
    assert record is not None and record.power == "off"
    restarts = [t for t in cli.json("task", "list") if t["type"] == "ha_restart"
                and t["vm"] in on2]  # fmt: skip
    assert len(restarts) == len(on2) and all(t["state"] == "succeeded" for t in restarts)
    last = max(datetime.fromisoformat(t["finished_at"]).timestamp() for t in restarts)
    print(f"failover: agent exited after {done['agent_seconds']:.1f} s; VMs running elsewhere "
          f"{last - record.updated_at:.1f} s after the power went off")  # fmt: skip
    assert _node(cli, "node2")["health"] == "fenced"
    dead = [e for e in cli.json("events", "--node", "node2", "--limit", "1000")
            if e["kind"] == "node.dead"]  # fmt: skip
    assert len(dead) == 1 and "shut down cleanly (poweroff)" in dead[0]["message"], dead
    cli.ok("settings", "set", "fencing.fast", "true")
    cli.ok("settings", "set", "health.dead_after", "3")
    cli.ok("sim", "power", "on", "node2", *data_dir)
    cli.ok("up", "--restart-process", "node2", *data_dir)
    cli.wait_until("node2 to rejoin", lambda: _node(cli, "node2")["health"] == "up", timeout=30)
    cli.wait_until("node2's shutdown to end",
                   lambda: _node(cli, "node2")["shutdown_kind"] is None, timeout=30)  # fmt: skip
    assert _on(cli, on2, {"node1", "node3"})  # never twice: its stale copies were destroyed
