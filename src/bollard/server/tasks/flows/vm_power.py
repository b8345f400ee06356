"""VM lifecycle flows: create, start, stop, shutdown, restart, delete."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from bollard.domain.errors import CommandFailed
from bollard.domain.models import Task, Vm
from bollard.domain.states import CommandType, TaskState, VmState
from bollard.domain.storage import UNSUPPORTED, VolumeState
from bollard.server import vm_disks
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.flow import Flow, StepDef
from bollard.server.tasks.flows.common import end_vm_task, fail_vm_task
from bollard.server.tasks.params import CreateParams, DeleteParams, ParamsModel, PowerParams
from bollard.store import nodes, pools, sriov, vms, volumes

_LOCKING = frozenset(
    {
        CommandType.START,
        CommandType.RESTART,
        CommandType.STOP,
        CommandType.SHUTDOWN,
        CommandType.UNDEFINE,
    }
)


async def _run(
    ctx: StepContext[Any],
    command: CommandType,
    task_state: TaskState,
    args: dict[str, Any] | None = None,
    timeout: float | None = None,
    *,
    key: str | None = None,
    more_args: Callable[[Connection], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run `command` on the VM's node at its epoch, showing `task_state` (written with the
    command's record); `more_args(conn)`: arguments read with the VM, in one read."""
    uuid = ctx.task.vm_uuid
    assert uuid is not None
    task_id = ctx.task.id
    ctx.later(lambda conn: vms.set_task_state(conn, uuid, task_id, task_state, ctx.clock.now()))

    def look(conn: Connection) -> tuple[Vm, dict[str, Any]]:
        vm = ctx.vm_in(conn)
        found = dict(args or {})
        if more_args is not None:
            found.update(more_args(conn))
        if command in _LOCKING and vm.node is not None:
            # The locks of its shared volumes, taken or given back.
            locks = vm_disks.lock_args(conn, vm.uuid, vm.node, vm.epoch)
            if locks is not None:
                found["locks"] = locks
        return vm, found

    vm, full = await ctx.read(look)
    assert vm.node is not None
    return await ctx.command(
        key or command.value,
        vm.node,
        command,
        full,
        vm_uuid=vm.uuid,
        epoch=vm.epoch,
        timeout=timeout,
    )


async def _absent_is_fine(run: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """For a delete, a VM its host does not have is as good as removed."""
    try:
        return await run
    except CommandFailed as exc:
        if exc.code != "not-found":
            raise
        return {"vm": None, "note": "the host does not have the VM"}


class CreateFlow:
    type = "create"
    params_model = CreateParams

    def steps(self, task: Task) -> list[StepDef]:
        return [
            StepDef("define", self._define, self._undefine),
            StepDef("start", self._start, self._stop, when=lambda ctx: ctx.params.start),
        ]

    async def _define(self, ctx: StepContext[CreateParams]) -> dict[str, Any]:
        p = ctx.params
        uuid = ctx.task.vm_uuid or ""
        args = {
            "vcpus": p.vcpus,
            "memory_mb": p.memory_mb,
            "name": ctx.task.vm_name,
            # Its NICs, with the MACs assigned at creation (none in tasks from before NICs).
            "nics": list(p.nics),
        }

        def disks(conn: Connection) -> dict[str, Any]:
            # Its disks: the volumes attached to it (made by the host, being new).
            return {"disks": vm_disks.define_args(conn, uuid)}

        return await _run(ctx, CommandType.DEFINE, TaskState.SPAWNING, args, more_args=disks)

    async def _undefine(self, ctx: StepContext[Any]) -> None:
        await _run(
            ctx, CommandType.UNDEFINE, TaskState.DELETING, {"force": True}, key="undo-define"
        )

    async def _start(self, ctx: StepContext[Any]) -> dict[str, Any]:
        return await _run(ctx, CommandType.START, TaskState.POWERING_ON)

    async def _stop(self, ctx: StepContext[Any]) -> None:
        await _run(ctx, CommandType.STOP, TaskState.POWERING_OFF, key="undo-start")

    def succeed(self, conn: Connection, ctx: StepContext[Any]) -> None:
        final = VmState.ACTIVE if ctx.params.start else VmState.STOPPED
        vm_disks.attach_states(conn, ctx.task.vm_uuid or "", ctx.task.id, ctx.clock.now())
        end_vm_task(conn, ctx, vm_state=final)

    def fail(self, conn: Connection, ctx: StepContext[Any], error: str) -> None:
        # A VM whose creation failed stays, in ERROR, so the operator sees why; delete removes
        # it and its volumes.
        vm_disks.attach_states(conn, ctx.task.vm_uuid or "", ctx.task.id, ctx.clock.now())
        end_vm_task(conn, ctx, vm_state=VmState.ERROR, fault=error)


@dataclass(frozen=True)
class PowerFlow:
    """One command: start, stop, shutdown or restart."""

    type: str
    command: CommandType
    task_state: TaskState
    final_state: VmState
    params_model: ParamsModel = PowerParams

    def steps(self, task: Task) -> list[StepDef]:
        return [StepDef(self.type, self._do)]

    async def _do(self, ctx: StepContext[PowerParams]) -> dict[str, Any]:
        args: dict[str, Any] = {}
        timeout = None
        if self.command is CommandType.SHUTDOWN:
            grace = ctx.params.timeout or ctx.timeouts.shutdown
            args, timeout = {"timeout": grace}, grace + 30
        return await _run(ctx, self.command, self.task_state, args, timeout)

    def succeed(self, conn: Connection, ctx: StepContext[Any]) -> None:
        end_vm_task(conn, ctx, vm_state=self.final_state)

    def fail(self, conn: Connection, ctx: StepContext[PowerParams], error: str) -> None:
        fail_vm_task(conn, ctx, error, desired=ctx.params.found_desired)


class DeleteFlow:
    type = "delete"
    params_model = DeleteParams

    def steps(self, task: Task) -> list[StepDef]:
        return [
            StepDef("stop", self._stop),
            StepDef("undefine", self._undefine),
            StepDef("delete-volumes", self._delete_volumes),
        ]

    async def _stop(self, ctx: StepContext[Any]) -> dict[str, Any]:
        return await _absent_is_fine(_run(ctx, CommandType.STOP, TaskState.DELETING))

    async def _undefine(self, ctx: StepContext[Any]) -> dict[str, Any]:
        return await _absent_is_fine(_run(ctx, CommandType.UNDEFINE, TaskState.DELETING))

    async def _delete_volumes(self, ctx: StepContext[Any]) -> dict[str, Any]:
        """The volumes made with the VM go with it (from the host that has them: the VM's
        for local pools, and for shared pools too, as it sees them); the others stay."""
        vm = await ctx.vm()
        doomed = [
            v for v in await ctx.read(lambda conn: volumes.of_vm(conn, vm.uuid)) if v.delete_with_vm
        ]
        refs = await ctx.read(lambda conn: pools.by_name(conn, {v.pool for v in doomed}))
        deleted = []
        for v in doomed:
            host = v.node or vm.node
            if host is None:
                continue
            args = {"pool": refs[v.pool].ref(), "file": v.file}
            try:
                await ctx.command(f"delete-{v.id}", host, CommandType.VOLUME_DELETE, args)
            except CommandFailed as exc:
                if exc.code != UNSUPPORTED:  # a driver without pools keeps no files
                    raise
            deleted.append(v.name)
        return {"volumes_deleted": deleted}

    def succeed(self, conn: Connection, ctx: StepContext[Any]) -> None:
        if ctx.task.vm_uuid is None:
            return
        vm = vms.find_by_uuid(conn, ctx.task.vm_uuid)
        if vm is None:
            return
        now = ctx.clock.now()
        for v in volumes.of_vm(conn, vm.uuid):
            if v.delete_with_vm:
                volumes.remove(conn, v.id)
            else:  # kept: detached, in its pool
                volumes.set_fields(conn, v.id, now, vm_uuid=None, device=None)
                volumes.transition(conn, v.id, now, held_by=v.task_id, state=VolumeState.READY)
        # Lock order everywhere: the node row before its VM rows (heartbeats do the same).
        if vm.node is not None:
            nodes.release(conn, vm.node, vm.vcpus, vm.memory_mb)
        sriov.release_vm(conn, vm.uuid)  # its SR-IOV VFs are free again, on every node
        vms.remove(conn, vm.uuid)
        ctx.event(conn, "vm.deleted", f"VM {vm.name} deleted from {vm.node}")

    def fail(self, conn: Connection, ctx: StepContext[DeleteParams], error: str) -> None:
        fail_vm_task(conn, ctx, error, desired=ctx.params.found_desired)


FLOWS: list[Flow] = [
    CreateFlow(),
    PowerFlow("start", CommandType.START, TaskState.POWERING_ON, VmState.ACTIVE),
    PowerFlow("stop", CommandType.STOP, TaskState.POWERING_OFF, VmState.STOPPED),
    PowerFlow("shutdown", CommandType.SHUTDOWN, TaskState.POWERING_OFF, VmState.STOPPED),
    PowerFlow("restart", CommandType.RESTART, TaskState.REBOOTING, VmState.ACTIVE),
    DeleteFlow(),
]
