"""Requests for a VM's image: export a stopped VM's disks to the cell's image spool, and make
a VM's disks from an image and define it (see tasks/flows/vm_images.py).

Each takes the VM (compare-and-swap: 409 naming a task that holds it) and its volumes, and
creates the task, in one transaction; the engine then runs it.
"""

from __future__ import annotations

from sqlalchemy import Connection

from bollard.domain.errors import Conflict, NotFound
from bollard.domain.ids import new_id
from bollard.domain.models import Task, Vm
from bollard.domain.states import DesiredPower, TaskState, VmState
from bollard.domain.storage import Volume, VolumeState
from bollard.server.clock import Clock
from bollard.server.images import ImageSpool, check_name
from bollard.server.ports import TaskLauncher, UnitOfWork
from bollard.server.tasks.params import ImageDisk, VmExportParams, VmSpawnParams
from bollard.store import vms, volumes

_EXPORTABLE = frozenset({VmState.STOPPED})
_SPAWNABLE = frozenset({VmState.STOPPED, VmState.ERROR})


def _disks(vm: Vm, found: list[Volume], state: VolumeState, what: str) -> list[ImageDisk]:
    """The VM's volumes as an image's disks: each at a device, in `state`, held by no task
    (Conflict naming the first that is not)."""
    out = []
    for v in found:
        if v.task_id is not None:
            raise Conflict(
                f"VM {vm.name}: its volume {v.name} is busy with task {v.task_id} ({v.state})"
            )
        if v.state is not state or v.device is None:
            raise Conflict(
                f"VM {vm.name}: its volume {v.name} is {v.state}: {what} needs every one of "
                f"its volumes {state}"
            )
        out.append(ImageDisk(device=v.device, volume_id=v.id))
    return out


class ImageOperations:
    def __init__(
        self, *, work: UnitOfWork, clock: Clock, launcher: TaskLauncher, spool: ImageSpool
    ) -> None:
        self._work = work
        self._clock = clock
        self._launcher = launcher
        self._spool = spool

    async def export(self, name: str, image: str) -> tuple[Vm, Task]:
        """Export the stopped VM's disks as spool image `image` (task `vm_export`)."""
        check_name("image", image)
        vm, task = await self._work.run(self._export_tx, name, image)
        self._launcher.launch(task.id)
        return vm, task

    async def spawn(self, name: str, image: str, start: bool) -> tuple[Vm, Task]:
        """Make the VM's reserved volumes from spool image `image`, define the VM on its node
        and start it if asked (task `vm_spawn`)."""
        check_name("image", image)
        vm, task = await self._work.run(self._spawn_tx, name, image, start)
        self._launcher.launch(task.id)
        return vm, task

    def _export_tx(self, name: str, image: str) -> tuple[Vm, Task]:
        now = self._clock.now()
        with self._work.write() as conn:
            vm = vms.get(conn, name)
            self._free(vm, _EXPORTABLE, "an export")
            found = volumes.of_vm(conn, vm.uuid)
            disks = _disks(vm, found, VolumeState.ATTACHED, "an export")
            task_id = new_id()
            vms.begin_task(conn, vm, TaskState.IMAGE_UPLOADING, task_id, now, allowed=_EXPORTABLE)
            for v in found:  # read while the task runs: nothing changes them meanwhile
                volumes.take(conn, v, VolumeState.COPYING, task_id, now)
            params = VmExportParams(image=image, disks=disks)
            return self._create(conn, vm, task_id, "vm_export", params)

    def _spawn_tx(self, name: str, image: str, start: bool) -> tuple[Vm, Task]:
        now = self._clock.now()
        with self._work.write() as conn:
            vm = vms.get(conn, name)
            self._free(vm, _SPAWNABLE, "a spawn")
            if vm.node is None:
                raise Conflict(f"VM {name} has no node to be made on")
            found = volumes.of_vm(conn, vm.uuid)
            disks = _disks(vm, found, VolumeState.RESERVED, "a spawn")
            for v in found:
                if v.node is not None and v.node != vm.node:
                    raise Conflict(
                        f"VM {name}: its volume {v.name} is on {v.node}, the VM on {vm.node}"
                    )
            missing = [d.device for d in disks if self._spool.disk(image, d.device) is None]
            if missing:
                raise NotFound(f"image {image} has no disk {', '.join(missing)} in the spool")
            task_id = new_id()
            desired = DesiredPower.RUNNING if start else DesiredPower.STOPPED
            vms.begin_task(conn, vm, TaskState.SPAWNING, task_id, now, allowed=_SPAWNABLE,
                           desired_power=desired)  # fmt: skip
            for v in found:  # reserved still, held by the task until they are made
                if not volumes.transition(
                    conn, v.id, now, held_by=None, state=VolumeState.RESERVED, task_id=task_id,
                    unchanged={"state": VolumeState.RESERVED.value},
                ):  # fmt: skip
                    raise Conflict(f"volume {v.name} changed under this request; try again")
            params = VmSpawnParams(image=image, start=start, disks=disks)
            return self._create(conn, vm, task_id, "vm_spawn", params)

    @staticmethod
    def _free(vm: Vm, allowed: frozenset[VmState], what: str) -> None:
        if vm.task_id is not None:
            raise Conflict(f"VM {vm.name!r} is busy with task {vm.task_id} ({vm.task_state})")
        if vm.vm_state not in allowed:
            states = " or ".join(sorted(s.value for s in allowed))
            raise Conflict(f"VM {vm.name!r} is {vm.vm_state}: {what} needs it {states}")

    def _create(
        self,
        conn: Connection,
        vm: Vm,
        task_id: str,
        kind: str,
        params: VmExportParams | VmSpawnParams,
    ) -> tuple[Vm, Task]:
        task = self._launcher.create_in(
            conn, id=task_id, type=kind, vm_uuid=vm.uuid, vm_name=vm.name, node=vm.node,
            params=params,
        )  # fmt: skip
        return vms.get_by_uuid(conn, vm.uuid), task
