"""Leases: a named role held by one server at a time, renewed before it expires.

`acquire`/`release` hold a lease without a fencing token (the health monitor's). `take`,
`renew`, `check` and `give_up` hold one with a token that grows each time the lease is taken
anew (another holder, or the lease had expired), so a holder's write transaction can check
first that it still holds the lease with its token (`check`); on PostgreSQL that check locks
the row FOR SHARE, so a takeover waits until the checked transaction ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, case, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from bollard.domain.servers import Lease
from bollard.store.db import utc
from bollard.store.tables import leases

_EXPIRED = datetime(1970, 1, 1, tzinfo=UTC)


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
        .values(expires_at=_EXPIRED)
    )


def take(conn: Connection, name: str, holder: str, now: datetime, ttl: float) -> int | None:
    """Take the lease `name` for `holder` if it is free or expired, or renew it if it is ours
    and live; its fencing token (one more than before when taken anew, the same when
    renewed). None while another holder's lease is live."""
    expires = now + timedelta(seconds=ttl)
    anew = or_(leases.c.holder != holder, leases.c.expires_at < now)
    result = conn.execute(
        update(leases)
        .where(leases.c.name == name, or_(leases.c.holder == holder, leases.c.expires_at < now))
        .values(
            token=case((anew, leases.c.token + 1), else_=leases.c.token),
            acquired_at=case((anew, now), else_=leases.c.acquired_at),
            holder=holder,
            expires_at=expires,
        )
        .returning(leases.c.token)
    )
    token = result.scalar()
    if token is not None:
        return int(token)
    if conn.execute(select(leases.c.name).where(leases.c.name == name)).first() is not None:
        return None
    try:
        with conn.begin_nested():
            conn.execute(
                insert(leases).values(
                    name=name, holder=holder, expires_at=expires, token=1, acquired_at=now
                )
            )
    except IntegrityError:
        return None  # another server created it first
    return 1


def renew(conn: Connection, name: str, holder: str, token: int, now: datetime, ttl: float) -> bool:
    """Extend `holder`'s live lease taken with `token` to `now + ttl`; False when it has
    expired or was taken since (take it again: a new token)."""
    result = conn.execute(
        update(leases)
        .where(
            leases.c.name == name,
            leases.c.holder == holder,
            leases.c.token == token,
            leases.c.expires_at >= now,
        )
        .values(expires_at=now + timedelta(seconds=ttl))
    )
    return result.rowcount == 1


def check(conn: Connection, name: str, holder: str, token: int) -> bool:
    """Whether `holder` still holds the lease with `token`, in the caller's transaction. On
    PostgreSQL the row stays locked FOR SHARE until that transaction ends, so a takeover
    waits for it and a later transaction of a deposed holder finds the new one. (Expiry is
    not looked at: taking the lease over is what ends a holder's right to write.)"""
    query = select(leases.c.holder, leases.c.token).where(leases.c.name == name)
    if conn.dialect.name != "sqlite":
        query = query.with_for_update(read=True)
    row = conn.execute(query).first()
    return row is not None and row.holder == holder and int(row.token) == token


def give_up(conn: Connection, name: str, holder: str, token: int) -> None:
    """Let the lease expire now (a clean stop: a peer takes it over at once)."""
    conn.execute(
        update(leases)
        .where(leases.c.name == name, leases.c.holder == holder, leases.c.token == token)
        .values(expires_at=_EXPIRED)
    )


def get(conn: Connection, name: str) -> Lease | None:
    row = conn.execute(select(leases).where(leases.c.name == name)).first()
    if row is None:
        return None
    m = row._mapping
    return Lease(
        name=m["name"],
        holder=m["holder"],
        token=int(m["token"]),
        expires_at=utc(m["expires_at"]) or m["expires_at"],
        acquired_at=utc(m["acquired_at"]),
    )
