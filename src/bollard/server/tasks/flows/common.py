"""Pieces shared by the VM flows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from bollard.domain.migrations import MigrationStatus
from bollard.domain.models import CommandRecord, Vm
from bollard.domain.power_states import reported_power, vm_state_of
from bollard.domain.states import DesiredPower, TaskState, VmState
from bollard.server.tasks.context import StepContext
from bollard.store import commands, migrations_log, vms


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
