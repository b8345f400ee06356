"""The short-lived cache of settings for hot read paths (bollard.store.settings `recent`), on
real databases: two Database objects on one database stand for two servers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import event

from bollard.store import settings
from bollard.store.db import Database

KEY = "health.dead_after"
MAX_AGE = 1.0
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def servers(db_url: str) -> Iterator[tuple[Database, Database]]:
    one, other = Database(db_url), Database(db_url)
    yield one, other
    one.dispose()
    other.dispose()


def put(db: Database, value: str) -> None:
    with db.write() as conn:
        settings.put(conn, KEY, value, NOW)


def recent(db: Database, now: float) -> str | None:
    with db.read() as conn:
        return settings.recent(conn, KEY, max_age=MAX_AGE, now=now)


def test_a_change_on_another_server_is_seen_within_max_age(
    servers: tuple[Database, Database],
) -> None:
    one, other = servers
    put(other, "3")
    assert recent(one, now=100.0) == "3"
    put(other, "7")
    assert recent(one, now=100.0 + MAX_AGE) == "3"  # read at 100: still young enough
    assert recent(one, now=100.0 + MAX_AGE + 0.01) == "7"
    assert recent(other, now=100.0) == "7"  # each engine has its own cache


def test_a_change_through_the_same_engine_is_seen_at_once(
    servers: tuple[Database, Database],
) -> None:
    one, _ = servers
    assert recent(one, now=5.0) is None  # not stored: the default applies
    put(one, "4")
    assert recent(one, now=5.0) == "4"
    put(one, "5")
    assert recent(one, now=5.0) == "5"


def test_a_read_racing_a_write_does_not_keep_the_old_value(
    servers: tuple[Database, Database],
) -> None:
    """A read between the write's statement and its commit sees the old value: once the
    write's transaction has ended, that value is not served any more."""
    one, _ = servers
    put(one, "3")
    with one.write() as conn:
        settings.put(conn, KEY, "9", NOW)
        assert recent(one, now=10.0) == "3"  # another connection: not committed yet
    assert recent(one, now=10.0) == "9"


def test_a_rolled_back_write_leaves_the_stored_value(
    servers: tuple[Database, Database],
) -> None:
    one, _ = servers
    put(one, "3")
    with pytest.raises(RuntimeError), one.write() as conn:
        settings.put(conn, KEY, "9", NOW)
        assert settings.recent(conn, KEY, max_age=MAX_AGE, now=20.0) == "9"  # its own write
        raise RuntimeError("roll back")
    assert recent(one, now=20.0) == "3"


def test_stored_reads_every_setting_in_one_statement(
    servers: tuple[Database, Database],
) -> None:
    one, _ = servers
    put(one, "9")
    with one.write() as conn:
        settings.put(conn, "health.fence_timeout", "bad", NOW)
    statements: list[str] = []
    with one.read() as conn:

        def seen(*args: object) -> None:
            statements.append(str(args[2]))

        event.listen(conn, "before_cursor_execute", seen)
        found = settings.stored(conn)
        event.remove(conn, "before_cursor_execute", seen)
    assert len(statements) == 1
    assert found[KEY] == "9"
    assert found["health.fence_timeout"] == "bad"
    with one.read() as conn:
        assert all(settings.get(conn, key) == value for key, value in found.items())
