"""Fence requests reach the leader's fencer from whichever server makes them.

The fencer runs on the leader only (cluster/singletons.py). Fast failover (health/
quick_fence.py) runs on the server that held the agent's session: when that server does not
lead, it declares the node dead in the database and asks the leader, over the bus channel
``fence_request``, to fence it now, instead of leaving it to the leader's health monitor at
its next look. The message only wakes the leader: its fencer takes the node by
compare-and-swap on its health, as for any request, so a request delivered twice, late, or to
a server that stopped leading fences nothing twice; a request lost (the bus down) leaves the
node to the monitor, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bollard.domain.errors import BollardError
from bollard.server.cluster.bus import Bus

log = logging.getLogger(__name__)

CHANNEL = "fence_request"
MAX_NODE_NAME = 63


class FenceRequests:
    """``request(node)``: the fencer's request on the leader, a message to it elsewhere."""

    def __init__(
        self,
        *,
        local: Callable[[str], None],
        leads: Callable[[], bool],
        bus: Bus | None,
    ) -> None:
        self.local = local
        self.leads = leads
        self.bus = bus
        self.sent = 0  # requests sent to the leader (for tests and logs)
        self._jobs: set[asyncio.Task[None]] = set()

    def subscribe(self) -> None:
        if self.bus is not None:
            self.bus.subscribe(CHANNEL, self._received)

    def request(self, node: str) -> None:
        if self.bus is None or self.leads():
            self.local(node)
            return
        self.sent += 1
        job = asyncio.get_running_loop().create_task(self._send(self.bus, node))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _send(self, bus: Bus, node: str) -> None:
        try:
            await bus.publish(CHANNEL, node)
        except BollardError as exc:  # the bus closed or unavailable
            log.warning("node %s: the fence request did not reach the leader (%s): its "
                        "health monitor fences it at its next look", node, exc.message)  # fmt: skip
            return
        log.info("node %s: fence asked of the leader", node)

    async def _received(self, payload: str) -> None:
        if not self.leads():
            return  # (every server hears it; the leader acts)
        if not payload or len(payload) > MAX_NODE_NAME or not payload.isprintable():
            log.warning("fence request for a bad node name %r ignored", payload[:80])
            return
        log.info("node %s: fence asked by another server", payload)
        self.local(payload)
