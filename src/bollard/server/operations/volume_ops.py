"""Requests for volume operations: check them, take the volume for a task and create the
task in the same transaction (a volume has at most one task; a conflicting request gets 409
naming it); the engine then runs it (tasks/flows/volumes.py, volume_copies.py).

Every refusal happens here, before anything changes: sizes out of range, unknown pools or
nodes, attaching an attached volume, deleting an attached one, a volume in a local pool and a
VM on different hosts, a pool the VM's node does not see, data copied out of a disk a running
guest writes to.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from bollard.domain.errors import Conflict, InsufficientCapacity, InvalidInput, NodeUnavailable
from bollard.domain.ids import new_id, new_uuid
from bollard.domain.models import Task, Vm
from bollard.domain.states import NodeHealth, PowerState, VmState
from bollard.domain.storage import (
    DEVICES,
    MAX_SNAPSHOTS,
    MAX_VOLUME_MB,
    SNAPSHOT_NAME,
    VOLUME_FORMATS,
    Pool,
    PoolType,
    Volume,
    VolumeState,
    check_volume_name,
    volume_file,
)
from bollard.server.clock import Clock
from bollard.server.ports import TaskLauncher, UnitOfWork
from bollard.server.tasks.flows.volume_live import live_file
from bollard.server.tasks.params import (
    SnapshotParams,
    TaskParams,
    VolumeAttachParams,
    VolumeCopyParams,
    VolumeCreateParams,
    VolumeGrowParams,
    VolumeParams,
)
from bollard.store import nodes, pools, vms, volumes

log = logging.getLogger(__name__)

_SNAPSHOT_NAME = re.compile(SNAPSHOT_NAME)
_Tx = Callable[[Connection], tuple["Volume", Task]]


@dataclass(frozen=True)
class Placed:
    pool: Pool
    node: str | None  # the host of a volume in a local pool


def _check_size(size_mb: int) -> None:
    if not 1 <= size_mb <= MAX_VOLUME_MB:
        raise InvalidInput(f"size_mb: must be between 1 and {MAX_VOLUME_MB} (64 TiB)")


def _running(vm: Vm) -> bool:
    return vm.observed_power is PowerState.RUNNING or vm.vm_state is VmState.ACTIVE


def _vm_of(conn: Connection, v: Volume) -> Vm | None:
    return vms.find_by_uuid(conn, v.vm_uuid) if v.vm_uuid is not None else None


def _idle_vm(vm: Vm | None, v: Volume) -> None:
    if vm is not None and vm.task_id is not None:
        raise Conflict(
            f"volume {v.name}: its VM {vm.name} is busy with task {vm.task_id} ({vm.task_state})"
        )


def place(
    conn: Connection, pool_name: str, node: str | None, size_mb: int, *, near: str | None = None
) -> Placed:
    """Where a new volume of `pool_name` goes: in a local pool on `node` (or, none given, on
    `near` if it sees the pool, else its connected host with the most free room); a shared pool
    has no node. Refused when the pool or node is unknown, the node does not see the pool, or
    the room its host last reported is too small."""
    pool = pools.get(conn, pool_name)
    if pool.type is PoolType.SHARED:
        if node is not None:
            raise InvalidInput(f"node: a volume of shared pool {pool.name} is on every host of it")
        _check_room(conn, pool, None, size_mb)
        return Placed(pool, None)
    if node is not None:
        found = nodes.find_many(conn, {node})
        if not found:
            raise InvalidInput(f"node: no node named {node!r} (`bollard node list` shows them)")
        if not pool.sees(node):
            raise InvalidInput(f"node: {node} is not a host of pool {pool.name}")
        _check_room(conn, pool, node, size_mb)
        return Placed(pool, node)
    if near is not None and pool.sees(near):
        _check_room(conn, pool, near, size_mb)
        return Placed(pool, near)
    free = {h.node: h.free_mb for h in pools.hosts(conn, pool.name)}
    candidates = [
        n for n in nodes.list_all(conn)
        if pool.sees(n.name) and n.connected and n.health is NodeHealth.UP
    ]  # fmt: skip
    if not candidates:
        raise NodeUnavailable(f"no host of pool {pool.name} is connected and up")
    best = max(candidates, key=lambda n: (free.get(n.name) or 0, n.name))
    _check_room(conn, pool, best.name, size_mb)
    return Placed(pool, best.name)


def _check_room(conn: Connection, pool: Pool, node: str | None, size_mb: int) -> None:
    reports = [h for h in pools.hosts(conn, pool.name) if node is None or h.node == node]
    known = [h.free_mb for h in reports if h.free_mb is not None]
    if known and size_mb > max(known):
        where = f" on {node}" if node else ""
        raise InsufficientCapacity(
            f"pool {pool.name}{where} has {max(known)} MiB free; {size_mb} MiB asked"
        )


class VolumeOperations:
    def __init__(self, *, work: UnitOfWork, clock: Clock, launcher: TaskLauncher) -> None:
        self._work = work
        self._clock = clock
        self._launcher = launcher

    async def _request(self, fn: _Tx) -> tuple[Volume, Task]:
        def tx() -> tuple[Volume, Task]:
            with self._work.write() as conn:
                return fn(conn)

        volume, task = await self._work.run(tx)
        self._launcher.launch(task.id)
        return volume, task

    def _task(
        self, conn: Connection, type: str, params: TaskParams, task_id: str, *,
        node: str | None, vm: Vm | None = None,
    ) -> Task:  # fmt: skip
        return self._launcher.create_in(
            conn, id=task_id, type=type, vm_uuid=vm.uuid if vm else None,
            vm_name=vm.name if vm else None, node=node, params=params,
        )  # fmt: skip

    # -- create, delete, grow ------------------------------------------------------------

    async def create(
        self,
        name: str,
        size_mb: int,
        pool: str,
        node: str | None = None,
        fmt: str = "qcow2",
        from_snapshot: tuple[str, str] | None = None,
    ) -> tuple[Volume, Task]:
        try:
            check_volume_name(name)
        except ValueError as exc:
            raise InvalidInput(f"name: {exc}") from None
        if fmt not in VOLUME_FORMATS:
            raise InvalidInput(f"format: must be one of {', '.join(VOLUME_FORMATS)}")

        def tx(conn: Connection) -> tuple[Volume, Task]:
            now = self._clock.now()
            if volumes.name_taken(conn, name):
                raise Conflict(f"a volume named {name!r} exists")
            source, snapshot, size = None, None, size_mb
            if from_snapshot is not None:
                source = volumes.get(conn, from_snapshot[0])
                found = volumes.find_snapshot(conn, source.id, from_snapshot[1])
                if found is None:
                    raise InvalidInput(
                        f"from_snapshot: volume {source.name} has no snapshot {from_snapshot[1]!r}"
                    )
                snapshot, size = found.name, max(size_mb, found.size_mb)
            _check_size(size)
            where = place(conn, pool, node, size, near=source.node if source else None)
            task_id, vid = new_id(), new_uuid()
            if source is not None:
                volumes.take(conn, source, VolumeState.SNAPSHOTTING, task_id, now)
            volume = volumes.create(
                conn, id=vid, name=name, pool=where.pool.name, node=where.node,
                file=volume_file(vid, fmt), format=fmt, size_mb=size, now=now,
                state=VolumeState.CREATING, task_id=task_id,
            )  # fmt: skip
            params = VolumeCreateParams(
                volume_id=vid, volume=name, source_id=source.id if source else None,
                snapshot=snapshot,
            )  # fmt: skip
            return volume, self._task(conn, "volume_create", params, task_id, node=where.node)

        return await self._request(tx)

    async def delete(self, name: str) -> tuple[Volume, Task]:
        def tx(conn: Connection) -> tuple[Volume, Task]:
            v = volumes.get(conn, name)
            if v.vm_uuid is not None:
                raise Conflict(
                    f"volume {name} is attached to VM {v.vm_name} as {v.device}: detach it "
                    "first (or delete the VM, for a disk made with it)"
                )
            task_id = new_id()
            volumes.take(conn, v, VolumeState.DELETING, task_id, self._clock.now())
            params = VolumeParams(volume_id=v.id, volume=v.name)
            task = self._task(conn, "volume_delete", params, task_id, node=v.node)
            return volumes.get_by_id(conn, v.id), task

        return await self._request(tx)

    async def grow(self, name: str, size_mb: int) -> tuple[Volume, Task]:
        def tx(conn: Connection) -> tuple[Volume, Task]:
            v = volumes.get(conn, name)
            _check_size(size_mb)
            if size_mb <= v.size_mb:
                raise InvalidInput(
                    f"size_mb: volume {name} has {v.size_mb} MiB; it can only grow (shrinking "
                    "would cut its data)"
                )
            vm = _vm_of(conn, v)
            _idle_vm(vm, v)
            if v.node is not None:
                _check_room(conn, pools.get(conn, v.pool), v.node, size_mb - v.size_mb)
            task_id = new_id()
            volumes.take(conn, v, VolumeState.RESIZING, task_id, self._clock.now())
            params = VolumeGrowParams(
                volume_id=v.id, volume=v.name, size_mb=size_mb, from_mb=v.size_mb
            )
            task = self._task(conn, "volume_grow", params, task_id, node=v.node, vm=vm)
            return volumes.get_by_id(conn, v.id), task

        return await self._request(tx)

    # -- attach, detach ------------------------------------------------------------------

    async def attach(self, name: str, vm_name: str, device: str | None) -> tuple[Volume, Task]:
        if device is not None and device not in DEVICES:
            raise InvalidInput(f"device: must be one of vda .. {DEVICES[-1]}")

        def tx(conn: Connection) -> tuple[Volume, Task]:
            v = volumes.get(conn, name)
            vm = vms.get(conn, vm_name)
            if v.vm_uuid is not None:
                raise Conflict(f"volume {name} is attached to VM {v.vm_name} as {v.device}")
            if vm.task_id is not None:
                raise Conflict(f"VM {vm.name} is busy with task {vm.task_id} ({vm.task_state})")
            if vm.node is None:
                raise Conflict(f"VM {vm.name} is on no node")
            pool = pools.get(conn, v.pool)
            if not pool.sees(vm.node):
                raise InvalidInput(
                    f"VM {vm.name} runs on {vm.node}, which is not a host of pool {pool.name}"
                )
            if pool.type is PoolType.LOCAL and v.node != vm.node:
                raise Conflict(
                    f"volume {name} is on {v.node} and VM {vm.name} on {vm.node}: migrate the "
                    f"volume to {vm.node} first (`bollard volume migrate {name} --pool "
                    f"{pool.name} --node {vm.node}`)"
                )
            chosen = device or volumes.free_device(conn, vm.uuid)
            if chosen is None:
                raise Conflict(f"VM {vm.name} has {len(DEVICES)} disks: no device is free")
            if any(d.device == chosen for d in volumes.of_vm(conn, vm.uuid)):
                raise Conflict(f"VM {vm.name} has a disk at {chosen} already")
            task_id, now = new_id(), self._clock.now()
            volumes.take(conn, v, VolumeState.ATTACHING, task_id, now)
            volumes.set_fields(conn, v.id, now, vm_uuid=vm.uuid, device=chosen)
            params = VolumeAttachParams(
                volume_id=v.id, volume=v.name, vm_uuid=vm.uuid, device=chosen
            )
            task = self._task(conn, "volume_attach", params, task_id, node=vm.node, vm=vm)
            return volumes.get_by_id(conn, v.id), task

        return await self._request(tx)

    async def detach(self, name: str) -> tuple[Volume, Task]:
        def tx(conn: Connection) -> tuple[Volume, Task]:
            v = volumes.get(conn, name)
            if v.vm_uuid is None:
                raise Conflict(f"volume {name} is not attached")
            if v.delete_with_vm:
                raise Conflict(
                    f"volume {name} was made with VM {v.vm_name} and is part of it: it goes "
                    "with the VM (copy it to keep its data)"
                )
            vm = _vm_of(conn, v)
            _idle_vm(vm, v)
            task_id = new_id()
            volumes.take(conn, v, VolumeState.DETACHING, task_id, self._clock.now())
            params = VolumeParams(volume_id=v.id, volume=v.name)
            node = vm.node if vm else v.node
            task = self._task(conn, "volume_detach", params, task_id, node=node, vm=vm)
            return volumes.get_by_id(conn, v.id), task

        return await self._request(tx)

    # -- copy, migrate -------------------------------------------------------------------

    async def copy(
        self, name: str, new_name: str, pool: str, node: str | None
    ) -> tuple[Volume, Task]:
        try:
            check_volume_name(new_name)
        except ValueError as exc:
            raise InvalidInput(f"name: {exc}") from None

        def tx(conn: Connection) -> tuple[Volume, Task]:
            source = volumes.get(conn, name)
            if volumes.name_taken(conn, new_name):
                raise Conflict(f"a volume named {new_name!r} exists")
            self._not_in_use(conn, source, "copy")
            where = place(conn, pool, node, source.size_mb, near=source.node)
            task_id, vid, now = new_id(), new_uuid(), self._clock.now()
            volumes.take(conn, source, VolumeState.COPYING, task_id, now)
            file = volume_file(vid, source.format)
            volumes.create(
                conn, id=vid, name=new_name, pool=where.pool.name, node=where.node, file=file,
                format=source.format, size_mb=source.size_mb, now=now,
                state=VolumeState.CREATING, task_id=task_id,
            )  # fmt: skip
            params = VolumeCopyParams(
                volume_id=source.id, volume=source.name, target_id=vid, pool=where.pool.name,
                node=where.node, file=file,
            )  # fmt: skip
            task = self._task(conn, "volume_copy", params, task_id, node=where.node)
            return volumes.get_by_id(conn, vid), task

        return await self._request(tx)

    async def migrate(self, name: str, pool: str, node: str | None) -> tuple[Volume, Task]:
        def tx(conn: Connection) -> tuple[Volume, Task]:
            v = volumes.get(conn, name)
            vm = _vm_of(conn, v)
            target_node = node
            live = False
            if vm is not None:
                _idle_vm(vm, v)
                live = _running(vm)  # moved while the guest runs (block copy, pivot)
                if vm.node is not None:
                    target_pool = pools.get(conn, pool)
                    if not target_pool.sees(vm.node):
                        raise InvalidInput(
                            f"pool: VM {vm.name}'s node {vm.node} is not a host of pool {pool}"
                        )
                    if target_pool.type is PoolType.LOCAL and (target_node or vm.node) != vm.node:
                        raise Conflict(
                            f"volume {name} is a disk of VM {vm.name} on {vm.node}: in a local "
                            f"pool it stays on {vm.node} (migrate the VM instead)"
                        )
                    if target_pool.type is PoolType.LOCAL:
                        target_node = vm.node
            where = place(conn, pool, target_node, v.size_mb, near=v.node)
            if where.pool.name == v.pool and where.node == v.node:
                raise InvalidInput(f"volume {name} is in pool {v.pool} on that host already")
            task_id = new_id()
            volumes.take(conn, v, VolumeState.MIGRATING, task_id, self._clock.now())
            file = live_file(v.file, task_id) if live else v.file
            params = VolumeCopyParams(
                volume_id=v.id, volume=v.name, target_id=v.id, pool=where.pool.name,
                node=where.node, file=file, from_pool=v.pool, from_node=v.node,
                from_file=v.file, live=live, device=v.device if live else None,
                attached=v.vm_uuid is not None,
            )  # fmt: skip
            task = self._task(conn, "volume_migrate", params, task_id, node=where.node, vm=vm)
            return volumes.get_by_id(conn, v.id), task

        return await self._request(tx)

    def _not_in_use(self, conn: Connection, v: Volume, what: str) -> None:
        vm = _vm_of(conn, v)
        _idle_vm(vm, v)
        if vm is not None and _running(vm):
            raise Conflict(
                f"volume {v.name} is a disk of running VM {vm.name}: stop the VM to {what} it"
                + (" (or take a snapshot and make a volume from it)" if what == "copy" else "")
            )

    # -- snapshots -----------------------------------------------------------------------

    async def snapshot(self, name: str, snapshot: str, action: str) -> tuple[Volume, Task]:
        """`action`: create, delete or revert."""
        if not _SNAPSHOT_NAME.fullmatch(snapshot):
            raise InvalidInput(f"snapshot: {snapshot!r} is not a snapshot name (1-63 of A-Z, "
                               "a-z, 0-9, '.', '-', '_')")  # fmt: skip

        def tx(conn: Connection) -> tuple[Volume, Task]:
            v = volumes.get(conn, name)
            if v.format != "qcow2":
                raise InvalidInput(f"volume {name} is {v.format}: snapshots need a qcow2 volume")
            found = volumes.find_snapshot(conn, v.id, snapshot)
            if action == "create":
                if found is not None:
                    raise Conflict(f"volume {name} has a snapshot named {snapshot!r}")
                if volumes.snapshot_count(conn, v.id) >= MAX_SNAPSHOTS:
                    raise Conflict(f"volume {name} has {MAX_SNAPSHOTS} snapshots: delete some")
            elif found is None:
                raise InvalidInput(f"volume {name} has no snapshot {snapshot!r}")
            if action != "delete":
                self._not_in_use(conn, v, "snapshot" if action == "create" else "revert")
            state = VolumeState.REVERTING if action == "revert" else VolumeState.SNAPSHOTTING
            task_id = new_id()
            volumes.take(conn, v, state, task_id, self._clock.now())
            params = SnapshotParams(volume_id=v.id, volume=v.name, snapshot=snapshot)
            task = self._task(conn, f"snapshot_{action}", params, task_id, node=v.node)
            return volumes.get_by_id(conn, v.id), task

        return await self._request(tx)
