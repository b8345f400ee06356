"""The agent gateway: one WebSocket session per connected node, and the protocol only.

Agents dial out to the server and authenticate with their node token. The gateway checks the
token and the agent's hello, registers the session (both through its `SessionRecords`), and
hands every other message to the handler registered for its type (`handle_messages`): the
dispatcher sends commands through the session, the handlers store what agents report.
Malformed or unknown messages are answered with an error and never end the session.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from bollard.domain.inventory import Inventory
from bollard.domain.protocol import ErrorMsg, Hello, Welcome, agent_message
from bollard.domain.states import NodeHealth
from bollard.server.clock import Clock, Deadline

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 10.0
CLOSE_UNAUTHORIZED = 4401
CLOSE_PROTOCOL = 4400
CLOSE_SUPERSEDED = 4409

M = TypeVar("M", bound=BaseModel)


class AgentConnection:
    """The server's side of one agent's WebSocket session (a `ports.AgentLink`).

    Besides the socket it carries what the session's handlers keep for its lifetime: what
    the node's record said before it (set when the session is registered), whether its first
    full report came, and the host's inventory as its reports built it.
    """

    def __init__(self, ws: WebSocket, node: str, incarnation: str, boot_id: str = "") -> None:
        self.ws = ws
        self.node = node
        self.incarnation = incarnation
        self.boot_id = boot_id
        self._send_lock = asyncio.Lock()
        self.closed = asyncio.Event()
        self.reported = False  # set by the first full report of the session
        # The host's inventory as this session's reports built it (None until a full one).
        self.inventory: Inventory | None = None
        self.prior_health: NodeHealth | None = None  # the node's health before this session
        self.prior_boot_id: str | None = None
        # When the message being handled arrived (the clock's monotonic seconds): messages
        # of one session are handled one at a time, in order.
        self.message_arrived = 0.0

    async def send(self, msg: BaseModel) -> None:
        """Send a message; ConnectionError if the session is gone (whatever the server layer
        raises for it), so callers handle one kind of failure."""
        async with self._send_lock:
            try:
                await self.ws.send_text(msg.model_dump_json())
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:
                raise ConnectionError(f"session of {self.node} is gone: {exc!r}") from exc

    async def close(self, code: int, reason: str) -> None:
        if self.ws.application_state == WebSocketState.CONNECTED:
            try:
                await self.ws.close(code=code, reason=reason)
            except (RuntimeError, OSError) as exc:
                log.debug("closing session of %s: %s", self.node, exc)
        self.closed.set()


class SessionRecords(Protocol):
    """What the gateway records of sessions (the database, in agent_records.py)."""

    async def node_for_token(self, token: str) -> str | None:
        """The node a token belongs to (None: no node)."""
        ...

    async def opened(self, connection: AgentConnection, hello: Hello) -> None:
        """Record the agent's session; set the connection's `prior_health` and
        `prior_boot_id` from the node's record before it."""
        ...

    async def closed(self, connection: AgentConnection) -> None:
        """Record that the session (still the node's own) has ended."""
        ...


# A handler of one type of agent message, for one session's messages, one at a time.
MessageHandler = Callable[[AgentConnection, M], Awaitable[None] | None]


class Gateway:
    """A `ports.SessionLookup`. Handlers are registered by the assembly:
    `handle_messages(Heartbeat, reports.on_heartbeat)`; `on_session_opened` and
    `on_session_lost` callbacks run after a session is registered and after it has ended."""

    def __init__(
        self,
        *,
        clock: Clock,
        records: SessionRecords,
        heartbeat_interval: float,
        hello_timeout: float = HELLO_TIMEOUT,
    ) -> None:
        self.clock = clock
        self.records = records
        self.heartbeat_interval = heartbeat_interval
        self.hello_timeout = hello_timeout
        self.sessions: dict[str, AgentConnection] = {}
        self._changed = asyncio.Event()  # replaced each time a node connects or goes
        self._handlers: dict[type[BaseModel], MessageHandler[Any]] = {}
        self.on_session_opened: list[Callable[[AgentConnection], None]] = []
        self.on_session_lost: list[Callable[[AgentConnection], Awaitable[None]]] = []

    def handle_messages(self, kind: type[M], handler: MessageHandler[M]) -> None:
        """Hand every message of type `kind` (e.g. Heartbeat) to `handler(connection, msg)`
        (a coroutine function, or a plain one)."""
        if kind is Hello:
            raise ValueError("hello messages are the gateway's own")
        if kind in self._handlers:
            raise ValueError(f"{kind.__name__} messages already have a handler")
        self._handlers[kind] = handler

    def session(self, node: str) -> AgentConnection | None:
        return self.sessions.get(node)

    def _touch(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_connected(self, nodes: set[str], timeout: float) -> bool:
        """True once every one of `nodes` has a session; False when `timeout` passes first."""
        deadline = Deadline.after(self.clock, timeout)
        while not all(n in self.sessions for n in nodes):
            if deadline.passed:
                return False
            await self.clock.wait_event(self._changed, deadline.remaining())
        return True

    async def handle(self, ws: WebSocket) -> None:
        await ws.accept()
        node = await self._authenticate(ws)
        if node is None:
            return
        hello = await self._receive_hello(ws, node)
        if hello is None:
            return
        session = AgentConnection(ws, node, hello.incarnation, hello.boot_id)
        old = self.sessions.get(node)
        if old is not None:
            log.info("node %s reconnected; closing its previous session", node)
            await old.close(CLOSE_SUPERSEDED, "superseded by a new session")
        self.sessions[node] = session
        try:  # from here on, however the session ends, it is unregistered (_end)
            await self.records.opened(session, hello)
            await session.send(
                Welcome(
                    heartbeat_interval=self.heartbeat_interval,
                    server_time=self.clock.now().timestamp(),
                )
            )
            log.info("node %s connected (incarnation %s)", node, hello.incarnation)
            self._touch()
            for callback in self.on_session_opened:
                callback(session)
            await self._serve(session)
        except ConnectionError as exc:
            log.info("node %s: session ended: %s", node, exc)
        finally:
            await self._end(session)

    async def _authenticate(self, ws: WebSocket) -> str | None:
        header = ws.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        node = await self.records.node_for_token(token) if token else None
        if node is None:
            log.warning("agent connection from %s refused: bad or missing token", ws.client)
            await ws.send_text(
                ErrorMsg(code="unauthorized", message="bad or missing node token").model_dump_json()
            )
            await ws.close(code=CLOSE_UNAUTHORIZED, reason="unauthorized")
        return node

    async def _receive_hello(self, ws: WebSocket, node: str) -> Hello | None:
        try:
            raw = await self.clock.wait_for(ws.receive_text(), self.hello_timeout)
            msg = agent_message.validate_json(raw)
        except (TimeoutError, ValidationError, WebSocketDisconnect, KeyError) as exc:
            log.warning("node %s: no valid hello (%s)", node, type(exc).__name__)
            await self._refuse(ws, "protocol", "the first message must be a valid hello")
            return None
        if not isinstance(msg, Hello):
            await self._refuse(ws, "protocol", "the first message must be a hello")
            return None
        if msg.node != node:
            await self._refuse(ws, "unauthorized", f"this token belongs to node {node!r}")
            return None
        return msg

    async def _refuse(self, ws: WebSocket, code: str, message: str) -> None:
        if ws.application_state == WebSocketState.CONNECTED:
            await ws.send_text(ErrorMsg(code=code, message=message).model_dump_json())
            close = CLOSE_UNAUTHORIZED if code == "unauthorized" else CLOSE_PROTOCOL
            await ws.close(code=close, reason=code)

    async def _serve(self, session: AgentConnection) -> None:
        while True:
            try:
                raw = await session.ws.receive_text()
            except (WebSocketDisconnect, RuntimeError):
                return
            await self._on_message(session, raw)

    async def _on_message(self, session: AgentConnection, raw: str) -> None:
        session.message_arrived = self.clock.monotonic()
        try:
            msg = agent_message.validate_json(raw)
        except ValidationError as exc:
            kind = _message_type(raw)
            log.warning("node %s: malformed %s message: %s", session.node, kind, exc.errors()[:1])
            await session.send(ErrorMsg(code="malformed", message=f"malformed {kind} message"))
            return
        handler = self._handlers.get(type(msg))
        if handler is None:
            if isinstance(msg, Hello):
                await session.send(ErrorMsg(code="protocol", message="hello was already received"))
            else:
                log.warning("node %s: no handler for %s messages", session.node, msg.type)
                await session.send(
                    ErrorMsg(code="protocol", message=f"{msg.type} messages are not handled")
                )
            return
        result = handler(session, msg)
        if inspect.isawaitable(result):
            await result

    async def _end(self, session: AgentConnection) -> None:
        session.closed.set()
        if self.sessions.get(session.node) is not session:
            return  # superseded: the new session owns the node's record
        del self.sessions[session.node]
        self._touch()
        log.info("node %s disconnected", session.node)
        await self.records.closed(session)
        for callback in self.on_session_lost:
            await callback(session)

    async def close_all(self) -> None:
        for session in list(self.sessions.values()):
            await session.close(1001, "server shutting down")


def _message_type(raw: str) -> str:
    try:
        data = json.loads(raw)
    except ValueError:
        return "non-JSON"
    if isinstance(data, dict) and isinstance(data.get("type"), str):
        return repr(data["type"][:40])
    return "untyped"
