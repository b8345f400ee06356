"""Fast failover (issue 21): a host that reads off is fenced without waiting for the dead
threshold.

When an agent's session ends, and the setting `fencing.fast` is on, fencing is enabled, the
cluster is not in maintenance, the node is not in maintenance, not frozen by an announced
clean shutdown, and has a power driver, its power status is read at once (deadline
`fencing.timeout`). A host that reads **off** is dead now (event `node.dead`, "power read off
after its agent dropped") and goes to the fencer, which powers it off and confirms it off as
for any dead node, then recovers its HA VMs. A host that reads **on** (a network cut, an
agent restart) or cannot be read follows the usual path: suspect, then dead after
`health.dead_after` missed heartbeats.

`fence_if_off` is the same decision for the clean-shutdown policies (failover): it polls the
power status until it reads off or its wait passes.

Never twice: nothing here restarts a VM. A node declared dead here is fenced by the same fence
task (power off, then the status must read off) before anything of it runs elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from bollard.domain.errors import BollardError, NotFound
from bollard.domain.states import NodeHealth
from bollard.power import PowerDriver, PowerStatus
from bollard.server.clock import Clock, Deadline
from bollard.server.gateway import AgentConnection
from bollard.server.health.fence_gate import FenceGate, frozen
from bollard.server.ports import PowerDrivers, SettingsReader, Touch, UnitOfWork
from bollard.store import events, nodes

log = logging.getLogger(__name__)

CAS_TRIES = 3  # reads of a node whose health changed under a compare-and-swap

POLL_EVERY = 0.5  # seconds between two power-status reads of fence_if_off (a BMC has no events)
DROPPED = "power read off after its agent dropped"
_ALIVE = (NodeHealth.UP, NodeHealth.SUSPECT)


def _fencing_on(settings: dict[str, Any]) -> bool:
    return bool(settings["fencing.enabled"]) and not settings["cluster.maintenance"]


class QuickFence:
    """`on_session_lost` is the gateway's callback for an ended agent session."""

    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        settings: SettingsReader,
        power: PowerDrivers,
        gate: FenceGate,
        request_fence: Callable[[str], None],
        touch: Touch,
    ) -> None:
        self.work = work
        self.clock = clock
        self.settings = settings
        self.power = power
        self.gate = gate
        self.request_fence = request_fence
        self.touch = touch
        self._jobs: set[asyncio.Task[None]] = set()
        self._closing = False

    # -- an agent's session ended ---------------------------------------------------------

    async def on_session_lost(self, session: AgentConnection) -> None:
        """Look at the node's power in a job of its own (the gateway's callbacks must not
        wait for a BMC)."""
        if self._closing:
            return  # the server is stopping: it closed the sessions itself
        job = asyncio.get_running_loop().create_task(
            self._after_drop(session.node), name=f"quick-fence-{session.node}"
        )
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _after_drop(self, node: str) -> None:
        try:
            settings = await self.work.run(self.settings.all)
            if not settings["fencing.fast"] or not _fencing_on(settings):
                return
            if not await self.work.run(self._suspect, node, settings):
                return
            status = await self._status(node, float(settings["fencing.timeout"]))
            if status is PowerStatus.OFF:
                await self._declare(node, DROPPED, settings)
            elif status is PowerStatus.ON:
                log.info("node %s: agent dropped, power reads on: the usual dead wait", node)
        except asyncio.CancelledError:
            raise
        except Exception:  # a job of its own: nothing else would see the failure
            log.exception("fast failover look at %s failed", node)

    def _suspect(self, node: str, settings: dict[str, Any]) -> bool:
        """Whether to read the node's power: it is still away, not in maintenance, not
        frozen, has a power driver, and is up or suspect (an up node is made suspect now)."""
        now = self.clock.now()
        with self.work.write() as conn:
            try:
                record = nodes.get(conn, node)
            except NotFound:
                return False
            if record.connected or record.health not in _ALIVE:
                return False  # back already, or the monitor has it
            if record.maintenance or not record.power_driver or not record.power_address:
                return False
            if frozen(record, str(settings["ha.shutdown_policy"])):
                return False
            if record.health is NodeHealth.UP and nodes.set_health(
                conn, node, NodeHealth.SUSPECT, now, expect=NodeHealth.UP
            ):
                message = f"node {node}: up -> suspect (its agent's session ended)"
                events.add(conn, "node.suspect", message, now, node=node,
                           data={"old": "up", "new": "suspect"})  # fmt: skip
                log.warning(message)
            return True

    async def _status(self, node: str, timeout: float) -> PowerStatus | None:
        """The node's power status, or None when it cannot be read (logged)."""
        driver = await self._driver(node)
        if driver is None:
            return None
        try:
            return await driver.status(timeout)
        except BollardError as exc:
            log.warning("node %s: power status unreadable (%s): the usual dead wait", node,
                        exc.message)  # fmt: skip
            return None

    async def _driver(self, node: str) -> PowerDriver | None:
        try:
            return await self.work.run(self.power.driver_for, node)
        except BollardError as exc:
            log.warning("node %s: no power driver to read (%s)", node, exc.message)
            return None

    # -- the decision -----------------------------------------------------------------------

    async def _declare(self, node: str, why: str, settings: dict[str, Any]) -> bool:
        """The host reads off: the node is dead now, and fenced unless its gate holds it
        back (or fencing is off). Whether it is dead."""
        dead = await self.work.run(self._dead_now, node, why)
        if not dead:
            return False
        self.touch()
        if _fencing_on(settings) and await self.work.run(self.gate.check, node, settings):
            self.request_fence(node)
        return True

    def _dead_now(self, node: str, why: str) -> bool:
        now = self.clock.now()
        with self.work.write() as conn:
            # The health monitor may move the node (up -> suspect) between the read and the
            # compare-and-swap: read again and decide on what it is now (a few times at most;
            # on SQLite the write transaction excludes it).
            for _ in range(CAS_TRIES):
                try:
                    record = nodes.get(conn, node)
                except NotFound:
                    return False
                if record.connected:
                    return False  # an agent is back: its session decides (rejoin)
                if record.health is NodeHealth.DEAD:
                    return True
                if record.health not in _ALIVE:
                    return False
                if nodes.set_health(conn, node, NodeHealth.DEAD, now, expect=record.health):
                    break
            else:
                return False
            message = f"node {node}: {record.health} -> dead ({why})"
            events.add(conn, "node.dead", message, now, node=node,
                       data={"old": record.health.value, "new": "dead", "fast": True})  # fmt: skip
            log.warning(message)
            return True

    async def fence_if_off(self, node: str, *, why: str, wait_off: float) -> bool:
        """Poll the node's power status until it reads off or `wait_off` seconds pass. Off:
        the node is dead now (event `node.dead` saying `why`) and its fence is requested
        (unless maintenance, a freeze, idleness, `fencing.enabled` off or cluster
        maintenance hold it back: see FenceGate), and the answer is True. Still on, or
        unreadable, when the wait ends, or the node's agent is back: False, nothing done.
        Each read has the deadline `fencing.timeout`; `wait_off` 0 reads once."""
        settings = await self.work.run(self.settings.all)
        timeout = float(settings["fencing.timeout"])
        deadline = Deadline.after(self.clock, max(0.0, wait_off))
        driver = await self._driver(node)
        if driver is None:
            return False
        last = "not read"
        while True:
            try:
                status = await driver.status(timeout)
            except BollardError as exc:
                last = f"unreadable: {exc.message}"
            else:
                if status is PowerStatus.OFF:
                    return await self._declare(node, why, settings)
                last = f"reads {status.value}"
            if deadline.passed:
                log.warning("node %s: power %s after %.1f s: not declared dead", node, last,
                            wait_off)  # fmt: skip
                return False
            await self.clock.sleep(min(POLL_EVERY, deadline.remaining()))

    async def close(self) -> None:
        """Stop the looks under way (the server is stopping)."""
        self._closing = True
        for job in list(self._jobs):
            job.cancel()
        if self._jobs:
            await asyncio.wait(list(self._jobs), timeout=5.0)
