"""The agent gateway: one WebSocket session per connected node, and the protocol only.

Agents dial out to the server and authenticate with their node token. The gateway checks the
token and the agent's hello, registers the session (both through its `SessionRecords`), and
hands every other message to the handler registered for its type (`handle_messages`): the
dispatcher sends commands through the session, the handlers store what agents report.

Malformed or unknown messages are answered with an error and never end the session: binary
frames, frames over `MAX_AGENT_MESSAGE`, JSON that is not a valid message (the models of
bollard.domain.protocol bound every value). Each is logged once, truncated, and rate-limited
per node. A hello whose protocol version this server does not speak is refused, naming both.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, cast

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from bollard.domain.inventory import Inventory
from bollard.domain.protocol import (
    MAX_AGENT_MESSAGE,
    PROTOCOL_VERSION,
    AgentMessageT,
    ErrorMsg,
    Hello,
    Welcome,
    agent_message,
    offered_protocols,
)
from bollard.domain.states import NodeHealth
from bollard.server.clock import Clock, Deadline, LogBudget

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 10.0
CLOSE_UNAUTHORIZED = 4401
CLOSE_PROTOCOL = 4400
CLOSE_SUPERSEDED = 4409
# The agent protocol versions this server speaks (an agent's hello names its own).
SUPPORTED_PROTOCOLS = frozenset({PROTOCOL_VERSION})
PREVIEW = 200  # characters of a refused frame that are logged

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
        self.protocol = PROTOCOL_VERSION  # as negotiated in the hello and welcome
        self._send_lock = asyncio.Lock()
        self._held = False  # the lock is the gateway's until the welcome is sent (hold)
        self.closed = asyncio.Event()
        self.reported = False  # set by the first full report of the session
        # The host's inventory as this session's reports built it (None until a full one).
        self.inventory: Inventory | None = None
        self.prior_health: NodeHealth | None = None  # the node's health before this session
        self.prior_boot_id: str | None = None
        # The clean shutdown its hello said is under way (a reconnect while the agent waits
        # for host_shutdown_ready), or None.
        self.shutting_down: str | None = None
        # When the message being handled arrived (the clock's monotonic seconds): messages
        # of one session are handled one at a time, in order.
        self.message_arrived = 0.0

    async def send(self, msg: BaseModel) -> None:
        """Send a message; ConnectionError if the session is gone (whatever the server layer
        raises for it), so callers handle one kind of failure. Until the gateway has sent the
        session's welcome, a send waits for it (``hold``)."""
        async with self._send_lock:
            await self._send_text(msg)

    async def _send_text(self, msg: BaseModel) -> None:
        try:
            await self.ws.send_text(msg.model_dump_json())
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise ConnectionError(f"session of {self.node} is gone: {exc!r}") from exc

    async def hold(self) -> None:
        """Before the session is registered: nothing else is sent on it until ``welcome``
        (or ``release``). An agent takes any other first message for a refusal and drops the
        session, so a command sent while the session is being recorded would cost a
        reconnection."""
        await self._send_lock.acquire()
        self._held = True

    async def welcome(self, msg: Welcome) -> None:
        """Send the welcome first and let the held sends go."""
        assert self._held, "welcome() without hold()"
        try:
            await self._send_text(msg)
        finally:
            self.release()

    def release(self) -> None:
        """Let the held sends go (after the welcome, or without one: the session failed
        before it); once only."""
        if self._held:
            self._held = False
            self._send_lock.release()

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
        servers: Callable[[], Awaitable[list[str]]] | None = None,
    ) -> None:
        self.clock = clock
        # The live servers' URLs, for the welcome (an agent dials them when it loses this one).
        self.servers = servers
        self.records = records
        self.heartbeat_interval = heartbeat_interval
        self.hello_timeout = hello_timeout
        self.sessions: dict[str, AgentConnection] = {}
        self._changed = asyncio.Event()  # replaced each time a node connects or goes
        self._handlers: dict[type[BaseModel], MessageHandler[Any]] = {}
        self.on_session_opened: list[Callable[[AgentConnection], None]] = []
        self.on_session_lost: list[Callable[[AgentConnection], Awaitable[None]]] = []
        self._refusals = LogBudget(clock)  # log lines about refused frames, per node

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
        session.protocol = max(offered_protocols(hello) & SUPPORTED_PROTOCOLS)
        session.shutting_down = hello.shutting_down
        await session.hold()  # its welcome is the first message it gets, whoever sends
        old = self.sessions.get(node)
        if old is not None:
            log.info("node %s reconnected; closing its previous session", node)
            await old.close(CLOSE_SUPERSEDED, "superseded by a new session")
        self.sessions[node] = session
        try:  # from here on, however the session ends, it is unregistered (_end)
            try:
                await self.records.opened(session, hello)
                await session.welcome(
                    Welcome(
                        heartbeat_interval=self.heartbeat_interval,
                        server_time=self.clock.now().timestamp(),
                        servers=[] if self.servers is None else await self.servers(),
                        protocol=session.protocol,
                    )
                )
            finally:
                session.release()
            log.info(
                "node %s connected (incarnation %s, protocol %d)",
                node, hello.incarnation, session.protocol,
            )  # fmt: skip
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
            frame = await self.clock.wait_for(_next_frame(ws), self.hello_timeout)
        except (TimeoutError, WebSocketDisconnect, RuntimeError) as exc:
            log.warning("node %s: no hello (%s)", node, type(exc).__name__)
            await self._refuse(ws, "protocol", "the first message must be a hello")
            return None
        if frame is None:
            return None
        msg = _parse(frame)
        if isinstance(msg, _Refused):
            self._log_refused(node, msg, frame)
            await self._refuse(
                ws,
                msg.code,
                f"the first message must be a valid hello: {msg.kind} refused: {msg.problem}",
            )
            return None
        if not isinstance(msg, Hello):
            await self._refuse(ws, "protocol", "the first message must be a hello")
            return None
        if msg.node != node:
            await self._refuse(ws, "unauthorized", f"this token belongs to node {node!r}")
            return None
        if not offered_protocols(msg) & SUPPORTED_PROTOCOLS:
            speaks = " or ".join(str(v) for v in sorted(SUPPORTED_PROTOCOLS))
            offers = " or ".join(str(v) for v in sorted(offered_protocols(msg)))
            message = (
                f"agent protocol {offers} is not supported: this server speaks agent "
                f"protocol {speaks} (upgrade the agent or the server so that they match)"
            )
            if self._refusals.take(node) is not None:  # an old agent retries for ever
                log.warning("node %s refused: %s", node, message)
            await self._refuse(ws, "protocol-version", message)
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
                frame = await _next_frame(session.ws)
            except (WebSocketDisconnect, RuntimeError):
                return
            if frame is None:
                return
            await self._on_message(session, frame)

    async def _on_message(self, session: AgentConnection, frame: str | bytes) -> None:
        session.message_arrived = self.clock.monotonic()
        msg = _parse(frame)
        if isinstance(msg, _Refused):
            self._log_refused(session.node, msg, frame)
            await session.send(
                ErrorMsg(code=msg.code, message=f"{msg.kind} refused: {msg.problem}")
            )
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

    def _log_refused(self, node: str, refused: _Refused, frame: str | bytes) -> None:
        """One line for a refused frame: what was wrong and how it began (rate-limited)."""
        held = self._refusals.take(node)
        if held is None:
            return
        more = f" ({held} more refused since the last line)" if held else ""
        log.warning(
            "node %s: %s refused: %s; it began %r%s",
            node, refused.kind, refused.problem[:PREVIEW], frame[:PREVIEW], more,
        )  # fmt: skip

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


async def _next_frame(ws: WebSocket) -> str | bytes | None:
    """The next frame: its text, or its bytes for a binary frame; None once the peer went."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        return None
    text = message.get("text")
    if text is not None:
        return cast(str, text)
    return cast(bytes, message.get("bytes") or b"")


class _Refused:
    """A frame that holds no valid message: what it claims to be, and what is wrong."""

    def __init__(self, kind: str, problem: str, code: str = "malformed") -> None:
        self.kind = kind  # e.g. "heartbeat message", "binary frame"
        self.problem = problem  # one line, for people
        self.code = code  # of the error reply


def _parse(frame: str | bytes) -> AgentMessageT | _Refused:
    """The message a frame holds, or why it holds none."""
    if isinstance(frame, bytes):
        return _Refused("binary frame", "only JSON text frames are accepted (one message in each)")
    if len(frame) > MAX_AGENT_MESSAGE:
        return _Refused(
            "message",
            f"{len(frame)} characters, over the limit of {MAX_AGENT_MESSAGE} bytes a message",
            "too-big",
        )
    try:
        return agent_message.validate_json(frame)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    tag = first["loc"][0] if first["loc"] else None
    known = isinstance(tag, str) and first["type"] != "union_tag_invalid"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return _Refused(f"{tag} message" if known else "message", _describe(first) + more)


_PHRASES = {
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be greater than {gt}",
    "string_too_long": "is longer than {max_length} characters",
    "too_long": "has more than {max_length} items",
    "finite_number": "must be a finite number",
    "missing": "is missing",
    "union_tag_invalid": "unknown message type {tag!r}",
    "union_tag_not_found": "the message has no type",
    "model_attributes_type": "must be a JSON object",
    "model_type": "must be a JSON object",
}


def _describe(error: ErrorDetails) -> str:
    """A validation error in words: where (``vms[3].vcpus``) and what is wrong."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "json_invalid":
        return f"not valid JSON ({str(ctx.get('error', 'unreadable'))[:PREVIEW]})"
    if kind in _PHRASES:
        try:
            what = _PHRASES[kind].format(**{k: str(v)[:40] for k, v in ctx.items()})
        except KeyError:
            what = error["msg"]
    elif kind == "value_error":
        what = str(ctx.get("error", error["msg"]))
    else:
        what = error["msg"].replace("Input should be", "must be")
    where = ""
    for part in error["loc"][1:]:  # the first is the message type (the union's tag)
        where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
    return f"{where} {what}" if where else what
