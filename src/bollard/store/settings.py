"""Key/value settings stored in the database (shared by every server)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from bollard.store.tables import settings


def get(conn: Connection, key: str) -> str | None:
    value = conn.execute(select(settings.c.value).where(settings.c.key == key)).scalar()
    return None if value is None else str(value)


def put(conn: Connection, key: str, value: str, now: datetime) -> None:
    result = conn.execute(
        update(settings).where(settings.c.key == key).values(value=value, updated_at=now)
    )
    if result.rowcount == 0:
        conn.execute(insert(settings).values(key=key, value=value, updated_at=now))
