"""VM disks through the real server and sim agents, on SQLite and PostgreSQL: volumes made
with the VM (in the pool `local` or the pool each disk asks for), shown with their devices,
sent to the host in the DEFINE command and made there (the VM's drives on the sim fabric),
and deleted with the VM, which leaves the volumes attached to it later ready."""

from __future__ import annotations

import time
from typing import Any

import httpx

from bollard.sim.fabric import Fabric
from bollard.sim.storage import PoolKey, SimStorage
from tests.api.test_api_vms import Cluster, _wait
from tests.api.test_api_volumes import (
    done,
    make_pool,
    make_vm,
    make_volume,
    names,
    on_host,
    refused,
    sim_path,
    sim_vm,
    totals,
    write,
)
from tests.support.cluster import ServerThread


def _commands(c: httpx.Client, vm: str, type_: str) -> list[dict[str, Any]]:
    listed = c.get("/commands", params={"vm": vm}).json()["items"]
    return [x for x in listed if x["type"] == type_]


def test_disks_are_stored_shown_in_order_and_defined(cluster: Cluster) -> None:
    c = cluster[0].client
    disks = [{"size_mb": 10240}, {"size_mb": 512}, {"size_mb": 1}]
    answer = c.post(
        "/vms", json={"name": "d1", "vcpus": 1, "memory_mb": 256, "start": True, "disks": disks}
    )
    assert answer.json()["vm"]["disks"][0] == {
        "device": "vda", "size_mb": 10240, "volume": "d1-vda", "pool": "local",
        "state": "creating",
    }  # fmt: skip
    task = _wait(c, answer)
    assert task["state"] == "succeeded", task
    assert task["params"]["disks"] == [d | {"pool": None} for d in disks]
    shown = c.get("/vms/d1").json()["disks"]
    assert shown == [
        {"device": device, "size_mb": size, "volume": f"d1-{device}", "pool": "local",
         "state": "attached"}
        for device, size in (("vda", 10240), ("vdb", 512), ("vdc", 1))
    ]  # fmt: skip
    assert c.get("/vms").json()["items"][0]["disks"] == shown
    # Each disk is a volume of the pool `local` on the VM's node, made with it.
    vm = c.get("/vms/d1").json()
    volumes = {v["device"]: v for v in c.get("/volumes", params={"vm": "d1"}).json()["items"]}
    assert sorted(volumes) == ["vda", "vdb", "vdc"]
    for device, v in volumes.items():
        assert (v["pool"], v["node"], v["file"], v["delete_with_vm"]) == (
            "local", vm["node"], f"{vm['uuid']}-{device}.qcow2", True,
        )  # fmt: skip
    [define] = _commands(c, "d1", "define")
    local = {"name": "local", "type": "local", "path": ""}
    assert define["args"]["disks"] == [
        {"size_mb": size, "device": device, "pool": local,
         "file": f"{vm['uuid']}-{device}.qcow2", "format": "qcow2", "create": True}
        for device, size in (("vda", 10240), ("vdb", 512), ("vdc", 1))
    ]  # fmt: skip
    # ... and the host made them and runs the VM with them (the sim fabric is the hosts'
    # ground truth).
    fabric = Fabric(cluster[1][0].config.fabric_dir or "")
    sim_vm = fabric.host(vm["node"]).get_vm(vm["uuid"])
    assert sim_vm is not None and str(sim_vm.power) == "running"
    paths = {device: f"sim://local/local/{vm['uuid']}-{device}.qcow2" for device in volumes}
    assert [(d.device, d.size_mb, d.path) for d in sim_vm.drives] == [
        ("vda", 10240, paths["vda"]), ("vdb", 512, paths["vdb"]), ("vdc", 1, paths["vdc"]),
    ]  # fmt: skip
    storage = SimStorage(fabric)
    for device, v in volumes.items():
        rec = storage.get(vm["node"], PoolKey("local", "local"), v["file"], time.time())
        assert rec is not None and rec.size_mb == v["size_mb"], device


def test_a_vm_without_disks_has_none(cluster: Cluster) -> None:
    c = cluster[0].client
    assert (
        _wait(c, c.post("/vms", json={"name": "d0", "vcpus": 1, "memory_mb": 256}))["state"]
        == "succeeded"
    )
    assert c.get("/vms/d0").json()["disks"] == []
    [define] = _commands(c, "d0", "define")
    assert define["args"]["disks"] == []
    assert c.get("/volumes").json()["total"] == 0


def test_bad_disks_are_refused_and_create_nothing(server: ServerThread) -> None:
    c = server.client
    vm = {"name": "bad", "vcpus": 1, "memory_mb": 256}
    for disks, says in [
        ([{"size_mb": 1024}] * 17, "at most 16"),
        ([{"size_mb": 1024}, {"size_mb": 0}], "disks[1].size_mb"),
        ([{"size_mb": 64 * 1024 * 1024 + 1}], "disks[0].size_mb"),
        ([{}], "disks[0].size_mb"),
        ([{"size_mb": 1, "pool": "Not A Pool"}], "disks[0].pool"),
    ]:
        answer = c.post("/vms", json=vm | {"disks": disks})
        assert answer.status_code == 422, (disks, answer.text)
        assert says in answer.json()["error"]["message"], answer.text
    assert c.get("/vms/bad").status_code == 404
    assert c.get("/vms").json()["total"] == 0
    assert c.get("/tasks").json()["total"] == 0
    assert c.get("/volumes").json()["total"] == 0


# -- the disks of VMs ---------------------------------------------------------------------


def test_vm_disks_in_the_local_and_a_shared_pool_go_with_the_vm(cluster: Cluster) -> None:
    c = cluster[0].client
    make_pool(c, "nfs")
    disks = [{"size_mb": 10}, {"size_mb": 10, "pool": "nfs"}]
    answer = c.post("/vms", json={"name": "db", "vcpus": 1, "memory_mb": 256, "disks": disks,
                                  "node": "node2", "start": True})  # fmt: skip
    assert [(d["device"], d["volume"], d["pool"], d["state"]) for d in
            answer.json()["vm"]["disks"]] == [
        ("vda", "db-vda", "local", "creating"),
        ("vdb", "db-vdb", "nfs", "creating"),
    ]  # fmt: skip
    done(c, answer)
    vm = c.get("/vms/db").json()
    assert [(d["device"], d["volume"], d["pool"], d["state"], d["size_mb"]) for d in
            vm["disks"]] == [
        ("vda", "db-vda", "local", "attached", 10),
        ("vdb", "db-vdb", "nfs", "attached", 10),
    ]  # fmt: skip
    vda, vdb = (c.get(f"/volumes/db-{d}").json() for d in ("vda", "vdb"))
    assert (vda["node"], vda["file"], vda["delete_with_vm"]) == (
        "node2", f"{vm['uuid']}-vda.qcow2", True,
    )  # fmt: skip
    assert (vdb["node"], vdb["pool_type"], vdb["file"]) == (
        None, "shared", f"{vm['uuid']}-vdb.qcow2",
    )  # fmt: skip
    assert on_host(cluster, vda) is not None and on_host(cluster, vdb) is not None
    running = sim_vm(cluster, "node2", vm["uuid"])
    assert running is not None and str(running.power) == "running"
    assert [(d.device, d.path) for d in running.drives] == [
        ("vda", sim_path(vda)),
        ("vdb", sim_path(vdb)),
    ]

    # A standalone volume attached to it outlives it, ready, with its data.
    extra = make_volume(c, "extra", node="node2")
    done(c, c.post("/volumes/extra/attach", json={"vm": "db"}))
    checksum = write(cluster, extra, b"keep me")
    done(c, c.delete("/vms/db"))
    assert c.get("/vms/db").status_code == 404
    for v in (vda, vdb):
        assert c.get(f"/volumes/{v['name']}").status_code == 404
        assert on_host(cluster, v) is None, f"{v['name']}'s file is still there"
    shown = c.get("/volumes/extra").json()
    assert (shown["state"], shown["vm"], shown["device"], shown["task_id"]) == (
        "ready", None, None, None,
    )  # fmt: skip
    rec = on_host(cluster, extra)
    assert rec is not None and rec.checksum == checksum
    assert sim_vm(cluster, "node2", vm["uuid"]) is None


def test_a_vm_with_a_disk_in_a_pool_of_some_nodes_goes_to_one_of_them(cluster: Cluster) -> None:
    c = cluster[0].client
    make_pool(c, "only2", nodes=["node2"])
    disk = [{"size_mb": 10, "pool": "only2"}]
    # node1 has the most free memory, but does not see the pool.
    vm = make_vm(c, "web", disks=disk)
    assert vm["node"] == "node2"
    [v] = c.get("/volumes", params={"vm": "web"}).json()["items"]
    assert (v["pool"], v["state"]) == ("only2", "attached")
    assert on_host(cluster, v) is not None
    before = totals(c)
    answer = c.post("/vms", json={"name": "web2", "vcpus": 1, "memory_mb": 256,
                                  "node": "node1", "disks": disk})  # fmt: skip
    refused(answer, 409, "node1", "not a host of storage pool only2")
    assert totals(c) == before
    assert c.get("/vms/web2").status_code == 404


def test_a_vm_with_a_disk_in_an_unknown_pool_is_refused(server: ServerThread) -> None:
    c = server.client
    answer = c.post("/vms", json={"name": "x", "vcpus": 1, "memory_mb": 256,
                                  "disks": [{"size_mb": 10, "pool": "nope"}]})  # fmt: skip
    refused(answer, 422, "no pool named nope")
    assert c.get("/vms").json()["total"] == 0
    assert totals(c) == (0, 0)


def test_vm_delete_deletes_its_own_volumes_and_keeps_attached_ones(cluster: Cluster) -> None:
    c = cluster[0].client
    make_pool(c, "nfs")
    vm = make_vm(c, "app", node="node1", start=True, disks=[{"size_mb": 10}, {"size_mb": 20}])
    own = c.get("/volumes", params={"vm": "app"}).json()["items"]
    assert [(v["device"], v["delete_with_vm"]) for v in own] == [("vda", True), ("vdb", True)]
    assert all(on_host(cluster, v) is not None for v in own)
    kept_local = make_volume(c, "kept-local", node="node1")
    kept_shared = make_volume(c, "kept-shared", pool="nfs")
    done(c, c.post("/volumes/kept-local/attach", json={"vm": "app"}))
    done(c, c.post("/volumes/kept-shared/attach", json={"vm": "app", "device": "vdf"}))
    checksums = {v["name"]: write(cluster, v, v["name"].encode()) for v in (kept_local,
                                                                          kept_shared)}  # fmt: skip

    task = done(c, c.delete("/vms/app"))
    assert sorted(task["steps"][-1]["result"]["volumes_deleted"]) == ["app-vda", "app-vdb"]
    assert sim_vm(cluster, "node1", vm["uuid"]) is None
    for v in own:
        assert c.get(f"/volumes/{v['name']}").status_code == 404
        assert on_host(cluster, v) is None, f"{v['name']}'s file is still on node1"
    for v in (kept_local, kept_shared):
        shown = c.get(f"/volumes/{v['name']}").json()
        assert (shown["state"], shown["vm"], shown["vm_uuid"], shown["device"]) == (
            "ready", None, None, None,
        )  # fmt: skip
        assert shown["task_id"] is None and shown["fault"] is None
        rec = on_host(cluster, v)
        assert rec is not None and rec.checksum == checksums[v["name"]]
    assert names(c.get("/volumes").json()["items"]) == ["kept-local", "kept-shared"]
    # ... and they can be used again.
    make_vm(c, "app2", node="node1")
    done(c, c.post("/volumes/kept-local/attach", json={"vm": "app2"}))
