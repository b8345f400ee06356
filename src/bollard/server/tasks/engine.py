"""The task engine: operations as ordered steps, each with `do` and `undo`, persisted.

A task is created with its steps (all `pending`) in the same transaction that takes its
target (the VM's task_state compare-and-swap). The engine then runs the steps in order,
writing each step's state and result before the next starts. When a step fails, the steps
already done are undone in reverse order (rolling_back → rolled_back, or needs_attention when
an undo fails); a task with nothing to undo simply fails. On server start every unfinished
task is resumed from its last persisted step: a step found `running` is run again (steps are
idempotent, and a command a step already sent is waited for, not sent again).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, update

from bollard.domain.commands import TERMINAL, CommandState
from bollard.domain.errors import BollardError, InvalidState
from bollard.domain.models import Task
from bollard.domain.states import TaskStatus
from bollard.domain.tasks import task_allowed
from bollard.server import crashpoints
from bollard.server.tasks.context import StepContext
from bollard.store import commands, steps, tasks
from bollard.store.tables import tasks as tasks_table

if TYPE_CHECKING:
    from bollard.server.runtime import Runtime

log = logging.getLogger(__name__)

StepFn = Callable[[StepContext], Awaitable[dict[str, Any] | None]]
UndoFn = Callable[[StepContext], Awaitable[None]]


TxFn = Callable[[Connection, StepContext], dict[str, Any] | None]
UndoTxFn = Callable[[Connection, StepContext], None]


async def _nothing(ctx: StepContext) -> dict[str, Any] | None:
    return None


@dataclass(frozen=True)
class StepDef:
    """One step. `do` acts (commands to hosts); `tx` writes to the database in the same
    transaction that marks the step done, so a database-only step happens exactly once even
    if the server dies around it. `undo` and `undo_tx` are their counterparts for rollback.
    Once a `commit_point` step is done, a later failure no longer rolls anything back."""

    name: str
    do: StepFn = _nothing
    undo: UndoFn | None = None
    # Decided from the task's params and earlier results: False skips the step.
    when: Callable[[StepContext], bool] | None = None
    tx: TxFn | None = None
    undo_tx: UndoTxFn | None = None
    commit_point: bool = False

    @property
    def undoable(self) -> bool:
        return self.undo is not None or self.undo_tx is not None


class Flow(Protocol):
    """One kind of task: its steps, and what its end writes (in the transaction that ends it)."""

    @property
    def type(self) -> str: ...

    def steps(self, task: Task) -> list[StepDef]: ...

    def succeed(self, conn: Connection, ctx: StepContext) -> None: ...

    def fail(self, conn: Connection, ctx: StepContext, error: str) -> None: ...


class TaskEngine:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.flows: dict[str, Flow] = {}

    def register(self, flow: Flow) -> None:
        self.flows[flow.type] = flow

    async def _write(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a writing function off the loop, then wake the event-log followers."""
        try:
            return await self.rt.db_call(fn, *args)
        finally:
            self.rt.event_bus.touch()

    # -- creation (inside the caller's transaction) ---------------------------------------

    def create_in(
        self,
        conn: Connection,
        *,
        id: str,
        type: str,
        vm_uuid: str | None,
        vm_name: str | None,
        node: str | None,
        params: dict[str, Any],
    ) -> Task:
        now = self.rt.clock.now()
        task = tasks.create(
            conn,
            id=id,
            type=type,
            vm_uuid=vm_uuid,
            vm_name=vm_name,
            node=node,
            params=params,
            now=now,
        )
        steps.create_all(conn, id, [s.name for s in self.flows[type].steps(task)])
        ctx = StepContext(self.rt, task)
        ctx.event(conn, "task.created", f"{type} {vm_name or node or ''}".strip() + " requested")
        return tasks.get(conn, id)

    def launch(self, task_id: str) -> None:
        self.rt.runner.start(
            task_id, lambda: self.drive(task_id), lambda msg: self._crashed(task_id, msg)
        )

    async def resume_all(self) -> int:
        def unfinished() -> list[Task]:
            with self.rt.db.read() as conn:
                return tasks.unfinished(conn, include_rolling_back=True)

        open_tasks = await self.rt.db_call(unfinished)
        for task in open_tasks:
            log.warning(
                "resuming task %s (%s %s, %s)", task.id, task.type, task.vm_name, task.state
            )
            self.rt.runner.start(
                task.id,
                functools.partial(self._resume, task),
                functools.partial(self._crashed, task.id),
            )
        return len(open_tasks)

    async def _resume(self, task: Task) -> None:
        """Give the agents of the task's nodes time to reconnect after a server start (so a
        resumed step does not fail only because they have not come back yet), then drive."""
        nodes = {n for n in (task.node, task.params.get("source"), task.params.get("target")) if n}
        grace = max(10.0, 3 * self.rt.config.heartbeat_interval)
        if not await self.rt.gateway.wait_connected(nodes, grace):
            missing = sorted(n for n in nodes if self.rt.gateway.session(n) is None)
            log.warning("task %s resumes without node(s) %s", task.id, ", ".join(missing))
        await self.drive(task.id)

    def request_cancel(self, task_id: str) -> Task:
        with self.rt.db.write() as conn:
            task = tasks.get(conn, task_id)
            if task.state.ended:
                raise InvalidState(f"task {task_id} has already ended ({task.state})")
            conn.execute(
                update(tasks_table).where(tasks_table.c.id == task_id).values(cancel_requested=True)
            )
            StepContext(self.rt, task).event(conn, "task.cancel_requested", "cancel requested")
            return tasks.get(conn, task_id)

    async def cancel_inflight(self, task_id: str) -> int:
        """Send Cancel for the task's commands still in flight (their hosts abort them)."""

        def open_commands() -> list[tuple[str, str]]:
            with self.rt.db.read() as conn:
                return [
                    (c.id, c.node)
                    for c in commands.for_task(conn, task_id)
                    if CommandState(c.state) not in TERMINAL
                ]

        pending = await self.rt.db_call(open_commands)
        for cid, node in pending:
            await self.rt.dispatcher.cancel(cid, node)
        return len(pending)

    # -- running ----------------------------------------------------------------------------

    async def drive(self, task_id: str) -> None:
        task = await self.rt.db_call(self._load, task_id)
        flow = self.flows[task.type]
        defs = flow.steps(task)
        ctx = StepContext(self.rt, task)
        if task.state is TaskStatus.PENDING:
            await self._set_state(ctx, TaskStatus.RUNNING, "started")
        if task.state in (TaskStatus.PENDING, TaskStatus.RUNNING):
            error = await self._forward(ctx, defs)
            if error is None:
                await self._write(self._end, ctx, flow, TaskStatus.SUCCEEDED, None)
                return
        else:
            error = task.error or "rolled back"
        await self._rollback(ctx, flow, defs, error)

    async def _forward(self, ctx: StepContext, defs: list[StepDef]) -> str | None:
        """Run the steps not yet done; the error that stopped them, or None."""
        for idx, sdef in enumerate(defs):
            step = ctx.task.steps[idx]
            ctx.idx, ctx.step_name = idx, sdef.name
            if step.state in ("done", "skipped"):
                ctx.results[sdef.name] = step.result
                continue
            if step.state == "failed":
                return step.error or f"step {sdef.name} failed"
            if await self.rt.db_call(self._cancel_requested, ctx.task.id):
                if step.state == "running":  # interrupted mid-way: its undo checks what it did
                    await self._write(self._mark, ctx, "failed", {"error": "cancelled"})
                return "cancelled by the operator"
            if sdef.when is not None and not sdef.when(ctx):
                await self._write(self._mark, ctx, "skipped", {})
                continue
            await self._write(self._mark, ctx, "running", {})
            crashpoints.reach(ctx.task.type, sdef.name, "before")
            try:
                result = await sdef.do(ctx) or {}
            except BollardError as exc:
                await self._write(self._mark, ctx, "failed", {"error": exc.message})
                return exc.message
            except Exception as exc:  # a bug: fail the step (and roll back), never hang
                log.exception("task %s step %s crashed", ctx.task.id, sdef.name)
                message = f"internal error in step {sdef.name}: {type(exc).__name__}: {exc}"
                await self._write(self._mark, ctx, "failed", {"error": message})
                return message
            crashpoints.reach(ctx.task.type, sdef.name, "after")
            try:
                ctx.results[sdef.name] = await self._write(self._done, ctx, sdef, result)
            except BollardError as exc:  # the step's database change was refused
                await self._write(self._mark, ctx, "failed", {"error": exc.message})
                return exc.message
        return None

    def _done(self, ctx: StepContext, sdef: StepDef, result: dict[str, Any]) -> dict[str, Any]:
        with self.rt.db.write() as conn:
            if sdef.tx is not None:
                result = {**result, **(sdef.tx(conn, ctx) or {})}
            steps.mark(conn, ctx.task.id, ctx.idx, "done", self.rt.clock.now(), result=result)
            ctx.event(conn, "step.done", f"step {ctx.step_name}: done", step=ctx.step_name)
        return result

    async def _rollback(
        self, ctx: StepContext, flow: Flow, defs: list[StepDef], error: str
    ) -> None:
        task = await self.rt.db_call(self._load, ctx.task.id)
        ctx.task = task
        for idx, sdef in enumerate(defs):
            if task.steps[idx].state in ("done", "skipped", "undoing", "undone", "failed"):
                ctx.results[sdef.name] = task.steps[idx].result
        # A step that failed may have acted in part: it is undone too (undos look before they
        # act, so undoing what did not happen does nothing).
        committed = any(
            sdef.commit_point and task.steps[idx].state == "done" for idx, sdef in enumerate(defs)
        )
        # A failed step is undone only through its `undo` (which looks before it acts): its
        # `tx`, if it has one, was rolled back with the transaction that failed.
        to_undo = [
            (idx, sdef)
            for idx, sdef in enumerate(defs)
            if not committed
            and (
                (sdef.undoable and task.steps[idx].state in ("done", "undoing"))
                or (sdef.undo is not None and task.steps[idx].state == "failed")
            )
        ]
        if task.state is not TaskStatus.ROLLING_BACK:
            if not to_undo:
                await self._write(self._end, ctx, flow, TaskStatus.FAILED, error)
                return
            await self._set_state(
                ctx, TaskStatus.ROLLING_BACK, f"rolling back: {error}", error=error
            )
        ctx.undoing = True
        for idx, sdef in reversed(to_undo):
            ctx.idx, ctx.step_name = idx, sdef.name
            undo_tx = task.steps[idx].error is None  # a failed step keeps its error
            await self._write(self._mark, ctx, "undoing", {})
            crashpoints.reach(ctx.task.type, sdef.name, "undo")
            try:
                if sdef.undo is not None:
                    await sdef.undo(ctx)
                await self._write(self._undone, ctx, sdef, undo_tx)
            except BollardError as exc:
                await self._write(self._mark, ctx, "undo_failed", {"undo_error": exc.message})
                note = f"{error}; undo of {sdef.name} failed: {exc.message}"
                await self._write(self._end, ctx, flow, TaskStatus.NEEDS_ATTENTION, note)
                return
        await self._write(self._end, ctx, flow, TaskStatus.ROLLED_BACK, error)

    # -- persistence -------------------------------------------------------------------------

    def _load(self, task_id: str) -> Task:
        with self.rt.db.read() as conn:
            return tasks.get(conn, task_id, with_steps=True)

    def _cancel_requested(self, task_id: str) -> bool:
        with self.rt.db.read() as conn:
            return tasks.get(conn, task_id).cancel_requested

    def _undone(self, ctx: StepContext, sdef: StepDef, undo_tx: bool) -> None:
        with self.rt.db.write() as conn:
            if undo_tx and sdef.undo_tx is not None:
                sdef.undo_tx(conn, ctx)
            steps.mark(conn, ctx.task.id, ctx.idx, "undone", self.rt.clock.now())
            ctx.event(conn, "step.undone", f"step {ctx.step_name}: undone", step=ctx.step_name)

    def _mark(self, ctx: StepContext, state: str, values: dict[str, Any]) -> None:
        with self.rt.db.write() as conn:
            steps.mark(conn, ctx.task.id, ctx.idx, state, self.rt.clock.now(), **values)
            detail = values.get("error") or values.get("undo_error")
            message = f"step {ctx.step_name}: {state}" + (f" ({detail})" if detail else "")
            ctx.event(conn, f"step.{state}", message, step=ctx.step_name)

    async def _set_state(
        self, ctx: StepContext, state: TaskStatus, message: str, error: str | None = None
    ) -> None:
        def tx() -> None:
            with self.rt.db.write() as conn:
                self._transition(conn, ctx, state, message, error)

        await self._write(tx)

    def _transition(
        self, conn: Connection, ctx: StepContext, state: TaskStatus, message: str, error: str | None
    ) -> None:
        current = tasks.get(conn, ctx.task.id)
        if not task_allowed(current.state, state):
            raise InvalidState(f"task {ctx.task.id}: {current.state} -> {state} is not allowed")
        tasks.set_state(
            conn, ctx.task.id, state, self.rt.clock.now(), error=error, expect=current.state
        )
        ctx.event(conn, f"task.{state.value}", message)
        ctx.task = tasks.get(conn, ctx.task.id, with_steps=True)

    def _end(self, ctx: StepContext, flow: Flow, state: TaskStatus, error: str | None) -> None:
        with self.rt.db.write() as conn:
            if state is TaskStatus.SUCCEEDED:
                flow.succeed(conn, ctx)
            else:
                flow.fail(conn, ctx, error or str(state))
            message = str(state) + (f": {error}" if error else "")
            self._transition(conn, ctx, state, message, error)
        log.info("task %s (%s %s) %s", ctx.task.id, ctx.task.type, ctx.task.vm_name, message)

    def _crashed(self, task_id: str, message: str) -> None:
        """The engine itself failed on this task (a bug): end it, releasing its VM."""
        task = self._load(task_id)
        ctx = StepContext(self.rt, task)
        flow = self.flows[task.type]
        target = (
            TaskStatus.FAILED
            if task.state is not TaskStatus.ROLLING_BACK
            else TaskStatus.NEEDS_ATTENTION
        )
        if task.state is TaskStatus.PENDING:
            target = TaskStatus.FAILED
        self._end(ctx, flow, target, message)
