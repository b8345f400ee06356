"""Everything a running server holds, assembled once and handed to the API and the gateway."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from bollard.server.clock import Clock, SystemClock
from bollard.server.config import ServerConfig
from bollard.store import commands, nodes
from bollard.store.db import Database

if TYPE_CHECKING:
    from bollard.server.dispatch import Outcome

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


class Runtime:
    def __init__(self, config: ServerConfig, db: Database, clock: Clock | None = None) -> None:
        from bollard.server.dispatch import Dispatcher
        from bollard.server.events_bus import EventBus
        from bollard.server.gateway import Gateway
        from bollard.server.group_commit import GroupCommit
        from bollard.server.health.fencer import Fencer
        from bollard.server.health.monitor import HealthMonitor
        from bollard.server.health.rejoin import Rejoiner
        from bollard.server.inspect import Inspector
        from bollard.server.metrics import ServerMetrics
        from bollard.server.reconcile.commands import CommandReconciler
        from bollard.server.reconcile.state import StateReconciler
        from bollard.server.secrets import SecretBox
        from bollard.server.settings import Settings
        from bollard.server.tasks.drain_ops import DrainOperations
        from bollard.server.tasks.engine import TaskEngine
        from bollard.server.tasks.flows.drain import FlushFlow, UnflushFlow
        from bollard.server.tasks.flows.fence import FenceFlow, RecoverFlow
        from bollard.server.tasks.flows.ha import HaRestartFlow
        from bollard.server.tasks.flows.migrate import MigrateFlow
        from bollard.server.tasks.flows.vm_power import FLOWS
        from bollard.server.tasks.migrate_ops import MigrateOperations
        from bollard.server.tasks.recovery import LateOutcomes
        from bollard.server.tasks.runner import TaskRunner
        from bollard.server.tasks.vm_ops import VmOperations

        self.config = config
        self.db = db
        self.clock: Clock = clock or SystemClock()
        self.admin_token_hash = ""
        self.gateway = Gateway(self)
        self.metrics = ServerMetrics(lambda: len(self.gateway.sessions))
        # Agents' reports share transactions (see group_commit.py).
        self.report_writes = GroupCommit(self.db, self.db_call)
        self.dispatcher = Dispatcher(self)
        self.runner = TaskRunner(self)
        self.vm_ops = VmOperations(self)
        self.settings = Settings(db, self.clock)
        self.reconciler = CommandReconciler(self)
        self.state_reconciler = StateReconciler(self)
        self.late_outcomes = LateOutcomes(self)
        self.inspector = Inspector(self)
        self.event_bus = EventBus()
        self.engine = TaskEngine(self)
        for flow in FLOWS:
            self.engine.register(flow)
        self.engine.register(MigrateFlow())
        self.engine.register(FenceFlow())
        self.engine.register(RecoverFlow())
        self.engine.register(HaRestartFlow())
        self.engine.register(FlushFlow())
        self.engine.register(UnflushFlow())
        self.drain_ops = DrainOperations(self)
        self.secrets = SecretBox(config.data_dir)
        self.monitor = HealthMonitor(self)
        self.fencer = Fencer(self)
        self.rejoiner = Rejoiner(self)
        self.migrate_ops = MigrateOperations(self)
        self.gateway.on_session_lost.append(self.dispatcher.on_session_lost)
        self._loops: list[asyncio.Task[None]] = []

    def on_late_outcome(self, cid: str, outcome: Outcome) -> None:
        self.late_outcomes.on_late_outcome(cid, outcome)

    async def start_background(self) -> None:
        """Called once the event loop runs: conclude interrupted tasks, start the reconciler."""
        await self.engine.resume_all()
        self._loops.append(asyncio.create_task(self.reconciler.run(), name="command-reconciler"))
        self._loops.append(asyncio.create_task(self.monitor.run(), name="health-monitor"))
        self._loops.append(
            asyncio.create_task(self.state_reconciler.run(), name="state-reconciler")
        )
        self._loops.append(asyncio.create_task(self.fencer.run(), name="fencer"))

    async def stop_background(self) -> None:
        for loop in self._loops:
            loop.cancel()
        if self._loops:
            await asyncio.wait(self._loops, timeout=5)
        self._loops.clear()
        await self.state_reconciler.close()

    async def db_call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run blocking database work off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def recover_after_restart(self) -> None:
        """Close what a previous run of the server left open, before any agent connects:
        every node is disconnected, and commands that were CREATED or SENT become
        INTERRUPTED, for the command reconciler to settle when their agents reconnect.
        Tasks left running are concluded by `start_background`."""
        now = self.clock.now()
        with self.db.write() as conn:
            nodes.mark_all_disconnected(conn, now)
            interrupted = commands.interrupt_unfinished(conn, now)
        if interrupted:
            log.warning("after restart: %d command(s) marked INTERRUPTED", interrupted)
