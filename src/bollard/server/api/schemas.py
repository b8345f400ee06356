"""Request and response bodies of the REST API (these also make the OpenAPI document)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, field_validator, model_validator

from bollard.domain.ha import HaState
from bollard.domain.migrations import Migration
from bollard.domain.models import (
    MAX_DISK_MB,
    MAX_DISKS,
    MAX_NICS,
    NIC_ATTACHMENT,
    HostVm,
    Nic,
    Task,
    TaskStep,
    Vm,
    normalise_mac,
)
from bollard.domain.states import (
    ApiStatus,
    DesiredPower,
    PowerState,
    TaskState,
    TaskStatus,
    VmState,
)
from bollard.domain.storage import POOL_NAME, Volume
from bollard.server.api.flavor_schemas import FlavorName, FlavorRefOut, ResizeOut
from bollard.server.api.params import NAME_PATTERN
from bollard.server.api.server_schemas import ServerCounts
from bollard.server.api.unvalidated import built

Name = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=NAME_PATTERN)]


class ErrorInfo(BaseModel):
    code: str = Field(description="Stable, machine-readable: e.g. not-found, invalid-input.")
    message: str = Field(description="One line for people: what was wrong.")


class ErrorOut(BaseModel):
    """Every error the API answers (any 4xx or 5xx status)."""

    error: ErrorInfo


@dataclass(frozen=True)
class NodesSeen:
    """When each node last reported, and after how long its VMs' status is UNKNOWN."""

    last: dict[str, datetime | None]
    host_time: dict[str, float | None]
    stale_after: float
    disks: dict[str, list[Volume]] = field(default_factory=dict)  # VM uuid -> its volumes
    resizes: dict[str, Migration] = field(default_factory=dict)  # VM uuid -> its open resize


LOCAL_DISKS = (
    "The VM's disks, in device order (vda, vdb, ...): the volumes attached to it. Those given "
    "at creation are new, empty volumes (of the pool `local` unless `pool` says otherwise), "
    "deleted with the VM. Volumes in local pools move with live and shutdown migrations; an "
    "HA restart on another node after a fence makes them anew, EMPTY: their data died with "
    "the fenced host. Volumes in shared pools stay where they are and keep their data."
)


class DiskIn(BaseModel):
    size_mb: int = Field(ge=1, le=MAX_DISK_MB, description="Size in MiB (at most 64 TiB).")
    pool: str | None = Field(
        default=None,
        pattern=POOL_NAME,
        description="The pool of its volume (default: `local`, each host's own directory).",
    )


class DiskOut(BaseModel):
    device: str = Field(description="vda, vdb, ...")
    size_mb: int
    volume: str | None = Field(default=None, description="The volume (`bollard volume show`).")
    pool: str | None = None
    state: str | None = Field(default=None, description="The volume's state.")


NETWORK_INTERFACES = (
    "Network interfaces, in order, each on a hypervisor network or a host bridge of the "
    "VM's host (the same name on every host it may run on). Each keeps its MAC address for "
    "the VM's life: migrations and HA restarts take it along. Fixed at creation."
)

NetName = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=NIC_ATTACHMENT)]
NicModel = Literal["virtio", "e1000", "rtl8139"]


class NicIn(BaseModel):
    network: NetName | None = Field(default=None, description="A hypervisor network (libvirt).")
    bridge: NetName | None = Field(default=None, description="A bridge of the host.")
    sriov: NetName | None = Field(
        default=None,
        description="An SR-IOV virtual function of this physical network (a free VF of the "
        "VM's node is claimed where the VM is placed).",
    )
    mode: Literal["macvtap", "hostdev"] | None = Field(
        default=None,
        description="SR-IOV NICs only: macvtap (passthrough; default) or hostdev (the VF's "
        "PCI device itself; the VM then migrates by shutdown only).",
    )
    model: NicModel = "virtio"
    mac: str | None = Field(
        default=None,
        description="aa:bb:cc:dd:ee:ff, unicast, unique among VMs (409 if another VM has "
        "it); default: a free random 52:54:00:xx:xx:xx.",
    )

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str | None) -> str | None:
        return None if value is None else normalise_mac(value)

    @model_validator(mode="after")
    def _one_attachment(self) -> NicIn:
        given = [a for a in (self.network, self.bridge, self.sriov) if a is not None]
        if len(given) != 1:
            raise ValueError(
                "a NIC has a network, a bridge or an SR-IOV physical network (exactly one)"
            )
        if self.mode is not None and self.sriov is None:
            raise ValueError(f"mode {self.mode}: only for an SR-IOV NIC (sriov=PHYSNET)")
        return self

    def nic(self) -> Nic:
        """The NIC to create ("" for a MAC the server assigns)."""
        mode = (self.mode or "macvtap") if self.sriov is not None else None
        return Nic(
            mac=self.mac or "", network=self.network, bridge=self.bridge, model=self.model,
            sriov=self.sriov, mode=mode,
        )  # fmt: skip


class NicOut(BaseModel):
    mac: str
    network: str | None
    bridge: str | None
    model: str
    sriov: str | None = None
    mode: str | None = None

    @classmethod
    def of(cls, n: Nic) -> NicOut:
        return cls(
            mac=n.mac, network=n.network, bridge=n.bridge, model=n.model,
            sriov=n.sriov, mode=n.mode,
        )  # fmt: skip


class VmOut(BaseModel):
    name: str
    uuid: str
    node: str | None
    status: ApiStatus
    vm_state: VmState
    task_state: TaskState | None
    task_id: str | None
    desired_power: DesiredPower
    observed_power: PowerState
    observed_at: datetime | None
    observed_seq: int
    vcpus: int
    memory_mb: int
    epoch: int
    fault: str | None
    previous_node: str | None
    ha: str
    ha_priority: int
    autostart: bool
    migration_method: str
    node_limit: list[str] | None
    node_selector: str | None
    on_lost: str
    ha_state: HaState = Field(
        default=HaState.DISABLED,
        description="Its HA request state: started, stopped, disabled (not HA), ignored (HA "
        "never touches it) or error (its restart and relocate limits ran out).",
    )
    ha_group: str | None = Field(default=None, description="Its HA group (null: none).")
    max_restart: int | None = Field(default=None, description="null: the setting ha.max_restart.")
    max_relocate: int | None = Field(default=None, description="null: the setting ha.max_relocate.")
    ha_restarts: int = Field(default=0, description="Failed starts retried on its node.")
    ha_relocates: int = Field(default=0, description="Relocations after them.")
    disks: list[DiskOut] = Field(default_factory=list, description=LOCAL_DISKS)
    nics: list[NicOut] = Field(default_factory=list, description=NETWORK_INTERFACES)
    flavor: FlavorRefOut | None = Field(
        default=None,
        description="The flavor the VM was last given, as it was then (null: its size was "
        "given by hand).",
    )
    resize: ResizeOut | None = Field(
        default=None,
        description="Its resize under way or waiting in VERIFY_RESIZE: what a confirm drops "
        "and a revert goes back to.",
    )
    created_at: datetime
    updated_at: datetime

    reported_at: datetime | None = Field(
        default=None, description="When the owner node last reported (server clock)."
    )
    host_reported_at: float | None = Field(
        default=None, description="The owner host's clock at that report (seconds)."
    )
    observed_vcpus: int | None = Field(
        default=None, description="vCPUs the owner host reports (single-VM reads only)."
    )
    observed_memory_mb: int | None = Field(
        default=None, description="Memory the owner host reports (single-VM reads only)."
    )
    hidden: bool = Field(
        default=False,
        description="A cell's copy of a VM moving between cells, not the one shown "
        "(only with `?hidden=true`).",
    )

    @classmethod
    def of(cls, vm: Vm, seen: NodesSeen, now: datetime, observed: HostVm | None = None) -> VmOut:
        """Built without validation (api/unvalidated.py): each value is of its field's type."""
        node = vm.node
        last = seen.last.get(node) if node else None
        stale = node is not None and (
            last is None or now - last > timedelta(seconds=seen.stale_after)
        )
        host_time = seen.host_time.get(node) if node else None
        flavor = vm.flavor
        resize = seen.resizes.get(vm.uuid)
        return built(cls, {
            "name": vm.name,
            "uuid": vm.uuid,
            "node": node,
            "status": vm.status(node_stale=stale),
            "vm_state": vm.vm_state,
            "task_state": vm.task_state,
            "task_id": vm.task_id,
            "desired_power": vm.desired_power,
            "observed_power": vm.observed_power,
            "observed_at": vm.observed_at,
            "observed_seq": vm.observed_seq,
            "vcpus": vm.vcpus,
            "memory_mb": vm.memory_mb,
            "epoch": vm.epoch,
            "fault": vm.fault,
            "previous_node": vm.previous_node,
            "ha": vm.ha_policy,
            "ha_priority": vm.ha_priority,
            "autostart": vm.autostart,
            "migration_method": vm.migration_method,
            "node_limit": vm.node_limit,
            "node_selector": vm.node_selector,
            "on_lost": vm.on_lost,
            "ha_state": vm.ha_state,
            "ha_group": vm.ha_group,
            "max_restart": vm.max_restart,
            "max_relocate": vm.max_relocate,
            "ha_restarts": vm.ha_restarts,
            "ha_relocates": vm.ha_relocates,
            "disks": [
                built(DiskOut, {
                    "device": d.device or "",
                    "size_mb": d.size_mb,
                    "volume": d.name,
                    "pool": d.pool,
                    "state": d.state.value,
                })
                for d in seen.disks.get(vm.uuid, ())
            ],
            "nics": [
                built(NicOut, {
                    "mac": n.mac, "network": n.network, "bridge": n.bridge, "model": n.model,
                    "sriov": n.sriov, "mode": n.mode,
                })
                for n in vm.nics
            ],
            "flavor": None if flavor is None else built(FlavorRefOut, {
                "id": flavor.id, "name": flavor.name, "vcpus": flavor.vcpus,
                "memory_mb": flavor.memory_mb, "disk_mb": flavor.disk_mb,
                "properties": dict(flavor.properties),
            }),
            "resize": None if resize is None else ResizeOut.of(resize),
            "created_at": vm.created_at,
            "updated_at": vm.updated_at,
            "reported_at": last,
            "host_reported_at": None if host_time is None else float(host_time),
            "observed_vcpus": observed.vcpus if observed else None,
            "observed_memory_mb": observed.memory_mb if observed else None,
            "hidden": vm.hidden,
        })  # fmt: skip


MigrationMethod = Literal["default", "live", "shutdown"]
SelectorName = Literal["mem", "memprov", "vcpus", "load", "vms", "static"]
OnLost = Literal["none", "start"]
SettableHaState = Literal["started", "stopped", "disabled", "ignored"]
GROUP_OR_NONE = r"^([A-Za-z0-9][A-Za-z0-9._-]*)?$"  # a group's name, or "" (none)


class VmMetaFields(BaseModel):
    migration_method: MigrationMethod | None = Field(
        default=None,
        description="default: live, falling back to shutdown migration; live: never falls "
        "back; shutdown: stop, move, start.",
    )
    node_limit: list[Name] | None = Field(
        default=None, description="The only nodes the VM may run on (empty list: any)."
    )
    node_selector: SelectorName | None = Field(
        default=None, description="How a target is picked for this VM (default: the cluster's)."
    )
    ha: Literal["restart", "none"] | None = Field(
        default=None,
        description="After its node is fenced: restart the VM elsewhere, or not (default: "
        "restart when its desired power is running).",
    )
    ha_priority: int | None = Field(default=None, ge=-1000, le=1000, description="Higher first.")
    on_lost: OnLost | None = Field(
        default=None,
        description="When a migration leaves the VM running nowhere: none (ERROR) or start "
        "(start it on its owner).",
    )
    ha_group: Annotated[str, StringConstraints(max_length=63, pattern=GROUP_OR_NONE)] | None = (
        Field(default=None, description='Its HA group ("" or null: none).')
    )
    ha_state: SettableHaState | None = Field(
        default=None,
        description="started: HA keeps it running (a stopped VM is started); stopped: HA keeps "
        "it stopped (a running VM is shut down); disabled: not HA (as `ha` none); ignored: HA "
        "never touches it. Setting any clears an error state and the restart/relocate counts.",
    )
    max_restart: int | None = Field(
        default=None, ge=0, le=100,
        description="Failed starts retried on its node before it is relocated (null: the "
        "setting ha.max_restart).",
    )  # fmt: skip
    max_relocate: int | None = Field(
        default=None, ge=0, le=100,
        description="Relocations to other nodes before it is left in error state (null: the "
        "setting ha.max_relocate).",
    )  # fmt: skip


class VmCreate(VmMetaFields):
    name: Name
    vcpus: int | None = Field(default=None, ge=1, le=1024, description="Without a flavor.")
    memory_mb: int | None = Field(
        default=None, ge=16, le=16 * 1024 * 1024, description="Without a flavor."
    )
    flavor: FlavorName | None = Field(
        default=None,
        description="The VM's size from a flavor (instead of vcpus and memory_mb): its vCPUs, "
        "memory and, if it has one, its root disk (vda, before the disks given). The VM "
        "keeps a copy of the flavor as it is now.",
    )
    root_pool: str | None = Field(
        default=None, pattern=POOL_NAME, description="The pool of the flavor's root disk."
    )
    node: Name | None = None
    start: bool = False
    disks: list[DiskIn] = Field(
        default_factory=list,
        max_length=MAX_DISKS,
        description=LOCAL_DISKS + f" At most {MAX_DISKS}.",
    )
    nics: list[NicIn] = Field(
        default_factory=list,
        max_length=MAX_NICS,
        description=NETWORK_INTERFACES + f" At most {MAX_NICS}.",
    )

    def size_problems(self) -> list[str]:
        """What is wrong with how the size is given (a flavor, or vcpus and memory_mb)."""
        if self.flavor is not None:
            given = [f for f in ("vcpus", "memory_mb") if getattr(self, f) is not None]
            return [f"{f}: not with a flavor (the flavor gives it)" for f in given]
        problems = [
            f"{f}: required (or give a flavor)"
            for f in ("vcpus", "memory_mb")
            if getattr(self, f) is None
        ]
        if self.root_pool is not None:
            problems.append("root_pool: only with a flavor (its root disk)")
        return problems

    @field_validator("nics")
    @classmethod
    def _distinct_macs(cls, nics: list[NicIn]) -> list[NicIn]:
        given = [n.mac for n in nics if n.mac is not None]
        for mac in given:
            if given.count(mac) > 1:
                raise ValueError(f"MAC address {mac} is given to more than one NIC")
        return nics


class MigrateRequest(BaseModel):
    to: Name | None = Field(default=None, description="Target node; default: chosen by selector.")
    method: MigrationMethod | None = Field(default=None, description="Default: the VM's own.")
    force_live: bool = Field(default=False, description="Never fall back to shutdown migration.")


class ResizeRequest(BaseModel):
    flavor: FlavorName = Field(description="The flavor to resize to.")
    to: Name | None = Field(
        default=None, description="Destination node; default: chosen by the scheduler."
    )


class ShutdownRequest(BaseModel):
    timeout: float | None = Field(default=None, gt=0, le=3600)


class StepOut(BaseModel):
    idx: int
    name: str
    state: str
    result: dict[str, Any]
    commands: dict[str, str]
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    undo_started_at: datetime | None
    undo_finished_at: datetime | None
    undo_error: str | None
    attempts: int = Field(
        description="Runs that failed with a temporary error and were (or will be) retried."
    )
    retry_at: datetime | None = Field(
        description="While `waiting`: when the next attempt runs (the backoff survives a "
        "server restart)."
    )

    @classmethod
    def of(cls, s: TaskStep) -> StepOut:
        return cls(
            idx=s.idx,
            name=s.name,
            state=s.state,
            result=s.result,
            commands=s.commands,
            error=s.error,
            started_at=s.started_at,
            finished_at=s.finished_at,
            undo_started_at=s.undo_started_at,
            undo_finished_at=s.undo_finished_at,
            undo_error=s.undo_error,
            attempts=s.attempts,
            retry_at=s.retry_at,
        )


class TaskOut(BaseModel):
    id: str
    type: str
    vm: str | None
    vm_uuid: str | None
    node: str | None
    state: TaskStatus
    params: dict[str, Any]
    result: dict[str, Any]
    error: str | None
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    actor: str | None = None  # who asked for it: a user or token name, or "system"
    server: str | None = Field(
        default=None,
        description="The id of the server that runs it, or ran it last (see GET /servers); "
        "null for a task from before servers had ids.",
    )
    steps: list[StepOut] | None = None

    @classmethod
    def of(cls, t: Task, *, with_steps: bool = False) -> TaskOut:
        return cls(
            id=t.id,
            type=t.type,
            vm=t.vm_name,
            vm_uuid=t.vm_uuid,
            node=t.node,
            state=t.state,
            params=t.params,
            result=t.result,
            error=t.error,
            cancel_requested=t.cancel_requested,
            created_at=t.created_at,
            updated_at=t.updated_at,
            finished_at=t.finished_at,
            actor=t.actor,
            server=t.owner,
            steps=[StepOut.of(s) for s in t.steps] if with_steps else None,
        )


class VmTask(BaseModel):
    vm: VmOut
    task: TaskOut


class VmPage(BaseModel):
    items: list[VmOut]
    next_cursor: str | None
    total: int


class TaskPage(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None
    total: int


class Counts(BaseModel):
    total: int
    connected: int


class VmCounts(BaseModel):
    total: int
    by_status: dict[str, int]


class Unreachable(BaseModel):
    cell: str
    error: str


class CellState(BaseModel):
    name: str
    state: Literal["up", "unreachable", "unknown"]
    error: str | None


class StatusOut(BaseModel):
    version: str
    database: str
    nodes: Counts
    vms: VmCounts
    tasks_running: int
    maintenance: bool = Field(
        default=False,
        description="Maintenance mode: fencing and recovery are suspended "
        "(`PUT /cluster/maintenance`).",
    )
    mode: Literal["single", "cells"] = Field(
        default="single",
        description="`single`: one server and its database; `cells`: an API server in front "
        "of cells (the counts are the sums over the cells that answered).",
    )
    cells: list[CellState] | None = Field(
        default=None, description="With cells: each cell and whether it answered."
    )
    unreachable: list[Unreachable] = Field(
        default_factory=list, description="With cells: the cells that did not answer."
    )
    servers: ServerCounts | None = Field(
        default=None,
        description="The management servers on this database (`GET /servers`): how many are "
        "listed, how many are up, and the leader's name (null on an API server with cells).",
    )
