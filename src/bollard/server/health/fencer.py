"""Fencing: one node at a time, each fence a durable task (see tasks/flows/fence.py)."""

from __future__ import annotations

import asyncio
import logging

from bollard.domain.errors import BollardError
from bollard.domain.ids import new_id
from bollard.domain.states import NodeHealth
from bollard.server.clock import Clock
from bollard.server.ports import TaskLauncher, TaskWaiter, UnitOfWork
from bollard.store import nodes

log = logging.getLogger(__name__)

FENCE_WAIT = 600.0  # the longest one fence (power off, confirm off, start recovery) may take


class Fencer:
    """`request(node)` is the health monitor's `request_fence`."""

    def __init__(
        self, *, work: UnitOfWork, clock: Clock, launcher: TaskLauncher, waiter: TaskWaiter
    ) -> None:
        self.work = work
        self.clock = clock
        self.launcher = launcher
        self.waiter = waiter
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()

    def request(self, node: str) -> None:
        if node not in self._queued:
            self._queued.add(node)
            self._queue.put_nowait(node)

    async def run(self) -> None:
        """Fences queued nodes one at a time; runs until cancelled."""
        while True:
            node = await self._queue.get()
            try:
                task_id = await self.work.run(self._begin, node)
                if task_id is not None:
                    self.launcher.launch(task_id)
                    await self.waiter.wait(task_id, FENCE_WAIT)
            except BollardError as exc:
                log.error("fencing %s could not start: %s", node, exc.message)
            finally:
                self._queued.discard(node)

    def _begin(self, node: str) -> str | None:
        """DEAD → FENCING and the fence task, in one transaction; None if the node is no
        longer dead (it came back, or another server took it)."""
        now = self.clock.now()
        with self.work.write() as conn:
            if not nodes.set_health(conn, node, NodeHealth.FENCING, now, expect=NodeHealth.DEAD):
                return None
            task_id = new_id()
            self.launcher.create_in(
                conn, id=task_id, type="fence", vm_uuid=None, vm_name=None, node=node, params={}
            )
            return task_id
