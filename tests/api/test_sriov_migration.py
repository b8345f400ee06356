"""Migrations of VMs with SR-IOV NICs (issue 22), through the real server, sim agents with a
simulated PF each, and the store (SQLite, and PostgreSQL when one is reachable).

After every outcome (moved live or by shutdown, aborted at each phase of the sim migration,
cancelled, rolled back, failed after its commit) the three views of who holds which VF agree
on both nodes: the VM's NIC list (the server's), the VFs' holders (the store's), and the VMs'
definitions on the hosts (what each sim host's driver says: its NICs by MAC, and `vf_users`,
which the agent reports). PVC leaves them disagreeing after an aborted macvtap migration;
here the target's VFs are claimed with the migration's task, released by its rollback, and
the source's released only at its commit.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bollard.agent.drivers.sim import SimDriver
from bollard.domain.sriov import PfConfig
from bollard.server import scheduling, sriov_nics
from bollard.sim.fabric import Fabric
from bollard.sim.models import FaultMode, MigrationPhase
from bollard.store import sriov, vms
from tests.api.test_api_migrate import steps_of
from tests.api.test_api_vms import _wait
from tests.support.cluster import AgentThread, ServerThread, wait_until

NODES = ("node1", "node2")
PF = PfConfig(device="ens1f0", vfs=2, physnet="fast")
HOSTDEV_ONLY = (
    "has a hostdev SR-IOV NIC (PCI passthrough): it migrates by shutdown only (--method shutdown)"
)

World = tuple[ServerThread, list[AgentThread]]


@pytest.fixture
def world(server: ServerThread, tmp_path: Path) -> Iterator[World]:
    """Two sim nodes with PF ens1f0 on physical network fast, 2 VFs each (in the store)."""
    agents = [AgentThread(server, n, tmp_path, sriov_pfs=(PF,)) for n in NODES]
    for node in NODES:
        wait_until(
            lambda n=node: len(_vfs(server, n)) == 2,  # type: ignore[misc]
            f"{node}'s VFs in the store",
        )
        wait_until(
            lambda n=node: server.client.get(f"/nodes/{n}").json()["connected"],  # type: ignore[misc]
            f"{node} to connect",
        )
    yield server, agents
    for agent in agents:
        agent.stop()


# -- the three views ---------------------------------------------------------------------------


def _vfs(server: ServerThread, node: str) -> list[sriov.VfRow]:
    with server.runtime.db.read() as conn:
        return sriov.vfs_of(conn, node)


def _fabric_dir(world: World) -> Path:
    return Path(world[1][0].config.fabric_dir or "")


def _host_nics(world: World, node: str, uuid: str) -> dict[str, str] | None:
    """{MAC: VF PCI address} of the VM's SR-IOV NICs as `node`'s definition has them (None:
    the VM is not defined there)."""
    driver = SimDriver(_fabric_dir(world), node)
    vm = driver.host.get_vm(uuid)
    if vm is None:
        return None
    return {n.mac: n.vf_pci for n in driver.nics.of(vm) if n.sriov is not None and n.vf_pci}


def _vf_users(world: World, node: str) -> dict[str, str]:
    """What `node`'s agent reports: {VF PCI address: VM uuid}, from its driver."""
    return asyncio.run(SimDriver(_fabric_dir(world), node).vf_users())


def assert_agree(world: World, *names: str) -> None:
    """The VM's NIC list, the store's holders and the hosts' definitions agree on both
    nodes, for every VM named; and no VF is held by anything else."""
    server = world[0]
    c = server.client
    held: dict[str, set[str]] = {n: set() for n in NODES}  # node -> PCI held by these VMs
    for name in names:
        vm = c.get(f"/vms/{name}").json()
        assert vm["task_state"] is None, vm
        macs = {n["mac"]: n for n in vm["nics"] if n["sriov"] is not None}
        with server.runtime.db.read() as conn:
            holders = sriov.holders(conn, vm["uuid"])
        # The store: one committed VF per SR-IOV NIC, on the VM's node, of its physnet.
        assert {v.node for v in holders} <= {vm["node"]}, (name, vm["node"], holders)
        assert all(v.task_id is None for v in holders), holders
        assert {v.mac: v.physnet for v in holders} == {m: n["sriov"] for m, n in macs.items()}
        by_mac = {v.mac: v.pci for v in holders}
        for node in NODES:
            on_host = _host_nics(world, node, vm["uuid"])
            if node == vm["node"]:
                # The host: its definition has each NIC on the VF the store gives it...
                assert on_host == by_mac, (name, node, on_host, by_mac)
                held[node] |= set(by_mac.values())
            else:
                # ...and the other host has no definition of it left.
                assert on_host is None, (name, node, on_host)
            users = {pci for pci, uuid in _vf_users(world, node).items() if uuid == vm["uuid"]}
            assert users == (set(by_mac.values()) if node == vm["node"] else set()), (
                name, node, users,
            )  # fmt: skip
    for node in NODES:
        taken = {v.pci for v in _vfs(server, node) if v.used_by is not None}
        assert taken == held[node], (node, taken, held[node])


def _migrate_args(c: httpx.Client, task: dict[str, Any]) -> list[dict[str, Any]]:
    listed = c.get("/commands", params={"vm": task["vm"], "limit": 100}).json()["items"]
    return [x["args"] for x in listed if x["type"] == "migrate" and x["task_id"] == task["id"]]


def _vm(c: httpx.Client, name: str, mode: str = "macvtap", **more: Any) -> dict[str, Any]:
    body = {
        "name": name, "vcpus": 1, "memory_mb": 512, "node": "node1", "start": True,
        "nics": [{"sriov": "fast", "mode": mode}, {"bridge": "br0"}], **more,
    }  # fmt: skip
    answer = c.post("/vms", json=body)
    assert _wait(c, answer)["state"] == "succeeded"
    vm: dict[str, Any] = c.get(f"/vms/{name}").json()
    return vm


def _faults(world: World, node: str = "node1") -> Any:
    return Fabric(_fabric_dir(world)).host(node).faults


# -- success -----------------------------------------------------------------------------------


def test_a_live_migration_takes_a_vf_of_the_target_and_frees_the_sources(world: World) -> None:
    c = world[0].client
    vm = _vm(c, "live")
    assert_agree(world, "live")

    task = _wait(c, c.post("/vms/live/migrate", json={"to": "node2"}))
    assert task["state"] == "succeeded", task
    assert steps_of(task)["live_migrate"] == "done" and steps_of(task)["stop"] == "skipped"
    moved = c.get("/vms/live").json()
    assert moved["node"] == "node2" and moved["nics"] == vm["nics"]  # the NIC list as it was
    assert_agree(world, "live")
    # The claim step took one of node2's VFs; the source's driver was told it, with its
    # network device (macvtap), and the bridged NIC as it is.
    [claimed] = task["steps"][1]["result"]["claimed"]["vfs"]
    [vf] = [v for v in _vfs(world[0], "node2") if v.pci == claimed]
    [args] = _migrate_args(c, task)
    mac = vm["nics"][0]["mac"]
    assert args["live"] is True
    assert args["nics"] == [
        {"mac": mac, "sriov": "fast", "mode": "macvtap", "model": "virtio",
         "vf_pci": claimed, "vf_netdev": vf.netdev},
        {"mac": vm["nics"][1]["mac"], "bridge": "br0", "model": "virtio"},
    ]  # fmt: skip
    assert all(v.used_by is None for v in _vfs(world[0], "node1"))

    # And back: a VF of node1 is claimed again, node2's freed.
    assert _wait(c, c.post("/vms/live/unmigrate"))["state"] == "succeeded"
    assert c.get("/vms/live").json()["node"] == "node1"
    assert_agree(world, "live")


def test_a_shutdown_migration_moves_the_vfs_too(world: World) -> None:
    c = world[0].client
    _vm(c, "sd")
    task = _wait(c, c.post("/vms/sd/migrate", json={"to": "node2", "method": "shutdown"}))
    assert task["state"] == "succeeded", task
    assert steps_of(task)["move"] == steps_of(task)["start"] == "done"
    assert c.get("/vms/sd").json()["status"] == "ACTIVE"
    assert_agree(world, "sd")


def test_a_hostdev_vm_migrates_by_shutdown_only(world: World) -> None:
    c = world[0].client
    vm = _vm(c, "hd", mode="hostdev")
    for body in ({"method": "live"}, {"force_live": True}, {"to": "node2", "method": "live"}):
        refused = c.post("/vms/hd/migrate", json=body)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["message"] == f"VM hd {HOSTDEV_ONLY}"
    assert c.get("/tasks", params={"vm": "hd"}).json()["total"] == 1  # its create only
    assert_agree(world, "hd")
    # Its own migration method cannot become live either, nor a new one's start as live.
    live = "migration_method live: the VM has a hostdev SR-IOV NIC (PCI passthrough), which"
    meta = c.patch("/vms/hd", json={"migration_method": "live"})
    assert meta.status_code == 422 and meta.json()["error"]["message"].startswith(live)
    body = {"name": "hd2", "vcpus": 1, "memory_mb": 256, "migration_method": "live",
            "nics": [{"sriov": "fast", "mode": "hostdev"}]}  # fmt: skip
    made = c.post("/vms", json=body)
    assert made.status_code == 422 and made.json()["error"]["message"].startswith(live)
    assert c.get("/vms/hd2").status_code == 404

    # Method default: a shutdown migration from the start, no live attempt.
    task = _wait(c, c.post("/vms/hd/migrate", json={"to": "node2"}))
    assert task["state"] == "succeeded", task
    assert task["params"]["method"] == "shutdown"
    assert steps_of(task)["live_migrate"] == "skipped"
    assert steps_of(task)["stop"] == steps_of(task)["move"] == steps_of(task)["start"] == "done"
    [args] = _migrate_args(c, task)
    with world[0].runtime.db.read() as conn:
        [held] = sriov.holders(conn, vm["uuid"])
    assert args["live"] is False and held.node == "node2"
    assert (args["nics"][0]["mode"], args["nics"][0]["vf_pci"]) == ("hostdev", held.pci)
    after = c.get("/vms/hd").json()
    assert (after["node"], after["status"], after["migration_method"]) == (
        "node2", "ACTIVE", vm["migration_method"],
    )  # fmt: skip
    assert_agree(world, "hd")


def test_a_target_without_a_free_vf_is_refused_and_nothing_is_claimed(world: World) -> None:
    c = world[0].client
    # node2's two VFs go to two VMs; a third on node1 then has nowhere to go.
    for name in ("a", "b"):
        _vm(c, name, node="node2")
    _vm(c, "c")
    refused = c.post("/vms/c/migrate", json={"to": "node2"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["message"] == (
        "node node2 cannot take the VM: no free SR-IOV VF on physnet fast (0 free, 1 needed)"
    )
    anywhere = c.post("/vms/c/migrate")
    assert anywhere.status_code == 409, anywhere.text
    assert (
        "node2: no free SR-IOV VF on physnet fast (0 free, 1 needed)"
        in (anywhere.json()["error"]["message"])
    )
    assert c.get("/tasks", params={"vm": "c"}).json()["total"] == 1
    assert_agree(world, "a", "b", "c")


def test_a_vf_taken_after_the_choice_fails_the_claim_with_the_reason(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduler saw a free VF (here: it is told so) that the claim step no longer finds:
    the migration fails at its claim with the reason, and nothing is held for it."""
    c = world[0].client
    for name in ("a", "b"):
        _vm(c, name, node="node2")
    _vm(c, "late")
    monkeypatch.setattr(sriov_nics, "free_vfs", lambda *_: {"node2": {"fast": 1}})
    task = _wait(c, c.post("/vms/late/migrate", json={"to": "node2"}))
    assert task["state"] in ("failed", "rolled_back"), task
    assert task["error"] == "target node node2 has no free SR-IOV VF on physical network fast"
    assert steps_of(task)["claim"] == "failed"
    assert c.get("/nodes/node2").json()["allocated"]["memory_mb"] == 1024  # a and b only
    monkeypatch.undo()
    assert_agree(world, "a", "b", "late")


# -- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", list(MigrationPhase))
def test_a_forced_live_migration_failing_at_each_phase(world: World, phase: MigrationPhase) -> None:
    """Failing before the switchover: rolled back, the VM keeps its VF on node1 and node2's
    is free again. Failing at cleanup (the VM runs on node2, a leftover on node1): found on
    node2 and committed, the leftover removed, the VFs moved."""
    c = world[0].client
    _vm(c, "ph")
    _faults(world).set("migrate", FaultMode.FAIL, phase=phase)
    task = _wait(c, c.post("/vms/ph/migrate", json={"to": "node2", "force_live": True}))
    moved = phase is MigrationPhase.CLEANUP
    assert task["state"] == ("succeeded" if moved else "rolled_back"), task
    assert c.get("/vms/ph").json()["node"] == ("node2" if moved else "node1")
    assert_agree(world, "ph")


@pytest.mark.parametrize("phase", [MigrationPhase.TRANSFER, MigrationPhase.SWITCHOVER])
def test_a_failed_live_attempt_falls_back_and_moves_the_vfs_once(
    world: World, phase: MigrationPhase
) -> None:
    c = world[0].client
    _vm(c, "fb")
    _faults(world).set("migrate", FaultMode.FAIL, phase=phase)
    task = _wait(c, c.post("/vms/fb/migrate", json={"to": "node2"}))
    assert task["state"] == "succeeded", task
    assert task["steps"][2]["result"]["fallback"] is True
    assert len(_migrate_args(c, task)) == 2  # the live attempt, then the offline move
    assert_agree(world, "fb")


def test_a_shutdown_migration_whose_move_fails_is_started_again_on_the_source(
    world: World,
) -> None:
    c = world[0].client
    _vm(c, "mv")
    _faults(world).set("migrate", FaultMode.FAIL, phase=MigrationPhase.TRANSFER)
    task = _wait(c, c.post("/vms/mv/migrate", json={"to": "node2", "method": "shutdown"}))
    assert task["state"] == "rolled_back", task
    assert steps_of(task)["stop"] == "undone" and steps_of(task)["claim"] == "undone"
    after = c.get("/vms/mv").json()
    assert (after["node"], after["status"]) == ("node1", "ACTIVE")
    assert_agree(world, "mv")


def test_a_lost_answer_is_recovered_on_the_target_with_its_vfs(world: World) -> None:
    c = world[0].client
    _vm(c, "da")
    _faults(world).set("migrate", FaultMode.DROP_ANSWER)
    task = _wait(c, c.post("/vms/da/migrate", json={"to": "node2"}))
    assert task["state"] == "succeeded", task
    assert_agree(world, "da")


def test_a_cancelled_migration_keeps_the_sources_vf(world: World) -> None:
    c = world[0].client
    _vm(c, "cx")
    _faults(world).set("migrate", FaultMode.HANG)
    started = c.post("/vms/cx/migrate", json={"to": "node2", "force_live": True})
    tid = started.json()["task"]["id"]

    def migrating() -> bool:
        cid = c.get(f"/tasks/{tid}").json()["steps"][2]["commands"].get("migrate")
        return cid is not None and c.get(f"/commands/{cid}").json()["state"] == "SENT"

    wait_until(migrating, "the live migration to be sent")
    # Meanwhile the target's VF is the migration's (pending), the source's still the VM's.
    with world[0].runtime.db.read() as conn:
        pending = {(v.node, v.task_id) for v in sriov.holders(conn, started.json()["vm"]["uuid"])}
    assert pending == {("node1", None), ("node2", tid)}
    assert c.post(f"/tasks/{tid}/cancel").status_code in (200, 202)
    task = _wait(c, started)
    assert task["state"] == "rolled_back", task
    assert c.get("/vms/cx").json()["node"] == "node1"
    assert_agree(world, "cx")


def test_a_start_failing_on_the_target_after_the_commit_leaves_the_vfs_there(
    world: World,
) -> None:
    c = world[0].client
    _vm(c, "st")
    _faults(world, "node2").set("start", FaultMode.FAIL)
    task = _wait(c, c.post("/vms/st/migrate", json={"to": "node2", "method": "shutdown"}))
    assert task["state"] == "failed", task
    after = c.get("/vms/st").json()
    assert (after["node"], after["status"]) == ("node2", "SHUTOFF")
    assert_agree(world, "st")


def test_a_drain_migrates_sriov_vms_and_failback_counts_free_vfs(world: World) -> None:
    server = world[0]
    c = server.client
    _vm(c, "dr")
    flush = c.post("/nodes/node1/flush").json()
    task = c.get(f"/tasks/{flush['id']}/wait", params={"timeout": 10}).json()
    assert task["state"] == "succeeded", task
    assert task["result"]["progress"]["outcomes"] == {"dr": "migrate succeeded"}, task
    assert c.get("/vms/dr").json()["node"] == "node2"
    assert_agree(world, "dr")

    # Unflushed, node1 takes its VMs back (unmigrate): dr's VF there again.
    unflush = c.post("/nodes/node1/unflush").json()
    task = c.get(f"/tasks/{unflush['id']}/wait", params={"timeout": 10}).json()
    assert task["state"] == "succeeded", task
    assert c.get("/vms/dr").json()["node"] == "node1"
    assert_agree(world, "dr")

    # Failback (to node2, of higher priority in its group) needs a free VF there.
    group = {"name": "g", "nodes": {"node2": 2, "node1": 1}}
    assert c.post("/ha/groups", json=group).status_code == 201

    def failback_of(name: str) -> str | None:
        with server.runtime.db.read() as conn:
            vm = dataclasses.replace(vms.get(conn, name), ha_group="g")
            return scheduling.failback_target(conn, vm)

    assert failback_of("dr") == "node2"
    for name in ("x", "y"):  # node2's two VFs taken
        _vm(c, name, node="node2")
    assert failback_of("dr") is None
    assert_agree(world, "dr", "x", "y")
