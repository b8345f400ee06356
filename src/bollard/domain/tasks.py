"""Task (operation) states and their whitelisted transitions; step states and theirs."""

from __future__ import annotations

from enum import StrEnum

from bollard.domain.states import TaskStatus

TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.RUNNING, TaskStatus.FAILED}),
    TaskStatus.RUNNING: frozenset(
        {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.ROLLING_BACK}
    ),
    TaskStatus.ROLLING_BACK: frozenset({TaskStatus.ROLLED_BACK, TaskStatus.NEEDS_ATTENTION}),
    TaskStatus.SUCCEEDED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.ROLLED_BACK: frozenset(),
    TaskStatus.NEEDS_ATTENTION: frozenset(),
}


def task_allowed(src: TaskStatus, dst: TaskStatus) -> bool:
    return dst in TRANSITIONS[src]


class StepState(StrEnum):
    """State of one step of a task (persisted as its value; a StrEnum, so it compares equal
    to the plain strings the engine uses)."""

    PENDING = "pending"
    RUNNING = "running"
    # Failed with a temporary error; it runs again at its persisted `retry_at`.
    WAITING = "waiting"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNDOING = "undoing"
    UNDONE = "undone"
    UNDO_FAILED = "undo_failed"


STEP_TRANSITIONS: dict[StepState, frozenset[StepState]] = {
    # Forward: a step runs, or is skipped when its condition is false.
    StepState.PENDING: frozenset({StepState.RUNNING, StepState.SKIPPED}),
    # running -> running: a step found `running` after a restart is run again (steps are
    # idempotent or look before they act). running -> failed also when a task cancelled
    # while the server was down finds it interrupted mid-way.
    StepState.RUNNING: frozenset(
        {StepState.RUNNING, StepState.DONE, StepState.FAILED, StepState.WAITING}
    ),
    # A temporary error: run again at `retry_at`; failed when cancelled meanwhile or when
    # its attempts are exhausted.
    StepState.WAITING: frozenset({StepState.RUNNING, StepState.FAILED}),
    # Rollback undoes what was done, and what failed (it may have acted in part).
    StepState.DONE: frozenset({StepState.UNDOING}),
    StepState.FAILED: frozenset({StepState.UNDOING}),
    # undoing -> undoing: one found `undoing` after a restart is undone again.
    StepState.UNDOING: frozenset({StepState.UNDOING, StepState.UNDONE, StepState.UNDO_FAILED}),
    StepState.SKIPPED: frozenset(),
    StepState.UNDONE: frozenset(),
    StepState.UNDO_FAILED: frozenset(),
}

STEP_TERMINAL = frozenset(s for s, nxt in STEP_TRANSITIONS.items() if not nxt)

# Every step state, as stored (kept for the callers that list them as strings).
STEP_STATES = tuple(s.value for s in StepState)


def step_allowed(src: StepState, dst: StepState) -> bool:
    return dst in STEP_TRANSITIONS[src]
