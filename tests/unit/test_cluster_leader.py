"""Leadership and fenced leader work (bollard.server.cluster.leader, fenced_work) on real
databases: two Leadership instances in one event loop on one database stand for two servers."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from sqlalchemy import func, select, text

from bollard.server.clock import SystemClock
from bollard.server.cluster.fenced_work import LeaderWork, NotLeader
from bollard.server.cluster.leader import Leadership
from bollard.server.unit_of_work import DatabaseWork
from bollard.store import events, leases, servers
from bollard.store.db import Database
from bollard.store.tables import events as events_table
from tests.support.cluster_db import DEADLINE, FaultyWork, until
from tests.support.cluster_db import db as db  # the fixture (an explicit re-export)


def leadership(work: DatabaseWork, holder: str, ttl: float) -> Leadership:
    return Leadership(work=work, clock=SystemClock(), holder=holder, ttl=ttl)


class Watch:
    """Samples who counts as leader at every turn of the event loop it can get, and records
    any moment when both did."""

    def __init__(self, *leads: Leadership) -> None:
        self.leads = leads
        self.both: list[tuple[str, ...]] = []
        self.samples = 0
        self.task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            holding = tuple(lead.holder for lead in self.leads if lead.is_leader)
            if len(holding) > 1:
                self.both.append(holding)
            self.samples += 1
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.wait({self.task}, timeout=DEADLINE)


def lease_row(db: Database) -> Any:
    with db.read() as conn:
        return leases.get(conn, "leader")


def event_messages(db: Database) -> list[str]:
    with db.read() as conn:
        query = select(events_table.c.message).where(events_table.c.kind == "test.write")
        return [str(m) for m in conn.execute(query).scalars()]


def write_event(conn: Any, message: str) -> None:
    events.add(conn, "test.write", message, servers.db_now(conn))


async def ended(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    _, pending = await asyncio.wait(set(tasks), timeout=DEADLINE)
    assert not pending, "a leadership loop did not end when cancelled"


def test_one_leader_at_a_time_and_resign_hands_over_at_once(db: Database) -> None:
    async def main() -> None:
        ttl = 5.0  # long: a handover faster than it is the resignation's, not an expiry's
        a = leadership(DatabaseWork(db), "server-a", ttl)
        b = leadership(DatabaseWork(db), "server-b", ttl)
        elected: list[tuple[str, int]] = []
        deposed: list[tuple[str, bool]] = []

        def follow(lead: Leadership) -> None:
            lead.on_elected(lambda token: elected.append((lead.holder, token)))
            lead.on_deposed(lambda: deposed.append((lead.holder, lead.is_leader)))

        follow(a)
        follow(b)
        watch = Watch(a, b)
        loops = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]

        await until(lambda: a.is_leader or b.is_leader, "a leader")
        first, second = (a, b) if a.is_leader else (b, a)
        assert not second.is_leader
        assert first.token is not None and elected == [(first.holder, first.token)]
        row = lease_row(db)
        assert (row.holder, row.token) == (first.holder, first.token)
        # The other keeps trying (every ttl/3) and keeps failing while the lease is held.
        await until(lambda: watch.samples > 50, "some samples")
        assert not second.is_leader

        old_token = first.token
        handed = time.monotonic()
        await first.resign()
        second.kick()  # as the bus will, once the resignation is announced
        await until(lambda: second.is_leader, "the other to take over")
        assert time.monotonic() - handed < ttl / 2  # at once: not by waiting for an expiry
        assert not first.is_leader and first.token is None
        assert second.token == old_token + 1  # a new holder: the token grows
        assert elected == [(first.holder, old_token), (second.holder, old_token + 1)]
        assert deposed == [(first.holder, True)]  # called while it still counted as leader
        await until(loops[[a, b].index(first)].done, "the resigned server's loop to end")
        assert watch.both == []
        await watch.stop()
        await ended(*loops)

    asyncio.run(main())


def test_an_expired_leader_is_replaced_within_two_lease_periods(db: Database) -> None:
    async def main() -> None:
        ttl = 1.5
        stalled = FaultyWork(db)
        a = leadership(stalled, "server-a", ttl)
        b = leadership(DatabaseWork(db), "server-b", ttl)
        deposed: list[float] = []
        a.on_deposed(lambda: deposed.append(time.monotonic()))
        loop_a = asyncio.create_task(a.run())
        await until(lambda: a.is_leader, "a to lead")
        token = a.token
        assert token is not None
        loop_b = asyncio.create_task(b.run())
        watch = Watch(a, b)

        cut = time.monotonic()
        stalled.hang()  # a's database calls get no answer any more
        await until(lambda: b.is_leader, "b to take over")
        took = time.monotonic() - cut
        assert took < 2 * ttl
        assert b.token == token + 1
        # a stopped counting itself leader before b could take over, within 2/3 of a ttl.
        assert len(deposed) == 1 and deposed[0] - cut <= ttl
        assert not a.is_leader
        assert watch.both == []

        # Once a's database answers again, it stays a follower.
        stalled.answer()
        await until(lambda: watch.samples > 100, "some samples")
        assert b.is_leader and not a.is_leader
        assert lease_row(db).holder == "server-b"
        await watch.stop()
        assert watch.both == []
        await ended(loop_a, loop_b)

    asyncio.run(main())


def test_leader_work_refuses_a_deposed_leaders_write(db: Database) -> None:
    async def main() -> None:
        ttl = 1.0
        a = leadership(DatabaseWork(db), "server-a", ttl)
        b = leadership(DatabaseWork(db), "server-b", ttl)
        a_work, b_work = LeaderWork(DatabaseWork(db), a), LeaderWork(DatabaseWork(db), b)
        with pytest.raises(NotLeader), b_work.write() as conn:  # not the leader yet
            write_event(conn, "b before it leads")

        loop_a = asyncio.create_task(a.run())
        await until(lambda: a.is_leader, "a to lead")
        with a_work.write() as conn:
            write_event(conn, "a leads")
        await ended(loop_a)  # a stalls: it still believes it leads, and renews no more
        assert a.is_leader

        loop_b = asyncio.create_task(b.run())
        await until(lambda: b.is_leader, "b to take over once a's lease expired")
        assert a.is_leader  # a has not noticed...
        with pytest.raises(NotLeader) as refused, a_work.write() as conn:  # ...but refused
            write_event(conn, "a after it was deposed")
        assert refused.value.code == "not-leader" and not refused.value.retryable
        assert "server-a" in refused.value.message
        with b_work.write() as conn:
            write_event(conn, "b leads")
        with a_work.read() as conn:  # reads are not fenced
            assert conn.execute(select(func.count()).select_from(events_table)).scalar_one()
        assert await a_work.run(event_messages, db) == ["a leads", "b leads"]
        assert event_messages(db) == ["a leads", "b leads"]  # the refused write did not happen
        await ended(loop_b)

    asyncio.run(main())


# Row locks FOR SHARE are PostgreSQL's (SQLite runs one server).
@pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_a_takeover_waits_for_a_running_checked_transaction(db: Database) -> None:
    async def main() -> None:
        ttl = 1.0
        a = leadership(DatabaseWork(db), "server-a", ttl)
        b = leadership(DatabaseWork(db), "server-b", ttl)
        a_work = LeaderWork(DatabaseWork(db), a)
        loop_a = asyncio.create_task(a.run())
        await until(lambda: a.is_leader, "a to lead")
        await ended(loop_a)  # a renews no more; its lease will expire
        token = a.token
        assert token is not None

        inside, release = threading.Event(), threading.Event()

        def long_write() -> None:
            with a_work.write() as conn:
                write_event(conn, "a's long write")
                # Idle on purpose, longer than a fenced transaction may be (half the ttl,
                # membership.IDLE_IN_LEASE_TRANSACTION): this one stands for a busy one.
                conn.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = 0")
                inside.set()
                if not release.wait(DEADLINE):
                    raise TimeoutError("the test never released the transaction")

        writer = asyncio.create_task(asyncio.to_thread(long_write))
        assert await asyncio.to_thread(inside.wait, DEADLINE)
        await until(lambda: lease_row(db).expires_at < _db_now(db), "a's lease to expire")

        loop_b = asyncio.create_task(b.run())
        await until(lambda: _lock_waiters(db) > 0, "b's takeover to wait on the lease row")
        assert not b.is_leader  # its takeover waits for a's checked transaction
        release.set()
        await asyncio.wait_for(writer, DEADLINE)
        await until(lambda: b.is_leader, "b to take over")
        assert b.token == token + 1
        assert event_messages(db) == ["a's long write"]  # a's write, checked first, committed
        with pytest.raises(NotLeader), a_work.write() as conn:
            write_event(conn, "a after the takeover")
        assert event_messages(db) == ["a's long write"]
        await ended(loop_b)

    asyncio.run(main())


def _db_now(db: Database) -> Any:
    with db.read() as conn:
        return servers.db_now(conn)


def _lock_waiters(db: Database) -> int:
    """Sessions of this database waiting for a lock (PostgreSQL)."""
    with db.read() as conn:
        query = text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int(conn.execute(query).scalar_one())


def test_a_lease_whose_holder_is_known_dead_is_taken_at_once(db: Database) -> None:
    async def main() -> None:
        ttl = 30.0  # far longer than the test: only the holder's death frees the lease
        with db.write() as conn:
            now = servers.db_now(conn)
            servers.register(conn, id="server-a", name="a:1", url="https://a:1", version="1",
                             protocols=[1], schema_revision="0017", pid=1, now=now,
                             ttl=ttl)  # fmt: skip
            first = leases.take(conn, "leader", "server-a", now, ttl)
        assert first is not None
        b = leadership(DatabaseWork(db), "server-b", ttl)
        await b._try_take()  # one attempt of its loop: a lives, b waits
        assert not b.is_leader and lease_row(db).holder == "server-a"
        with db.write() as conn:  # a's successor (or its peers) found it dead
            assert servers.retire(conn, "server-a", servers.db_now(conn))
        await b._try_take()  # the next attempt: no need to wait out a's 30 s lease
        assert b.is_leader
        assert b.token == first + 1
        assert lease_row(db).holder == "server-b"

    asyncio.run(main())


class _SlowWrites(DatabaseWork):
    """A database whose write transactions, once `slow` is set, wait in their thread for
    `land` before they begin (a renewal that lands late)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.slow = threading.Event()
        self.land = threading.Event()

    def write(self) -> Any:
        if self.slow.is_set():
            assert self.land.wait(DEADLINE * 3), "the test never let the write land"
        return super().write()


def test_a_leader_deposed_for_want_of_renewals_lets_go_of_a_renewal_that_landed_late(
    db: Database,
) -> None:
    """Its renewal was given up on but landed afterwards: the lease would stay live under a
    server that no longer leads (nobody leading for up to a ttl); it gives the lease up."""

    async def main() -> None:
        ttl = 3.0
        work = _SlowWrites(db)
        a = leadership(work, "server-a", ttl)
        loop_a = asyncio.create_task(a.run())
        await until(lambda: a.is_leader, "a to lead")
        token = a.token
        work.slow.set()  # the next renewal hangs in its thread
        await until(lambda: not a.is_leader, "a to depose itself")
        work.slow.clear()
        work.land.set()  # the renewal lands now, late; then a's give-up follows it

        def let_go() -> bool:
            row = lease_row(db)
            return bool(row.token == token and row.expires_at <= _db_now(db))

        await until(let_go, "the lease let go")
        b = leadership(DatabaseWork(db), "server-b", ttl)
        loop_b = asyncio.create_task(b.run())
        await until(lambda: b.is_leader, "b to take the lease at once")
        assert b.token == (token or 0) + 1
        await ended(loop_a, loop_b)

    asyncio.run(main())
