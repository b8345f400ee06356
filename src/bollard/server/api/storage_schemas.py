"""The shapes of /api/v1/pools and /api/v1/volumes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from bollard.domain.storage import (
    MAX_VOLUME_MB,
    POOL_NAME,
    SNAPSHOT_NAME,
    VOLUME_NAME,
    Pool,
    PoolHost,
    Snapshot,
    Volume,
)
from bollard.server.api.schemas import Name, TaskOut

PoolName = Annotated[str, StringConstraints(pattern=POOL_NAME)]
VolumeName = Annotated[str, StringConstraints(pattern=VOLUME_NAME)]
SnapshotName = Annotated[str, StringConstraints(pattern=SNAPSHOT_NAME)]
NodeName = Name
SizeMb = Annotated[int, Field(ge=1, le=MAX_VOLUME_MB, description="MiB (at most 64 TiB).")]

POOL_TYPES = (
    "`local`: each host of the pool has its own directory at `path` (a volume lives on one "
    "host and moves between hosts by copying); `shared`: every host of the pool mounts the "
    "same directory at `path` (NFS or another shared file system): a volume is reachable from "
    "each, so VMs using it migrate without copying and restart elsewhere with their data."
)


class PoolCreate(BaseModel):
    name: PoolName
    type: Literal["local", "shared"] = Field(description=POOL_TYPES)
    path: str | None = Field(
        default=None,
        max_length=1024,
        description="Absolute directory. A local pool without one uses each host's default "
        "storage directory; a shared pool needs one.",
    )
    nodes: list[NodeName] | None = Field(
        default=None, max_length=10_000, description="The nodes that see it (null: every node)."
    )
    description: str | None = Field(default=None, max_length=200)


class PoolUpdate(BaseModel):
    nodes: list[NodeName] | None = Field(
        default=None, max_length=10_000, description="The nodes that see it (null: every node)."
    )
    description: str | None = Field(default=None, max_length=200)


class PoolHostOut(BaseModel):
    node: str
    capacity_mb: int | None
    free_mb: int | None
    reported_at: datetime
    error: str | None

    @classmethod
    def of(cls, h: PoolHost) -> PoolHostOut:
        return cls(
            node=h.node, capacity_mb=h.capacity_mb, free_mb=h.free_mb,
            reported_at=h.reported_at, error=h.error,
        )  # fmt: skip


class PoolOut(BaseModel):
    name: str
    type: str
    path: str | None = Field(description="null: each host's default storage directory.")
    nodes: list[str] | None = Field(description="null: every node.")
    description: str | None
    created_at: datetime
    volumes: int
    provisioned_mb: int = Field(description="The sum of its volumes' sizes.")
    capacity_mb: int | None = Field(
        description="Shared: as last reported; local: summed over its hosts (null: no report)."
    )
    free_mb: int | None
    hosts: list[PoolHostOut]

    @classmethod
    def of(cls, p: Pool, usage: tuple[int, int], hosts: list[PoolHost]) -> PoolOut:
        ok = [h for h in hosts if h.capacity_mb is not None and h.free_mb is not None]
        capacity = free = None
        if ok and p.type.value == "shared":
            latest = max(ok, key=lambda h: h.reported_at)
            capacity, free = latest.capacity_mb, latest.free_mb
        elif ok:
            capacity = sum(h.capacity_mb or 0 for h in ok)
            free = sum(h.free_mb or 0 for h in ok)
        return cls(
            name=p.name, type=p.type.value, path=p.path,
            nodes=list(p.nodes) if p.nodes is not None else None, description=p.description,
            created_at=p.created_at, volumes=usage[0], provisioned_mb=usage[1],
            capacity_mb=capacity, free_mb=free, hosts=[PoolHostOut.of(h) for h in hosts],
        )  # fmt: skip


class PoolPage(BaseModel):
    items: list[PoolOut]
    next_cursor: str | None = None
    total: int


class LockOut(BaseModel):
    node: str
    epoch: int | None


class VolumeOut(BaseModel):
    id: str
    name: str
    pool: str
    pool_type: str | None
    node: str | None = Field(description="The host that has it (local pools).")
    file: str
    format: str
    size_mb: int
    state: str
    vm: str | None
    vm_uuid: str | None
    device: str | None
    task_id: str | None
    delete_with_vm: bool = Field(description="Made with its VM: deleted with it.")
    fault: str | None
    snapshots: int
    lock: LockOut | None = None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, v: Volume) -> VolumeOut:
        lock = LockOut(node=v.lock_node, epoch=v.lock_epoch) if v.lock_node else None
        return cls(
            id=v.id, name=v.name, pool=v.pool,
            pool_type=v.pool_type.value if v.pool_type else None, node=v.node, file=v.file,
            format=v.format, size_mb=v.size_mb, state=v.state.value, vm=v.vm_name,
            vm_uuid=v.vm_uuid, device=v.device, task_id=v.task_id,
            delete_with_vm=v.delete_with_vm, fault=v.fault, snapshots=v.snapshots, lock=lock,
            created_at=v.created_at, updated_at=v.updated_at,
        )  # fmt: skip


class VolumePage(BaseModel):
    items: list[VolumeOut]
    next_cursor: str | None
    total: int


class SnapshotRef(BaseModel):
    volume: VolumeName
    snapshot: SnapshotName


class VolumeCreate(BaseModel):
    name: VolumeName
    size_mb: SizeMb | None = Field(
        default=None, description="Required unless made from a snapshot (default: its size)."
    )
    pool: PoolName = "local"
    node: NodeName | None = Field(
        default=None,
        description="Local pools: the host (default: the connected host of the pool with the "
        "most free room). Shared pools: none.",
    )
    format: Literal["qcow2", "raw"] = "qcow2"
    from_snapshot: SnapshotRef | None = Field(
        default=None, description="Make it from this snapshot of another volume (a copy)."
    )


class VolumeGrow(BaseModel):
    size_mb: SizeMb


class VolumeAttach(BaseModel):
    vm: Name
    device: Annotated[str, StringConstraints(pattern=r"^vd[a-p]$")] | None = Field(
        default=None, description="vdb, vdc, ... (default: the VM's first free device)."
    )


class VolumeCopy(BaseModel):
    name: VolumeName = Field(description="The new volume's name.")
    pool: PoolName
    node: NodeName | None = None


class VolumeMigrate(BaseModel):
    pool: PoolName
    node: NodeName | None = None


class SnapshotCreate(BaseModel):
    name: SnapshotName


class SnapshotOut(BaseModel):
    name: str
    size_mb: int
    created_at: datetime

    @classmethod
    def of(cls, s: Snapshot) -> SnapshotOut:
        return cls(name=s.name, size_mb=s.size_mb, created_at=s.created_at)


class SnapshotPage(BaseModel):
    items: list[SnapshotOut]


class VolumeTask(BaseModel):
    volume: VolumeOut
    task: TaskOut
