"""The SR-IOV differences (bollard.domain.sriov_drift): the VM the record gives each VF
against the VM its host says uses it, each class and each case where the facts cannot vouch
for a difference."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bollard.domain.drift import DriftClass, Facts, HostView, NodeView, VfView, VmView
from bollard.domain.sriov_drift import classify_vfs
from bollard.domain.states import DesiredPower, NodeHealth, PowerState, VmState

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
UPDATED = NOW - timedelta(minutes=5)  # VM records and claims last changed
REPORTED = NOW - timedelta(seconds=1)  # the nodes' last reports: after them
X = "11111111-1111-4111-8111-111111111111"
Y = "22222222-2222-4222-8222-222222222222"
GHOST = "33333333-3333-4333-8333-333333333333"
MAC_X = "52:54:00:00:00:01"
MAC_Y = "52:54:00:00:00:02"


def vm(uuid: str, name: str, node: str | None = "n1", **change: Any) -> VmView:
    view = VmView(
        uuid, name, node, 1, 512, 1, VmState.ACTIVE, None, None, DesiredPower.RUNNING,
        UPDATED, "none", False,
    )  # fmt: skip
    return view._replace(**change)


def vf(
    idx: int,
    *,
    node: str = "n1",
    used_by: str | None = None,
    host: str | None = None,
    physnet: str = "fast",
    pf: str = "ens1",
    **change: Any,
) -> VfView:
    mac = {X: MAC_X, Y: MAC_Y}.get(used_by or "")
    return VfView(
        node=node, pf=pf, idx=idx, physnet=physnet, pci=f"0000:03:00.{idx}",
        netdev=f"{pf}v{idx}", used_by=used_by, mac=mac, task_id=None,
        claimed_at=UPDATED if used_by else None, host_used_by=host,
    )._replace(**change)  # fmt: skip


def node(name: str = "n1", **change: Any) -> NodeView:
    return replace(NodeView(name, NodeHealth.UP, True, REPORTED), **change)


def facts(
    vfs: list[VfView],
    vms: list[VmView] | None = None,
    nodes: list[NodeView] | None = None,
    **more: Any,
) -> Facts:
    vms = [vm(X, "web"), vm(Y, "db")] if vms is None else vms
    nodes = [node("n1"), node("n2")] if nodes is None else nodes
    return Facts(
        vms=vms, hosts=more.pop("hosts", {}), nodes={n.name: n for n in nodes}, tasks={},
        deleted_at=more.pop("deleted_at", {}), now=NOW, vfs=vfs,
    )  # fmt: skip


def kinds(found: Facts) -> list[tuple[str, str | None, str]]:
    return [(d.kind.value, d.node, d.vm_name) for d in classify_vfs(found)]


def test_a_vf_whose_record_and_host_agree_is_no_difference() -> None:
    assert classify_vfs(facts([vf(0, used_by=X, host=X), vf(1, used_by=Y, host=Y)])) == []


def test_unrecorded_a_vm_living_there_can_be_fixed() -> None:
    [d] = classify_vfs(facts([vf(2, host=X)]))
    assert (d.kind, d.node, d.vm_uuid, d.vm_name) == (DriftClass.VF_UNRECORDED, "n1", X, "web")
    assert (d.record, d.host) == (
        "ens1 VF 2 (0000:03:00.2) held by nobody",
        "ens1 VF 2 (0000:03:00.2) used by web",
    )
    assert d.detail == "fix: recorded as held by web's NIC on fast"
    assert d.data == {"pf": "ens1", "idx": 2, "pci": "0000:03:00.2", "physnet": "fast", "user": X}


def test_unrecorded_by_a_vm_living_elsewhere_or_unknown_is_reported_only() -> None:
    elsewhere = classify_vfs(facts([vf(2, node="n2", host=X)]))
    assert [(d.kind, d.detail) for d in elsewhere] == [
        (DriftClass.VF_UNRECORDED, "web lives on n1: reported only")
    ]
    entry = HostView(GHOST, "stray", PowerState.RUNNING, 1, 512, 1)
    [d] = classify_vfs(facts([vf(0, host=GHOST)], hosts={"n1": {GHOST: entry}}))
    assert (d.vm_name, d.detail) == ("stray", "a VM unknown to Bollard: reported only")


def test_conflict_names_the_vm_whose_vf_the_record_gives_another() -> None:
    found = facts([vf(0, used_by=Y, host=X), vf(1, used_by=X, host=None)])
    [d] = classify_vfs(found)
    assert (d.kind, d.vm_name) == (DriftClass.VF_CONFLICT, "web")
    assert (d.record, d.host) == (
        "ens1 VF 0 (0000:03:00.0) held by db",
        "ens1 VF 0 (0000:03:00.0) used by web",
    )
    assert (d.data["holder"], d.data["user"]) == (Y, X)


def test_mismatch_pairs_the_vf_held_with_the_vf_used_on_one_physnet() -> None:
    [d] = classify_vfs(facts([vf(0, used_by=X), vf(3, host=X)]))
    assert (d.kind, d.vm_name, d.record, d.host) == (
        DriftClass.VF_MISMATCH, "web", "holds ens1 VF 0 (0000:03:00.0)",
        "uses ens1 VF 3 (0000:03:00.3)",
    )  # fmt: skip
    assert d.data["held"] == {"pf": "ens1", "idx": 0, "pci": "0000:03:00.0"}
    assert d.data["used"] == {"pf": "ens1", "idx": 3, "pci": "0000:03:00.3"}
    assert d.data["mac"] == MAC_X


def test_a_vf_used_on_another_physnet_is_unrecorded_not_a_mismatch() -> None:
    found = facts([vf(0, used_by=X), vf(0, pf="ens2", physnet="slow", host=X)])
    assert kinds(found) == [("vf-unrecorded", "n1", "web")]


def test_leaked_a_vf_held_by_a_vm_living_elsewhere_or_deleted() -> None:
    found = facts([vf(1, node="n2", used_by=X), vf(2, node="n2", used_by=GHOST)])
    drifts = classify_vfs(found)
    assert [(d.kind, d.vm_name, d.host) for d in drifts] == [
        (DriftClass.VF_LEAKED, "web", "ens1 VF 1 (0000:03:00.1) unused; the VM lives on n1"),
        (DriftClass.VF_LEAKED, GHOST,
         "ens1 VF 2 (0000:03:00.2) unused; the VM is not in the database"),
    ]  # fmt: skip
    assert drifts[0].data["holder"] == X and drifts[0].data["mac"] == MAC_X


def test_a_copy_left_behind_is_unrecorded_and_its_old_claim_leaked() -> None:
    """web lives on n1; on n2 the record still gives it VF 0 and its copy there uses VF 1:
    not paired (a mismatch is fixed only where the VM lives)."""
    found = facts([vf(0, node="n2", used_by=X), vf(1, node="n2", host=X)])
    assert sorted(kinds(found)) == [("vf-leaked", "n2", "web"), ("vf-unrecorded", "n2", "web")]


def test_a_vf_held_on_the_vms_own_node_that_the_host_does_not_show_is_not_called() -> None:
    assert classify_vfs(facts([vf(0, used_by=X)])) == []


@pytest.mark.parametrize(
    "why",
    [
        "a task's claim",
        "the VM's task",
        "the holder's task",
        "building",
        "reported before the VM changed",
        "reported before the claim",
        "fenced",
        "inventory unknown",
        "no report yet",
        "deleted just now",
    ],
)
def test_a_difference_the_facts_cannot_vouch_for_is_not_called(why: str) -> None:
    vfs = [vf(0, used_by=Y, host=X)]
    vms = [vm(X, "web"), vm(Y, "db")]
    nodes = [node()]
    deleted: dict[str, datetime] = {}
    if why == "a task's claim":
        vfs = [vfs[0]._replace(task_id="t1")]
    elif why == "the VM's task":
        vms[0] = vms[0]._replace(task_id="t1")
    elif why == "the holder's task":
        vms[1] = vms[1]._replace(task_id="t1")
    elif why == "building":
        vms[0] = vms[0]._replace(vm_state=VmState.BUILDING)
    elif why == "reported before the VM changed":
        vms[1] = vms[1]._replace(updated_at=NOW)
    elif why == "reported before the claim":
        vfs = [vfs[0]._replace(claimed_at=NOW)]
    elif why == "fenced":
        nodes = [node(health=NodeHealth.FENCED)]
    elif why == "inventory unknown":
        nodes = [node(inventory_known=False)]
    elif why == "no report yet":
        nodes = [node(last_report=None)]
    elif why == "deleted just now":
        vfs = [vf(0, host=GHOST)]
        deleted = {GHOST: NOW}
    assert classify_vfs(facts(vfs, vms, nodes, deleted_at=deleted)) == []


def test_each_case_above_is_a_difference_once_the_facts_vouch() -> None:
    """The counterpart of the cases above: the same facts, settled, are called."""
    assert kinds(facts([vf(0, used_by=Y, host=X)])) == [("vf-conflict", "n1", "web")]
    settled = {GHOST: UPDATED}
    assert kinds(facts([vf(0, host=GHOST)], deleted_at=settled)) == [("vf-unrecorded", "n1", GHOST)]
