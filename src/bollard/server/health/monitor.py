"""The health monitor: up → suspect (a heartbeat missed) → dead (`health.dead_after` missed) →
fencing → fenced | fence_failed. It runs in one server at a time (a lease in the database),
and takes no action for `health.startup_grace` seconds after the server starts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bollard.domain.models import Node
from bollard.domain.states import NodeHealth
from bollard.store import events, leases, nodes

if TYPE_CHECKING:
    from bollard.server.runtime import Runtime

log = logging.getLogger(__name__)

LEASE = "health-monitor"
SUSPECT_AFTER = 1.5  # heartbeat intervals without one before a node is suspect


class HealthMonitor:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.holder = f"server-{uuid.uuid4()}"
        self.started = time.monotonic()
        self._wake = asyncio.Event()

    @property
    def tick(self) -> float:
        return max(0.1, self.rt.config.heartbeat_interval / 4)

    def kick(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick)
            self._wake.clear()
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad pass must not stop health monitoring for good
                log.exception("health monitor pass failed")

    async def check_once(self) -> list[str]:
        """One pass; returns the nodes declared dead in it."""
        settings = await self.rt.db_call(self.rt.settings.all)
        if not await self.rt.db_call(self._lead):
            return []
        if time.monotonic() - self.started < float(settings["health.startup_grace"]):
            return []
        dead = await self.rt.db_call(self._evaluate, int(settings["health.dead_after"]))
        if dead:
            self.rt.event_bus.touch()
        if settings["cluster.maintenance"] or not settings["fencing.enabled"]:
            return dead
        for name in await self.rt.db_call(self._dead_nodes):
            self.rt.fencer.request(name)
        return dead

    def _lead(self) -> bool:
        with self.rt.db.write() as conn:
            return leases.acquire(
                conn, LEASE, self.holder, self.rt.clock.now(), ttl=5 * self.tick + 5
            )

    def _evaluate(self, dead_after: int) -> list[str]:
        now = self.rt.clock.now()
        interval = self.rt.config.heartbeat_interval
        declared: list[str] = []
        # Only a node that is suspect, disconnected or silent for the shortest span that
        # changes anything can change health; the others are not read.
        silent = min(SUSPECT_AFTER, float(dead_after)) * interval
        with self.rt.db.write() as conn:
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
        with self.rt.db.read() as conn:
            return nodes.names_with_health(conn, NodeHealth.DEAD)

    def status(self) -> dict[str, Any]:
        return {"holder": self.holder, "uptime": time.monotonic() - self.started}


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
    return None
