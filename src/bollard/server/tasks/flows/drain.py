"""Draining a node: `flush` moves every VM away (migrations, a few at a time); VMs that cannot
move are shut down with autostart, as an explicit, logged decision; the node ends `flushed`
and receives no new VMs. `unflush` brings back the VMs migrated away from it, starts the VMs
marked autostart, and makes it `ready`. Each cancels the other cleanly: a flush stops before
its next VM when an unflush starts (migrations in flight finish or roll back), and vice versa.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Connection

from bollard.domain.errors import BollardError, InsufficientCapacity, StepFailed
from bollard.domain.models import Task, Vm
from bollard.domain.states import SchedulingState, VmState
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.engine import StepDef
from bollard.server.tasks.vm_ops import SHUTDOWN, START
from bollard.store import events, nodes, tasks, vms

PARALLEL = 2  # VMs moved at the same time
VM_TASK_WAIT = 900.0  # the longest one VM's migration may take here
BUSY_WAIT = 60.0


def _node(ctx: StepContext) -> str:
    assert ctx.task.node is not None
    return ctx.task.node


async def _stopped(ctx: StepContext) -> bool:
    """True when this drain must stop: cancelled, or the node's state was changed by the
    opposite operation."""
    expected = SchedulingState.FLUSHING if ctx.task.type == "flush" else SchedulingState.READY

    def check() -> bool:
        with ctx.rt.db.read() as conn:
            task = tasks.get(conn, ctx.task.id)
            state = nodes.get(conn, _node(ctx)).scheduling
        return task.cancel_requested or state is not expected

    return await ctx.db(check)


async def _progress(ctx: StepContext, counts: dict[str, Any]) -> None:
    def tx() -> None:
        with ctx.rt.db.write() as conn:
            task = tasks.get(conn, ctx.task.id)
            tasks.set_result(conn, ctx.task.id, {**task.result, "progress": counts})

    await ctx.db(tx)
    ctx.rt.event_bus.touch()


async def _each(
    ctx: StepContext, items: list[Vm], act: Callable[[Vm], Awaitable[str]]
) -> dict[str, Any]:
    """Apply `act` to the VMs, PARALLEL at a time, stopping early if the drain is stopped."""
    counts: dict[str, Any] = {"total": len(items), "done": 0, "outcomes": {}}
    limit = asyncio.Semaphore(PARALLEL)
    stopped = False

    async def one(vm: Vm) -> None:
        nonlocal stopped
        async with limit:
            if stopped or await _stopped(ctx):
                stopped = True
                return
            outcome = await act(vm)
            counts["done"] += 1
            counts["outcomes"][vm.name] = outcome
            await _progress(ctx, counts)

    await asyncio.gather(*(one(vm) for vm in items))
    if stopped:
        raise StepFailed(f"stopped after {counts['done']} of {counts['total']} VMs")
    return counts


async def _follow(ctx: StepContext, task_id: str) -> str:
    task = await ctx.rt.runner.wait(task_id, VM_TASK_WAIT)
    return f"{task.type} {task.state}" + (f": {task.error}" if task.error else "")


async def _free(ctx: StepContext, vm: Vm) -> Vm:
    """The VM once no task holds it (tasks begun before the drain end first)."""
    deadline = asyncio.get_running_loop().time() + BUSY_WAIT
    while True:
        current = await ctx.db(_reload, ctx, vm.uuid)
        if current is None or current.task_id is None:
            return current or vm
        if asyncio.get_running_loop().time() > deadline:
            raise StepFailed(f"{vm.name} stayed busy with task {current.task_id}")
        await ctx.rt.runner.wait(current.task_id, BUSY_WAIT)


def _reload(ctx: StepContext, uuid: str) -> Vm | None:
    with ctx.rt.db.read() as conn:
        return vms.find_by_uuid(conn, uuid)


class FlushFlow:
    type = "flush"

    def steps(self, task: Task) -> list[StepDef]:
        return [StepDef("evacuate", self._evacuate), StepDef("flushed", tx=self._flushed)]

    async def _evacuate(self, ctx: StepContext) -> dict[str, Any]:
        node = _node(ctx)
        on_node = await ctx.db(_vms_on, ctx, node)

        async def move(vm: Vm) -> str:
            vm = await _free(ctx, vm)
            if vm.node != node:
                return "already elsewhere"
            try:
                _, task = await ctx.rt.migrate_ops.request(vm.name, mode="migrate")
            except InsufficientCapacity as exc:
                return await self._park(ctx, vm, exc.message)
            except BollardError as exc:
                if exc.http_status == 409 and "node" in exc.message:
                    return await self._park(ctx, vm, exc.message)
                return f"not moved: {exc.message}"
            return await _follow(ctx, task.id)

        return await _each(ctx, on_node, move)

    async def _park(self, ctx: StepContext, vm: Vm, why: str) -> str:
        """No node can take the VM: shut it down with autostart (an explicit decision)."""

        def mark() -> None:
            now = ctx.rt.clock.now()
            with ctx.rt.db.write() as conn:
                vms.set_autostart(conn, vm.uuid, True, now)
                events.add(
                    conn, "vm.parked",
                    f"{vm.name} cannot leave {_node(ctx)} ({why}): shut down with autostart, "
                    "it starts again on unflush",
                    now, vm_uuid=vm.uuid, vm_name=vm.name, node=_node(ctx), task_id=ctx.task.id,
                )  # fmt: skip

        await ctx.db(mark)
        if vm.vm_state is not VmState.ACTIVE:
            return "kept (stopped), autostart"
        _, task = await ctx.rt.vm_ops.power(vm.name, SHUTDOWN)
        return "shut down, autostart: " + await _follow(ctx, task.id)

    def _flushed(self, conn: Connection, ctx: StepContext) -> dict[str, Any]:
        now = ctx.rt.clock.now()
        if not nodes.set_scheduling(conn, _node(ctx), SchedulingState.FLUSHED, now,
                                    expect=SchedulingState.FLUSHING):  # fmt: skip
            raise StepFailed(f"{_node(ctx)} is no longer flushing")
        ctx.event(
            conn, "node.flushed", f"node {_node(ctx)} is flushed: it runs no VMs and gets none"
        )
        return {}

    def succeed(self, conn: Connection, ctx: StepContext) -> None:
        return None

    def fail(self, conn: Connection, ctx: StepContext, error: str) -> None:
        ctx.event(conn, "node.flush_stopped", f"flush of {_node(ctx)} ended early: {error}")


class UnflushFlow:
    type = "unflush"

    def steps(self, task: Task) -> list[StepDef]:
        # Ready first: the VMs coming back need a node that takes VMs.
        return [StepDef("ready", tx=self._ready), StepDef("return", self._return)]

    async def _return(self, ctx: StepContext) -> dict[str, Any]:
        node = _node(ctx)
        await self._let_flush_end(ctx)
        away, parked = await ctx.db(_to_return, ctx, node)

        async def bring_back(vm: Vm) -> str:
            vm = await _free(ctx, vm)
            try:
                if vm.node == node:  # parked here by the flush, or left by an HA deferral

                    def clear() -> None:
                        with ctx.rt.db.write() as conn:
                            vms.set_autostart(conn, vm.uuid, False, ctx.rt.clock.now())

                    await ctx.db(clear)
                    if vm.vm_state is not VmState.STOPPED:
                        return "left as it is"
                    _, task = await ctx.rt.vm_ops.power(vm.name, START)
                else:
                    _, task = await ctx.rt.migrate_ops.request(vm.name, mode="unmigrate")
            except BollardError as exc:
                return f"not returned: {exc.message}"
            return await _follow(ctx, task.id)

        return await _each(ctx, away + parked, bring_back)

    async def _let_flush_end(self, ctx: StepContext) -> None:
        """A flush of this node still running was asked to stop; wait for it to end."""
        running = await ctx.db(_open_drains, ctx, _node(ctx), "flush")
        for task_id in running:
            await ctx.rt.runner.wait(task_id, VM_TASK_WAIT)

    def _ready(self, conn: Connection, ctx: StepContext) -> dict[str, Any]:
        now = ctx.rt.clock.now()
        if not nodes.set_scheduling(conn, _node(ctx), SchedulingState.READY, now,
                                    expect=SchedulingState.UNFLUSHING):  # fmt: skip
            raise StepFailed(f"{_node(ctx)} is no longer unflushing")
        ctx.event(conn, "node.ready", f"node {_node(ctx)} is ready again")
        return {}

    def succeed(self, conn: Connection, ctx: StepContext) -> None:
        return None

    def fail(self, conn: Connection, ctx: StepContext, error: str) -> None:
        ctx.event(conn, "node.unflush_stopped", f"unflush of {_node(ctx)} ended early: {error}")


def _vms_on(ctx: StepContext, node: str) -> list[Vm]:
    with ctx.rt.db.read() as conn:
        return sorted(vms.on_node(conn, node), key=lambda v: (-v.ha_priority, v.name))


def _to_return(ctx: StepContext, node: str) -> tuple[list[Vm], list[Vm]]:
    with ctx.rt.db.read() as conn:
        everything = vms.all_vms(conn)
    away = [v for v in everything if v.previous_node == node and v.node != node]
    parked = [v for v in everything if v.node == node and v.autostart]
    return away, parked


def _open_drains(ctx: StepContext, node: str, kind: str) -> list[str]:
    with ctx.rt.db.read() as conn:
        return [
            t.id
            for t in tasks.unfinished(conn, include_rolling_back=True)
            if t.type == kind and t.node == node
        ]
