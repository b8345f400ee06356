"""State reconciliation in process (SQLite and PostgreSQL): lost VMs after a fence, a task
no server drives, policies, API errors."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from bollard.domain.operations import START
from bollard.domain.states import TaskState
from bollard.server.reconcile.facts import confirm_held
from bollard.server.tasks.params import PowerParams
from bollard.sim.fabric import Fabric
from bollard.sim.out_of_band import define_vm
from bollard.store import tasks as tasks_store
from bollard.store import vms as vms_store
from bollard.store.tables import tasks as tasks_table
from bollard.store.tables import vms as vms_table
from tests.api.test_api_vms import Cluster, _wait
from tests.support.cluster import wait_until


def _scan(cluster: Cluster, **params: str) -> dict[str, Any]:
    answer = cluster[0].client.get("/reconcile", params=params)
    assert answer.status_code == 200, answer.text
    scan: dict[str, Any] = answer.json()
    return scan


def _classes(scan: dict[str, Any]) -> list[tuple[str, str]]:
    return [(d["class"], d["vm"]) for d in scan["differences"]]


def _events(cluster: Cluster, vm: str, kind: str) -> list[dict[str, Any]]:
    items = cluster[0].client.get("/events", params={"vm": vm, "limit": 500}).json()["items"]
    return [e for e in items if e["kind"] == kind]


def test_a_vm_of_a_fenced_node_that_runs_nowhere_is_lost_until_fixed(cluster: Cluster) -> None:
    server, agents = cluster
    c = server.client
    c.put("/settings/health.startup_grace", json={"value": 0})
    body = {"name": "pet", "vcpus": 1, "memory_mb": 512, "node": "node1", "start": True}
    assert _wait(c, c.post("/vms", json={**body, "ha": "none"}))["state"] == "succeeded"
    c.put("/settings/fencing.idle_nodes", json={"value": True})  # node1 has no HA VM
    agents[0].stop()  # node1's agent dies; no power driver: its fence fails
    agents.pop(0)
    wait_until(lambda: c.get("/nodes/node1").json()["health"] == "fence_failed", "fence_failed")
    assert ("lost", "pet") not in _classes(_scan(cluster))  # not fenced yet: not lost
    recover = c.post("/nodes/node1/confirm-down")
    assert recover.status_code == 200, recover.text
    wait_until(lambda: c.get("/nodes/node1").json()["health"] == "fenced", "node1 fenced")
    wait_until(lambda: ("lost", "pet") in _classes(_scan(cluster)), "pet to be reported lost")
    lost = next(d for d in _scan(cluster)["differences"] if d["class"] == "lost")
    assert (lost["record"], lost["host"]) == ("owned by node1 (fenced)", "runs nowhere")
    assert _events(cluster, "pet", "reconcile.detected")
    assert c.get("/vms/pet").json()["node"] == "node1"  # reported only (auto.lost: report)

    fix = c.post("/reconcile/fix", json={"classes": ["lost"], "vm": "pet"})
    assert fix.status_code == 200, fix.text
    assert [(f["class"], f["ok"]) for f in fix.json()["fixed"]] == [("lost", True)]
    wait_until(
        lambda: (
            c.get("/vms/pet").json()["node"] == "node2"
            and c.get("/vms/pet").json()["status"] == "ACTIVE"
        ),
        "pet to run on node2",
    )
    assert c.get("/vms/pet").json()["epoch"] == 2
    assert _events(cluster, "pet", "reconcile.fixed")[0]["data"]["class"] == "lost"
    wait_until(lambda: not _scan(cluster, vm="pet")["differences"], "no difference left")


def test_a_task_no_server_drives_is_pending_and_resumed(cluster: Cluster) -> None:
    server, _ = cluster
    c = server.client
    body = {"name": "idle", "vcpus": 1, "memory_mb": 256, "node": "node1", "start": False}
    assert _wait(c, c.post("/vms", json=body))["state"] == "succeeded"
    rt = server.runtime
    # A start task taken and written, but handed to no runner (as a server that died
    # between writing it and starting it would leave it, were it not resumed at start).
    _, task = rt.vm_ops.begin_tx("idle", START, PowerParams())
    old = rt.clock.now() - timedelta(minutes=5)
    with rt.db.write() as conn:
        conn.execute(tasks_table.update().where(tasks_table.c.id == task.id).values(updated_at=old))
    wait_until(
        lambda: c.get(f"/tasks/{task.id}").json()["state"] == "succeeded",
        "the undriven task to be resumed by the reconciler (auto.pending: fix)",
    )
    # The record (its status may read UNKNOWN meanwhile, if a starved machine made node1's
    # report late: the staleness rule, not this test's subject).
    vm = c.get("/vms/idle").json()
    assert (vm["vm_state"], vm["task_state"], vm["desired_power"]) == ("active", None, "running")
    fixed = _events(cluster, "idle", "reconcile.fixed")
    assert fixed and fixed[0]["data"]["class"] == "pending"
    assert "resumed" in fixed[0]["data"]["action"]


def test_policies_and_errors(cluster: Cluster) -> None:
    server, agents = cluster
    c = server.client
    scan = _scan(cluster)
    assert scan["policies"] == {
        "stale": "report",
        "orphan": "report",
        "power": "fix",
        "spec": "report",
        "pending": "fix",
        "lost": "report",
        "resize": "fix",
        "volume-missing": "report",
        "volume-orphan": "partial",
        "volume-stuck": "fix",
        "volume-size": "fix",
        "vf-unrecorded": "report",
        "vf-conflict": "report",
        "vf-mismatch": "report",
        "vf-leaked": "report",
    }
    assert scan["counts"] == dict.fromkeys(scan["policies"], 0)
    assert c.get("/reconcile", params={"node": "nope"}).status_code == 404
    assert c.get("/reconcile", params={"vm": "nope"}).status_code == 404
    bad = c.post("/reconcile/fix", json={"classes": ["everything"]})
    assert bad.status_code == 422
    assert c.post("/reconcile/fix", json={"classes": []}).status_code == 422

    # With auto.orphan: fix, an unknown VM is destroyed by the reconciler itself.
    assert c.put("/settings/reconcile.auto.orphan", json={"value": "fix"}).status_code == 200
    fabric = Fabric(agents[0].config.fabric_dir or "")
    stray = define_vm(fabric.host("node2"), "stray", memory_mb=64)
    wait_until(lambda: fabric.host("node2").get_vm(stray.uuid) is None, "stray destroyed")
    fixed = wait_until(lambda: _events(cluster, stray.uuid, "reconcile.fixed"), "the event")
    assert fixed[0]["data"]["class"] == "orphan"


def test_a_vm_held_by_an_ended_task_is_released(cluster: Cluster) -> None:
    server, _ = cluster
    c = server.client
    body = {"name": "stuck", "vcpus": 1, "memory_mb": 256, "node": "node1", "start": False}
    task = _wait(c, c.post("/vms", json=body))
    rt = server.runtime
    with rt.db.write() as conn:
        vm = vms_store.get(conn, "stuck")
        conn.execute(
            vms_table.update()
            .where(vms_table.c.uuid == vm.uuid)
            .values(task_state=TaskState.POWERING_ON.value, task_id=task["id"])
        )
    wait_until(lambda: c.get("/vms/stuck").json()["task_id"] is None, "stuck released")
    assert c.get("/vms/stuck").json()["status"] == "SHUTOFF"
    fixed = _events(cluster, "stuck", "reconcile.fixed")
    assert fixed[0]["data"]["old"] == f"task_state powering-on (task {task['id']})"


def test_a_task_that_ended_between_two_reads_is_not_taken_for_a_leftover(
    cluster: Cluster,
) -> None:
    """The VM list was read while the task held the VM; by the time the tasks are read it
    has ended and released the VM. The VM is read again after its task: no difference."""
    server, _ = cluster
    c = server.client
    body = {"name": "racy", "vcpus": 1, "memory_mb": 256, "node": "node1", "start": False}
    task = _wait(c, c.post("/vms", json=body))
    rt = server.runtime
    with rt.db.read() as conn:
        now_vm = vms_store.get(conn, "racy")
        held_then = replace(now_vm, task_id=task["id"], task_state=TaskState.SPAWNING)
        ended = {task["id"]: tasks_store.get(conn, task["id"])}
        confirmed = confirm_held(conn, [held_then], ended)
    assert [(v.name, v.task_id) for v in confirmed] == [("racy", None)]
    assert not _scan(cluster, vm="racy")["differences"]
