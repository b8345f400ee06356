"""VM migration through the real server and sim agents: every decision checked against the
fabric (where the VM really runs), its owner and epoch, and both nodes' resources."""

from __future__ import annotations

from typing import Any

import pytest

from bollard.domain.states import PowerState
from bollard.sim.fabric import Fabric
from bollard.sim.models import FaultMode, MigrationPhase
from tests.api.test_api_vms import Cluster, _wait
from tests.support.cluster import wait_until


def _fabric(cluster: Cluster) -> Fabric:
    return Fabric(cluster[1][0].config.fabric_dir or "")


def running_on(cluster: Cluster, uuid: str) -> list[str]:
    snap = _fabric(cluster).snapshot()
    return sorted(
        n for n, vms in snap.items() for v in vms if v.uuid == uuid and v.power == "running"
    )


def defined_on(cluster: Cluster, uuid: str) -> list[str]:
    snap = _fabric(cluster).snapshot()
    return sorted(n for n, vms in snap.items() for v in vms if v.uuid == uuid)


def allocated(cluster: Cluster) -> dict[str, int]:
    items = cluster[0].client.get("/nodes").json()["items"]
    return {n["name"]: n["allocated"]["memory_mb"] for n in items}


def steps_of(task: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["state"] for s in task["steps"]}


def make_vm(cluster: Cluster, name: str, *, start: bool = True, **extra: Any) -> dict[str, Any]:
    c = cluster[0].client
    body = {"name": name, "vcpus": 1, "memory_mb": 512, "node": "node1", "start": start, **extra}
    assert _wait(c, c.post("/vms", json=body))["state"] == "succeeded"
    vm: dict[str, Any] = c.get(f"/vms/{name}").json()
    return vm


def test_live_migration_moves_owner_epoch_and_resources(cluster: Cluster) -> None:
    c = cluster[0].client
    vm = make_vm(cluster, "m1")
    before = allocated(cluster)
    task = _wait(c, c.post("/vms/m1/migrate", json={"to": "node2"}))
    assert task["state"] == "succeeded", task
    assert steps_of(task) == {
        "check": "done", "claim": "done", "live_migrate": "done", "stop": "skipped",
        "move": "skipped", "commit": "done", "start": "skipped", "locks": "skipped",
    }  # fmt: skip
    moved = c.get("/vms/m1").json()
    assert (moved["node"], moved["epoch"], moved["status"]) == ("node2", vm["epoch"] + 1, "ACTIVE")
    assert moved["previous_node"] == "node1"
    assert running_on(cluster, vm["uuid"]) == ["node2"]
    assert defined_on(cluster, vm["uuid"]) == ["node2"]
    on_target = _fabric(cluster).host("node2").get_vm(vm["uuid"])
    assert on_target is not None and on_target.epoch == moved["epoch"]
    after = allocated(cluster)
    assert after["node1"] == before["node1"] - 512 and after["node2"] == before["node2"] + 512

    back = _wait(c, c.post("/vms/m1/unmigrate"))
    assert back["state"] == "succeeded"
    home = c.get("/vms/m1").json()
    assert (home["node"], home["epoch"], home["previous_node"]) == ("node1", vm["epoch"] + 2, None)
    assert running_on(cluster, vm["uuid"]) == ["node1"]
    assert allocated(cluster) == before
    assert c.post("/vms/m1/unmigrate").status_code == 409  # no previous node any more


def test_target_selection_records_every_rejected_node(cluster: Cluster) -> None:
    c = cluster[0].client
    make_vm(cluster, "sel", node_limit=["node1"])
    refused = c.post("/vms/sel/migrate")
    assert refused.status_code == 409
    message = refused.json()["error"]["message"]
    assert "node1: is the VM's current node" in message
    assert "node2: outside the VM's node limit (node1)" in message
    assert c.patch("/vms/sel", json={"node_limit": []}).json()["node_limit"] is None
    answer = c.post("/vms/sel/migrate")
    placement = answer.json()["task"]["result"]["placement"]
    assert placement["chosen"] == "node2"
    assert placement["rejected"] == [{"node": "node1", "reason": "is the VM's current node"}]
    _wait(c, answer)


def test_shutdown_migration_stops_moves_and_starts(cluster: Cluster) -> None:
    c = cluster[0].client
    vm = make_vm(cluster, "sd", migration_method="shutdown")
    task = _wait(c, c.post("/vms/sd/migrate", json={"to": "node2"}))
    assert task["state"] == "succeeded", task
    assert steps_of(task) == {
        "check": "done", "claim": "done", "live_migrate": "skipped", "stop": "done",
        "move": "done", "commit": "done", "start": "done", "locks": "skipped",
    }  # fmt: skip
    assert running_on(cluster, vm["uuid"]) == ["node2"]
    assert c.get("/vms/sd").json()["status"] == "ACTIVE"


def test_a_stopped_vm_moves_for_good(cluster: Cluster) -> None:
    c = cluster[0].client
    vm = make_vm(cluster, "off", start=False)
    task = _wait(c, c.post("/vms/off/move", json={"to": "node2"}))
    assert task["state"] == "succeeded", task
    moved = c.get("/vms/off").json()
    assert (moved["node"], moved["status"], moved["previous_node"]) == ("node2", "SHUTOFF", None)
    assert defined_on(cluster, vm["uuid"]) == ["node2"]


@pytest.mark.parametrize("phase", [MigrationPhase.TRANSFER, MigrationPhase.SWITCHOVER])
def test_default_method_falls_back_to_shutdown_migration(
    cluster: Cluster, phase: MigrationPhase
) -> None:
    c = cluster[0].client
    vm = make_vm(cluster, "fb")
    _fabric(cluster).host("node1").faults.set("migrate", FaultMode.FAIL, phase=phase)
    task = _wait(c, c.post("/vms/fb/migrate", json={"to": "node2"}))
    assert task["state"] == "succeeded", task
    assert steps_of(task)["live_migrate"] == "done"
    assert task["steps"][2]["result"]["fallback"] is True
    assert steps_of(task)["stop"] == steps_of(task)["move"] == steps_of(task)["start"] == "done"
    assert running_on(cluster, vm["uuid"]) == ["node2"]
    assert defined_on(cluster, vm["uuid"]) == ["node2"]


def test_force_live_rolls_back_and_releases_the_target(cluster: Cluster) -> None:
    c = cluster[0].client
    vm = make_vm(cluster, "fl")
    before = allocated(cluster)
    _fabric(cluster).host("node1").faults.set(
        "migrate", FaultMode.FAIL, phase=MigrationPhase.TRANSFER
    )
    task = _wait(c, c.post("/vms/fl/migrate", json={"to": "node2", "force_live": True}))
    assert task["state"] == "rolled_back", task
    assert steps_of(task)["claim"] == "undone"
    assert "still on node1" in task["error"]
    after = c.get("/vms/fl").json()
    assert (after["node"], after["epoch"], after["status"]) == ("node1", vm["epoch"], "ACTIVE")
    assert running_on(cluster, vm["uuid"]) == ["node1"]
    assert defined_on(cluster, vm["uuid"]) == ["node1"]
    assert allocated(cluster) == before


def test_a_failed_cleanup_is_found_on_the_target_and_committed(cluster: Cluster) -> None:
    c = cluster[0].client
    vm = make_vm(cluster, "cu")
    _fabric(cluster).host("node1").faults.set(
        "migrate", FaultMode.FAIL, phase=MigrationPhase.CLEANUP
    )
    task = _wait(c, c.post("/vms/cu/migrate", json={"to": "node2", "force_live": True}))
    assert task["state"] == "succeeded", task
    assert "recovered_from" in task["steps"][2]["result"]
    assert c.get("/vms/cu").json()["node"] == "node2"
    assert running_on(cluster, vm["uuid"]) == ["node2"]
    assert defined_on(cluster, vm["uuid"]) == ["node2"]  # the source's leftover was removed
    kinds = [e["kind"] for e in c.get("/events", params={"task": task["id"]}).json()["items"]]
    assert "migration.found" in kinds and "migration.cleanup" in kinds


def test_a_lost_answer_is_recovered_and_committed(cluster: Cluster) -> None:
    c = cluster[0].client
    vm = make_vm(cluster, "da")
    _fabric(cluster).host("node1").faults.set("migrate", FaultMode.DROP_ANSWER)
    task = _wait(c, c.post("/vms/da/migrate", json={"to": "node2"}))
    assert task["state"] == "succeeded", task
    cid = task["steps"][2]["commands"]["migrate"]
    assert c.get(f"/commands/{cid}").json()["history"][-1]["note"] == "via journal sync"
    assert running_on(cluster, vm["uuid"]) == ["node2"]


def test_running_nowhere_is_an_error_and_on_lost_start_restarts_on_the_owner(
    cluster: Cluster,
) -> None:
    c = cluster[0].client
    vm = make_vm(cluster, "lost", on_lost="start")
    fabric = _fabric(cluster)
    fabric.host("node1").faults.set("migrate", FaultMode.HANG)
    started = c.post("/vms/lost/migrate", json={"to": "node2", "force_live": True}).json()["task"]

    def migrating() -> bool:
        step = c.get(f"/tasks/{started['id']}").json()["steps"][2]
        cid = step["commands"].get("migrate")
        return cid is not None and c.get(f"/commands/{cid}").json()["state"] == "SENT"

    wait_until(migrating, "the live migration to be sent")
    # The guest crashes on the source while the migration hangs; then the operator cancels.
    fabric.host("node1").update_vm(
        vm["uuid"], lambda v: v.model_copy(update={"power": PowerState.CRASHED})
    )
    c.post(f"/tasks/{started['id']}/cancel")
    task = _wait(c, _answer_of(started))
    assert task["state"] in ("rolled_back", "failed"), task
    after = c.get("/vms/lost").json()
    history = [e["message"] for e in c.get("/events", params={"vm": "lost"}).json()["items"]]
    assert after["node"] == "node1" and after["status"] == "ACTIVE", "\n".join(
        [str(after), *history]
    )
    assert "neither" in after["fault"]
    assert running_on(cluster, vm["uuid"]) == ["node1"]
    kinds = [e["kind"] for e in c.get("/events", params={"vm": "lost"}).json()["items"]]
    assert "vm.lost" in kinds


def _answer_of(task: dict[str, Any]) -> Any:
    class _Answer:
        status_code = 202
        text = ""

        def json(self) -> dict[str, Any]:
            return {"task": task}

    return _Answer()


def test_two_migrations_of_one_vm_cannot_overlap(cluster: Cluster) -> None:
    c = cluster[0].client
    make_vm(cluster, "ov")
    _fabric(cluster).host("node1").faults.set("migrate", FaultMode.DELAY, seconds=2)
    first = c.post("/vms/ov/migrate", json={"to": "node2"})
    second = c.post("/vms/ov/migrate", json={"to": "node2"})
    assert second.status_code == 409
    assert first.json()["task"]["id"] in second.json()["error"]["message"]
    assert _wait(c, first)["state"] == "succeeded"


def test_a_target_that_goes_away_aborts_cleanly(cluster: Cluster) -> None:
    server, agents = cluster
    c = server.client
    vm = make_vm(cluster, "tg", migration_method="shutdown")
    before = allocated(cluster)
    _fabric(cluster).host("node1").faults.set("shutdown", FaultMode.DELAY, seconds=2)
    answer = c.post("/vms/tg/migrate", json={"to": "node2"})
    tid = answer.json()["task"]["id"]
    wait_until(
        lambda: steps_of(c.get(f"/tasks/{tid}").json())["stop"] == "running", "the stop step"
    )
    agents[1].stop()
    agents.pop()
    task = _wait(c, answer)
    assert task["state"] == "rolled_back", task
    assert "no longer fit" in task["error"]
    assert steps_of(task)["stop"] == "undone"  # started again on the source
    after = c.get("/vms/tg").json()
    assert (after["node"], after["epoch"]) == ("node1", vm["epoch"])
    assert running_on(cluster, vm["uuid"]) == ["node1"]
    assert allocated(cluster)["node1"] == before["node1"]
    assert allocated(cluster)["node2"] == before["node2"]
