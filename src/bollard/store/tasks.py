"""Queries on tasks (operations). Issue-4 work will add persisted steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, and_, bindparam, insert, select, update

from bollard.domain import actors
from bollard.domain.errors import NotFound
from bollard.domain.models import Page, Task
from bollard.domain.states import TaskStatus
from bollard.domain.tasks import task_allowed
from bollard.store import pagination, tasks_hot
from bollard.store.db import utc
from bollard.store.tables import tasks, vms


def _task(row: Row[Any]) -> Task:
    m = row._mapping
    return Task(
        id=m["id"],
        type=m["type"],
        vm_uuid=m["vm_uuid"],
        vm_name=m["vm_name"],
        node=m["node"],
        state=TaskStatus(m["state"]),
        params=dict(m["params"] or {}),
        error=m["error"],
        created_at=utc(m["created_at"]) or m["created_at"],
        updated_at=utc(m["updated_at"]) or m["updated_at"],
        finished_at=utc(m["finished_at"]),
        result=dict(m["result"] or {}),
        cancel_requested=bool(m["cancel_requested"]),
        actor=m["actor"],
        request_id=m["request_id"],
        owner=m["owner"],
    )


def create(
    conn: Connection,
    *,
    id: str,
    type: str,
    vm_uuid: str | None,
    vm_name: str | None,
    node: str | None,
    params: dict[str, Any],
    now: datetime,
    actor: str | None = None,
    request_id: str | None = None,
    owner: str | None = None,
) -> Task:
    """Create a pending task; its actor is `actor`, else the current one (domain/actors.py);
    its request id `request_id`, else the current API request's (None outside one); `owner`:
    the id of the server that runs it (store/task_owners.py)."""
    conn.execute(
        insert(tasks).values(
            id=id,
            type=type,
            vm_uuid=vm_uuid,
            vm_name=vm_name,
            node=node,
            state=TaskStatus.PENDING.value,
            params=params,
            actor=actor or actors.current(),
            request_id=request_id or actors.current_request(),
            created_at=now,
            updated_at=now,
            owner=owner,
        )
    )
    return get(conn, id)


def insert_ended(
    conn: Connection,
    *,
    id: str,
    type: str,
    vm_uuid: str,
    vm_name: str,
    state: TaskStatus,
    error: str | None,
    actor: str | None,
    request_id: str | None,
    created_at: datetime,
    finished_at: datetime | None,
) -> bool:
    """Keep a task another database ran (a VM's history, copied with it between cells),
    ended, without its steps; False if a task of that id is here already."""
    if conn.execute(select(tasks.c.id).where(tasks.c.id == id)).first() is not None:
        return False
    conn.execute(
        insert(tasks).values(
            id=id, type=type, vm_uuid=vm_uuid, vm_name=vm_name, node=None, state=state.value,
            params={}, error=error, actor=actor, request_id=request_id, created_at=created_at,
            updated_at=finished_at or created_at, finished_at=finished_at,
        )
    )  # fmt: skip
    return True


def get(conn: Connection, id: str, *, with_steps: bool = False) -> Task:
    row = conn.execute(_GET, {"w_id": id}).first()
    if row is None:
        raise NotFound(f"task {id} does not exist")
    task = _task(row)
    if with_steps:
        task = replace(task, steps=tasks_hot.steps_of(conn, id))
    return task


# Statements of the task engine's every step, built once (see tasks_hot.py).
_GET = select(tasks).where(tasks.c.id == bindparam("w_id"))
_STATE = select(tasks.c.state).where(tasks.c.id == bindparam("w_id"))
_CANCEL_REQUESTED = select(tasks.c.cancel_requested).where(tasks.c.id == bindparam("w_id"))
_SET_STATE = update(tasks).where(tasks.c.id == bindparam("w_id"))
_SOURCES: dict[TaskStatus, list[str]] = {
    dst: [src.value for src in TaskStatus if task_allowed(src, dst)] for dst in TaskStatus
}
_ADVANCE = update(tasks).where(
    tasks.c.id == bindparam("w_id"), tasks.c.state.in_(bindparam("w_from", expanding=True))
)
_SET_STATE_CAS = update(tasks).where(
    tasks.c.id == bindparam("w_id"), tasks.c.state == bindparam("w_expect")
)


def state(conn: Connection, id: str) -> TaskStatus:
    """The task's state now (NotFound: no such task)."""
    value = conn.execute(_STATE, {"w_id": id}).scalar()
    if value is None:
        raise NotFound(f"task {id} does not exist")
    return TaskStatus(value)


def cancel_requested(conn: Connection, id: str) -> bool:
    """Whether a cancel of the task was requested (NotFound: no such task)."""
    value = conn.execute(_CANCEL_REQUESTED, {"w_id": id}).scalar()
    if value is None:
        raise NotFound(f"task {id} does not exist")
    return bool(value)


def list_page(
    conn: Connection,
    *,
    limit: int,
    cursor: str | None,
    vm_name: str | None = None,
    vm_uuid: str | None = None,
    newest_first: bool = False,
    states: Sequence[TaskStatus] | None = None,
) -> Page:
    """Tasks in the order they were created (ids sort by creation time), oldest first or,
    with `newest_first`, newest first; only those of the VM `vm_uuid`, or of VMs named
    `vm_name`, when given, and only those in `states` when given."""
    conditions: list[ColumnElement[bool]] = []
    if vm_uuid is not None:
        conditions.append(tasks.c.vm_uuid == vm_uuid)
    elif vm_name is not None:
        conditions.append(tasks.c.vm_name == vm_name)
    if states is not None:
        conditions.append(tasks.c.state.in_([s.value for s in states]))
    where = and_(*conditions) if conditions else None
    return pagination.page(
        conn, tasks, tasks.c.id, _task,
        limit=limit, cursor=cursor, where=where, descending=newest_first,
    )  # fmt: skip


def resolve_vm(conn: Connection, vm: str) -> tuple[str | None, str | None]:
    """A `--vm` filter as (vm_uuid, vm_name) to match: the VM of that name now (its uuid, so
    the tasks of an earlier VM of the same name are left out), else the VM with that uuid,
    now or deleted, else a deleted VM's name; NotFound when no VM ever had it."""
    current = conn.execute(select(vms.c.uuid).where(vms.c.name == vm)).scalar()
    if current is not None:
        return str(current), None
    if conn.execute(select(vms.c.uuid).where(vms.c.uuid == vm)).first() is not None:
        return vm, None
    if conn.execute(select(tasks.c.id).where(tasks.c.vm_uuid == vm).limit(1)).first():
        return vm, None
    if conn.execute(select(tasks.c.id).where(tasks.c.vm_name == vm).limit(1)).first():
        return None, vm
    raise NotFound(f"no VM named {vm!r}")


def unfinished(conn: Connection, *, include_rolling_back: bool = False) -> list[Task]:
    states = [TaskStatus.PENDING.value, TaskStatus.RUNNING.value]
    if include_rolling_back:
        states.append(TaskStatus.ROLLING_BACK.value)
    rows = conn.execute(select(tasks).where(tasks.c.state.in_(states)).order_by(tasks.c.id)).all()
    return [_task(r) for r in rows]


def set_state(
    conn: Connection,
    id: str,
    state: TaskStatus,
    now: datetime,
    *,
    error: str | None = None,
    expect: TaskStatus | None = None,
) -> bool:
    """Set a task's state (compare-and-swap on `expect` when given); False if it changed."""
    values: dict[str, Any] = {"state": state.value, "updated_at": now, "error": error, "w_id": id}
    if state.ended:
        values["finished_at"] = now
    if expect is None:
        return conn.execute(_SET_STATE, values).rowcount == 1
    return conn.execute(_SET_STATE_CAS, {**values, "w_expect": expect.value}).rowcount == 1


def advance(
    conn: Connection, id: str, state: TaskStatus, now: datetime, *, error: str | None = None
) -> bool:
    """`set_state` guarded by the whitelisted table (domain/tasks.py) instead of a state read
    first: one statement; False when the task is in no state the move is allowed from."""
    values: dict[str, Any] = {"state": state.value, "updated_at": now, "error": error, "w_id": id}
    if state.ended:
        values["finished_at"] = now
    return conn.execute(_ADVANCE, {**values, "w_from": _SOURCES[state]}).rowcount == 1


def set_result(conn: Connection, id: str, result: dict[str, Any]) -> None:
    conn.execute(update(tasks).where(tasks.c.id == id).values(result=result))


def get_many(conn: Connection, ids: list[str]) -> list[Task]:
    if not ids:
        return []
    return [_task(r) for r in conn.execute(select(tasks).where(tasks.c.id.in_(ids))).all()]


def of_vm(conn: Connection, vm_uuid: str, limit: int = 500) -> list[Task]:
    """The tasks that acted on a VM, newest first (ids sort by creation)."""
    rows = conn.execute(
        select(tasks).where(tasks.c.vm_uuid == vm_uuid).order_by(tasks.c.id.desc()).limit(limit)
    ).all()
    return [_task(r) for r in rows]


def of_request(conn: Connection, vm_uuid: str, request_id: str) -> list[Task]:
    """The tasks of a VM that one API request created (or the task whose derived request id
    is `request_id`: req-<task id>)."""
    named = tasks.c.request_id == request_id
    if request_id.startswith("req-"):
        named = named | (tasks.c.id == request_id[4:])
    rows = conn.execute(
        select(tasks).where(tasks.c.vm_uuid == vm_uuid, named).order_by(tasks.c.id)
    ).all()
    return [_task(r) for r in rows]
