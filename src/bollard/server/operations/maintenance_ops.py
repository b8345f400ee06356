"""Per-node maintenance (issue 21): `bollard node maintenance NODE on|off`.

On: the node's `maintenance` flag is set and it is drained as a flush drains it (its VMs are
moved away by the scheduler; the VMs HA leaves alone, ignored or in error, stay), ending in
the scheduling state `maintenance`; while the flag is set the node is never fenced (a dead
node in maintenance is only recorded: `node.fence_skipped`). Off: the flag is cleared and an
unflush brings its VMs back; the node is ready again at once.

The flag, the scheduling state and the drain task change in one transaction; the opposite
drain still running is asked to stop, as `flush`/`unflush` do (operations/drain_ops.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from bollard.domain.errors import Conflict
from bollard.domain.ids import new_id
from bollard.domain.models import Task
from bollard.domain.states import SchedulingState
from bollard.server.clock import Clock
from bollard.server.ports import Kick, TaskCanceller, TaskLauncher, Touch, UnitOfWork
from bollard.server.tasks.params import DrainParams
from bollard.store import events, nodes, tasks

# States a node may enter maintenance from (a plain flush under way must end first), and
# states it may leave it from.
_ON_FROM = (SchedulingState.READY, SchedulingState.UNFLUSHING, SchedulingState.FLUSHED)
_OFF_FROM = (
    SchedulingState.FLUSHING,
    SchedulingState.FLUSHED,
    SchedulingState.MAINTENANCE,
    SchedulingState.UNFLUSHING,
)


@dataclass(frozen=True)
class _Begun:
    task: Task
    stop: list[str]  # the opposite drain tasks to stop
    new: bool  # False: the maintenance drain already under way was returned


class MaintenanceOperations:
    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        launcher: TaskLauncher,
        canceller: TaskCanceller,
        touch: Touch,
        kick_monitor: Kick,
    ) -> None:
        self._work = work
        self._clock = clock
        self._launcher = launcher
        self._canceller = canceller
        self._touch = touch
        self._kick_monitor = kick_monitor

    async def request(self, name: str, on: bool) -> Task:
        """Maintenance on (a `flush` task ending in maintenance) or off (an `unflush` task);
        returns the drain task. Conflict when the node is already so, or busy with a plain
        flush. Maintenance on while its drain is still under way returns that drain."""
        begun = await self._work.run(self._on if on else self._off, name)
        for task_id in begun.stop:
            await self._work.run(self._canceller.request_cancel, task_id)
            await self._canceller.cancel_inflight(task_id)
        if begun.new:
            self._launcher.launch(begun.task.id)
        self._touch()
        self._kick_monitor()  # a dead node may be fenced (off) or not (on) from now on
        return begun.task

    def _on(self, name: str) -> _Begun:
        now = self._clock.now()
        with self._work.write() as conn:
            node = nodes.get(conn, name)
            running = _open(conn, name, "flush")
            if node.maintenance:
                if node.scheduling is SchedulingState.FLUSHING and running:
                    return _Begun(tasks.get(conn, running[0]), [], new=False)
                raise Conflict(
                    f"node {name} is already in maintenance ({node.scheduling}); "
                    f"`bollard node maintenance {name} off` ends it"
                )
            if node.scheduling not in _ON_FROM:
                detail = f" (task {running[0]})" if running else ""
                raise Conflict(
                    f"node {name} is {node.scheduling}{detail}; let it end (or unflush the "
                    "node) before maintenance on"
                )
            if not nodes.set_scheduling(
                conn, name, SchedulingState.FLUSHING, now, expect=node.scheduling
            ):
                raise Conflict(f"node {name} changed state meanwhile; try again")
            nodes.set_maintenance(conn, name, True, now)
            task = self._launcher.create_in(
                conn, id=new_id(), type="flush", vm_uuid=None, vm_name=None, node=name,
                params=DrainParams(during=SchedulingState.FLUSHING.value),
            )  # fmt: skip
            events.add(conn, "node.maintenance",
                       f"node {name}: maintenance on: draining it (task {task.id}); it is not "
                       "fenced until maintenance is off", now, node=name, task_id=task.id,
                       data={"on": True})  # fmt: skip
            return _Begun(task, _open(conn, name, "unflush"), new=True)

    def _off(self, name: str) -> _Begun:
        now = self._clock.now()
        with self._work.write() as conn:
            node = nodes.get(conn, name)
            if not node.maintenance:
                raise Conflict(f"node {name} is not in maintenance ({node.scheduling})")
            if node.scheduling not in _OFF_FROM or not nodes.set_scheduling(
                conn, name, SchedulingState.UNFLUSHING, now, expect=node.scheduling
            ):
                raise Conflict(f"node {name} is {node.scheduling}; try again")
            nodes.set_maintenance(conn, name, False, now)
            task = self._launcher.create_in(
                conn, id=new_id(), type="unflush", vm_uuid=None, vm_name=None, node=name,
                params=DrainParams(during=SchedulingState.UNFLUSHING.value),
            )  # fmt: skip
            events.add(conn, "node.maintenance",
                       f"node {name}: maintenance off: bringing its VMs back (task {task.id}); "
                       "it may be fenced again", now, node=name, task_id=task.id,
                       data={"on": False})  # fmt: skip
            return _Begun(task, _open(conn, name, "flush"), new=True)


def _open(conn: Connection, node: str, kind: str) -> list[str]:
    return [
        t.id
        for t in tasks.unfinished(conn, include_rolling_back=True)
        if t.type == kind and t.node == node
    ]
