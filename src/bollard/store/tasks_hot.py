"""The writes every task step makes, as statements built once.

A statement SQLAlchemy builds anew costs its construction and its cache key each time (about
100 µs for a one-row UPDATE, 170 µs for an event's INSERT, against 25 to 40 µs for the same
statement built once and given its values); a create with start makes some thirty of them.
These are the task engine's and the dispatcher's: holding a task, a step's commands, its
task's steps. Each does what its counterpart in steps.py, task_owners.py or tasks.py does
(the same table checks, the same compare-and-swap), and the counterparts stay the reference
for everything else. (A step's move is steps.mark, built once there.)
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, bindparam, select, update

from bollard.domain.models import TaskStep
from bollard.store import task_owners
from bollard.store.steps import _step as step_of_row  # the row's TaskStep, as steps.py reads it
from bollard.store.tables import task_steps, tasks

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
