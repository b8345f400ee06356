"""Queries on API tokens. Only a token's SHA-256 hash is stored, never the token; a token
is looked up by that hash (unique), with its user's role in the same query."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, insert, or_, select, update

from bollard.domain.errors import NotFound
from bollard.domain.models import Page
from bollard.domain.policy import ApiToken, Role
from bollard.store import pagination
from bollard.store.db import utc
from bollard.store.tables import api_tokens, users

# Every column but the hash (nothing reads it back but the lookup's WHERE).
_COLUMNS = (
    api_tokens.c.id,
    api_tokens.c.user_name,
    api_tokens.c.role,
    api_tokens.c.description,
    api_tokens.c.created_at,
    api_tokens.c.expires_at,
    api_tokens.c.revoked_at,
    api_tokens.c.last_used_at,
    users.c.role.label("user_role"),
)


def _token(row: Row[Any]) -> ApiToken:
    m = row._mapping
    return ApiToken(
        id=m["id"],
        user=m["user_name"],
        user_role=Role(m["user_role"]),
        role=Role(m["role"]) if m["role"] else None,
        description=m["description"],
        created_at=utc(m["created_at"]) or m["created_at"],
        expires_at=utc(m["expires_at"]),
        revoked_at=utc(m["revoked_at"]),
        last_used_at=utc(m["last_used_at"]),
    )


def _joined() -> Any:
    return select(*_COLUMNS).join_from(api_tokens, users, api_tokens.c.user_name == users.c.name)


def create(
    conn: Connection,
    *,
    id: str,
    user: str,
    token_hash: str,
    role: Role | None,
    description: str | None,
    expires_at: datetime | None,
    now: datetime,
) -> ApiToken:
    conn.execute(
        insert(api_tokens).values(
            id=id,
            user_name=user,
            token_hash=token_hash,
            role=role.value if role is not None else None,
            description=description,
            created_at=now,
            expires_at=expires_at,
        )
    )
    return get(conn, id)


def by_hash(conn: Connection, token_hash: str) -> ApiToken | None:
    """The token with this hash (whatever its state), None when there is none."""
    row = conn.execute(_joined().where(api_tokens.c.token_hash == token_hash)).first()
    return None if row is None else _token(row)


def find(conn: Connection, id: str) -> ApiToken | None:
    row = conn.execute(_joined().where(api_tokens.c.id == id)).first()
    return None if row is None else _token(row)


def get(conn: Connection, id: str) -> ApiToken:
    found = find(conn, id)
    if found is None:
        raise NotFound(f"API token {id!r} does not exist")
    return found


def list_page(conn: Connection, *, limit: int, cursor: str | None, user: str | None = None) -> Page:
    """A page of tokens (oldest first), of one user or of all."""
    where = None if user is None else api_tokens.c.user_name == user
    page = pagination.page(
        conn, api_tokens, api_tokens.c.id, lambda r: r, limit=limit, cursor=cursor, where=where
    )
    ids = [r._mapping["id"] for r in page.items]
    rows = conn.execute(_joined().where(api_tokens.c.id.in_(ids))).all() if ids else []
    by_id = {t.id: t for t in (_token(r) for r in rows)}
    page.items[:] = [by_id[i] for i in ids if i in by_id]
    return page


def revoke(conn: Connection, id: str, now: datetime) -> bool:
    """Revoke the token (it stays listed as revoked); False if it already was."""
    result = conn.execute(
        update(api_tokens)
        .where(api_tokens.c.id == id, api_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return result.rowcount == 1


def touch(conn: Connection, id: str, now: datetime, every: timedelta) -> bool:
    """Record that the token was used now, unless that was recorded less than `every` ago
    (so a busy token costs one write per interval, also with several servers)."""
    result = conn.execute(
        update(api_tokens)
        .where(
            api_tokens.c.id == id,
            or_(api_tokens.c.last_used_at.is_(None), api_tokens.c.last_used_at <= now - every),
        )
        .values(last_used_at=now)
    )
    return result.rowcount == 1
