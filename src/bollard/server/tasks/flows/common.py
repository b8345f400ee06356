"""Pieces shared by the VM flows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from bollard.domain.errors import StepFailed
from bollard.domain.migrations import MigrationStatus
from bollard.domain.models import CommandRecord, Vm
from bollard.domain.power_states import reported_power, vm_state_of
from bollard.domain.states import (
    CommandType,
    DesiredPower,
    NodeHealth,
    SchedulingState,
    TaskState,
    VmState,
)
from bollard.server import vm_disks
from bollard.server.tasks.context import StepContext
from bollard.store import commands, migrations_log, nodes, vms


def settled_state(vm: Vm, cmds: list[CommandRecord]) -> VmState | None:
    """The vm_state matching the last thing a host reported about the VM (None: keep it)."""
    for cmd in reversed(cmds):
        if cmd.node != vm.node:
            continue
        known, power = reported_power((cmd.answer or {}).get("result") or {})
        if known:
            return vm_state_of(power) or (VmState.ERROR if power is None else None)
    if vm.vm_state is VmState.BUILDING:
        return VmState.ERROR
    return None


async def show_task_state(ctx: StepContext[Any], state: TaskState) -> None:
    """Show what the task is doing on the VM."""
    uuid = ctx.task.vm_uuid
    assert uuid is not None
    await ctx.write(
        lambda conn: vms.set_task_state(conn, uuid, ctx.task.id, state, ctx.clock.now())
    )


def end_vm_task(
    conn: Connection,
    ctx: StepContext[Any],
    *,
    vm_state: VmState | None,
    fault: str | None = None,
    desired: DesiredPower | None = None,
) -> Vm | None:
    """Release the VM from the task, with its new state (and, given `desired`, that desired
    power); record the changes as events."""
    if ctx.task.vm_uuid is None:
        return None
    vm = vms.find_by_uuid(conn, ctx.task.vm_uuid)
    if vm is None or vm.task_id != ctx.task.id:
        return vm  # already released (a resumed task's end runs again)
    now = ctx.clock.now()
    if desired is None or desired is vm.desired_power:
        vms.end_task(conn, vm.uuid, ctx.task.id, now, vm_state=vm_state, fault=fault)
    else:
        vms.transition(conn, vm.uuid, now, held_by=ctx.task.id, task_state=None,
                       vm_state=vm_state, fault=fault, desired_power=desired.value)  # fmt: skip
        ctx.event(
            conn,
            "vm.desired",
            f"desired power back to {desired} (the {ctx.task.type} did not succeed)",
            old=vm.desired_power.value,
            new=desired.value,
        )
    if vm_state is not None and vm_state is not vm.vm_state:
        ctx.event(
            conn,
            "vm.state",
            f"vm_state {vm.vm_state} -> {vm_state}",
            old=vm.vm_state.value,
            new=vm_state.value,
        )
    return vm


def fail_vm_task(
    conn: Connection, ctx: StepContext[Any], error: str, *, desired: DesiredPower | None = None
) -> None:
    """End a failed task: the VM keeps the state its host last reported, with the fault;
    `desired`: the desired power the task found, given back (a failed operation leaves the
    intent it found, so nothing acts on it later)."""
    if ctx.task.vm_uuid is None:
        return
    vm = vms.find_by_uuid(conn, ctx.task.vm_uuid)
    if vm is None:
        return
    state = settled_state(vm, commands.for_task(conn, ctx.task.id))
    end_vm_task(conn, ctx, vm_state=state, fault=error, desired=desired)


def end_migration(
    conn: Connection,
    ctx: StepContext[Any],
    status: MigrationStatus,
    error: str | None = None,
    **values: Any,
) -> None:
    """Move the task's migration record (a migration's, an HA restart's) to `status`, once."""
    record = migrations_log.of_task(conn, ctx.task.id)
    if record is None or record.status is status or record.status.ended:
        return
    migrations_log.set_status(conn, record.id, status, ctx.clock.now(), error=error, **values)


async def check_fit(ctx: StepContext[Any], node: str, what: str) -> None:
    """A migration's or resize's destination must still be fit (connected, up, ready): one
    that changed underneath aborts cleanly, StepFailed naming `what` ("target node",
    "destination")."""
    found = await ctx.read(lambda conn: nodes.get(conn, node))
    problems = []
    if not found.connected or not ctx.connected(node):
        problems.append("not connected")
    # A suspect node that is connected again is fit (every node is suspect for a moment
    # after a server restart, until its first heartbeat).
    if found.health is not NodeHealth.UP and not (
        found.health is NodeHealth.SUSPECT and found.connected
    ):
        problems.append(f"health {found.health}")
    if found.scheduling is not SchedulingState.READY:
        problems.append(f"scheduling state {found.scheduling}")
    if problems:
        raise StepFailed(f"{what} {node} is no longer fit: {', '.join(problems)}")


async def with_locks(
    ctx: StepContext[Any],
    key: str,
    node: str,
    command: CommandType,
    epoch: int,
    args: dict[str, Any] | None = None,
    *,
    timeout: float | None = None,
    cancellable: bool = True,
) -> dict[str, Any]:
    """Start, stop or shut down the task's VM on `node` at `epoch`, the command carrying the
    locks of its shared volumes (taken by a start, given back once it is off)."""
    uuid = ctx.task.vm_uuid or ""
    locks = await ctx.read(lambda conn: vm_disks.lock_args(conn, uuid, node, epoch))
    if locks is not None:
        args = {**(args or {}), "locks": locks}
    return await ctx.command(
        key, node, command, args, vm_uuid=uuid, epoch=epoch, timeout=timeout,
        cancellable=cancellable,
    )  # fmt: skip
