"""Leases: a named role held by one server at a time, renewed before it expires."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from bollard.store.tables import leases


def acquire(conn: Connection, name: str, holder: str, now: datetime, ttl: float) -> bool:
    """Take or renew the lease `name` for `holder` if it is free, expired or already ours."""
    expires = now + timedelta(seconds=ttl)
    result = conn.execute(
        update(leases)
        .where(leases.c.name == name, or_(leases.c.holder == holder, leases.c.expires_at < now))
        .values(holder=holder, expires_at=expires)
    )
    if result.rowcount == 1:
        return True
    if conn.execute(select(leases.c.name).where(leases.c.name == name)).first() is not None:
        return False
    try:
        with conn.begin_nested():
            conn.execute(insert(leases).values(name=name, holder=holder, expires_at=expires))
    except IntegrityError:
        return False  # another server created it first
    return True


def release(conn: Connection, name: str, holder: str) -> None:
    conn.execute(
        update(leases)
        .where(leases.c.name == name, leases.c.holder == holder)
        .values(expires_at=datetime(1970, 1, 1, tzinfo=UTC))
    )
