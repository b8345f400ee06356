"""The health monitor: up → suspect (a heartbeat missed) → dead (`health.dead_after` missed) →
fencing → fenced | fence_failed. It runs in one server at a time: on SQLite's one server
under a lease of its own in the database, on PostgreSQL as a duty of the leader (its lease
decides, cluster/singletons.py). It takes no action for `health.startup_grace` seconds after
the server starts. A dead node is fenced unless its `FenceGate` holds it back (maintenance,
frozen by a clean shutdown, idle)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from bollard.domain.models import Node
from bollard.domain.states import NodeHealth
from bollard.server.clock import Clock
from bollard.server.health.fence_gate import FenceGate
from bollard.server.ports import SettingsReader, Touch, UnitOfWork
from bollard.store import events, leases, nodes

log = logging.getLogger(__name__)

LEASE = "health-monitor"
SUSPECT_AFTER = 1.5  # heartbeat intervals without one before a node is suspect


class HealthMonitor:
    """Its `kick` is a `ports.Kick`; `request_fence(node)` is handed each dead node to fence
    (when fencing is on)."""

    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        settings: SettingsReader,
        heartbeat_interval: float,
        touch: Touch,
        request_fence: Callable[[str], None],
        gate: FenceGate,
        own_lease: bool = True,
    ) -> None:
        """`own_lease`: take the `health-monitor` lease before each pass (False: whoever
        runs the monitor decides that it runs on one server only)."""
        self.work = work
        self.clock = clock
        self.settings = settings
        self.heartbeat_interval = heartbeat_interval
        self.touch = touch
        self.request_fence = request_fence
        self.gate = gate
        self.own_lease = own_lease
        self.holder = f"server-{uuid.uuid4()}"
        self.started = clock.monotonic()
        self._wake = asyncio.Event()

    @property
    def tick(self) -> float:
        return max(0.1, self.heartbeat_interval / 4)

    def kick(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self.clock.wait_event(self._wake, self.tick)
            self._wake.clear()
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad pass must not stop health monitoring for good
                log.exception("health monitor pass failed")

    async def check_once(self) -> list[str]:
        """One pass; returns the nodes declared dead in it."""
        settings = await self.work.run(self.settings.all)
        if not await self.work.run(self._lead):
            return []
        if self.clock.monotonic() - self.started < float(settings["health.startup_grace"]):
            return []
        dead = await self.work.run(self._evaluate, int(settings["health.dead_after"]))
        if dead:
            self.touch()
        if settings["cluster.maintenance"] or not settings["fencing.enabled"]:
            return dead
        for name in await self.work.run(self._dead_nodes):
            if await self.work.run(self.gate.check, name, settings):
                self.request_fence(name)
        return dead

    def _lead(self) -> bool:
        if not self.own_lease:
            return True
        with self.work.write() as conn:
            return leases.acquire(conn, LEASE, self.holder, self.clock.now(), ttl=5 * self.tick + 5)

    def _evaluate(self, dead_after: int) -> list[str]:
        now = self.clock.now()
        interval = self.heartbeat_interval
        declared: list[str] = []
        # Only a node that is suspect, disconnected or silent for the shortest span that
        # changes anything can change health; the others are not read.
        silent = min(SUSPECT_AFTER, float(dead_after)) * interval
        with self.work.write() as conn:
            for node in nodes.health_candidates(conn, now - timedelta(seconds=silent)):
                new = _next_health(node, now, interval, dead_after)
                if new is None or not nodes.set_health(
                    conn, node.name, new, now, expect=node.health
                ):
                    continue
                missed = _missed(node, now, interval)
                message = (
                    f"node {node.name}: {node.health} -> {new} ({missed:.1f} heartbeats missed)"
                )
                events.add(conn, f"node.{new.value}", message, now, node=node.name,
                           data={"old": node.health.value, "new": new.value})  # fmt: skip
                log.warning(message)
                if new is NodeHealth.DEAD:
                    declared.append(node.name)
        return declared

    def _dead_nodes(self) -> list[str]:
        with self.work.read() as conn:
            return nodes.names_with_health(conn, NodeHealth.DEAD)

    def status(self) -> dict[str, Any]:
        return {"holder": self.holder, "uptime": self.clock.monotonic() - self.started}


def _missed(node: Node, now: datetime, interval: float) -> float:
    if node.last_heartbeat is None:
        return 0.0
    return (now - node.last_heartbeat).total_seconds() / interval


def _next_health(node: Node, now: datetime, interval: float, dead_after: int) -> NodeHealth | None:
    """The health a node moves to now, or None to stay (pure, tested on its own)."""
    if node.last_heartbeat is None:
        return None  # never seen: nothing to judge
    missed = _missed(node, now, interval)
    if node.health in (NodeHealth.UP, NodeHealth.SUSPECT) and missed >= dead_after:
        return NodeHealth.DEAD
    if node.health is NodeHealth.UP and (missed >= SUSPECT_AFTER or not node.connected):
        return NodeHealth.SUSPECT
    if node.health is NodeHealth.SUSPECT and node.connected and missed < SUSPECT_AFTER:
        return NodeHealth.UP
    # Dead but beating again on its session (it stalled): nothing of it was taken (a dead
    # node's VMs move only after its fence), so it is up again. This is how a node the fence
    # gate leaves alone (maintenance, frozen, idle) comes back; a node being fenced is
    # `fencing`, not dead, and its fence goes on.
    if node.health is NodeHealth.DEAD and node.connected and missed < SUSPECT_AFTER:
        return NodeHealth.UP
    return None
