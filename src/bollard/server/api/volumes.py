"""/api/v1/volumes: volumes and their snapshots (operations/volume_ops.py). Every change
answers 202 with the volume and the task that makes it (follow it with `GET /tasks/{id}`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from bollard.domain.errors import InvalidInput
from bollard.domain.models import Task
from bollard.domain.storage import SNAPSHOT_NAME, VOLUME_NAME, Volume, VolumeState
from bollard.server.api.deps import VolumeOpsDep, WorkDep
from bollard.server.api.schemas import TaskOut
from bollard.server.api.storage_schemas import (
    SnapshotCreate,
    SnapshotOut,
    SnapshotPage,
    VolumeAttach,
    VolumeCopy,
    VolumeCreate,
    VolumeGrow,
    VolumeMigrate,
    VolumeOut,
    VolumePage,
    VolumeTask,
)
from bollard.store import vms, volumes
from bollard.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix="/volumes", tags=["storage"])

VolumePath = Annotated[str, Path(pattern=VOLUME_NAME, description="The volume's name.")]
SnapshotPath = Annotated[str, Path(pattern=SNAPSHOT_NAME, description="The snapshot's name.")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


async def _answer(work: WorkDep, volume: Volume, task: Task) -> VolumeTask:
    def tx() -> VolumeTask:
        with work.read() as conn:
            current = volumes.find_by_id(conn, volume.id) or volume
        return VolumeTask(volume=VolumeOut.of(current), task=TaskOut.of(task))

    return await work.run(tx)


@router.post("", status_code=202, response_model=VolumeTask)
async def create_volume(body: VolumeCreate, ops: VolumeOpsDep, work: WorkDep) -> VolumeTask:
    """Create an empty volume in `pool` (on `node`, for a local pool), or a copy of a
    snapshot of another volume (`from_snapshot`)."""
    source = None
    if body.from_snapshot is not None:
        source = (body.from_snapshot.volume, body.from_snapshot.snapshot)
    elif body.size_mb is None:
        raise InvalidInput("size_mb: required (unless the volume is made from a snapshot)")
    volume, task = await ops.create(
        body.name, body.size_mb or 1, body.pool, body.node, body.format, source
    )
    return await _answer(work, volume, task)


@router.get("", response_model=VolumePage)
async def list_volumes(
    work: WorkDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    pool: Annotated[str | None, Query(max_length=63, description="Only this pool's.")] = None,
    node: Annotated[str | None, Query(max_length=63, description="Only on this host.")] = None,
    vm: Annotated[str | None, Query(max_length=63, description="Only this VM's disks.")] = None,
    state: Annotated[VolumeState | None, Query(description="Only in this state.")] = None,
) -> VolumePage:
    def tx() -> VolumePage:
        with work.read() as conn:
            vm_uuid = vms.get(conn, vm).uuid if vm is not None else None
            page = volumes.list_page(
                conn, limit=limit, cursor=cursor, pool=pool, node=node, vm_uuid=vm_uuid,
                state=state,
            )  # fmt: skip
        return VolumePage(
            items=[VolumeOut.of(v) for v in page.items],
            next_cursor=page.next_cursor,
            total=page.total,
        )

    return await work.run(tx)


@router.get("/{name}", response_model=VolumeOut)
async def show_volume(name: VolumePath, work: WorkDep) -> VolumeOut:
    def tx() -> VolumeOut:
        with work.read() as conn:
            return VolumeOut.of(volumes.get(conn, name))

    return await work.run(tx)


@router.delete("/{name}", status_code=202, response_model=VolumeTask)
async def delete_volume(name: VolumePath, ops: VolumeOpsDep, work: WorkDep) -> VolumeTask:
    """Delete a volume that is not attached (its snapshots with it)."""
    return await _answer(work, *await ops.delete(name))


@router.post("/{name}/grow", status_code=202, response_model=VolumeTask)
async def grow_volume(
    name: VolumePath, body: VolumeGrow, ops: VolumeOpsDep, work: WorkDep
) -> VolumeTask:
    """Grow a volume (never shrink). A disk of a running VM grows while it runs."""
    return await _answer(work, *await ops.grow(name, body.size_mb))


@router.post("/{name}/attach", status_code=202, response_model=VolumeTask)
async def attach_volume(
    name: VolumePath, body: VolumeAttach, ops: VolumeOpsDep, work: WorkDep
) -> VolumeTask:
    """Attach a ready volume to a VM (hot-plugged when the VM runs). Its pool must be seen
    by the VM's node, and a volume of a local pool must be on that node."""
    return await _answer(work, *await ops.attach(name, body.vm, body.device))


@router.post("/{name}/detach", status_code=202, response_model=VolumeTask)
async def detach_volume(name: VolumePath, ops: VolumeOpsDep, work: WorkDep) -> VolumeTask:
    """Detach a volume from its VM (hot-unplugged when the VM runs)."""
    return await _answer(work, *await ops.detach(name))


@router.post("/{name}/copy", status_code=202, response_model=VolumeTask)
async def copy_volume(
    name: VolumePath, body: VolumeCopy, ops: VolumeOpsDep, work: WorkDep
) -> VolumeTask:
    """Copy a volume into a new one (answered with the NEW volume)."""
    return await _answer(work, *await ops.copy(name, body.name, body.pool, body.node))


@router.post("/{name}/migrate", status_code=202, response_model=VolumeTask)
async def migrate_volume(
    name: VolumePath, body: VolumeMigrate, ops: VolumeOpsDep, work: WorkDep
) -> VolumeTask:
    """Move a volume to another pool or host: copied, switched once complete, then removed
    from where it was."""
    return await _answer(work, *await ops.migrate(name, body.pool, body.node))


@router.get("/{name}/snapshots", response_model=SnapshotPage)
async def list_snapshots(name: VolumePath, work: WorkDep) -> SnapshotPage:
    def tx() -> SnapshotPage:
        with work.read() as conn:
            volume = volumes.get(conn, name)
            found = volumes.snapshots_of(conn, volume.id)
        return SnapshotPage(items=[SnapshotOut.of(s) for s in found])

    return await work.run(tx)


@router.post("/{name}/snapshots", status_code=202, response_model=VolumeTask)
async def create_snapshot(
    name: VolumePath, body: SnapshotCreate, ops: VolumeOpsDep, work: WorkDep
) -> VolumeTask:
    """Take a snapshot of a qcow2 volume that no running VM uses."""
    return await _answer(work, *await ops.snapshot(name, body.name, "create"))


@router.delete("/{name}/snapshots/{snapshot}", status_code=202, response_model=VolumeTask)
async def delete_snapshot(
    name: VolumePath, snapshot: SnapshotPath, ops: VolumeOpsDep, work: WorkDep
) -> VolumeTask:
    return await _answer(work, *await ops.snapshot(name, snapshot, "delete"))


@router.post("/{name}/snapshots/{snapshot}/revert", status_code=202, response_model=VolumeTask)
async def revert_snapshot(
    name: VolumePath, snapshot: SnapshotPath, ops: VolumeOpsDep, work: WorkDep
) -> VolumeTask:
    """Put the volume's content back to the snapshot's (no running VM may use it)."""
    return await _answer(work, *await ops.snapshot(name, snapshot, "revert"))
