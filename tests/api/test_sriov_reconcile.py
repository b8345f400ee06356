"""The state reconciler's SR-IOV checks through the real server, sim agents with SR-IOV PFs
and the store (SQLite, and PostgreSQL when one is reachable). Every heartbeat that changes
the host's VFs carries them, so the store knows within a heartbeat which VM each host says
uses each VF. Each difference is made behind the server's back (a VM's NIC defined on
another VF through the sim driver's NIC record, or a claim changed in the store), seen by
`GET /reconcile`, and fixed where a fix is safe (`POST /reconcile/fix`, or by itself under
`reconcile.auto.<class>` fix); vf-conflict is reported only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bollard.agent.drivers.sim import SimNics
from bollard.domain.sriov import PfConfig
from bollard.server import sriov_nics
from bollard.sim.fabric import Fabric
from bollard.store import sriov, sriov_reconcile
from bollard.store.sriov import VfRow
from tests.api.test_api_vms import _wait
from tests.support.cluster import AgentThread, ServerThread, wait_until

PF1 = PfConfig(device="ens1f0", vfs=4, physnet="fast")
PF2 = PfConfig(device="ens1f0", vfs=2, physnet="fast")


class World:
    def __init__(self, server: ServerThread, base: Path) -> None:
        self.server = server
        self.c = server.client
        self.fabric = Fabric(base / "fabric")

    def vfs(self, node: str) -> list[VfRow]:
        with self.server.runtime.db.read() as conn:
            return sriov.vfs_of(conn, node)

    def users(self, node: str) -> list[tuple[str | None, str | None]]:
        """(record's holder, host's user) of each VF of `node`, in index order."""
        return [(v.used_by, v.host_used_by) for v in self.vfs(node)]

    def create(self, name: str, node: str = "node1") -> dict[str, Any]:
        body = {
            "name": name, "vcpus": 1, "memory_mb": 256, "node": node, "start": True,
            "nics": [{"sriov": "fast", "mode": "macvtap"}],
        }  # fmt: skip
        answer = self.c.post("/vms", json=body)
        assert _wait(self.c, answer)["state"] == "succeeded"
        vm: dict[str, Any] = answer.json()["vm"]
        return vm

    def scan(self) -> list[dict[str, Any]]:
        answer = self.c.get("/reconcile")
        assert answer.status_code == 200, answer.text
        return [d for d in answer.json()["differences"] if d["class"].startswith("vf-")]

    def found(self, cls: str, count: int = 1) -> list[dict[str, Any]]:
        return wait_until(
            lambda: (hits if len(hits := [d for d in self.scan() if d["class"] == cls]) == count
                     else None),
            f"{count} {cls} difference(s)",
        )  # fmt: skip

    def fix(self, cls: str) -> dict[str, Any]:
        answer = self.c.post("/reconcile/fix", json={"classes": [cls]})
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def events(self, kind: str) -> list[dict[str, Any]]:
        items = self.c.get("/events", params={"kind": kind, "limit": 200}).json()["items"]
        return [e for e in items if e["data"].get("class", "").startswith("vf-")]


@pytest.fixture
def world(server: ServerThread, tmp_path: Path) -> Iterator[World]:
    """node1 with 4 VFs and node2 with 2 on physical network fast, their agents connected."""
    agents = [
        AgentThread(server, "node1", tmp_path, sriov_pfs=(PF1,)),
        AgentThread(server, "node2", tmp_path, sriov_pfs=(PF2,)),
    ]
    w = World(server, tmp_path)
    wait_until(lambda: len(w.vfs("node1")) == 4 and len(w.vfs("node2")) == 2, "the VFs")
    yield w
    for agent in agents:
        agent.stop()


def test_heartbeats_carry_each_vfs_user_and_the_record_agrees(world: World) -> None:
    vm = world.create("web")
    wait_until(
        lambda: world.users("node1")[0] == (vm["uuid"], vm["uuid"]),
        "node1's heartbeat to say web uses VF 0 (no agent restart)",
    )
    assert world.scan() == []
    assert _wait(world.c, world.c.delete("/vms/web"))["state"] == "succeeded"
    wait_until(lambda: world.users("node1")[0] == (None, None), "VF 0 free and unused again")


def _define_on_vf(world: World, node: str, uuid: str, vf: VfRow) -> None:
    """Behind the server's back: the VM's definition on `node` now uses `vf` (what an
    operator's `virsh edit` would do), through the sim driver's NIC record."""
    host = world.fabric.host(node)
    sim_vm = host.get_vm(uuid)
    assert sim_vm is not None
    nics = SimNics(host)
    [nic] = nics.of(sim_vm)
    moved = nic.model_copy(update={"vf_pci": vf.pci, "vf_netdev": vf.netdev})
    with world.fabric.lock():
        nics.put_at(uuid, sim_vm.epoch, (moved,))


def test_a_vm_defined_on_another_vf_is_a_mismatch_and_the_claim_follows(world: World) -> None:
    vm = world.create("web")
    uuid, mac = vm["uuid"], vm["nics"][0]["mac"]
    wait_until(lambda: world.users("node1")[0] == (uuid, uuid), "web on VF 0")
    _define_on_vf(world, "node1", uuid, world.vfs("node1")[2])

    [d] = world.found("vf-mismatch")
    assert (d["node"], d["vm"], d["auto"]) == ("node1", "web", "report")
    assert d["record"].startswith("holds ens1f0 VF 0 (") and d["host"].startswith(
        "uses ens1f0 VF 2"
    )
    assert world.users("node1")[0] == (uuid, None)  # reported only: nothing changed
    assert world.events("reconcile.detected")

    result = world.fix("vf-mismatch")
    assert [f["class"] for f in result["fixed"]] == ["vf-mismatch"], result
    assert "claim moved from ens1f0 VF 0" in result["fixed"][0]["action"]
    held = [v for v in world.vfs("node1") if v.used_by == uuid]
    assert [(v.idx, v.mac, v.task_id) for v in held] == [(2, mac, None)]
    assert world.scan() == []
    # The next DEFINE a host gets names the VF it already uses.
    nic = {"mac": mac, "sriov": "fast", "mode": "macvtap", "model": "virtio"}
    with world.server.runtime.db.read() as conn:
        [given] = sriov_nics.with_vfs(conn, uuid, "node1", [nic])
    assert given["vf_pci"] == world.vfs("node1")[2].pci
    assert world.events("reconcile.fixed")


def test_an_unrecorded_vf_gets_its_claim_and_a_leaked_one_is_released(world: World) -> None:
    vm = world.create("web")
    uuid, mac = vm["uuid"], vm["nics"][0]["mac"]
    wait_until(lambda: world.users("node1")[0] == (uuid, uuid), "web on VF 0")
    now = world.server.runtime.clock.now()
    with world.server.runtime.db.write() as conn:
        sriov.release(conn, vm=uuid, node="node1")  # the record forgets web's VF...
        # ...and gives it one on node2, where it does not live.
        assert sriov.claim(conn, node="node2", physnet="fast", vm=uuid, mac=mac, now=now)

    [unrecorded] = world.found("vf-unrecorded")
    assert unrecorded["detail"] == "fix: recorded as held by web's NIC on fast"
    [leaked] = world.found("vf-leaked")
    assert (leaked["node"], leaked["vm"]) == ("node2", "web")
    assert leaked["host"].endswith("unused; the VM lives on node1")

    result = world.fix("vf-unrecorded")
    assert [f["ok"] for f in result["fixed"]] == [True], result
    assert world.users("node1")[0] == (uuid, uuid)
    assert [v.mac for v in world.vfs("node1") if v.used_by == uuid] == [mac]

    # vf-leaked fixed by the reconciler itself once its policy says so.
    assert world.c.put("/settings/reconcile.auto.vf-leaked", json={"value": "fix"}).is_success
    wait_until(lambda: world.users("node2")[0] == (None, None), "node2's VF released")
    wait_until(lambda: world.scan() == [], "no SR-IOV difference left")


def test_two_vms_on_one_vf_are_reported_and_never_fixed(world: World) -> None:
    web, db = world.create("web"), world.create("db")
    wait_until(
        lambda: world.users("node1")[:2] == [(web["uuid"],) * 2, (db["uuid"],) * 2],
        "web on VF 0 and db on VF 1",
    )
    now = world.server.runtime.clock.now()
    with world.server.runtime.db.write() as conn:  # the record swaps their VFs
        for vm in (web, db):
            sriov.release(conn, vm=vm["uuid"], node="node1")
        for idx, vm in ((0, db), (1, web)):
            assert sriov_reconcile.take(
                conn, node="node1", pf="ens1f0", idx=idx, vm=vm["uuid"],
                mac=vm["nics"][0]["mac"], now=now,
            )  # fmt: skip

    found = world.found("vf-conflict", count=2)
    texts = sorted((d["vm"], d["record"].split(") ")[1], d["host"].split(") ")[1]) for d in found)
    assert texts == [("db", "held by web", "used by db"), ("web", "held by db", "used by web")]
    result = world.fix("vf-conflict")
    assert result["fixed"] == [] and len(result["failed"]) == 2
    assert all("no automatic fix for two VMs on one VF" in f["action"] for f in result["failed"])
    assert world.users("node1")[:2] == [(db["uuid"], web["uuid"]), (web["uuid"], db["uuid"])]
    refused = world.c.put("/settings/reconcile.auto.vf-conflict", json={"value": "fix"})
    assert refused.status_code in (400, 422), refused.text
    assert "report" in refused.text


def test_an_unrecorded_vf_with_no_nic_to_take_it_is_refused_naming_why(world: World) -> None:
    vm = world.create("web")
    uuid = vm["uuid"]
    wait_until(lambda: world.users("node1")[0] == (uuid, uuid), "web on VF 0")
    # Behind the server's back: web's definition gets a second NIC, on VF 3.
    host = world.fabric.host("node1")
    sim_vm = host.get_vm(uuid)
    assert sim_vm is not None
    nics = SimNics(host)
    [nic] = nics.of(sim_vm)
    vf3 = world.vfs("node1")[3]
    extra = nic.model_copy(
        update={"mac": "52:54:00:aa:bb:cc", "vf_pci": vf3.pci, "vf_netdev": vf3.netdev}
    )
    with world.fabric.lock():
        nics.put_at(uuid, sim_vm.epoch, (nic, extra))

    [d] = world.found("vf-unrecorded")
    assert d["host"].startswith("ens1f0 VF 3")
    result = world.fix("vf-unrecorded")
    [failed] = result["failed"]
    assert "web holds a VF on node1 for each of its NICs on fast already" in failed["action"]
    assert world.users("node1")[3] == (None, uuid)  # nothing changed
    assert world.events("reconcile.fix_failed")
