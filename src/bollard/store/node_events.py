"""A node's latest event of one kind (e.g. the `node.shutdown` that recorded what its clean
shutdown did, read back when the node returns)."""

from __future__ import annotations

from sqlalchemy import Connection, select

from bollard.domain.models import Event
from bollard.store.events import _event
from bollard.store.tables import events


def latest(conn: Connection, node: str, kind: str) -> Event | None:
    """The node's newest event of ``kind``; None if it has none. (Read backwards by id: the
    event sought is recent.)"""
    row = conn.execute(
        select(events)
        .where(events.c.node == node, events.c.kind == kind)
        .order_by(events.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else _event(row)
