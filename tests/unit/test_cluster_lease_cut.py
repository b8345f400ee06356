"""A leader cut from PostgreSQL in the middle of a fenced write (issue 23): the write had
locked the lease row FOR SHARE (fenced_work.py), and the session, idle in its transaction
with its client gone silent, would keep that lock until the cut heals; no peer could take the
lease meanwhile (33 s seen in a chaos run, bound 10 s). PostgreSQL must end that session
within the lease's time, so that a peer leads within two lease periods of the cut.

The leader reaches the database through a proxy that can blackhole its connections
(tests/chaos/dbproxy.py), as a network partition does: nothing crosses, nothing is closed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from bollard.server.clock import SystemClock
from bollard.server.cluster.fenced_work import LeaderWork
from bollard.server.cluster.leader import Leadership
from bollard.server.unit_of_work import DatabaseWork
from bollard.store import events, servers
from bollard.store.db import Database
from tests.chaos.dbproxy import DbProxy
from tests.support.cluster_db import DEADLINE, until
from tests.support.cluster_db import db as db  # the fixture (an explicit re-export)

pytestmark = pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)

TTL = 2.0


@pytest.fixture
def proxy(db_url: str) -> Iterator[DbProxy]:
    url = make_url(db_url)
    cut = DbProxy(url.host or "127.0.0.1", url.port or 5432, name="leader-db")
    cut.start()
    yield cut
    cut.heal()
    cut.close()


def _through(db_url: str, proxy: DbProxy) -> str:
    return make_url(db_url).set(host="127.0.0.1", port=proxy.port).render_as_string(False)


def _messages(db: Database) -> list[str]:
    with db.read() as conn:
        query = text("SELECT message FROM events WHERE kind = 'test.write'")
        return [str(m) for m in conn.execute(query).scalars()]


def _write_event(conn: Any, message: str) -> None:
    events.add(conn, "test.write", message, servers.db_now(conn))


def test_a_peer_leads_within_two_lease_periods_of_a_leader_cut_mid_transaction(
    db: Database, db_url: str, proxy: DbProxy
) -> None:
    cut_db = Database(_through(db_url, proxy))
    clock = SystemClock()
    a = Leadership(work=DatabaseWork(cut_db), clock=clock, holder="server-a", ttl=TTL)
    b = Leadership(work=DatabaseWork(db), clock=clock, holder="server-b", ttl=TTL)
    a_work = LeaderWork(DatabaseWork(cut_db), a)
    inside, cut_done = threading.Event(), threading.Event()
    outcome: list[BaseException | None] = []

    def fenced_write() -> None:
        """A duty's write, its lease checked (the row locked FOR SHARE), cut before its
        next statement."""
        try:
            with a_work.write() as conn:
                _write_event(conn, "a's write")
                inside.set()
                if not cut_done.wait(DEADLINE):
                    raise TimeoutError("the test never cut the leader off")
                _write_event(conn, "a's write, after the cut")
        except BaseException as exc:  # noqa: BLE001 - looked at by the test
            outcome.append(exc)
            return
        outcome.append(None)

    async def main() -> float:
        loop_a = asyncio.create_task(a.run())
        await until(lambda: a.is_leader, "a to lead")
        loop_b = asyncio.create_task(b.run())
        writer = threading.Thread(target=fenced_write, name="a-fenced-write", daemon=True)
        writer.start()
        try:
            assert await asyncio.to_thread(inside.wait, DEADLINE), "a's write did not begin"
            proxy.cut("blackhole")
            cut_at = time.monotonic()
            cut_done.set()
            await until(lambda: b.is_leader, "b to take the lease over")
            return time.monotonic() - cut_at
        finally:
            # Heal first: a's calls hang in threads until then (asyncio.run waits for them).
            proxy.heal()
            for loop in (loop_a, loop_b):
                loop.cancel()
            await asyncio.wait({loop_a, loop_b}, timeout=DEADLINE)
            await asyncio.to_thread(writer.join, DEADLINE)

    try:
        took = asyncio.run(main())
    finally:
        cut_db.dispose()
    assert took < 2 * TTL, f"b led {took:.1f} s after the cut (bound {2 * TTL:g} s)"
    # a's session was ended under it: its write failed (the connection taken for lost, as
    # errors_db.py answers 503) and nothing of it was stored.
    assert len(outcome) == 1 and isinstance(outcome[0], DBAPIError), outcome
    assert outcome[0].connection_invalidated, outcome
    assert _messages(db) == []
