"""The servers sharing the database: each server process's row, renewed every third of its
time to live. A server whose row expired is taken for dead by its peers (`mark_gone`); one
that finds its own row no longer up must stop acting and register again under a new id.

Times come from the caller (`db_now` gives the database's clock on PostgreSQL, so the
servers' clocks need not agree)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, or_, select, text, update

from bollard.domain.errors import AlreadyExists
from bollard.domain.servers import ServerRecord, ServerState
from bollard.store.db import utc
from bollard.store.tables import servers

_ENDED = (ServerState.STOPPED.value, ServerState.GONE.value)


def db_now(conn: Connection) -> datetime:
    """The time leases are measured by: the database's clock on PostgreSQL (every server
    reads the same one), Python's on SQLite (one server)."""
    if conn.dialect.name == "sqlite":
        return datetime.now(UTC)
    value = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    assert isinstance(value, datetime)
    return value.astimezone(UTC)


def _record(row: Row[Any]) -> ServerRecord:
    m = row._mapping
    return ServerRecord(
        id=m["id"],
        name=m["name"],
        url=m["url"],
        version=m["version"],
        protocols=[int(p) for p in m["protocols"]],
        schema_revision=m["schema_revision"],
        pid=m["pid"],
        started_at=utc(m["started_at"]) or m["started_at"],
        renewed_at=utc(m["renewed_at"]) or m["renewed_at"],
        expires_at=utc(m["expires_at"]) or m["expires_at"],
        stopped_at=utc(m["stopped_at"]),
        state=ServerState(m["state"]),
    )


def register(
    conn: Connection,
    *,
    id: str,
    name: str,
    url: str,
    version: str,
    protocols: list[int],
    schema_revision: str,
    pid: int,
    now: datetime,
    ttl: float,
) -> ServerRecord:
    """Add the row of a starting server, up until `now + ttl`."""
    if conn.execute(select(servers.c.id).where(servers.c.id == id)).first() is not None:
        raise AlreadyExists(f"server {id!r} is already registered")
    conn.execute(
        insert(servers).values(
            id=id,
            name=name,
            url=url,
            version=version,
            protocols=list(protocols),
            schema_revision=schema_revision,
            pid=pid,
            started_at=now,
            renewed_at=now,
            expires_at=now + timedelta(seconds=ttl),
            stopped_at=None,
            state=ServerState.UP.value,
        )
    )
    record = get(conn, id)
    assert record is not None
    return record


def renew(conn: Connection, id: str, now: datetime, ttl: float) -> bool:
    """Extend the server's membership lease to `now + ttl`; False when its row is not up
    (stopped, found gone by a peer, or pruned)."""
    done = conn.execute(
        update(servers)
        .where(servers.c.id == id, servers.c.state == ServerState.UP.value)
        .values(renewed_at=now, expires_at=now + timedelta(seconds=ttl))
    )
    return done.rowcount == 1


def stop(conn: Connection, id: str, now: datetime) -> None:
    """A clean stop: up -> stopped (a row no longer up is left as it is)."""
    conn.execute(
        update(servers)
        .where(servers.c.id == id, servers.c.state == ServerState.UP.value)
        .values(state=ServerState.STOPPED.value, stopped_at=now)
    )


def get(conn: Connection, id: str) -> ServerRecord | None:
    row = conn.execute(select(servers).where(servers.c.id == id)).first()
    return None if row is None else _record(row)


def live(conn: Connection, now: datetime) -> list[ServerRecord]:
    """The servers up whose lease has not expired, oldest first."""
    query = (
        select(servers)
        .where(servers.c.state == ServerState.UP.value, servers.c.expires_at >= now)
        .order_by(servers.c.started_at, servers.c.id)
    )
    return [_record(r) for r in conn.execute(query).all()]


def expired(conn: Connection, now: datetime) -> list[ServerRecord]:
    """The servers still up whose lease has expired: dead until they renew."""
    query = (
        select(servers)
        .where(servers.c.state == ServerState.UP.value, servers.c.expires_at < now)
        .order_by(servers.c.started_at, servers.c.id)
    )
    return [_record(r) for r in conn.execute(query).all()]


def mark_gone(conn: Connection, id: str, now: datetime) -> bool:
    """Take a server for dead: up -> gone, only while its lease has expired (one that renewed
    since it was read stays up); `stopped_at` records when. Whether it changed."""
    done = conn.execute(
        update(servers)
        .where(
            servers.c.id == id,
            servers.c.state == ServerState.UP.value,
            servers.c.expires_at < now,
        )
        .values(state=ServerState.GONE.value, stopped_at=now)
    )
    return done.rowcount == 1


def retire(conn: Connection, id: str, now: datetime) -> bool:
    """A live server known to be dead before its lease expired (its successor under the same
    name has started, or its process is gone from this host): up -> gone. Whether it
    changed."""
    done = conn.execute(
        update(servers)
        .where(servers.c.id == id, servers.c.state == ServerState.UP.value)
        .values(state=ServerState.GONE.value, stopped_at=now)
    )
    return done.rowcount == 1


def _ended_at() -> Any:
    return func.coalesce(servers.c.stopped_at, servers.c.renewed_at)


def recent(conn: Connection, now: datetime, keep: float = 3600.0) -> list[ServerRecord]:
    """The live servers and those stopped or gone within the last `keep` seconds, oldest
    first."""
    since = now - timedelta(seconds=keep)
    query = (
        select(servers)
        .where(
            or_(
                (servers.c.state == ServerState.UP.value) & (servers.c.expires_at >= now),
                servers.c.state.in_(_ENDED) & (_ended_at() >= since),
            )
        )
        .order_by(servers.c.started_at, servers.c.id)
    )
    return [_record(r) for r in conn.execute(query).all()]


def prune(conn: Connection, before: datetime) -> int:
    """Delete the rows of servers stopped or gone before `before`; how many."""
    done = conn.execute(delete(servers).where(servers.c.state.in_(_ENDED), _ended_at() < before))
    return int(done.rowcount)
