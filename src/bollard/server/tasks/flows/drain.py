"""Draining a node: `flush` moves every VM away (migrations, a few at a time); VMs that cannot
move are shut down with autostart, as an explicit, logged decision; the node ends `flushed`
and receives no new VMs; a flush started by `bollard node maintenance NODE on` (the node's
`maintenance` flag set) leaves the VMs HA leaves alone (ignored, error) where they are and ends
`maintenance`. `unflush` brings back the VMs migrated away from it, starts the VMs
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
from bollard.domain.operations import SHUTDOWN, START
from bollard.domain.states import SchedulingState, VmState
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.flow import StepDef
from bollard.server.tasks.params import DrainParams
from bollard.store import events, nodes, tasks, vms

PARALLEL = 2  # VMs moved at the same time
VM_TASK_WAIT = 900.0  # the longest one VM's migration may take here
BUSY_WAIT = 60.0
LOOK_AGAIN = 0.5  # seconds before looking again at a VM held by a task this server does not run

Ctx = StepContext[DrainParams]


def _node(ctx: Ctx) -> str:
    assert ctx.task.node is not None
    return ctx.task.node


async def _stopped(ctx: Ctx) -> bool:
    """True when this drain must stop: cancelled, or the node's state was changed by the
    opposite operation."""
    expected = SchedulingState.FLUSHING if ctx.task.type == "flush" else SchedulingState.READY

    def check(conn: Connection) -> bool:
        task = tasks.get(conn, ctx.task.id)
        state = nodes.get(conn, _node(ctx)).scheduling
        return task.cancel_requested or state is not expected

    return await ctx.read(check)


async def _each(ctx: Ctx, items: list[Vm], act: Callable[[Vm], Awaitable[str]]) -> dict[str, Any]:
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
            await ctx.merge_result({"progress": counts})

    await asyncio.gather(*(one(vm) for vm in items))
    if stopped:
        raise StepFailed(f"stopped after {counts['done']} of {counts['total']} VMs")
    return counts


async def _follow(ctx: Ctx, task_id: str) -> str:
    task = await ctx.wait_task(task_id, VM_TASK_WAIT)
    return f"{task.type} {task.state}" + (f": {task.error}" if task.error else "")


async def _free(ctx: Ctx, vm: Vm) -> Vm:
    """The VM once no task holds it (tasks begun before the drain end first)."""
    deadline = ctx.deadline(BUSY_WAIT)
    while True:
        current = await ctx.read(lambda conn: vms.find_by_uuid(conn, vm.uuid))
        if current is None or current.task_id is None:
            return current or vm
        if deadline.passed:
            raise StepFailed(f"{vm.name} stayed busy with task {current.task_id}")
        holder = await ctx.wait_task(current.task_id, deadline.remaining())
        if not holder.state.ended:  # not run by this server: nothing to be woken by
            await ctx.pause(LOOK_AGAIN)


class FlushFlow:
    type = "flush"
    params_model = DrainParams

    def steps(self, task: Task) -> list[StepDef]:
        return [StepDef("evacuate", self._evacuate), StepDef("flushed", tx=self._flushed)]

    async def _evacuate(self, ctx: Ctx) -> dict[str, Any]:
        node = _node(ctx)
        on_node, maintenance = await ctx.read(
            lambda conn: (_vms_on(conn, node), nodes.get(conn, node).maintenance)
        )

        async def move(vm: Vm) -> str:
            if maintenance and not vm.ha_managed:
                return f"stays (HA {vm.ha_state.value})"  # HA leaves it alone, maintenance too
            vm = await _free(ctx, vm)
            if vm.node != node:
                return "already elsewhere"
            try:
                _, task = await ctx.requests.migrate(vm.name, mode="migrate")
            except InsufficientCapacity as exc:  # no node can take it (scheduling.place)
                return await self._park(ctx, vm, exc.message)
            except BollardError as exc:
                return f"not moved: {exc.message}"
            return await _follow(ctx, task.id)

        return await _each(ctx, on_node, move)

    async def _park(self, ctx: Ctx, vm: Vm, why: str) -> str:
        """No node can take the VM: shut it down with autostart (an explicit decision)."""

        def mark(conn: Connection) -> None:
            now = ctx.clock.now()
            vms.set_autostart(conn, vm.uuid, True, now)
            events.add(
                conn, "vm.parked",
                f"{vm.name} cannot leave {_node(ctx)} ({why}): shut down with autostart, "
                "it starts again on unflush",
                now, vm_uuid=vm.uuid, vm_name=vm.name, node=_node(ctx), task_id=ctx.task.id,
            )  # fmt: skip

        await ctx.write(mark)
        if vm.vm_state is not VmState.ACTIVE:
            return "kept (stopped), autostart"
        _, task = await ctx.requests.power(vm.name, SHUTDOWN)
        return "shut down, autostart: " + await _follow(ctx, task.id)

    def _flushed(self, conn: Connection, ctx: Ctx) -> dict[str, Any]:
        """The node ends flushed; in maintenance (`bollard node maintenance NODE on`) when
        that is why it was drained."""
        now = ctx.clock.now()
        maintenance = nodes.get(conn, _node(ctx)).maintenance
        end = SchedulingState.MAINTENANCE if maintenance else SchedulingState.FLUSHED
        if not nodes.set_scheduling(conn, _node(ctx), end, now,
                                    expect=SchedulingState.FLUSHING):  # fmt: skip
            raise StepFailed(f"{_node(ctx)} is no longer flushing")
        if maintenance:
            ctx.event(conn, "node.maintenance",
                      f"node {_node(ctx)} is in maintenance: drained, gets no VMs, is not "
                      "fenced", on=True, drained=True)  # fmt: skip
        else:
            ctx.event(
                conn, "node.flushed", f"node {_node(ctx)} is flushed: it runs no VMs and gets none"
            )
        return {"ends": end.value}

    def succeed(self, conn: Connection, ctx: Ctx) -> None:
        return None

    def fail(self, conn: Connection, ctx: Ctx, error: str) -> None:
        ctx.event(conn, "node.flush_stopped", f"flush of {_node(ctx)} ended early: {error}")


class UnflushFlow:
    type = "unflush"
    params_model = DrainParams

    def steps(self, task: Task) -> list[StepDef]:
        # Ready first: the VMs coming back need a node that takes VMs.
        return [StepDef("ready", tx=self._ready), StepDef("return", self._return)]

    async def _return(self, ctx: Ctx) -> dict[str, Any]:
        node = _node(ctx)
        await self._let_flush_end(ctx)
        away, parked = await ctx.read(lambda conn: _to_return(conn, node))

        async def bring_back(vm: Vm) -> str:
            vm = await _free(ctx, vm)
            try:
                if vm.node == node:  # parked here by the flush, or left by an HA deferral
                    uuid = vm.uuid
                    await ctx.write(
                        lambda conn: vms.set_autostart(conn, uuid, False, ctx.clock.now())
                    )
                    if vm.vm_state is not VmState.STOPPED:
                        return "left as it is"
                    _, task = await ctx.requests.power(vm.name, START)
                else:
                    _, task = await ctx.requests.migrate(vm.name, mode="unmigrate")
            except BollardError as exc:
                return f"not returned: {exc.message}"
            return await _follow(ctx, task.id)

        return await _each(ctx, away + parked, bring_back)

    async def _let_flush_end(self, ctx: Ctx) -> None:
        """A flush of this node still running was asked to stop; wait for it to end."""
        node = _node(ctx)
        running = await ctx.read(lambda conn: _open_drains(conn, node, "flush"))
        for task_id in running:
            await ctx.wait_task(task_id, VM_TASK_WAIT)

    def _ready(self, conn: Connection, ctx: Ctx) -> dict[str, Any]:
        now = ctx.clock.now()
        if not nodes.set_scheduling(conn, _node(ctx), SchedulingState.READY, now,
                                    expect=SchedulingState.UNFLUSHING):  # fmt: skip
            raise StepFailed(f"{_node(ctx)} is no longer unflushing")
        ctx.event(conn, "node.ready", f"node {_node(ctx)} is ready again")
        return {}

    def succeed(self, conn: Connection, ctx: Ctx) -> None:
        return None

    def fail(self, conn: Connection, ctx: Ctx, error: str) -> None:
        ctx.event(conn, "node.unflush_stopped", f"unflush of {_node(ctx)} ended early: {error}")


def _vms_on(conn: Connection, node: str) -> list[Vm]:
    return sorted(vms.on_node(conn, node), key=lambda v: (-v.ha_priority, v.name))


def _to_return(conn: Connection, node: str) -> tuple[list[Vm], list[Vm]]:
    everything = vms.all_vms(conn)
    away = [v for v in everything if v.previous_node == node and v.node != node]
    parked = [v for v in everything if v.node == node and v.autostart]
    return away, parked


def _open_drains(conn: Connection, node: str, kind: str) -> list[str]:
    return [
        t.id
        for t in tasks.unfinished(conn, include_rolling_back=True)
        if t.type == kind and t.node == node
    ]
