"""Leases with a fencing token (store/leases.py) on SQLite and PostgreSQL: `take` acquires a
free or expired lease with the next token and renews its own with the same one, `renew`,
`check` and `give_up` act only for the holder with its token, `acquire`/`release` leave the
token alone; on PostgreSQL concurrent takes elect one holder, a takeover waits for a
transaction that checked the lease, and a check waits for a takeover in progress."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from threading import Barrier

import pytest
from sqlalchemy import text

from bollard.store import leases
from bollard.store.db import Database
from tests.support.cluster import wait_until

NOW = datetime(2026, 12, 8, tzinfo=UTC)
TTL = 10.0
LATER = NOW + timedelta(seconds=TTL + 1)  # the lease taken at NOW has expired
DEADLINE = 30.0  # seconds for a transaction run in another thread


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def _take(db: Database, holder: str, now: datetime = NOW, name: str = "leader") -> int | None:
    with db.write() as conn:
        return leases.take(conn, name, holder, now, TTL)


def _check(db: Database, holder: str, token: int) -> bool:
    with db.write() as conn:
        return leases.check(conn, "leader", holder, token)


def _postgres_only(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite runs one write transaction at a time: nothing can interleave")


def _waiting_on_a_lock(db: Database) -> bool:
    with db.engine.connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar()
    return bool(waiting)


def test_take_a_free_lease_gives_token_one(db: Database) -> None:
    assert _take(db, "a") == 1
    with db.read() as conn:
        lease = leases.get(conn, "leader")
        assert leases.get(conn, "other") is None
    assert lease is not None
    assert (lease.holder, lease.token, lease.acquired_at) == ("a", 1, NOW)
    assert lease.expires_at == NOW + timedelta(seconds=TTL)


def test_take_renews_its_own_live_lease_with_the_same_token(db: Database) -> None:
    assert _take(db, "a") == 1
    soon = NOW + timedelta(seconds=3)
    assert _take(db, "a", soon) == 1
    with db.read() as conn:
        lease = leases.get(conn, "leader")
    assert lease is not None
    assert (lease.token, lease.acquired_at) == (1, NOW)
    assert lease.expires_at == soon + timedelta(seconds=TTL)


def test_another_holder_waits_until_the_lease_expires(db: Database) -> None:
    assert _take(db, "a") == 1
    assert _take(db, "b", NOW + timedelta(seconds=TTL - 1)) is None
    assert _take(db, "b", LATER) == 2
    assert _take(db, "a", LATER) is None  # b's now
    with db.read() as conn:
        lease = leases.get(conn, "leader")
    assert lease is not None
    assert (lease.holder, lease.token, lease.acquired_at) == ("b", 2, LATER)


def test_taking_its_own_expired_lease_again_gives_a_new_token(db: Database) -> None:
    assert _take(db, "a") == 1
    assert _take(db, "a", LATER) == 2


def test_leases_are_independent(db: Database) -> None:
    assert _take(db, "a") == 1
    assert _take(db, "b", name="other") == 1
    assert _take(db, "b") is None


def test_renew_needs_the_holder_its_token_and_a_live_lease(db: Database) -> None:
    assert _take(db, "a") == 1
    soon = NOW + timedelta(seconds=5)
    with db.write() as conn:
        assert not leases.renew(conn, "leader", "b", 1, soon, TTL)
        assert not leases.renew(conn, "leader", "a", 2, soon, TTL)
        assert leases.renew(conn, "leader", "a", 1, soon, TTL)
        assert not leases.renew(conn, "missing", "a", 1, soon, TTL)
        lease = leases.get(conn, "leader")
        assert lease is not None
        assert (lease.token, lease.expires_at) == (1, soon + timedelta(seconds=TTL))
        # Expired: taken anew, with a new token.
        assert not leases.renew(conn, "leader", "a", 1, soon + timedelta(seconds=TTL + 1), TTL)


def test_check_needs_the_holder_and_its_token(db: Database) -> None:
    assert not _check(db, "a", 1)  # no lease yet
    assert _take(db, "a") == 1
    assert _check(db, "a", 1)
    assert not _check(db, "a", 2)
    assert not _check(db, "b", 1)
    assert _take(db, "b", LATER) == 2
    assert not _check(db, "a", 1)  # deposed
    assert _check(db, "b", 2)


def test_give_up_lets_another_holder_take_it_at_once(db: Database) -> None:
    assert _take(db, "a") == 1
    with db.write() as conn:
        leases.give_up(conn, "leader", "b", 1)  # not b's: nothing happens
        leases.give_up(conn, "leader", "a", 2)  # not a's token: nothing happens
    assert _take(db, "b", NOW + timedelta(seconds=1)) is None
    with db.write() as conn:
        leases.give_up(conn, "leader", "a", 1)
    assert _take(db, "b", NOW + timedelta(seconds=1)) == 2


def test_acquire_and_release_leave_the_token_alone(db: Database) -> None:
    with db.write() as conn:
        assert leases.acquire(conn, "health", "a", NOW, TTL)
    with db.read() as conn:
        lease = leases.get(conn, "health")
    assert lease is not None and (lease.holder, lease.token, lease.acquired_at) == ("a", 0, None)
    assert _take(db, "b", LATER, name="health") == 1
    with db.write() as conn:
        leases.release(conn, "health", "b")
        assert leases.acquire(conn, "health", "a", LATER, TTL)
        assert not leases.acquire(conn, "health", "b", LATER, TTL)
        lease = leases.get(conn, "health")
    assert lease is not None and (lease.holder, lease.token) == ("a", 1)


def test_concurrent_takes_elect_one_holder(db: Database) -> None:
    _postgres_only(db)
    holders = [f"server-{n}" for n in range(6)]
    for now in (NOW, LATER):  # the lease free, then expired
        start = Barrier(len(holders), timeout=DEADLINE)

        def contend(holder: str, now: datetime = now, start: Barrier = start) -> int | None:
            start.wait()
            return _take(db, holder, now)

        with ThreadPoolExecutor(max_workers=len(holders)) as pool:
            futures = [pool.submit(contend, h) for h in holders]
            tokens = [f.result(timeout=DEADLINE) for f in futures]
        won = [t for t in tokens if t is not None]
        assert won == [1] if now == NOW else won == [2]
    with db.read() as conn:
        lease = leases.get(conn, "leader")
    assert lease is not None and lease.token == 2 and lease.holder in holders


def test_takeover_waits_for_a_transaction_that_checked_the_lease(db: Database) -> None:
    """The leader's write transaction checked its lease: a peer taking the (expired) lease
    over waits until that transaction ends; the old leader's next check is refused."""
    _postgres_only(db)
    assert _take(db, "a") == 1

    def takeover() -> int | None:
        with db.write() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '30s'"))  # fail, never hang
            return leases.take(conn, "leader", "b", LATER, TTL)

    with db.engine.connect() as leader, ThreadPoolExecutor(max_workers=1) as pool:
        with leader.begin():
            assert leases.check(leader, "leader", "a", 1)
            peer = pool.submit(takeover)
            wait_until(lambda: _waiting_on_a_lock(db), "the takeover to wait", DEADLINE)
            assert not peer.done()
        assert peer.result(timeout=DEADLINE) == 2
    assert not _check(db, "a", 1)
    assert _check(db, "b", 2)


def test_check_waits_for_a_takeover_in_progress_and_is_refused(db: Database) -> None:
    _postgres_only(db)
    assert _take(db, "a") == 1

    def old_leader_checks() -> bool:
        with db.write() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '30s'"))
            return leases.check(conn, "leader", "a", 1)

    with db.engine.connect() as peer, ThreadPoolExecutor(max_workers=1) as pool:
        with peer.begin():
            assert leases.take(peer, "leader", "b", LATER, TTL) == 2
            checked = pool.submit(old_leader_checks)
            wait_until(lambda: _waiting_on_a_lock(db), "the check to wait", DEADLINE)
            assert not checked.done()
        assert checked.result(timeout=DEADLINE) is False


def test_a_check_does_not_hold_back_another_check(db: Database) -> None:
    """FOR SHARE: two transactions of the leader check the lease at once."""
    _postgres_only(db)
    assert _take(db, "a") == 1
    with db.engine.connect() as one, db.engine.connect() as two, one.begin(), two.begin():
        two.execute(text("SET LOCAL lock_timeout = '10s'"))
        assert leases.check(one, "leader", "a", 1)
        assert leases.check(two, "leader", "a", 1)
