"""Persisted steps of tasks: each step's state and result is written before the next starts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from bollard.domain.models import TaskStep
from bollard.store.db import utc
from bollard.store.tables import task_steps


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
    )


def create_all(conn: Connection, task_id: str, names: list[str]) -> None:
    for idx, name in enumerate(names):
        conn.execute(
            insert(task_steps).values(
                task_id=task_id, idx=idx, name=name, state="pending", result={}, commands={}
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


def update_step(conn: Connection, task_id: str, idx: int, **values: Any) -> None:
    conn.execute(
        update(task_steps)
        .where(task_steps.c.task_id == task_id, task_steps.c.idx == idx)
        .values(**values)
    )


def record_command(conn: Connection, task_id: str, idx: int, key: str, command_id: str) -> None:
    step = get(conn, task_id, idx)
    update_step(conn, task_id, idx, commands={**step.commands, key: command_id})


def mark(
    conn: Connection, task_id: str, idx: int, state: str, now: datetime, **values: Any
) -> None:
    """Move a step to `state`, stamping the matching time."""
    stamp: dict[str, Any] = {}
    if state == "running":
        stamp = {"started_at": now, "error": None}
    elif state in ("done", "failed", "skipped"):
        stamp = {"finished_at": now}
    elif state == "undoing":
        stamp = {"undo_started_at": now}
    elif state in ("undone", "undo_failed"):
        stamp = {"undo_finished_at": now}
    update_step(conn, task_id, idx, state=state, **stamp, **values)
