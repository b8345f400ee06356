"""The task engine on a real database: steps persisted, undo in reverse, resume after a stop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection

from bollard.domain.errors import StepFailed
from bollard.domain.ids import new_id
from bollard.domain.models import Task
from bollard.domain.states import TaskStatus
from bollard.server.assembly import Assembly, prepare
from bollard.server.config import ServerConfig
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.flow import StepDef
from bollard.server.tasks.params import NoParams
from bollard.store import events, tasks


@dataclass
class ToyFlow:
    """Steps a, b, c; `behaviour[name]` says what each does: ok, fail, hang, undo-fail."""

    behaviour: dict[str, str] = field(default_factory=dict)
    undoable: tuple[str, ...] = ("a", "b")
    calls: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    type: str = "toy"
    params_model: type[NoParams] = NoParams

    def steps(self, task: Task) -> list[StepDef]:
        return [
            StepDef(name, self._do(name), self._undo(name) if name in self.undoable else None)
            for name in ("a", "b", "c")
        ]

    def _do(self, name: str) -> Any:
        async def do(ctx: StepContext) -> dict[str, Any]:
            self.calls.append(f"do {name}")
            mode = self.behaviour.get(name, "ok")
            if mode == "fail":
                raise StepFailed(f"{name} refused")
            if mode == "hang":
                await asyncio.Event().wait()
            return {"made": name, "seen": sorted(ctx.results)}

        return do

    def _undo(self, name: str) -> Any:
        async def undo(ctx: StepContext) -> None:
            self.calls.append(f"undo {name}")
            mode = self.behaviour.get(f"undo-{name}", "ok")
            if mode == "fail":
                raise StepFailed(f"cannot undo {name}")
            if mode == "hang":
                await asyncio.Event().wait()

        return undo

    def succeed(self, conn: Connection, ctx: StepContext) -> None:
        self.ended.append("succeed")

    def fail(self, conn: Connection, ctx: StepContext, error: str) -> None:
        self.ended.append(f"fail: {error}")


@pytest.fixture
def runtime(tmp_path: Path, db_url: str) -> Iterator[Assembly]:
    rt = prepare(ServerConfig(data_dir=tmp_path / "d", db_url=db_url))
    yield rt
    rt.db.dispose()


def _new_task(rt: Assembly, flow: ToyFlow) -> str:
    rt.engine.register(flow)  # type: ignore[arg-type]
    task_id = new_id()
    with rt.db.write() as conn:
        rt.engine.create_in(
            conn, id=task_id, type="toy", vm_uuid=None, vm_name=None, node=None, params={}
        )
    return task_id


def _task(rt: Assembly, task_id: str) -> Task:
    with rt.db.read() as conn:
        return tasks.get(conn, task_id, with_steps=True)


def _drive(rt: Assembly, task_id: str, *, stop_after: float | None = None) -> None:
    """Run the engine on the task; with `stop_after`, stop it then (a server shutdown)."""

    async def main() -> None:
        job = asyncio.create_task(rt.engine.drive(task_id))
        if stop_after is None:
            await asyncio.wait_for(job, 20)
            return
        done, _ = await asyncio.wait({job}, timeout=stop_after)
        assert not done, "the task ended before the simulated stop"
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)

    asyncio.run(main())


def test_steps_run_in_order_and_are_persisted(runtime: Assembly) -> None:
    flow = ToyFlow()
    task_id = _new_task(runtime, flow)
    _drive(runtime, task_id)
    task = _task(runtime, task_id)
    assert task.state is TaskStatus.SUCCEEDED and task.finished_at is not None
    assert [(s.name, s.state) for s in task.steps] == [("a", "done"), ("b", "done"), ("c", "done")]
    assert task.steps[2].result == {"made": "c", "seen": ["a", "b"]}
    assert all(s.started_at and s.finished_at for s in task.steps)
    assert flow.calls == ["do a", "do b", "do c"] and flow.ended == ["succeed"]
    with runtime.db.read() as conn:
        kinds = [e.kind for e in events.after(conn, 0, limit=100, task_id=task_id)]
    assert kinds == [
        "task.created", "task.running",
        "step.running", "step.done", "step.running", "step.done", "step.running", "step.done",
        "task.succeeded",
    ]  # fmt: skip


def test_a_failed_step_undoes_the_done_ones_in_reverse(runtime: Assembly) -> None:
    flow = ToyFlow({"c": "fail"})
    task_id = _new_task(runtime, flow)
    _drive(runtime, task_id)
    task = _task(runtime, task_id)
    assert task.state is TaskStatus.ROLLED_BACK
    assert task.error == "c refused"
    assert [s.state for s in task.steps] == ["undone", "undone", "failed"]
    assert flow.calls == ["do a", "do b", "do c", "undo b", "undo a"]
    assert flow.ended == ["fail: c refused"]


def test_the_failed_step_itself_is_undone_when_it_can_be(runtime: Assembly) -> None:
    flow = ToyFlow({"b": "fail"})
    task_id = _new_task(runtime, flow)
    _drive(runtime, task_id)
    task = _task(runtime, task_id)
    assert task.state is TaskStatus.ROLLED_BACK
    assert [s.state for s in task.steps] == ["undone", "undone", "pending"]
    assert flow.calls == ["do a", "do b", "undo b", "undo a"]


def test_a_failed_undo_needs_attention(runtime: Assembly) -> None:
    flow = ToyFlow({"c": "fail", "undo-b": "fail"})
    task_id = _new_task(runtime, flow)
    _drive(runtime, task_id)
    task = _task(runtime, task_id)
    assert task.state is TaskStatus.NEEDS_ATTENTION
    assert [s.state for s in task.steps] == ["done", "undo_failed", "failed"]
    assert task.steps[1].undo_error == "cannot undo b"
    assert task.error is not None and "undo of b failed" in task.error


def test_nothing_to_undo_just_fails(runtime: Assembly) -> None:
    flow = ToyFlow({"a": "fail"}, undoable=())
    task_id = _new_task(runtime, flow)
    _drive(runtime, task_id)
    task = _task(runtime, task_id)
    assert task.state is TaskStatus.FAILED
    assert [s.state for s in task.steps] == ["failed", "pending", "pending"]
    assert flow.calls == ["do a"]


def test_resume_reruns_the_interrupted_step_only(runtime: Assembly) -> None:
    flow = ToyFlow({"b": "hang"})
    task_id = _new_task(runtime, flow)
    _drive(runtime, task_id, stop_after=0.5)
    stopped = _task(runtime, task_id)
    assert stopped.state is TaskStatus.RUNNING
    assert [s.state for s in stopped.steps] == ["done", "running", "pending"]

    flow.behaviour.clear()  # the server restarts; this time b completes
    _drive(runtime, task_id)
    task = _task(runtime, task_id)
    assert task.state is TaskStatus.SUCCEEDED
    assert flow.calls == ["do a", "do b", "do b", "do c"]
    assert task.steps[2].result["seen"] == ["a", "b"]


def test_resume_continues_a_rollback(runtime: Assembly) -> None:
    flow = ToyFlow({"c": "fail", "undo-b": "hang"})
    task_id = _new_task(runtime, flow)
    _drive(runtime, task_id, stop_after=0.5)
    stopped = _task(runtime, task_id)
    assert stopped.state is TaskStatus.ROLLING_BACK
    assert [s.state for s in stopped.steps] == ["done", "undoing", "failed"]

    flow.behaviour.pop("undo-b")
    _drive(runtime, task_id)
    task = _task(runtime, task_id)
    assert task.state is TaskStatus.ROLLED_BACK
    assert task.error == "c refused"
    assert flow.calls[-2:] == ["undo b", "undo a"]
    assert [s.state for s in task.steps] == ["undone", "undone", "failed"]


def test_cancel_stops_before_the_next_step_and_rolls_back(runtime: Assembly) -> None:
    flow = ToyFlow({"b": "hang"})
    task_id = _new_task(runtime, flow)
    _drive(runtime, task_id, stop_after=0.3)
    runtime.engine.request_cancel(task_id)
    flow.behaviour.clear()
    _drive(runtime, task_id)  # b runs again (it was in flight), then the cancel is seen
    task = _task(runtime, task_id)
    assert task.state is TaskStatus.ROLLED_BACK
    assert task.error == "cancelled by the operator"
    assert task.cancel_requested
    assert [s.state for s in task.steps] == ["undone", "undone", "pending"]
