"""Records of the model, as the store hands them out. Plain data, no behaviour beyond derivation."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bollard.domain.flavors import FlavorRef
from bollard.domain.ha import HaState, ha_state
from bollard.domain.limits import MAX_DISK_MB as MAX_DISK_MB
from bollard.domain.limits import MAX_DISKS as MAX_DISKS
from bollard.domain.states import (
    ApiStatus,
    DesiredPower,
    NodeHealth,
    PowerState,
    SchedulingState,
    TaskState,
    TaskStatus,
    VmState,
)
from bollard.domain.status import derive_status


@dataclass(frozen=True)
class Node:
    name: str
    health: NodeHealth
    scheduling: SchedulingState
    connected: bool
    vcpus: int
    memory_mb: int
    allocated_vcpus: int
    allocated_memory_mb: int
    driver: str | None
    agent_incarnation: str | None
    boot_id: str | None
    last_heartbeat: datetime | None
    last_seq: int
    created_at: datetime
    updated_at: datetime
    vm_count: int = 0
    load: float | None = None
    power_driver: str | None = None
    power_address: str | None = None
    has_power_credentials: bool = False
    health_since: datetime | None = None
    report_host_time: float | None = None  # the host's clock at its last accepted report
    inventory_incarnation: str | None = None  # whose full report host_vms reflects
    migration_endpoint: dict[str, Any] | None = None  # how peers migrate VMs to this node
    maintenance: bool = False  # per-node maintenance: drained, and not fenced while on
    shutdown_policy: str | None = None  # freeze | failover | migrate | conditional (None: setting)
    shutdown_kind: str | None = None  # the clean shutdown its agent announced: poweroff | reboot
    shutdown_at: datetime | None = None

    @property
    def inventory_known(self) -> bool:
        """Whether this node's reported inventory is current: connected, and its current
        agent session has sent a full report."""
        return (
            self.connected
            and self.agent_incarnation is not None
            and self.inventory_incarnation == self.agent_incarnation
        )


@dataclass(frozen=True)
class HostVm:
    """One VM as a host last reported it (host_vms), whether or not the database has it."""

    node: str
    uuid: str
    name: str
    power: PowerState
    vcpus: int
    memory_mb: int
    epoch: int
    seq: int
    changed_at: datetime


def ha_policy(ha: str | None, desired_power: DesiredPower) -> str:
    """The HA policy in force: `ha` when set, else restart when the VM is desired running."""
    if ha is not None:
        return ha
    return "restart" if desired_power is DesiredPower.RUNNING else "none"


@dataclass(frozen=True)
class Disk:
    """A disk asked for when a VM is created: a new, empty volume of `pool` (None: the pool
    `local`) attached to it, deleted with it (see domain/storage.py)."""

    size_mb: int
    pool: str | None = None


def disk_device(index: int) -> str:
    """The guest device of the VM's disk at `index` in its list: vda, vdb, ..."""
    if not 0 <= index < MAX_DISKS:
        raise ValueError(f"disk index {index} out of range")
    return "vd" + chr(ord("a") + index)


def disk_args(disks: Iterable[Disk]) -> list[dict[str, Any]]:
    """Disks as a create task's params record them: [{"size_mb": n, "pool": p}, ...]."""
    return [{"size_mb": d.size_mb, "pool": d.pool} for d in disks]


MAX_NICS = 8
NIC_MODELS = ("virtio", "e1000", "rtl8139")
# The name of the network or bridge a NIC is on.
NIC_ATTACHMENT = r"^[A-Za-z0-9_.:-]{1,63}$"
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


@dataclass(frozen=True)
class Nic:
    """A network interface of a VM: on a hypervisor network, on a host bridge, or on an
    SR-IOV virtual function of a physical network (exactly one of the three), with the MAC
    address it keeps for the VM's whole life, wherever it runs (migrations and HA restarts
    take it along). Fixed at creation. An SR-IOV NIC holds a VF of its node (the store's
    `sriov_vfs`, domain/sriov.py), claimed where the VM is placed: `mode` says how the guest
    gets it (macvtap passthrough, or the PCI device itself: `hostdev`, which cannot migrate
    live)."""

    mac: str  # lower case, 6 hex pairs; "" in a create request: the server assigns one
    network: str | None = None
    bridge: str | None = None
    model: str = "virtio"
    sriov: str | None = None  # the physical network of its VF
    mode: str | None = None  # macvtap | hostdev (SR-IOV NICs only)

    @property
    def hostdev(self) -> bool:
        return self.sriov is not None and self.mode == "hostdev"


def normalise_mac(value: str) -> str:
    """A MAC address as Bollard stores it (lower case), or ValueError when it is not six hex
    pairs separated by ':' or is a multicast address (lowest bit of the first octet set)."""
    mac = value.lower()
    if not _MAC.fullmatch(mac):
        raise ValueError(f"{value!r} is not a MAC address (six hex pairs separated by ':')")
    if int(mac[:2], 16) & 1:
        raise ValueError(f"{value!r} is a multicast MAC address: a NIC needs a unicast one")
    return mac


def nic_args(nics: Iterable[Nic]) -> list[dict[str, Any]]:
    """NICs as a DEFINE command and a task's params carry them: [{"mac", "network" or
    "bridge" or "sriov" and "mode", "model"}, ...] (what a NIC does not have is left out)."""
    args = []
    for n in nics:
        arg = {
            "mac": n.mac, "network": n.network, "bridge": n.bridge, "model": n.model,
            "sriov": n.sriov, "mode": n.mode,
        }  # fmt: skip
        args.append({k: v for k, v in arg.items() if v is not None})
    return args


@dataclass(frozen=True)
class Vm:
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
    observed_power: PowerState
    observed_at: datetime | None
    observed_seq: int
    fault: str | None
    created_at: datetime
    updated_at: datetime
    previous_node: str | None = None
    migration_method: str = "default"
    node_limit: list[str] | None = None
    node_selector: str | None = None
    on_lost: str = "none"
    ha: str | None = None  # restart | none; None: restart when desired running
    ha_priority: int = 0
    autostart: bool = False
    nics: tuple[Nic, ...] = ()  # network interfaces, in order
    flavor: FlavorRef | None = None  # the flavor last given, as it was then (None: by hand)
    hidden: bool = False  # a cell's copy of a VM moving between cells, not the one shown
    ha_group: str | None = None  # its HA group (domain/ha.py)
    ha_hold: str | None = None  # ignored | error (None: HA acts on it)
    max_restart: int | None = None  # None: the setting ha.max_restart
    max_relocate: int | None = None  # None: the setting ha.max_relocate
    ha_restarts: int = 0  # failed starts retried on its node since it last ran steadily
    ha_relocates: int = 0  # relocations after them

    @property
    def ha_policy(self) -> str:
        """The HA policy in force: restart (on another node after a fence) or none."""
        return ha_policy(self.ha, self.desired_power)

    @property
    def ha_state(self) -> HaState:
        """Its HA request state (started, stopped, disabled, ignored, error)."""
        return ha_state(self.ha_policy, self.desired_power is DesiredPower.RUNNING, self.ha_hold)

    @property
    def ha_managed(self) -> bool:
        """Whether HA may act on it at all (not ignored, not in error)."""
        return self.ha_hold is None

    def status(self, *, node_stale: bool = False) -> ApiStatus:
        return derive_status(self.vm_state, self.task_state, node_stale=node_stale)


@dataclass(frozen=True)
class Task:
    id: str
    type: str
    vm_uuid: str | None
    vm_name: str | None
    node: str | None
    state: TaskStatus
    params: dict[str, Any]
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    result: dict[str, Any] = field(default_factory=dict)
    cancel_requested: bool = False
    steps: list[TaskStep] = field(default_factory=list)
    actor: str | None = None  # who asked for it; None for tasks before revision 0010
    request_id: str | None = None  # the API request that asked for it (None: the server)
    owner: str | None = None  # the id of the server that runs it (store/task_owners.py)


@dataclass(frozen=True)
class TaskStep:
    task_id: str
    idx: int
    name: str
    state: str  # a StepState value (domain/tasks.py): pending, running, waiting, done, ...
    result: dict[str, Any]
    commands: dict[str, str]  # call key -> command id
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    undo_started_at: datetime | None
    undo_finished_at: datetime | None
    undo_error: str | None
    attempts: int = 0  # attempts made so far (counted by whoever retries the step)
    retry_at: datetime | None = None  # when a `waiting` step runs again (None otherwise)


@dataclass(frozen=True)
class Event:
    id: int
    at: datetime
    kind: str
    vm_uuid: str | None
    vm_name: str | None
    node: str | None
    task_id: str | None
    message: str
    data: dict[str, Any]
    actor: str | None = None  # a user or token name, "system"; None for events before 0010


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None
    total: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CommandTransition:
    at: datetime
    from_state: str | None
    to_state: str
    note: str | None


@dataclass(frozen=True)
class CommandRecord:
    id: str
    node: str
    type: str
    args: dict[str, Any]
    vm_uuid: str | None
    epoch: int
    task_id: str | None
    state: str
    agent_state: str | None
    answer: dict[str, Any] | None  # {"ok", "result", "error"} once the outcome is known
    error: str | None
    attempts: int
    deadline: datetime | None
    created_at: datetime
    updated_at: datetime
    history: list[CommandTransition] = field(default_factory=list)

    @property
    def ok(self) -> bool | None:
        """True or False once the outcome is known, else None."""
        if self.answer is None or "ok" not in self.answer:
            return None
        return bool(self.answer["ok"])
