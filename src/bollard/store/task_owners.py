"""Which server runs each unfinished task (`tasks.owner`, a server id), and taking over the
tasks of servers that are no longer up.

A server's writes for a task first `hold` it: the row is locked (a takeover's compare-and-swap
waits for the transaction to end) and the write goes on only while the owner is still the one
the server runs it under. A task whose owner is NULL, or a server whose row is missing or no
longer up, is an orphan: any server may `take` it, and the compare-and-swap lets one win.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, Connection, exists, false, or_, select, update

from bollard.domain.servers import ServerState
from bollard.domain.states import TaskStatus
from bollard.store.tables import servers, tasks

# The states a task is driven in (`tasks.unfinished(include_rolling_back=True)`).
UNFINISHED = (TaskStatus.PENDING.value, TaskStatus.RUNNING.value, TaskStatus.ROLLING_BACK.value)


def _owned_by(owners: Sequence[str | None]) -> ColumnElement[bool]:
    ids = [o for o in owners if o is not None]
    terms: list[ColumnElement[bool]] = []
    if ids:
        terms.append(tasks.c.owner.in_(ids))
    if None in owners:
        terms.append(tasks.c.owner.is_(None))
    return or_(*terms) if terms else false()


def _up(server_id: ColumnElement[str | None] | str) -> ColumnElement[bool]:
    return exists().where(servers.c.id == server_id, servers.c.state == ServerState.UP.value)


def hold(conn: Connection, task_id: str, owners: Sequence[str | None]) -> bool:
    """Whether the task's owner is one of `owners` (None: NULL), locking its row until the
    transaction ends (on PostgreSQL a takeover's `take` waits for it)."""
    done = conn.execute(
        update(tasks).where(tasks.c.id == task_id, _owned_by(owners)).values(owner=tasks.c.owner)
    )
    return done.rowcount == 1


def owner_of(conn: Connection, task_id: str) -> str | None:
    """The task's owner now (None: NULL, or no such task)."""
    value = conn.execute(select(tasks.c.owner).where(tasks.c.id == task_id)).scalar()
    return None if value is None else str(value)


def orphans(conn: Connection) -> list[tuple[str, str | None]]:
    """The unfinished tasks no live server runs, as (task id, owner), oldest first: owner
    NULL, or a server whose row is missing or not up."""
    query = (
        select(tasks.c.id, tasks.c.owner)
        .where(tasks.c.state.in_(UNFINISHED), or_(tasks.c.owner.is_(None), ~_up(tasks.c.owner)))
        .order_by(tasks.c.id)
    )
    return [(str(r.id), None if r.owner is None else str(r.owner)) for r in conn.execute(query)]


def take(conn: Connection, task_id: str, old: str | None, new: str | None) -> bool:
    """Compare-and-swap the owner of an orphan: `old` -> `new`, only while its owner is still
    `old`, `old` is not up, and the task has not ended. Whether it was taken."""
    query = update(tasks).where(
        tasks.c.id == task_id, tasks.c.state.in_(UNFINISHED), _owned_by([old])
    )
    if old is not None:
        query = query.where(~_up(old))
    return conn.execute(query.values(owner=new)).rowcount == 1
