"""Queries on commands. Every state change is checked against the whitelisted table, made as
a compare-and-swap on the current state, and recorded in the command's history."""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, and_, bindparam, insert, select, update

from bollard.domain.commands import TERMINAL, AgentCommandState, CommandState, allowed
from bollard.domain.errors import InvalidState, NotFound
from bollard.domain.models import CommandRecord, CommandTransition, Page
from bollard.store import pagination
from bollard.store.db import utc
from bollard.store.tables import command_history, commands

log = logging.getLogger(__name__)

# Commands whose outcome, if it still comes, is stored through reconciliation.
AWAITING_RECONCILE = (
    CommandState.INTERRUPTED,
    CommandState.TIMED_OUT,
    CommandState.RECONCILE_RETRY,
)
TO_RECONCILE = (
    CommandState.INTERRUPTED.value,
    CommandState.TIMED_OUT.value,
    CommandState.RECONCILE_RETRY.value,
)


def _record(row: Row[Any], history: list[CommandTransition] | None = None) -> CommandRecord:
    m = row._mapping
    return CommandRecord(
        id=m["id"],
        node=m["node"],
        type=m["type"],
        args=dict(m["args"] or {}),
        vm_uuid=m["vm_uuid"],
        epoch=m["epoch"],
        task_id=m["task_id"],
        state=m["state"],
        agent_state=m["agent_state"],
        answer=m["answer"],
        error=m["error"],
        attempts=m["attempts"],
        deadline=utc(m["deadline"]),
        created_at=utc(m["created_at"]) or m["created_at"],
        updated_at=utc(m["updated_at"]) or m["updated_at"],
        history=history or [],
    )


# Statements of every command's life, built once (see tasks_hot.py).
_ADD_HISTORY = insert(command_history)
_ADD = insert(commands)
_STATE = select(commands.c.state).where(commands.c.id == bindparam("w_id"))
_MOVE = update(commands).where(
    commands.c.id == bindparam("w_id"), commands.c.state == bindparam("w_from")
)
_STATES_OF = select(commands.c.id, commands.c.node, commands.c.state, commands.c.agent_state).where(
    commands.c.id.in_(bindparam("w_ids", expanding=True))
)
_EXISTS = select(commands.c.id).where(commands.c.id == bindparam("w_id"))


def _history(
    conn: Connection, cid: str, src: str | None, dst: str, at: datetime, note: str | None
) -> None:
    conn.execute(
        _ADD_HISTORY,
        {"command_id": cid, "at": at, "from_state": src, "to_state": dst, "note": note},
    )


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
    sent: bool = False,
) -> None:
    """Write a new command, CREATED; with `sent`, moved on to SENT at once (its sender is
    about to send it): both moves are in its history."""
    created, sent_state = CommandState.CREATED.value, CommandState.SENT.value
    conn.execute(
        _ADD,
        {
            "id": id, "node": node, "type": type, "args": args, "vm_uuid": vm_uuid,
            "epoch": epoch, "task_id": task_id, "state": sent_state if sent else created,
            "attempts": 0, "deadline": deadline, "created_at": now, "updated_at": now,
        },
    )  # fmt: skip
    moves = [{"command_id": id, "at": now, "from_state": None, "to_state": created, "note": None}]
    if sent:
        moves.append(
            {"command_id": id, "at": now, "from_state": created, "to_state": sent_state,
             "note": None}
        )  # fmt: skip
    conn.execute(_ADD_HISTORY, moves)


def get(conn: Connection, id: str, *, with_history: bool = False) -> CommandRecord:
    row = conn.execute(select(commands).where(commands.c.id == id)).first()
    if row is None:
        raise NotFound(f"command {id} does not exist")
    history = None
    if with_history:
        history = [
            CommandTransition(utc(h.at) or h.at, h.from_state, h.to_state, h.note)
            for h in conn.execute(
                select(command_history)
                .where(command_history.c.command_id == id)
                .order_by(command_history.c.id)
            ).all()
        ]
    return _record(row, history)


def exists(conn: Connection, id: str) -> bool:
    return conn.execute(_EXISTS, {"w_id": id}).first() is not None


def state(conn: Connection, id: str) -> CommandState:
    value = conn.execute(_STATE, {"w_id": id}).scalar()
    if value is None:
        raise NotFound(f"command {id} does not exist")
    return CommandState(value)


def transition(
    conn: Connection,
    id: str,
    dst: CommandState,
    now: datetime,
    *,
    note: str | None = None,
    expect: CommandState | None = None,
    read_as: CommandState | None = None,
    **values: Any,
) -> bool:
    """Move a command to `dst` if the table allows it from its current state (and, with
    `expect`, only from that state). `read_as`: its state as the caller has just read it in
    this transaction (not read again).

    Returns False (and logs) when the transition is refused. The update is guarded by the
    state it read, so a concurrent change makes it return False instead of overwriting.
    """
    src = read_as if read_as is not None else state(conn, id)
    if expect is not None and src is not expect:
        return False
    if not allowed(src, dst):
        log.warning("command %s: refused transition %s -> %s", id, src, dst)
        return False
    result = conn.execute(
        _MOVE, {**values, "state": dst.value, "updated_at": now, "w_id": id, "w_from": src.value}
    )
    if result.rowcount != 1:
        return False
    _history(conn, id, src.value, dst.value, now, note)
    return True


def require_transition(
    conn: Connection, id: str, dst: CommandState, now: datetime, **values: Any
) -> None:
    if not transition(conn, id, dst, now, **values):
        raise InvalidState(f"command {id} cannot move to {dst}")


def states_of(conn: Connection, ids: list[str]) -> dict[str, tuple[str, CommandState, str | None]]:
    """Each known command's (node, state, agent_state), by id (unknown ids are left out)."""
    found: dict[str, tuple[str, CommandState, str | None]] = {}
    for start in range(0, len(ids), 500):
        rows = conn.execute(_STATES_OF, {"w_ids": ids[start : start + 500]})
        for cid, node, state, agent_state in rows:
            found[cid] = (node, CommandState(state), agent_state)
    return found


def set_agent_state(conn: Connection, id: str, agent_state: str, now: datetime) -> bool:
    """Store the state the agent's journal reports; False if the command is unknown."""
    result = conn.execute(
        update(commands).where(commands.c.id == id).values(agent_state=agent_state, updated_at=now)
    )
    return result.rowcount == 1


def interrupt_unfinished(
    conn: Connection,
    now: datetime,
    *,
    nodes: Collection[str] | None = None,
    except_nodes: Collection[str] = (),
    created: bool = True,
    why: str = "the server restarted",
) -> int:
    """Commands left CREATED or SENT by a server that is gone become INTERRUPTED, and those
    it was reconciling are asked again (RECONCILE_RETRY): at a server's start, of every node
    (one server) or of every node but `except_nodes` (several: those whose sessions live
    peers hold); when a peer is found gone, of the `nodes` it held; when a node's agent
    connects, of that node, but not those CREATED (`created` False: their sender, alive, is
    about to send them). How many moved."""
    states = [CommandState.CREATED.value] if created else []
    where: ColumnElement[bool] = commands.c.state.in_([*states, CommandState.SENT.value])
    again: ColumnElement[bool] = commands.c.state == CommandState.RECONCILING.value
    if nodes is not None:
        if not nodes:
            return 0
        where = and_(where, commands.c.node.in_(sorted(nodes)))
        again = and_(again, commands.c.node.in_(sorted(nodes)))
    if except_nodes:
        where = and_(where, commands.c.node.not_in(sorted(except_nodes)))
        again = and_(again, commands.c.node.not_in(sorted(except_nodes)))
    rows = conn.execute(select(commands.c.id).where(where)).all()
    for row in rows:
        transition(
            conn, row.id, CommandState.INTERRUPTED, now, note=f"{why} before the answer arrived"
        )
    reconciling = conn.execute(select(commands.c.id).where(again)).all()
    for row in reconciling:
        transition(
            conn, row.id, CommandState.RECONCILE_RETRY, now, note=f"{why} while reconciling it"
        )
    return len(rows) + len(reconciling)


def to_reconcile(
    conn: Connection, *, node: str | None = None, limit: int = 1000
) -> list[CommandRecord]:
    where: ColumnElement[bool] = commands.c.state.in_(TO_RECONCILE)
    if node is not None:
        where = and_(where, commands.c.node == node)
    rows = conn.execute(select(commands).where(where).order_by(commands.c.id).limit(limit)).all()
    return [_record(r) for r in rows]


def for_task(conn: Connection, task_id: str) -> list[CommandRecord]:
    rows = conn.execute(
        select(commands).where(commands.c.task_id == task_id).order_by(commands.c.id)
    ).all()
    return [_record(r) for r in rows]


def list_page(
    conn: Connection,
    *,
    limit: int,
    cursor: str | None,
    node: str | None = None,
    vm_uuid: str | None = None,
    states: list[str] | None = None,
    newest_first: bool = False,
) -> Page:
    """Commands in the order they were created (ids sort by creation time), oldest first or,
    with `newest_first`, newest first, matching the filters given."""
    conditions = []
    if node is not None:
        conditions.append(commands.c.node == node)
    if vm_uuid is not None:
        conditions.append(commands.c.vm_uuid == vm_uuid)
    if states:
        conditions.append(commands.c.state.in_(states))
    where = and_(*conditions) if conditions else None
    return pagination.page(
        conn, commands, commands.c.id, _record,
        limit=limit, cursor=cursor, where=where, descending=newest_first,
    )  # fmt: skip


def open_on_node(conn: Connection, node: str) -> list[CommandRecord]:
    """Commands sent (or about to be) to `node` that have not reached a final state."""
    final = [s.value for s in TERMINAL]
    rows = conn.execute(
        select(commands).where(commands.c.node == node, commands.c.state.not_in(final))
    ).all()
    return [_record(r) for r in rows]


def store_outcome(
    conn: Connection,
    cid: str,
    *,
    ok: bool,
    answer: dict[str, Any],
    error: str | None,
    via: str,
    answer_state: AgentCommandState | None,
    current: CommandState,
    now: datetime,
) -> bool:
    """Store the outcome of ``cid`` (the dispatcher's: an answer, a journal entry), whose
    state is `current` as just read in this transaction; whether it ended it. `answer`: the
    answer as stored, `error`: its message when it failed."""
    ended = AgentCommandState.COMPLETED if ok else AgentCommandState.FAILED
    agent_state = (answer_state or ended).value
    values: dict[str, Any] = {"answer": answer, "agent_state": agent_state, "error": error}
    if current is CommandState.SENT:
        final = CommandState.COMPLETED if ok else CommandState.FAILED
        return transition(conn, cid, final, now, note=f"via {via}", read_as=current, **values)
    if current in AWAITING_RECONCILE:
        # The outcome arrived after the session was lost or the deadline passed.
        reconciling = transition(
            conn, cid, CommandState.RECONCILING, now, note=f"outcome via {via}", read_as=current
        )
        return transition(
            conn, cid, CommandState.RECONCILED, now, note=f"outcome via {via}",
            read_as=CommandState.RECONCILING if reconciling else None, **values,
        )  # fmt: skip
    set_agent_state(conn, cid, agent_state, now)
    return False


def abandon_node(conn: Connection, node: str, reason: str, now: datetime) -> list[str]:
    """End every open command of `node` (off: they can never complete): FAILED, or
    RECONCILE_SKIPPED; the ids of those ended."""
    ended = []
    for cmd in open_on_node(conn, node):
        state = CommandState(cmd.state)
        if state in (CommandState.CREATED, CommandState.SENT):
            done = transition(conn, cmd.id, CommandState.FAILED, now, note=reason, error=reason)
        else:
            if state is not CommandState.RECONCILING:
                transition(conn, cmd.id, CommandState.RECONCILING, now, note=reason)
            done = transition(
                conn, cmd.id, CommandState.RECONCILE_SKIPPED, now, note=reason, error=reason
            )
        if done:
            ended.append(cmd.id)
    return ended
