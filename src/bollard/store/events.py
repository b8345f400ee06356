"""The event log: every task and step transition and every notable decision."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, and_, func, insert, or_, select

from bollard.domain import actors
from bollard.domain.models import Event
from bollard.store.db import utc
from bollard.store.tables import events


def _event(row: Row[Any]) -> Event:
    m = row._mapping
    return Event(
        id=m["id"],
        at=utc(m["at"]) or m["at"],
        kind=m["kind"],
        vm_uuid=m["vm_uuid"],
        vm_name=m["vm_name"],
        node=m["node"],
        task_id=m["task_id"],
        message=m["message"],
        data=dict(m["data"] or {}),
        actor=m["actor"],
    )


def add(
    conn: Connection,
    kind: str,
    message: str,
    now: datetime,
    *,
    vm_uuid: str | None = None,
    vm_name: str | None = None,
    node: str | None = None,
    task_id: str | None = None,
    data: dict[str, Any] | None = None,
    actor: str | None = None,
) -> None:
    """Record an event; its actor is `actor`, else the current one (domain/actors.py)."""
    conn.execute(
        _ADD,
        {
            "at": now,
            "kind": kind,
            "vm_uuid": vm_uuid,
            "vm_name": vm_name,
            "node": node,
            "task_id": task_id,
            "message": message,
            "data": data or {},
            "actor": actor or actors.current(),
        },
    )


_ADD = insert(events)  # built once: a statement on the task engine's hot path


def after(
    conn: Connection,
    after_id: int,
    *,
    limit: int,
    vm: str | None = None,
    node: str | None = None,
    task_id: str | None = None,
    actor: str | None = None,
) -> list[Event]:
    """Events with an id above `after_id`, oldest first. `vm` matches a name or a uuid."""
    conditions: list[ColumnElement[bool]] = [events.c.id > after_id]
    if actor is not None:
        conditions.append(events.c.actor == actor)
    if vm is not None:
        conditions.append(or_(events.c.vm_name == vm, events.c.vm_uuid == vm))
    if node is not None:
        conditions.append(events.c.node == node)
    if task_id is not None:
        conditions.append(events.c.task_id == task_id)
    rows = conn.execute(
        select(events).where(and_(*conditions)).order_by(events.c.id).limit(limit)
    ).all()
    return [_event(r) for r in rows]


def last(conn: Connection, count: int, *, before: int | None = None, **filters: Any) -> list[Event]:
    """The newest `count` events (matching the filters; with `before`, of those whose id is
    less), oldest first."""
    conditions: list[ColumnElement[bool]] = []
    if before is not None:
        conditions.append(events.c.id < before)
    if filters.get("vm") is not None:
        vm = filters["vm"]
        conditions.append(or_(events.c.vm_name == vm, events.c.vm_uuid == vm))
    if filters.get("node") is not None:
        conditions.append(events.c.node == filters["node"])
    if filters.get("task_id") is not None:
        conditions.append(events.c.task_id == filters["task_id"])
    if filters.get("actor") is not None:
        conditions.append(events.c.actor == filters["actor"])
    query = select(events)
    if conditions:
        query = query.where(and_(*conditions))
    rows = conn.execute(query.order_by(events.c.id.desc()).limit(count)).all()
    return [_event(r) for r in reversed(rows)]


def latest_at(conn: Connection, kind: str, vm_uuids: list[str]) -> dict[str, datetime]:
    """When the last event of `kind` happened, per VM uuid (those with none are left out)."""
    if not vm_uuids:
        return {}
    rows = conn.execute(
        select(events.c.vm_uuid, func.max(events.c.at))
        .where(events.c.kind == kind, events.c.vm_uuid.in_(vm_uuids))
        .group_by(events.c.vm_uuid)
    ).all()
    return {r[0]: utc(r[1]) or r[1] for r in rows}


def count_since(conn: Connection, kind: str, vm_uuid: str, since: datetime) -> int:
    value = conn.execute(
        select(func.count()).where(
            events.c.kind == kind, events.c.vm_uuid == vm_uuid, events.c.at >= since
        )
    ).scalar()
    return int(value or 0)
