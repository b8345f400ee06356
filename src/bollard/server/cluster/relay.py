"""The relay: a message for a node whose agent session another server holds goes through that
server (several servers on PostgreSQL).

Every server keeps a `SessionDirectory`: which live peer holds each node's session, read from
`nodes.server_id` (written when a session opens and closes) and kept fresh by announcements
on the bus channel `sessions`. `ClusterSessions` is the `ports.SessionLookup` of what sends
to agents (the dispatcher, the inspector, the task steps): the node's local session, or a
`RelayLink` to the peer holding it, whose `send` publishes the message on the channel `relay`
for that peer to hand to its session.

The bus carries wake-ups (bus.py): a command is stored before it is sent, so the relay
carries its id and the holder reads it from the database; what the holder learns of it (the
answer, stored there) is announced on `command_ended` for the waiting server to read. The
exceptions are read-only questions whose answers are not stored: an `Inspect` travels in the
envelope and its `InspectResult` comes back on `inspect_result` (a console tail too long for
one message is cut to its last lines). A message that is missed costs time, never
correctness: the dispatcher reads a command's row again at its deadline, and an inspect
unanswered in time counts as no answer, as for a local session.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from bollard.domain.commands import CommandState
from bollard.domain.protocol import (
    Command,
    Inspect,
    InspectResult,
    ServerMessageT,
    TunnelOpen,
    TunnelRefused,
    server_message,
)
from bollard.domain.states import CommandType
from bollard.server.clock import Clock, Deadline
from bollard.server.cluster.bus import MAX_PAYLOAD, Bus, BusClosed, BusUnavailable
from bollard.server.ports import AgentLink, UnitOfWork
from bollard.store import commands, nodes, servers

log = logging.getLogger(__name__)

RELAY = "relay"
SESSIONS = "sessions"
COMMAND_ENDED = "command_ended"
INSPECT_RESULT = "inspect_result"
TASK_ENDED = "task_ended"
TUNNEL_REFUSED = "tunnel_refused"
ORIGINS_KEPT = 10_000  # inspect query ids whose asker is remembered (the oldest go first)


class LocalSessions(Protocol):
    """What the relay needs of the gateway: this server's own sessions."""

    def session(self, node: str) -> AgentLink | None: ...

    async def wait_connected(self, nodes: set[str], timeout: float) -> bool: ...


class SessionDirectory:
    """Node -> the live peer holding its agent session (never this server: its own sessions
    are the gateway's). `changed` is replaced each time the directory changes."""

    def __init__(self, *, work: UnitOfWork, me: Callable[[], str]) -> None:
        self.work = work
        self.me = me
        self.holders: dict[str, str] = {}
        self.changed = asyncio.Event()

    def holder(self, node: str) -> str | None:
        return self.holders.get(node)

    async def refresh(self) -> None:
        """Read every session holder from the database (live peers only)."""
        self._set(await self.work.run(self._read))

    def announced(self, node: str, server: str | None) -> None:
        """A peer announced that `server` holds `node`'s session now (None: nobody)."""
        held = dict(self.holders)
        if server is None or server == self.me():
            held.pop(node, None)
        else:
            held[node] = server
        self._set(held)

    def _set(self, held: dict[str, str]) -> None:
        if held != self.holders:
            self.holders = held
            self.changed.set()
            self.changed = asyncio.Event()

    def _read(self) -> dict[str, str]:
        me = self.me()
        with self.work.read() as conn:
            live = {s.id for s in servers.live(conn, servers.db_now(conn))}
            return {
                node: server
                for node, server in nodes.session_holders(conn).items()
                if server in live and server != me
            }


class RelayLink:
    """A node's session as seen from a server that does not hold it (`ports.AgentLink`)."""

    def __init__(self, relay: Relay, node: str, server: str) -> None:
        self.relay = relay
        self._node = node
        self.server = server

    @property
    def node(self) -> str:
        return self._node

    async def send(self, msg: BaseModel) -> None:
        await self.relay.forward(self.server, self._node, msg)


class ClusterSessions:
    """A `ports.SessionLookup` over every server's sessions: this server's own first, else a
    `RelayLink` to the peer holding the node's session."""

    def __init__(self, local: LocalSessions, directory: SessionDirectory, relay: Relay) -> None:
        self.local = local
        self.directory = directory
        self.relay = relay

    @classmethod
    def of(cls, relay: Relay) -> ClusterSessions:
        return cls(relay.local, relay.directory, relay)

    def session(self, node: str) -> AgentLink | None:
        own = self.local.session(node)
        if own is not None:
            return own
        server = self.directory.holder(node)
        return None if server is None else RelayLink(self.relay, node, server)

    async def wait_connected(self, nodes: set[str], timeout: float) -> bool:
        """True once every one of `nodes` has a session on some server; False at the
        deadline."""
        deadline = Deadline.after(self.relay.clock, timeout)
        while True:
            missing = {n for n in nodes if self.session(n) is None}
            if not missing:
                return True
            if deadline.passed:
                return False
            # Woken by this server's own sessions or by the directory, whichever changes.
            changed = self.directory.changed
            local = asyncio.ensure_future(self.local.wait_connected(missing, deadline.remaining()))
            peer = asyncio.ensure_future(changed.wait())
            try:
                await asyncio.wait({local, peer}, timeout=deadline.remaining(),
                                   return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            finally:
                for waiter in (local, peer):
                    waiter.cancel()


class Relay:
    """The relay's channels on the bus, for this server (`me()`: its id now).

    `on_command_ended(cid)` is the dispatcher's: a peer stored the outcome of a command this
    server may be waiting for. `on_inspect_result(node, result)` is the inspector's.
    `on_task_ended(task_id)` is the task runner's. `interrupt(cid)`: a relayed command could
    not be handed to the node's session (moved SENT -> INTERRUPTED, for the command reconciler
    of the node's next holder)."""

    def __init__(
        self,
        *,
        bus: Bus,
        clock: Clock,
        work: UnitOfWork,
        me: Callable[[], str],
        local: LocalSessions,
        directory: SessionDirectory,
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.work = work
        self.me = me
        self.local = local
        self.directory = directory
        self.on_command_ended: Callable[[str], Awaitable[None] | None] = _ignore
        self.on_inspect_result: Callable[[str, InspectResult], None] = _ignore_result
        self.on_task_ended: Callable[[str], None] = _ignore
        self.on_tunnel_refused: Callable[[str, TunnelRefused], None] = _ignore_refusal
        self._origins: dict[str, str] = {}  # inspect query id -> the server that asked
        self._background: set[asyncio.Future[None]] = set()
        self.relayed = 0  # messages handed to this server's sessions for peers (tests)

    def subscribe(self) -> None:
        self.bus.subscribe(RELAY, self._on_relay)
        self.bus.subscribe(SESSIONS, self._on_sessions)
        self.bus.subscribe(COMMAND_ENDED, self._on_command_ended)
        self.bus.subscribe(INSPECT_RESULT, self._on_inspect_result)
        self.bus.subscribe(TASK_ENDED, self._on_task_ended)
        self.bus.subscribe(TUNNEL_REFUSED, self._on_tunnel_refused)
        self.bus.on_reconnect(self.directory.refresh)

    # -- sending ---------------------------------------------------------------------------

    def soon(self, announcement: Awaitable[None]) -> None:
        """Publish a wake-up in the background (nothing waits for it)."""
        job = asyncio.ensure_future(announcement)
        self._background.add(job)
        job.add_done_callback(self._background.discard)

    async def forward(self, server: str, node: str, msg: BaseModel) -> None:
        """Hand `msg` for `node` to the peer `server` (ConnectionError when it cannot go)."""
        envelope: dict[str, Any] = {"to": server, "from": self.me(), "node": node}
        if isinstance(msg, Command):
            envelope["command"] = msg.id  # stored: the peer reads it from the database
        else:
            envelope["msg"] = msg.model_dump(mode="json")
        await self._publish(RELAY, envelope, f"{msg.__class__.__name__} for {node}")

    async def announce_session(self, node: str, held: bool) -> None:
        """This server holds `node`'s session now (or no longer does)."""
        body = {"node": node, "server": self.me() if held else None}
        await self._publish(SESSIONS, body, f"the session of {node}", quiet=True)

    def command_ended_soon(self, cid: str) -> None:
        """The dispatcher's `on_unawaited`: a peer may be waiting for this outcome."""
        self.soon(self.command_ended(cid))

    def task_ended_soon(self, task_id: str) -> None:
        """The task runner's `on_ended`: a peer may be waiting for this task."""
        self.soon(self.task_ended(task_id))

    async def keep_directory(self, interval: float) -> None:
        """Read the session directory now and every `interval` s (announcements keep it
        fresh between reads); until cancelled."""
        while True:
            try:
                await self.directory.refresh()
            except SQLAlchemyError as exc:
                log.warning("cannot read the agents' sessions: %s", str(exc).splitlines()[0])
            await self.clock.sleep(interval)  # a periodic loop

    async def command_ended(self, cid: str) -> None:
        await self._publish(COMMAND_ENDED, {"id": cid}, f"the end of command {cid}", quiet=True)

    async def task_ended(self, task_id: str) -> None:
        await self._publish(TASK_ENDED, {"id": task_id}, f"the end of task {task_id}", quiet=True)

    async def inspect_answered(self, node: str, result: InspectResult) -> bool:
        """An inspect result this server's inspector did not ask for: back to the peer that
        did, if it came through here. Whether it was relayed."""
        asker = self._origins.pop(result.query_id, None)
        if asker is None:
            return False
        msg: dict[str, Any] = result.model_dump(mode="json")
        body = {"to": asker, "node": node, "msg": msg}
        while len(json.dumps(body).encode()) > MAX_PAYLOAD and msg.get("console"):
            console = str(msg["console"])
            msg["console"] = console[len(console) // 2 :]  # keep the latest half
        await self._publish(INSPECT_RESULT, body, f"an inspect result of {node}", quiet=True)
        return True

    async def tunnel_refused(self, node: str, refusal: TunnelRefused) -> bool:
        """A console tunnel this server did not ask for was refused: back to the peer that
        asked, if it came through here. Whether it was relayed."""
        asker = self._origins.pop(refusal.tunnel, None)
        if asker is None:
            return False
        body = {"to": asker, "node": node, "msg": refusal.model_dump(mode="json")}
        await self._publish(TUNNEL_REFUSED, body, f"a tunnel refusal of {node}", quiet=True)
        return True

    async def _publish(
        self, channel: str, body: dict[str, Any], what: str, *, quiet: bool = False
    ) -> None:
        try:
            await self.bus.publish(channel, json.dumps(body, separators=(",", ":")))
        except (BusClosed, BusUnavailable, ValueError) as exc:
            message = f"cannot relay {what}: {exc}"
            if quiet:  # a wake-up: missing it costs time (see the module docstring)
                log.warning("%s", message)
                return
            raise ConnectionError(message) from exc

    # -- receiving -------------------------------------------------------------------------

    async def _on_relay(self, payload: str) -> None:
        body = _parse(payload)
        if body is None or body.get("to") != self.me():
            return
        node = str(body.get("node"))
        session = self.local.session(node)
        cid = body.get("command")
        try:
            if isinstance(cid, str):
                msg: ServerMessageT | None = await self.work.run(self._command, cid)
                if msg is None:
                    return  # no longer SENT: answered, or settled meanwhile
            else:
                msg = server_message.validate_python(body.get("msg"))
        except ValidationError as exc:
            log.warning("relayed message for %s refused: %s", node, exc.errors()[:1])
            return
        if session is None:
            log.info("relayed %s for %s: its session is no longer here", msg.type, node)
            if isinstance(cid, str):
                await self.work.run(self._interrupt, cid, "the node's session moved")
            return
        if isinstance(msg, Inspect):
            self._remember(msg.query_id, str(body.get("from")))
        elif isinstance(msg, TunnelOpen):
            self._remember(msg.tunnel, str(body.get("from")))
        try:
            await session.send(msg)
            self.relayed += 1
        except (ConnectionError, RuntimeError, OSError) as exc:
            log.info("relayed %s for %s could not be sent: %s", msg.type, node, exc)
            if isinstance(cid, str):
                await self.work.run(self._interrupt, cid, f"relayed send failed: {exc}")

    def _on_sessions(self, payload: str) -> None:
        body = _parse(payload)
        if body is not None and isinstance(body.get("node"), str):
            server = body.get("server")
            self.directory.announced(body["node"], server if isinstance(server, str) else None)

    async def _on_command_ended(self, payload: str) -> None:
        body = _parse(payload)
        if body is not None and isinstance(body.get("id"), str):
            result = self.on_command_ended(body["id"])
            if result is not None:
                await result

    def _on_inspect_result(self, payload: str) -> None:
        body = _parse(payload)
        if body is None or body.get("to") != self.me():
            return
        try:
            result = InspectResult.model_validate(body.get("msg"))
        except ValidationError as exc:
            log.warning("relayed inspect result refused: %s", exc.errors()[:1])
            return
        self.on_inspect_result(str(body.get("node")), result)

    def _on_tunnel_refused(self, payload: str) -> None:
        body = _parse(payload)
        if body is None or body.get("to") != self.me():
            return
        try:
            refusal = TunnelRefused.model_validate(body.get("msg"))
        except ValidationError as exc:
            log.warning("relayed tunnel refusal refused: %s", exc.errors()[:1])
            return
        self.on_tunnel_refused(str(body.get("node")), refusal)

    def _on_task_ended(self, payload: str) -> None:
        body = _parse(payload)
        if body is not None and isinstance(body.get("id"), str):
            self.on_task_ended(body["id"])

    def _remember(self, query_id: str, asker: str) -> None:
        self._origins[query_id] = asker
        while len(self._origins) > ORIGINS_KEPT:
            self._origins.pop(next(iter(self._origins)))

    # -- blocking database work -------------------------------------------------------------

    def _command(self, cid: str) -> Command | None:
        """The relayed command as it was stored, if it still waits for its agent (SENT)."""
        with self.work.read() as conn:
            record = commands.get(conn, cid)
        if record.state != CommandState.SENT.value:
            return None
        remaining = 0.0
        if record.deadline is not None:
            remaining = (record.deadline - self.clock.now()).total_seconds()
        return Command(
            id=record.id,
            command=CommandType(record.type),
            args=record.args,
            vm_uuid=record.vm_uuid,
            epoch=record.epoch,
            timeout=max(1.0, remaining),
        )

    def _interrupt(self, cid: str, why: str) -> None:
        with self.work.write() as conn:
            commands.transition(
                conn, cid, CommandState.INTERRUPTED, self.clock.now(), note=why,
                expect=CommandState.SENT,
            )  # fmt: skip


def _parse(payload: str) -> dict[str, Any] | None:
    try:
        body = json.loads(payload)
    except json.JSONDecodeError:
        log.warning("relay: a payload that is not JSON was dropped: %r", payload[:80])
        return None
    return body if isinstance(body, dict) else None


def _ignore(_: str) -> None:
    return None


def _ignore_result(_: str, __: InspectResult) -> None:
    return None


def _ignore_refusal(_: str, __: TunnelRefused) -> None:
    return None
