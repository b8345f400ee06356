"""VM operations: create, start, stop, shutdown, restart, delete.

Each request takes the VM for a task with a compare-and-swap (a VM has at most one active
task; a conflicting request gets 409 naming the task), records the task, and runs its
commands in the background. The outcome is written to the VM and the task when it ends.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from bollard.domain.errors import AlreadyExists, BollardError, InsufficientCapacity
from bollard.domain.ids import new_id, new_uuid
from bollard.domain.models import Task, Vm
from bollard.domain.placement import NodeCapacity, choose_node
from bollard.domain.states import CommandType, DesiredPower, TaskState, TaskStatus, VmState
from bollard.store import nodes, tasks, vms

if TYPE_CHECKING:
    from bollard.server.runtime import Runtime

log = logging.getLogger(__name__)

PLACEMENT_ATTEMPTS = 5


@dataclass(frozen=True)
class Step:
    """One command of an operation, and the task_state the VM shows while it runs."""

    command: CommandType
    task_state: TaskState
    args: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None


@dataclass(frozen=True)
class PowerOp:
    type: str
    task_state: TaskState
    allowed: frozenset[VmState]
    desired: DesiredPower | None
    final_state: VmState | None


_ON = frozenset({VmState.ACTIVE, VmState.PAUSED})
START = PowerOp(
    "start",
    TaskState.POWERING_ON,
    frozenset({VmState.STOPPED}),
    DesiredPower.RUNNING,
    VmState.ACTIVE,
)
STOP = PowerOp("stop", TaskState.POWERING_OFF, _ON, DesiredPower.STOPPED, VmState.STOPPED)
SHUTDOWN = PowerOp("shutdown", TaskState.POWERING_OFF, _ON, DesiredPower.STOPPED, VmState.STOPPED)
RESTART = PowerOp(
    "restart",
    TaskState.REBOOTING,
    frozenset({VmState.ACTIVE}),
    DesiredPower.RUNNING,
    VmState.ACTIVE,
)
DELETE = PowerOp(
    "delete",
    TaskState.DELETING,
    frozenset({VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED, VmState.ERROR}),
    DesiredPower.STOPPED,
    None,
)


class VmOperations:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    # -- requests -------------------------------------------------------------------------

    async def create(
        self, name: str, vcpus: int, memory_mb: int, node: str | None, start: bool
    ) -> tuple[Vm, Task]:
        steps = [
            Step(
                CommandType.DEFINE,
                TaskState.SPAWNING,
                {"name": name, "vcpus": vcpus, "memory_mb": memory_mb},
            )
        ]
        if start:
            steps.append(Step(CommandType.START, TaskState.POWERING_ON))
        final = VmState.ACTIVE if start else VmState.STOPPED
        plan = _plan(steps, final)
        vm, task = await self.rt.db_call(self._create_tx, name, vcpus, memory_mb, node, start, plan)
        self._launch(vm, task, steps, final_state=final, failed_state=VmState.ERROR)
        return vm, task

    async def power(self, name: str, op: PowerOp, **params: Any) -> tuple[Vm, Task]:
        steps: list[Step]
        if op is DELETE:
            steps = [
                Step(CommandType.STOP, TaskState.DELETING),
                Step(CommandType.UNDEFINE, TaskState.DELETING),
            ]
        elif op is SHUTDOWN:
            timeout = float(params.get("timeout") or self.rt.config.shutdown_timeout)
            steps = [Step(CommandType.SHUTDOWN, op.task_state, {"timeout": timeout}, timeout + 30)]
        else:
            command = {
                "start": CommandType.START,
                "stop": CommandType.STOP,
                "restart": CommandType.RESTART,
            }[op.type]
            steps = [Step(command, op.task_state)]
        plan = {**params, **_plan(steps, op.final_state)}
        vm, task = await self.rt.db_call(self._begin_tx, name, op, plan)
        self._launch(vm, task, steps, final_state=op.final_state, delete=op is DELETE)
        return vm, task

    # -- transactions ---------------------------------------------------------------------

    def _create_tx(
        self,
        name: str,
        vcpus: int,
        memory_mb: int,
        wanted: str | None,
        start: bool,
        plan: dict[str, Any],
    ) -> tuple[Vm, Task]:
        now = self.rt.clock.now()
        for _ in range(PLACEMENT_ATTEMPTS):
            with self.rt.db.write() as conn:
                if vms.name_taken(conn, name):
                    raise AlreadyExists(f"a VM named {name!r} already exists")
                capacities = [
                    NodeCapacity(
                        n.name,
                        n.connected,
                        n.vcpus,
                        n.memory_mb,
                        n.allocated_vcpus,
                        n.allocated_memory_mb,
                    )
                    for n in nodes.list_all(conn)
                ]
                target = choose_node(capacities, vcpus, memory_mb, wanted=wanted)
                if not nodes.claim(conn, target.name, vcpus, memory_mb):
                    continue  # another request took the room first: place again
                task_id, uuid = new_id(), new_uuid()
                task = tasks.create(
                    conn,
                    id=task_id,
                    type="create",
                    vm_uuid=uuid,
                    vm_name=name,
                    node=target.name,
                    params={
                        "vcpus": vcpus,
                        "memory_mb": memory_mb,
                        "start": start,
                        "node": wanted,
                        **plan,
                    },
                    now=now,
                )
                vm = vms.create(
                    conn,
                    uuid=uuid,
                    name=name,
                    node=target.name,
                    vcpus=vcpus,
                    memory_mb=memory_mb,
                    desired_power=DesiredPower.RUNNING if start else DesiredPower.STOPPED,
                    task_id=task_id,
                    now=now,
                )
                return vm, task
        raise InsufficientCapacity("the cluster is too busy placing VMs; try again")

    def _begin_tx(self, name: str, op: PowerOp, params: dict[str, Any]) -> tuple[Vm, Task]:
        now = self.rt.clock.now()
        with self.rt.db.write() as conn:
            vm = vms.get(conn, name)
            task_id = new_id()
            vms.begin_task(
                conn, vm, op.task_state, task_id, now, allowed=op.allowed, desired_power=op.desired
            )
            task = tasks.create(
                conn,
                id=task_id,
                type=op.type,
                vm_uuid=vm.uuid,
                vm_name=vm.name,
                node=vm.node,
                params=params,
                now=now,
            )
            return vms.get_by_uuid(conn, vm.uuid), task

    # -- execution ------------------------------------------------------------------------

    def _launch(
        self,
        vm: Vm,
        task: Task,
        steps: Sequence[Step],
        *,
        final_state: VmState | None,
        failed_state: VmState | None = None,
        delete: bool = False,
    ) -> None:
        async def body() -> None:
            await self.rt.db_call(self._set_task, task.id, TaskStatus.RUNNING, None)
            try:
                for step in steps:
                    await self.rt.db_call(
                        self._set_vm_task_state, vm.uuid, task.id, step.task_state
                    )
                    assert vm.node is not None
                    await self.rt.dispatcher.call(
                        vm.node,
                        step.command,
                        step.args,
                        vm_uuid=vm.uuid,
                        epoch=vm.epoch,
                        task_id=task.id,
                        timeout=step.timeout,
                    )
            except BollardError as exc:
                log.info("task %s (%s %s) failed: %s", task.id, task.type, vm.name, exc.message)
                await self.rt.db_call(self._fail, vm, task.id, exc.message, failed_state)
                return
            await self.rt.db_call(self._succeed, vm, task.id, final_state, delete)

        def on_crash(message: str) -> None:
            self._fail(vm, task.id, message, failed_state)

        self.rt.runner.start(task.id, body, on_crash)

    def _set_task(self, task_id: str, state: TaskStatus, error: str | None) -> None:
        with self.rt.db.write() as conn:
            tasks.set_state(conn, task_id, state, self.rt.clock.now(), error=error)

    def _set_vm_task_state(self, uuid: str, task_id: str, state: TaskState) -> None:
        with self.rt.db.write() as conn:
            vms.set_task_state(conn, uuid, task_id, state, self.rt.clock.now())

    def _fail(self, vm: Vm, task_id: str, message: str, vm_state: VmState | None) -> None:
        now = self.rt.clock.now()
        with self.rt.db.write() as conn:
            vms.end_task(conn, vm.uuid, task_id, now, vm_state=vm_state, fault=message)
            tasks.set_state(conn, task_id, TaskStatus.FAILED, now, error=message)

    def _succeed(self, vm: Vm, task_id: str, vm_state: VmState | None, delete: bool) -> None:
        now = self.rt.clock.now()
        with self.rt.db.write() as conn:
            if delete:
                _remove(conn, vm)
            else:
                vms.end_task(conn, vm.uuid, task_id, now, vm_state=vm_state)
            tasks.set_state(conn, task_id, TaskStatus.SUCCEEDED, now)


def _plan(steps: Sequence[Step], final: VmState | None) -> dict[str, Any]:
    """What a task will do, recorded with it so that it can be concluded after a restart."""
    return {
        "steps": [s.command.value for s in steps],
        "final_state": final.value if final else None,
    }


def _remove(conn: Connection, vm: Vm) -> None:
    # Lock order everywhere: the node row before its VM rows (heartbeats do the same).
    if vm.node is not None:
        nodes.release(conn, vm.node, vm.vcpus, vm.memory_mb)
    vms.remove(conn, vm.uuid)
