"""Runs operations (tasks) in the background and lets callers wait for them to end, whether
they run in this server or in another one of the same database."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bollard.domain.models import Task
from bollard.server.clock import Clock, Deadline
from bollard.server.ports import UnitOfWork
from bollard.server.tasks.ownership import TaskTakenOver
from bollard.store import tasks

log = logging.getLogger(__name__)

SHUTDOWN_WAIT = 5.0  # seconds the running tasks have to stop at server shutdown
# How often a wait for a task run elsewhere reads it again: what a missed announcement of its
# end (`ended_elsewhere`) costs at most.
RECHECK = 1.0


class TaskRunner:
    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        on_ended: Callable[[str], None] | None = None,
        recheck: float = RECHECK,
    ) -> None:
        """`on_ended(task_id)`: a task run here has ended (for the peers' waiters)."""
        self._work = work
        self._clock = clock
        self._on_ended = on_ended
        self._recheck = recheck
        self._running: dict[str, asyncio.Task[None]] = {}
        self._ended: dict[str, _Ended] = {}
        # Per task run elsewhere: the events of the callers waiting for it here.
        self._remote: dict[str, set[asyncio.Event]] = {}
        self._closing = False  # the server stops: waiters get their tasks as they stand

    def start(
        self, task_id: str, body: Callable[[], Awaitable[None]], on_crash: Callable[[str], None]
    ) -> None:
        """Run `body` as task `task_id`. A bug that escapes it fails the task through
        `on_crash(message)` (called in a worker thread) instead of leaving it running. A task
        another server took over (TaskTakenOver) just stops here."""
        self._ended[task_id] = _Ended()
        self._running[task_id] = asyncio.create_task(self._run(task_id, body, on_crash))

    def ended_as(self, task: Task) -> None:
        """A task run here has ended, as `task` (its row as its end committed it): its local
        waiters get it without reading it again."""
        event = self._ended.get(task.id)
        if event is not None and task.state.ended:
            event.task = task

    async def _run(
        self, task_id: str, body: Callable[[], Awaitable[None]], on_crash: Callable[[str], None]
    ) -> None:
        ended = False
        try:
            await body()
            ended = True
        except asyncio.CancelledError:
            log.info("task %s cancelled by server shutdown", task_id)
            raise
        except TaskTakenOver as exc:
            _taken_over(exc)
        except Exception as exc:  # a bug: record it on the task, never leave it running
            log.exception("task %s crashed", task_id)
            try:
                await self._work.run(on_crash, f"internal error: {type(exc).__name__}: {exc}")
                ended = True
            except TaskTakenOver as taken:
                _taken_over(taken)
        finally:
            self._running.pop(task_id, None)
            event = self._ended.pop(task_id, None)
            if event is not None:
                event.set()
            self._wake(task_id)
        if ended and self._on_ended is not None:
            try:
                self._on_ended(task_id)
            except Exception:  # the peers' waiters read it again before long
                log.exception("announcing the end of task %s failed", task_id)

    def ended_elsewhere(self, task_id: str) -> None:
        """A peer announced the end of a task it ran: its waiters here read it again."""
        self._wake(task_id)

    def _wake(self, task_id: str) -> None:
        for event in self._remote.get(task_id, ()):
            event.set()

    async def wait(self, task_id: str, timeout: float) -> Task:
        """The task once it has ended, or as it stands when `timeout` has passed. A task run
        elsewhere is read again when its end is announced (`ended_elsewhere`), and every
        `recheck` seconds in case the announcement was missed."""
        deadline = Deadline.after(self._clock, timeout)
        wake = asyncio.Event()  # registered before each read: no announcement falls between
        self._remote.setdefault(task_id, set()).add(wake)
        try:
            first = self._ended.get(task_id)
            if first is not None and not self._closing:
                # Run here: it has not ended before its drive does; its end, as committed.
                await self._clock.wait_event(first, deadline.remaining())
                if first.is_set() and first.task is not None:
                    return first.task
            while True:
                wake.clear()
                task = await self._work.run(self._get, task_id)
                remaining = deadline.remaining()
                if task.state.ended or remaining <= 0 or self._closing:
                    return task
                local = self._ended.get(task_id)
                if local is not None:  # its drive here sets it (and stops taken over)
                    await self._clock.wait_event(local, remaining)
                else:
                    await self._clock.wait_event(wake, min(remaining, self._recheck))
        finally:
            waiters = self._remote.get(task_id)
            if waiters is not None:
                waiters.discard(wake)
                if not waiters:
                    del self._remote[task_id]

    def _get(self, task_id: str) -> Task:
        with self._work.read() as conn:
            return tasks.get(conn, task_id, with_steps=True)

    async def shutdown(self) -> None:
        self._closing = True
        for task_id in list(self._remote):
            self._wake(task_id)
        running = list(self._running.values())
        for t in running:
            t.cancel()
        if running:
            await asyncio.wait(running, timeout=SHUTDOWN_WAIT)

    def is_running(self, task_id: str) -> bool:
        return task_id in self._running

    def running_ids(self) -> frozenset[str]:
        return frozenset(self._running)

    @property
    def active(self) -> int:
        return len(self._running)


class _Ended(asyncio.Event):
    """Set when a task's drive here stops; `task`: the task as its end committed it (None:
    it stopped otherwise, e.g. taken over)."""

    def __init__(self) -> None:
        super().__init__()
        self.task: Task | None = None


def _taken_over(exc: TaskTakenOver) -> None:
    log.warning(
        "task %s stops here: server %s has taken it over",
        exc.task_id,
        exc.owner or "(unknown)",
    )
