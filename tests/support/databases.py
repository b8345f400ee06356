"""Real databases for tests: a SQLite file, and a PostgreSQL database of its own per test
when a server answers on 127.0.0.1:5432 (BOLLARD_TEST_PG overrides the admin URL)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

PG_ADMIN_URL = os.environ.get(
    "BOLLARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test?connect_timeout=3"
)


@cache
def postgres_unavailable() -> str | None:
    """None when PostgreSQL is reachable, else the reason to print with the skip."""
    try:
        import psycopg
    except ImportError as exc:
        return f"psycopg is not installed: {exc}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {first}"
    return None


@contextmanager
def postgres_database() -> Iterator[str]:
    """Create a throw-away database and yield its URL; drop it afterwards."""
    import psycopg
    from psycopg import sql

    name = f"bollard_test_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = PG_ADMIN_URL.split("?", 1)[0].rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'bollard.db'}"
