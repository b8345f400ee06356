"""Requests to flush or unflush a node: its scheduling state changes with the task's creation
(one transaction), and the opposite operation still running is asked to stop."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bollard.domain.errors import Conflict
from bollard.domain.ids import new_id
from bollard.domain.models import Task
from bollard.domain.states import SchedulingState
from bollard.store import nodes, tasks

if TYPE_CHECKING:
    from bollard.server.runtime import Runtime

S = SchedulingState
_RULES = {
    # operation: (states it may start from, the state it sets, the operation it stops)
    "flush": ((S.READY, S.UNFLUSHING), S.FLUSHING, "unflush"),
    # (an unflush makes the node ready at once and then brings its VMs back: a flush stops
    # it at any point, and an unflush of an unflushing node restarts the return)
    "unflush": ((S.FLUSHING, S.FLUSHED, S.MAINTENANCE, S.UNFLUSHING), S.UNFLUSHING, "flush"),
}


class DrainOperations:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def request(self, name: str, kind: str) -> Task:
        task, stop = await self.rt.db_call(self._tx, name, kind)
        for task_id in stop:
            await self.rt.db_call(self.rt.engine.request_cancel, task_id)
            await self.rt.engine.cancel_inflight(task_id)
        self.rt.engine.launch(task.id)
        self.rt.event_bus.touch()
        return task

    def _tx(self, name: str, kind: str) -> tuple[Task, list[str]]:
        allowed, during, opposite = _RULES[kind]
        now = self.rt.clock.now()
        with self.rt.db.write() as conn:
            node = nodes.get(conn, name)
            if node.scheduling not in allowed:
                running = [
                    t.id for t in tasks.unfinished(conn) if t.type == kind and t.node == name
                ]
                detail = f" (task {running[0]})" if running else ""
                raise Conflict(f"node {name} is {node.scheduling}{detail}; cannot {kind} it now")
            if not nodes.set_scheduling(conn, name, during, now, expect=node.scheduling):
                raise Conflict(f"node {name} changed state meanwhile; try again")
            stop = [
                t.id
                for t in tasks.unfinished(conn, include_rolling_back=True)
                if t.type == opposite and t.node == name
            ]
            task = self.rt.engine.create_in(
                conn, id=new_id(), type=kind, vm_uuid=None, vm_name=None, node=name,
                params={"during": during.value},
            )  # fmt: skip
            return task, stop
