"""Persisted steps of tasks: each step's state and result is written before the next starts.
Every state change is checked against the whitelisted table (domain/tasks.py) and made as a
compare-and-swap on the state it was read in."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, insert, select, update
from sqlalchemy.exc import CompileError

from bollard.domain.errors import InvalidState, NotFound
from bollard.domain.models import TaskStep
from bollard.domain.tasks import StepState, step_allowed
from bollard.store.db import utc
from bollard.store.tables import task_steps

log = logging.getLogger(__name__)

# The time each state stamps when a step enters it.
_STAMPS: dict[StepState, tuple[str, ...]] = {
    StepState.RUNNING: ("started_at",),
    StepState.DONE: ("finished_at",),
    StepState.FAILED: ("finished_at",),
    StepState.SKIPPED: ("finished_at",),
    StepState.UNDOING: ("undo_started_at",),
    StepState.UNDONE: ("undo_finished_at",),
    StepState.UNDO_FAILED: ("undo_finished_at",),
}

# Columns written only through transition().
_STATE_COLUMNS = frozenset({"state", "retry_at"})
_COLUMNS = frozenset(task_steps.c.keys())
# The states each step state may be entered from (the table of domain/tasks.py read
# backwards), as stored.
_SOURCES: dict[StepState, list[str]] = {
    dst: [src.value for src in StepState if step_allowed(src, dst)] for dst in StepState
}
# mark()'s move, built once (see tasks_hot.py): guarded by the states the table allows the
# move from; the columns written are the parameters' own.
_MARK = update(task_steps).where(
    task_steps.c.task_id == bindparam("w_task"),
    task_steps.c.idx == bindparam("w_idx"),
    task_steps.c.state.in_(bindparam("w_from", expanding=True)),
)


def _step(row: Row[Any]) -> TaskStep:
    m = row._mapping
    return TaskStep(
        task_id=m["task_id"],
        idx=m["idx"],
        name=m["name"],
        state=m["state"],
        result=dict(m["result"] or {}),
        commands=dict(m["commands"] or {}),
        error=m["error"],
        started_at=utc(m["started_at"]),
        finished_at=utc(m["finished_at"]),
        undo_started_at=utc(m["undo_started_at"]),
        undo_finished_at=utc(m["undo_finished_at"]),
        undo_error=m["undo_error"],
        attempts=m["attempts"],
        retry_at=utc(m["retry_at"]),
    )


def create_all(conn: Connection, task_id: str, names: list[str]) -> None:
    for idx, name in enumerate(names):
        conn.execute(
            insert(task_steps).values(
                task_id=task_id,
                idx=idx,
                name=name,
                state=StepState.PENDING.value,
                result={},
                commands={},
                attempts=0,
            )
        )


def of_task(conn: Connection, task_id: str) -> list[TaskStep]:
    rows = conn.execute(
        select(task_steps).where(task_steps.c.task_id == task_id).order_by(task_steps.c.idx)
    ).all()
    return [_step(r) for r in rows]


def get(conn: Connection, task_id: str, idx: int) -> TaskStep:
    row = conn.execute(
        select(task_steps).where(task_steps.c.task_id == task_id, task_steps.c.idx == idx)
    ).one()
    return _step(row)


def state(conn: Connection, task_id: str, idx: int) -> StepState:
    value = conn.execute(
        select(task_steps.c.state).where(task_steps.c.task_id == task_id, task_steps.c.idx == idx)
    ).scalar()
    if value is None:
        raise NotFound(f"task {task_id} has no step {idx}")
    return StepState(value)


_state_of = state  # (mark() has a parameter of that name)


def update_step(conn: Connection, task_id: str, idx: int, **values: Any) -> None:
    """Write a step's other columns (result, commands, errors...); its state changes only
    through transition()."""
    if _STATE_COLUMNS & values.keys():
        raise ValueError("a step's state changes only through steps.transition()")
    conn.execute(
        update(task_steps)
        .where(task_steps.c.task_id == task_id, task_steps.c.idx == idx)
        .values(**values)
    )


def record_command(conn: Connection, task_id: str, idx: int, key: str, command_id: str) -> None:
    step = get(conn, task_id, idx)
    update_step(conn, task_id, idx, commands={**step.commands, key: command_id})


def transition(
    conn: Connection,
    task_id: str,
    idx: int,
    dst: StepState,
    now: datetime,
    *,
    expect: StepState | None = None,
    attempts: int | None = None,
    retry_at: datetime | None = None,
    **values: Any,
) -> bool:
    """Move a step to `dst` if the table allows it from its current state (and, with
    `expect`, only from that state), stamping the matching time.

    `retry_at` is set exactly while a step is waiting: required to enter `waiting`, refused
    (ValueError) with any other state, and cleared on leaving it. `attempts`, when given, is
    stored with the move. Returns False (and logs) when the move is refused; the update is
    guarded by the state it read, so a concurrent change makes it return False too."""
    if (dst is StepState.WAITING) != (retry_at is not None):
        raise ValueError("retry_at is required to enter `waiting`, and only then")
    if "state" in values:
        raise ValueError("a step's state is the `dst` of transition()")
    src = state(conn, task_id, idx)
    if expect is not None and src is not expect:
        return False
    if not step_allowed(src, dst):
        log.warning("task %s step %d: refused transition %s -> %s", task_id, idx, src, dst)
        return False
    written = _written(dst, now, attempts, retry_at, values)
    result = conn.execute(
        update(task_steps)
        .where(
            task_steps.c.task_id == task_id,
            task_steps.c.idx == idx,
            task_steps.c.state == src.value,
        )
        .values(**written)
    )
    return result.rowcount == 1


def _written(
    dst: StepState,
    now: datetime,
    attempts: int | None,
    retry_at: datetime | None,
    values: dict[str, Any],
) -> dict[str, Any]:
    """The columns a move to `dst` writes: its time stamp, the error cleared when it runs
    again, the attempts, `values`, the state and `retry_at`."""
    written: dict[str, Any] = dict.fromkeys(_STAMPS.get(dst, ()), now)
    if dst is StepState.RUNNING:
        written["error"] = None
    if attempts is not None:
        written["attempts"] = attempts
    return written | values | {"state": dst.value, "retry_at": retry_at}


def mark(
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
    """Move a step to `state` (a StepState value), stamping the matching time, as
    transition() does but in one statement: the update is guarded by the states the table
    allows the move from (no read). Raises InvalidState (and logs) when the step is in none
    of them: the engine relies on every mark."""
    dst = StepState(state)
    if (dst is StepState.WAITING) != (retry_at is not None):
        raise ValueError("retry_at is required to enter `waiting`, and only then")
    if not _COLUMNS.issuperset(values):  # as .values() would (parameters are not checked)
        raise CompileError(f"Unconsumed column names: {', '.join(values.keys() - _COLUMNS)}")
    written = _written(dst, now, attempts, retry_at, values)
    where = {"w_task": task_id, "w_idx": idx, "w_from": _SOURCES[dst]}
    if conn.execute(_MARK, {**written, **where}).rowcount != 1:
        current = _state_of(conn, task_id, idx)
        log.warning("task %s step %d: refused transition %s -> %s", task_id, idx, current, dst)
        raise InvalidState(f"task {task_id} step {idx}: cannot move from {current} to {dst}")
