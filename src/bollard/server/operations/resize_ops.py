"""Requests to resize a VM, and to confirm or revert a resize: check, choose the destination,
take the VM (and its disks) and create the task, in one transaction.

A resize keeps the VM's old copy on the source (its stopped definition and its disks, the
originals of the copies made for the new size) and the source's resources (the migration
record's hold) until it is confirmed or reverted: see tasks/flows/resize.py and
resize_end.py. So does it the source's SR-IOV VFs: a VM with SR-IOV NICs resizes to a node
with free VFs for them (claimed by the task), and holds VFs on both nodes until then.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime

from sqlalchemy import Connection

from bollard.domain.errors import Conflict, InvalidInput, InvalidState
from bollard.domain.flavors import Flavor, FlavorRef
from bollard.domain.ids import new_id, new_uuid
from bollard.domain.migrations import Migration, MigrationStatus, MigrationType
from bollard.domain.models import Task, Vm
from bollard.domain.scheduler import decision_error
from bollard.domain.states import TaskState, VmState
from bollard.domain.storage import PoolType, Volume, VolumeState, volume_file
from bollard.server import scheduling, sriov_nics, vm_disks
from bollard.server.clock import Clock
from bollard.server.ports import TaskLauncher, UnitOfWork
from bollard.server.tasks.params import ResizeDisk, ResizeEndParams, ResizeParams
from bollard.store import flavors, migrations_log, pools, tasks, vms, volumes

_RESIZABLE = frozenset({VmState.ACTIVE, VmState.STOPPED})
ROOT_DEVICE = "vda"


def old_flavor(vm: Vm, disks: list[Volume]) -> FlavorRef:
    """What the VM is now, as a resize records it (a size given by hand has no name)."""
    if vm.flavor is not None:
        return vm.flavor
    root = next((d.size_mb for d in disks if d.device == ROOT_DEVICE), 0)
    return FlavorRef(None, None, vm.vcpus, vm.memory_mb, root)


def _not_resized(vm: Vm) -> InvalidState:
    return InvalidState(
        f"VM {vm.name} is not waiting for a resize to be confirmed or reverted "
        f"({vm.status().value})"
    )


class ResizeOperations:
    def __init__(self, *, work: UnitOfWork, clock: Clock, launcher: TaskLauncher) -> None:
        self._work = work
        self._clock = clock
        self._launcher = launcher

    async def resize(self, name: str, flavor: str, to: str | None = None) -> tuple[Vm, Task]:
        """Resize the VM to `flavor`, on `to` (default: the scheduler's choice)."""
        vm, task = await self._work.run(self._resize_tx, name, flavor, to)
        self._launcher.launch(task.id)
        return vm, task

    async def confirm(self, name: str) -> tuple[Vm, Task]:
        vm, task = await self._work.run(self._end_tx, name, "resize_confirm")
        self._launcher.launch(task.id)
        return vm, task

    async def revert(self, name: str) -> tuple[Vm, Task]:
        vm, task = await self._work.run(self._end_tx, name, "resize_revert")
        self._launcher.launch(task.id)
        return vm, task

    # -- resize -------------------------------------------------------------------------------

    def _resize_tx(self, name: str, flavor_name: str, to: str | None) -> tuple[Vm, Task]:
        now = self._clock.now()
        with self._work.write() as conn:
            vm = vms.get(conn, name)
            flavor = flavors.get(conn, flavor_name)
            if vm.vm_state is VmState.RESIZED:
                raise Conflict(
                    f"VM {name} waits for its last resize to be confirmed or reverted "
                    f"(`bollard vm resize {name} --confirm` or `--revert`)"
                )
            if vm.node is None:
                raise InvalidState(f"VM {name} is on no node: there is nothing to resize")
            if vm.flavor is not None and vm.flavor.id == flavor.id:
                raise InvalidInput(f"VM {name} already has flavor {flavor.name}")
            disks = volumes.of_vm(conn, vm.uuid)
            sizes = _copy_sizes(vm, flavor, disks)
            allow_same = bool(scheduling.setting_in(conn, "resize.allow_same_node"))
            if to == vm.node and not allow_same:
                raise InvalidInput(
                    f"to: {to} is the VM's own node; a resize on the same node needs the "
                    "setting resize.allow_same_node to be true"
                )
            dest = self._choose(conn, vm, flavor, disks, sizes, to, allow_same)
            vm_disks.check_idle(conn, vm.uuid, vm.name)
            task_id, migration_id = new_id(), new_id()
            old = old_flavor(vm, disks)
            migrations_log.create(
                conn, id=migration_id, vm_uuid=vm.uuid, vm_name=vm.name,
                type=MigrationType.RESIZE, source=vm.node, dest=dest,
                status=MigrationStatus.PRE_MIGRATING, task_id=task_id, now=now,
                old_flavor=old, new_flavor=flavor.ref(),
            )  # fmt: skip
            vms.begin_task(conn, vm, TaskState.RESIZE_PREP, task_id, now, allowed=_RESIZABLE)
            copies = [
                self._copy_of(conn, vm, d, sizes[d.id], dest, task_id, migration_id) for d in disks
            ]
            params = ResizeParams(
                migration_id=migration_id, source=vm.node, dest=dest, epoch=vm.epoch,
                was_running=vm.vm_state is VmState.ACTIVE, old_vcpus=vm.vcpus,
                old_memory_mb=vm.memory_mb, vcpus=flavor.vcpus, memory_mb=flavor.memory_mb,
                disks=copies,
            )  # fmt: skip
            self._launcher.create_in(
                conn, id=task_id, type="resize", vm_uuid=vm.uuid, vm_name=vm.name,
                node=vm.node, params=params,
            )  # fmt: skip
            return vms.get_by_uuid(conn, vm.uuid), tasks.get(conn, task_id)

    def _choose(
        self,
        conn: Connection,
        vm: Vm,
        flavor: Flavor,
        disks: list[Volume],
        sizes: dict[str, int],
        to: str | None,
        allow_same: bool,
    ) -> str:
        # SR-IOV NICs: another node needs a free VF for each (the task's claim step takes
        # them); on its own node the VM keeps those it holds.
        vfs, vf_netdev = sriov_nics.vf_needs(vm.nics) if to != vm.node else ({}, frozenset())
        request = scheduling.request_for(
            flavor.vcpus,
            flavor.memory_mb,
            node_limit=vm.node_limit,
            node_selector=vm.node_selector,
            current_node=None if allow_same else vm.node,
            pools=scheduling.pool_needs(conn, [(d.pool, sizes[d.id]) for d in disks]),
            policy=scheduling.policy_of(conn, vm),  # its group and rules (locked)
            vfs=vfs,
            vf_netdev=vf_netdev,
        )
        decision = scheduling.place(conn, request, wanted=to)
        if decision.chosen is None and allow_same and to is None and vfs:
            # The filter counts free VFs only, and its own node's are the VM's already.
            own = replace(request, vfs={}, vf_netdev=frozenset())
            if vm.node is not None and scheduling.place(conn, own, wanted=vm.node).chosen:
                return vm.node
        if decision.chosen is None:
            raise decision_error(decision)
        return decision.chosen

    def _copy_of(
        self,
        conn: Connection,
        vm: Vm,
        original: Volume,
        size_mb: int,
        dest: str,
        task_id: str,
        migration_id: str,
    ) -> ResizeDisk:
        """The original is held for the copy (copying); its copy's record is made, empty, in
        the same pool (on the destination, a local pool), for the task's copy step."""
        now = self._clock.now()
        volumes.take(conn, original, VolumeState.COPYING, task_id, now)
        pool = pools.get(conn, original.pool)
        copy_id = new_uuid()
        volumes.create(
            conn, id=copy_id, name=_free_name(conn, original.name), pool=pool.name,
            node=dest if pool.type is PoolType.LOCAL else None,
            file=volume_file(copy_id, original.format), format=original.format,
            size_mb=size_mb, now=now, state=VolumeState.CREATING, task_id=task_id,
            delete_with_vm=original.delete_with_vm, migration_id=migration_id,
        )  # fmt: skip
        volumes.set_fields(conn, original.id, now, migration_id=migration_id)
        assert original.device is not None
        return ResizeDisk(
            device=original.device, original_id=original.id, copy_id=copy_id,
            from_mb=original.size_mb, size_mb=size_mb,
        )  # fmt: skip

    # -- confirm and revert ---------------------------------------------------------------------

    def _end_tx(self, name: str, type: str) -> tuple[Vm, Task]:
        with self._work.write() as conn:
            vm = vms.get(conn, name)
            task_id = begin_end(conn, vm, type, self._launcher, self._clock.now())
            return vms.get_by_uuid(conn, vm.uuid), tasks.get(conn, task_id)


def begin_end(conn: Connection, vm: Vm, type: str, launcher: TaskLauncher, now: datetime) -> str:
    """Take a resized VM for its confirm (`resize_confirm`) or revert (`resize_revert`) and
    create the task; its id. InvalidState outside VERIFY_RESIZE."""
    if vm.vm_state is not VmState.RESIZED or vm.task_id is not None:
        raise _not_resized(vm)
    migration = migrations_log.open_resize(conn, vm.uuid)
    if migration is None or migration.status is not MigrationStatus.FINISHED:
        raise _not_resized(vm)
    assert migration.source is not None and migration.dest is not None
    if type == "resize_revert":
        _check_revertible(conn, vm, migration)
    task_id = new_id()
    state, status = TaskState.RESIZE_CONFIRMING, MigrationStatus.CONFIRMING
    if type == "resize_revert":
        state, status = TaskState.RESIZE_REVERTING, MigrationStatus.REVERTING
    vms.begin_task(conn, vm, state, task_id, now, allowed=frozenset({VmState.RESIZED}))
    migrations_log.set_status(conn, migration.id, status, now)
    resize = tasks.get(conn, migration.task_id) if migration.task_id else None
    source_epoch = int((resize.params if resize else {}).get("epoch") or vm.epoch)
    params = ResizeEndParams(
        migration_id=migration.id, source=migration.source, dest=migration.dest,
        epoch=vm.epoch, source_epoch=source_epoch,
        was_running=bool((resize.params if resize else {}).get("was_running")),
    )  # fmt: skip
    launcher.create_in(
        conn, id=task_id, type=type, vm_uuid=vm.uuid, vm_name=vm.name, node=vm.node,
        params=params,
    )  # fmt: skip
    return task_id


def _check_revertible(conn: Connection, vm: Vm, migration: Migration) -> None:
    """A revert needs every original the resize kept, reserved in its pool."""
    kept = [v for v in volumes.of_migration(conn, migration.id) if v.vm_uuid is None]
    broken = [v.name for v in kept if v.state is not VolumeState.RESERVED]
    if broken:
        raise Conflict(
            f"VM {vm.name}: the resize's original disks {', '.join(broken)} are not kept any "
            "more (see `bollard volume show`); it can only be confirmed"
        )


def _copy_sizes(vm: Vm, flavor: Flavor, disks: list[Volume]) -> dict[str, int]:
    """Each disk's size once copied: the root disk grows to the flavor's, the others keep
    theirs. A flavor whose root disk is smaller than the VM's is refused (disks never
    shrink)."""
    sizes = {d.id: d.size_mb for d in disks}
    root = next((d for d in disks if d.device == ROOT_DEVICE), None)
    if root is not None and flavor.disk_mb:
        if flavor.disk_mb < root.size_mb:
            raise InvalidInput(
                f"flavor {flavor.name}: its root disk ({flavor.disk_mb} MiB) is smaller than "
                f"VM {vm.name}'s ({root.size_mb} MiB); a resize never shrinks a disk"
            )
        sizes[root.id] = flavor.disk_mb
    return sizes


def _free_name(conn: Connection, name: str) -> str:
    """`<name>-r2` (or -r3...): the copy of a volume named `name`, or of an earlier copy."""
    base = re.sub(r"-r\d+$", "", name)[:56]
    n = 2
    candidate = f"{base}-r{n}"
    while volumes.name_taken(conn, candidate):
        n += 1
        candidate = f"{base}-r{n}"
    return candidate
