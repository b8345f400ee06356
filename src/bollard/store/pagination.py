"""Keyset pagination by a unique string column, with an opaque cursor."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Column, ColumnElement, Connection, Row, Table, func, select

from bollard.domain.errors import InvalidInput
from bollard.domain.models import Page

T = TypeVar("T")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


_PREFIX = "after:"


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode((_PREFIX + key).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.b64decode(padded.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput("cursor: not a cursor this server issued") from exc
    if not text.startswith(_PREFIX) or "\x00" in text:  # NUL: no database compares it
        raise InvalidInput("cursor: not a cursor this server issued")
    return text[len(_PREFIX) :]


def page(
    conn: Connection,
    table: Table,
    key: Column[Any],
    convert: Callable[[Row[Any]], T],
    *,
    limit: int,
    cursor: str | None,
    where: ColumnElement[bool] | None = None,
    descending: bool = False,
) -> Page:
    """A page in `key` order (`descending`: highest first; its cursor goes on downwards)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit: must be between 1 and {MAX_LIMIT}")
    query = select(table)
    count = select(func.count()).select_from(table)
    if where is not None:
        query = query.where(where)
        count = count.where(where)
    if cursor:
        after = decode_cursor(cursor)
        query = query.where(key < after if descending else key > after)
    order = key.desc() if descending else key
    rows = conn.execute(query.order_by(order).limit(limit + 1)).all()
    total = int(conn.execute(count).scalar_one())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(getattr(rows[-1], key.name)) if more and rows else None
    return Page(items=[convert(r) for r in rows], next_cursor=next_cursor, total=total)
