"""VMs with SR-IOV NICs moved by everything but a migration (issue 22), through the real server,
sim agents with a simulated SR-IOV NIC each and the store (SQLite, and PostgreSQL when one
answers): an HA restart on another node after a fence, an HA relocation after failed starts,
a resize to another node confirmed or reverted, and each one's failure. After every outcome
the store's VF holders, the VMs' NIC lists and the VFs each live host's driver says its VMs
use agree (sriov_moves_support.assert_agree); a move to nodes without a free VF is refused
or waits with the reason, nothing claimed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bollard.sim.fabric import Fabric
from bollard.sim.models import FaultMode
from bollard.sim.out_of_band import kill_vm
from tests.api.sriov_moves_support import (
    PHYSNET,
    assert_agree,
    free,
    holders,
    sriov_agent,
    vfs_on,
)
from tests.api.test_api_vms import _wait
from tests.support.cluster import AgentThread, ServerThread, wait_until

NO_VF = f"no free SR-IOV VF on physnet {PHYSNET} (0 free, 1 needed)"
SMALL = {"name": "small", "vcpus": 1, "memory_mb": 256, "disk_mb": 64}
LARGE = {"name": "large", "vcpus": 2, "memory_mb": 512, "disk_mb": 128}


class Sriov:
    """node1 (PF ens1, 2 VFs) and node2 (PF ens1, 2 VFs) on physnet fast."""

    def __init__(self, server: ServerThread, agents: dict[str, AgentThread], base: Path) -> None:
        self.server = server
        self.agents = agents
        self.base = base

    @property
    def c(self) -> httpx.Client:
        return self.server.client

    @property
    def fabric_dir(self) -> Path:
        return self.base / "fabric"

    def host(self, node: str) -> Any:
        return Fabric(self.fabric_dir).host(node)

    def agree(self, live: tuple[str, ...] = ("node1", "node2"), **resizing: str) -> None:
        assert_agree(self.c, self.server.runtime.db, self.fabric_dir, list(live), resizing)

    def vm(self, name: str, node: str, *nics: dict[str, Any], **more: Any) -> dict[str, Any]:
        size = {} if "flavor" in more else {"vcpus": 1, "memory_mb": 256}
        body = {"name": name, "node": node, "start": True,
                "nics": list(nics) or [{"sriov": PHYSNET}]} | size | more  # fmt: skip
        task = _wait(self.c, self.c.post("/vms", json=body))
        assert task["state"] == "succeeded", task
        found: dict[str, Any] = self.c.get(f"/vms/{name}").json()
        return found

    def define_nics(self, name: str, node: str) -> list[list[dict[str, Any]]]:
        """The NICs of each DEFINE of the VM sent to `node`, oldest first."""
        items = self.c.get("/commands", params={"vm": name, "limit": 1000}).json()["items"]
        defines = [x for x in items if x["type"] == "define" and x["node"] == node]
        return [x["args"]["nics"] for x in sorted(defines, key=lambda x: x["created_at"])]


@pytest.fixture
def sr(server: ServerThread, tmp_path: Path) -> Iterator[Sriov]:
    agents = {
        "node1": sriov_agent(server, "node1", tmp_path, 2, vcpus=16, memory_mb=32768),
        "node2": sriov_agent(server, "node2", tmp_path, 2, vcpus=8, memory_mb=16384),
    }
    c = server.client
    assert c.put("/settings/health.startup_grace", json={"value": 0}).status_code == 200
    yield Sriov(server, agents, tmp_path)
    for agent in agents.values():
        agent.stop()


def _pci(sr: Sriov, node: str, mac: str) -> str:
    [vf] = [v for v in vfs_on(sr.server.runtime.db, node) if v.mac == mac]
    return vf.pci


def _fence_node1(sr: Sriov) -> None:
    """node1's agent dies (no power driver: its fence fails); the operator confirms it down,
    which recovers its HA VMs."""
    sr.agents.pop("node1").stop()
    wait_until(
        lambda: sr.c.get("/nodes/node1").json()["health"] == "fence_failed", "the fence to fail"
    )
    assert sr.c.post("/nodes/node1/confirm-down").status_code == 200


def _running_on(sr: Sriov, name: str, node: str) -> bool:
    """The VM is node's, its task has ended and node reported it running: its definition there
    (and so the VF it uses) is on the host, not only in the record (the VM's status is ACTIVE
    from the record's commit on, before the host has defined it)."""
    vm = sr.c.get(f"/vms/{name}").json()
    return bool(
        vm["node"] == node and vm["status"] == "ACTIVE" and vm["task_state"] is None
        and vm["observed_power"] == "running"
    )  # fmt: skip


# -- HA restart after a fence ------------------------------------------------------------------


def test_an_ha_restart_elsewhere_takes_a_vf_there_and_frees_the_fenced_nodes(sr: Sriov) -> None:
    vm = sr.vm("h", "node1", {"sriov": PHYSNET, "mode": "macvtap"}, {"bridge": "br0"})
    mac = vm["nics"][0]["mac"]
    db = sr.server.runtime.db
    assert holders(db, vm["uuid"]) == [("node1", mac)]
    sr.agree()

    _fence_node1(sr)
    wait_until(lambda: _running_on(sr, "h", "node2"), "h to run on node2")
    assert holders(db, vm["uuid"]) == [("node2", mac)]
    assert free(db) == {"node1": 2, "node2": 1}
    # node2's DEFINE named the VF the restart claimed there, with its network device.
    [nics] = sr.define_nics("h", "node2")
    vf = next(v for v in vfs_on(db, "node2") if v.mac == mac)
    assert nics[0] == {"mac": mac, "sriov": PHYSNET, "mode": "macvtap", "model": "virtio",
                       "vf_pci": vf.pci, "vf_netdev": vf.netdev}  # fmt: skip
    assert sr.c.get("/vms/h").json()["nics"] == vm["nics"]
    sr.agree(live=("node2",))


def test_an_ha_restart_with_no_free_vf_elsewhere_waits_with_the_reason(sr: Sriov) -> None:
    db = sr.server.runtime.db
    for name in ("full1", "full2"):  # node2's two VFs
        sr.vm(name, "node2", {"sriov": PHYSNET, "mode": "hostdev"})
    vm = sr.vm("w", "node1")
    mac = vm["nics"][0]["mac"]

    _fence_node1(sr)
    wait_until(lambda: sr.c.get("/vms/w").json()["autostart"], "w to wait for capacity")
    after = sr.c.get("/vms/w").json()
    assert after["node"] == "node1" and after["status"] != "ACTIVE"
    assert after["fault"] == "waiting for capacity (autostart)"
    [deferred] = [
        e for e in sr.c.get("/events", params={"vm": "w"}).json()["items"]
        if e["kind"] == "vm.ha_deferred"
    ]  # fmt: skip
    assert f"node2: {NO_VF}" in deferred["message"], deferred
    # Nothing claimed on node2; the VM keeps its VF on its own (fenced) node.
    assert holders(db, vm["uuid"]) == [("node1", mac)]
    assert free(db) == {"node1": 1, "node2": 0}
    tasks = sr.c.get("/tasks", params={"vm": "w"}).json()["items"]
    assert [t["state"] for t in tasks if t["type"] == "ha_restart"] == ["succeeded"]
    sr.agree(live=("node2",))


# -- HA relocation after failed starts ---------------------------------------------------------


def _quick_reconcile(c: httpx.Client) -> None:
    assert c.put("/settings/reconcile.state.interval", json={"value": 0.5}).status_code == 200


def test_a_relocation_takes_a_vf_on_the_new_node_and_frees_the_old(sr: Sriov) -> None:
    _quick_reconcile(sr.c)
    vm = sr.vm("r", "node1", {"sriov": PHYSNET, "mode": "hostdev"})
    mac = vm["nics"][0]["mac"]
    sr.host("node1").faults.set("start", FaultMode.FAIL, 0, vm=vm["uuid"])
    kill_vm(sr.host("node1"), "r", crashed=True)
    wait_until(lambda: _running_on(sr, "r", "node2"), "r to be relocated to node2", timeout=40)
    db = sr.server.runtime.db
    assert holders(db, vm["uuid"]) == [("node2", mac)]
    assert free(db) == {"node1": 2, "node2": 1}
    sr.agree()


def test_a_relocation_with_no_free_vf_elsewhere_puts_the_vm_in_ha_error(sr: Sriov) -> None:
    _quick_reconcile(sr.c)
    for name in ("full1", "full2"):
        sr.vm(name, "node2")
    vm = sr.vm("e", "node1")
    mac = vm["nics"][0]["mac"]
    sr.host("node1").faults.set("start", FaultMode.FAIL, 0, vm=vm["uuid"])
    kill_vm(sr.host("node1"), "e", crashed=True)
    wait_until(lambda: sr.c.get("/vms/e").json()["ha_state"] == "error", "e's HA error", 40)
    after = sr.c.get("/vms/e").json()
    assert after["node"] == "node1" and after["status"] == "SHUTOFF"
    assert (
        "no other node can take it (no node can take the VM: node1: is the VM's current node; "
        f"node2: {NO_VF})"
    ) in after["fault"], after["fault"]
    db = sr.server.runtime.db
    assert holders(db, vm["uuid"]) == [("node1", mac)]
    assert free(db) == {"node1": 1, "node2": 0}
    sr.agree()


# -- resize to another node ------------------------------------------------------------------


def _flavors(c: httpx.Client) -> None:
    for body in (SMALL, LARGE):
        assert c.post("/flavors", json=body).status_code == 201


def _resized(sr: Sriov, name: str, **body: Any) -> dict[str, Any]:
    task = _wait(sr.c, sr.c.post(f"/vms/{name}/resize", json={"flavor": "large", **body}))
    assert task["state"] == "succeeded", task
    found: dict[str, Any] = sr.c.get(f"/vms/{name}").json()
    assert found["status"] == "VERIFY_RESIZE"
    return found


def test_a_resize_to_another_node_holds_vfs_on_both_until_confirmed(sr: Sriov) -> None:
    _flavors(sr.c)
    vm = sr.vm("a", "node1", {"sriov": PHYSNET, "mode": "macvtap"}, flavor="small")
    mac = vm["nics"][0]["mac"]
    db = sr.server.runtime.db
    source_pci = _pci(sr, "node1", mac)

    resized = _resized(sr, "a", to="node2")
    assert resized["node"] == "node2"
    # Both hold one: node2's for the running VM, node1's for the stopped copy kept there.
    assert holders(db, vm["uuid"]) == [("node1", mac), ("node2", mac)]
    assert sr.define_nics("a", "node2")[0][0]["vf_pci"] == _pci(sr, "node2", mac)
    sr.agree(a="node1")

    confirmed = _wait(sr.c, sr.c.post("/vms/a/resize/confirm"))
    assert confirmed["state"] == "succeeded", confirmed
    assert holders(db, vm["uuid"]) == [("node2", mac)]
    assert source_pci not in {v.pci for v in vfs_on(db, "node1") if v.used_by}
    assert free(db) == {"node1": 2, "node2": 1}
    sr.agree()


def test_a_resize_reverted_frees_the_destinations_vfs(sr: Sriov) -> None:
    _flavors(sr.c)
    vm = sr.vm("b", "node1", {"sriov": PHYSNET, "mode": "hostdev"}, flavor="small")
    mac = vm["nics"][0]["mac"]
    db = sr.server.runtime.db
    before = _pci(sr, "node1", mac)
    _resized(sr, "b", to="node2")
    sr.agree(b="node1")

    reverted = _wait(sr.c, sr.c.post("/vms/b/resize/revert"))
    assert reverted["state"] == "succeeded", reverted
    back = sr.c.get("/vms/b").json()
    assert (back["node"], back["status"], back["memory_mb"]) == ("node1", "ACTIVE", 256)
    assert holders(db, vm["uuid"]) == [("node1", mac)]
    assert _pci(sr, "node1", mac) == before  # the same VF as before the resize
    assert free(db) == {"node1": 1, "node2": 2}
    sr.agree()


def test_a_resize_that_fails_at_the_destination_releases_its_claim(sr: Sriov) -> None:
    _flavors(sr.c)
    vm = sr.vm("f", "node1", flavor="small")
    mac = vm["nics"][0]["mac"]
    sr.host("node2").faults.set("define", FaultMode.FAIL)
    task = _wait(sr.c, sr.c.post("/vms/f/resize", json={"flavor": "large", "to": "node2"}))
    assert task["state"] == "rolled_back", task
    claim = next(s for s in task["steps"] if s["name"] == "claim")
    assert claim["state"] == "undone"
    db = sr.server.runtime.db
    assert holders(db, vm["uuid"]) == [("node1", mac)]
    assert free(db) == {"node1": 1, "node2": 2}
    assert sr.c.get("/vms/f").json()["status"] == "ACTIVE"
    sr.agree()


def test_a_resize_to_a_node_without_a_free_vf_is_refused_and_its_own_node_still_serves(
    sr: Sriov,
) -> None:
    _flavors(sr.c)
    for name, node in (("full1", "node2"), ("full2", "node2"), ("full3", "node1")):
        sr.vm(name, node)
    vm = sr.vm("g", "node1", flavor="small")
    mac = vm["nics"][0]["mac"]
    db = sr.server.runtime.db
    refused = sr.c.post("/vms/g/resize", json={"flavor": "large", "to": "node2"})
    assert refused.status_code == 409, refused.text
    assert NO_VF in refused.json()["error"]["message"]
    anywhere = sr.c.post("/vms/g/resize", json={"flavor": "large"})
    assert anywhere.status_code == 409, anywhere.text
    assert anywhere.json()["error"]["message"] == (
        f"no node can take the VM: node1: is the VM's current node; node2: {NO_VF}"
    )
    assert holders(db, vm["uuid"]) == [("node1", mac)]
    assert [t["type"] for t in sr.c.get("/tasks", params={"vm": "g"}).json()["items"]] == ["create"]

    # On its own node (when allowed) it needs no new VF: it keeps its own, also when the
    # scheduler chooses (no node has a free VF: its own serves).
    put = sr.c.put("/settings/resize.allow_same_node", json={"value": True})
    assert put.status_code == 200
    resized = _resized(sr, "g")
    assert resized["node"] == "node1"
    assert holders(db, vm["uuid"]) == [("node1", mac)]
    assert _wait(sr.c, sr.c.post("/vms/g/resize/confirm"))["state"] == "succeeded"
    assert holders(db, vm["uuid"]) == [("node1", mac)]
    assert free(db) == {"node1": 0, "node2": 0}
    sr.agree()
