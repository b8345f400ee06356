"""Graphical consoles: single-use tickets, and the tunnels that carry a VM's VNC display from
the agent of its host to a browser (noVNC) or to `bollard vm vnc`.

A VM's VNC display listens on its host only. To reach it:

1. An operator asks for a ticket (`POST /api/v1/vms/{name}/console/vnc`): a random single-use
   value, valid `TICKET_TTL` seconds, bound to the VM, its node and the caller. Tickets live in
   this server's memory only; expired ones are pruned as new ones are issued or taken.
2. The browser opens the WebSocket `/console/vnc?ticket=...` (api/console_vnc.py). The ticket
   is its credential, consumed there; the route asks `tunnel(ticket)` for the agent's end.
3. `tunnel` sends `TunnelOpen` (a new random tunnel id, the VM) over the node's session and
   waits, at most `PAIR_TIMEOUT` seconds, for that agent to dial `AGENT_TUNNEL_PATH` with the
   id (`agent_endpoint`, authenticated by the node's token like its session, and only the
   node asked may), or to answer `TunnelRefused` with a reason (`on_refused`).
4. The route then pipes binary frames both ways (`pipe`); either side closing closes the
   other. An event `console.opened` names the VM, the node and who opened it.

Tunnel ids are single use: the first connection of the node asked takes it, any other is
refused. A tunnel lasts as long as its two sockets (their keepalive pings find dead peers).

Several servers: when another server holds the node's session, `TunnelOpen` goes through it
(cluster/relay.py) naming this server (`own_url`), which the agent dials; a refusal comes
back the same way (`on_refused_relayed`), and one for a tunnel this server did not ask for is
handed to `unclaimed` (the relay sends it to the server that did).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from bollard.domain.protocol import TunnelOpen, TunnelRefused
from bollard.server.clock import Clock
from bollard.server.ports import AgentLink, SessionLookup, Touch, UnitOfWork
from bollard.store import events

log = logging.getLogger(__name__)

TICKET_TTL = 30.0  # seconds a console ticket may wait for its first (and only) use
PAIR_TIMEOUT = 10.0  # seconds the agent has to dial a tunnel it was asked for
# WebSocket close codes (4000-4999 are the application's).
CLOSE_NORMAL = 1000
CLOSE_UNAUTHORIZED = 4401  # a bad, used or expired ticket; an agent with a bad node token
CLOSE_NO_TUNNEL = 4404  # an agent dialled a tunnel that does not wait for it
CLOSE_UNAVAILABLE = 4409  # the tunnel could not be opened (the reason says why)
MAX_REASON = 123  # bytes of a close reason (RFC 6455)

# The node a token belongs to (None: no node); the gateway's check of its sessions.
NodeForToken = Callable[[str], Awaitable[str | None]]


def close_reason(text: str) -> str:
    """`text` as a WebSocket close reason: one line of at most 123 bytes."""
    line = " ".join(text.split())
    return line.encode()[:MAX_REASON].decode("utf-8", "ignore")


async def close(ws: WebSocket, code: int, reason: str) -> None:
    """Close a socket that may be closed already (by either side)."""
    if ws.application_state is WebSocketState.DISCONNECTED:
        return
    if ws.client_state is WebSocketState.DISCONNECTED:
        return
    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
        await ws.close(code=code, reason=close_reason(reason))


@dataclass(frozen=True)
class Ticket:
    value: str  # the secret: never logged
    vm: str
    vm_uuid: str
    node: str
    actor: str  # who asked for it: the tunnel's event names them
    expires: float  # the clock's monotonic seconds
    expires_at: datetime


class ConsoleTickets:
    """Single-use console tickets, in memory (see the module docstring)."""

    def __init__(self, clock: Clock, ttl: float = TICKET_TTL) -> None:
        self.clock = clock
        self.ttl = ttl
        self._live: dict[str, Ticket] = {}

    def __len__(self) -> int:
        return len(self._live)

    def issue(self, *, vm: str, vm_uuid: str, node: str, actor: str) -> Ticket:
        self._prune()
        ticket = Ticket(
            value=secrets.token_urlsafe(32),
            vm=vm,
            vm_uuid=vm_uuid,
            node=node,
            actor=actor,
            expires=self.clock.monotonic() + self.ttl,
            expires_at=self.clock.now() + timedelta(seconds=self.ttl),
        )
        self._live[ticket.value] = ticket
        return ticket

    def take(self, value: str) -> Ticket | None:
        """The ticket, now used up; None if it is unknown, used or expired."""
        ticket = self._live.pop(value, None)
        self._prune()
        if ticket is None or self.clock.monotonic() >= ticket.expires:
            return None
        return ticket

    def _prune(self) -> None:
        now = self.clock.monotonic()
        for value in [v for v, t in self._live.items() if now >= t.expires]:
            del self._live[value]


class TunnelUnavailable(Exception):
    """The tunnel could not be opened; `reason` says why, in one line for people."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(eq=False)
class _Waiting:
    """A tunnel asked of a node's agent: its socket to come, and the end of the tunnel."""

    node: str
    agent: asyncio.Future[WebSocket]
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Consoles:
    """Tickets and tunnels (see the module docstring). `on_refused` is the gateway's handler
    of `tunnel_refused`; `agent_endpoint` serves `AGENT_TUNNEL_PATH`."""

    def __init__(
        self,
        *,
        clock: Clock,
        sessions: SessionLookup,
        work: UnitOfWork,
        touch: Touch,
        node_for_token: NodeForToken,
        ticket_ttl: float = TICKET_TTL,
        pair_timeout: float = PAIR_TIMEOUT,
        local: SessionLookup | None = None,
        own_url: str | None = None,
        unclaimed: Callable[[str, TunnelRefused], Awaitable[bool]] | None = None,
    ) -> None:
        """`sessions`: every node's (several servers: through the peers too); `local`: this
        server's own sessions (None: the same); `own_url`: the address agents dial this
        server at."""
        self.clock = clock
        self.sessions = sessions
        self.local = local or sessions
        self.own_url = own_url
        self.unclaimed = unclaimed
        self.work = work
        self.touch = touch
        self.node_for_token = node_for_token
        self.tickets = ConsoleTickets(clock, ticket_ttl)
        self.pair_timeout = pair_timeout
        self._waiting: dict[str, _Waiting] = {}

    def connected(self, node: str) -> bool:
        return self.sessions.session(node) is not None

    @asynccontextmanager
    async def tunnel(self, ticket: Ticket) -> AsyncIterator[WebSocket]:
        """The agent's end of a new tunnel to the ticket's VM, for the block; when the block
        ends, so does the tunnel. TunnelUnavailable when the node is not connected, its agent
        refuses, or does not dial within `pair_timeout` seconds."""
        node = ticket.node
        session = self.sessions.session(node)
        if session is None:
            raise TunnelUnavailable(f"node {node} is not connected")
        tunnel_id = secrets.token_urlsafe(24)
        waiting = _Waiting(node, asyncio.get_running_loop().create_future())
        self._waiting[tunnel_id] = waiting
        try:
            agent = await self._ask(session, tunnel_id, ticket, waiting)
            await self.work.run(self._record_opened, ticket)
            self.touch()
            log.info("console of VM %s on node %s opened by %s", ticket.vm, node, ticket.actor)
            yield agent
        finally:
            self._waiting.pop(tunnel_id, None)
            waiting.done.set()  # the agent's side returns, closing its socket
            if not waiting.agent.done():
                waiting.agent.cancel()

    async def _ask(
        self, session: AgentLink, tunnel_id: str, ticket: Ticket, waiting: _Waiting
    ) -> WebSocket:
        node = ticket.node
        try:
            elsewhere = self.local.session(node) is None  # (its session is a peer's)
            server = self.own_url if elsewhere else None
            await session.send(TunnelOpen(tunnel=tunnel_id, vm_uuid=ticket.vm_uuid, server=server))
        except ConnectionError:
            raise TunnelUnavailable(f"node {node} is not connected") from None
        try:
            return await self.clock.wait_for(asyncio.shield(waiting.agent), self.pair_timeout)
        except TimeoutError:
            raise TunnelUnavailable(
                f"the agent of node {node} did not open the tunnel within {self.pair_timeout:g} s"
            ) from None

    def _record_opened(self, ticket: Ticket) -> None:
        with self.work.write() as conn:
            events.add(
                conn,
                "console.opened",
                f"graphical console (VNC) of VM {ticket.vm} opened on node {ticket.node}",
                self.clock.now(),
                vm_uuid=ticket.vm_uuid,
                vm_name=ticket.vm,
                node=ticket.node,
                data={"kind": "vnc"},
                actor=ticket.actor,
            )

    async def on_refused(self, link: AgentLink, msg: TunnelRefused) -> None:
        unclaimed = msg.tunnel not in self._waiting and self.unclaimed is not None
        if unclaimed and self.unclaimed is not None and await self.unclaimed(link.node, msg):
            return  # (a peer asked for it)
        self.on_refused_relayed(link.node, msg)

    def on_refused_relayed(self, node: str, msg: TunnelRefused) -> None:
        """`node`'s agent refused a tunnel (through this server's session of it, or a
        peer's)."""
        waiting = self._waiting.get(msg.tunnel)
        if waiting is None or waiting.agent.done():
            log.info("node %s refused a tunnel that no longer waits: %s", node, msg.reason)
        elif waiting.node != node:
            log.warning("node %s refused a tunnel asked of node %s: ignored", node, waiting.node)
        else:
            waiting.agent.set_exception(TunnelUnavailable(msg.reason))

    async def agent_endpoint(self, ws: WebSocket, tunnel_id: str) -> None:
        """An agent dials the tunnel it was asked for: authenticated by its node's token, and
        taken only by that node, once; then held until the tunnel ends."""
        await ws.accept()
        header = ws.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        node = await self.node_for_token(token) if token else None
        if node is None:
            log.warning("tunnel connection from %s refused: bad or missing token", ws.client)
            await close(ws, CLOSE_UNAUTHORIZED, "bad or missing node token")
            return
        waiting = self._waiting.get(tunnel_id)
        if waiting is None or waiting.node != node or waiting.agent.done():
            log.warning("node %s dialled a tunnel that does not wait for it", node)
            await close(ws, CLOSE_NO_TUNNEL, "no such tunnel (each is used once)")
            return
        del self._waiting[tunnel_id]
        waiting.agent.set_result(ws)
        # The browser's side pipes this socket; it sets `done` however the tunnel ends.
        await waiting.done.wait()
        await close(ws, CLOSE_NORMAL, "the console was closed")


async def pipe(browser: WebSocket, agent: WebSocket) -> None:
    """Relay frames both ways (as binary frames) until either side closes, then close the
    other (with a reason saying which side ended)."""

    async def forward(source: WebSocket, target: WebSocket) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            while True:
                message = await source.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes")
                if data is None:
                    data = str(message.get("text") or "").encode()
                await target.send_bytes(data)

    to_agent = asyncio.create_task(forward(browser, agent), name="console-to-agent")
    to_browser = asyncio.create_task(forward(agent, browser), name="console-to-browser")
    try:
        done, _ = await asyncio.wait({to_agent, to_browser}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (to_agent, to_browser):
            task.cancel()
        await asyncio.gather(to_agent, to_browser, return_exceptions=True)
    if to_browser in done:
        await close(browser, CLOSE_NORMAL, "the VM's display closed the connection")
    await close(agent, CLOSE_NORMAL, "the console was closed")
