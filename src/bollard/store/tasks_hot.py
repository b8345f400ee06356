"""The writes every task step makes, as statements built once.

A statement SQLAlchemy builds anew costs its construction and its cache key each time (about
100 µs for a one-row UPDATE, 170 µs for an event's INSERT, against 25 to 40 µs for the same
statement built once and given its values); a create with start makes some thirty of them.
These are the task engine's and the dispatcher's: holding a task, a step's move, its command's
record, a task's state. Each does what its counterpart in steps.py, task_owners.py,
tasks.py or events.py does (the same table checks, the same compare-and-swap), and the
counterparts stay the reference for everything else.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from bollard.domain.errors import InvalidState
from bollard.domain.models import TaskStep
from bollard.domain.tasks import StepState, step_allowed
from bollard.store import steps, task_owners
from bollard.store.steps import _step as step_of_row  # the row's TaskStep, as steps.py reads it
from bollard.store.tables import task_steps, tasks

log = logging.getLogger(__name__)

# The states each step state may be entered from (the table of domain/tasks.py read
# backwards), as stored.
_SOURCES: dict[StepState, list[str]] = {
    dst: [src.value for src in StepState if step_allowed(src, dst)] for dst in StepState
}
# The columns each move writes besides `state` and `retry_at` (steps.py's stamps).
_STAMPS: dict[StepState, tuple[str, ...]] = {
    StepState.RUNNING: ("started_at",),
    StepState.DONE: ("finished_at",),
    StepState.FAILED: ("finished_at",),
    StepState.SKIPPED: ("finished_at",),
    StepState.UNDOING: ("undo_started_at",),
    StepState.UNDONE: ("undo_finished_at",),
    StepState.UNDO_FAILED: ("undo_finished_at",),
}

_HOLD_NULL = (
    update(tasks)
    .where(tasks.c.id == bindparam("w_id"), tasks.c.owner.is_(None))
    .values(owner=tasks.c.owner)
    .returning(tasks.c.cancel_requested)
)
_HOLD_ONE = (
    update(tasks)
    .where(tasks.c.id == bindparam("w_id"), tasks.c.owner == bindparam("w_owner"))
    .values(owner=tasks.c.owner)
    .returning(tasks.c.cancel_requested)
)
_CANCEL_REQUESTED = select(tasks.c.cancel_requested).where(tasks.c.id == bindparam("w_id"))
_MARK = update(task_steps).where(
    task_steps.c.task_id == bindparam("w_task"),
    task_steps.c.idx == bindparam("w_idx"),
    task_steps.c.state.in_(bindparam("w_from", expanding=True)),
)
_STEP_COMMANDS = select(task_steps.c.commands).where(
    task_steps.c.task_id == bindparam("w_task"), task_steps.c.idx == bindparam("w_idx")
)
_SET_STEP_COMMANDS = (
    update(task_steps)
    .where(task_steps.c.task_id == bindparam("w_task"), task_steps.c.idx == bindparam("w_idx"))
    .values(commands=bindparam("w_commands"))
)
_STEPS_OF = (
    select(task_steps).where(task_steps.c.task_id == bindparam("w_task")).order_by(task_steps.c.idx)
)


def hold(conn: Connection, task_id: str, owners: Sequence[str | None]) -> bool | None:
    """`task_owners.hold`, and what the task's row says of a cancel: None when the task's
    owner is none of `owners`; else whether a cancel was requested, its row locked."""
    if len(owners) != 1:
        if not task_owners.hold(conn, task_id, owners):
            return None
        return bool(conn.execute(_CANCEL_REQUESTED, {"w_id": task_id}).scalar())
    owner = owners[0]
    if owner is None:
        row = conn.execute(_HOLD_NULL, {"w_id": task_id}).first()
    else:
        row = conn.execute(_HOLD_ONE, {"w_id": task_id, "w_owner": owner}).first()
    return None if row is None else bool(row[0])


def mark_step(
    conn: Connection,
    task_id: str,
    idx: int,
    state: str,
    now: datetime,
    *,
    attempts: int | None = None,
    retry_at: datetime | None = None,
    **values: Any,
) -> None:
    """`steps.mark` in one statement: the update is guarded by the states the table allows
    the move from; InvalidState (and a log line) when the step is in none of them."""
    dst = StepState(state)
    if (dst is StepState.WAITING) != (retry_at is not None):
        raise ValueError("retry_at is required to enter `waiting`, and only then")
    if "state" in values:
        raise ValueError("a step's state is the `dst` of the move")
    written: dict[str, Any] = dict.fromkeys(_STAMPS.get(dst, ()), now)
    if dst is StepState.RUNNING:
        written["error"] = None
    if attempts is not None:
        written["attempts"] = attempts
    written |= values
    written |= {"state": dst.value, "retry_at": retry_at}
    where = {"w_task": task_id, "w_idx": idx, "w_from": _SOURCES[dst]}
    if conn.execute(_MARK, {**written, **where}).rowcount != 1:
        current = steps.get(conn, task_id, idx).state
        log.warning("task %s step %d: refused transition %s -> %s", task_id, idx, current, dst)
        raise InvalidState(f"task {task_id} step {idx}: cannot move from {current} to {dst}")


def steps_of(conn: Connection, task_id: str) -> list[TaskStep]:
    """`steps.of_task`: the task's steps in order."""
    return [step_of_row(r) for r in conn.execute(_STEPS_OF, {"w_task": task_id})]


def record_command(
    conn: Connection,
    task_id: str,
    idx: int,
    key: str,
    command_id: str,
    known: dict[str, str] | None = None,
) -> None:
    """`steps.record_command`: the step's call `key` sent as command `command_id`. `known`:
    the commands the step has recorded so far, when the caller knows them (else read)."""
    where = {"w_task": task_id, "w_idx": idx}
    if known is None:
        known = conn.execute(_STEP_COMMANDS, where).scalar() or {}
    conn.execute(_SET_STEP_COMMANDS, {**where, "w_commands": {**known, key: command_id}})
