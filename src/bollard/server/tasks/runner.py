"""Runs operations (tasks) in the background and lets callers wait for them to end."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bollard.domain.models import Task
from bollard.server.clock import Clock
from bollard.server.ports import UnitOfWork
from bollard.store import tasks

log = logging.getLogger(__name__)

SHUTDOWN_WAIT = 5.0  # seconds the running tasks have to stop at server shutdown


class TaskRunner:
    def __init__(self, *, work: UnitOfWork, clock: Clock) -> None:
        self._work = work
        self._clock = clock
        self._running: dict[str, asyncio.Task[None]] = {}
        self._ended: dict[str, asyncio.Event] = {}

    def start(
        self, task_id: str, body: Callable[[], Awaitable[None]], on_crash: Callable[[str], None]
    ) -> None:
        """Run `body` as task `task_id`. A bug that escapes it fails the task through
        `on_crash(message)` (called in a worker thread) instead of leaving it running."""
        self._ended[task_id] = asyncio.Event()
        self._running[task_id] = asyncio.create_task(self._run(task_id, body, on_crash))

    async def _run(
        self, task_id: str, body: Callable[[], Awaitable[None]], on_crash: Callable[[str], None]
    ) -> None:
        try:
            await body()
        except asyncio.CancelledError:
            log.info("task %s cancelled by server shutdown", task_id)
            raise
        except Exception as exc:  # a bug: record it on the task, never leave it running
            log.exception("task %s crashed", task_id)
            await self._work.run(on_crash, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self._running.pop(task_id, None)
            event = self._ended.pop(task_id, None)
            if event is not None:
                event.set()

    async def wait(self, task_id: str, timeout: float) -> Task:
        """The task once it has ended, or as it stands when `timeout` has passed."""
        event = self._ended.get(task_id)
        task = await self._work.run(self._get, task_id)
        if task.state.ended or event is None:
            return task
        # At the deadline the caller gets the task as it stands.
        await self._clock.wait_event(event, timeout)
        return await self._work.run(self._get, task_id)

    def _get(self, task_id: str) -> Task:
        with self._work.read() as conn:
            return tasks.get(conn, task_id, with_steps=True)

    async def shutdown(self) -> None:
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
