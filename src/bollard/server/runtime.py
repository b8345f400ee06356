"""Everything a running server holds, assembled once and handed to the API and the gateway."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from bollard.domain.states import TaskStatus, VmState
from bollard.server.clock import Clock, SystemClock
from bollard.server.config import ServerConfig
from bollard.store import commands, nodes, tasks, vms
from bollard.store.db import Database

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


class Runtime:
    def __init__(self, config: ServerConfig, db: Database, clock: Clock | None = None) -> None:
        from bollard.server.dispatch import Dispatcher
        from bollard.server.gateway import Gateway
        from bollard.server.tasks.runner import TaskRunner
        from bollard.server.tasks.vm_ops import VmOperations

        self.config = config
        self.db = db
        self.clock: Clock = clock or SystemClock()
        self.admin_token_hash = ""
        self.gateway = Gateway(self)
        self.dispatcher = Dispatcher(self)
        self.runner = TaskRunner(self)
        self.vm_ops = VmOperations(self)
        self.gateway.on_session_lost.append(self.dispatcher.on_session_lost)

    async def db_call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run blocking database work off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def recover_after_restart(self) -> None:
        """Close what a previous run of the server left open.

        No agent is connected yet, commands that were CREATED or SENT become INTERRUPTED,
        and tasks that were running are failed, releasing their VMs with a fault that says
        so (durable resumption of tasks is built on top of this later).
        """
        now = self.clock.now()
        with self.db.write() as conn:
            nodes.mark_all_disconnected(conn, now)
            interrupted = commands.interrupt_unfinished(conn, now)
            open_tasks = tasks.unfinished(conn)
            for task in open_tasks:
                message = "interrupted by a restart of the server"
                tasks.set_state(conn, task.id, TaskStatus.FAILED, now, error=message)
                if task.vm_uuid is None:
                    continue
                vm = vms.find_by_uuid(conn, task.vm_uuid)
                if vm is None or vm.task_id != task.id:
                    continue
                state = VmState.ERROR if vm.vm_state is VmState.BUILDING else None
                vms.end_task(conn, vm.uuid, task.id, now, vm_state=state, fault=message)
        if interrupted or open_tasks:
            log.warning(
                "after restart: %d command(s) marked INTERRUPTED, %d task(s) failed",
                interrupted,
                len(open_tasks),
            )
