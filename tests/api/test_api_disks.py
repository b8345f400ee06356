"""VM local disks through the real server and sim agents, on SQLite and PostgreSQL: stored
with the VM, shown with their devices, and sent to the host in the DEFINE command."""

from __future__ import annotations

from typing import Any

import httpx

from bollard.sim.fabric import Fabric
from tests.api.test_api_vms import Cluster, _wait
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
    assert answer.json()["vm"]["disks"][0] == {"device": "vda", "size_mb": 10240}
    task = _wait(c, answer)
    assert task["state"] == "succeeded", task
    assert task["params"]["disks"] == disks
    shown = c.get("/vms/d1").json()["disks"]
    assert shown == [
        {"device": "vda", "size_mb": 10240},
        {"device": "vdb", "size_mb": 512},
        {"device": "vdc", "size_mb": 1},
    ]
    assert c.get("/vms").json()["items"][0]["disks"] == shown
    [define] = _commands(c, "d1", "define")
    assert define["args"]["disks"] == disks
    # ... and the host made them (the sim fabric is the hosts' ground truth).
    vm = c.get("/vms/d1").json()
    fabric = Fabric(cluster[1][0].config.fabric_dir or "")
    sim_vm = fabric.host(vm["node"]).get_vm(vm["uuid"])
    assert sim_vm is not None and sim_vm.disks == [10240, 512, 1]


def test_a_vm_without_disks_has_none(cluster: Cluster) -> None:
    c = cluster[0].client
    assert (
        _wait(c, c.post("/vms", json={"name": "d0", "vcpus": 1, "memory_mb": 256}))["state"]
        == "succeeded"
    )
    assert c.get("/vms/d0").json()["disks"] == []
    [define] = _commands(c, "d0", "define")
    assert define["args"]["disks"] == []


def test_bad_disks_are_refused_and_create_nothing(server: ServerThread) -> None:
    c = server.client
    vm = {"name": "bad", "vcpus": 1, "memory_mb": 256}
    for disks, says in [
        ([{"size_mb": 1024}] * 17, "at most 16"),
        ([{"size_mb": 1024}, {"size_mb": 0}], "disks[1].size_mb"),
        ([{"size_mb": 64 * 1024 * 1024 + 1}], "disks[0].size_mb"),
        ([{}], "disks[0].size_mb"),
    ]:
        answer = c.post("/vms", json=vm | {"disks": disks})
        assert answer.status_code == 422, (disks, answer.text)
        assert says in answer.json()["error"]["message"], answer.text
    assert c.get("/vms/bad").status_code == 404
    assert c.get("/vms").json()["total"] == 0
    assert c.get("/tasks").json()["total"] == 0
