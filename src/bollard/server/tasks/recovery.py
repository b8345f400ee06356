"""After a server restart: tasks that were running are concluded from what their commands
turn out to have done; outcomes that arrive after their task has ended are applied to the VM.

Resuming the remaining steps of a task is the task engine's job (a later issue); here a task
interrupted by a restart ends as soon as the reconciler has established the outcome of each
of its commands: succeeded if every step was done, else failed, with the VM's record set from
what the host reported.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import TYPE_CHECKING, Any

from bollard.domain.commands import TERMINAL, CommandState
from bollard.domain.models import CommandRecord, Task, Vm
from bollard.domain.states import PowerState, TaskStatus, VmState
from bollard.store import commands, nodes, tasks, vms

if TYPE_CHECKING:
    from bollard.server.dispatch import Outcome
    from bollard.server.runtime import Runtime

log = logging.getLogger(__name__)

_STATE_OF_POWER = {
    PowerState.RUNNING: VmState.ACTIVE,
    PowerState.PAUSED: VmState.PAUSED,
    PowerState.STOPPED: VmState.STOPPED,
    PowerState.CRASHED: VmState.STOPPED,
}


def vm_state_of(power: PowerState | None) -> VmState | None:
    return None if power is None else _STATE_OF_POWER.get(power)


def _reported_power(result: dict[str, Any]) -> tuple[bool, PowerState | None]:
    """(known, power) from an answer's result: known with power None means the host has no
    such VM."""
    if "vm" not in result:
        return False, None
    vm = result["vm"]
    if vm is None:
        return True, None
    try:
        return True, PowerState(vm["power"])
    except (KeyError, TypeError, ValueError):
        return False, None


class TaskRecovery:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._background: set[asyncio.Task[None]] = set()

    # -- tasks left running by a previous run ----------------------------------------------

    async def resume_all(self) -> int:
        open_tasks = await self.rt.db_call(self._unfinished)
        for task in open_tasks:
            self.rt.runner.start(
                task.id,
                functools.partial(self._conclude_when_known, task),
                functools.partial(self._finish, task, []),
            )
        if open_tasks:
            log.warning("%d task(s) interrupted by a restart are being concluded", len(open_tasks))
        return len(open_tasks)

    def _unfinished(self) -> list[Task]:
        with self.rt.db.read() as conn:
            return tasks.unfinished(conn)

    async def _conclude_when_known(self, task: Task) -> None:
        deadline = time.monotonic() + 2 * self.rt.config.command_timeout
        while True:
            cmds = await self.rt.db_call(self._commands, task.id)
            pending = [c.id for c in cmds if CommandState(c.state) not in TERMINAL]
            remaining = deadline - time.monotonic()
            if not pending or remaining <= 0:
                break
            await self.rt.dispatcher.wait_ended(pending, remaining)
        note = "interrupted by a restart of the server"
        if pending:
            note += f"; the outcome of command(s) {', '.join(pending)} is still unknown"
        await self.rt.db_call(self._finish, task, cmds, note)

    def _commands(self, task_id: str) -> list[CommandRecord]:
        with self.rt.db.read() as conn:
            return commands.for_task(conn, task_id)

    def _finish(self, task: Task, cmds: list[CommandRecord], note: str) -> None:
        steps = list(task.params.get("steps", []))
        all_done = bool(steps) and len(cmds) == len(steps) and all(c.ok is True for c in cmds)
        now = self.rt.clock.now()
        with self.rt.db.write() as conn:
            vm = vms.find_by_uuid(conn, task.vm_uuid) if task.vm_uuid else None
            if all_done:
                if task.type == "delete" and vm is not None:
                    if vm.node is not None:
                        nodes.release(conn, vm.node, vm.vcpus, vm.memory_mb)
                    vms.remove(conn, vm.uuid)
                elif vm is not None:
                    final = task.params.get("final_state")
                    vms.end_task(
                        conn, vm.uuid, task.id, now, vm_state=VmState(final) if final else None
                    )
                tasks.set_state(conn, task.id, TaskStatus.SUCCEEDED, now)
                log.info("task %s (%s) concluded after restart: succeeded", task.id, task.type)
                return
            if vm is not None and vm.task_id == task.id:
                vms.end_task(
                    conn, vm.uuid, task.id, now, vm_state=_settled_state(vm, cmds), fault=note
                )
            tasks.set_state(conn, task.id, TaskStatus.FAILED, now, error=note)
            log.info("task %s (%s) concluded after restart: failed (%s)", task.id, task.type, note)

    # -- outcomes established after their caller gave up -----------------------------------

    def on_late_outcome(self, cid: str, outcome: Outcome) -> None:
        known, power = _reported_power(outcome.result)
        if not known:
            return
        job = asyncio.get_running_loop().create_task(self.rt.db_call(self._settle_late, cid, power))
        self._background.add(job)
        job.add_done_callback(self._background.discard)

    def _settle_late(self, cid: str, power: PowerState | None) -> None:
        """A command's outcome arrived after its task ended: if no task holds the VM now, its
        record follows what the host reported."""
        state = vm_state_of(power)
        if state is None:
            return
        now = self.rt.clock.now()
        with self.rt.db.write() as conn:
            cmd = commands.get(conn, cid)
            vm = vms.find_by_uuid(conn, cmd.vm_uuid) if cmd.vm_uuid else None
            if vm is None or vm.task_id is not None or vm.vm_state is state:
                return
            if vm.vm_state not in (VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED):
                return
            vms.set_vm_state(conn, vm.uuid, state, now)
            log.info(
                "VM %s: %s (late outcome of command %s) -> vm_state %s",
                vm.name,
                cmd.type,
                cid,
                state,
            )


def _settled_state(vm: Vm, cmds: list[CommandRecord]) -> VmState | None:
    """The vm_state that matches the last thing the host reported about the VM."""
    for cmd in reversed(cmds):
        known, power = _reported_power((cmd.answer or {}).get("result") or {})
        if known:
            state = vm_state_of(power)
            if state is not None:
                return state
            break
    if vm.observed_power in _STATE_OF_POWER and vm.vm_state is not VmState.BUILDING:
        return vm_state_of(vm.observed_power)
    return VmState.ERROR if vm.vm_state is VmState.BUILDING else None
