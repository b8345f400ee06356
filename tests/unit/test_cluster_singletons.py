"""Cluster-wide duties (bollard.server.cluster.singletons): they run on the leader only, and
the writes made for them are fenced by its lease; on real databases, two Leadership
instances in one event loop standing for two servers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import Connection

from bollard.server.clock import SystemClock
from bollard.server.cluster.fenced_work import NotLeader
from bollard.server.cluster.leader import Leadership
from bollard.server.cluster.singletons import DutyWork, Singletons, current_duty
from bollard.server.unit_of_work import DatabaseWork
from bollard.store import events, leases, servers
from bollard.store.db import Database
from tests.support.cluster_db import DEADLINE, until
from tests.support.cluster_db import db as db  # the fixture (an explicit re-export)


class Duty:
    """A duty loop that counts its starts and records the duty it ran as."""

    def __init__(self) -> None:
        self.starts = 0
        self.seen: list[str | None] = []
        self.cancelled = 0

    async def loop(self) -> None:
        self.starts += 1
        self.seen.append(current_duty())
        try:
            await asyncio.Event().wait()  # until cancelled
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


def write_event(conn: Connection, message: str) -> None:
    events.add(conn, "test.duty", message, servers.db_now(conn))


def test_without_a_leadership_duties_run_from_start_to_stop() -> None:
    async def main() -> None:
        one, two = Duty(), Duty()
        duties = Singletons(clock=SystemClock(), leadership=None)
        duties.add("one", one.loop)
        duties.add("two", two.loop)
        with pytest.raises(ValueError, match="twice"):
            duties.add("one", one.loop)
        assert duties.running == []
        await duties.start()
        await until(lambda: one.starts == 1 and two.starts == 1, "both duties to start")
        assert duties.running == ["one", "two"]
        assert (one.seen, two.seen) == (["one"], ["two"])  # each marked as its duty
        assert current_duty() is None  # (the caller is not)
        with pytest.raises(RuntimeError, match="after the duties started"):
            duties.add("three", one.loop)
        await duties.stop()
        assert duties.running == [] and (one.cancelled, two.cancelled) == (1, 1)

    asyncio.run(main())


def test_duties_run_on_the_leader_only_and_move_with_the_lease(db: Database) -> None:
    async def main() -> None:
        ttl = 5.0
        leads: dict[str, Leadership] = {}
        duties: dict[str, Singletons] = {}
        loops: dict[str, Duty] = {}
        for name in ("a", "b"):
            leads[name] = Leadership(
                work=DatabaseWork(db), clock=SystemClock(), holder=f"server-{name}", ttl=ttl
            )
            duties[name] = Singletons(clock=SystemClock(), leadership=leads[name])
            loops[name] = Duty()
            duties[name].add("monitor", loops[name].loop)
            await duties[name].start()
        both: list[int] = []
        sampling = True

        async def watch() -> None:  # no moment at which both run the duty
            while sampling:
                if all(d.running for d in duties.values()):
                    both.append(1)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        runs = [asyncio.create_task(lead.run()) for lead in leads.values()]
        leader = await until(
            lambda: next((n for n, lead in leads.items() if lead.is_leader), None), "a leader"
        )
        other = "b" if leader == "a" else "a"
        await until(lambda: duties[leader].running == ["monitor"], "the leader's duty to run")
        assert duties[other].running == [] and loops[other].starts == 0

        await leads[leader].resign()  # its duties stop before it stops counting as leader
        assert duties[leader].running == [] and loops[leader].cancelled == 1
        leads[other].kick()
        await until(lambda: duties[other].running == ["monitor"], "the duty to move")
        assert loops[other].seen == ["monitor"] and loops[leader].starts == 1

        sampling = False
        await asyncio.wait({watcher}, timeout=DEADLINE)
        assert both == []
        for lead in leads.values():
            await lead.resign()
        _, pending = await asyncio.wait(runs, timeout=DEADLINE)
        assert not pending
        assert all(d.running == [] for d in duties.values())

    asyncio.run(main())


def test_a_duty_s_writes_are_fenced_by_the_lease_and_other_writes_are_not(db: Database) -> None:
    async def main() -> None:
        work = DatabaseWork(db)
        lead = Leadership(work=work, clock=SystemClock(), holder="server-a", ttl=30.0)
        duty_work = DutyWork(work, lead)
        outcomes: dict[str, Any] = {}

        def write(message: str) -> str:
            with duty_work.write() as conn:
                write_event(conn, message)
            return message

        async def attempt(key: str) -> None:
            try:  # in a thread, as the duties' blocking work runs: it keeps the duty's mark
                outcomes[key] = await duty_work.run(write, key)
            except NotLeader as exc:
                outcomes[key] = exc

        gate = asyncio.Event()

        async def duty_loop() -> None:
            await attempt("before the lease")
            gate.set()
            await asyncio.Event().wait()

        duties = Singletons(clock=SystemClock(), leadership=None)
        duties.add("probe", duty_loop)
        await duties.start()
        await asyncio.wait_for(gate.wait(), DEADLINE)
        await duties.stop()
        assert isinstance(outcomes["before the lease"], NotLeader)  # not the leader yet

        await attempt("an api call")  # not a duty: never fenced
        assert outcomes["an api call"] == "an api call"

        run = asyncio.create_task(lead.run())
        await until(lambda: lead.is_leader, "the lease")
        token = lead.token
        assert token is not None

        async def as_duty(key: str) -> None:
            done = asyncio.Event()

            async def loop() -> None:
                await attempt(key)
                done.set()
                await asyncio.Event().wait()

            probe = Singletons(clock=SystemClock(), leadership=None)
            probe.add("probe", loop)
            await probe.start()
            await asyncio.wait_for(done.wait(), DEADLINE)
            await probe.stop()

        await as_duty("while leading")
        assert outcomes["while leading"] == "while leading"

        # A peer takes the lease over before this server notices: the duty's write is refused.
        with db.write() as conn:
            leases.give_up(conn, "leader", "server-a", token)
            assert leases.take(conn, "leader", "server-b", servers.db_now(conn), 30.0)
        assert lead.token == token  # (it has not noticed)
        await as_duty("deposed late")
        assert isinstance(outcomes["deposed late"], NotLeader)
        await attempt("another api call")
        assert outcomes["another api call"] == "another api call"

        run.cancel()
        await asyncio.wait({run}, timeout=DEADLINE)

    asyncio.run(main())
