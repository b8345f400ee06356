"""Task (operation) states and their whitelisted transitions; step states."""

from __future__ import annotations

from bollard.domain.states import TaskStatus

T = TaskStatus

TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    T.PENDING: frozenset({T.RUNNING, T.FAILED}),
    T.RUNNING: frozenset({T.SUCCEEDED, T.FAILED, T.ROLLING_BACK}),
    T.ROLLING_BACK: frozenset({T.ROLLED_BACK, T.NEEDS_ATTENTION}),
    T.SUCCEEDED: frozenset(),
    T.FAILED: frozenset(),
    T.ROLLED_BACK: frozenset(),
    T.NEEDS_ATTENTION: frozenset(),
}


def task_allowed(src: TaskStatus, dst: TaskStatus) -> bool:
    return dst in TRANSITIONS[src]


# Step states: pending -> running -> done | failed | skipped; done -> undoing -> undone |
# undo_failed. A step found `running` after a restart is run again (steps are idempotent or
# look before they act); one found `undoing` is undone again.
STEP_STATES = (
    "pending",
    "running",
    "done",
    "failed",
    "skipped",
    "undoing",
    "undone",
    "undo_failed",
)
