"""Differences between the database and what the hosts report, by class. Pure: the state
reconciler gathers the facts, this decides, and every case is unit-tested.

A difference is only called when the facts can vouch for it: the host's inventory must be
current (connected, full report received in this session) and the host must have reported
after the VM record last changed (a report built before a task ended says nothing about its
outcome). A VM held by a running task is the task's business, never a difference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from bollard.domain.models import HostVm, Vm
from bollard.domain.states import (
    DesiredPower,
    NodeHealth,
    PowerState,
    TaskState,
    TaskStatus,
    VmState,
)


class DriftClass(StrEnum):
    STALE = "stale"  # in the database on this node, not on the host
    ORPHAN = "orphan"  # on a host, not in the database (or a copy the owner does not explain)
    POWER = "power"  # observed power differs from the desired one, no task running
    SPEC = "spec"  # vCPUs or memory on the host differ from the record
    PENDING = "pending"  # task_state left by a task that ended; a task nobody drives
    LOST = "lost"  # owner node fenced or gone, and the VM runs nowhere
    # A resize whose old copy is gone from its source while it waits in VERIFY_RESIZE, or a
    # resize record still open that no task drives and no resized VM waits on.
    RESIZE = "resize"
    # Storage (bollard.domain.storage_drift): volume records against the pools' files.
    VOLUME_MISSING = "volume-missing"  # a volume at rest whose file its pool does not have
    VOLUME_ORPHAN = "volume-orphan"  # a file in a pool that no volume record owns
    VOLUME_STUCK = "volume-stuck"  # left in a transitional state (or held) by an ended task
    VOLUME_SIZE = "volume-size"  # the host's size of the file differs from the record's
    # SR-IOV (bollard.domain.sriov_drift): who holds each VF against who uses it on its host.
    VF_UNRECORDED = "vf-unrecorded"  # the host says a VM uses a VF the record gives nobody
    VF_CONFLICT = "vf-conflict"  # the record gives a VF to one VM, the host says another uses it
    VF_MISMATCH = "vf-mismatch"  # a VM holds one VF; its host's definition uses another
    VF_LEAKED = "vf-leaked"  # a VF held by a VM that neither lives on that node nor uses it


ALL_CLASSES: tuple[DriftClass, ...] = tuple(DriftClass)
STORAGE_CLASSES = frozenset(
    {
        DriftClass.VOLUME_MISSING,
        DriftClass.VOLUME_ORPHAN,
        DriftClass.VOLUME_STUCK,
        DriftClass.VOLUME_SIZE,
    }
)
SRIOV_CLASSES = frozenset(
    {
        DriftClass.VF_UNRECORDED,
        DriftClass.VF_CONFLICT,
        DriftClass.VF_MISMATCH,
        DriftClass.VF_LEAKED,
    }
)
# What a difference is known by from one pass to the next (recorded once, a failed automatic
# fix not retried until it changes): class, VM uuid, node, record, host; and for a storage
# difference its file ("pool/file").
DriftKey = tuple[str | None, ...]


@dataclass(frozen=True)
class NodeView:
    name: str
    health: NodeHealth
    inventory_known: bool
    last_report: datetime | None  # server time of the last accepted report


@dataclass(frozen=True)
class TaskView:
    id: str
    type: str
    state: TaskStatus
    updated_at: datetime
    driven: bool  # a task runner of this server is running it
    vm_uuid: str | None = None
    vm_name: str | None = None


@dataclass(frozen=True)
class ResizeView:
    """An open resize (a migration record neither confirmed, reverted nor failed)."""

    migration_id: str
    vm_uuid: str
    vm_name: str
    source: str | None
    dest: str | None
    status: str  # a MigrationStatus value
    updated_at: datetime


@dataclass(frozen=True)
class Drift:
    """One difference. `vm_uuid`/`vm_name` name the VM ("" when none: a volume attached to
    nothing, a stray file); a storage difference also names its `pool`, its `volume` (None
    for a file no record owns) and its `file`."""

    kind: DriftClass
    node: str | None
    vm_uuid: str
    vm_name: str
    record: str  # what the database says
    host: str  # what the host says (or what is true instead)
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    volume: str | None = None
    pool: str | None = None
    file: str | None = None

    @property
    def key(self) -> DriftKey:
        key = (self.kind.value, self.vm_uuid, self.node, self.record, self.host)
        return key if self.file is None else (*key, f"{self.pool}/{self.file}")

    @property
    def label(self) -> str:
        """What the difference is about, for messages: the volume (or file), else the VM."""
        return self.volume or self.file or self.vm_name or self.vm_uuid

    def to_dict(self) -> dict[str, Any]:
        """As the API gives it; a storage difference also has `volume`, `pool` and `file`."""
        out = {
            "class": self.kind.value,
            "node": self.node,
            "vm": self.vm_name,
            "uuid": self.vm_uuid,
            "record": self.record,
            "host": self.host,
            "detail": self.detail,
            "data": self.data,
        }
        if self.kind in STORAGE_CLASSES:
            out |= {"volume": self.volume, "pool": self.pool, "file": self.file}
        return out


class VmView(NamedTuple):
    """What classification reads of a VM record. A pass reads these columns of every VM
    (100,000 at the scale target) and nothing else: a full `Vm` costs three times as much."""

    uuid: str
    name: str
    node: str | None
    vcpus: int
    memory_mb: int
    epoch: int
    vm_state: VmState
    task_state: TaskState | None
    task_id: str | None
    desired_power: DesiredPower
    updated_at: datetime
    ha_policy: str
    autostart: bool

    @classmethod
    def of(cls, vm: Vm) -> VmView:
        return cls(
            vm.uuid, vm.name, vm.node, vm.vcpus, vm.memory_mb, vm.epoch, vm.vm_state,
            vm.task_state, vm.task_id, vm.desired_power, vm.updated_at, vm.ha_policy,
            vm.autostart,
        )  # fmt: skip


class HostView(NamedTuple):
    """What classification reads of a host's report of one VM (a ``host_vms`` row)."""

    uuid: str
    name: str
    power: PowerState
    vcpus: int
    memory_mb: int
    epoch: int

    @classmethod
    def of(cls, entry: HostVm) -> HostView:
        return cls(entry.uuid, entry.name, entry.power, entry.vcpus, entry.memory_mb, entry.epoch)


class VfView(NamedTuple):
    """What classification reads of a VF that someone holds or uses (a ``sriov_vfs`` row
    whose record or host names a VM; the free and unused ones are not read)."""

    node: str
    pf: str
    idx: int
    physnet: str
    pci: str
    netdev: str | None
    used_by: str | None  # the VM the record gives it to
    mac: str | None  # the MAC of that VM's NIC
    task_id: str | None  # a task's claim, not committed yet
    claimed_at: datetime | None
    host_used_by: str | None  # the VM whose definition uses it, as the host last reported


@dataclass(frozen=True)
class Facts:
    vms: list[VmView]
    hosts: Mapping[str, Mapping[str, HostView]]  # node -> uuid -> entry (known inventories only)
    nodes: Mapping[str, NodeView]
    tasks: Mapping[str, TaskView]  # the tasks VMs point at, and unfinished tasks
    deleted_at: Mapping[str, datetime]  # uuid -> when its record was deleted (recent ones)
    now: datetime
    # A task nobody drives is pending only once it has been still this long.
    task_grace: timedelta = timedelta(seconds=30)
    resizes: Mapping[str, ResizeView] = field(default_factory=dict)  # VM uuid -> open resize
    vfs: Sequence[VfView] = ()  # the VFs held or used (bollard.domain.sriov_drift)


_ON = frozenset({PowerState.RUNNING, PowerState.PAUSED})
_OFF = frozenset({PowerState.STOPPED, PowerState.CRASHED})
_SKIP_STATES = frozenset({VmState.BUILDING, VmState.DELETED})


def _spec(vcpus: int, memory_mb: int) -> str:
    return f"{vcpus} vCPU, {memory_mb} MiB"


def _settled(node: NodeView, since: datetime) -> bool:
    return node.last_report is not None and node.last_report > since


def classify(facts: Facts) -> list[Drift]:
    found: list[Drift] = []
    by_uuid = {vm.uuid: vm for vm in facts.vms}
    for vm in facts.vms:
        found.extend(_vm_drifts(vm, facts))
    for name, entries in sorted(facts.hosts.items()):
        node = facts.nodes.get(name)
        if node is None:
            continue
        for entry in entries.values():
            drift = _orphan(entry, node, by_uuid.get(entry.uuid), facts)
            if drift is not None:
                found.append(drift)
    found.extend(_undriven(facts))
    found.extend(_resizes(facts, by_uuid))
    return found


def _elsewhere(uuid: str, facts: Facts, but: str | None) -> list[str]:
    return sorted(n for n, entries in facts.hosts.items() if n != but and uuid in entries)


def _vm_drifts(vm: VmView, facts: Facts) -> Iterable[Drift]:
    if vm.task_id is not None:
        task = facts.tasks.get(vm.task_id)
        if task is None or task.state.ended:
            what = "does not exist" if task is None else f"ended {task.state}"
            yield Drift(
                DriftClass.PENDING, vm.node, vm.uuid, vm.name,
                record=f"task_state {vm.task_state} (task {vm.task_id})",
                host=f"task {what}",
                data={"task_id": vm.task_id, "task_state": str(vm.task_state)},
            )  # fmt: skip
        return
    if vm.vm_state in _SKIP_STATES:
        return
    node = facts.nodes.get(vm.node) if vm.node else None
    if node is None or node.health is NodeHealth.FENCED:
        yield from _lost(vm, node, facts)
        return
    if not node.inventory_known or not _settled(node, vm.updated_at):
        return
    entry = facts.hosts.get(node.name, {}).get(vm.uuid)
    if entry is None:
        if vm.vm_state is not VmState.ERROR:
            others = _elsewhere(vm.uuid, facts, node.name)
            detail = f"reported by {', '.join(others)}" if others else "no host reports it"
            yield Drift(
                DriftClass.STALE, node.name, vm.uuid, vm.name,
                record=f"{vm.vm_state} on {node.name}", host="absent", detail=detail,
                data={"elsewhere": others},
            )  # fmt: skip
        return
    if (entry.vcpus, entry.memory_mb) != (vm.vcpus, vm.memory_mb):
        yield Drift(
            DriftClass.SPEC, node.name, vm.uuid, vm.name,
            record=_spec(vm.vcpus, vm.memory_mb), host=_spec(entry.vcpus, entry.memory_mb),
            data={"vcpus": entry.vcpus, "memory_mb": entry.memory_mb},
        )  # fmt: skip
    if vm.vm_state is VmState.ERROR:
        return
    on = entry.power in _ON
    desired_on = vm.desired_power is DesiredPower.RUNNING
    # A resized VM's state says it waits for confirm or revert, not whether it runs.
    state_on = vm.vm_state in (VmState.ACTIVE, VmState.PAUSED) or (
        vm.vm_state is VmState.RESIZED and on
    )
    if on != desired_on or on != state_on:
        yield Drift(
            DriftClass.POWER, node.name, vm.uuid, vm.name,
            record=f"desired {vm.desired_power}, {vm.vm_state}", host=str(entry.power),
            detail=f"HA: {vm.ha_policy}",
            data={"observed": entry.power.value, "desired": vm.desired_power.value},
        )  # fmt: skip


def _lost(vm: VmView, node: NodeView | None, facts: Facts) -> Iterable[Drift]:
    others = _elsewhere(vm.uuid, facts, vm.node)
    if others:
        return  # it runs (or is defined) elsewhere: an orphan there, reported as such
    owner = "no node" if vm.node is None else f"{vm.node} ({node.health if node else 'gone'})"
    detail = "waiting for capacity (autostart)" if vm.autostart else ""
    yield Drift(
        DriftClass.LOST, vm.node, vm.uuid, vm.name,
        record=f"owned by {owner}", host="runs nowhere", detail=detail,
    )  # fmt: skip


def _orphan(entry: HostView, node: NodeView, vm: VmView | None, facts: Facts) -> Drift | None:
    if not node.inventory_known:
        return None
    if vm is None:
        deleted = facts.deleted_at.get(entry.uuid)
        if deleted is not None and not _settled(node, deleted):
            return None  # its delete has just finished; the host's next report drops it
        return Drift(
            DriftClass.ORPHAN, node.name, entry.uuid, entry.name,
            record="not in the database",
            host=f"{entry.power}, {_spec(entry.vcpus, entry.memory_mb)}",
            detail="deleted from the database earlier" if deleted else "unknown to Bollard",
            data={"epoch": entry.epoch},
        )  # fmt: skip
    if vm.node == node.name or vm.task_id is not None:
        return None  # the owner's copy, or a task (e.g. a migration) explains it
    resize = facts.resizes.get(vm.uuid)
    if resize is not None and resize.source == node.name and vm.vm_state is VmState.RESIZED:
        return None  # the old copy a resize keeps until it is confirmed or reverted
    if not _settled(node, vm.updated_at):
        return None  # reported before the record last changed (e.g. a migration ended)
    newer = "newer" if vm.epoch > entry.epoch else "same" if vm.epoch == entry.epoch else "older"
    return Drift(
        DriftClass.ORPHAN, node.name, entry.uuid, entry.name,
        record=f"owned by {vm.node}, epoch {vm.epoch}",
        host=f"{entry.power} copy, epoch {entry.epoch}",
        detail=f"a copy of {vm.name}; the owner's epoch is {newer}",
        data={"epoch": entry.epoch, "owner": vm.node, "owner_epoch": vm.epoch},
    )  # fmt: skip


def _undriven(facts: Facts) -> Iterable[Drift]:
    for task in facts.tasks.values():
        if task.state.ended or task.driven:
            continue
        if facts.now - task.updated_at < facts.task_grace:
            continue
        yield Drift(
            DriftClass.PENDING, None, task.vm_uuid or "", task.vm_name or "",
            record=f"task {task.id} ({task.type}) {task.state}", host="no server drives it",
            data={"task_id": task.id, "undriven": True},
        )  # fmt: skip


_RESIZE_GONE = frozenset({NodeHealth.FENCED})


def _resizes(facts: Facts, by_uuid: Mapping[str, VmView]) -> Iterable[Drift]:
    for resize in facts.resizes.values():
        vm = by_uuid.get(resize.vm_uuid)
        if vm is None or vm.task_id is not None:
            continue  # deleted (its delete ends the record), or a task drives it
        if vm.vm_state is not VmState.RESIZED or resize.status != "finished":
            if facts.now - resize.updated_at < facts.task_grace:
                continue  # a task may be about to end it
            yield Drift(
                DriftClass.RESIZE, vm.node, vm.uuid, vm.name,
                record=f"resize {resize.migration_id} {resize.status}",
                host=f"VM {vm.vm_state}, no task", detail="nothing drives this resize",
                data={"migration_id": resize.migration_id, "open": True},
            )  # fmt: skip
            continue
        source = resize.source
        if source is None or source == resize.dest:
            continue  # on its own node the old copy is the VM's own definition
        node = facts.nodes.get(source)
        if node is not None and node.health not in _RESIZE_GONE:
            if not node.inventory_known or not _settled(node, resize.updated_at):
                continue
            if vm.uuid in facts.hosts.get(source, {}):
                continue
        gone = "gone" if node is None else str(node.health)
        why = "does not report it" if node is not None and node.health not in _RESIZE_GONE else gone
        yield Drift(
            DriftClass.RESIZE, source, vm.uuid, vm.name,
            record=f"VERIFY_RESIZE, old copy kept on {source}",
            host=f"{source} {why}", detail="a revert is no longer possible",
            data={"migration_id": resize.migration_id, "source_gone": True},
        )  # fmt: skip
