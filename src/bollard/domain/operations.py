"""VM power operations as requests name them: which task, the task_state it shows, the
vm_states it may start from and the power the operator wants afterwards."""

from __future__ import annotations

from dataclasses import dataclass

from bollard.domain.states import DesiredPower, TaskState, VmState


@dataclass(frozen=True)
class PowerOp:
    type: str
    task_state: TaskState
    allowed: frozenset[VmState]
    desired: DesiredPower | None


_ON = frozenset({VmState.ACTIVE, VmState.PAUSED})
START = PowerOp("start", TaskState.POWERING_ON, frozenset({VmState.STOPPED}), DesiredPower.RUNNING)
STOP = PowerOp("stop", TaskState.POWERING_OFF, _ON, DesiredPower.STOPPED)
SHUTDOWN = PowerOp("shutdown", TaskState.POWERING_OFF, _ON, DesiredPower.STOPPED)
RESTART = PowerOp("restart", TaskState.REBOOTING, frozenset({VmState.ACTIVE}), DesiredPower.RUNNING)
DELETE = PowerOp(
    "delete",
    TaskState.DELETING,
    frozenset({VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED, VmState.ERROR}),
    DesiredPower.STOPPED,
)
POWER_OPS = {op.type: op for op in (START, STOP, SHUTDOWN, RESTART, DELETE)}
