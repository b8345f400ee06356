"""`column` is one of a list of values, as one statement whatever the list's length.

`column.in_(values)` renders one placeholder per value at every execution ("expanding"
parameters): the SQL text differs with the list's length, so the driver's statement cache
(psycopg's prepared statements, sqlite3's statement cache) sees a new statement for every
length, and SQLAlchemy renders the list into the SQL each time. Here the list is bound as one
parameter instead: `column = ANY(%(name)s)` (an array) on PostgreSQL, `column IN (SELECT
value FROM json_each(?))` (a JSON array) on SQLite. A statement built with it is built per
dialect (`PerDialect`), once, and the same text is sent every time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    ARRAY,
    JSON,
    Column,
    ColumnElement,
    Connection,
    String,
    any_,
    bindparam,
    func,
    select,
)

S = TypeVar("S")


def any_of(column: Column[Any], name: str, dialect: str) -> ColumnElement[bool]:
    """`column` is one of the values of the list bound as `name` (a list of strings)."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(String)))
    values = func.json_each(bindparam(name, type_=JSON)).table_valued("value")
    return column.in_(select(values.c.value))


class PerDialect(Generic[S]):
    """A statement built by `build(dialect name)` once per dialect, on first use."""

    def __init__(self, build: Callable[[str], S]) -> None:
        self._build = build
        self._built: dict[str, S] = {}

    def of(self, conn: Connection) -> S:
        name = conn.dialect.name
        found = self._built.get(name)
        if found is None:
            found = self._built[name] = self._build(name)
        return found
