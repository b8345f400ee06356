"""Requests to flush or unflush a node: its scheduling state changes with the task's creation
(one transaction), and the opposite operation still running is asked to stop."""

from __future__ import annotations

from bollard.domain.errors import Conflict
from bollard.domain.ids import new_id
from bollard.domain.models import Task
from bollard.domain.states import SchedulingState
from bollard.server.clock import Clock
from bollard.server.ports import TaskCanceller, TaskLauncher, Touch, UnitOfWork
from bollard.server.tasks.params import DrainParams
from bollard.store import events, nodes, tasks

_RULES = {
    # operation: (states it may start from, the state it sets, the operation it stops)
    "flush": (
        (SchedulingState.READY, SchedulingState.UNFLUSHING),
        SchedulingState.FLUSHING,
        "unflush",
    ),
    # (an unflush makes the node ready at once and then brings its VMs back: a flush stops
    # it at any point, and an unflush of an unflushing node restarts the return)
    "unflush": (
        (
            SchedulingState.FLUSHING,
            SchedulingState.FLUSHED,
            SchedulingState.MAINTENANCE,
            SchedulingState.UNFLUSHING,
        ),
        SchedulingState.UNFLUSHING,
        "flush",
    ),
}


class DrainOperations:
    """A `ports.DrainRequests`."""

    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        launcher: TaskLauncher,
        canceller: TaskCanceller,
        touch: Touch,
    ) -> None:
        self._work = work
        self._clock = clock
        self._launcher = launcher
        self._canceller = canceller
        self._touch = touch

    async def request(self, name: str, kind: str) -> Task:
        task, stop = await self._work.run(self._tx, name, kind)
        for task_id in stop:
            await self._work.run(self._canceller.request_cancel, task_id)
            await self._canceller.cancel_inflight(task_id)
        self._launcher.launch(task.id)
        self._touch()
        return task

    def _tx(self, name: str, kind: str) -> tuple[Task, list[str]]:
        allowed, during, opposite = _RULES[kind]
        now = self._clock.now()
        with self._work.write() as conn:
            node = nodes.get(conn, name)
            if node.scheduling not in allowed:
                running = [
                    t.id for t in tasks.unfinished(conn) if t.type == kind and t.node == name
                ]
                detail = f" (task {running[0]})" if running else ""
                raise Conflict(f"node {name} is {node.scheduling}{detail}; cannot {kind} it now")
            if not nodes.set_scheduling(conn, name, during, now, expect=node.scheduling):
                raise Conflict(f"node {name} changed state meanwhile; try again")
            if kind == "unflush" and nodes.set_maintenance(conn, name, False, now):
                # An unflush ends per-node maintenance too (maintenance_ops.py).
                events.add(conn, "node.maintenance", f"node {name}: maintenance off (unflush)",
                           now, node=name, data={"on": False})  # fmt: skip
            stop = [
                t.id
                for t in tasks.unfinished(conn, include_rolling_back=True)
                if t.type == opposite and t.node == name
            ]
            task = self._launcher.create_in(
                conn, id=new_id(), type=kind, vm_uuid=None, vm_name=None, node=name,
                params=DrainParams(during=during.value),
            )  # fmt: skip
            return task, stop
