"""Queries on flavors (domain/flavors.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, update

from bollard.domain.errors import AlreadyExists, NotFound
from bollard.domain.flavors import Flavor
from bollard.domain.models import Page
from bollard.store import pagination
from bollard.store.db import utc
from bollard.store.tables import flavors


def _flavor(row: Row[Any]) -> Flavor:
    m = row._mapping
    return Flavor(
        id=m["id"],
        name=m["name"],
        vcpus=int(m["vcpus"]),
        memory_mb=int(m["memory_mb"]),
        disk_mb=int(m["disk_mb"]),
        description=m["description"],
        properties={str(k): str(v) for k, v in (m["properties"] or {}).items()},
        created_at=utc(m["created_at"]) or m["created_at"],
        updated_at=utc(m["updated_at"]) or m["updated_at"],
    )


def create(
    conn: Connection,
    *,
    id: str,
    name: str,
    vcpus: int,
    memory_mb: int,
    disk_mb: int,
    description: str | None,
    properties: dict[str, str],
    now: datetime,
) -> Flavor:
    if find(conn, name) is not None:
        raise AlreadyExists(f"a flavor named {name!r} exists")
    conn.execute(
        insert(flavors).values(
            id=id, name=name, vcpus=vcpus, memory_mb=memory_mb, disk_mb=disk_mb,
            description=description, properties=properties, created_at=now, updated_at=now,
        )
    )  # fmt: skip
    return get(conn, name)


def find(conn: Connection, name: str) -> Flavor | None:
    row = conn.execute(select(flavors).where(flavors.c.name == name)).first()
    return None if row is None else _flavor(row)


def find_by_id(conn: Connection, id: str) -> Flavor | None:
    row = conn.execute(select(flavors).where(flavors.c.id == id)).first()
    return None if row is None else _flavor(row)


def get(conn: Connection, name: str) -> Flavor:
    found = find(conn, name)
    if found is None:
        raise NotFound(f"no flavor named {name!r} (`bollard flavor list` shows the flavors)")
    return found


def list_page(conn: Connection, *, limit: int, cursor: str | None) -> Page:
    return pagination.page(conn, flavors, flavors.c.name, _flavor, limit=limit, cursor=cursor)


def update_fields(
    conn: Connection,
    name: str,
    now: datetime,
    *,
    description: str | None = None,
    properties: dict[str, str] | None = None,
    clear_description: bool = False,
) -> Flavor:
    """Change a flavor's description or properties (its size never changes: a VM's copy of
    it must keep meaning what it meant)."""
    values: dict[str, Any] = {"updated_at": now}
    if description is not None or clear_description:
        values["description"] = description
    if properties is not None:
        values["properties"] = properties
    conn.execute(update(flavors).where(flavors.c.name == name).values(**values))
    return get(conn, name)


def remove(conn: Connection, name: str) -> None:
    conn.execute(delete(flavors).where(flavors.c.name == name))
