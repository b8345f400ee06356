"""Storage pools, volumes and snapshots: records, names and the whitelisted volume states.

A **pool** is a directory of volume files: ``local`` (each host of the pool has its own, at
the same path; a volume in it lives on one host, ``Volume.node``) or ``shared`` (every host of
the pool mounts one directory; its volumes have no node). A pool names the nodes that see it,
or none (every node). The pool ``local`` exists from the start: its path is each host's
default storage directory, where VM disks lived before pools existed.

A **volume** is one file of a pool, an entity of its own: a VM's disks are volumes attached
to it (the ones made with the VM are deleted with it, ``delete_with_vm``). Its state says what
it is doing; a volume in a transitional state is always held by the task that drives it
(``task_id``), as a VM is, so nothing stays in one without a way out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from bollard.domain.models import MAX_DISK_MB, MAX_DISKS, disk_device

POOL_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
VOLUME_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
SNAPSHOT_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$"
DEFAULT_POOL = "local"
# The error code of a storage command sent to an agent whose driver has no pools.
UNSUPPORTED = "unsupported"
VOLUME_FORMATS = ("qcow2", "raw")
MAX_VOLUME_MB = MAX_DISK_MB
MAX_SNAPSHOTS = 64  # per volume
DEVICES = tuple(disk_device(i) for i in range(MAX_DISKS))  # vda .. vdp
_POOL_NAME = re.compile(POOL_NAME)
_VOLUME_NAME = re.compile(VOLUME_NAME)


class PoolType(StrEnum):
    LOCAL = "local"
    SHARED = "shared"


class VolumeState(StrEnum):
    CREATING = "creating"
    READY = "ready"  # in its pool, attached to nothing
    ATTACHED = "attached"  # a disk of a VM (running or not)
    ATTACHING = "attaching"
    DETACHING = "detaching"
    RESIZING = "resizing"
    COPYING = "copying"  # the source of a copy (read while it runs)
    MIGRATING = "migrating"  # moving to another pool or host
    SNAPSHOTTING = "snapshotting"  # a snapshot is being taken, deleted or made a volume
    REVERTING = "reverting"  # its content is being put back to a snapshot's
    DELETING = "deleting"
    ERROR = "error"
    # The original of a resized VM's disk, kept on the source (with the VM's old definition)
    # until the resize is confirmed (then deleted) or reverted (attached again). Touched by
    # nothing else; `migration_id` names the resize.
    RESERVED = "reserved"

    @property
    def transitional(self) -> bool:
        return self not in _AT_REST

    @property
    def at_rest(self) -> bool:
        return self in _AT_REST


_AT_REST = frozenset(
    {VolumeState.READY, VolumeState.ATTACHED, VolumeState.ERROR, VolumeState.RESERVED}
)
_BUSY = frozenset(
    {
        VolumeState.RESIZING,
        VolumeState.COPYING,
        VolumeState.MIGRATING,
        VolumeState.SNAPSHOTTING,
        VolumeState.REVERTING,
    }
)
# Where a busy state ends: back at rest (ready or attached, as the volume's attachment says)
# or in error.
_BACK = frozenset({VolumeState.READY, VolumeState.ATTACHED, VolumeState.ERROR})

VOLUME_TRANSITIONS: dict[VolumeState, frozenset[VolumeState]] = {
    VolumeState.CREATING: frozenset({VolumeState.READY, VolumeState.ATTACHED, VolumeState.ERROR}),
    # -> error: the state reconciler found its file gone from its pool.
    VolumeState.READY: frozenset(
        {VolumeState.ATTACHING, VolumeState.ATTACHED, VolumeState.DELETING, VolumeState.ERROR}
        | _BUSY
    ),
    # attached -> ready: its VM was deleted without it, or reconciled.
    # attached -> reserved: a resize finished (the original of a disk it copied).
    VolumeState.ATTACHED: frozenset(
        {
            VolumeState.DETACHING,
            VolumeState.DELETING,
            VolumeState.READY,
            VolumeState.ERROR,
            VolumeState.RESERVED,
        }
        | _BUSY
    ),
    # Attached again by a revert, or deleted by a confirm (or an error the reconciler found).
    VolumeState.RESERVED: frozenset(
        {VolumeState.ATTACHED, VolumeState.DELETING, VolumeState.ERROR}
    ),
    VolumeState.ATTACHING: frozenset({VolumeState.ATTACHED, VolumeState.READY, VolumeState.ERROR}),
    VolumeState.DETACHING: frozenset({VolumeState.READY, VolumeState.ATTACHED, VolumeState.ERROR}),
    **{busy: _BACK for busy in _BUSY},
    # The original of a resized VM's disk, once copied, is kept (reserved) for a revert.
    VolumeState.COPYING: _BACK | {VolumeState.RESERVED},
    VolumeState.DELETING: frozenset({VolumeState.ERROR, VolumeState.READY, VolumeState.ATTACHED}),
    # An operator's fix (reconcile) or a delete.
    VolumeState.ERROR: frozenset({VolumeState.READY, VolumeState.ATTACHED, VolumeState.DELETING}),
}


def volume_allowed(src: VolumeState, dst: VolumeState) -> bool:
    return dst in VOLUME_TRANSITIONS[src]


def check_pool_name(name: str) -> str:
    if not _POOL_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a pool name (1-63 of a-z, 0-9, '-', '_', starting with a letter "
            "or digit)"
        )
    return name


def check_volume_name(name: str) -> str:
    if not _VOLUME_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a volume name (1-63 of A-Z, a-z, 0-9, '.', '-', '_', starting "
            "with a letter or digit)"
        )
    return name


def volume_file(volume_id: str, fmt: str) -> str:
    """The file a new volume gets in its pool."""
    return f"vol-{volume_id}.{fmt}"


def vm_disk_file(vm_uuid: str, device: str) -> str:
    """The file of a disk made with its VM (the name the libvirt driver gave VM disks before
    pools existed, kept so those disks stay where they are)."""
    return f"{vm_uuid}-{device}.qcow2"


@dataclass(frozen=True)
class Pool:
    name: str
    type: PoolType
    path: str | None  # None (local pools): each host's default storage directory
    nodes: tuple[str, ...] | None  # None: every node
    description: str | None
    created_at: datetime

    def sees(self, node: str) -> bool:
        """Whether `node` is a host of this pool."""
        return self.nodes is None or node in self.nodes

    def ref(self) -> dict[str, str]:
        """The pool as commands carry it (drivers/storage.py PoolRef)."""
        return {"name": self.name, "type": self.type.value, "path": self.path or ""}


@dataclass(frozen=True)
class PoolHost:
    """A pool as one host last reported it."""

    pool: str
    node: str
    capacity_mb: int | None
    free_mb: int | None
    error: str | None
    reported_at: datetime


@dataclass(frozen=True)
class Volume:
    id: str
    name: str
    pool: str
    node: str | None  # the host that has it (local pools); None in a shared pool
    file: str
    format: str
    size_mb: int
    state: VolumeState
    vm_uuid: str | None
    device: str | None
    task_id: str | None
    delete_with_vm: bool
    fault: str | None
    created_at: datetime
    updated_at: datetime
    vm_name: str | None = None  # joined from the VM when listed
    pool_type: PoolType | None = None  # joined from the pool when listed
    snapshots: int = 0  # how many (when listed)
    lock_node: str | None = None  # the host holding its lock (shared pools), if any
    lock_epoch: int | None = None
    migration_id: str | None = None  # the resize it is a copy or a kept original of

    @property
    def rest_state(self) -> VolumeState:
        """Where a busy state ends when all went well: attached if it has a VM."""
        return VolumeState.ATTACHED if self.vm_uuid is not None else VolumeState.READY


@dataclass(frozen=True)
class Snapshot:
    volume_id: str
    name: str
    size_mb: int
    created_at: datetime
