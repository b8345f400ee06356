"""Fencing a dead node and recovering its HA VMs.

fence:   power_off → verify (the power status must read off) → fenced → recover
recover: (after `bollard node confirm-down`) recover only

`recover` abandons the commands still open on the node (it is off: they cannot complete),
waits a little for the tasks that held its VMs to end, marks its non-HA VMs stopped, and
starts an `ha_restart` task for each HA VM, highest priority first.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from bollard.domain.errors import BollardError, StepFailed
from bollard.domain.models import Task
from bollard.domain.states import NodeHealth
from bollard.power import PowerStatus
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.flow import StepDef
from bollard.server.tasks.params import NoParams
from bollard.store import nodes, vms

VERIFY_EVERY = 0.5  # seconds between two power-status reads while confirming a fence
BUSY_WAIT = 30.0  # seconds to let tasks holding the node's VMs end before recovery

Ctx = StepContext[NoParams]


def _node(ctx: Ctx) -> str:
    assert ctx.task.node is not None
    return ctx.task.node


async def _timeout(ctx: Ctx) -> float:
    return float(await ctx.setting("fencing.timeout"))


class FenceFlow:
    type = "fence"
    params_model = NoParams

    def steps(self, task: Task) -> list[StepDef]:
        return [
            StepDef("power_off", self._power_off),
            StepDef("verify", self._verify),
            StepDef("fenced", tx=self._fenced),
            StepDef("recover", recover),
        ]

    async def _power_off(self, ctx: Ctx) -> dict[str, Any]:
        driver = await ctx.power_driver(_node(ctx))
        try:
            await driver.power_off(await _timeout(ctx))
        except BollardError as exc:
            raise StepFailed(f"power off of {_node(ctx)} failed: {exc.message}") from exc
        return {"driver": driver.name}

    async def _verify(self, ctx: Ctx) -> dict[str, Any]:
        driver = await ctx.power_driver(_node(ctx))
        timeout = await _timeout(ctx)
        deadline = ctx.deadline(timeout)
        last = "no answer"
        while not deadline.passed:
            try:
                status = await driver.status(timeout)
            except BollardError as exc:
                last = exc.message
            else:
                if status is PowerStatus.OFF:
                    return {"status": status.value}
                last = f"power status reads {status.value}"
            await ctx.pause(VERIFY_EVERY)  # a BMC has no event to wait on: poll it
        raise StepFailed(f"the fence of {_node(ctx)} is not confirmed: {last}")

    def _fenced(self, conn: Connection, ctx: Ctx) -> dict[str, Any]:
        now = ctx.clock.now()
        nodes.set_health(conn, _node(ctx), NodeHealth.FENCED, now, expect=NodeHealth.FENCING)
        ctx.event(conn, "node.fenced", f"node {_node(ctx)} is powered off (fence confirmed)")
        return {}

    def succeed(self, conn: Connection, ctx: Ctx) -> None:
        return None

    def fail(self, conn: Connection, ctx: Ctx, error: str) -> None:
        now = ctx.clock.now()
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
    params_model = NoParams

    def steps(self, task: Task) -> list[StepDef]:
        return [StepDef("recover", recover)]

    def succeed(self, conn: Connection, ctx: Ctx) -> None:
        return None

    def fail(self, conn: Connection, ctx: Ctx, error: str) -> None:
        return None


async def recover(ctx: Ctx) -> dict[str, Any]:
    node = _node(ctx)
    abandoned = await ctx.abandon_node(node, "the node was fenced")
    await _let_busy_vms_settle(ctx, node)
    started = await ctx.write(lambda conn: ctx.recovery.recover_node_in(conn, node))
    ctx.kick_state(node)  # what the node ran is lost or restarting: look now
    ctx.launch(started)
    return {"abandoned_commands": abandoned, "ha_tasks": started}


async def _let_busy_vms_settle(ctx: Ctx, node: str) -> None:
    """Wait (at most BUSY_WAIT) for the tasks that hold the node's VMs to end: with the node
    off, their commands were just abandoned and they are ending."""
    deadline = ctx.deadline(BUSY_WAIT)

    def busy(conn: Connection) -> list[str]:
        return [v.task_id for v in vms.on_node(conn, node) if v.task_id is not None]

    seen: list[str] = []
    while (holding := await ctx.read(busy)) and not deadline.passed:
        if holding == seen:
            # Held by a task this server does not drive, or one that ended without letting
            # go (the state reconciler releases those): nothing to be woken by, look again.
            await ctx.pause(VERIFY_EVERY)
        seen = holding
        await ctx.wait_task(holding[0], deadline.remaining())
