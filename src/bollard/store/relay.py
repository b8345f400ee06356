"""Messages between servers, kept in the database until the server they are for takes them
(the bus only wakes it). A server found gone has its messages dropped."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, insert, select

from bollard.domain.servers import RelayMessage
from bollard.store.db import utc
from bollard.store.tables import relay


def put(
    conn: Connection,
    *,
    to_server: str,
    from_server: str,
    node: str,
    kind: str,
    body: str,
    now: datetime,
) -> int:
    """Leave a message for `to_server`; its id (ids grow in the order messages are put)."""
    result = conn.execute(
        insert(relay)
        .values(
            to_server=to_server,
            from_server=from_server,
            node=node,
            kind=kind,
            body=body,
            created_at=now,
        )
        .returning(relay.c.id)
    )
    return int(result.scalar_one())


def take(conn: Connection, to_server: str, limit: int = 200) -> list[RelayMessage]:
    """Up to `limit` of the messages for `to_server`, oldest first, deleted as they are read
    (gone for good when the caller's transaction commits). On PostgreSQL rows another
    transaction is taking are skipped, not waited for."""
    query = select(relay).where(relay.c.to_server == to_server).order_by(relay.c.id).limit(limit)
    if conn.dialect.name != "sqlite":
        query = query.with_for_update(skip_locked=True)
    messages = [
        RelayMessage(
            id=int(m["id"]),
            to_server=m["to_server"],
            from_server=m["from_server"],
            node=m["node"],
            kind=m["kind"],
            body=m["body"],
            created_at=utc(m["created_at"]) or m["created_at"],
        )
        for m in conn.execute(query).mappings().all()
    ]
    if messages:
        conn.execute(delete(relay).where(relay.c.id.in_([m.id for m in messages])))
    return messages


def drop_for(conn: Connection, server_id: str) -> int:
    """Delete every message left for `server_id`; how many."""
    return int(conn.execute(delete(relay).where(relay.c.to_server == server_id)).rowcount)
