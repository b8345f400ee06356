"""The task engine: operations as ordered steps, each with `do` and `undo`, persisted.

A task is created with its steps (all `pending`) and its typed parameters (validated by its
flow's model) in the same transaction that takes its target (the VM's task_state
compare-and-swap). The engine then runs the steps in order, writing each step's state and
result before the next starts. A step that fails with a temporary error
(`BollardError.retryable`) is tried again after a backoff, as often as its `RetryPolicy`
allows; the step waits in state `waiting` with its attempt count and next attempt time
persisted, so a restarted server waits out the same backoff. A permanent error (or the last
attempt) fails the step: the steps already done are undone in reverse order (rolling_back →
rolled_back, or needs_attention when an undo fails); a task with nothing to undo simply fails.
On server start every unfinished task is resumed from its last persisted step: a step found
`running` is run again (steps are idempotent, and a command a step already sent is waited
for, not sent again).

Two writes wait for the next one of the same task instead of a commit of their own: the
task's start (pending → running) and a skipped step. Neither is an action: a crash before
the next write leaves the task pending or the step pending, and the resumed task decides
them again, the same way. Every write of the engine for a task applies them first, in its
own transaction (one commit, i.e. one fsync, less each: a migration skips three steps).

Each task is run by one server, its owner (ownership.py): the engine stores `owner()` on the
tasks it creates, holds the task at the start of every write it makes for it (a task taken
over by another server stops its drive here with TaskTakenOver, writing nothing more), and
at start resumes only the orphans, taken by compare-and-swap.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection, update

from bollard.domain import actors
from bollard.domain.commands import TERMINAL, CommandState
from bollard.domain.errors import BollardError, InvalidInput, InvalidState
from bollard.domain.models import Task, TaskStep
from bollard.domain.states import TaskStatus
from bollard.domain.tasks import task_allowed
from bollard.server import crashpoints
from bollard.server.tasks.context import StepContext, StepServices
from bollard.server.tasks.flow import Flow, StepDef
from bollard.server.tasks.ownership import Holding, TaskTakenOver, hold, take_orphans
from bollard.server.tasks.params import ParamsModel, TaskParams
from bollard.server.tasks.runner import TaskRunner
from bollard.store import commands, steps, tasks
from bollard.store.tables import tasks as tasks_table

log = logging.getLogger(__name__)

R = TypeVar("R")

RESUME_GRACE = 10.0  # at least this long for a resumed task's agents to reconnect
# A retried step sends again what ended in failure; what may still be under way is awaited.
_FAILED_COMMANDS = frozenset(
    {CommandState.FAILED, CommandState.RECONCILE_FAILED, CommandState.RECONCILE_SKIPPED}
)
_SETTLED = ("done", "skipped")
_UNDO_CANDIDATES = ("done", "skipped", "undoing", "undone", "failed")


class TaskEngine:
    def __init__(
        self,
        *,
        services: StepServices,
        runner: TaskRunner,
        owner: Callable[[], str | None] = lambda: None,
    ) -> None:
        """`owner()`: the id of the server this process is now (None: no servers, as in
        tests and tools; its tasks' owner is NULL)."""
        self._services = services
        self._work = services.work
        self._clock = services.clock
        self._runner = runner
        self.flows: dict[str, Flow] = {}
        # Set when a cancel is requested, to wake a step waiting out its backoff.
        self._cancels: dict[str, asyncio.Event] = {}
        # Per task: writes made with its next write (see the module's docstring).
        self._deferred: dict[str, list[Callable[[Connection], None]]] = {}
        self._owner = owner
        self._holdings: dict[str, Holding] = {}  # per task driven here: the id it runs under

    def register(self, flow: Flow) -> None:
        self.flows[flow.type] = flow

    async def _write(self, fn: Callable[..., R], *args: Any) -> R:
        """Run a writing function off the loop, then wake the event-log followers."""
        try:
            return await self._work.run(fn, *args)
        finally:
            self._services.touch()

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
        params: BaseModel | dict[str, Any],
    ) -> Task:
        """Create a task and its steps; its params are validated by its flow's model
        (InvalidInput when they do not fit)."""
        flow = self.flows[type]
        typed = _validate(flow, params)
        task = tasks.create(
            conn,
            id=id,
            type=type,
            vm_uuid=vm_uuid,
            vm_name=vm_name,
            node=node,
            params=typed.stored(),
            now=self._clock.now(),
            owner=self._owner(),
        )
        steps.create_all(conn, id, [s.name for s in flow.steps(task)])
        ctx = self._context(task, typed)
        ctx.event(conn, "task.created", f"{type} {vm_name or node or ''}".strip() + " requested")
        return tasks.get(conn, id)

    def launch(self, task_id: str) -> None:
        """Drive a task this server created (under the id it is now: had it joined again
        since, the first write finds the task another id's and stops; an orphan, it is
        taken over then)."""
        self._start(task_id, self._owner(), lambda: self.drive(task_id))

    async def resume_all(self) -> int:
        """At start: take and resume the orphans (the tasks of this server's previous run are:
        its row is retired when it joins); how many."""
        return len(await self.take_orphans())

    async def take_orphans(self) -> list[str]:
        """Take the orphans (ownership.py) and resume them; the ids taken."""
        return await take_orphans(
            self._work, self._owner(), self._driven_here, self._holdings.get, self._resume_taken
        )

    def _driven_here(self, task_id: str) -> bool:
        return task_id in self._holdings or self._runner.is_running(task_id)

    def _resume_taken(self, task: Task, owner: str | None) -> None:
        log.warning("resuming task %s (%s %s, %s)", task.id, task.type, task.vm_name, task.state)
        self._start(task.id, owner, functools.partial(self._resume, task))

    def _start(self, task_id: str, owner: str | None, body: Callable[[], Awaitable[None]]) -> None:
        holding = Holding(task_id, (owner,))
        self._holdings[task_id] = holding

        async def run() -> None:
            try:
                await body()
            finally:
                if self._holdings.get(task_id) is holding:
                    del self._holdings[task_id]

        self._runner.start(task_id, run, functools.partial(self._crashed, holding))

    async def _resume(self, task: Task) -> None:
        """Give the agents of the task's nodes time to reconnect after a server start (so a
        resumed step does not fail only because they have not come back yet), then drive."""
        params = _validate(self.flows[task.type], task.params)
        nodes = {n for n in (task.node, *params.nodes()) if n}
        grace = max(RESUME_GRACE, 3 * self._services.timeouts.heartbeat_interval)
        sessions = self._services.sessions
        if not await sessions.wait_connected(nodes, grace):
            missing = sorted(n for n in nodes if sessions.session(n) is None)
            log.warning("task %s resumes without node(s) %s", task.id, ", ".join(missing))
        await self.drive(task.id)

    def request_cancel(self, task_id: str) -> Task:
        """Mark the task cancelled (blocking: call through the unit of work)."""
        with self._work.write() as conn:
            task = tasks.get(conn, task_id)
            if task.state.ended:
                raise InvalidState(f"task {task_id} has already ended ({task.state})")
            conn.execute(
                update(tasks_table).where(tasks_table.c.id == task_id).values(cancel_requested=True)
            )
            self._context(task).event(conn, "task.cancel_requested", "cancel requested")
            return tasks.get(conn, task_id)

    async def cancel_inflight(self, task_id: str) -> int:
        """After `request_cancel`: wake the task if a step waits out a backoff, and send
        Cancel for its commands still in flight (their hosts abort them)."""
        waiting = self._cancels.get(task_id)
        if waiting is not None:
            waiting.set()

        def open_commands() -> list[tuple[str, str]]:
            with self._work.read() as conn:
                return [
                    (c.id, c.node)
                    for c in commands.for_task(conn, task_id)
                    if CommandState(c.state) not in TERMINAL
                ]

        pending = await self._work.run(open_commands)
        for cid, node in pending:
            await self._services.commands.cancel(cid, node)
        return len(pending)

    # -- running ----------------------------------------------------------------------------

    def _context(
        self, task: Task, params: TaskParams | None = None, holding: Holding | None = None
    ) -> StepContext[Any]:
        if params is None:
            params = _validate(self.flows[task.type], task.params)
        return StepContext(self._services, self, self._runner, task, params, holding=holding)

    async def drive(self, task_id: str) -> None:
        """Run the task to its end; TaskTakenOver when another server took it over (the
        runner stops the drive quietly then)."""
        holding = self._holdings.get(task_id)
        if holding is not None:  # started by `_start`, which forgets it
            await self._drive(task_id, holding)
            return
        holding = self._holdings[task_id] = Holding(task_id, (self._owner(),))
        try:  # driven directly (tests)
            await self._drive(task_id, holding)
        finally:
            if self._holdings.get(task_id) is holding:
                del self._holdings[task_id]

    async def _drive(self, task_id: str, holding: Holding) -> None:
        task = await self._work.run(self._load, task_id)
        # The task runs as whoever asked for it (its own asyncio task: this sets it for the
        # task's steps and the events they write, also when resumed after a restart).
        actors.set_current(task.actor or actors.SYSTEM)
        actors.set_request(task.request_id)
        flow = self.flows[task.type]
        defs = flow.steps(task)
        ctx = self._context(task, holding=holding)
        self._cancels[task_id] = asyncio.Event()
        try:
            if task.state is TaskStatus.PENDING:
                self._defer(
                    ctx, lambda conn: self._transition(conn, ctx, TaskStatus.RUNNING, "started")
                )
            if task.state in (TaskStatus.PENDING, TaskStatus.RUNNING):
                error = await self._forward(ctx, defs)
                if error is None:
                    await self._write(self._end, ctx, flow, TaskStatus.SUCCEEDED, None)
                    return
            else:
                error = task.error or "rolled back"
            await self._rollback(ctx, flow, defs, error)
        finally:
            self._cancels.pop(task_id, None)
            self._deferred.pop(task_id, None)

    async def _forward(self, ctx: StepContext[Any], defs: list[StepDef]) -> str | None:
        """Run the steps not yet done; the error that stopped them, or None."""
        for idx, sdef in enumerate(defs):
            step = ctx.task.steps[idx]
            ctx.idx, ctx.step_name = idx, sdef.name
            if step.state in _SETTLED:
                ctx.results[sdef.name] = step.result
                continue
            if step.state == "failed":
                return step.error or f"step {sdef.name} failed"
            if step.state == "waiting" and not await self._backoff(ctx, step.retry_at):
                await self._write(self._mark, ctx, "failed", {"error": "cancelled"})
                return "cancelled by the operator"
            if await self._work.run(self._cancel_requested, ctx.task.id):
                if step.state in ("running", "waiting"):  # its undo checks what it did
                    await self._write(self._mark, ctx, "failed", {"error": "cancelled"})
                return "cancelled by the operator"
            if sdef.when is not None and not sdef.when(ctx):
                self._defer(ctx, functools.partial(self._mark_in, ctx, idx, sdef.name, "skipped"))
                continue
            error = await self._run_step(ctx, sdef, step.attempts)
            if error is not None:
                return error
        return None

    async def _run_step(self, ctx: StepContext[Any], sdef: StepDef, attempts: int) -> str | None:
        """Run one step to its end (retrying temporary errors); its error, or None."""
        while True:
            await self._write(self._mark, ctx, "running", {})
            crashpoints.reach(ctx.task.type, sdef.name, "before")
            try:
                result = await sdef.do(ctx) or {}
                break
            except TaskTakenOver:  # not the step's failure: this server must stop writing
                raise
            except BollardError as exc:
                attempts += 1
                if not sdef.retry.retries(exc, attempts):
                    await self._write(self._mark, ctx, "failed", {"error": exc.message})
                    return exc.message
                delay = sdef.retry.backoff(attempts)
                retry_at = self._clock.now() + timedelta(seconds=delay)
                await self._write(self._wait, ctx, attempts, retry_at, exc.message)
                if not await self._backoff(ctx, retry_at):
                    await self._write(self._mark, ctx, "failed", {"error": "cancelled"})
                    return "cancelled by the operator"
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

    async def _backoff(self, ctx: StepContext[Any], retry_at: datetime | None) -> bool:
        """Wait until `retry_at` (persisted with the step); False if cancelled meanwhile."""
        if retry_at is not None:
            remaining = (retry_at - self._clock.now()).total_seconds()
            wake = self._cancels.setdefault(ctx.task.id, asyncio.Event())
            await self._clock.wait_event(wake, remaining)
        return not await self._work.run(self._cancel_requested, ctx.task.id)

    def _wait(self, ctx: StepContext[Any], attempts: int, retry_at: datetime, error: str) -> None:
        """The step failed with a temporary error: it waits for its next attempt. Commands
        it sent that ended in failure are sent again by that attempt."""
        with self._work.write() as conn:
            self._flush(conn, ctx)
            step = steps.get(conn, ctx.task.id, ctx.idx)
            states = {
                cid: CommandState(commands.get(conn, cid).state) for cid in step.commands.values()
            }
            keep = {
                k: cid for k, cid in step.commands.items() if states[cid] not in _FAILED_COMMANDS
            }
            steps.update_step(conn, ctx.task.id, ctx.idx, commands=keep)
            steps.mark(
                conn, ctx.task.id, ctx.idx, "waiting", self._clock.now(),
                error=error, attempts=attempts, retry_at=retry_at,
            )  # fmt: skip
            ctx.event(
                conn,
                "step.waiting",
                f"step {ctx.step_name}: waiting ({error}); attempt {attempts + 1} "
                f"at {retry_at.isoformat(timespec='seconds')}",
                step=ctx.step_name,
                attempts=attempts,
            )

    def _done(self, ctx: StepContext[Any], sdef: StepDef, result: dict[str, Any]) -> dict[str, Any]:
        with self._work.write() as conn:
            self._flush(conn, ctx)
            if sdef.tx is not None:
                result = {**result, **(sdef.tx(conn, ctx) or {})}
            steps.mark(conn, ctx.task.id, ctx.idx, "done", self._clock.now(), result=result)
            ctx.event(conn, "step.done", f"step {ctx.step_name}: done", step=ctx.step_name)
        return result

    async def _rollback(
        self, ctx: StepContext[Any], flow: Flow, defs: list[StepDef], error: str
    ) -> None:
        if self._deferred.get(ctx.task.id):
            await self._write(self._apply_deferred, ctx)
        task = await self._work.run(self._load, ctx.task.id)
        ctx.task = task
        for idx, sdef in enumerate(defs):
            if task.steps[idx].state in _UNDO_CANDIDATES:
                ctx.results[sdef.name] = task.steps[idx].result
        to_undo = _to_undo(defs, task.steps)
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
        with self._work.read() as conn:
            return tasks.get(conn, task_id, with_steps=True)

    def _cancel_requested(self, task_id: str) -> bool:
        with self._work.read() as conn:
            return tasks.get(conn, task_id).cancel_requested

    def _undone(self, ctx: StepContext[Any], sdef: StepDef, undo_tx: bool) -> None:
        with self._work.write() as conn:
            self._flush(conn, ctx)
            if undo_tx and sdef.undo_tx is not None:
                sdef.undo_tx(conn, ctx)
            steps.mark(conn, ctx.task.id, ctx.idx, "undone", self._clock.now())
            ctx.event(conn, "step.undone", f"step {ctx.step_name}: undone", step=ctx.step_name)

    def _mark(self, ctx: StepContext[Any], state: str, values: dict[str, Any]) -> None:
        with self._work.write() as conn:
            self._flush(conn, ctx)
            self._mark_in(ctx, ctx.idx, ctx.step_name, state, conn, **values)

    def _mark_in(
        self,
        ctx: StepContext[Any],
        idx: int,
        name: str,
        state: str,
        conn: Connection,
        **values: Any,
    ) -> None:
        steps.mark(conn, ctx.task.id, idx, state, self._clock.now(), **values)
        detail = values.get("error") or values.get("undo_error")
        message = f"step {name}: {state}" + (f" ({detail})" if detail else "")
        ctx.event(conn, f"step.{state}", message, step=name)

    def _defer(self, ctx: StepContext[Any], write: Callable[[Connection], None]) -> None:
        """Make ``write`` in the task's next write transaction (see the module's docstring)."""
        self._deferred.setdefault(ctx.task.id, []).append(write)

    def _flush(self, conn: Connection, ctx: StepContext[Any]) -> None:
        """Every write transaction for a task starts here: the task must still be this
        process's (TaskTakenOver otherwise); then its deferred writes, in order."""
        hold(conn, ctx.holding)
        for write in self._deferred.pop(ctx.task.id, []):
            write(conn)

    def _apply_deferred(self, ctx: StepContext[Any]) -> None:
        with self._work.write() as conn:
            self._flush(conn, ctx)

    async def _set_state(
        self, ctx: StepContext[Any], state: TaskStatus, message: str, error: str | None = None
    ) -> None:
        def tx() -> None:
            with self._work.write() as conn:
                self._flush(conn, ctx)
                self._transition(conn, ctx, state, message, error)

        await self._write(tx)

    def _transition(
        self,
        conn: Connection,
        ctx: StepContext[Any],
        state: TaskStatus,
        message: str,
        error: str | None = None,
    ) -> None:
        current = tasks.get(conn, ctx.task.id)
        if not task_allowed(current.state, state):
            raise InvalidState(f"task {ctx.task.id}: {current.state} -> {state} is not allowed")
        tasks.set_state(
            conn, ctx.task.id, state, self._clock.now(), error=error, expect=current.state
        )
        ctx.event(conn, f"task.{state.value}", message)
        ctx.task = tasks.get(conn, ctx.task.id, with_steps=True)

    def _end(self, ctx: StepContext[Any], flow: Flow, state: TaskStatus, error: str | None) -> None:
        with self._work.write() as conn:
            self._flush(conn, ctx)
            # What its end decides on (e.g. whether every undo went well) is its steps as they
            # are now, after the rollback, not as they were when it began.
            ctx.task = tasks.get(conn, ctx.task.id, with_steps=True)
            if state is TaskStatus.SUCCEEDED:
                flow.succeed(conn, ctx)
            else:
                flow.fail(conn, ctx, error or str(state))
            message = str(state) + (f": {error}" if error else "")
            self._transition(conn, ctx, state, message, error)
        log.info("task %s (%s %s) %s", ctx.task.id, ctx.task.type, ctx.task.vm_name, message)

    def _crashed(self, holding: Holding, message: str) -> None:
        """The engine itself failed on this task (a bug): end it, releasing its VM."""
        task = self._load(holding.task_id)
        ctx = self._context(task, holding=holding)
        flow = self.flows[task.type]
        target = (
            TaskStatus.FAILED
            if task.state is not TaskStatus.ROLLING_BACK
            else TaskStatus.NEEDS_ATTENTION
        )
        if task.state is TaskStatus.PENDING:
            target = TaskStatus.FAILED
        self._end(ctx, flow, target, message)


def _validate(flow: Flow, params: BaseModel | dict[str, Any]) -> TaskParams:
    """The task's parameters as its flow's model (InvalidInput naming what does not fit)."""
    model: ParamsModel = flow.params_model
    if isinstance(params, TaskParams) and isinstance(params, model):
        return params
    raw = params.model_dump(by_alias=True) if isinstance(params, BaseModel) else params
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'params'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidInput(f"{flow.type} task parameters: {problems}") from exc


def _to_undo(defs: list[StepDef], states: list[TaskStep]) -> list[tuple[int, StepDef]]:
    """The steps a rollback undoes, in order of execution. A step that failed may have acted
    in part: it is undone too, through its `undo` only (undos look before they act; its `tx`
    was rolled back with the transaction that failed). Nothing is undone once a
    `commit_point` step is done."""
    committed = any(
        sdef.commit_point and states[idx].state == "done" for idx, sdef in enumerate(defs)
    )
    if committed:
        return []
    return [
        (idx, sdef)
        for idx, sdef in enumerate(defs)
        if (sdef.undoable and states[idx].state in ("done", "undoing"))
        or (sdef.undo is not None and states[idx].state == "failed")
    ]
