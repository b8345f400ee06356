"""Pieces shared by the VM flows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from bollard.domain.models import CommandRecord, Vm
from bollard.domain.states import PowerState, TaskState, VmState
from bollard.server.tasks.context import StepContext
from bollard.store import commands, vms

STATE_OF_POWER = {
    PowerState.RUNNING: VmState.ACTIVE,
    PowerState.PAUSED: VmState.PAUSED,
    PowerState.STOPPED: VmState.STOPPED,
    PowerState.CRASHED: VmState.STOPPED,
}


def vm_state_of(power: PowerState | None) -> VmState | None:
    return None if power is None else STATE_OF_POWER.get(power)


def reported_power(result: dict[str, Any]) -> tuple[bool, PowerState | None]:
    """(known, power) from a command result: known with None means the host has no such VM."""
    if "vm" not in result:
        return False, None
    vm = result["vm"]
    if vm is None:
        return True, None
    try:
        return True, PowerState(vm["power"])
    except (KeyError, TypeError, ValueError):
        return False, None


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


def set_task_state(ctx: StepContext, state: TaskState) -> None:
    """Show what the task is doing on the VM (blocking: call through ctx.db)."""
    assert ctx.task.vm_uuid is not None
    with ctx.rt.db.write() as conn:
        vms.set_task_state(conn, ctx.task.vm_uuid, ctx.task.id, state, ctx.rt.clock.now())


def end_vm_task(
    conn: Connection,
    ctx: StepContext,
    *,
    vm_state: VmState | None,
    fault: str | None = None,
) -> Vm | None:
    """Release the VM from the task, with its new state; record the change as an event."""
    if ctx.task.vm_uuid is None:
        return None
    vm = vms.find_by_uuid(conn, ctx.task.vm_uuid)
    if vm is None or vm.task_id != ctx.task.id:
        return vm  # already released (a resumed task's end runs again)
    vms.end_task(conn, vm.uuid, ctx.task.id, ctx.rt.clock.now(), vm_state=vm_state, fault=fault)
    if vm_state is not None and vm_state is not vm.vm_state:
        ctx.event(
            conn,
            "vm.state",
            f"vm_state {vm.vm_state} -> {vm_state}",
            old=vm.vm_state.value,
            new=vm_state.value,
        )
    return vm


def fail_vm_task(conn: Connection, ctx: StepContext, error: str) -> None:
    """End a failed task: the VM keeps the state its host last reported, with the fault."""
    if ctx.task.vm_uuid is None:
        return
    vm = vms.find_by_uuid(conn, ctx.task.vm_uuid)
    if vm is None:
        return
    state = settled_state(vm, commands.for_task(conn, ctx.task.id))
    end_vm_task(conn, ctx, vm_state=state, fault=error)
