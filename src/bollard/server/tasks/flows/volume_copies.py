"""Volume flows that copy data: copy (a new volume), migrate (the same volume moves to another
pool or host), and snapshots (take, delete, revert).

A copy or a migration writes a new file on the target while the source stays as it was; only
once the copy is complete does a migration switch the volume's record to the target (a
commit point, in one transaction), then remove the source file. Until that switch a failure
removes the partial target and leaves the volume where it was; after it, the source file is
what is left over, and it is removed (again) until that succeeds. So a volume is always ready
in exactly one pool, whatever fails.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from bollard.domain.errors import Conflict
from bollard.domain.models import Task
from bollard.domain.states import CommandType
from bollard.domain.storage import Pool, PoolType, VolumeState
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.flow import RECONNECT_RETRY, Flow, RetryPolicy, StepDef
from bollard.server.tasks.flows import volume_common as vc
from bollard.server.tasks.flows.migrate_progress import with_progress
from bollard.server.tasks.flows.volume_live import live_lock, live_move, undo_live_move
from bollard.server.tasks.flows.volumes import COPY_TIMEOUT, _delete, _rolled_back
from bollard.server.tasks.params import SnapshotParams, VolumeCopyParams
from bollard.store import nodes, vms, volumes

# Removing the source after a migration committed: tried until it works (the volume is
# already where it moved; what is left is a file to clean up).
CLEANUP_RETRY = RetryPolicy(attempts=10, delay=2.0, factor=2.0, max_delay=60.0)


async def _copy(ctx: StepContext[VolumeCopyParams], key: str) -> dict[str, Any]:
    """Copy the source volume to the target file on the target host (a job with progress)."""
    p = ctx.params
    source = await vc.volume(ctx, p.volume_id)
    if p.from_file:  # a migration: the source is where the volume was
        source_pool = await vc.pool(ctx, p.from_pool)
        source_node, file = p.from_node, p.from_file
    else:
        source_pool = await vc.pool(ctx, source.pool)
        source_node, file = source.node, source.file
    target_pool = await vc.pool(ctx, p.pool)
    return await copy_file(
        ctx,
        key,
        source=(source_pool, source_node, file),
        target=(target_pool, p.node, p.file),
        fmt=source.format,
    )


async def copy_file(
    ctx: StepContext[Any],
    key: str,
    *,
    source: tuple[Pool, str | None, str],
    target: tuple[Pool, str | None, str],
    fmt: str,
) -> dict[str, Any]:
    """Copy a volume file (pool, node, file) to another (a new file; a job with progress
    under `key`); the command's result with the hosts that did it."""
    source_pool, source_node, file = source
    target_pool, target_node, target_file = target
    # One host does the copy: the one that has both files if there is one (a host of a shared
    # pool copies into its own local pool, or out of it, on its own disks), else the source's
    # host streams to the target's.
    if target_pool.type is PoolType.LOCAL and source_pool.type is PoolType.SHARED:
        target_host = await vc.host_for(ctx, target_pool, target_node)
        source_host = await vc.host_for(ctx, source_pool, source_node, prefer=target_host)
    else:
        source_host = await vc.host_for(ctx, source_pool, source_node)
        target_host = await vc.host_for(ctx, target_pool, target_node, prefer=source_host)
    endpoint = await ctx.read(lambda conn: nodes.get(conn, target_host).migration_endpoint)
    args = {
        "pool": source_pool.ref(), "file": file, "target_pool": target_pool.ref(),
        "target_file": target_file, "target": target_host, "target_endpoint": endpoint,
        "format": fmt,
    }  # fmt: skip
    run = ctx.command(key, source_host, CommandType.VOLUME_COPY, args, timeout=COPY_TIMEOUT)
    result = await with_progress(ctx, key, run)
    return {**result, "source_host": source_host, "target_host": target_host}


async def _remove_target(ctx: StepContext[VolumeCopyParams]) -> None:
    """Undo of a copy: the target file (whole or partial) goes."""
    p = ctx.params
    target_pool = await vc.pool(ctx, p.pool)
    host = await vc.host_for(ctx, target_pool, p.node)
    args = {"pool": target_pool.ref(), "file": p.file}
    await _delete(ctx, "undo-copy", host, args)


class VolumeCopyFlow:
    type = "volume_copy"
    params_model = VolumeCopyParams

    def steps(self, task: Task) -> list[StepDef]:
        return [StepDef("copy", self._copy, _remove_target, retry=RECONNECT_RETRY)]

    async def _copy(self, ctx: StepContext[VolumeCopyParams]) -> dict[str, Any]:
        return await _copy(ctx, "copy")

    def succeed(self, conn: Connection, ctx: StepContext[VolumeCopyParams]) -> None:
        vc.let_go(conn, ctx, ctx.params.volume_id)
        v = vc.let_go(conn, ctx, ctx.params.target_id, VolumeState.READY)
        where = f"pool {ctx.params.pool}" + (f" on {ctx.params.node}" if ctx.params.node else "")
        vc.finish(conn, ctx, f"copied to {v.name if v else '?'} in {where}")
        if v is not None:
            vc.event(
                conn,
                ctx,
                "volume.copied",
                f"volume {ctx.params.volume} copied to {v.name} in pool {v.pool}",
                v,
            )

    def fail(self, conn: Connection, ctx: StepContext[VolumeCopyParams], error: str) -> None:
        vc.finish(conn, ctx)
        vc.let_go(conn, ctx, ctx.params.volume_id)
        target = volumes.find_by_id(conn, ctx.params.target_id)
        if target is None or target.task_id != ctx.task.id:
            return
        if _rolled_back(ctx):
            volumes.remove(conn, target.id)
            vc.event(
                conn,
                ctx,
                "volume.copy_failed",
                f"copy of volume {ctx.params.volume} failed: {error}",
                target,
            )
        else:
            vc.let_go(conn, ctx, target.id, VolumeState.ERROR, fault=error)


def _live(ctx: StepContext[VolumeCopyParams]) -> bool:
    return ctx.params.live


def _offline(ctx: StepContext[VolumeCopyParams]) -> bool:
    return not ctx.params.live


def _repoints(ctx: StepContext[VolumeCopyParams]) -> bool:
    """An attached volume moved offline (its VM is stopped): the VM's disk must be re-pointed;
    a live move's pivot did that already."""
    return not ctx.params.live and ctx.params.attached


class VolumeMigrateFlow:
    type = "volume_migrate"
    params_model = VolumeCopyParams

    def steps(self, task: Task) -> list[StepDef]:
        return [
            StepDef("copy", self._copy, _remove_target, when=_offline, retry=RECONNECT_RETRY),
            StepDef("live-move", live_move, undo_live_move, when=_live, retry=RECONNECT_RETRY),
            StepDef("switch", tx=self._switch, commit_point=True),
            # A stopped VM's disk: its definition names the new file from now on.
            StepDef("repoint", self._repoint, when=_repoints, retry=RECONNECT_RETRY),
            # A running VM's disk moved live: the VM's host locks it if it is now shared.
            StepDef("lock", live_lock, when=_live, retry=RECONNECT_RETRY),
            StepDef("remove-source", self._remove_source, retry=CLEANUP_RETRY),
        ]

    async def _copy(self, ctx: StepContext[VolumeCopyParams]) -> dict[str, Any]:
        return await _copy(ctx, "copy")

    def _switch(self, conn: Connection, ctx: StepContext[VolumeCopyParams]) -> dict[str, Any]:
        """The copy is complete: the volume is in its new place from now on."""
        p = ctx.params
        v = volumes.get_by_id(conn, p.volume_id)
        if v.task_id != ctx.task.id:
            raise Conflict(f"volume {v.name} is no longer held by this migration")
        volumes.set_fields(conn, v.id, ctx.clock.now(), pool=p.pool, node=p.node, file=p.file)
        where = f"{p.pool}" + (f" on {p.node}" if p.node else "")
        vc.event(
            conn,
            ctx,
            "volume.moved",
            f"volume {v.name} now in pool {where}",
            v,
            from_pool=p.from_pool,
            from_node=p.from_node,
        )
        return {"pool": p.pool, "node": p.node, "file": p.file}

    async def _repoint(self, ctx: StepContext[VolumeCopyParams]) -> dict[str, Any]:
        p = ctx.params
        v = await vc.volume(ctx, p.volume_id)
        if v.vm_uuid is None or v.device is None:
            return {"note": "not attached"}
        uuid = v.vm_uuid
        vm = await ctx.read(lambda conn: vms.get_by_uuid(conn, uuid))
        if vm.node is None:
            return {"note": "its VM is on no node"}
        pool = await vc.pool(ctx, p.pool)
        await ctx.command("detach-old", vm.node, CommandType.VOLUME_DETACH,
                          {"device": v.device}, vm_uuid=vm.uuid, epoch=vm.epoch)  # fmt: skip
        args = {"pool": pool.ref(), "file": p.file, "device": v.device, "format": v.format}
        return await ctx.command("attach-new", vm.node, CommandType.VOLUME_ATTACH, args,
                                 vm_uuid=vm.uuid, epoch=vm.epoch)  # fmt: skip

    async def _remove_source(self, ctx: StepContext[VolumeCopyParams]) -> dict[str, Any]:
        p = ctx.params
        pool = await vc.pool(ctx, p.from_pool)
        host = await vc.host_for(ctx, pool, p.from_node)
        return await _delete(ctx, "remove-source", host, {"pool": pool.ref(), "file": p.from_file})

    def succeed(self, conn: Connection, ctx: StepContext[VolumeCopyParams]) -> None:
        p = ctx.params
        vc.let_go(conn, ctx, p.volume_id)
        where = f"pool {p.pool}" + (f" on {p.node}" if p.node else "")
        how = " while its VM ran (block copy)" if p.live else ""
        vc.finish(conn, ctx, f"moved from pool {p.from_pool} to {where}{how}")

    def fail(self, conn: Connection, ctx: StepContext[VolumeCopyParams], error: str) -> None:
        vc.finish(conn, ctx)
        switched = any(s.name == "switch" and s.state == "done" for s in ctx.task.steps)
        if switched or _rolled_back(ctx):
            # Moved (a source file may be left over: the storage reconciler shows it), or
            # not moved and nothing left on the target: either way the volume is fine.
            vc.let_go(conn, ctx, ctx.params.volume_id, fault=None if switched else error)
        else:
            vc.let_go(conn, ctx, ctx.params.volume_id, VolumeState.ERROR, fault=error)


class SnapshotFlow:
    """Take, delete or revert to a snapshot: one command on the volume's host."""

    params_model = SnapshotParams

    def __init__(self, type: str, command: CommandType) -> None:
        self.type = type
        self.command = command

    def steps(self, task: Task) -> list[StepDef]:
        return [StepDef(self.type.removeprefix("snapshot_"), self._do, retry=RECONNECT_RETRY)]

    async def _do(self, ctx: StepContext[SnapshotParams]) -> dict[str, Any]:
        v = await vc.volume(ctx, ctx.params.volume_id)
        pool = await vc.pool(ctx, v.pool)
        host = await vc.host_for(ctx, pool, v.node, prefer=await vc.vm_node(ctx, v))
        args = vc.args(pool, v, name=ctx.params.snapshot)
        return await ctx.command(self.command.value, host, self.command, args)

    def succeed(self, conn: Connection, ctx: StepContext[SnapshotParams]) -> None:
        p = ctx.params
        v = vc.let_go(conn, ctx, p.volume_id)
        if v is None:
            return
        now = ctx.clock.now()
        if self.command is CommandType.SNAPSHOT_CREATE:
            if volumes.find_snapshot(conn, v.id, p.snapshot) is None:
                volumes.add_snapshot(conn, v.id, p.snapshot, v.size_mb, now)
            vc.event(
                conn,
                ctx,
                "volume.snapshot_created",
                f"snapshot {p.snapshot} of volume {v.name} taken",
                v,
                snapshot=p.snapshot,
            )
        elif self.command is CommandType.SNAPSHOT_DELETE:
            volumes.remove_snapshot(conn, v.id, p.snapshot)
            vc.event(
                conn,
                ctx,
                "volume.snapshot_deleted",
                f"snapshot {p.snapshot} of volume {v.name} deleted",
                v,
                snapshot=p.snapshot,
            )
        else:
            # The volume's size is the snapshot's again (as qcow2's revert makes it).
            reverted = (ctx.results.get(self.type.removeprefix("snapshot_")) or {}).get("volume")
            found = volumes.find_snapshot(conn, v.id, p.snapshot)
            size = int(reverted["size_mb"]) if reverted else found.size_mb if found else None
            if size is not None and size != v.size_mb:
                volumes.set_fields(conn, v.id, now, size_mb=size)
            vc.event(
                conn,
                ctx,
                "volume.reverted",
                f"volume {v.name} reverted to snapshot {p.snapshot}",
                v,
                snapshot=p.snapshot,
            )

    def fail(self, conn: Connection, ctx: StepContext[SnapshotParams], error: str) -> None:
        vc.let_go(conn, ctx, ctx.params.volume_id, fault=error)


FLOWS: list[Flow] = [
    VolumeCopyFlow(),
    VolumeMigrateFlow(),
    SnapshotFlow("snapshot_create", CommandType.SNAPSHOT_CREATE),
    SnapshotFlow("snapshot_delete", CommandType.SNAPSHOT_DELETE),
    SnapshotFlow("snapshot_revert", CommandType.SNAPSHOT_REVERT),
]
