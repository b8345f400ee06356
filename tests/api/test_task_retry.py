"""Temporary and permanent step errors on a real database: a temporary error is retried
after a persisted backoff (a restarted server waits out the same one), a permanent one rolls
back at once, and a cancel ends a step waiting for its next attempt."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection

from bollard.domain.errors import StepFailed, TemporaryError
from bollard.domain.ids import new_id
from bollard.domain.models import Task
from bollard.domain.states import TaskStatus
from bollard.server.api.schemas import StepOut
from bollard.server.assembly import Assembly, prepare
from bollard.server.config import ServerConfig
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.flow import RetryPolicy, StepDef
from bollard.server.tasks.params import NoParams
from bollard.store import events
from tests.api.test_task_engine import _drive, _task

DEADLINE = 20.0


@dataclass
class FlakyFlow:
    """Step `a` (undoable) then step `b`, which fails `failures` times with `error` before
    it succeeds; `b` may run `attempts` times, `delay` seconds apart (then doubled)."""

    failures: int
    error: str = "temporary"  # or "permanent"
    attempts: int = 3
    delay: float = 0.05
    runs: list[datetime] = field(default_factory=list)
    undone: list[str] = field(default_factory=list)
    type: str = "flaky"
    params_model: type[NoParams] = NoParams

    def steps(self, task: Task) -> list[StepDef]:
        policy = RetryPolicy(attempts=self.attempts, delay=self.delay)
        return [StepDef("a", self._a, self._undo_a), StepDef("b", self._b, retry=policy)]

    async def _a(self, ctx: StepContext[NoParams]) -> dict[str, Any]:
        return {}

    async def _undo_a(self, ctx: StepContext[NoParams]) -> None:
        self.undone.append("a")

    async def _b(self, ctx: StepContext[NoParams]) -> dict[str, Any]:
        self.runs.append(ctx.clock.now())
        if len(self.runs) <= self.failures:
            if self.error == "temporary":
                raise TemporaryError(f"try {len(self.runs)} failed for now")
            raise StepFailed(f"try {len(self.runs)} refused for good")
        return {"runs": len(self.runs)}

    def succeed(self, conn: Connection, ctx: StepContext[NoParams]) -> None:
        return None

    def fail(self, conn: Connection, ctx: StepContext[NoParams], error: str) -> None:
        return None


@pytest.fixture
def server(tmp_path: Path, db_url: str) -> Iterator[Assembly]:
    assembly = prepare(ServerConfig(data_dir=tmp_path / "d", db_url=db_url))
    yield assembly
    assembly.db.dispose()


def _new_task(server: Assembly, flow: FlakyFlow) -> str:
    server.engine.register(flow)
    task_id = new_id()
    with server.db.write() as conn:
        server.engine.create_in(
            conn, id=task_id, type=flow.type, vm_uuid=None, vm_name=None, node=None,
            params=NoParams(),
        )  # fmt: skip
    return task_id


def _kinds(server: Assembly, task_id: str) -> list[str]:
    with server.db.read() as conn:
        return [e.kind for e in events.after(conn, 0, limit=100, task_id=task_id)]


def test_a_temporary_error_is_retried_after_a_growing_backoff(server: Assembly) -> None:
    flow = FlakyFlow(failures=2, delay=0.1)
    task_id = _new_task(server, flow)
    _drive(server, task_id)
    task = _task(server, task_id)
    assert task.state is TaskStatus.SUCCEEDED
    assert len(flow.runs) == 3
    step = task.steps[1]
    assert (step.state, step.attempts, step.result) == ("done", 2, {"runs": 3})
    # 0.1 s before the first retry, 0.2 s before the second.
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(flow.runs)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2
    assert _kinds(server, task_id).count("step.waiting") == 2
    shown = StepOut.of(step)  # what GET /tasks/{id} and `bollard task show` print
    assert (shown.attempts, shown.retry_at) == (2, None)


def test_a_permanent_error_rolls_back_at_once(server: Assembly) -> None:
    flow = FlakyFlow(failures=1, error="permanent")
    task_id = _new_task(server, flow)
    _drive(server, task_id)
    task = _task(server, task_id)
    assert task.state is TaskStatus.ROLLED_BACK
    assert task.error == "try 1 refused for good"
    assert len(flow.runs) == 1 and flow.undone == ["a"]
    assert "step.waiting" not in _kinds(server, task_id)


def test_the_last_attempt_fails_the_step(server: Assembly) -> None:
    flow = FlakyFlow(failures=10, attempts=3)
    task_id = _new_task(server, flow)
    _drive(server, task_id)
    task = _task(server, task_id)
    assert task.state is TaskStatus.ROLLED_BACK
    assert task.error == "try 3 failed for now"
    assert len(flow.runs) == 3 and flow.undone == ["a"]
    assert task.steps[1].attempts == 2


def test_a_restarted_server_waits_out_the_persisted_backoff(server: Assembly) -> None:
    flow = FlakyFlow(failures=1, delay=3.0)
    task_id = _new_task(server, flow)

    async def stop_while_b_waits() -> None:  # (at a set time it raced a loaded machine)
        job = asyncio.create_task(server.engine.drive(task_id))
        while _task(server, task_id).steps[1].state != "waiting":
            assert not job.done(), "the task ended before the simulated stop"
            await asyncio.sleep(0.02)  # polling the database the test reads, not syncing
        job.cancel()  # the server stops
        await asyncio.gather(job, return_exceptions=True)

    asyncio.run(asyncio.wait_for(stop_while_b_waits(), DEADLINE))
    stopped = _task(server, task_id).steps[1]
    assert (stopped.state, stopped.attempts) == ("waiting", 1)
    assert stopped.retry_at is not None and stopped.error == "try 1 failed for now"
    assert StepOut.of(stopped).retry_at == stopped.retry_at

    _drive(server, task_id)  # the server restarts
    task = _task(server, task_id)
    assert task.state is TaskStatus.SUCCEEDED
    assert len(flow.runs) == 2
    assert flow.runs[1] >= stopped.retry_at  # not before the persisted time


def test_a_cancel_ends_a_step_waiting_for_its_next_attempt(server: Assembly) -> None:
    flow = FlakyFlow(failures=1, delay=30.0)
    task_id = _new_task(server, flow)

    async def main() -> None:
        job = asyncio.create_task(server.engine.drive(task_id))
        while _task(server, task_id).steps[1].state != "waiting":
            assert not job.done()
            await asyncio.sleep(0.02)  # polling the database the test reads, not syncing
        await asyncio.to_thread(server.engine.request_cancel, task_id)
        await server.engine.cancel_inflight(task_id)
        await asyncio.wait_for(job, 5)  # well before the 30 s backoff

    asyncio.run(asyncio.wait_for(main(), DEADLINE))
    task = _task(server, task_id)
    assert task.state is TaskStatus.ROLLED_BACK
    assert task.error == "cancelled by the operator"
    assert len(flow.runs) == 1 and flow.undone == ["a"]
