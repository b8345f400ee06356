"""Queries on storage pools and on what their hosts report of them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, update

from bollard.domain.errors import AlreadyExists, NotFound
from bollard.domain.storage import Pool, PoolHost, PoolType
from bollard.store.db import utc
from bollard.store.tables import pool_hosts, pools, volumes


def _pool(row: Row[Any]) -> Pool:
    m = row._mapping
    return Pool(
        name=m["name"],
        type=PoolType(m["type"]),
        path=m["path"],
        nodes=tuple(m["nodes"]) if m["nodes"] is not None else None,
        description=m["description"],
        created_at=utc(m["created_at"]) or m["created_at"],
    )


def _host(row: Row[Any]) -> PoolHost:
    m = row._mapping
    return PoolHost(
        pool=m["pool"],
        node=m["node"],
        capacity_mb=m["capacity_mb"],
        free_mb=m["free_mb"],
        error=m["error"],
        reported_at=utc(m["reported_at"]) or m["reported_at"],
    )


def create(
    conn: Connection,
    *,
    name: str,
    type: PoolType,
    path: str | None,
    nodes: list[str] | None,
    description: str | None,
    now: datetime,
) -> Pool:
    if find(conn, name) is not None:
        raise AlreadyExists(f"a pool named {name!r} exists")
    conn.execute(
        insert(pools).values(
            name=name,
            type=type.value,
            path=path,
            nodes=sorted(set(nodes)) if nodes is not None else None,
            description=description,
            created_at=now,
            updated_at=now,
        )
    )
    return get(conn, name)


def find(conn: Connection, name: str) -> Pool | None:
    row = conn.execute(select(pools).where(pools.c.name == name)).first()
    return _pool(row) if row is not None else None


def get(conn: Connection, name: str) -> Pool:
    pool = find(conn, name)
    if pool is None:
        raise NotFound(f"no pool named {name!r} (`bollard pool list` shows the pools)")
    return pool


def list_all(conn: Connection) -> list[Pool]:
    return [_pool(r) for r in conn.execute(select(pools).order_by(pools.c.name))]


def by_name(conn: Connection, names: set[str]) -> dict[str, Pool]:
    if not names:
        return {}
    rows = conn.execute(select(pools).where(pools.c.name.in_(sorted(names))))
    return {p.name: p for p in map(_pool, rows)}


def of_node(conn: Connection, node: str) -> list[Pool]:
    """The pools `node` is a host of."""
    return [p for p in list_all(conn) if p.sees(node)]


def update_pool(conn: Connection, name: str, now: datetime, **values: Any) -> Pool:
    """Change a pool's `nodes` and/or `description`."""
    if "nodes" in values and values["nodes"] is not None:
        values["nodes"] = sorted(set(values["nodes"]))
    conn.execute(update(pools).where(pools.c.name == name).values(**values, updated_at=now))
    return get(conn, name)


def remove(conn: Connection, name: str) -> None:
    conn.execute(delete(pools).where(pools.c.name == name))


def record_host(
    conn: Connection,
    pool: str,
    node: str,
    now: datetime,
    *,
    capacity_mb: int | None,
    free_mb: int | None,
    error: str | None,
) -> None:
    """Store what `node` reported of `pool` (replacing its previous report); nothing if the
    pool was removed meanwhile.

    Lock order: the pool's row first (FOR KEY SHARE, the lock the foreign key's check takes
    anyway), then its host rows, as a removal takes them (the pool's row, then the cascade to
    its hosts). A report that took its host row first and then waited for the pool's row
    deadlocked on PostgreSQL with a removal waiting for that host row (seen in CI)."""
    found = conn.execute(
        select(pools.c.name).where(pools.c.name == pool).with_for_update(key_share=True)
    ).first()
    if found is None:
        return
    conn.execute(delete(pool_hosts).where(pool_hosts.c.pool == pool, pool_hosts.c.node == node))
    conn.execute(
        insert(pool_hosts).values(
            pool=pool, node=node, capacity_mb=capacity_mb, free_mb=free_mb, error=error,
            reported_at=now,
        )
    )  # fmt: skip


def forget_hosts(conn: Connection, pool: str, keep: set[str] | None) -> None:
    """Drop the reports of hosts no longer in the pool (`keep` None: keep every one)."""
    if keep is None:
        return
    query = delete(pool_hosts).where(pool_hosts.c.pool == pool)
    if keep:
        query = query.where(pool_hosts.c.node.not_in(sorted(keep)))
    conn.execute(query)


def hosts(conn: Connection, pool: str | None = None) -> list[PoolHost]:
    query = select(pool_hosts).order_by(pool_hosts.c.pool, pool_hosts.c.node)
    if pool is not None:
        query = query.where(pool_hosts.c.pool == pool)
    return [_host(r) for r in conn.execute(query)]


def usage(conn: Connection) -> dict[str, tuple[int, int]]:
    """Per pool: how many volumes it holds and their provisioned size (MiB)."""
    query = select(volumes.c.pool, func.count(), func.coalesce(func.sum(volumes.c.size_mb), 0))
    rows = conn.execute(query.group_by(volumes.c.pool))
    return {pool: (int(count), int(size)) for pool, count, size in rows}


def provisioned_on(conn: Connection, pool: str, node: str | None) -> int:
    """MiB provisioned for volumes of `pool` on `node` (None: the whole pool)."""
    query = select(func.coalesce(func.sum(volumes.c.size_mb), 0)).where(volumes.c.pool == pool)
    if node is not None:
        query = query.where(volumes.c.node == node)
    return int(conn.execute(query).scalar_one())
