"""Fencing: one node at a time, each fence a durable task (see tasks/flows/fence.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from bollard.domain.errors import BollardError
from bollard.domain.ids import new_id
from bollard.domain.states import NodeHealth
from bollard.store import nodes

if TYPE_CHECKING:
    from bollard.server.runtime import Runtime

log = logging.getLogger(__name__)

FENCE_WAIT = 600.0  # the longest one fence (power off, confirm off, start recovery) may take


class Fencer:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
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
                task_id = await self.rt.db_call(self._begin, node)
                if task_id is not None:
                    self.rt.engine.launch(task_id)
                    await self.rt.runner.wait(task_id, FENCE_WAIT)
            except BollardError as exc:
                log.error("fencing %s could not start: %s", node, exc.message)
            finally:
                self._queued.discard(node)

    def _begin(self, node: str) -> str | None:
        """DEAD → FENCING and the fence task, in one transaction; None if the node is no
        longer dead (it came back, or another server took it)."""
        now = self.rt.clock.now()
        with self.rt.db.write() as conn:
            if not nodes.set_health(conn, node, NodeHealth.FENCING, now, expect=NodeHealth.DEAD):
                return None
            task_id = new_id()
            self.rt.engine.create_in(
                conn, id=task_id, type="fence", vm_uuid=None, vm_name=None, node=node, params={}
            )
            return task_id
