"""Messages between servers (store/relay.py) on SQLite and PostgreSQL: the addressee takes
its own, oldest first and at most `limit`, and they are gone once its transaction commits
(kept if it rolls back); a gone server's are dropped; on PostgreSQL two transactions taking
at once get different messages."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from bollard.domain.servers import RelayMessage
from bollard.store import relay
from bollard.store.db import Database

NOW = datetime(2026, 12, 8, tzinfo=UTC)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def _put(db: Database, to: str, body: str, at: int = 0) -> int:
    with db.write() as conn:
        return relay.put(
            conn,
            to_server=to,
            from_server="s-from",
            node="node1",
            kind="command",
            body=body,
            now=NOW + timedelta(seconds=at),
        )


def _take(db: Database, to: str, limit: int = 200) -> list[RelayMessage]:
    with db.write() as conn:
        return relay.take(conn, to, limit)


def test_the_addressee_takes_its_messages_oldest_first(db: Database) -> None:
    first = _put(db, "s-a", "one", 0)
    _put(db, "s-b", "for b", 1)
    second = _put(db, "s-a", "two", 2)
    assert first < second
    taken = _take(db, "s-a")
    assert [(m.id, m.body) for m in taken] == [(first, "one"), (second, "two")]
    assert taken[0] == RelayMessage(
        id=first,
        to_server="s-a",
        from_server="s-from",
        node="node1",
        kind="command",
        body="one",
        created_at=NOW,
    )
    assert _take(db, "s-a") == []  # taken once
    assert [m.body for m in _take(db, "s-b")] == ["for b"]


def test_take_returns_at_most_limit(db: Database) -> None:
    for n in range(5):
        _put(db, "s-a", f"m{n}", n)
    assert [m.body for m in _take(db, "s-a", limit=2)] == ["m0", "m1"]
    assert [m.body for m in _take(db, "s-a", limit=2)] == ["m2", "m3"]
    assert [m.body for m in _take(db, "s-a")] == ["m4"]


def test_messages_taken_in_a_rolled_back_transaction_stay(db: Database) -> None:
    _put(db, "s-a", "kept")
    with db.engine.connect() as conn, conn.begin() as tx:
        assert [m.body for m in relay.take(conn, "s-a")] == ["kept"]
        tx.rollback()
    assert [m.body for m in _take(db, "s-a")] == ["kept"]


def test_drop_for_deletes_only_that_servers_messages(db: Database) -> None:
    _put(db, "s-gone", "x")
    _put(db, "s-gone", "y")
    _put(db, "s-a", "z")
    with db.write() as conn:
        assert relay.drop_for(conn, "s-gone") == 2
        assert relay.drop_for(conn, "s-gone") == 0
    assert _take(db, "s-gone") == []
    assert [m.body for m in _take(db, "s-a")] == ["z"]


def test_concurrent_takes_get_different_messages(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite runs one write transaction at a time: takes cannot interleave")
    for n in range(4):
        _put(db, "s-a", f"m{n}", n)
    with db.engine.connect() as one, db.engine.connect() as two, one.begin(), two.begin():
        two.execute(text("SET LOCAL lock_timeout = '10s'"))  # fail, not hang, if it waits
        first = relay.take(one, "s-a", limit=2)
        second = relay.take(two, "s-a")
    assert [m.body for m in first] == ["m0", "m1"]
    assert [m.body for m in second] == ["m2", "m3"]
    assert _take(db, "s-a") == []
