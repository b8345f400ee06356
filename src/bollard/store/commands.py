"""Queries on commands. Every state change is checked against the whitelisted table and made
as a compare-and-swap on the current state."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from bollard.domain.commands import CommandState, allowed
from bollard.domain.errors import InvalidState, NotFound
from bollard.store.tables import commands

log = logging.getLogger(__name__)


def create(
    conn: Connection,
    *,
    id: str,
    node: str,
    type: str,
    args: dict[str, Any],
    vm_uuid: str | None,
    epoch: int,
    task_id: str | None,
    deadline: datetime,
    now: datetime,
) -> None:
    conn.execute(
        insert(commands).values(
            id=id,
            node=node,
            type=type,
            args=args,
            vm_uuid=vm_uuid,
            epoch=epoch,
            task_id=task_id,
            state=CommandState.CREATED.value,
            attempts=0,
            deadline=deadline,
            created_at=now,
            updated_at=now,
        )
    )


def state(conn: Connection, id: str) -> CommandState:
    value = conn.execute(select(commands.c.state).where(commands.c.id == id)).scalar()
    if value is None:
        raise NotFound(f"command {id} does not exist")
    return CommandState(value)


def transition(
    conn: Connection,
    id: str,
    dst: CommandState,
    now: datetime,
    **values: Any,
) -> bool:
    """Move a command to `dst` if the table allows it from its current state.

    Returns False (and logs) when the transition is not allowed; the caller decides whether
    that is an error. The update is guarded by the state it read, so a concurrent change
    makes it return False instead of overwriting.
    """
    src = state(conn, id)
    if not allowed(src, dst):
        log.warning("command %s: refused transition %s -> %s", id, src, dst)
        return False
    result = conn.execute(
        update(commands)
        .where(commands.c.id == id, commands.c.state == src.value)
        .values(state=dst.value, updated_at=now, **values)
    )
    return result.rowcount == 1


def require_transition(
    conn: Connection, id: str, dst: CommandState, now: datetime, **values: Any
) -> None:
    if not transition(conn, id, dst, now, **values):
        raise InvalidState(f"command {id} cannot move to {dst}")


def interrupt_unfinished(conn: Connection, now: datetime) -> int:
    """At server start: commands left CREATED or SENT by a previous run become INTERRUPTED."""
    result = conn.execute(
        update(commands)
        .where(commands.c.state.in_([CommandState.CREATED.value, CommandState.SENT.value]))
        .values(state=CommandState.INTERRUPTED.value, updated_at=now)
    )
    return int(result.rowcount)
