"""The task engine: operations as ordered steps, each with `do` and `undo`, persisted.

A task is created with its steps (all `pending`) and its typed parameters (validated by its
flow's model) in the same transaction that takes its target (the VM's task_state
compare-and-swap). The engine then runs the steps in order. A step that fails with a
temporary error (`BollardError.retryable`) is tried again after a backoff, as often as its
`RetryPolicy` allows; the step waits in state `waiting` with its attempt count and next
attempt time persisted, so a restarted server waits out the same backoff. A permanent error
(or the last attempt) fails the step: the steps already done are undone in reverse order
(rolling_back -> rolled_back, or needs_attention when an undo fails); a task with nothing to
undo simply fails. On server start every unfinished task is resumed from its last persisted
step: a step found `running` is run again (steps are idempotent, and a command a step already
sent is waited for, not sent again).

What is on disk, and when (the durability contract):
- A step's start (`running`) is committed before the step does anything: in one
  transaction with the task's pending writes (below) and the check for a cancel (read from
  the task's row as it is held: a cancel requested before the step starts stops the task
  before it).
- Every host action of a step is a command, written (with its id on the step, and the
  step's pending writes) before it is sent: `StepContext.command` and dispatch.py. A cancel
  requested before that transaction commits refuses the command (StepFailed; nothing
  written, nothing sent); one requested after finds the command and cancels it on its host.
- A step's end (`done`, with its result) is on disk before anything of the next step is, and
  before the task's end: it is written with the task's next write, the next step's start or
  the task's end, unless the step has a `tx` (then in one transaction with it, whose refusal
  fails the step). A crash before that leaves the step `running`, and the resumed task runs
  it again, exactly as after a crash at the crash point `after` (run, its end not written).
- The task's start (pending -> running), a skipped step, and what a step shows it does (the
  VM's task_state, `StepContext.later`) wait for the task's next write too: a crash before it
  leaves them as they were, and the resumed task decides them again, the same way.
- Pending writes are made first by every write transaction of the task, in order (the
  engine's, a step's `ctx.write`, the record of a command it sends); a transaction that fails
  gives them back, first in line for the next.
So a create with start commits 7 times from its creation to its end (5 besides the two
answers, which share the agents' report transactions: dispatch.py), not 13.

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
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import Connection, update

from bollard.domain import actors
from bollard.domain.commands import TERMINAL, CommandState
from bollard.domain.errors import BollardError, InvalidState
from bollard.domain.models import Task, TaskStep
from bollard.domain.states import TaskStatus
from bollard.domain.tasks import StepState
from bollard.server import crashpoints
from bollard.server.tasks.context import StepContext, StepServices, Write
from bollard.server.tasks.created import Created, CreatedTasks, pending_steps
from bollard.server.tasks.flow import Flow, StepDef
from bollard.server.tasks.ownership import Holding, TaskTakenOver, take_orphans
from bollard.server.tasks.params import TaskParams, validate
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
_CANCELLED = "cancelled by the operator"
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
        self._owner = owner
        self._holdings: dict[str, Holding] = {}  # per task driven here: the id it runs under
        self._created = CreatedTasks()

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
        typed = validate(flow.type, flow.params_model, params)
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
        names = [s.name for s in flow.steps(task)]
        steps.create_all(conn, id, names)
        ctx = self._context(task, typed)
        ctx.event(conn, "task.created", f"{type} {vm_name or node or ''}".strip() + " requested")
        self._created.keep(id, replace(task, steps=pending_steps(id, names)), typed)
        return tasks.get(conn, id)

    def launch(self, task_id: str) -> None:
        """Drive a task this server created (under the id it is now: had it joined again
        since, the first write finds the task another id's and stops; an orphan, it is
        taken over then). Its drive starts from the task as created (not read again)."""
        fresh = self._created.take(task_id)
        self._start(task_id, self._owner(), lambda: self.drive(task_id, fresh))

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
        params = self._params(task)
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
            params = self._params(task)
        return StepContext(self._services, self, self._runner, task, params, holding=holding)

    def _params(self, task: Task) -> TaskParams:
        flow = self.flows[task.type]
        return validate(flow.type, flow.params_model, task.params)

    async def drive(self, task_id: str, fresh: Created | None = None) -> None:
        """Run the task to its end; TaskTakenOver when another server took it over (the
        runner stops the drive quietly then). `fresh`: the task as `create_in` made it, and
        its params (else read)."""
        holding = self._holdings.get(task_id)
        if holding is not None:  # started by `_start`, which forgets it
            await self._drive(task_id, holding, fresh)
            return
        holding = self._holdings[task_id] = Holding(task_id, (self._owner(),))
        try:  # driven directly (tests)
            await self._drive(task_id, holding, fresh)
        finally:
            if self._holdings.get(task_id) is holding:
                del self._holdings[task_id]

    async def _drive(self, task_id: str, holding: Holding, fresh: Created | None) -> None:
        if fresh is None:
            task, params = await self._work.run(self._load, task_id), None
        else:
            task, params = fresh
        # The task runs as whoever asked for it (its own asyncio task: this sets it for the
        # task's steps and the events they write, also when resumed after a restart).
        actors.set_current(task.actor or actors.SYSTEM)
        actors.set_request(task.request_id)
        flow = self.flows[task.type]
        defs = flow.steps(task)
        ctx = self._context(task, params, holding=holding)
        self._cancels[task_id] = asyncio.Event()
        try:
            if task.state is TaskStatus.PENDING:
                ctx.later(lambda conn: self._transition(conn, ctx, TaskStatus.RUNNING, "started"))
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
                return _CANCELLED
            if sdef.when is not None and not sdef.when(ctx):
                if await self._work.run(self._cancel_requested, ctx.task.id):
                    if step.state in ("running", "waiting"):  # its undo checks what it did
                        await self._write(self._mark, ctx, "failed", {"error": "cancelled"})
                    return _CANCELLED
                ctx.later(functools.partial(self._mark_in, ctx, idx, sdef.name, "skipped"))
                continue
            # A step begun from `pending` has sent no command yet: the context need not read.
            ctx.step_commands = {} if step.state == "pending" else None
            error = await self._run_step(ctx, sdef, step.attempts)
            if error is not None:
                return error
        return None

    async def _run_step(self, ctx: StepContext[Any], sdef: StepDef, attempts: int) -> str | None:
        """Run one step to its end (retrying temporary errors); its error, or None."""
        while True:
            if not await self._write(self._begin, ctx):
                return _CANCELLED
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
                ctx.step_commands = None  # `_wait` keeps some of them
                await self._write(self._wait, ctx, attempts, retry_at, exc.message)
                if not await self._backoff(ctx, retry_at):
                    await self._write(self._mark, ctx, "failed", {"error": "cancelled"})
                    return _CANCELLED
            except Exception as exc:  # a bug: fail the step (and roll back), never hang
                log.exception("task %s step %s crashed", ctx.task.id, sdef.name)
                message = f"internal error in step {sdef.name}: {type(exc).__name__}: {exc}"
                await self._write(self._mark, ctx, "failed", {"error": message})
                return message
        crashpoints.reach(ctx.task.type, sdef.name, "after")
        if sdef.tx is None:  # its end is written with the task's next write
            ctx.later(
                functools.partial(self._done_in, ctx, ctx.idx, sdef.name, self._clock.now(), result)
            )
            ctx.results[sdef.name] = result
            return None
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

        def tx(conn: Connection) -> None:
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

        ctx.transaction(tx)

    def _done(self, ctx: StepContext[Any], sdef: StepDef, result: dict[str, Any]) -> dict[str, Any]:
        """The end of a step with a `tx`: in one transaction with it (its refusal fails the
        step)."""
        idx, name, now, tx = ctx.idx, ctx.step_name, self._clock.now(), sdef.tx
        assert tx is not None

        def write(conn: Connection) -> dict[str, Any]:
            done = {**result, **(tx(conn, ctx) or {})}
            self._done_in(ctx, idx, name, now, done, conn)
            return done

        return ctx.transaction(write)

    def _done_in(
        self,
        ctx: StepContext[Any],
        idx: int,
        name: str,
        now: datetime,
        result: dict[str, Any],
        conn: Connection,
    ) -> None:
        steps.mark(conn, ctx.task.id, idx, "done", now, result=result)
        ctx.event(conn, "step.done", f"step {name}: done", step=name)

    async def _rollback(
        self, ctx: StepContext[Any], flow: Flow, defs: list[StepDef], error: str
    ) -> None:
        if ctx.pending:
            await self._write(self._apply_deferred, ctx)
        ctx.step_commands = None  # undos read the commands their steps sent
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

    def _begin(self, ctx: StepContext[Any]) -> bool:
        """A step (re)starts: `running`, in the transaction that makes the task's pending
        writes (the end of the step before it); False, and the step not begun, when a cancel
        was requested (a step found running or waiting is failed then: its undo checks what
        it did)."""
        idx, name, task_id = ctx.idx, ctx.step_name, ctx.task.id
        made: list[Write] = []
        try:
            with self._work.write() as conn:
                if ctx.begin_in(conn, made):  # a cancel was requested
                    if steps.state(conn, task_id, idx) in (StepState.RUNNING, StepState.WAITING):
                        self._mark_in(ctx, idx, name, "failed", conn, error="cancelled")
                    return False
                self._mark_in(ctx, idx, name, "running", conn)
                return True
        except BaseException:
            ctx.pending.extendleft(reversed(made))
            raise

    def _cancel_requested(self, task_id: str) -> bool:
        with self._work.read() as conn:
            return tasks.get(conn, task_id).cancel_requested

    def _undone(self, ctx: StepContext[Any], sdef: StepDef, undo_tx: bool) -> None:
        def tx(conn: Connection) -> None:
            if undo_tx and sdef.undo_tx is not None:
                sdef.undo_tx(conn, ctx)
            steps.mark(conn, ctx.task.id, ctx.idx, "undone", self._clock.now())
            ctx.event(conn, "step.undone", f"step {ctx.step_name}: undone", step=ctx.step_name)

        ctx.transaction(tx)

    def _mark(self, ctx: StepContext[Any], state: str, values: dict[str, Any]) -> None:
        idx, name = ctx.idx, ctx.step_name
        ctx.transaction(functools.partial(self._mark_in, ctx, idx, name, state, **values))

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

    def _apply_deferred(self, ctx: StepContext[Any]) -> None:
        ctx.transaction(lambda conn: None)

    async def _set_state(
        self, ctx: StepContext[Any], state: TaskStatus, message: str, error: str | None = None
    ) -> None:
        await self._write(
            ctx.transaction,
            lambda conn: self._transition(conn, ctx, state, message, error),
        )

    def _transition(
        self,
        conn: Connection,
        ctx: StepContext[Any],
        state: TaskStatus,
        message: str,
        error: str | None = None,
    ) -> None:
        now = self._clock.now()
        if not tasks.advance(conn, ctx.task.id, state, now, error=error):
            current = tasks.state(conn, ctx.task.id)
            raise InvalidState(f"task {ctx.task.id}: {current} -> {state} is not allowed")
        ctx.event(conn, f"task.{state.value}", message)
        ctx.task = replace(
            ctx.task, state=state, error=error, updated_at=now,
            finished_at=now if state.ended else ctx.task.finished_at,
        )  # fmt: skip

    def _end(self, ctx: StepContext[Any], flow: Flow, state: TaskStatus, error: str | None) -> None:
        message = str(state) + (f": {error}" if error else "")

        def tx(conn: Connection) -> None:
            # What its end decides on (e.g. whether every undo went well) is its steps as they
            # are now, after the rollback, not as they were when it began.
            ctx.task = tasks.get(conn, ctx.task.id, with_steps=True)
            if state is TaskStatus.SUCCEEDED:
                flow.succeed(conn, ctx)
            else:
                flow.fail(conn, ctx, error or str(state))
            self._transition(conn, ctx, state, message, error)
            # As committed, for its waiters here (its row: the flow's end may have written
            # its result; its steps are as read above).
            ctx.task = replace(tasks.get(conn, ctx.task.id), steps=ctx.task.steps)

        ctx.transaction(tx)
        self._runner.ended_as(ctx.task)
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
