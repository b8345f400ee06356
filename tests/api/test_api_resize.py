"""Flavors, resize, confirm and revert through the real server and sim agents: every outcome
checked against the sim fabric (which hosts define and run the VM), the VM's record, its
volumes, both nodes' allocations and the migration record."""

from __future__ import annotations

from typing import Any

import httpx

from bollard.sim.fabric import Fabric
from bollard.sim.models import FaultMode
from tests.api.test_api_vms import Cluster, _wait

SMALL = {"name": "small", "vcpus": 1, "memory_mb": 512, "disk_mb": 1024}
LARGE = {"name": "large", "vcpus": 2, "memory_mb": 1024, "disk_mb": 2048,
         "properties": {"hw:cpu_policy": "shared"}}  # fmt: skip


def _fabric(cluster: Cluster) -> Fabric:
    return Fabric(cluster[1][0].config.fabric_dir or "")


def hosts_of(cluster: Cluster, uuid: str) -> dict[str, str]:
    """node -> power of the VM's copy there, for every host that defines it."""
    snap = _fabric(cluster).snapshot()
    return {n: v.power for n, vms in snap.items() for v in vms if v.uuid == uuid}


def allocated(c: httpx.Client) -> dict[str, tuple[int, int]]:
    items = c.get("/nodes").json()["items"]
    return {n["name"]: (n["allocated"]["vcpus"], n["allocated"]["memory_mb"]) for n in items}


def disks(c: httpx.Client, name: str) -> dict[str, tuple[str, int, str]]:
    vm = c.get(f"/vms/{name}").json()
    return {d["device"]: (d["volume"], d["size_mb"], d["state"]) for d in vm["disks"]}


def volume_states(c: httpx.Client) -> dict[str, tuple[str, str | None]]:
    items = c.get("/volumes", params={"limit": 1000}).json()["items"]
    return {v["name"]: (v["state"], v.get("node")) for v in items}


def setup(c: httpx.Client) -> None:
    for body in (SMALL, LARGE):
        assert c.post("/flavors", json=body).status_code == 201


def create(c: httpx.Client, name: str, **extra: Any) -> dict[str, Any]:
    body = {"name": name, "flavor": "small", "node": "node1", "start": True, **extra}
    assert _wait(c, c.post("/vms", json=body))["state"] == "succeeded"
    vm: dict[str, Any] = c.get(f"/vms/{name}").json()
    return vm


def test_flavors_are_kept_by_the_vms_given_them_and_not_deleted_while_used(
    cluster: Cluster,
) -> None:
    c = cluster[0].client
    setup(c)
    assert c.post("/flavors", json=SMALL).status_code == 409
    bad = c.post("/flavors", json={**SMALL, "name": "tiny", "memory_mb": 1})
    assert bad.status_code == 422
    vm = create(c, "f1")
    assert (vm["vcpus"], vm["memory_mb"]) == (1, 512)
    assert vm["flavor"]["name"] == "small" and vm["flavor"]["disk_mb"] == 1024
    assert disks(c, "f1")["vda"][1] == 1024
    assert c.get("/flavors/small").json()["used_by"] == 1
    # Changing the flavor's properties changes no VM; deleting it is refused, naming the VM.
    changed = c.patch("/flavors/small", json={"properties": {"color": "blue"}})
    assert changed.status_code == 200 and changed.json()["properties"] == {"color": "blue"}
    assert c.get("/vms/f1").json()["flavor"]["properties"] == {}
    refused = c.delete("/flavors/small")
    assert refused.status_code == 409
    assert "f1" in refused.json()["error"]["message"]
    # A VM by hand still works, and giving both is refused.
    hand = {"name": "f2", "vcpus": 1, "memory_mb": 256, "node": "node1"}
    assert _wait(c, c.post("/vms", json=hand))["state"] == "succeeded"
    assert c.get("/vms/f2").json()["flavor"] is None
    both = c.post("/vms", json={**hand, "name": "f3", "flavor": "small"})
    assert both.status_code == 422
    assert c.delete("/flavors/large").status_code == 204


def test_resize_waits_in_verify_resize_with_both_hosts_holding_then_confirm_drops_the_source(
    cluster: Cluster,
) -> None:
    c = cluster[0].client
    setup(c)
    vm = create(c, "r1")
    before = allocated(c)
    old_disk = disks(c, "r1")["vda"][0]

    task = _wait(c, c.post("/vms/r1/resize", json={"flavor": "large", "to": "node2"}))
    assert task["state"] == "succeeded", task
    assert [s["name"] for s in task["steps"] if s["state"] == "done"] == [
        "check", "claim", "stop", "copy", "define", "commit", "start",
    ]  # fmt: skip
    r = c.get("/vms/r1").json()
    assert (r["status"], r["vm_state"], r["node"]) == ("VERIFY_RESIZE", "resized", "node2")
    assert (r["vcpus"], r["memory_mb"], r["epoch"]) == (2, 1024, vm["epoch"] + 1)
    assert r["flavor"]["name"] == "large"
    assert r["resize"]["source"] == "node1" and r["resize"]["status"] == "finished"
    assert r["resize"]["old_flavor"]["name"] == "small"
    # Runs on the destination only; the source keeps its stopped copy and its disk.
    assert hosts_of(cluster, vm["uuid"]) == {"node1": "stopped", "node2": "running"}
    new_disk, size, state = disks(c, "r1")["vda"]
    assert (size, state) == (2048, "attached") and new_disk != old_disk
    assert volume_states(c)[old_disk] == ("reserved", "node1")
    # Both hosts hold the VM's resources: node1 its old size (the migration's hold).
    after = allocated(c)
    assert after["node1"] == before["node1"]
    assert after["node2"] == (before["node2"][0] + 2, before["node2"][1] + 1024)
    holds = c.get("/nodes/node1").json()["allocations"]
    assert {"consumer": "migration", "vm": "r1", "migration_id": r["resize"]["migration_id"],
            "vcpus": 1, "memory_mb": 512} in holds  # fmt: skip
    records = c.get("/migrations", params={"vm": "r1"}).json()["items"]
    assert [(m["type"], m["status"], m["source"], m["dest"]) for m in records] == [
        ("resize", "finished", "node1", "node2")
    ]
    # Nothing but confirm, revert or delete is taken in VERIFY_RESIZE.
    assert c.post("/vms/r1/migrate", json={"to": "node1"}).status_code == 409
    assert c.post("/vms/r1/resize", json={"flavor": "small"}).status_code == 409

    done = _wait(c, c.post("/vms/r1/resize/confirm"))
    assert done["state"] == "succeeded", done
    r = c.get("/vms/r1").json()
    assert (r["status"], r["node"], r["resize"]) == ("ACTIVE", "node2", None)
    assert hosts_of(cluster, vm["uuid"]) == {"node2": "running"}
    assert old_disk not in volume_states(c)
    final = allocated(c)
    assert final["node1"] == (before["node1"][0] - 1, before["node1"][1] - 512)
    assert final["node2"] == after["node2"]
    record = c.get(f"/migrations/{records[0]['id']}").json()
    assert (record["status"], record["source_hold"]) == ("confirmed", None)
    assert c.post("/vms/r1/resize/confirm").status_code == 409


def test_revert_brings_the_vm_back_at_its_old_size_and_removes_the_copies(
    cluster: Cluster,
) -> None:
    c = cluster[0].client
    setup(c)
    vm = create(c, "r2")
    before = allocated(c)
    old_disk = disks(c, "r2")["vda"][0]
    assert _wait(c, c.post("/vms/r2/resize", json={"flavor": "large"}))["state"] == "succeeded"
    resized = c.get("/vms/r2").json()
    copy = disks(c, "r2")["vda"][0]

    task = _wait(c, c.post("/vms/r2/resize/revert"))
    assert task["state"] == "succeeded", task
    r = c.get("/vms/r2").json()
    assert (r["status"], r["node"], r["vcpus"], r["memory_mb"]) == ("ACTIVE", "node1", 1, 512)
    assert r["epoch"] == resized["epoch"] + 1 and r["flavor"]["name"] == "small"
    assert hosts_of(cluster, vm["uuid"]) == {"node1": "running"}
    assert disks(c, "r2")["vda"] == (old_disk, 1024, "attached")
    assert copy not in volume_states(c)
    assert allocated(c) == before
    records = c.get("/migrations", params={"vm": "r2"}).json()["items"]
    assert [(m["status"], m["source_hold"]) for m in records] == [("reverted", None)]
    actions = c.get("/vms/r2/actions").json()["items"]
    assert [a["action"] for a in actions] == ["revertResize", "resize", "create"]
    assert all(a["result"] == "success" for a in actions)
    one = c.get(f"/vms/r2/actions/{actions[1]['request_id']}").json()
    assert [e["event"] for e in one["events"]][:2] == ["check", "claim"]


def test_resize_refusals(cluster: Cluster) -> None:
    c = cluster[0].client
    setup(c)
    create(c, "r3", flavor="large")
    shrink = c.post("/vms/r3/resize", json={"flavor": "small"})
    assert shrink.status_code == 422, shrink.text
    assert "never shrinks" in shrink.json()["error"]["message"]
    same = c.post("/vms/r3/resize", json={"flavor": "large"})
    assert same.status_code == 422
    assert c.post("/vms/r3/resize/revert").status_code == 409
    c.post("/flavors", json={"name": "huge", "vcpus": 4, "memory_mb": 2048, "disk_mb": 4096})
    own = c.post("/vms/r3/resize", json={"flavor": "huge", "to": "node1"})
    assert own.status_code == 422 and "resize.allow_same_node" in own.json()["error"]["message"]


def test_a_resize_on_its_own_node_when_allowed_swaps_disks_and_reverts(cluster: Cluster) -> None:
    c = cluster[0].client
    setup(c)
    assert c.put("/settings/resize.allow_same_node", json={"value": True}).status_code == 200
    vm = create(c, "r4")
    before = allocated(c)
    old_disk = disks(c, "r4")["vda"][0]
    task = _wait(c, c.post("/vms/r4/resize", json={"flavor": "large", "to": "node1"}))
    assert task["state"] == "succeeded", task
    r = c.get("/vms/r4").json()
    assert (r["status"], r["node"], r["epoch"]) == ("VERIFY_RESIZE", "node1", vm["epoch"])
    assert hosts_of(cluster, vm["uuid"]) == {"node1": "running"}
    on_host = _fabric(cluster).host("node1").get_vm(vm["uuid"])
    assert on_host is not None and (on_host.vcpus, on_host.memory_mb) == (2, 1024)
    # The node holds both sizes until the resize ends.
    assert allocated(c)["node1"] == (before["node1"][0] + 2, before["node1"][1] + 1024)
    assert _wait(c, c.post("/vms/r4/resize/revert"))["state"] == "succeeded"
    on_host = _fabric(cluster).host("node1").get_vm(vm["uuid"])
    assert on_host is not None and (on_host.vcpus, on_host.memory_mb) == (1, 512)
    assert disks(c, "r4")["vda"] == (old_disk, 1024, "attached")
    assert allocated(c) == before


def test_a_resize_that_fails_at_the_destination_rolls_back_to_the_source(
    cluster: Cluster,
) -> None:
    c = cluster[0].client
    setup(c)
    vm = create(c, "r5")
    before = allocated(c)
    original = disks(c, "r5")["vda"]
    _fabric(cluster).host("node2").faults.set("define", FaultMode.FAIL)
    task = _wait(c, c.post("/vms/r5/resize", json={"flavor": "large", "to": "node2"}))
    assert task["state"] == "rolled_back", task
    steps = {s["name"]: s["state"] for s in task["steps"]}
    assert steps["define"] == "undone" and steps["copy"] == "undone", steps
    r = c.get("/vms/r5").json()
    assert (r["status"], r["node"], r["vcpus"], r["epoch"]) == ("ACTIVE", "node1", 1, vm["epoch"])
    assert r["flavor"]["name"] == "small" and r["resize"] is None
    assert hosts_of(cluster, vm["uuid"]) == {"node1": "running"}
    assert disks(c, "r5")["vda"] == original
    assert [n for n in volume_states(c) if n.startswith("r5-")] == ["r5-vda"]
    assert allocated(c) == before
    [record] = c.get("/migrations", params={"vm": "r5"}).json()["items"]
    assert record["status"] == "failed" and "define" in (record["error"] or "").lower()
