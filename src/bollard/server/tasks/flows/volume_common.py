"""Pieces shared by the volume flows: which host acts on a volume, and how a task lets its
volumes go."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from bollard.domain.errors import NodeUnavailable, NotFound
from bollard.domain.storage import Pool, PoolType, Volume, VolumeState
from bollard.server.tasks.context import StepContext
from bollard.store import nodes, pools, tasks, vms, volumes


async def volume(ctx: StepContext[Any], volume_id: str) -> Volume:
    found = await ctx.read(lambda conn: volumes.find_by_id(conn, volume_id))
    if found is None:
        raise NotFound(f"volume {volume_id} no longer exists")
    return found


async def pool(ctx: StepContext[Any], name: str) -> Pool:
    return await ctx.read(lambda conn: pools.get(conn, name))


async def host_for(
    ctx: StepContext[Any], pool: Pool, node: str | None, prefer: str | None = None
) -> str:
    """The host that acts on a volume of `pool`: its own host (`node`) in a local pool; in a
    shared pool `prefer` (the VM it is attached to runs there) if it is connected, else the
    first connected host of the pool. NodeUnavailable when none is (a temporary error)."""
    if pool.type is PoolType.LOCAL:
        if node is None:
            raise NotFound(f"the volume in local pool {pool.name} has no host")
        return node
    if prefer is not None and pool.sees(prefer) and ctx.connected(prefer):
        return prefer
    members = await ctx.read(lambda conn: [n.name for n in nodes.list_all(conn)])
    for name in sorted(members):
        if pool.sees(name) and ctx.connected(name):
            return name
    raise NodeUnavailable(f"no host of shared pool {pool.name} is connected")


async def vm_node(ctx: StepContext[Any], v: Volume) -> str | None:
    """The node of the VM the volume is attached to (None: not attached)."""
    if v.vm_uuid is None:
        return None
    vm_uuid = v.vm_uuid
    vm = await ctx.read(lambda conn: vms.find_by_uuid(conn, vm_uuid))
    return vm.node if vm is not None else None


def args(p: Pool, v: Volume, **more: Any) -> dict[str, Any]:
    """A storage command's arguments about volume `v` of pool `p`."""
    return {"pool": p.ref(), "file": v.file, **more}


def let_go(
    conn: Connection,
    ctx: StepContext[Any],
    volume_id: str,
    state: VolumeState | None = None,
    fault: str | None = None,
    **values: Any,
) -> Volume | None:
    """Release the volume from this task, in `state` (None: at rest: attached if it has a
    VM, else ready), with `fault` (None clears it) and other `values`. Nothing if the task no
    longer holds it (a resumed task's end runs again)."""
    v = volumes.find_by_id(conn, volume_id)
    if v is None or v.task_id != ctx.task.id:
        return v
    now = ctx.clock.now()
    if values:
        volumes.set_fields(conn, volume_id, now, **values)
        v = volumes.get_by_id(conn, volume_id)
    target = state if state is not None else v.rest_state
    volumes.release(conn, volume_id, ctx.task.id, now, target, fault=fault)
    return volumes.find_by_id(conn, volume_id)


def event(
    conn: Connection, ctx: StepContext[Any], kind: str, message: str, v: Volume, **data: Any
) -> None:
    """A `volume.*` event naming the volume (and its pool) in its data."""
    ctx.event(conn, kind, message, volume=v.name, pool=v.pool, **data)


def finish(conn: Connection, ctx: StepContext[Any], summary: str | None = None) -> None:
    """The task's result once it has ended (in the transaction that ends it): no copy
    progress any more, and a one-line `summary` of what it did (if it succeeded)."""
    task = tasks.get(conn, ctx.task.id)
    result = {k: v for k, v in task.result.items() if k != "progress"}
    if summary is not None:
        result["summary"] = summary
    if result != task.result:
        tasks.set_result(conn, ctx.task.id, result)
