"""How many commits a task makes, and the pending writes that wait for the task's next one
(server/tasks/engine.py's docstring): a step's end is written with the next step's start,
a transaction that fails gives its pending writes back, a cancel found when a command is
recorded writes nothing and sends nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Connection

from bollard.domain.commands import CommandState
from bollard.domain.errors import StepFailed
from bollard.domain.ids import new_id
from bollard.domain.models import Task
from bollard.domain.states import CommandType, TaskStatus
from bollard.server.assembly import Assembly, prepare
from bollard.server.config import ServerConfig
from bollard.server.ports import CommandPort
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.created import CreatedTasks, pending_steps
from bollard.server.tasks.flow import StepDef
from bollard.server.tasks.params import NoParams
from bollard.store import commands, events, tasks


class Steps:
    """Steps a, b, c, doing nothing but what `acts` says (name -> what the step does)."""

    type = "commits"
    params_model = NoParams

    def __init__(self, acts: dict[str, Callable[[StepContext[Any]], Any]] | None = None) -> None:
        self.acts = acts or {}

    def steps(self, task: Task) -> list[StepDef]:
        return [StepDef(name, self._do(name)) for name in ("a", "b", "c")]

    def _do(self, name: str) -> Any:
        async def do(ctx: StepContext[Any]) -> dict[str, Any]:
            act = self.acts.get(name)
            if act is not None:
                await act(ctx)
            return {"made": name}

        return do

    def succeed(self, conn: Connection, ctx: StepContext[Any]) -> None:
        pass

    def fail(self, conn: Connection, ctx: StepContext[Any], error: str) -> None:
        pass


@pytest.fixture
def runtime(tmp_path: Path, db_url: str) -> Iterator[Assembly]:
    rt = prepare(ServerConfig(data_dir=tmp_path / "d", db_url=db_url))
    yield rt
    rt.db.dispose()


def _new_task(rt: Assembly, flow: Steps) -> str:
    rt.engine.register(flow)
    task_id = new_id()
    with rt.db.write() as conn:
        rt.engine.create_in(
            conn, id=task_id, type=flow.type, vm_uuid=None, vm_name=None, node=None, params={}
        )
    return task_id


def _count_writes(rt: Assembly) -> list[int]:
    """Count the write transactions the engine and its steps open from now on."""
    opened = [0]
    write = rt.work.write

    def counted() -> AbstractContextManager[Connection]:
        opened[0] += 1
        return write()

    rt.work.write = counted  # type: ignore[method-assign]
    return opened


def _task(rt: Assembly, task_id: str) -> Task:
    with rt.db.read() as conn:
        return tasks.get(conn, task_id, with_steps=True)


def test_a_steps_end_is_written_with_the_next_steps_start(runtime: Assembly) -> None:
    task_id = _new_task(runtime, Steps())
    opened = _count_writes(runtime)
    asyncio.run(runtime.engine.drive(task_id))
    task = _task(runtime, task_id)
    assert task.state is TaskStatus.SUCCEEDED
    assert [(s.state, s.result) for s in task.steps] == [("done", {"made": n}) for n in "abc"]
    # a's start (with the task's), b's (with a's end), c's (with b's end), the end (with c's):
    # four commits, where each start and each end once made one of its own (seven).
    assert opened[0] == 4
    with runtime.db.read() as conn:
        kinds = [e.kind for e in events.after(conn, 0, limit=100, task_id=task_id)]
    assert kinds == [
        "task.created", "task.running",
        "step.running", "step.done", "step.running", "step.done", "step.running", "step.done",
        "task.succeeded",
    ]  # fmt: skip


def test_a_failed_transaction_gives_its_pending_writes_back(runtime: Assembly) -> None:
    shown: list[str] = []

    async def refused_then_written(ctx: StepContext[Any]) -> None:
        ctx.later(lambda conn: shown.append("made"))

        def refuse(conn: Connection) -> None:
            raise StepFailed("refused")

        with pytest.raises(StepFailed):
            await ctx.write(refuse)
        assert len(ctx.pending) == 1  # given back, first in line
        await ctx.write(lambda conn: None)
        assert not ctx.pending

    task_id = _new_task(runtime, Steps({"b": refused_then_written}))
    asyncio.run(runtime.engine.drive(task_id))
    assert _task(runtime, task_id).state is TaskStatus.SUCCEEDED
    assert shown == ["made", "made"]  # made in the transaction that failed, then again


class _Recorder:
    """A CommandPort that writes the command and its record as the dispatcher does, then
    answers at once (what it sent, in `sent`)."""

    def __init__(self, rt: Assembly) -> None:
        self.rt = rt
        self.sent: list[str] = []

    async def call(self, node: str, command: CommandType, *a: Any, **kw: Any) -> dict[str, Any]:
        cid = new_id()
        record = kw["record"]
        assert kw.get("abort_if") is None  # the cancel is read in the record's transaction

        def tx() -> None:
            now = self.rt.clock.now()
            with self.rt.work.write() as conn:
                commands.create(
                    conn, id=cid, node=node, type=command.value, args={}, vm_uuid=None, epoch=0,
                    task_id=kw["task_id"], deadline=now, now=now, sent=True,
                )  # fmt: skip
                record(conn, cid)

        await self.rt.work.run(tx)
        self.sent.append(cid)
        return {"ok": True}


def test_a_cancel_found_by_the_commands_record_writes_and_sends_nothing(
    runtime: Assembly,
) -> None:
    port = _Recorder(runtime)

    async def cancelled_then_command(ctx: StepContext[Any]) -> None:
        runtime.engine.request_cancel(ctx.task.id)
        ctx.later(lambda conn: None)
        await ctx.command("go", "node1", CommandType.START)

    task_id = _new_task(runtime, Steps({"b": cancelled_then_command}))
    runtime.engine._services = replace(runtime.engine._services, commands=cast(CommandPort, port))
    asyncio.run(runtime.engine.drive(task_id))
    task = _task(runtime, task_id)
    assert task.state is TaskStatus.FAILED, task
    assert "cancelled by the operator before the command was sent" in (task.error or "")
    assert port.sent == []
    with runtime.db.read() as conn:
        assert commands.for_task(conn, task_id) == []
    assert [s.state for s in task.steps] == ["done", "failed", "pending"]


def test_a_command_written_sent_keeps_both_moves(runtime: Assembly) -> None:
    task_id = _new_task(runtime, Steps())
    now = runtime.clock.now()
    with runtime.db.write() as conn:
        commands.create(
            conn, id="c1", node="node1", type="start", args={}, vm_uuid=None, epoch=0,
            task_id=task_id, deadline=now, now=now, sent=True,
        )  # fmt: skip
        record = commands.get(conn, "c1", with_history=True)
    assert record.state == CommandState.SENT.value
    assert [(h.from_state, h.to_state) for h in record.history] == [
        (None, "CREATED"),
        ("CREATED", "SENT"),
    ]


def test_created_tasks_are_kept_until_launched_or_pushed_out() -> None:
    kept = CreatedTasks(kept=2)
    now = datetime.now(UTC)
    task = Task(
        id="t", type="x", vm_uuid=None, vm_name=None, node=None, state=TaskStatus.PENDING,
        params={}, error=None, created_at=now, updated_at=now, finished_at=None,
        steps=pending_steps("t", ["a"]),
    )  # fmt: skip
    for name in ("t1", "t2", "t3"):
        kept.keep(name, task, NoParams())
    assert kept.take("t1") is None  # pushed out by newer ones (its creation rolled back)
    assert kept.take("t3") is not None and kept.take("t3") is None
    assert len(kept) == 1


def test_a_waiter_here_gets_the_task_as_its_end_committed_it(runtime: Assembly) -> None:
    async def result(ctx: StepContext[Any]) -> None:
        await ctx.merge_result({"found": "it"})

    task_id = _new_task(runtime, Steps({"c": result}))
    reads = [0]
    read = runtime.work.read

    def counted() -> AbstractContextManager[Connection]:
        reads[0] += 1
        return read()

    async def main() -> Task:
        runtime.work.read = counted  # type: ignore[method-assign]
        runtime.engine.launch(task_id)
        return await runtime.runner.wait(task_id, 20)

    waited = asyncio.run(main())
    stored = _task(runtime, task_id)
    assert waited == stored  # its row and its steps, exactly as committed
    assert waited.state is TaskStatus.SUCCEEDED and waited.result == {"found": "it"}
    assert reads[0] == 0  # neither the drive (a task just created) nor the waiter read it
