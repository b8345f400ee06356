"""Task ownership (bollard.server.tasks.ownership, store/task_owners.py) on real databases:
each task is run by one server, a drive whose task was taken over stops without writing,
orphans are taken by compare-and-swap, and a wait follows a task run by another server.
Engines in one event loop on one database stand for servers; their ids are rows of
`servers`, made up or retired by the test."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import pytest
from sqlalchemy import Connection, select
from sqlalchemy.exc import OperationalError

from bollard.domain.errors import StepFailed
from bollard.domain.ids import new_id
from bollard.domain.models import Task
from bollard.domain.states import CommandType, TaskStatus
from bollard.server.clock import SystemClock
from bollard.server.tasks.context import StepContext, StepServices, Timeouts
from bollard.server.tasks.engine import TaskEngine
from bollard.server.tasks.flow import StepDef
from bollard.server.tasks.ownership import TaskTakeover
from bollard.server.tasks.params import NoParams
from bollard.server.tasks.runner import TaskRunner
from bollard.server.unit_of_work import DatabaseWork
from bollard.store import commands, servers, task_owners, tasks
from bollard.store.db import Database
from bollard.store.tables import commands as commands_table
from tests.support.cluster_db import DEADLINE, until
from tests.support.cluster_db import db as db  # the fixture (an explicit re-export)

P = ParamSpec("P")
R = TypeVar("R")

# -- a toy flow and an engine with fake services ----------------------------------------------


@dataclass
class GatedFlow:
    """Steps a, b (undoable), c. Step b waits for `gate` when set, then does `b_then`:
    "ok", "merge" (a `ctx.write`), "command" (a command, whose record is written with it)
    or "fail" (a failure: the task rolls back)."""

    gate: asyncio.Event | None = None
    b_then: str = "ok"
    calls: list[tuple[str, str]] = field(default_factory=list)  # (task id, what)
    ended: list[tuple[str, str]] = field(default_factory=list)
    b_running: set[str] = field(default_factory=set)
    type: str = "toy"
    params_model: type[NoParams] = NoParams

    def steps(self, task: Task) -> list[StepDef]:
        return [StepDef("a", self._a), StepDef("b", self._b, self._undo_b), StepDef("c", self._c)]

    async def _a(self, ctx: StepContext[Any]) -> dict[str, Any]:
        self.calls.append((ctx.task.id, "do a"))
        return {}

    async def _b(self, ctx: StepContext[Any]) -> dict[str, Any]:
        self.calls.append((ctx.task.id, "do b"))
        self.b_running.add(ctx.task.id)
        if self.gate is not None:
            await self.gate.wait()
        if self.b_then == "merge":
            await ctx.merge_result({"b": "merged"})
        elif self.b_then == "command":
            await ctx.command("probe", "node1", CommandType.START)
        elif self.b_then == "fail":
            raise StepFailed("b refused")
        return {"b": "done"}

    async def _undo_b(self, ctx: StepContext[Any]) -> None:
        self.calls.append((ctx.task.id, "undo b"))

    async def _c(self, ctx: StepContext[Any]) -> dict[str, Any]:
        self.calls.append((ctx.task.id, "do c"))
        return {}

    def succeed(self, conn: Connection, ctx: StepContext[Any]) -> None:
        self.ended.append((ctx.task.id, "succeed"))

    def fail(self, conn: Connection, ctx: StepContext[Any], error: str) -> None:
        self.ended.append((ctx.task.id, f"fail: {error}"))

    def did(self, task_id: str) -> list[str]:
        return [what for tid, what in self.calls if tid == task_id]


class FakeCommands:
    """Writes the command's row and the step's record of it in one transaction (as the
    dispatcher does), then "sends" it: answered at once."""

    def __init__(self, work: DatabaseWork) -> None:
        self.work = work
        self.sent: list[str] = []

    async def call(
        self,
        node: str,
        command: CommandType,
        args: dict[str, Any] | None = None,
        *,
        task_id: str | None = None,
        record: Callable[[Connection, str], None] | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        cid = new_id()

        def create() -> None:
            now = datetime.now(UTC)
            with self.work.write() as conn:
                commands.create(
                    conn, id=cid, node=node, type=command.value, args=dict(args or {}),
                    vm_uuid=None, epoch=0, task_id=task_id, deadline=now, now=now,
                )  # fmt: skip
                if record is not None:
                    record(conn, cid)

        await self.work.run(create)
        self.sent.append(cid)
        return {}


class CountingWork(DatabaseWork):
    """Counts the database calls that have returned."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.returned = 0

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await super().run(fn, *args, **kwargs)
        finally:
            self.returned += 1


class NoSessions:
    def session(self, node: str) -> None:
        return None

    async def wait_connected(self, nodes: set[str], timeout: float) -> bool:
        return not nodes


class Unused:
    """A service the toy flow never uses."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the toy flow used {name}")


@dataclass
class Server:
    """One engine and its runner, owner `ids[-1]` (a re-join appends a new id)."""

    engine: TaskEngine
    runner: TaskRunner
    commands: FakeCommands
    ids: list[str | None]
    ended: list[str] = field(default_factory=list)  # announced by the runner's on_ended

    @property
    def id(self) -> str | None:
        return self.ids[-1]


def server(
    work: DatabaseWork, flow: GatedFlow, owner: str | None, *, recheck: float = 1.0
) -> Server:
    clock = SystemClock()
    ended: list[str] = []
    runner = TaskRunner(work=work, clock=clock, on_ended=ended.append, recheck=recheck)
    fake_commands = FakeCommands(work)
    ids: list[str | None] = [owner]
    unused: Any = Unused()
    engine = TaskEngine(
        services=StepServices(
            work=work, clock=clock, settings=unused, commands=fake_commands,
            sessions=NoSessions(), inspector=unused, requests=unused, recovery=unused,
            power=unused, kick_state=lambda node: None, touch=lambda: None,
            timeouts=Timeouts(command=5.0, shutdown=5.0, heartbeat_interval=0.01),
        ),
        runner=runner,
        owner=lambda: ids[-1],
    )  # fmt: skip
    engine.register(flow)  # type: ignore[arg-type]
    return Server(engine, runner, fake_commands, ids, ended)


def join(db: Database, server_id: str) -> None:
    """A row `up` for a server id."""
    with db.write() as conn:
        servers.register(
            conn, id=server_id, name=server_id, url=f"http://{server_id}", version="test",
            protocols=[1], schema_revision="test", pid=1, now=servers.db_now(conn), ttl=600,
        )  # fmt: skip


def retire(db: Database, server_id: str) -> None:
    """The server's row becomes `gone` (found dead)."""
    with db.write() as conn:
        assert servers.retire(conn, server_id, servers.db_now(conn))


def create(db: Database, srv: Server) -> str:
    task_id = new_id()
    with db.write() as conn:
        srv.engine.create_in(
            conn, id=task_id, type="toy", vm_uuid=None, vm_name=None, node=None, params={}
        )
    return task_id


def owner(db: Database, task_id: str) -> str | None:
    with db.read() as conn:
        return task_owners.owner_of(conn, task_id)


def task(db: Database, task_id: str) -> Task:
    with db.read() as conn:
        return tasks.get(conn, task_id, with_steps=True)


def take(db: Database, task_id: str, old: str | None, new: str | None) -> bool:
    with db.write() as conn:
        return task_owners.take(conn, task_id, old, new)


def snapshot(db: Database, task_id: str) -> tuple[Any, ...]:
    """What a drive could have written: the task's row and its steps' (less the owner)."""
    t = task(db, task_id)
    return (
        t.state, t.error, t.result, t.finished_at,
        [(s.name, s.state, s.error, s.result, s.attempts, s.commands) for s in t.steps],
    )  # fmt: skip


async def ended(db: Database, task_id: str) -> Task:
    def check() -> Task | None:
        now = task(db, task_id)
        return now if now.state.ended else None

    found: Task = await until(check, f"task {task_id} to end")
    return found


async def driven_out(srv: Server, task_id: str) -> None:
    await until(lambda: not srv.runner.is_running(task_id), f"the drive of {task_id} to stop")


# -- tests ------------------------------------------------------------------------------------


def test_a_created_task_records_its_owner(db: Database) -> None:
    work = DatabaseWork(db)
    join(db, "srv-a")
    mine = server(work, GatedFlow(), "srv-a")
    nobody = server(work, GatedFlow(), None)  # tests and tools: no server id
    assert owner(db, create(db, mine)) == "srv-a"
    assert owner(db, create(db, nobody)) is None


def test_hold_refuses_once_the_task_is_taken_over(db: Database) -> None:
    work = DatabaseWork(db)
    join(db, "srv-a")
    join(db, "srv-b")
    task_id = create(db, server(work, GatedFlow(), "srv-a"))
    with db.write() as conn:
        assert task_owners.hold(conn, task_id, ["srv-a"])
        assert not task_owners.hold(conn, task_id, ["srv-b"])
        assert not task_owners.hold(conn, task_id, [None])
    assert not take(db, task_id, "srv-a", "srv-b")  # srv-a is up: not an orphan
    retire(db, "srv-a")
    assert not take(db, task_id, "srv-c", "srv-b")  # not its owner
    assert take(db, task_id, "srv-a", "srv-b")
    assert not take(db, task_id, "srv-a", "srv-c")  # the swap is made once
    with db.write() as conn:
        assert not task_owners.hold(conn, task_id, ["srv-a"])
        assert task_owners.hold(conn, task_id, ["srv-b"])
    assert owner(db, task_id) == "srv-b"


@pytest.mark.parametrize("then", ["ok", "merge", "command", "fail"])
def test_a_drive_taken_over_stops_and_leaves_the_task_to_its_new_owner(
    db: Database, then: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Taken over while its step b runs, the drive's next write (the engine's own, the step's
    `ctx.write`, the record of a command it sends, or the failed step's) is refused: no
    failed step, no rollback, no crash handler, no command sent; a warning names the new
    owner."""

    async def main() -> None:
        work = DatabaseWork(db)
        join(db, "srv-a")
        join(db, "srv-b")
        flow = GatedFlow(gate=asyncio.Event(), b_then=then)
        a = server(work, flow, "srv-a")
        task_id = create(db, a)
        a.engine.launch(task_id)
        await until(lambda: task_id in flow.b_running, "step b to run")
        retire(db, "srv-a")  # srv-a is found dead, and srv-b takes its task
        assert take(db, task_id, "srv-a", "srv-b")
        before = snapshot(db, task_id)
        assert before[0] is TaskStatus.RUNNING
        assert [s[1] for s in before[4]] == ["done", "running", "pending"]

        flow.gate.set()  # type: ignore[union-attr]
        await driven_out(a, task_id)
        assert snapshot(db, task_id) == before
        assert owner(db, task_id) == "srv-b"
        assert flow.did(task_id) == ["do a", "do b"] and flow.ended == []
        assert a.ended == []  # not announced as ended
        with db.read() as conn:
            rows = conn.execute(
                select(commands_table.c.id).where(commands_table.c.task_id == task_id)
            ).all()
        assert rows == [] and a.commands.sent == []
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(task_id in m and "srv-b" in m for m in warnings), warnings
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    caplog.set_level(logging.WARNING)
    asyncio.run(main())


def test_resume_all_takes_and_resumes_only_the_orphans(db: Database) -> None:
    async def main() -> None:
        work = DatabaseWork(db)
        flow = GatedFlow()
        for sid in ("srv-gone", "srv-live", "srv-me"):
            join(db, sid)
        retire(db, "srv-gone")

        def made_by(sid: str | None) -> str:
            return create(db, server(work, flow, sid))

        null, gone, missing, live = (
            made_by(None), made_by("srv-gone"), made_by("srv-missing"), made_by("srv-live"),
        )  # fmt: skip
        finished = made_by("srv-gone")
        with db.write() as conn:
            now = servers.db_now(conn)
            tasks.set_state(conn, finished, TaskStatus.FAILED, now, error="earlier")

        me = server(work, flow, "srv-me")
        assert await me.engine.resume_all() == 3
        for task_id in (null, gone, missing):
            assert (await ended(db, task_id)).state is TaskStatus.SUCCEEDED
            assert owner(db, task_id) == "srv-me"
            assert flow.did(task_id) == ["do a", "do b", "do c"]
        await until(lambda: me.runner.active == 0, "the drives to stop")
        assert sorted(me.ended) == sorted([null, gone, missing])
        assert task(db, live).state is TaskStatus.PENDING and owner(db, live) == "srv-live"
        assert task(db, finished).state is TaskStatus.FAILED
        assert owner(db, finished) == "srv-gone"
        assert flow.did(live) == [] and flow.did(finished) == []

    asyncio.run(main())


def race_to_take(db: Database, task_id: str, old: str, takers: list[str]) -> dict[str, bool]:
    """Each taker's swap, started together in threads of their own: whether it won."""
    barrier = threading.Barrier(len(takers))
    won: dict[str, bool] = {}

    def race(me: str) -> None:
        barrier.wait(DEADLINE)
        won[me] = take(db, task_id, old, me)

    threads = [threading.Thread(target=race, args=(me,)) for me in takers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE)
    return won


def test_of_two_servers_taking_one_orphan_exactly_one_wins(db: Database) -> None:
    """Store level, in two threads at once (each its own connection): one swap wins."""
    work = DatabaseWork(db)
    join(db, "srv-1")
    join(db, "srv-2")
    join(db, "srv-dead")
    orphans = [create(db, server(work, GatedFlow(), "srv-dead")) for _ in range(8)]
    retire(db, "srv-dead")
    for task_id in orphans:
        won = race_to_take(db, task_id, "srv-dead", ["srv-1", "srv-2"])
        assert sorted(won.values()) == [False, True], won
        assert owner(db, task_id) == next(me for me, w in won.items() if w)


def test_of_two_engines_taking_the_same_orphans_each_is_driven_once(db: Database) -> None:
    async def main() -> None:
        join(db, "srv-1")
        join(db, "srv-2")
        join(db, "srv-dead")
        flow = GatedFlow()
        one = server(DatabaseWork(db), flow, "srv-1")
        two = server(DatabaseWork(db), flow, "srv-2")
        orphans = [create(db, server(DatabaseWork(db), flow, "srv-dead")) for _ in range(6)]
        retire(db, "srv-dead")
        taken_1, taken_2 = await asyncio.gather(
            one.engine.take_orphans(), two.engine.take_orphans()
        )
        assert sorted(taken_1 + taken_2) == sorted(orphans)
        assert not set(taken_1) & set(taken_2)
        for task_id in orphans:
            assert (await ended(db, task_id)).state is TaskStatus.SUCCEEDED
            assert owner(db, task_id) == ("srv-1" if task_id in taken_1 else "srv-2")
            assert flow.did(task_id) == ["do a", "do b", "do c"]  # driven once
        await until(lambda: one.runner.active + two.runner.active == 0, "the drives to stop")

    asyncio.run(main())


def test_takeover_retakes_in_place_a_task_driven_under_an_old_id(db: Database) -> None:
    """This server was taken for dead and joined again under a new id while it drove a task:
    the takeover moves the task to the new id without starting it again, and the running
    drive's next writes pass. A task of a live server is not taken."""

    async def main() -> None:
        work = DatabaseWork(db)
        join(db, "srv-old")
        join(db, "srv-peer")
        flow = GatedFlow(gate=asyncio.Event(), b_then="merge")
        me = server(work, flow, "srv-old")
        peer = server(work, flow, "srv-peer")
        mine = create(db, me)
        theirs = create(db, peer)  # created, not launched: still a live server's
        me.engine.launch(mine)
        await until(lambda: mine in flow.b_running, "step b to run")

        retire(db, "srv-old")
        join(db, "srv-new")
        me.ids.append("srv-new")
        takeover = TaskTakeover(engine=me.engine, clock=SystemClock(), interval=60.0)
        assert await takeover.pass_once() == [mine]
        assert owner(db, mine) == "srv-new" and owner(db, theirs) == "srv-peer"
        assert me.runner.active == 1
        assert await takeover.pass_once() == []  # nothing more to take

        flow.gate.set()  # type: ignore[union-attr]
        done = await ended(db, mine)
        assert done.state is TaskStatus.SUCCEEDED and done.result == {"b": "merged"}
        assert flow.did(mine) == ["do a", "do b", "do c"]  # one drive, never restarted
        assert owner(db, mine) == "srv-new"
        assert task(db, theirs).state is TaskStatus.PENDING and flow.did(theirs) == []

    asyncio.run(main())


def test_the_takeover_loop_resumes_orphans_and_outlives_a_failed_pass(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        work = DatabaseWork(db)
        join(db, "srv-me")
        join(db, "srv-dead")
        flow = GatedFlow()
        me = server(work, flow, "srv-me")
        passes: list[str] = []

        class FailsOnce:
            async def take_orphans(self) -> list[str]:
                passes.append("pass")
                if len(passes) == 1:
                    raise OperationalError("SELECT", {}, Exception("the database went away"))
                return await me.engine.take_orphans()

        loop = asyncio.create_task(
            TaskTakeover(engine=FailsOnce(), clock=SystemClock(), interval=0.05).run()
        )
        orphan = create(db, server(work, flow, "srv-dead"))
        retire(db, "srv-dead")
        assert (await ended(db, orphan)).state is TaskStatus.SUCCEEDED
        assert owner(db, orphan) == "srv-me" and len(passes) >= 2
        loop.cancel()
        await asyncio.wait({loop}, timeout=DEADLINE)
        assert loop.cancelled()
        assert any("takeover pass failed" in r.getMessage() for r in caplog.records)

    caplog.set_level(logging.WARNING)
    asyncio.run(main())


@pytest.mark.parametrize("announced", [True, False])
def test_wait_returns_a_task_that_ends_elsewhere(db: Database, announced: bool) -> None:
    """A waiter here follows a task another server runs: woken by the announcement of its
    end (`ended_elsewhere`; the re-read is set far off), or without one, by the re-read."""

    async def main() -> None:
        join(db, "srv-here")
        join(db, "srv-there")
        flow = GatedFlow(gate=asyncio.Event())
        work = CountingWork(db)
        here = server(work, flow, "srv-here", recheck=60.0 if announced else 0.1)
        there = server(DatabaseWork(db), flow, "srv-there")
        task_id = create(db, there)
        there.engine.launch(task_id)
        await until(lambda: task_id in flow.b_running, "step b to run there")

        # As it stands at its deadline, after waiting it out (not at once: it runs).
        began = time.monotonic()
        still = await here.runner.wait(task_id, 0.3)
        assert still.state is TaskStatus.RUNNING and time.monotonic() - began >= 0.25

        reads = work.returned
        waiting = asyncio.create_task(here.runner.wait(task_id, 30.0))
        # It has read the task running (and waits now) before the task ends.
        await until(lambda: work.returned > reads, "the waiter's first read")
        flow.gate.set()  # type: ignore[union-attr]
        # Its runner there announces its end (the assembly publishes it to the peers).
        await until(lambda: there.ended, "the end announced there")
        assert there.ended == [task_id] and task(db, task_id).state.ended
        if announced:
            here.runner.ended_elsewhere(task_id)
        done, _ = await asyncio.wait({waiting}, timeout=DEADLINE)
        assert done, "the wait did not return"
        assert waiting.result().state is TaskStatus.SUCCEEDED
        assert here.ended == []

    asyncio.run(main())
