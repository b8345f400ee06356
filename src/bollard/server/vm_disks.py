"""A VM's disks are volumes attached to it: the volumes made with a new VM, and its disks as a
DEFINE command carries them (each a volume of a pool, made by the host when it is new)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from bollard.domain.errors import Conflict, InvalidInput
from bollard.domain.ids import new_uuid
from bollard.domain.models import Disk, disk_device
from bollard.domain.states import NodeHealth
from bollard.domain.storage import DEFAULT_POOL, PoolType, Volume, VolumeState, vm_disk_file
from bollard.store import nodes, pools, volumes


def check_disk_pools(conn: Connection, disks: Sequence[Disk]) -> set[str]:
    """The pools the disks ask for, each checked to exist (InvalidInput naming the others)."""
    wanted = {d.pool or DEFAULT_POOL for d in disks}
    known = pools.by_name(conn, wanted)
    unknown = sorted(wanted - known.keys())
    if unknown:
        raise InvalidInput(
            f"disks: no pool named {', '.join(unknown)} (`bollard pool list` shows the pools)"
        )
    return wanted


def create_vm_volumes(
    conn: Connection,
    *,
    vm_uuid: str,
    vm_name: str,
    node: str,
    disks: Sequence[Disk],
    task_id: str,
    now: datetime,
) -> list[Volume]:
    """The volumes of a new VM's disks, `creating`, attached at vda, vdb, ..., held by its
    create task and deleted with the VM. Named `<vm>-<device>` (with a suffix if taken)."""
    by_name = pools.by_name(conn, {d.pool or DEFAULT_POOL for d in disks})
    out = []
    for index, disk in enumerate(disks):
        pool = by_name[disk.pool or DEFAULT_POOL]
        device = disk_device(index)
        out.append(
            volumes.create(
                conn,
                id=new_uuid(),
                name=_free_name(conn, f"{vm_name[:58]}-{device}"),
                pool=pool.name,
                node=node if pool.type is PoolType.LOCAL else None,
                file=vm_disk_file(vm_uuid, device),
                format="qcow2",
                size_mb=disk.size_mb,
                now=now,
                state=VolumeState.CREATING,
                task_id=task_id,
                vm_uuid=vm_uuid,
                device=device,
                delete_with_vm=True,
            )
        )
    return out


def _free_name(conn: Connection, name: str) -> str:
    candidate, n = name, 1
    while volumes.name_taken(conn, candidate):
        n += 1
        candidate = f"{name[:58]}-{n}"
    return candidate


def define_args(
    conn: Connection, vm_uuid: str, *, remake_local: bool = False
) -> list[dict[str, Any]]:
    """The VM's disks as a DEFINE carries them, in device order. A volume still `creating` is
    made by the host; with `remake_local` (an HA restart on another host), so are its volumes
    in local pools: their data died with the fenced host. Volumes of shared pools must be
    there."""
    attached = volumes.of_vm(conn, vm_uuid)
    by_name = pools.by_name(conn, {v.pool for v in attached})
    out = []
    for v in attached:
        pool = by_name[v.pool]
        local = pool.type is PoolType.LOCAL
        out.append(
            {
                "size_mb": v.size_mb,
                "device": v.device,
                "pool": pool.ref(),
                "file": v.file,
                "format": v.format,
                "create": v.state is VolumeState.CREATING or (remake_local and local),
            }
        )
    return out


def attach_states(conn: Connection, vm_uuid: str, task_id: str, now: datetime) -> None:
    """The create task's volumes are made: `creating` -> `attached`, released."""
    for v in volumes.of_vm(conn, vm_uuid):
        if v.task_id == task_id:
            volumes.release(conn, v.id, task_id, now, VolumeState.ATTACHED)


def lock_args(
    conn: Connection, vm_uuid: str, holder: str, epoch: int, *, breakable: Sequence[str] = ()
) -> dict[str, Any] | None:
    """What a start or stop of the VM on `holder` carries about the locks of its volumes in
    shared pools (agent/volume_locks.py), or None when it has none. The locks of fenced hosts
    may be broken (they are off: their fence is confirmed), and those of `breakable` (the
    source of a completed live migration)."""
    attached = volumes.of_vm(conn, vm_uuid)
    by_name = pools.by_name(conn, {v.pool for v in attached})
    shared = [v for v in attached if by_name[v.pool].type is PoolType.SHARED]
    if not shared:
        return None
    fenced = nodes.names_with_health(conn, NodeHealth.FENCED)
    return {
        "holder": holder,
        "epoch": epoch,
        "volumes": [by_name[v.pool].ref() for v in shared],
        "files": [v.file for v in shared],
        "breakable": sorted(set(fenced) | set(breakable)),
    }


def check_idle(conn: Connection, vm_uuid: str, vm_name: str) -> None:
    """Conflict when a task holds one of the VM's disks (a volume being grown, moved,
    snapshotted...): the VM is not started, stopped, migrated or deleted under it."""
    for v in volumes.of_vm(conn, vm_uuid):
        if v.task_id is not None:
            raise Conflict(
                f"VM {vm_name}: its disk {v.device} (volume {v.name}) is busy with task "
                f"{v.task_id} ({v.state}); try again once it ends"
            )


def volume_lock_args(
    conn: Connection, volume_id: str, holder: str, epoch: int
) -> dict[str, Any] | None:
    """The lock of one volume of a shared pool, as an attach (taken if its VM runs) or a
    detach (given back) carries it; None for a volume of a local pool."""
    v = volumes.get_by_id(conn, volume_id)
    pool = pools.get(conn, v.pool)
    if pool.type is not PoolType.SHARED:
        return None
    fenced = nodes.names_with_health(conn, NodeHealth.FENCED)
    return {
        "holder": holder,
        "epoch": epoch,
        "volumes": [pool.ref()],
        "files": [v.file],
        "breakable": sorted(fenced),
    }
