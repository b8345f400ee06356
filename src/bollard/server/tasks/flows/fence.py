"""Fencing a dead node and recovering its HA VMs.

fence:   power_off → verify (the power status must read off) → fenced → recover
recover: (after `bollard node confirm-down`) recover only

`recover` abandons the commands still open on the node (it is off: they cannot complete),
waits a little for the tasks that held its VMs to end, marks its non-HA VMs stopped, and
starts an `ha_restart` task for each HA VM, highest priority first.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from bollard.domain.errors import BollardError, StepFailed
from bollard.domain.ids import new_id
from bollard.domain.models import Task, Vm
from bollard.domain.states import DesiredPower, NodeHealth, PowerState, TaskState, VmState
from bollard.power import PowerStatus
from bollard.server.health.power import driver_for
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.engine import StepDef
from bollard.store import events, nodes, vms

VERIFY_EVERY = 0.5  # seconds between two power-status reads while confirming a fence
BUSY_WAIT = 30.0  # seconds to let tasks holding the node's VMs end before recovery


def _node(ctx: StepContext) -> str:
    assert ctx.task.node is not None
    return ctx.task.node


async def _timeout(ctx: StepContext) -> float:
    return float(await ctx.db(ctx.rt.settings.get, "fencing.timeout"))


class FenceFlow:
    type = "fence"

    def steps(self, task: Task) -> list[StepDef]:
        return [
            StepDef("power_off", self._power_off),
            StepDef("verify", self._verify),
            StepDef("fenced", tx=self._fenced),
            StepDef("recover", recover),
        ]

    async def _power_off(self, ctx: StepContext) -> dict[str, Any]:
        driver = await ctx.db(driver_for, ctx.rt, _node(ctx))
        try:
            await driver.power_off(await _timeout(ctx))
        except BollardError as exc:
            raise StepFailed(f"power off of {_node(ctx)} failed: {exc.message}") from exc
        return {"driver": driver.name}

    async def _verify(self, ctx: StepContext) -> dict[str, Any]:
        driver = await ctx.db(driver_for, ctx.rt, _node(ctx))
        timeout = await _timeout(ctx)
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                status = await driver.status(timeout)
            except BollardError as exc:
                last = exc.message
            else:
                if status is PowerStatus.OFF:
                    return {"status": status.value}
                last = f"power status reads {status.value}"
            await asyncio.sleep(VERIFY_EVERY)
        raise StepFailed(f"the fence of {_node(ctx)} is not confirmed: {last}")

    def _fenced(self, conn: Connection, ctx: StepContext) -> dict[str, Any]:
        now = ctx.rt.clock.now()
        nodes.set_health(conn, _node(ctx), NodeHealth.FENCED, now, expect=NodeHealth.FENCING)
        ctx.event(conn, "node.fenced", f"node {_node(ctx)} is powered off (fence confirmed)")
        return {}

    def succeed(self, conn: Connection, ctx: StepContext) -> None:
        return None

    def fail(self, conn: Connection, ctx: StepContext, error: str) -> None:
        now = ctx.rt.clock.now()
        if nodes.set_health(
            conn, _node(ctx), NodeHealth.FENCE_FAILED, now, expect=NodeHealth.FENCING
        ):
            ctx.event(
                conn,
                "node.fence_failed",
                f"fencing {_node(ctx)} failed ({error}); its VMs are NOT restarted elsewhere. "
                f"Once you know it is off: `bollard node confirm-down {_node(ctx)}`",
            )


class RecoverFlow:
    """After an operator's confirm-down: recovery only."""

    type = "recover"

    def steps(self, task: Task) -> list[StepDef]:
        return [StepDef("recover", recover)]

    def succeed(self, conn: Connection, ctx: StepContext) -> None:
        return None

    def fail(self, conn: Connection, ctx: StepContext, error: str) -> None:
        return None


async def recover(ctx: StepContext) -> dict[str, Any]:
    node = _node(ctx)
    abandoned = await ctx.rt.dispatcher.abandon_node(node, "the node was fenced")
    deadline = time.monotonic() + BUSY_WAIT
    while await ctx.db(_busy_vms, ctx, node) and time.monotonic() < deadline:
        await asyncio.sleep(VERIFY_EVERY)  # the tasks that held them are ending
    started = await ctx.db(_start_recovery, ctx, node)
    ctx.rt.state_reconciler.kick(node)  # what the node ran is lost or restarting: look now
    for task_id in started:
        ctx.rt.engine.launch(task_id)
    return {"abandoned_commands": abandoned, "ha_tasks": started}


def _busy_vms(ctx: StepContext, node: str) -> list[str]:
    with ctx.rt.db.read() as conn:
        return [v.name for v in vms.on_node(conn, node) if v.task_id is not None]


def _start_recovery(ctx: StepContext, node: str) -> list[str]:
    """In one transaction: non-HA VMs are recorded stopped, each HA VM gets its task."""
    now = ctx.rt.clock.now()
    with ctx.rt.db.write() as conn:
        on_node = vms.on_node(conn, node)
        ha = sorted(
            (v for v in on_node if v.ha_policy == "restart" and v.task_id is None),
            key=lambda v: (-v.ha_priority, v.name),
        )
        for vm in on_node:
            if vm.ha_policy != "restart" and vm.task_id is None and vm.vm_state is VmState.ACTIVE:
                vms.set_vm_state(conn, vm.uuid, VmState.STOPPED, now)
                vms.observe_power_now(conn, vm.uuid, PowerState.STOPPED, now)
                events.add(conn, "vm.stopped", f"{vm.name} is off with its fenced node (HA: none)",
                           now, vm_uuid=vm.uuid, vm_name=vm.name, node=node)  # fmt: skip
        started = [ha_task(ctx.rt, conn, vm, now) for vm in ha]
        if ha:
            events.add(conn, "node.recovery",
                       f"restarting {len(ha)} HA VM(s) of {node} elsewhere: "
                       + ", ".join(v.name for v in ha), now, node=node)  # fmt: skip
    return started


def restart_deferred(rt: Any) -> list[str]:
    """HA VMs left waiting for capacity (autostart, on a fenced node, no task): try again
    now that a node has come up. Returns the tasks started (blocking: call off the loop)."""
    now = rt.clock.now()
    with rt.db.write() as conn:
        fenced = nodes.names_with_health(conn, NodeHealth.FENCED)
        waiting = sorted(
            (
                v
                for node in fenced  # (the VMs of fenced nodes only: this runs at every connect)
                for v in vms.on_node(conn, node)
                if v.autostart and v.task_id is None and v.ha_policy == "restart"
            ),
            key=lambda v: (-v.ha_priority, v.name),
        )
        started = [ha_task(rt, conn, vm, now) for vm in waiting]
        if waiting:
            events.add(conn, "vm.ha_retry", "capacity returned: restarting "
                       + ", ".join(v.name for v in waiting), now)  # fmt: skip
    return started


def ha_task(rt: Any, conn: Connection, vm: Vm, now: datetime, *, start: bool = True) -> str:
    """Take the VM for an `ha_restart` task off its fenced node; returns the task's id.
    With `start` false the VM is only defined on its new node (it was meant to be off)."""
    task_id = new_id()
    vms.begin_task(
        conn, vm, TaskState.SCHEDULING, task_id, now,
        allowed=frozenset(VmState), desired_power=DesiredPower.RUNNING if start else None,
    )  # fmt: skip
    params = {"from": vm.node, "epoch": vm.epoch, "priority": vm.ha_priority, "start": start}
    rt.engine.create_in(
        conn, id=task_id, type="ha_restart", vm_uuid=vm.uuid, vm_name=vm.name, node=vm.node,
        params=params,
    )  # fmt: skip
    return task_id
