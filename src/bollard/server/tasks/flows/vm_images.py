"""A VM's disks as an image in the cell's image spool (server/images.py), and a VM made from
one: how a VM moves between cells that share no host and no storage.

``vm_export`` (a stopped VM, no task): one step per disk, in device order, each a
``volume_export`` by the host that has the volume (its node in a local pool; in a shared
pool the VM's node, else a connected host of the pool), which uploads the volume's image to
the spool as disk ``<device>`` of the image; the step checks that the spool holds what the
host read (SHA-256 and length). The task's result: ``{"image", "disks": [{"device",
"volume", "pool", "format", "size_mb", "sha256", "bytes", "checksum"}]}``. The VM's volumes
are held (copying) while it runs and the VM stays stopped and usable afterwards. Undo
(any disk that failed): the spool image is removed.

``vm_spawn`` (a VM whose volumes are all ``reserved``, each named by its device in the image,
on its node): one ``volume_import`` per volume (on the VM's node, or a host of the volume's
shared pool: reserved, held by the task), then the VM is defined on its node (as a create
defines it: its disks, NICs and size), then started if asked; its volumes end ``attached``.
Undo: the VM is stopped and undefined and the imported files removed; the volumes are
``reserved`` again (an import that was refused made nothing: nothing is removed for it).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from sqlalchemy import Connection

from bollard.domain.errors import CommandFailedTemporarily, NodeUnavailable, StepFailed
from bollard.domain.models import Task, nic_args
from bollard.domain.states import CommandType, DesiredPower, TaskState, VmState
from bollard.domain.storage import PoolType, Volume, VolumeState
from bollard.domain.tasks import StepState
from bollard.server import vm_disks
from bollard.server.images import ImageSpool
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.flow import RECONNECT_RETRY, Flow, RetryPolicy, StepDef
from bollard.server.tasks.flows import volume_common as vc
from bollard.server.tasks.flows.common import end_vm_task, show_task_state, with_locks
from bollard.server.tasks.flows.migrate_progress import with_progress
from bollard.server.tasks.params import ImageDisk, VmExportParams, VmSpawnParams
from bollard.store import commands, tasks

TRANSFER_TIMEOUT = 24 * 3600.0  # an image's command deadline: it reports progress meanwhile

ExportCtx = StepContext[VmExportParams]
SpawnCtx = StepContext[VmSpawnParams]

# An upload or download that failed because the cell server was away (the agent says
# `temporary`), or a host briefly away: sent again, for about a minute (both commands are
# idempotent: the same image, the same file).
IMAGE_RETRY = RetryPolicy(
    attempts=6, delay=2.0, factor=2.0, max_delay=20.0,
    errors=(NodeUnavailable, CommandFailedTemporarily),
)  # fmt: skip


def _disk(ctx: StepContext[Any], device: str) -> ImageDisk:
    found: ImageDisk = next(d for d in ctx.params.disks if d.device == device)
    return found


def _devices(task: Task) -> list[str]:
    return [str(d["device"]) for d in task.params.get("disks") or []]


async def _host(ctx: StepContext[Any], v: Volume) -> tuple[Any, str]:
    """The volume's pool, and the host that acts on the volume for the task's VM."""
    vm = await ctx.vm()
    pool = await vc.pool(ctx, v.pool)
    if pool.type is PoolType.LOCAL:
        return pool, await vc.host_for(ctx, pool, v.node or vm.node)
    return pool, await vc.host_for(ctx, pool, None, prefer=vm.node)


async def _transfer(
    ctx: StepContext[Any], key: str, node: str, command: CommandType, args: dict[str, Any]
) -> dict[str, Any]:
    """An image command (progress copied into the task's result while it runs)."""
    run = ctx.command(key, node, command, args, timeout=TRANSFER_TIMEOUT)
    return await with_progress(ctx, key, run)


def _all_undone(ctx: StepContext[Any]) -> bool:
    """Whether every step that acted has been undone (the rollback went well)."""
    return all(
        s.state in (StepState.UNDONE, StepState.PENDING, StepState.SKIPPED) for s in ctx.task.steps
    )


def _results(ctx: StepContext[Any]) -> dict[str, dict[str, Any]]:
    return {s.name: s.result for s in ctx.task.steps}


class VmExportFlow:
    type = "vm_export"
    params_model = VmExportParams

    def __init__(self, spool: ImageSpool) -> None:
        self.spool = spool

    def steps(self, task: Task) -> list[StepDef]:
        return [
            StepDef(
                f"export-{device}",
                functools.partial(self._export, device=device),
                self._remove_image,
                retry=IMAGE_RETRY,
            )
            for device in _devices(task)
        ]

    async def _export(self, ctx: ExportCtx, *, device: str) -> dict[str, Any]:
        p = ctx.params
        await show_task_state(ctx, TaskState.IMAGE_UPLOADING)
        v = await vc.volume(ctx, _disk(ctx, device).volume_id)
        pool, host = await _host(ctx, v)
        args = {"pool": pool.ref(), "file": v.file, "image": p.image, "disk": device}
        key = f"export-{device}"
        done = await _transfer(ctx, key, host, CommandType.VOLUME_EXPORT, args)
        spooled = await asyncio.to_thread(self.spool.disk, p.image, device)
        if spooled is None or (spooled.sha256, spooled.bytes) != (done["sha256"], done["bytes"]):
            raise StepFailed(
                f"disk {device}: the spool does not hold what {host} exported "
                f"(sha256 {done.get('sha256')}, {done.get('bytes')} bytes)"
            )
        return {
            "device": device, "volume": v.name, "pool": v.pool, "format": done["format"],
            "size_mb": done["size_mb"], "sha256": done["sha256"], "bytes": done["bytes"],
            "checksum": done.get("checksum"), "host": host,
        }  # fmt: skip

    async def _remove_image(self, ctx: ExportCtx) -> None:
        await self.spool.remove(ctx.params.image)

    def _let_go(self, conn: Connection, ctx: ExportCtx) -> None:
        for d in ctx.params.disks:
            vc.let_go(conn, ctx, d.volume_id)

    def succeed(self, conn: Connection, ctx: ExportCtx) -> None:
        results = _results(ctx)
        fields = ("device", "volume", "pool", "format", "size_mb", "sha256", "bytes", "checksum")
        disks = []
        for d in ctx.params.disks:
            done = results.get(f"export-{d.device}") or {}
            disks.append({k: done.get(k) for k in fields})
        vc.finish(conn, ctx, f"exported {len(disks)} disk(s) as image {ctx.params.image}")
        current = tasks.get(conn, ctx.task.id).result
        tasks.set_result(conn, ctx.task.id, {**current, "image": ctx.params.image, "disks": disks})
        self._let_go(conn, ctx)
        end_vm_task(conn, ctx, vm_state=VmState.STOPPED)
        ctx.event(
            conn, "vm.exported", f"disks exported as image {ctx.params.image}",
            image=ctx.params.image, disks=[d["device"] for d in disks],
        )  # fmt: skip

    def fail(self, conn: Connection, ctx: ExportCtx, error: str) -> None:
        # The VM was not touched: it stays as it was, its disks at rest.
        vc.finish(conn, ctx)
        self._let_go(conn, ctx)
        end_vm_task(conn, ctx, vm_state=None)


class VmSpawnFlow:
    type = "vm_spawn"
    params_model = VmSpawnParams

    def __init__(self, spool: ImageSpool) -> None:
        self.spool = spool

    def steps(self, task: Task) -> list[StepDef]:
        imports = [
            StepDef(
                f"import-{device}",
                functools.partial(self._import, device=device),
                functools.partial(self._unimport, device=device),
                retry=IMAGE_RETRY,
            )
            for device in _devices(task)
        ]
        return [
            *imports,
            StepDef("define", self._define, self._undefine, retry=RECONNECT_RETRY),
            StepDef("start", self._start, self._stop, when=lambda ctx: ctx.params.start),
        ]

    async def _import(self, ctx: SpawnCtx, *, device: str) -> dict[str, Any]:
        p = ctx.params
        await show_task_state(ctx, TaskState.SPAWNING)
        v = await vc.volume(ctx, _disk(ctx, device).volume_id)
        pool, host = await _host(ctx, v)
        spooled = await asyncio.to_thread(self.spool.disk, p.image, device)
        if spooled is None:
            raise StepFailed(f"image {p.image} has no disk {device} in the spool")
        args = {
            "pool": pool.ref(), "file": v.file, "format": v.format, "size_mb": v.size_mb,
            "image": p.image, "disk": device, "sha256": spooled.sha256,
        }  # fmt: skip
        done = await _transfer(ctx, f"import-{device}", host, CommandType.VOLUME_IMPORT, args)
        return {**done, "host": host}

    async def _unimport(self, ctx: SpawnCtx, *, device: str) -> None:
        """Remove the imported file: one the import made (or may have made: its outcome is
        not known); a refused import made nothing."""
        key = f"import-{device}"
        done = ctx.results.get(key) or {}
        if "volume" not in done:
            cid = (await ctx.sent_commands()).get(key)
            if cid is None:
                return
            record = await ctx.read(lambda conn: commands.get(conn, cid))
            if record.ok is False:
                return
        v = await vc.volume(ctx, _disk(ctx, device).volume_id)
        pool, host = await _host(ctx, v)
        host = str(done.get("host") or host)
        args = {"pool": pool.ref(), "file": v.file}
        await ctx.command(f"undo-{key}", host, CommandType.VOLUME_DELETE, args)

    async def _define(self, ctx: SpawnCtx) -> dict[str, Any]:
        await show_task_state(ctx, TaskState.SPAWNING)
        vm = await ctx.vm()
        if vm.node is None:
            raise StepFailed(f"VM {vm.name} has no node to be defined on")
        disks = await ctx.read(lambda conn: vm_disks.define_args(conn, vm.uuid))
        args = {
            "vcpus": vm.vcpus, "memory_mb": vm.memory_mb, "name": ctx.task.vm_name,
            "disks": disks, "nics": nic_args(vm.nics),
        }  # fmt: skip
        return await ctx.command(
            "define", vm.node, CommandType.DEFINE, args, vm_uuid=vm.uuid, epoch=vm.epoch
        )

    async def _undefine(self, ctx: SpawnCtx) -> None:
        await show_task_state(ctx, TaskState.DELETING)
        vm = await ctx.vm()
        if vm.node is None:
            return
        await ctx.command("undo-define", vm.node, CommandType.UNDEFINE, {"force": True},
                          vm_uuid=vm.uuid, epoch=vm.epoch)  # fmt: skip

    async def _start(self, ctx: SpawnCtx) -> dict[str, Any]:
        await show_task_state(ctx, TaskState.POWERING_ON)
        vm = await ctx.vm()
        assert vm.node is not None
        return await with_locks(ctx, "start", vm.node, CommandType.START, vm.epoch)

    async def _stop(self, ctx: SpawnCtx) -> None:
        await show_task_state(ctx, TaskState.POWERING_OFF)
        vm = await ctx.vm()
        assert vm.node is not None
        await with_locks(ctx, "undo-start", vm.node, CommandType.STOP, vm.epoch)

    def succeed(self, conn: Connection, ctx: SpawnCtx) -> None:
        p = ctx.params
        for d in p.disks:
            vc.let_go(conn, ctx, d.volume_id, VolumeState.ATTACHED)
        how = " and started" if p.start else ""
        vc.finish(conn, ctx, f"made from image {p.image} ({len(p.disks)} disk(s)){how}")
        end_vm_task(conn, ctx, vm_state=VmState.ACTIVE if p.start else VmState.STOPPED)
        ctx.event(conn, "vm.spawned", f"made from image {p.image}{how}", image=p.image)

    def fail(self, conn: Connection, ctx: SpawnCtx, error: str) -> None:
        vc.finish(conn, ctx)
        if _all_undone(ctx):
            # Nothing is left on the host: the volumes are kept for another try.
            for d in ctx.params.disks:
                vc.let_go(conn, ctx, d.volume_id, VolumeState.RESERVED)
            end_vm_task(conn, ctx, vm_state=None, fault=error, desired=DesiredPower.STOPPED)
            return
        for d in ctx.params.disks:
            vc.let_go(conn, ctx, d.volume_id, VolumeState.ERROR, fault=error)
        end_vm_task(conn, ctx, vm_state=VmState.ERROR, fault=error, desired=DesiredPower.STOPPED)


def flows(spool: ImageSpool) -> list[Flow]:
    return [VmExportFlow(spool), VmSpawnFlow(spool)]
