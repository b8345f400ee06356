"""What an API server in front of cells asks of a cell for a VM moving between cells: take a
copy of the VM's records, hidden (import), and hide or show a VM.

A hidden VM is a cell's copy of a VM that is not the one shown (store/vms.py: left out of
lists, counts and quotas); it holds its node's resources and its MACs like any VM, so a move
never overcommits the target and a revert always finds its source's room."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bollard.domain.actions import task_type_of
from bollard.domain.errors import AlreadyExists, InvalidInput
from bollard.domain.flavors import FlavorRef
from bollard.domain.ids import new_id, new_uuid
from bollard.domain.models import Nic, Vm
from bollard.domain.scheduler import decision_error
from bollard.domain.states import DesiredPower, TaskStatus
from bollard.domain.storage import PoolType, VolumeState, vm_disk_file
from bollard.server import scheduling, sriov_moves, sriov_nics
from bollard.server.clock import Clock
from bollard.server.ports import UnitOfWork
from bollard.store import events, macs, pools, tasks, vms, volumes


@dataclass(frozen=True)
class ImportedDisk:
    device: str
    size_mb: int
    pool: str
    format: str


@dataclass(frozen=True)
class PastAction:
    """An action (task) the VM had in its cell, kept with it where it moves."""

    task_id: str
    action: str
    request_id: str | None
    actor: str | None
    succeeded: bool
    message: str | None
    start_time: datetime
    finish_time: datetime | None


@dataclass(frozen=True)
class VmRecord:
    """A VM as another cell holds it, to be copied here hidden."""

    name: str
    uuid: str
    vcpus: int
    memory_mb: int
    node: str
    flavor: FlavorRef | None
    nics: tuple[Nic, ...]
    disks: tuple[ImportedDisk, ...]
    meta: dict[str, Any]
    actions: tuple[PastAction, ...] = ()


class CellOperations:
    def __init__(self, *, work: UnitOfWork, clock: Clock) -> None:
        self._work = work
        self._clock = clock

    async def import_vm(self, record: VmRecord) -> Vm:
        """Create the hidden copy of `record` on its node (claimed: InsufficientCapacity if
        it does not fit), its NICs' MACs taken, its disks `reserved` volumes of this cell's
        pools (filled later from images: the vm_spawn task). Doing it again with the same uuid
        answers the copy already made."""

        def tx() -> Vm:
            with self._work.write() as conn:
                now = self._clock.now()
                found = vms.find_by_uuid(conn, record.uuid)
                if found is not None and found.name == record.name:
                    return found
                if vms.name_taken(conn, record.name):
                    raise AlreadyExists(f"a VM named {record.name!r} already exists here")
                known = pools.by_name(conn, {d.pool for d in record.disks})
                missing = sorted({d.pool for d in record.disks} - set(known))
                if missing:
                    raise InvalidInput(f"disks: no pool {', '.join(missing)} in this cell")
                needs = [(d.pool, d.size_mb) for d in record.disks]
                vfs, vf_netdev = sriov_nics.vf_needs(record.nics)
                request = scheduling.request_for(
                    record.vcpus, record.memory_mb, pools=scheduling.pool_needs(conn, needs),
                    vfs=vfs, vf_netdev=vf_netdev,
                )  # fmt: skip
                settings = scheduling.read_settings(conn)
                decision = scheduling.place(conn, request, wanted=record.node, settings=settings)
                if decision.chosen != record.node or not scheduling.claim(
                    conn, record.node, request, settings=settings
                ):
                    raise decision_error(decision)
                nics = macs.assign(conn, record.uuid, record.nics)
                # Its SR-IOV NICs' VFs here are its own at once, as its node's room: the
                # move's undo or a revert deletes this copy, which frees them.
                sriov_moves.claim_on(conn, record.uuid, record.node, nics, now, None)
                meta = record.meta
                vms.create(
                    conn, uuid=record.uuid, name=record.name, node=record.node,
                    vcpus=record.vcpus, memory_mb=record.memory_mb,
                    desired_power=DesiredPower.STOPPED, task_id=new_id(), now=now,
                    migration_method=str(meta.get("migration_method") or "default"),
                    on_lost=str(meta.get("on_lost") or "none"), ha=meta.get("ha"),
                    ha_priority=int(meta.get("ha_priority") or 0), nics=nics,
                    flavor=record.flavor,
                )  # fmt: skip
                vms.finish_import(conn, record.uuid, now)
                for disk in record.disks:
                    pool = known[disk.pool]
                    volume_name = _free_name(conn, f"{record.name[:58]}-{disk.device}")
                    volumes.create(
                        conn, id=new_uuid(), name=volume_name, pool=pool.name,
                        node=record.node if pool.type is PoolType.LOCAL else None,
                        file=vm_disk_file(record.uuid, disk.device), format=disk.format,
                        size_mb=disk.size_mb, now=now, state=VolumeState.RESERVED, task_id=None,
                        vm_uuid=record.uuid, device=disk.device, delete_with_vm=True,
                    )  # fmt: skip
                for past in record.actions:
                    tasks.insert_ended(
                        conn, id=past.task_id, type=task_type_of(past.action),
                        vm_uuid=record.uuid, vm_name=record.name,
                        state=TaskStatus.SUCCEEDED if past.succeeded else TaskStatus.FAILED,
                        error=None if past.succeeded else past.message, actor=past.actor,
                        request_id=past.request_id, created_at=past.start_time,
                        finished_at=past.finish_time,
                    )  # fmt: skip
                events.add(
                    conn, "vm.imported",
                    f"VM {record.name} copied here, hidden, on {record.node} (moving between "
                    "cells)", now, vm_name=record.name, vm_uuid=record.uuid, node=record.node,
                )  # fmt: skip
                return vms.get_by_uuid(conn, record.uuid)

        return await self._work.run(tx)

    async def set_hidden(self, name: str, hidden: bool) -> Vm:
        def tx() -> Vm:
            with self._work.write() as conn:
                now = self._clock.now()
                before = vms.is_hidden(conn, name)
                vm = vms.set_hidden(conn, name, hidden, now)
                if before != hidden:
                    what = "hidden" if hidden else "shown"
                    events.add(conn, f"vm.{what}", f"VM {name} {what} (moving between cells)",
                               now, vm_name=name, vm_uuid=vm.uuid, node=vm.node)  # fmt: skip
                return vm

        return await self._work.run(tx)


def _free_name(conn: Any, name: str) -> str:
    candidate, n = name, 1
    while volumes.name_taken(conn, candidate):
        n += 1
        candidate = f"{name[:58]}-{n}"
    return candidate
