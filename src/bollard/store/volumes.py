"""Queries on volumes and their snapshots. A volume's state changes only through
transition(), checked against the whitelisted table (domain/storage.py) and made as a
compare-and-swap on the state read and the task that holds it, as VMs' are."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, delete, func, insert, select, update

from bollard.domain.errors import AlreadyExists, Conflict, NotFound
from bollard.domain.models import Page
from bollard.domain.states import PowerState
from bollard.domain.storage import DEVICES, PoolType, Snapshot, Volume, VolumeState, volume_allowed
from bollard.store import pagination
from bollard.store.any_of import PerDialect, any_of
from bollard.store.db import utc
from bollard.store.tables import pools, vms, volume_snapshots, volumes

log = logging.getLogger(__name__)

_OPEN = (PowerState.RUNNING.value, PowerState.PAUSED.value)

_JOINED = (
    select(
        volumes,
        vms.c.name.label("vm_name"),
        vms.c.node.label("vm_node"),
        vms.c.epoch.label("vm_epoch"),
        vms.c.observed_power.label("vm_power"),
        pools.c.type.label("pool_type"),
    )
    .outerjoin(vms, vms.c.uuid == volumes.c.vm_uuid)
    .outerjoin(pools, pools.c.name == volumes.c.pool)
)


def _volume(row: Row[Any]) -> Volume:
    m = row._mapping
    # The lock of a volume of a shared pool is held by the host its VM runs on (the agents
    # keep the lock files; agent/volume_locks.py).
    locked = m.get("pool_type") == PoolType.SHARED.value and m.get("vm_power") in _OPEN
    return Volume(
        id=m["id"],
        name=m["name"],
        pool=m["pool"],
        node=m["node"],
        file=m["file"],
        format=m["format"],
        size_mb=int(m["size_mb"]),
        state=VolumeState(m["state"]),
        vm_uuid=m["vm_uuid"],
        device=m["device"],
        task_id=m["task_id"],
        delete_with_vm=bool(m["delete_with_vm"]),
        fault=m["fault"],
        created_at=utc(m["created_at"]) or m["created_at"],
        updated_at=utc(m["updated_at"]) or m["updated_at"],
        vm_name=m.get("vm_name"),
        pool_type=PoolType(m["pool_type"]) if m.get("pool_type") else None,
        lock_node=m.get("vm_node") if locked else None,
        lock_epoch=m.get("vm_epoch") if locked else None,
        migration_id=m.get("migration_id"),
    )


def create(
    conn: Connection,
    *,
    id: str,
    name: str,
    pool: str,
    node: str | None,
    file: str,
    format: str,
    size_mb: int,
    now: datetime,
    state: VolumeState = VolumeState.CREATING,
    task_id: str | None = None,
    vm_uuid: str | None = None,
    device: str | None = None,
    delete_with_vm: bool = False,
    migration_id: str | None = None,
) -> Volume:
    if name_taken(conn, name):
        raise AlreadyExists(f"a volume named {name!r} exists")
    conn.execute(
        insert(volumes).values(
            id=id, name=name, pool=pool, node=node, file=file, format=format,
            size_mb=size_mb, state=state.value, vm_uuid=vm_uuid, device=device,
            task_id=task_id, delete_with_vm=delete_with_vm, fault=None,
            migration_id=migration_id, created_at=now, updated_at=now,
        )
    )  # fmt: skip
    return get_by_id(conn, id)


def name_taken(conn: Connection, name: str) -> bool:
    return conn.execute(select(volumes.c.id).where(volumes.c.name == name)).first() is not None


def find(conn: Connection, name: str) -> Volume | None:
    row = conn.execute(_JOINED.where(volumes.c.name == name)).first()
    return _with_snapshots(conn, _volume(row)) if row is not None else None


def get(conn: Connection, name: str) -> Volume:
    volume = find(conn, name)
    if volume is None:
        raise NotFound(f"no volume named {name!r} (`bollard volume list` shows the volumes)")
    return volume


def find_by_id(conn: Connection, id: str) -> Volume | None:
    row = conn.execute(_JOINED.where(volumes.c.id == id)).first()
    return _with_snapshots(conn, _volume(row)) if row is not None else None


def get_by_id(conn: Connection, id: str) -> Volume:
    volume = find_by_id(conn, id)
    if volume is None:
        raise NotFound(f"no volume with id {id!r}")
    return volume


def _with_snapshots(conn: Connection, volume: Volume) -> Volume:
    return replace(volume, snapshots=snapshot_count(conn, volume.id))


def list_page(
    conn: Connection,
    *,
    limit: int,
    cursor: str | None,
    pool: str | None = None,
    node: str | None = None,
    vm_uuid: str | None = None,
    state: VolumeState | None = None,
) -> Page:
    where: list[ColumnElement[bool]] = []
    if pool is not None:
        where.append(volumes.c.pool == pool)
    if node is not None:
        where.append(volumes.c.node == node)
    if vm_uuid is not None:
        where.append(volumes.c.vm_uuid == vm_uuid)
    if state is not None:
        where.append(volumes.c.state == state.value)
    condition = None
    for clause in where:
        condition = clause if condition is None else condition & clause
    page = pagination.page(
        conn, volumes, volumes.c.name, lambda r: r, limit=limit, cursor=cursor, where=condition
    )
    ids = [row._mapping["id"] for row in page.items]
    joined = {v.id: v for v in of_ids(conn, ids)}
    counts = snapshot_counts(conn, ids)
    items = [_replace_count(joined[i], counts.get(i, 0)) for i in ids if i in joined]
    return Page(items=items, next_cursor=page.next_cursor, total=page.total)


def _replace_count(volume: Volume, count: int) -> Volume:
    return replace(volume, snapshots=count)


def of_ids(conn: Connection, ids: list[str]) -> list[Volume]:
    if not ids:
        return []
    return [_volume(r) for r in conn.execute(_JOINED.where(volumes.c.id.in_(ids)))]


def all_volumes(conn: Connection) -> list[Volume]:
    return [_volume(r) for r in conn.execute(_JOINED.order_by(volumes.c.name))]


def of_vm(conn: Connection, vm_uuid: str) -> list[Volume]:
    """The VM's disks, in device order."""
    rows = conn.execute(_JOINED.where(volumes.c.vm_uuid == vm_uuid).order_by(volumes.c.device))
    return [_volume(r) for r in rows]


# One statement whatever the number of VMs (store/any_of.py): every page of VMs reads this.
_OF_VMS = PerDialect(
    lambda dialect: _JOINED.where(any_of(volumes.c.vm_uuid, "vm_uuids", dialect)).order_by(
        volumes.c.device
    )
)


def of_vms(conn: Connection, vm_uuids: list[str]) -> dict[str, list[Volume]]:
    """The disks of each of these VMs, in device order."""
    out: dict[str, list[Volume]] = {u: [] for u in vm_uuids}
    if not vm_uuids:
        return out
    for row in conn.execute(_OF_VMS.of(conn), {"vm_uuids": list(out)}):
        volume = _volume(row)
        assert volume.vm_uuid is not None
        out[volume.vm_uuid].append(volume)
    return out


def in_pool(conn: Connection, pool: str, limit: int | None = None) -> list[Volume]:
    query = _JOINED.where(volumes.c.pool == pool).order_by(volumes.c.name)
    if limit is not None:
        query = query.limit(limit)
    return [_volume(r) for r in conn.execute(query)]


def free_device(conn: Connection, vm_uuid: str) -> str | None:
    """The first device the VM has no disk at (None: all 16 taken)."""
    taken = {
        d for (d,) in conn.execute(select(volumes.c.device).where(volumes.c.vm_uuid == vm_uuid))
    }
    return next((d for d in DEVICES if d not in taken), None)


def transition(
    conn: Connection,
    id: str,
    now: datetime,
    *,
    held_by: str | None,
    state: VolumeState,
    task_id: str | None = None,
    release: bool = False,
    unchanged: Mapping[str, Any] | None = None,
    **values: Any,
) -> bool:
    """Move a volume to `state` if the table allows it from its current state.

    `held_by` is the task that must hold it now (None: no task may); `task_id` the task that
    takes it (only when none holds it); `release` lets the holder go. `unchanged` maps other
    columns to the values they must still have; `values` are written with the move. False
    (and a log line) when the move is refused or the volume is not as expected."""
    row = conn.execute(select(volumes.c.state, volumes.c.task_id).where(volumes.c.id == id)).first()
    if row is None or row.task_id != held_by:
        return False
    src = VolumeState(row.state)
    if src is not state and not volume_allowed(src, state):
        log.warning("volume %s: refused transition %s -> %s", id, src, state)
        return False
    guards = [volumes.c.id == id, volumes.c.state == src.value]
    guards.append(volumes.c.task_id.is_(None) if held_by is None else volumes.c.task_id == held_by)
    guards += [volumes.c[column] == value for column, value in (unchanged or {}).items()]
    holder = held_by if task_id is None else task_id
    if release:
        holder = None
    written = {**values, "state": state.value, "task_id": holder, "updated_at": now}
    return conn.execute(update(volumes).where(*guards).values(**written)).rowcount == 1


def take(conn: Connection, volume: Volume, state: VolumeState, task_id: str, now: datetime) -> None:
    """Take the volume for a task that moves it to `state` (Conflict if busy or not allowed)."""
    if volume.task_id is not None:
        raise Conflict(
            f"volume {volume.name!r} is busy with task {volume.task_id} ({volume.state})"
        )
    if volume.state is VolumeState.RESERVED:
        raise Conflict(
            f"volume {volume.name!r} is kept by resize {volume.migration_id} until it is "
            "confirmed (then deleted) or reverted (then attached again)"
        )
    if not volume_allowed(volume.state, state):
        raise Conflict(f"volume {volume.name!r} is {volume.state}: it cannot be {state} now")
    if not transition(conn, volume.id, now, held_by=None, state=state, task_id=task_id,
                      unchanged={"state": volume.state.value}):  # fmt: skip
        raise Conflict(f"volume {volume.name!r} changed under this request; try again")


def release(
    conn: Connection, id: str, task_id: str, now: datetime, state: VolumeState, **values: Any
) -> bool:
    """End the task's hold on the volume, leaving it in `state`."""
    return transition(conn, id, now, held_by=task_id, state=state, release=True, **values)


def set_fields(conn: Connection, id: str, now: datetime, **values: Any) -> None:
    """Change columns other than the state (node, size, attachment...)."""
    if "state" in values or "task_id" in values:
        raise ValueError("states change only through transition()")
    conn.execute(update(volumes).where(volumes.c.id == id).values(**values, updated_at=now))


def remove(conn: Connection, id: str) -> None:
    conn.execute(delete(volumes).where(volumes.c.id == id))


def of_migration(conn: Connection, migration_id: str) -> list[Volume]:
    """The volumes of a resize: the copies it made and the originals it keeps."""
    rows = conn.execute(
        _JOINED.where(volumes.c.migration_id == migration_id).order_by(volumes.c.name)
    )
    return [_volume(r) for r in rows]


def follow_vm(conn: Connection, vm_uuid: str, node: str, now: datetime) -> int:
    """The VM now runs on `node`: its volumes in local pools are there too (a migration
    carried them, or an HA restart made them anew). How many moved."""
    local = select(pools.c.name).where(pools.c.type == PoolType.LOCAL.value)
    result = conn.execute(
        update(volumes)
        .where(volumes.c.vm_uuid == vm_uuid, volumes.c.pool.in_(local))
        .values(node=node, updated_at=now)
    )
    return int(result.rowcount or 0)


# snapshots


def add_snapshot(conn: Connection, volume_id: str, name: str, size_mb: int, now: datetime) -> None:
    if find_snapshot(conn, volume_id, name) is not None:
        raise AlreadyExists(f"the volume has a snapshot named {name!r}")
    conn.execute(
        insert(volume_snapshots).values(
            volume_id=volume_id, name=name, size_mb=size_mb, created_at=now
        )
    )


def find_snapshot(conn: Connection, volume_id: str, name: str) -> Snapshot | None:
    row = conn.execute(
        select(volume_snapshots).where(
            volume_snapshots.c.volume_id == volume_id, volume_snapshots.c.name == name
        )
    ).first()
    return _snapshot(row) if row is not None else None


def _snapshot(row: Row[Any]) -> Snapshot:
    m = row._mapping
    return Snapshot(
        volume_id=m["volume_id"],
        name=m["name"],
        size_mb=int(m["size_mb"]),
        created_at=utc(m["created_at"]) or m["created_at"],
    )


def snapshots_of(conn: Connection, volume_id: str) -> list[Snapshot]:
    rows = conn.execute(
        select(volume_snapshots)
        .where(volume_snapshots.c.volume_id == volume_id)
        .order_by(volume_snapshots.c.created_at, volume_snapshots.c.name)
    )
    return [_snapshot(r) for r in rows]


def remove_snapshot(conn: Connection, volume_id: str, name: str) -> None:
    conn.execute(
        delete(volume_snapshots).where(
            volume_snapshots.c.volume_id == volume_id, volume_snapshots.c.name == name
        )
    )


def snapshot_count(conn: Connection, volume_id: str) -> int:
    query = select(func.count()).where(volume_snapshots.c.volume_id == volume_id)
    return int(conn.execute(query).scalar_one())


def snapshot_counts(conn: Connection, ids: list[str]) -> dict[str, int]:
    if not ids:
        return {}
    query = (
        select(volume_snapshots.c.volume_id, func.count())
        .where(volume_snapshots.c.volume_id.in_(ids))
        .group_by(volume_snapshots.c.volume_id)
    )
    return {vid: int(n) for vid, n in conn.execute(query)}
