"""Membership (bollard.server.cluster.membership) on real databases: two Membership instances
in one event loop on one database stand for two servers."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import update

from bollard.domain.servers import ServerRecord, ServerState
from bollard.server.clock import SystemClock
from bollard.server.cluster.membership import Membership, OneCall, ServerConflict
from bollard.server.unit_of_work import DatabaseWork
from bollard.store import servers
from bollard.store.db import Database
from bollard.store.tables import servers as servers_table
from tests.support.cluster_db import DEADLINE, FaultyWork, until
from tests.support.cluster_db import db as db  # the fixture (an explicit re-export)

TTL = 1.0


def member(
    work: DatabaseWork, name: str, *, single: bool = False, local: bool = False
) -> Membership:
    return Membership(
        work=work,
        clock=SystemClock(),
        name=name,
        url=f"https://{name}",
        schema_revision="0017",
        ttl=TTL,
        single=single,
        local=local,
    )


def row(db: Database, id: str) -> ServerRecord:
    with db.read() as conn:
        record = servers.get(conn, id)
    assert record is not None, f"no row for server {id}"
    return record


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=DEADLINE)
    assert done, "a membership loop did not end when cancelled"


def test_join_renew_and_leave(db: Database) -> None:
    async def main() -> None:
        a = member(DatabaseWork(db), "a:8443")
        record = await a.join()
        assert record.id == a.id
        assert record.state is ServerState.UP
        assert record.url == "https://a:8443"
        assert record.expires_at > record.started_at
        assert [p.id for p in await a.peers()] == [a.id]

        loop = asyncio.create_task(a.run())
        renewed = await until(
            lambda: row(db, a.id).renewed_at > record.renewed_at, "a renewal of the row"
        )
        assert renewed
        assert not loop.done()

        await a.leave()
        done, _ = await asyncio.wait({loop}, timeout=DEADLINE)
        assert done, "run() did not end after leave()"
        assert loop.result() is None
        left = row(db, a.id)
        assert left.state is ServerState.STOPPED
        assert left.stopped_at is not None
        assert not a.lost.is_set()
        assert await a.peers() == []

    asyncio.run(main())


def test_two_servers_see_each_other_oldest_first(db: Database) -> None:
    async def main() -> None:
        a, b = member(DatabaseWork(db), "a:1"), member(DatabaseWork(db), "b:1")
        await a.join()
        await b.join()
        assert [p.id for p in await a.peers()] == [a.id, b.id]
        assert [p.id for p in await b.peers()] == [a.id, b.id]
        assert await a.reap() == []  # nobody expired: nothing to reap
        await b.leave()
        assert [p.id for p in await a.peers()] == [a.id]

    asyncio.run(main())


def test_an_expired_peer_is_reaped_and_its_owner_learns_it_is_lost(db: Database) -> None:
    async def main() -> None:
        a, b = member(DatabaseWork(db), "a:1"), member(DatabaseWork(db), "b:1")
        await a.join()
        loop_a = asyncio.create_task(a.run())
        old = (await b.join()).id  # b does not renew: it stalls
        calls: list[str] = []
        b.on_lost(lambda: calls.append(b.id))
        rejoined: list[ServerRecord] = []
        b.on_rejoined(rejoined.append)

        gone = await until(a.reap, "a to reap b's expired row")
        assert [s.id for s in gone] == [old]
        assert row(db, old).state is ServerState.GONE
        assert row(db, a.id).state is ServerState.UP  # a reaps others, never itself
        assert [p.id for p in await a.peers()] == [a.id]

        loop_b = asyncio.create_task(b.run())  # b wakes up: its renewal finds the row gone
        await until(b.lost.is_set, "b to find itself lost")
        await until(lambda: rejoined, "b to join again")
        assert calls == [old]  # on_lost called once, for the row it lost
        assert b.id != old and rejoined[0].id == b.id
        assert not b.lost.is_set()
        assert row(db, b.id).state is ServerState.UP
        assert row(db, old).state is ServerState.GONE
        assert {p.id for p in await a.peers()} == {a.id, b.id}
        for loop in (loop_a, loop_b):
            await stopped(loop)

    asyncio.run(main())


def test_a_server_without_database_answers_for_a_ttl_is_lost_then_joins_again(
    db: Database,
) -> None:
    async def main() -> None:
        work = FaultyWork(db)
        b = member(work, "b:1")
        old = (await b.join()).id
        lost_calls: list[float] = []
        b.on_lost(lambda: lost_calls.append(time.monotonic()))
        loop = asyncio.create_task(b.run())

        cut = time.monotonic()
        work.hang()
        await until(b.lost.is_set, "b to count itself lost")
        assert len(lost_calls) == 1
        # Lost once a whole ttl has passed without a renewal, and not long after.
        assert TTL - TTL / 3 <= lost_calls[0] - cut <= TTL + 1.0
        assert loop.done() is False

        work.answer()
        await until(lambda: not b.lost.is_set(), "b to join again")
        assert b.id != old
        assert len(lost_calls) == 1
        assert row(db, b.id).state is ServerState.UP
        # Its own earlier row is not left for a peer to find: it is marked gone.
        await until(lambda: row(db, old).state is ServerState.GONE, "the old row gone")
        await b.leave()
        done, _ = await asyncio.wait({loop}, timeout=DEADLINE)
        assert done
        assert row(db, b.id).state is ServerState.STOPPED

    asyncio.run(main())


def test_single_mode_refuses_a_second_live_server(db: Database) -> None:
    async def main() -> None:
        a = member(DatabaseWork(db), "node-a:8443", single=True)
        b = member(DatabaseWork(db), "node-b:8443", single=True)
        await a.join()
        with pytest.raises(ServerConflict) as refused:
            await b.join()
        message = refused.value.message
        assert "\n" not in message
        assert "node-a:8443" in message and "https://node-a:8443" in message
        assert "SQLite runs one server; use PostgreSQL for several" in message
        assert refused.value.code == "server-conflict"
        with db.read() as conn:
            assert servers.get(conn, b.id) is None  # nothing of b was stored

        await a.leave()  # once a has stopped, b may run
        record = await b.join()
        assert record.state is ServerState.UP
        assert [p.id for p in await b.peers()] == [b.id]

    asyncio.run(main())


def test_single_mode_takes_an_expired_row_for_dead(db: Database) -> None:
    async def main() -> None:
        crashed = member(DatabaseWork(db), "a:1", single=True)
        await crashed.join()  # then never renews (it crashed)
        later = member(DatabaseWork(db), "a:1", single=True)
        await until(lambda: row(db, crashed.id).expires_at < _db_now(db), "the row to expire")
        assert (await later.join()).state is ServerState.UP

    asyncio.run(main())


def test_not_in_single_mode_two_servers_join(db: Database) -> None:
    async def main() -> None:
        a, b = member(DatabaseWork(db), "a:1"), member(DatabaseWork(db), "b:1")
        await a.join()
        await b.join()
        assert len(await a.peers()) == 2

    asyncio.run(main())


def _db_now(db: Database) -> Any:
    with db.read() as conn:
        return servers.db_now(conn)


def test_a_server_started_again_under_its_name_retires_its_previous_run(db: Database) -> None:
    async def main() -> None:
        crashed = member(DatabaseWork(db), "a:1")
        peer = member(DatabaseWork(db), "b:1")
        await crashed.join()  # then never renews (it was killed), its row still live
        await peer.join()
        again = member(DatabaseWork(db), "a:1")
        await again.join()  # at once: no wait for the old row to expire
        assert row(db, crashed.id).state is ServerState.GONE
        assert row(db, peer.id).state is ServerState.UP  # another name: untouched
        assert {p.id for p in await again.peers()} == {again.id, peer.id}

    asyncio.run(main())


def test_single_mode_takes_a_row_whose_process_is_gone_for_dead(db: Database) -> None:
    async def main() -> None:
        crashed = member(DatabaseWork(db), "a:1", single=True, local=True)
        await crashed.join()
        with db.write() as conn:  # the row of a process that no longer runs on this host
            conn.execute(
                update(servers_table)
                .where(servers_table.c.id == crashed.id)
                .values(pid=_dead_pid())
            )
        other = member(DatabaseWork(db), "b:1", single=True, local=True)
        assert (await other.join()).state is ServerState.UP
        assert row(db, crashed.id).state is ServerState.GONE
        # A live server of another process of this host is refused (SQLite: one server).
        with db.write() as conn:
            conn.execute(
                update(servers_table).where(servers_table.c.id == other.id).values(pid=os.getppid())
            )
        third = member(DatabaseWork(db), "c:1", single=True, local=True)
        with pytest.raises(ServerConflict):
            await third.join()

    asyncio.run(main())


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    argv = [sys.executable, "-c", "import os; print(os.getpid())"]
    child = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=DEADLINE)
    return int(child.stdout)


def test_a_call_whose_caller_was_cancelled_is_waited_for_and_its_error_collected(
    db: Database,
) -> None:
    """A cancelled caller (a duty stopped while its call ran) leaves its call busy: the next
    call waits for it, and its late error is collected, never reported as unretrieved."""
    unretrieved: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: unretrieved.append(ctx))
        started, release = threading.Event(), threading.Event()
        order: list[str] = []

        def slow() -> None:
            started.set()
            assert release.wait(DEADLINE)
            order.append("slow")
            raise ValueError("a late failure")

        def next_call() -> str:
            order.append("next")
            return "next"

        calls = OneCall(DatabaseWork(db), SystemClock(), ThreadPoolExecutor(max_workers=2))
        caller = asyncio.create_task(calls.run(DEADLINE, slow))
        assert await asyncio.to_thread(started.wait, DEADLINE)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        following = asyncio.create_task(calls.run(DEADLINE, next_call))
        await asyncio.sleep(0)  # (let it start waiting)
        assert not following.done()
        release.set()
        assert await following == "next"
        assert order == ["slow", "next"]  # one call at a time, even after a cancel
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(main())
    assert unretrieved == []
