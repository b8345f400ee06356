"""The agent gateway: one WebSocket session per connected node.

Agents dial out to the server and authenticate with their node token. The session handles
the agent's hello, heartbeats (VM states), answers and progress; the dispatcher sends commands
through it. Malformed or unknown messages are answered with an error and never end the session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection, select
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from bollard.domain.inventory import Delta, Inventory
from bollard.domain.protocol import (
    Ack,
    Answer,
    ErrorMsg,
    Heartbeat,
    Hello,
    InspectResult,
    Progress,
    QueryResult,
    Resync,
    Welcome,
    agent_message,
)
from bollard.domain.states import NodeHealth
from bollard.server.auth import hash_token
from bollard.store import events, host_vms, nodes, vms
from bollard.store.tables import nodes as nodes_table

if TYPE_CHECKING:
    from bollard.server.runtime import Runtime

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 10.0
CLOSE_UNAUTHORIZED = 4401
CLOSE_PROTOCOL = 4400
CLOSE_SUPERSEDED = 4409


@dataclass(frozen=True)
class ReportOutcome:
    accepted: bool = True  # False: older than a report already stored
    changed: bool = False  # the inventory changed (the state reconciler should look)
    resync: str | None = None  # ask the host for a full report, for this reason


class AgentSession:
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


class Gateway:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.sessions: dict[str, AgentSession] = {}
        self._changed = asyncio.Event()  # replaced each time a node connects or goes
        self.on_session_lost: list[Callable[[AgentSession], Awaitable[None]]] = []

    def session(self, node: str) -> AgentSession | None:
        return self.sessions.get(node)

    def _touch(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_connected(self, nodes: set[str], timeout: float) -> bool:
        """True once every one of `nodes` has a session; False when `timeout` passes first."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not all(n in self.sessions for n in nodes):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return all(n in self.sessions for n in nodes)
        return True

    async def handle(self, ws: WebSocket) -> None:
        await ws.accept()
        node = await self._authenticate(ws)
        if node is None:
            return
        hello = await self._receive_hello(ws, node)
        if hello is None:
            return
        session = AgentSession(ws, node, hello.incarnation, hello.boot_id)
        old = self.sessions.get(node)
        if old is not None:
            log.info("node %s reconnected; closing its previous session", node)
            await old.close(CLOSE_SUPERSEDED, "superseded by a new session")
        self.sessions[node] = session
        try:  # from here on, however the session ends, it is unregistered (_end)
            session.prior_health, session.prior_boot_id = await self.rt.db_call(
                self._register, hello
            )
            await session.send(
                Welcome(
                    heartbeat_interval=self.rt.config.heartbeat_interval,
                    server_time=self.rt.clock.now().timestamp(),
                )
            )
            log.info("node %s connected (incarnation %s)", node, hello.incarnation)
            self._touch()
            self.rt.reconciler.kick(node)
            await self._serve(session)
        except ConnectionError as exc:
            log.info("node %s: session ended: %s", node, exc)
        finally:
            await self._end(session)

    async def _authenticate(self, ws: WebSocket) -> str | None:
        header = ws.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        node = await self.rt.db_call(self._node_for_token, token) if token else None
        if node is None:
            log.warning("agent connection from %s refused: bad or missing token", ws.client)
            await ws.send_text(
                ErrorMsg(code="unauthorized", message="bad or missing node token").model_dump_json()
            )
            await ws.close(code=CLOSE_UNAUTHORIZED, reason="unauthorized")
        return node

    def _node_for_token(self, token: str) -> str | None:
        with self.rt.db.read() as conn:
            value = conn.execute(
                select(nodes_table.c.name).where(nodes_table.c.token_hash == hash_token(token))
            ).scalar()
        return None if value is None else str(value)

    async def _receive_hello(self, ws: WebSocket, node: str) -> Hello | None:
        try:
            raw = await asyncio.wait_for(ws.receive_text(), HELLO_TIMEOUT)
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

    def _register(self, hello: Hello) -> tuple[NodeHealth, str | None]:
        """Record the agent's session; returns the node's health and boot id before it."""
        now = self.rt.clock.now()
        with self.rt.db.write() as conn:
            before = nodes.get(conn, hello.node)
            nodes.register_agent(
                conn,
                hello.node,
                incarnation=hello.incarnation,
                boot_id=hello.boot_id,
                driver=hello.driver,
                vcpus=hello.capacity.vcpus,
                memory_mb=hello.capacity.memory_mb,
                now=now,
                migration_endpoint=hello.migration_endpoint,
            )
            # Sequence numbers are ordered within one agent incarnation; a new incarnation
            # starts a new order (its session superseded the old one above).
            nodes.reset_sequence(conn, hello.node)
            vms.reset_sequence(conn, hello.node)
        return before.health, before.boot_id

    async def _serve(self, session: AgentSession) -> None:
        while True:
            try:
                raw = await session.ws.receive_text()
            except (WebSocketDisconnect, RuntimeError):
                return
            await self._on_message(session, raw)

    async def _on_message(self, session: AgentSession, raw: str) -> None:
        arrived = time.perf_counter()
        try:
            msg = agent_message.validate_json(raw)
        except ValidationError as exc:
            kind = _message_type(raw)
            log.warning("node %s: malformed %s message: %s", session.node, kind, exc.errors()[:1])
            await session.send(ErrorMsg(code="malformed", message=f"malformed {kind} message"))
            return
        if isinstance(msg, Heartbeat):
            outcome = await self._heartbeat(session, msg)
            self.rt.metrics.heartbeat_seconds.labels(_outcome(outcome)).observe(
                time.perf_counter() - arrived
            )
            if outcome.resync:
                await session.send(Resync(reason=outcome.resync))
            if outcome.accepted and msg.full and not session.reported:
                session.reported = True
                self.rt.rejoiner.first_report(session, msg)
            if outcome.changed:
                self.rt.state_reconciler.kick(session.node)
            if msg.journal:
                stored = await self.rt.dispatcher.on_journal(session.node, msg.journal)
                await session.send(Ack(entries=stored))
        elif isinstance(msg, Answer):
            await self.rt.dispatcher.on_answer(session.node, msg)
        elif isinstance(msg, QueryResult):
            self.rt.reconciler.on_query_result(session.node, msg)
        elif isinstance(msg, InspectResult):
            self.rt.inspector.on_result(session.node, msg)
        elif isinstance(msg, Progress):
            self.rt.dispatcher.on_progress(session.node, msg)
        else:
            await session.send(ErrorMsg(code="protocol", message="hello was already received"))

    async def _heartbeat(self, session: AgentSession, msg: Heartbeat) -> ReportOutcome:
        """Store a report; it shares its transaction with the other sessions' reports that
        arrive meanwhile (group commit), and is answered once that has committed."""
        try:
            return await self.rt.report_writes.run(
                lambda conn: self._store_report(conn, session, msg)
            )
        except BaseException:
            session.inventory = None  # memory may be ahead of the database: start over
            raise

    def _store_report(
        self, conn: Connection, session: AgentSession, msg: Heartbeat
    ) -> ReportOutcome:
        """Liveness, then the inventory: O(1) when the report changes nothing."""
        node, now = session.node, self.rt.clock.now()
        stored = nodes.record_heartbeat(
            conn, node, msg.seq, now, host_time=msg.sent_at, load=msg.load
        )
        if not stored:
            self._ignored(conn, node, msg)
            return ReportOutcome(accepted=False)
        if msg.full:
            session.inventory = Inventory(msg.vms)
            host_vms.replace_node(conn, node, msg.vms, msg.seq, now)
            nodes.set_inventory_incarnation(conn, node, session.incarnation)
            return ReportOutcome(changed=True)
        if session.inventory is None:
            return ReportOutcome(resync="no full report in this session yet")
        applied = session.inventory.apply(Delta(list(msg.vms), list(msg.gone)))
        if applied:
            host_vms.apply_delta(conn, node, applied.changed, applied.gone, msg.seq, now)
        if msg.digest is not None and msg.digest != session.inventory.digest:
            log.warning("node %s: inventory digest differs; asking for a full report", node)
            session.inventory = None
            nodes.set_inventory_incarnation(conn, node, None)
            return ReportOutcome(changed=bool(applied), resync="inventory digest differs")
        return ReportOutcome(changed=bool(applied))

    def _ignored(self, conn: Connection, node: str, msg: Heartbeat) -> None:
        known = nodes.get(conn, node)
        log.warning(
            "node %s: report %d is older than report %d already stored; ignored",
            node, msg.seq, known.last_seq,
        )  # fmt: skip
        events.add(
            conn,
            "node.report_ignored",
            f"report {msg.seq} from {node} (host time {msg.sent_at:.3f}) arrived after report "
            f"{known.last_seq} (host time {known.report_host_time or 0:.3f}); ignored",
            self.rt.clock.now(),
            node=node,
            data={
                "seq": msg.seq,
                "host_time": msg.sent_at,
                "stored_seq": known.last_seq,
                "stored_host_time": known.report_host_time,
            },
        )

    async def _end(self, session: AgentSession) -> None:
        session.closed.set()
        if self.sessions.get(session.node) is not session:
            return  # superseded: the new session owns the node's record
        del self.sessions[session.node]
        self._touch()
        log.info("node %s disconnected", session.node)
        await self.rt.db_call(self._unregister, session)
        for callback in self.on_session_lost:
            await callback(session)

    def _unregister(self, session: AgentSession) -> None:
        with self.rt.db.write() as conn:
            nodes.mark_disconnected(conn, session.node, session.incarnation, self.rt.clock.now())

    async def close_all(self) -> None:
        for session in list(self.sessions.values()):
            await session.close(1001, "server shutting down")


def _outcome(outcome: ReportOutcome) -> str:
    if not outcome.accepted:
        return "ignored"
    return "changed" if outcome.changed else "unchanged"


def _message_type(raw: str) -> str:
    try:
        data = json.loads(raw)
    except ValueError:
        return "non-JSON"
    if isinstance(data, dict) and isinstance(data.get("type"), str):
        return repr(data["type"][:40])
    return "untyped"
