"""A VM's state machine (DESIGN.md section 5): vm_state (what the VM is) and task_state (what
operation holds it, None when none does), with their whitelisted transitions. The API
status is derived from the pair (status.py), never stored.

- vm_state changes only when the VM is free afterwards: as the task that held it ends, or
  with no task (the record follows what its host reports, or a late command outcome).
- task_state: None -> any when a task takes the VM; any -> None when it ends; within a task
  only the moves its flow makes, and a state set again when a resumed step runs again.
"""

from __future__ import annotations

from dataclasses import dataclass

from bollard.domain.states import TaskState, VmState

# What a task's end or a host's report makes of a VM: the state its host shows (active,
# paused, stopped) or error. A state kept is no move (it is not listed).
_SETTLED = frozenset({VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED, VmState.ERROR})
# A resize ends with the VM resized (VERIFY_RESIZE), from whatever it was when it began.
_RESIZABLE = _SETTLED | {VmState.RESIZED}

VM_STATE_TRANSITIONS: dict[VmState, frozenset[VmState]] = {
    # The end of the create task (or of whatever releases a VM still being built).
    VmState.BUILDING: _SETTLED,
    VmState.ACTIVE: _RESIZABLE - {VmState.ACTIVE},
    VmState.STOPPED: _RESIZABLE - {VmState.STOPPED},
    VmState.PAUSED: _SETTLED - {VmState.PAUSED},
    # A VM in error is whatever its next task or its host's next report makes it.
    VmState.ERROR: _SETTLED - {VmState.ERROR},
    # A confirm or a revert ends it (active or stopped, as the VM runs), or error.
    VmState.RESIZED: _SETTLED,
    # Records are removed, not marked deleted: nothing enters this state, nothing leaves it.
    VmState.DELETED: frozenset(),
}

VM_STATE_TERMINAL = frozenset(s for s, nxt in VM_STATE_TRANSITIONS.items() if not nxt)


def vm_state_allowed(src: VmState, dst: VmState) -> bool:
    return dst in VM_STATE_TRANSITIONS[src]


def _within_task(*moves: tuple[TaskState, TaskState]) -> dict[TaskState, frozenset[TaskState]]:
    """Every task state may be set again (re-entry: a resumed step sets the state its first
    run set, a power task's step sets the state its request set), plus `moves`."""
    table = {state: {state} for state in TaskState}
    for src, dst in moves:
        table[src].add(dst)
    return {state: frozenset(nxt) for state, nxt in table.items()}


_WITHIN_TASK = _within_task(
    # create: define (spawning), then start (powering-on); ha_restart: place (spawning),
    # then start (powering-on).
    (TaskState.SCHEDULING, TaskState.SPAWNING),
    (TaskState.SPAWNING, TaskState.POWERING_ON),
    # create rolled back: undo start (powering-off), then undo define (deleting). A step
    # interrupted before it set its state, then cancelled, is undone from the state the
    # step before it set: the define undone from scheduling, the start from spawning.
    (TaskState.POWERING_ON, TaskState.POWERING_OFF),
    (TaskState.POWERING_OFF, TaskState.DELETING),
    (TaskState.SPAWNING, TaskState.DELETING),
    (TaskState.SCHEDULING, TaskState.DELETING),
    (TaskState.SPAWNING, TaskState.POWERING_OFF),
    # resize: prep (claim), migrating (off, disks copied), migrated, finish (defined and
    # started at the destination); rolled back from any of them, back through migrating
    # (the guest restarted on the source, the copies removed).
    (TaskState.RESIZE_PREP, TaskState.RESIZE_MIGRATING),
    (TaskState.RESIZE_MIGRATING, TaskState.RESIZE_MIGRATED),
    (TaskState.RESIZE_MIGRATED, TaskState.RESIZE_FINISH),
    (TaskState.RESIZE_FINISH, TaskState.RESIZE_MIGRATING),
    (TaskState.RESIZE_MIGRATED, TaskState.RESIZE_MIGRATING),
)

TASK_STATE_TRANSITIONS: dict[TaskState | None, frozenset[TaskState | None]] = {
    # A task takes the VM (begin_task; a new VM is created held by its create task).
    None: frozenset(TaskState),
    # Within the task, or None when it ends (whatever it was doing).
    **{state: _WITHIN_TASK[state] | {None} for state in TaskState},
}

# No task state is final: every task ends (task_state None).
TASK_STATE_TERMINAL = frozenset(s for s, nxt in TASK_STATE_TRANSITIONS.items() if not nxt)


def task_state_allowed(src: TaskState | None, dst: TaskState | None) -> bool:
    return dst in TASK_STATE_TRANSITIONS[src]


@dataclass(frozen=True)
class VmStates:
    """The stored pair a VM's state is: what it is, and what operation holds it."""

    vm_state: VmState
    task_state: TaskState | None


def allowed(src: VmStates, dst: VmStates) -> bool:
    """Whether the VM may move from `src` to `dst`: the task_state move is in its table (None
    to None is no move), and vm_state is kept, or changes by its table to a VM no task holds."""
    no_task = src.task_state is None and dst.task_state is None
    if not no_task and not task_state_allowed(src.task_state, dst.task_state):
        return False
    if dst.vm_state is src.vm_state:
        return True
    return dst.task_state is None and vm_state_allowed(src.vm_state, dst.vm_state)
