"""Per-node maintenance and idle nodes (issue 21), through the real server and sim agents.

Maintenance on drains a node as a flush does (VMs whose HA is held back stay) and ends in the
scheduling state `maintenance`; a node in maintenance is never fenced, even when its host
reads off; off brings its VMs back. A dead node that owns no HA VM and holds no lock is not
fenced unless `fencing.idle_nodes`. A fence never recovers an ignored VM.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx

from bollard.domain.ha import HaHold
from bollard.domain.states import DesiredPower, PowerState
from bollard.domain.storage import PoolType, VolumeState
from bollard.server.health.fence_gate import skip_reason
from bollard.sim.fabric import Fabric
from bollard.sim.power import power_off_host
from bollard.store import ha_counts, migrate, nodes, pools, vms, volumes
from bollard.store.db import Database
from tests.api.test_api_migrate import make_vm, running_on
from tests.api.test_api_vms import Cluster
from tests.support.cluster import ServerThread, wait_until


def wait_task(c: httpx.Client, task_id: str) -> dict[str, Any]:
    for _ in range(12):
        task: dict[str, Any] = c.get(f"/tasks/{task_id}/wait", params={"timeout": 5}).json()
        if task["finished_at"] is not None:
            return task
    raise AssertionError(f"task {task_id} did not end: {task}")


def maintenance(c: httpx.Client, node: str, on: bool) -> dict[str, Any]:
    answer = c.post(f"/nodes/{node}/maintenance", json={"on": on})
    assert answer.status_code == 202, answer.text
    return wait_task(c, answer.json()["id"])


def node_of(c: httpx.Client, name: str) -> dict[str, Any]:
    node: dict[str, Any] = c.get(f"/nodes/{name}").json()
    return node


def events_of(c: httpx.Client, **filters: str) -> list[dict[str, Any]]:
    page: dict[str, Any] = c.get("/events", params={**filters, "limit": 1000}).json()
    items: list[dict[str, Any]] = page["items"]
    return items


def hold(server: ServerThread, name: str, what: HaHold | None) -> None:
    """As `vm meta --ha-state ignored` does (the store's own call)."""
    with server.runtime.db.write() as conn:
        vm = vms.get(conn, name)
        ha_counts.set_hold(conn, vm.uuid, what, server.runtime.clock.now())


def sim_power(cluster: Cluster, node: str) -> Fabric:
    """Give `node` the sim power driver (as `bollard up` does); the fabric it switches."""
    server, agents = cluster
    fabric_dir = agents[0].config.fabric_dir
    assert fabric_dir is not None
    server.runtime.power.sim_fabric_dir = fabric_dir
    answer = server.client.put(f"/nodes/{node}/power", json={"driver": "sim", "address": node})
    assert answer.status_code == 200, answer.text
    return Fabric(fabric_dir)


def test_maintenance_drains_the_node_keeps_ignored_vms_and_off_brings_them_back(
    cluster: Cluster,
) -> None:
    server, _ = cluster
    c = server.client
    mover, pinned = make_vm(cluster, "mover"), make_vm(cluster, "pinned")
    hold(server, "pinned", HaHold.IGNORED)

    task = maintenance(c, "node1", True)
    assert (task["type"], task["state"]) == ("flush", "succeeded"), task
    outcomes = task["result"]["progress"]["outcomes"]
    assert outcomes["pinned"] == "stays (HA ignored)", outcomes
    node = node_of(c, "node1")
    assert (node["scheduling"], node["maintenance"]) == ("maintenance", True)
    assert running_on(cluster, mover["uuid"]) == ["node2"]
    assert running_on(cluster, pinned["uuid"]) == ["node1"]  # HA leaves it alone: it stays
    refused = c.post("/vms", json={"name": "new", "vcpus": 1, "memory_mb": 128, "node": "node1"})
    assert refused.status_code == 409 and "maintenance" in refused.json()["error"]["message"]
    again = c.post("/nodes/node1/maintenance", json={"on": True})
    assert again.status_code == 409
    assert "already in maintenance" in again.json()["error"]["message"]
    assert c.post("/nodes/node1/flush").status_code == 409

    back = maintenance(c, "node1", False)
    assert (back["type"], back["state"]) == ("unflush", "succeeded"), back
    node = node_of(c, "node1")
    assert (node["scheduling"], node["maintenance"]) == ("ready", False)
    assert running_on(cluster, mover["uuid"]) == ["node1"]
    not_on = c.post("/nodes/node1/maintenance", json={"on": False})
    assert not_on.status_code == 409 and "not in maintenance" in not_on.json()["error"]["message"]
    said = [e["message"] for e in events_of(c, node="node1") if e["kind"] == "node.maintenance"]
    assert any("maintenance on" in m for m in said) and any("maintenance off" in m for m in said)
    assert any("is in maintenance" in m for m in said), said


def test_a_flushed_node_enters_maintenance_and_an_unflush_ends_it(cluster: Cluster) -> None:
    c = cluster[0].client
    flush = c.post("/nodes/node2/flush")
    assert flush.status_code == 202
    wait_task(c, flush.json()["id"])
    assert node_of(c, "node2")["scheduling"] == "flushed"
    task = maintenance(c, "node2", True)
    assert task["state"] == "succeeded", task
    assert node_of(c, "node2")["scheduling"] == "maintenance"
    answer = c.post("/nodes/node2/unflush")
    assert answer.status_code == 202
    wait_task(c, answer.json()["id"])
    node = node_of(c, "node2")
    assert (node["scheduling"], node["maintenance"]) == ("ready", False)


def test_a_node_in_maintenance_is_never_fenced_and_an_ignored_vm_is_not_recovered(
    cluster: Cluster,
) -> None:
    server, agents = cluster
    c = server.client
    c.put("/settings/health.startup_grace", json={"value": 0})
    fabric = sim_power(cluster, "node1")
    pinned = make_vm(cluster, "pinned")
    hold(server, "pinned", HaHold.IGNORED)
    maintenance(c, "node1", True)

    power_off_host(fabric, "node1")  # the host loses power (an in-process agent is not killed)
    agents.pop(0).stop()  # ... and its agent's session ends
    skipped = wait_until(
        lambda: [e for e in events_of(c, node="node1") if e["kind"] == "node.fence_skipped"],
        "the fence of node1 to be skipped",
    )
    assert "in maintenance" in skipped[0]["message"], skipped
    assert node_of(c, "node1")["health"] == "dead"  # not fencing, not fenced
    dead = [e for e in events_of(c, node="node1") if e["kind"] == "node.dead"]
    assert "heartbeats missed" in dead[0]["message"], dead  # no fast failover in maintenance
    vm = c.get("/vms/pinned").json()
    assert (vm["node"], vm["epoch"]) == ("node1", 1)

    # Maintenance off: node1 may be fenced again. It holds only an ignored VM (idle), so
    # fence idle nodes too; the ignored VM is then recorded off, never restarted elsewhere.
    c.put("/settings/fencing.idle_nodes", json={"value": True})
    maintenance(c, "node1", False)
    wait_until(lambda: node_of(c, "node1")["health"] == "fenced", "node1 fenced")
    wait_until(lambda: c.get("/vms/pinned").json()["vm_state"] == "stopped", "pinned stopped")
    vm = c.get("/vms/pinned").json()
    assert (vm["node"], vm["epoch"], vm["task_id"]) == ("node1", 1, None)
    stopped = [e for e in events_of(c, vm="pinned") if e["kind"] == "vm.stopped"]
    assert stopped and "(HA: ignored)" in stopped[-1]["message"], stopped
    restarts = [t for t in c.get("/tasks", params={"vm": "pinned"}).json()["items"]
                if t["type"] == "ha_restart"]  # fmt: skip
    assert restarts == []
    assert running_on(cluster, pinned["uuid"]) == []


def test_an_idle_dead_node_is_not_fenced_unless_fencing_idle_nodes(cluster: Cluster) -> None:
    server, agents = cluster
    c = server.client
    c.put("/settings/health.startup_grace", json={"value": 0})
    sim_power(cluster, "node2")
    plain = make_vm(cluster, "plain", node="node2", ha="none")
    agents.pop(1).stop()  # its agent dies; the host keeps running (reads on)
    skipped = wait_until(
        lambda: [e for e in events_of(c, node="node2") if e["kind"] == "node.fence_skipped"],
        "the fence of node2 to be skipped",
    )
    assert "idle: no HA VM, no lock" in skipped[0]["message"], skipped
    assert skipped[0]["data"]["reason"] == "idle"
    assert node_of(c, "node2")["health"] == "dead"
    assert running_on(cluster, plain["uuid"]) == ["node2"]

    c.put("/settings/fencing.idle_nodes", json={"value": True})
    wait_until(lambda: node_of(c, "node2")["health"] == "fenced", "node2 fenced")
    assert running_on(cluster, plain["uuid"]) == []  # powered off by the fence
    assert len([e for e in events_of(c, node="node2") if e["kind"] == "node.fence_skipped"]) == 1


# -- the gate's rule on real databases ---------------------------------------------------------

SETTINGS = {"ha.shutdown_policy": "conditional", "fencing.idle_nodes": False}


def _reason(db: Database, node: str, **settings: Any) -> str | None:
    with db.read() as conn:
        return skip_reason(conn, nodes.get(conn, node), SETTINGS | settings)


def test_the_gate_fences_a_node_guarding_an_ha_vm_or_a_lock_and_no_other(db_url: str) -> None:
    db = Database(db_url)
    migrate.upgrade(db)
    now = datetime.now(UTC)
    try:
        with db.write() as conn:
            nodes.create(conn, "n1", "hash", now)
            vm = vms.create(conn, uuid=str(uuid4()), name="lone", node="n1", vcpus=1,
                            memory_mb=64, desired_power=DesiredPower.RUNNING, task_id="t",
                            now=now, ha="none")  # fmt: skip
        assert _reason(db, "n1") == "idle: no HA VM, no lock (fencing.idle_nodes is off)"
        assert _reason(db, "n1", **{"fencing.idle_nodes": True}) is None

        with db.write() as conn:  # a running VM with a volume of a shared pool: its lock
            pools.create(conn, name="nfs", type=PoolType.SHARED, path="/srv/nfs", nodes=None,
                         description=None, now=now)  # fmt: skip
            volumes.create(conn, id=str(uuid4()), name="lone-disk", pool="nfs", node=None,
                           file="lone-disk.qcow2", format="qcow2", size_mb=64, now=now,
                           state=VolumeState.ATTACHED, vm_uuid=vm.uuid, device="vda")  # fmt: skip
            vms.observe_power_now(conn, vm.uuid, PowerState.RUNNING, now)
        assert _reason(db, "n1") is None
        with db.write() as conn:  # stopped: the lock is given back
            vms.observe_power_now(conn, vm.uuid, PowerState.STOPPED, now)
            vms.set_meta(conn, vm.uuid, now, ha="restart")  # an HA VM
        assert _reason(db, "n1") is None
        with db.write() as conn:
            ha_counts.set_hold(conn, vm.uuid, HaHold.IGNORED, now)
        assert _reason(db, "n1") == "idle: no HA VM, no lock (fencing.idle_nodes is off)"
        with db.write() as conn:
            ha_counts.set_hold(conn, vm.uuid, None, now)
            nodes.record_shutdown(conn, "n1", "reboot", now)
        assert (_reason(db, "n1") or "").startswith("frozen: ")  # conditional: freeze a reboot
        assert _reason(db, "n1", **{"ha.shutdown_policy": "failover"}) is None
        with db.write() as conn:
            nodes.record_shutdown(conn, "n1", "poweroff", now)
        assert _reason(db, "n1") is None  # conditional: fail over a power-off
        with db.write() as conn:
            nodes.set_shutdown_policy(conn, "n1", "freeze", now)
        assert (_reason(db, "n1") or "").startswith("frozen: ")  # its own policy wins
        with db.write() as conn:
            nodes.set_maintenance(conn, "n1", True, now)
        assert (_reason(db, "n1") or "").startswith("in maintenance: ")
    finally:
        db.dispose()
