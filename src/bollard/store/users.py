"""Queries on users: people (or tools) with a role, who act through API tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select

from bollard.domain.errors import AlreadyExists, NotFound
from bollard.domain.models import Page
from bollard.domain.policy import Role, User
from bollard.store import pagination
from bollard.store.db import utc
from bollard.store.tables import api_tokens, users


def _user(row: Row[Any]) -> User:
    m = row._mapping
    return User(
        name=m["name"],
        role=Role(m["role"]),
        created_at=utc(m["created_at"]) or m["created_at"],
        created_by=m["created_by"],
    )


def find(conn: Connection, name: str) -> User | None:
    row = conn.execute(select(users).where(users.c.name == name)).first()
    return None if row is None else _user(row)


def get(conn: Connection, name: str) -> User:
    found = find(conn, name)
    if found is None:
        raise NotFound(f"user {name!r} does not exist")
    return found


def create(
    conn: Connection, name: str, role: Role, now: datetime, *, created_by: str | None
) -> User:
    if find(conn, name) is not None:
        raise AlreadyExists(f"user {name!r} already exists")
    conn.execute(
        insert(users).values(name=name, role=role.value, created_at=now, created_by=created_by)
    )
    return get(conn, name)


def ensure(conn: Connection, name: str, role: Role, now: datetime) -> bool:
    """Create the user if it does not exist (the built-in admin); True if it was created."""
    if find(conn, name) is not None:
        return False
    conn.execute(insert(users).values(name=name, role=role.value, created_at=now, created_by=None))
    return True


def list_page(conn: Connection, *, limit: int, cursor: str | None) -> Page:
    return pagination.page(conn, users, users.c.name, _user, limit=limit, cursor=cursor)


def token_counts(conn: Connection, names: list[str]) -> dict[str, int]:
    """How many API tokens (in any state) each of these users has."""
    if not names:
        return {}
    rows = conn.execute(
        select(api_tokens.c.user_name, func.count())
        .where(api_tokens.c.user_name.in_(names))
        .group_by(api_tokens.c.user_name)
    ).all()
    return {str(name): int(count) for name, count in rows}


def delete_user(conn: Connection, name: str) -> int:
    """Delete the user and its API tokens (the foreign key cascades too; deleting them here
    does not depend on it); returns how many tokens went with it. NotFound if unknown."""
    get(conn, name)
    tokens = conn.execute(delete(api_tokens).where(api_tokens.c.user_name == name)).rowcount
    conn.execute(delete(users).where(users.c.name == name))
    return int(tokens)
