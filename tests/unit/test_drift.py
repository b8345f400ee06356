"""Drift classification between the database and the hosts' reports (bollard.domain.drift)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bollard.domain.drift import (
    ALL_CLASSES,
    Drift,
    DriftClass,
    Facts,
    HostView,
    NodeView,
    TaskView,
    VmView,
    classify,
)
from bollard.domain.models import HostVm, Vm
from bollard.domain.states import (
    DesiredPower,
    NodeHealth,
    PowerState,
    TaskState,
    TaskStatus,
    VmState,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
UPDATED = NOW - timedelta(minutes=5)  # when the VM records last changed
REPORTED = NOW - timedelta(seconds=1)  # after UPDATED: the nodes' reports are settled
U1 = "11111111-1111-4111-8111-111111111111"
U2 = "22222222-2222-4222-8222-222222222222"
T1 = "task-1"

ENDED = [s for s in TaskStatus if s.ended]
UNFINISHED = [s for s in TaskStatus if not s.ended]


def vm(
    uuid: str = U1,
    *,
    name: str = "web",
    node: str | None = "n1",
    vcpus: int = 2,
    memory_mb: int = 1024,
    epoch: int = 1,
    vm_state: VmState = VmState.ACTIVE,
    task_state: TaskState | None = None,
    task_id: str | None = None,
    desired_power: DesiredPower = DesiredPower.RUNNING,
    updated_at: datetime = UPDATED,
    ha: str | None = None,
    autostart: bool = False,
) -> Vm:
    return Vm(
        uuid=uuid,
        name=name,
        node=node,
        vcpus=vcpus,
        memory_mb=memory_mb,
        epoch=epoch,
        vm_state=vm_state,
        task_state=task_state,
        task_id=task_id,
        desired_power=desired_power,
        observed_power=PowerState.RUNNING,
        observed_at=updated_at,
        observed_seq=1,
        fault=None,
        created_at=updated_at - timedelta(hours=1),
        updated_at=updated_at,
        ha=ha,
        autostart=autostart,
    )


def host_vm(
    uuid: str = U1,
    *,
    node: str = "n1",
    name: str = "web",
    power: PowerState = PowerState.RUNNING,
    vcpus: int = 2,
    memory_mb: int = 1024,
    epoch: int = 1,
) -> HostVm:
    return HostVm(
        node=node,
        uuid=uuid,
        name=name,
        power=power,
        vcpus=vcpus,
        memory_mb=memory_mb,
        epoch=epoch,
        seq=10,
        changed_at=UPDATED,
    )


def node(
    name: str = "n1",
    *,
    health: NodeHealth = NodeHealth.UP,
    inventory_known: bool = True,
    last_report: datetime | None = REPORTED,
) -> NodeView:
    return NodeView(
        name=name, health=health, inventory_known=inventory_known, last_report=last_report
    )


def task(
    id: str = T1,
    *,
    state: TaskStatus = TaskStatus.RUNNING,
    updated_at: datetime = NOW,
    driven: bool = True,
    vm_uuid: str | None = U1,
    vm_name: str | None = "web",
    type: str = "migrate",
) -> TaskView:
    return TaskView(
        id=id,
        type=type,
        state=state,
        updated_at=updated_at,
        driven=driven,
        vm_uuid=vm_uuid,
        vm_name=vm_name,
    )


def facts(
    vms: Sequence[Vm] = (),
    hosts: Mapping[str, list[HostVm]] | None = None,
    nodes: list[NodeView] | None = None,
    tasks: Sequence[TaskView] = (),
    deleted_at: Mapping[str, datetime] | None = None,
    now: datetime = NOW,
    task_grace: timedelta = timedelta(seconds=30),
) -> Facts:
    """Facts with nodes n1, n2 (up, known, settled) unless `nodes` is given; `hosts` maps a
    node to its entries (nodes not mentioned have an empty inventory)."""
    node_list = nodes if nodes is not None else [node("n1"), node("n2")]
    host_map: dict[str, dict[str, HostView]] = {n.name: {} for n in node_list if n.inventory_known}
    for name, entries in (hosts or {}).items():
        host_map[name] = {e.uuid: HostView.of(e) for e in entries}
    return Facts(
        vms=[VmView.of(v) for v in vms],
        hosts=host_map,
        nodes={n.name: n for n in node_list},
        tasks={t.id: t for t in tasks},
        deleted_at=dict(deleted_at or {}),
        now=now,
        task_grace=task_grace,
    )


def kinds(found: list[Drift]) -> list[DriftClass]:
    return sorted(d.kind for d in found)


def only(found: list[Drift], kind: DriftClass) -> Drift:
    matching = [d for d in found if d.kind is kind]
    assert len(matching) == 1, found
    return matching[0]


# the consistent case


def test_no_facts_no_drift() -> None:
    assert classify(facts()) == []


def test_consistent_running_vm() -> None:
    assert classify(facts([vm()], {"n1": [host_vm()]})) == []


def test_consistent_stopped_vm() -> None:
    record = vm(vm_state=VmState.STOPPED, desired_power=DesiredPower.STOPPED)
    for power in (PowerState.STOPPED, PowerState.CRASHED):
        assert classify(facts([record], {"n1": [host_vm(power=power)]})) == []


def test_consistent_paused_vm() -> None:
    record = vm(vm_state=VmState.PAUSED)
    assert classify(facts([record], {"n1": [host_vm(power=PowerState.PAUSED)]})) == []


def test_all_classes() -> None:
    assert set(ALL_CLASSES) == set(DriftClass)
    assert [c.value for c in ALL_CLASSES] == [
        "stale", "orphan", "power", "spec", "pending", "lost", "resize",
        "volume-missing", "volume-orphan", "volume-stuck", "volume-size",
        "vf-unrecorded", "vf-conflict", "vf-mismatch", "vf-leaked",
    ]  # fmt: skip


# stale


def test_stale() -> None:
    found = classify(facts([vm()]))
    d = only(found, DriftClass.STALE)
    assert found == [d]
    assert d.node == "n1"
    assert d.vm_uuid == U1
    assert d.vm_name == "web"
    assert d.record == "active on n1"
    assert d.host == "absent"
    assert d.detail == "no host reports it"
    assert d.data == {"elsewhere": []}


@pytest.mark.parametrize("state", [VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED])
def test_stale_any_settled_state(state: VmState) -> None:
    d = only(classify(facts([vm(vm_state=state)])), DriftClass.STALE)
    assert d.record == f"{state} on n1"


def test_stale_elsewhere() -> None:
    found = classify(
        facts(
            [vm()],
            {"n2": [host_vm(node="n2")], "n3": [host_vm(node="n3")]},
            nodes=[node("n1"), node("n2"), node("n3")],
        )
    )
    d = only(found, DriftClass.STALE)
    assert d.detail == "reported by n2, n3"
    assert d.data == {"elsewhere": ["n2", "n3"]}
    # the copies are orphans on their nodes (the VM has no task)
    orphans = [x for x in found if x.kind is DriftClass.ORPHAN]
    assert sorted(x.node or "" for x in orphans) == ["n2", "n3"]


def test_not_stale_when_inventory_unknown() -> None:
    assert classify(facts([vm()], nodes=[node("n1", inventory_known=False)])) == []


@pytest.mark.parametrize(
    "last_report",
    [None, UPDATED, UPDATED - timedelta(seconds=1)],
    ids=["never", "equal", "before"],
)
def test_not_stale_when_not_settled(last_report: datetime | None) -> None:
    assert classify(facts([vm()], nodes=[node("n1", last_report=last_report)])) == []


def test_stale_just_after_update() -> None:
    n = node("n1", last_report=UPDATED + timedelta(microseconds=1))
    assert kinds(classify(facts([vm()], nodes=[n]))) == [DriftClass.STALE]


def test_not_stale_when_task_holds_the_vm() -> None:
    record = vm(task_id=T1, task_state=TaskState.MIGRATING)
    assert classify(facts([record], tasks=[task()])) == []


@pytest.mark.parametrize("state", [VmState.BUILDING, VmState.DELETED, VmState.ERROR])
def test_not_stale_in_state(state: VmState) -> None:
    assert classify(facts([vm(vm_state=state)])) == []


# orphan


def test_orphan_unknown() -> None:
    entry = host_vm(U2, name="ghost", power=PowerState.STOPPED, vcpus=4, memory_mb=2048, epoch=3)
    found = classify(facts(hosts={"n1": [entry]}))
    d = only(found, DriftClass.ORPHAN)
    assert found == [d]
    assert d.node == "n1"
    assert d.vm_uuid == U2
    assert d.vm_name == "ghost"
    assert d.record == "not in the database"
    assert d.host == "stopped, 4 vCPU, 2048 MiB"
    assert d.detail == "unknown to Bollard"
    assert d.data == {"epoch": 3}


def test_orphan_recently_deleted_not_settled() -> None:
    deleted = REPORTED + timedelta(seconds=0.5)  # after the node's last report
    f = facts(hosts={"n1": [host_vm()]}, deleted_at={U1: deleted})
    assert classify(f) == []


def test_orphan_recently_deleted_same_instant_not_settled() -> None:
    f = facts(hosts={"n1": [host_vm()]}, deleted_at={U1: REPORTED})
    assert classify(f) == []


def test_orphan_deleted_then_reported() -> None:
    deleted = REPORTED - timedelta(seconds=10)
    found = classify(facts(hosts={"n1": [host_vm()]}, deleted_at={U1: deleted}))
    d = only(found, DriftClass.ORPHAN)
    assert d.detail == "deleted from the database earlier"
    assert d.record == "not in the database"


def test_orphan_deleted_never_reported() -> None:
    f = facts(
        hosts={"n1": [host_vm()]},
        nodes=[node("n1", last_report=None)],
        deleted_at={U1: UPDATED},
    )
    assert classify(f) == []


def test_no_orphan_from_unknown_inventory() -> None:
    # an inventory of a node whose report is not current says nothing
    f = facts(hosts={"n1": [host_vm(U2)]}, nodes=[node("n1", inventory_known=False)])
    assert classify(f) == []


def test_no_orphan_from_node_missing_in_nodes() -> None:
    f = facts(hosts={"n9": [host_vm(U2, node="n9")]})
    assert classify(f) == []


@pytest.mark.parametrize(
    ("owner_epoch", "word"), [(5, "newer"), (3, "same"), (1, "older")], ids=str
)
def test_orphan_copy_on_non_owner(owner_epoch: int, word: str) -> None:
    record = vm(epoch=owner_epoch)
    copy = host_vm(node="n2", power=PowerState.STOPPED, epoch=3)
    found = classify(facts([record], {"n1": [host_vm(epoch=owner_epoch)], "n2": [copy]}))
    d = only(found, DriftClass.ORPHAN)
    assert found == [d]
    assert d.node == "n2"
    assert d.vm_uuid == U1
    assert d.record == f"owned by n1, epoch {owner_epoch}"
    assert d.host == "stopped copy, epoch 3"
    assert d.detail == f"a copy of web; the owner's epoch is {word}"
    assert d.data == {"epoch": 3, "owner": "n1", "owner_epoch": owner_epoch}


def test_no_orphan_copy_while_task_holds_vm() -> None:
    record = vm(task_id=T1, task_state=TaskState.MIGRATING)
    f = facts([record], {"n1": [host_vm()], "n2": [host_vm(node="n2")]}, tasks=[task()])
    assert classify(f) == []


def test_no_orphan_for_owners_copy() -> None:
    assert classify(facts([vm()], {"n1": [host_vm()]})) == []


def test_orphan_copy_of_vm_with_no_node() -> None:
    record = vm(node=None, vm_state=VmState.STOPPED, desired_power=DesiredPower.STOPPED)
    found = classify(facts([record], {"n2": [host_vm(node="n2", power=PowerState.STOPPED)]}))
    # it is not lost (a copy exists), the copy is an orphan
    d = only(found, DriftClass.ORPHAN)
    assert found == [d]
    assert d.data["owner"] is None


def test_orphans_listed_by_node_name() -> None:
    f = facts(
        hosts={"n2": [host_vm(U2, node="n2")], "n1": [host_vm(U1)]},
    )
    assert [d.node for d in classify(f)] == ["n1", "n2"]


# power


@pytest.mark.parametrize("power", [PowerState.STOPPED, PowerState.CRASHED])
def test_power_desired_running_host_off(power: PowerState) -> None:
    found = classify(facts([vm()], {"n1": [host_vm(power=power)]}))
    d = only(found, DriftClass.POWER)
    assert found == [d]
    assert d.node == "n1"
    assert d.record == "desired running, active"
    assert d.host == str(power)
    assert d.detail == "HA: restart"
    assert d.data == {"observed": power.value, "desired": "running"}


@pytest.mark.parametrize("power", [PowerState.RUNNING, PowerState.PAUSED])
def test_power_desired_stopped_host_on(power: PowerState) -> None:
    record = vm(vm_state=VmState.STOPPED, desired_power=DesiredPower.STOPPED)
    found = classify(facts([record], {"n1": [host_vm(power=power)]}))
    d = only(found, DriftClass.POWER)
    assert found == [d]
    assert d.record == "desired stopped, stopped"
    assert d.host == str(power)
    assert d.detail == "HA: none"
    assert d.data == {"observed": power.value, "desired": "stopped"}


def test_power_record_state_mismatch() -> None:
    # desired and observed agree (off), but the record says ACTIVE
    record = vm(vm_state=VmState.ACTIVE, desired_power=DesiredPower.STOPPED)
    found = classify(facts([record], {"n1": [host_vm(power=PowerState.STOPPED)]}))
    d = only(found, DriftClass.POWER)
    assert d.record == "desired stopped, active"
    assert d.host == "stopped"


def test_power_record_stopped_host_running_desired_running() -> None:
    record = vm(vm_state=VmState.STOPPED, desired_power=DesiredPower.RUNNING)
    found = classify(facts([record], {"n1": [host_vm(power=PowerState.RUNNING)]}))
    assert kinds(found) == [DriftClass.POWER]


@pytest.mark.parametrize("ha", ["none", "restart"])
def test_power_detail_has_explicit_ha_policy(ha: str) -> None:
    found = classify(facts([vm(ha=ha)], {"n1": [host_vm(power=PowerState.STOPPED)]}))
    assert only(found, DriftClass.POWER).detail == f"HA: {ha}"


@pytest.mark.parametrize("power", list(PowerState))
def test_no_power_for_error_vm(power: PowerState) -> None:
    record = vm(vm_state=VmState.ERROR)
    assert classify(facts([record], {"n1": [host_vm(power=power)]})) == []


def test_no_power_when_not_settled() -> None:
    f = facts(
        [vm()],
        {"n1": [host_vm(power=PowerState.STOPPED)]},
        nodes=[node("n1", last_report=UPDATED)],
    )
    assert classify(f) == []


def test_no_power_while_task_holds_vm() -> None:
    record = vm(task_id=T1, task_state=TaskState.POWERING_ON)
    f = facts([record], {"n1": [host_vm(power=PowerState.STOPPED)]}, tasks=[task()])
    assert classify(f) == []


@pytest.mark.parametrize("state", [VmState.BUILDING, VmState.DELETED])
def test_no_power_in_skipped_state(state: VmState) -> None:
    f = facts([vm(vm_state=state)], {"n1": [host_vm(power=PowerState.STOPPED)]})
    assert classify(f) == []


# spec


@pytest.mark.parametrize(
    ("vcpus", "memory_mb"), [(4, 1024), (2, 2048), (1, 512)], ids=["vcpus", "memory", "both"]
)
def test_spec(vcpus: int, memory_mb: int) -> None:
    found = classify(facts([vm()], {"n1": [host_vm(vcpus=vcpus, memory_mb=memory_mb)]}))
    d = only(found, DriftClass.SPEC)
    assert found == [d]
    assert d.node == "n1"
    assert d.record == "2 vCPU, 1024 MiB"
    assert d.host == f"{vcpus} vCPU, {memory_mb} MiB"
    assert d.data == {"vcpus": vcpus, "memory_mb": memory_mb}


def test_no_spec_when_equal() -> None:
    assert (
        classify(facts([vm(vcpus=8, memory_mb=8192)], {"n1": [host_vm(vcpus=8, memory_mb=8192)]}))
        == []
    )


def test_spec_and_power_together() -> None:
    entry = host_vm(power=PowerState.STOPPED, vcpus=4)
    found = classify(facts([vm()], {"n1": [entry]}))
    assert [d.kind for d in found] == [DriftClass.SPEC, DriftClass.POWER]


def test_spec_reported_for_error_vm() -> None:
    # ERROR only stops the power check; a spec difference is still one
    found = classify(facts([vm(vm_state=VmState.ERROR)], {"n1": [host_vm(vcpus=4)]}))
    assert kinds(found) == [DriftClass.SPEC]


# pending


def test_pending_missing_task() -> None:
    record = vm(task_id=T1, task_state=TaskState.MIGRATING)
    found = classify(facts([record], {"n1": [host_vm()]}))
    d = only(found, DriftClass.PENDING)
    assert found == [d]
    assert d.node == "n1"
    assert d.vm_uuid == U1
    assert d.vm_name == "web"
    assert d.record == f"task_state migrating (task {T1})"
    assert d.host == "task does not exist"
    assert d.data == {"task_id": T1, "task_state": "migrating"}


@pytest.mark.parametrize("status", ENDED)
def test_pending_ended_task(status: TaskStatus) -> None:
    record = vm(task_id=T1, task_state=TaskState.POWERING_OFF)
    found = classify(facts([record], {"n1": [host_vm()]}, tasks=[task(state=status)]))
    d = only(found, DriftClass.PENDING)
    assert found == [d]
    assert d.host == f"task ended {status}"
    assert d.data == {"task_id": T1, "task_state": "powering-off"}


def test_pending_task_state_none() -> None:
    record = vm(task_id=T1, task_state=None)
    d = only(classify(facts([record], {"n1": [host_vm()]})), DriftClass.PENDING)
    assert d.record == f"task_state None (task {T1})"
    assert d.data["task_state"] == "None"


def test_pending_ended_task_masks_other_differences() -> None:
    # the task_state is the difference to fix first; nothing else is judged meanwhile
    record = vm(task_id=T1, task_state=TaskState.POWERING_ON)
    entry = host_vm(power=PowerState.STOPPED, vcpus=8)
    found = classify(facts([record], {"n1": [entry]}))
    assert kinds(found) == [DriftClass.PENDING]


@pytest.mark.parametrize("status", UNFINISHED)
def test_running_task_means_nothing_for_the_vm(status: TaskStatus) -> None:
    record = vm(task_id=T1, task_state=TaskState.MIGRATING)
    # everything else would be a difference: power, spec, a copy on n2
    f = facts(
        [record],
        {
            "n1": [host_vm(power=PowerState.STOPPED, vcpus=8)],
            "n2": [host_vm(node="n2")],
        },
        tasks=[task(state=status)],
    )
    assert classify(f) == []


def test_running_task_on_a_fenced_node_is_not_lost() -> None:
    record = vm(task_id=T1, task_state=TaskState.MIGRATING)
    f = facts([record], nodes=[node("n1", health=NodeHealth.FENCED)], tasks=[task()])
    assert classify(f) == []


@pytest.mark.parametrize("status", UNFINISHED)
def test_pending_undriven_task(status: TaskStatus) -> None:
    t = task(state=status, driven=False, updated_at=NOW - timedelta(seconds=31), type="start")
    found = classify(facts(tasks=[t]))
    d = only(found, DriftClass.PENDING)
    assert found == [d]
    assert d.node is None
    assert d.vm_uuid == U1
    assert d.vm_name == "web"
    assert d.record == f"task {T1} (start) {status}"
    assert d.host == "no server drives it"
    assert d.data == {"task_id": T1, "undriven": True}


def test_pending_undriven_task_at_exactly_grace() -> None:
    t = task(driven=False, updated_at=NOW - timedelta(seconds=30))
    assert kinds(classify(facts(tasks=[t]))) == [DriftClass.PENDING]


def test_pending_undriven_task_without_vm() -> None:
    t = task(driven=False, updated_at=NOW - timedelta(minutes=5), vm_uuid=None, vm_name=None)
    d = only(classify(facts(tasks=[t])), DriftClass.PENDING)
    assert d.vm_uuid == ""
    assert d.vm_name == ""


def test_pending_undriven_task_custom_grace() -> None:
    t = task(driven=False, updated_at=NOW - timedelta(seconds=31))
    assert classify(facts(tasks=[t], task_grace=timedelta(minutes=1))) == []
    assert kinds(classify(facts(tasks=[t], task_grace=timedelta(seconds=10)))) == [
        DriftClass.PENDING
    ]


def test_no_pending_for_driven_task() -> None:
    t = task(driven=True, updated_at=NOW - timedelta(hours=1))
    assert classify(facts(tasks=[t])) == []


def test_no_pending_for_young_undriven_task() -> None:
    t = task(driven=False, updated_at=NOW - timedelta(seconds=29))
    assert classify(facts(tasks=[t])) == []


@pytest.mark.parametrize("status", ENDED)
def test_no_undriven_pending_for_ended_task(status: TaskStatus) -> None:
    t = task(state=status, driven=False, updated_at=NOW - timedelta(hours=1))
    assert classify(facts(tasks=[t])) == []


def test_undriven_task_held_vm_reported_once() -> None:
    # a VM held by an old undriven task: the task is pending; the VM itself is not judged
    record = vm(task_id=T1, task_state=TaskState.MIGRATING)
    t = task(driven=False, updated_at=NOW - timedelta(minutes=2))
    found = classify(facts([record], {"n1": [host_vm(power=PowerState.STOPPED)]}, tasks=[t]))
    d = only(found, DriftClass.PENDING)
    assert found == [d]
    assert d.data["undriven"] is True


# lost


def test_lost_fenced_owner() -> None:
    f = facts([vm()], nodes=[node("n1", health=NodeHealth.FENCED), node("n2")])
    found = classify(f)
    d = only(found, DriftClass.LOST)
    assert found == [d]
    assert d.node == "n1"
    assert d.vm_uuid == U1
    assert d.vm_name == "web"
    assert d.record == "owned by n1 (fenced)"
    assert d.host == "runs nowhere"
    assert d.detail == ""
    assert d.data == {}


def test_lost_owner_missing() -> None:
    found = classify(facts([vm(node="n9")]))
    d = only(found, DriftClass.LOST)
    assert found == [d]
    assert d.node == "n9"
    assert d.record == "owned by n9 (gone)"


def test_lost_no_owner() -> None:
    found = classify(facts([vm(node=None)]))
    d = only(found, DriftClass.LOST)
    assert d.node is None
    assert d.record == "owned by no node"


def test_lost_autostart_waits_for_capacity() -> None:
    f = facts([vm(autostart=True)], nodes=[node("n1", health=NodeHealth.FENCED)])
    assert only(classify(f), DriftClass.LOST).detail == "waiting for capacity (autostart)"


def test_lost_ignores_fenced_nodes_stale_inventory_settledness() -> None:
    # lost does not need the owner's reports: a fenced node sends none
    fenced = node("n1", health=NodeHealth.FENCED, inventory_known=False, last_report=None)
    f = facts([vm()], nodes=[fenced])
    assert kinds(classify(f)) == [DriftClass.LOST]


def test_not_lost_when_on_another_node() -> None:
    f = facts(
        [vm()],
        {"n2": [host_vm(node="n2")]},
        nodes=[node("n1", health=NodeHealth.FENCED), node("n2")],
    )
    found = classify(f)
    # the copy on n2 is an orphan there, the VM is not lost
    d = only(found, DriftClass.ORPHAN)
    assert found == [d]
    assert d.node == "n2"
    assert d.data["owner"] == "n1"


def test_not_lost_when_owner_missing_but_on_another_node() -> None:
    found = classify(facts([vm(node="n9")], {"n2": [host_vm(node="n2")]}))
    assert kinds(found) == [DriftClass.ORPHAN]


@pytest.mark.parametrize(
    "health", [NodeHealth.SUSPECT, NodeHealth.DEAD, NodeHealth.FENCING, NodeHealth.FENCE_FAILED]
)
def test_not_lost_before_fenced(health: NodeHealth) -> None:
    # only a fenced (or vanished) owner makes a VM lost; an unreachable one is not judged
    n = node("n1", health=health, inventory_known=False)
    assert classify(facts([vm()], nodes=[n])) == []


@pytest.mark.parametrize("state", [VmState.BUILDING, VmState.DELETED])
def test_not_lost_in_skipped_state(state: VmState) -> None:
    f = facts([vm(vm_state=state)], nodes=[node("n1", health=NodeHealth.FENCED)])
    assert classify(f) == []


# several VMs, and Drift itself


def test_several_vms_each_judged() -> None:
    a = vm(U1, name="a")
    b = vm(U2, name="b", node="n2", desired_power=DesiredPower.STOPPED, vm_state=VmState.STOPPED)
    found = classify(
        facts([a, b], {"n2": [host_vm(U2, node="n2", name="b", power=PowerState.RUNNING)]})
    )
    assert {(d.kind, d.vm_name) for d in found} == {
        (DriftClass.STALE, "a"),
        (DriftClass.POWER, "b"),
    }


def test_drift_key() -> None:
    d = Drift(DriftClass.POWER, "n1", U1, "web", record="r", host="h", detail="x", data={"a": 1})
    assert d.key == ("power", U1, "n1", "r", "h")
    # detail and data are not part of the key
    assert replace(d, detail="y", data={}).key == d.key
    assert replace(d, kind=DriftClass.SPEC).key != d.key
    assert replace(d, vm_uuid=U2).key != d.key
    assert replace(d, node="n2").key != d.key
    assert replace(d, node=None).key != d.key
    assert replace(d, record="r2").key != d.key
    assert replace(d, host="h2").key != d.key


def test_drift_keys_of_a_classification_are_distinct() -> None:
    f = facts(
        [vm(), vm(U2, name="b", vcpus=1)],
        {"n1": [host_vm(power=PowerState.STOPPED, vcpus=4), host_vm(U2, name="b", vcpus=4)]},
    )
    found = classify(f)
    assert len(found) == 3
    assert len({d.key for d in found}) == 3


def test_drift_to_dict() -> None:
    d = Drift(
        DriftClass.ORPHAN, "n2", U1, "web", record="r", host="h", detail="x", data={"epoch": 3}
    )
    assert d.to_dict() == {
        "class": "orphan",
        "node": "n2",
        "vm": "web",
        "uuid": U1,
        "record": "r",
        "host": "h",
        "detail": "x",
        "data": {"epoch": 3},
    }


def test_drift_to_dict_of_classified() -> None:
    found = classify(facts([vm()], {"n1": [host_vm(vcpus=4)]}))
    assert [d.to_dict() for d in found] == [
        {
            "class": "spec",
            "node": "n1",
            "vm": "web",
            "uuid": U1,
            "record": "2 vCPU, 1024 MiB",
            "host": "4 vCPU, 1024 MiB",
            "detail": "",
            "data": {"vcpus": 4, "memory_mb": 1024},
        }
    ]


def test_drift_defaults() -> None:
    d = Drift(DriftClass.STALE, None, U1, "web", record="r", host="h")
    assert d.detail == ""
    assert d.data == {}
    other = Drift(DriftClass.STALE, None, U1, "web", record="r", host="h")
    assert other.data is not d.data
