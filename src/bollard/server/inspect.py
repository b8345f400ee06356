"""Asking a host where a VM is (Inspect): read-only, answered from the host's live state.

With several servers the question may go through the peer holding the node's session, and
its answer come back from there (`on_relayed`; cluster/relay.py); an answer this server did
not ask for is handed to `unclaimed` (the relay sends it back to the peer that asked)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bollard.domain.errors import NotFound
from bollard.domain.ids import new_id
from bollard.domain.protocol import Inspect, InspectResult
from bollard.domain.states import NodeHealth
from bollard.server.clock import Clock
from bollard.server.ports import AgentLink, SessionLookup, UnitOfWork
from bollard.store import nodes

log = logging.getLogger(__name__)

INSPECT_TIMEOUT = 10.0


class Inspector:
    """A `ports.HostInspector`; `on_result` is the gateway's handler of `inspect_result`."""

    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        sessions: SessionLookup,
        unclaimed: Callable[[str, InspectResult], Awaitable[bool]] | None = None,
    ) -> None:
        self.work = work
        self.clock = clock
        self.sessions = sessions
        self.unclaimed = unclaimed
        # query id -> (the node asked, its answer to come)
        self._pending: dict[str, tuple[str, asyncio.Future[InspectResult]]] = {}

    async def inspect(
        self,
        node: str,
        vm_uuid: str,
        timeout: float = INSPECT_TIMEOUT,
        *,
        console_lines: int = 0,
        disks: bool = False,
    ) -> InspectResult | None:
        """The host's answer, or None when it is not connected or does not answer in time.
        A fenced node is powered off: it runs nothing, and that is the answer."""
        if await self.work.run(self._fenced, node):
            return InspectResult(query_id="fenced", vm_uuid=vm_uuid, vm=None, job_running=False)
        session = self.sessions.session(node)
        if session is None:
            return None
        qid = new_id()
        future: asyncio.Future[InspectResult] = asyncio.get_running_loop().create_future()
        self._pending[qid] = (node, future)
        try:
            query = Inspect(query_id=qid, vm_uuid=vm_uuid, console_lines=console_lines, disks=disks)
            await session.send(query)
            return await self.clock.wait_for(future, timeout)
        except (TimeoutError, RuntimeError, OSError) as exc:
            log.info("inspect of %s on %s: no answer (%s)", vm_uuid, node, type(exc).__name__)
            return None
        finally:
            self._pending.pop(qid, None)

    def _fenced(self, node: str) -> bool:
        with self.work.read() as conn:
            try:
                return nodes.get(conn, node).health is NodeHealth.FENCED
            except NotFound:
                return False

    async def on_result(self, link: AgentLink, msg: InspectResult) -> None:
        if msg.query_id not in self._pending and self.unclaimed is not None:
            await self.unclaimed(link.node, msg)
            return
        self.on_relayed(link.node, msg)

    def on_relayed(self, node: str, msg: InspectResult) -> None:
        """`node`'s answer (through this server's session of it, or a peer's)."""
        asked, future = self._pending.get(msg.query_id, ("", None))
        if future is not None and asked != node:
            log.warning("node %s answered an inspect sent to %s: ignored", node, asked)
        elif future is not None and not future.done():
            future.set_result(msg)
