"""Pieces shared by the resize flows (resize.py, resize_end.py): the disks a DEFINE carries,
swapping a VM's disks on its host, deleting volume files, and whether a node is gone for
good (fenced or deleted: nothing of it can be asked)."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Connection

from bollard.domain.errors import NodeUnavailable, NotFound
from bollard.domain.migrations import Migration, MigrationStatus
from bollard.domain.models import nic_args
from bollard.domain.states import CommandType, NodeHealth
from bollard.domain.storage import Volume
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.flows import volume_common as vc
from bollard.server.tasks.flows.volumes import _delete
from bollard.store import migrations_log, nodes, pools, volumes


async def gone(ctx: StepContext[Any], node: str) -> bool:
    """Whether `node` is fenced or deleted: it is off (or forgotten), so what is left of the
    VM there is not asked for any more (a host that comes back destroys what it no longer
    owns; the state reconciler finds its files)."""

    def look(conn: Connection) -> bool:
        found = nodes.find_many(conn, {node})
        return not found or found[0].health is NodeHealth.FENCED

    return await ctx.read(look)


async def reachable(ctx: StepContext[Any], node: str) -> bool:
    """True when `node` is connected; False when it is gone; NodeUnavailable (a temporary
    error: the step waits for it) otherwise."""
    if ctx.connected(node):
        return True
    if await gone(ctx, node):
        return False
    raise NodeUnavailable(f"node {node} is not connected")


async def define(
    ctx: StepContext[Any],
    key: str,
    node: str,
    *,
    vcpus: int,
    memory_mb: int,
    disks: list[tuple[str, str]],
    epoch: int,
) -> dict[str, Any]:
    """DEFINE the VM on `node` at this size, with `disks` ((device, volume id) pairs) and its
    NICs, at `epoch`."""
    vm = await ctx.vm()

    def args(conn: Connection) -> list[dict[str, Any]]:
        found = {v.id: v for v in volumes.of_ids(conn, [vid for _, vid in disks])}
        by_pool = pools.by_name(conn, {v.pool for v in found.values()})
        return [
            {"size_mb": found[vid].size_mb, "device": device,
             "pool": by_pool[found[vid].pool].ref(), "file": found[vid].file,
             "format": found[vid].format, "create": False}
            for device, vid in disks
        ]  # fmt: skip

    define_disks = await ctx.read(args)
    body = {
        "name": vm.name, "vcpus": vcpus, "memory_mb": memory_mb, "disks": define_disks,
        "nics": nic_args(vm.nics),
    }  # fmt: skip
    return await ctx.command(key, node, CommandType.DEFINE, body, vm_uuid=vm.uuid, epoch=epoch)


async def swap_disks(
    ctx: StepContext[Any], prefix: str, node: str, disks: list[tuple[str, str]], epoch: int
) -> None:
    """On a host that keeps the VM (a resize on its own node): each device of `disks`
    ((device, volume id) pairs) is detached and the volume attached in its place (the VM is
    off). Keyed per device, so a resumed step goes on where it stopped."""
    uuid = ctx.task.vm_uuid or ""
    for device, vid in disks:
        v = await vc.volume(ctx, vid)
        pool = await vc.pool(ctx, v.pool)
        await ctx.command(f"{prefix}detach-{device}", node, CommandType.VOLUME_DETACH,
                          {"device": device}, vm_uuid=uuid, epoch=epoch)  # fmt: skip
        args = {"pool": pool.ref(), "file": v.file, "device": device, "format": v.format}
        await ctx.command(f"{prefix}attach-{device}", node, CommandType.VOLUME_ATTACH, args,
                          vm_uuid=uuid, epoch=epoch)  # fmt: skip


async def delete_files(ctx: StepContext[Any], prefix: str, ids: list[str]) -> list[str]:
    """Delete the files of volumes `ids` (absent is fine); the ids whose file is gone. A
    volume of a local pool on a node that is gone is left to the reconciler (skipped)."""
    done = []
    for vid in ids:
        v = await ctx.read(functools.partial(volumes.find_by_id, id=vid))
        if v is None:
            done.append(vid)
            continue
        pool = await vc.pool(ctx, v.pool)
        if v.node is not None and not await reachable(ctx, v.node):
            await ctx.note("resize.cleanup",
                           f"volume {v.name}: its host {v.node} is gone; its file is left to "
                           "the state reconciler", node=v.node)  # fmt: skip
            done.append(vid)
            continue
        try:
            host = await vc.host_for(ctx, pool, v.node)
        except NotFound:
            done.append(vid)
            continue
        await _delete(ctx, f"{prefix}{v.name}", host, vc.args(pool, v))
        done.append(vid)
    return done


def set_migration(
    conn: Connection,
    ctx: StepContext[Any],
    migration_id: str,
    status: MigrationStatus,
    *,
    error: str | None = None,
    **values: Any,
) -> Migration | None:
    """Move the resize's record to `status` (nothing if it is there already)."""
    current = migrations_log.find(conn, migration_id)
    if current is None or current.status is status:
        return current
    return migrations_log.set_status(
        conn, migration_id, status, ctx.clock.now(), error=error, **values
    )


def kept(conn: Connection, migration_id: str, vm_uuid: str) -> tuple[list[Volume], list[Volume]]:
    """The resize's volumes: (the copies now attached to the VM, the originals it keeps)."""
    found = volumes.of_migration(conn, migration_id)
    return (
        [v for v in found if v.vm_uuid == vm_uuid],
        [v for v in found if v.vm_uuid != vm_uuid],
    )


def forget(conn: Connection, ctx: StepContext[Any], ids: list[str], why: str) -> None:
    """Remove the records of volumes whose files are gone (`ids`), each with an event."""
    for vid in ids:
        v = volumes.find_by_id(conn, vid)
        if v is not None:
            volumes.remove(conn, vid)
            vc.event(conn, ctx, "volume.deleted", f"volume {v.name} deleted ({why})", v)
