"""Volume flows: create (empty, or from a snapshot), delete, grow, attach, detach.

Each holds its volume (`task_id`) from the request to its end, in a transitional state, and
ends it at rest (ready or attached) or, when its host's state is unknown after a failed
rollback, in `error` with the reason; a volume whose creation was rolled back is removed.
Every host action is a journaled command, sent once per step (a resumed step waits for the
same command), and each is idempotent on the host (create of an existing file of that size,
delete of an absent one), so a command sent again after a lost answer does no harm.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from bollard.domain.errors import CommandFailed
from bollard.domain.models import Task
from bollard.domain.states import CommandType, PowerState
from bollard.domain.storage import UNSUPPORTED, VolumeState
from bollard.domain.tasks import StepState
from bollard.server import vm_disks
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.flow import RECONNECT_RETRY, Flow, StepDef
from bollard.server.tasks.flows import volume_common as vc
from bollard.server.tasks.flows.migrate_progress import with_progress
from bollard.server.tasks.params import (
    VolumeAttachParams,
    VolumeCreateParams,
    VolumeGrowParams,
    VolumeParams,
)
from bollard.store import nodes, vms, volumes

COPY_TIMEOUT = 24 * 3600.0  # a copy's command deadline: it reports progress meanwhile


def _rolled_back(ctx: StepContext[Any]) -> bool:
    """Whether every step that acted has been undone (a failed task's rollback went well)."""
    return all(
        s.state in (StepState.UNDONE, StepState.PENDING, StepState.SKIPPED) for s in ctx.task.steps
    )


class VolumeCreateFlow:
    type = "volume_create"
    params_model = VolumeCreateParams

    def steps(self, task: Task) -> list[StepDef]:
        return [StepDef("create", self._create, self._undo, retry=RECONNECT_RETRY)]

    async def _create(self, ctx: StepContext[VolumeCreateParams]) -> dict[str, Any]:
        p = ctx.params
        v = await vc.volume(ctx, p.volume_id)
        pool = await vc.pool(ctx, v.pool)
        host = await vc.host_for(ctx, pool, v.node)
        if p.source_id is None:
            args = vc.args(pool, v, size_mb=v.size_mb, format=v.format)
            return await ctx.command("create", host, CommandType.VOLUME_CREATE, args)
        source = await vc.volume(ctx, p.source_id)
        source_pool = await vc.pool(ctx, source.pool)
        source_host = await vc.host_for(ctx, source_pool, source.node, prefer=host)
        endpoint = await ctx.read(lambda conn: nodes.get(conn, host).migration_endpoint)
        copy = vc.args(
            source_pool, source, target_pool=pool.ref(), target_file=v.file, target=host,
            target_endpoint=endpoint, snapshot=p.snapshot, format=v.format,
        )  # fmt: skip
        run = ctx.command("copy", source_host, CommandType.VOLUME_COPY, copy, timeout=COPY_TIMEOUT)
        copied = await with_progress(ctx, "copy", run)  # type: ignore[arg-type]
        made = int((copied.get("volume") or {}).get("size_mb") or v.size_mb)
        if made < v.size_mb:  # asked bigger than the snapshot: grown to the size asked
            grow = vc.args(pool, v, size_mb=v.size_mb)
            return await ctx.command("grow", host, CommandType.VOLUME_GROW, grow)
        return copied

    async def _undo(self, ctx: StepContext[VolumeCreateParams]) -> None:
        v = await vc.volume(ctx, ctx.params.volume_id)
        pool = await vc.pool(ctx, v.pool)
        host = await vc.host_for(ctx, pool, v.node)
        await _delete(ctx, "undo-create", host, vc.args(pool, v))

    def succeed(self, conn: Connection, ctx: StepContext[VolumeCreateParams]) -> None:
        v = vc.let_go(conn, ctx, ctx.params.volume_id, VolumeState.READY)
        if ctx.params.source_id is not None:
            vc.let_go(conn, ctx, ctx.params.source_id)
        how = f" from snapshot {ctx.params.snapshot}" if ctx.params.snapshot else ""
        vc.finish(conn, ctx, f"created in pool {v.pool}{how}" if v is not None else None)
        if v is not None:
            vc.event(
                conn, ctx, "volume.created", f"volume {v.name} created in pool {v.pool}{how}", v
            )

    def fail(self, conn: Connection, ctx: StepContext[VolumeCreateParams], error: str) -> None:
        vc.finish(conn, ctx)
        if ctx.params.source_id is not None:
            vc.let_go(conn, ctx, ctx.params.source_id)
        v = volumes.find_by_id(conn, ctx.params.volume_id)
        if v is None or v.task_id != ctx.task.id:
            return
        if _rolled_back(ctx):  # nothing of it is left on any host
            volumes.remove(conn, v.id)
            vc.event(
                conn, ctx, "volume.create_failed", f"volume {v.name} was not created: {error}", v
            )
            return
        vc.let_go(conn, ctx, v.id, VolumeState.ERROR, fault=error)


async def _delete(
    ctx: StepContext[Any], key: str, host: str, args: dict[str, Any]
) -> dict[str, Any]:
    """Delete a volume file (absent is fine; a driver without pools has none)."""
    try:
        return await ctx.command(key, host, CommandType.VOLUME_DELETE, args)
    except CommandFailed as exc:
        if exc.code != UNSUPPORTED:
            raise
        return {"deleted": False}


class VolumeDeleteFlow:
    type = "volume_delete"
    params_model = VolumeParams

    def steps(self, task: Task) -> list[StepDef]:
        return [StepDef("delete", self._delete, retry=RECONNECT_RETRY)]

    async def _delete(self, ctx: StepContext[VolumeParams]) -> dict[str, Any]:
        v = await vc.volume(ctx, ctx.params.volume_id)
        pool = await vc.pool(ctx, v.pool)
        host = await vc.host_for(ctx, pool, v.node)
        return await _delete(ctx, "delete", host, vc.args(pool, v))

    def succeed(self, conn: Connection, ctx: StepContext[VolumeParams]) -> None:
        v = volumes.find_by_id(conn, ctx.params.volume_id)
        if v is None or v.task_id != ctx.task.id:
            return
        volumes.remove(conn, v.id)
        vc.event(conn, ctx, "volume.deleted", f"volume {v.name} deleted from pool {v.pool}", v)

    def fail(self, conn: Connection, ctx: StepContext[VolumeParams], error: str) -> None:
        # The file may still be there (or partly): keep the record, at rest, with the reason.
        vc.let_go(conn, ctx, ctx.params.volume_id, fault=error)


class VolumeGrowFlow:
    type = "volume_grow"
    params_model = VolumeGrowParams

    def steps(self, task: Task) -> list[StepDef]:
        return [StepDef("grow", self._grow, retry=RECONNECT_RETRY)]

    async def _grow(self, ctx: StepContext[VolumeGrowParams]) -> dict[str, Any]:
        v = await vc.volume(ctx, ctx.params.volume_id)
        pool = await vc.pool(ctx, v.pool)
        vm = None
        if v.vm_uuid is not None:
            uuid = v.vm_uuid
            vm = await ctx.read(lambda conn: vms.find_by_uuid(conn, uuid))
        if vm is not None and vm.node is not None and vm.observed_power is PowerState.RUNNING:
            # The running guest has it open: its hypervisor grows it (the guest sees it).
            args = vc.args(pool, v, size_mb=ctx.params.size_mb, device=v.device)
            return await ctx.command("grow", vm.node, CommandType.VOLUME_GROW, args,
                                     vm_uuid=vm.uuid, epoch=vm.epoch)  # fmt: skip
        host = await vc.host_for(ctx, pool, v.node, prefer=vm.node if vm else None)
        args = vc.args(pool, v, size_mb=ctx.params.size_mb)
        return await ctx.command("grow", host, CommandType.VOLUME_GROW, args)

    def succeed(self, conn: Connection, ctx: StepContext[VolumeGrowParams]) -> None:
        p = ctx.params
        v = vc.let_go(conn, ctx, p.volume_id, size_mb=p.size_mb)
        if v is not None:
            vc.event(
                conn,
                ctx,
                "volume.grown",
                f"volume {v.name} grown from {p.from_mb} to {p.size_mb} MiB",
                v,
            )

    def fail(self, conn: Connection, ctx: StepContext[VolumeGrowParams], error: str) -> None:
        vc.let_go(conn, ctx, ctx.params.volume_id, fault=error)


class VolumeAttachFlow:
    """The volume's attachment (VM and device) is written by the request, so the device is
    taken at once (unique per VM); a failed attach gives it back."""

    type = "volume_attach"
    params_model = VolumeAttachParams

    def steps(self, task: Task) -> list[StepDef]:
        return [StepDef("attach", self._attach, self._detach, retry=RECONNECT_RETRY)]

    async def _attach(self, ctx: StepContext[VolumeAttachParams]) -> dict[str, Any]:
        p = ctx.params
        v = await vc.volume(ctx, p.volume_id)
        pool = await vc.pool(ctx, v.pool)
        vm = await ctx.read(lambda conn: vms.get_by_uuid(conn, p.vm_uuid))
        assert vm.node is not None
        args = vc.args(pool, v, device=p.device, format=v.format)
        node = vm.node
        locks = await ctx.read(lambda conn: vm_disks.volume_lock_args(conn, v.id, node, vm.epoch))
        if locks is not None:  # taken by the VM's host if the VM runs
            args["locks"] = locks
        return await ctx.command("attach", vm.node, CommandType.VOLUME_ATTACH, args,
                                 vm_uuid=vm.uuid, epoch=vm.epoch)  # fmt: skip

    async def _detach(self, ctx: StepContext[VolumeAttachParams]) -> None:
        p = ctx.params
        vm = await ctx.read(lambda conn: vms.find_by_uuid(conn, p.vm_uuid))
        if vm is None or vm.node is None:
            return
        node, volume_id = vm.node, p.volume_id
        locks = await ctx.read(
            lambda conn: vm_disks.volume_lock_args(conn, volume_id, node, vm.epoch)
        )
        args: dict[str, Any] = {"device": p.device}
        if locks is not None:
            args["locks"] = locks
        await ctx.command("undo-attach", vm.node, CommandType.VOLUME_DETACH, args,
                          vm_uuid=vm.uuid, epoch=vm.epoch)  # fmt: skip

    def succeed(self, conn: Connection, ctx: StepContext[VolumeAttachParams]) -> None:
        v = vc.let_go(conn, ctx, ctx.params.volume_id, VolumeState.ATTACHED)
        if v is not None:
            vc.event(
                conn,
                ctx,
                "volume.attached",
                f"volume {v.name} attached to {v.vm_name} as {v.device}",
                v,
            )

    def fail(self, conn: Connection, ctx: StepContext[VolumeAttachParams], error: str) -> None:
        if _rolled_back(ctx):
            vc.let_go(conn, ctx, ctx.params.volume_id, VolumeState.READY, fault=error,
                      vm_uuid=None, device=None)  # fmt: skip
        else:  # whether the VM has it is unknown
            vc.let_go(conn, ctx, ctx.params.volume_id, VolumeState.ERROR, fault=error)


class VolumeDetachFlow:
    type = "volume_detach"
    params_model = VolumeParams

    def steps(self, task: Task) -> list[StepDef]:
        return [StepDef("detach", self._detach, retry=RECONNECT_RETRY)]

    async def _detach(self, ctx: StepContext[VolumeParams]) -> dict[str, Any]:
        v = await vc.volume(ctx, ctx.params.volume_id)
        if v.vm_uuid is None or v.device is None:
            return {"note": "not attached"}
        uuid = v.vm_uuid
        vm = await ctx.read(lambda conn: vms.find_by_uuid(conn, uuid))
        if vm is None or vm.node is None:
            return {"note": "its VM no longer exists"}
        node = vm.node
        locks = await ctx.read(lambda conn: vm_disks.volume_lock_args(conn, v.id, node, vm.epoch))
        args: dict[str, Any] = {"device": v.device}
        if locks is not None:  # given back by the VM's host
            args["locks"] = locks
        return await ctx.command("detach", vm.node, CommandType.VOLUME_DETACH, args,
                                 vm_uuid=vm.uuid, epoch=vm.epoch)  # fmt: skip

    def succeed(self, conn: Connection, ctx: StepContext[VolumeParams]) -> None:
        before = volumes.find_by_id(conn, ctx.params.volume_id)
        v = vc.let_go(conn, ctx, ctx.params.volume_id, VolumeState.READY,
                      vm_uuid=None, device=None)  # fmt: skip
        if v is not None and before is not None:
            vc.event(
                conn, ctx, "volume.detached", f"volume {v.name} detached from {before.vm_name}", v
            )

    def fail(self, conn: Connection, ctx: StepContext[VolumeParams], error: str) -> None:
        vc.let_go(conn, ctx, ctx.params.volume_id, VolumeState.ATTACHED, fault=error)


FLOWS: list[Flow] = [
    VolumeCreateFlow(),
    VolumeDeleteFlow(),
    VolumeGrowFlow(),
    VolumeAttachFlow(),
    VolumeDetachFlow(),
]
