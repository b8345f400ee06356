"""HA recovery in process: a VM that fits nowhere waits (autostart) and is restarted when a
node with room comes up."""

from __future__ import annotations

import time
from pathlib import Path

from bollard.sim.fabric import Fabric
from bollard.sim.storage import EMPTY_CHECKSUM, PoolKey, SimStorage
from tests.api.test_api_vms import Cluster, _wait
from tests.support.cluster import AgentThread, wait_until


def test_a_deferred_ha_vm_starts_when_capacity_returns(cluster: Cluster, tmp_path: Path) -> None:
    server, agents = cluster
    c = server.client
    c.put("/settings/health.startup_grace", json={"value": 0})
    disks = [{"size_mb": 4096}, {"size_mb": 100}]
    big = {"name": "big", "vcpus": 2, "memory_mb": 20000, "node": "node1", "start": True}
    nics = [{"bridge": "br0", "model": "e1000"}, {"network": "default", "mac": "52:54:00:0A:0B:0C"}]
    big |= {"disks": disks, "nics": nics}
    assert _wait(c, c.post("/vms", json=big))["state"] == "succeeded"
    agents[0].stop()  # node1's agent dies; no power driver: its fence fails
    agents.pop(0)
    wait_until(
        lambda: c.get("/nodes/node1").json()["health"] == "fence_failed", "the fence to fail"
    )
    assert c.get("/vms/big").json()["node"] == "node1"  # nothing restarted without a fence
    recover = c.post("/nodes/node1/confirm-down").json()
    _wait(c, _answer(recover))
    wait_until(lambda: c.get("/vms/big").json()["autostart"], "big to wait for capacity")
    vm = c.get("/vms/big").json()
    assert vm["node"] == "node1" and vm["status"] != "ACTIVE"  # 20 GB fit on no other node
    kinds = [e["kind"] for e in c.get("/events", params={"vm": "big"}).json()["items"]]
    assert "vm.ha_deferred" in kinds

    agents.append(AgentThread(server, "node3", tmp_path, vcpus=8, memory_mb=32768))
    wait_until(
        lambda: (
            c.get("/vms/big").json()["node"] == "node3"
            and c.get("/vms/big").json()["status"] == "ACTIVE"
        ),
        "big to start on the new node",
    )
    vm = c.get("/vms/big").json()
    assert (vm["epoch"], vm["autostart"]) == (2, False)
    # The restart defines the VM on node3 with the same disks: its volumes of the local pool,
    # made anew (empty) there, and now on node3.
    assert [d["size_mb"] for d in vm["disks"]] == [4096, 100]
    defines = [x for x in c.get("/commands", params={"vm": "big"}).json()["items"]
               if x["type"] == "define"]  # fmt: skip
    made = [(4096, "vda", "local", True), (100, "vdb", "local", True)]
    assert [
        (x["node"], [(d["size_mb"], d["device"], d["pool"]["name"], d["create"])
                     for d in x["args"]["disks"]])
        for x in defines
    ] == [("node1", made), ("node3", made)]  # fmt: skip
    shown = c.get("/volumes", params={"vm": "big"}).json()["items"]
    assert {(v["device"], v["node"], v["state"]) for v in shown} == {
        ("vda", "node3", "attached"),
        ("vdb", "node3", "attached"),
    }
    # ... and the same NICs, MACs included.
    assigned = vm["nics"][0]["mac"]
    plain = {"sriov": None, "mode": None}  # not on SR-IOV VFs
    assert vm["nics"] == [
        {"mac": assigned, "network": None, "bridge": "br0", "model": "e1000", **plain},
        {"mac": "52:54:00:0a:0b:0c", "network": "default", "bridge": None, "model": "virtio"}
        | plain,
    ]
    nic_args = [
        {"mac": assigned, "bridge": "br0", "model": "e1000"},
        {"mac": "52:54:00:0a:0b:0c", "network": "default", "model": "virtio"},
    ]
    assert [(x["node"], x["args"]["nics"]) for x in defines] == [
        ("node1", nic_args),
        ("node3", nic_args),
    ]
    # On the host: the restarted VM runs on node3 with its two volumes as drives, and node3's
    # local pool has them (made anew, empty).
    fabric = Fabric(agents[-1].config.fabric_dir or "")
    restarted = fabric.host("node3").get_vm(vm["uuid"])
    assert restarted is not None and str(restarted.power) == "running"
    files = {v["device"]: v["file"] for v in shown}
    assert [(d.device, d.size_mb, d.path) for d in restarted.drives] == [
        (device, size, f"sim://local/local/{files[device]}")
        for device, size in (("vda", 4096), ("vdb", 100))
    ]
    local, now = PoolKey("local", "local"), time.time()
    on_node3 = [SimStorage(fabric).get("node3", local, files[d], now) for d in ("vda", "vdb")]
    assert [(v.size_mb, v.checksum) if v else None for v in on_node3] == [
        (4096, EMPTY_CHECKSUM),
        (100, EMPTY_CHECKSUM),
    ]


def _answer(task: dict[str, object]) -> object:
    class _A:
        status_code = 202
        text = ""

        def json(self) -> dict[str, object]:
            return {"task": task}

    return _A()
