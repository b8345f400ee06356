"""The relay (bollard.server.cluster.relay) on real databases: two Relay instances on one
in-process bus stand for two servers; fake sessions stand for their agents."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import update

from bollard.domain.commands import CommandState
from bollard.domain.protocol import Cancel, Command, Inspect, InspectResult
from bollard.server.clock import SystemClock
from bollard.server.cluster.bus import MAX_PAYLOAD, LocalBus
from bollard.server.cluster.relay import (
    ClusterSessions,
    Relay,
    RelayLink,
    SessionDirectory,
)
from bollard.server.unit_of_work import DatabaseWork
from bollard.store import commands, nodes, servers
from bollard.store.db import Database
from bollard.store.tables import nodes as nodes_table
from tests.support.cluster_db import DEADLINE, until
from tests.support.cluster_db import db as db  # the fixture (an explicit re-export)

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


class FakeLink:
    def __init__(self, node: str) -> None:
        self.node = node
        self.sent: list[BaseModel] = []
        self.broken = False

    async def send(self, msg: BaseModel) -> None:
        if self.broken:
            raise ConnectionError("session gone")
        self.sent.append(msg)


class FakeSessions:
    def __init__(self) -> None:
        self.links: dict[str, FakeLink] = {}

    def session(self, node: str) -> FakeLink | None:
        return self.links.get(node)

    async def wait_connected(self, nodes: set[str], timeout: float) -> bool:
        await asyncio.sleep(timeout)  # (this server never gets them: the peers' matter)
        return all(n in self.links for n in nodes)


class Server:
    def __init__(self, db: Database, bus: LocalBus, id: str) -> None:
        self.id = id
        work = DatabaseWork(db)
        self.local = FakeSessions()
        self.directory = SessionDirectory(work=work, me=lambda: id)
        self.relay = Relay(bus=bus, clock=SystemClock(), work=work, me=lambda: id,
                           local=self.local, directory=self.directory)  # fmt: skip
        self.relay.subscribe()
        self.sessions = ClusterSessions.of(self.relay)
        self.ended: list[str] = []
        self.results: list[tuple[str, InspectResult]] = []
        self.relay.on_command_ended = self.ended.append
        self.relay.on_inspect_result = lambda node, r: self.results.append((node, r))


def setup(db: Database) -> None:
    with db.write() as conn:
        now = servers.db_now(conn)
        for sid in ("server-a", "server-b"):
            servers.register(conn, id=sid, name=sid, url=f"http://{sid}", version="0",
                             protocols=[1], schema_revision="", pid=1, now=now, ttl=60)  # fmt: skip
        for name in ("node1", "node2"):
            nodes.create(conn, name, f"hash-{name}", NOW)
        conn.execute(update(nodes_table).where(nodes_table.c.name == "node1")
                     .values(connected=True, server_id="server-b"))  # fmt: skip
        conn.execute(update(nodes_table).where(nodes_table.c.name == "node2")
                     .values(connected=True, server_id="server-gone"))  # fmt: skip


def command(db: Database, cid: str, state: CommandState = CommandState.SENT) -> None:
    with db.write() as conn:
        commands.create(conn, id=cid, node="node1", type="start", args={"x": 1}, vm_uuid="u1",
                        epoch=3, task_id=None, deadline=datetime.now(UTC) + timedelta(seconds=30),
                        now=NOW)  # fmt: skip
        if state is not CommandState.CREATED:
            assert commands.transition(conn, cid, state, NOW)


def state_of(db: Database, cid: str) -> str:
    with db.read() as conn:
        return commands.get(conn, cid).state


def run(db: Database, body: Any) -> None:
    async def main() -> None:
        bus = LocalBus(SystemClock())
        a, b = Server(db, bus, "server-a"), Server(db, bus, "server-b")
        await bus.start()
        try:
            await body(a, b)
        finally:
            await bus.close()

    setup(db)
    asyncio.run(main())


def test_the_directory_holds_live_peers_only_and_follows_announcements(db: Database) -> None:
    async def body(a: Server, b: Server) -> None:
        await a.directory.refresh()
        # node1: b's (live); node2: a server that is not registered, so not live.
        assert a.directory.holders == {"node1": "server-b"}
        await b.directory.refresh()
        assert b.directory.holders == {}  # its own sessions are its gateway's
        link = a.sessions.session("node1")
        assert isinstance(link, RelayLink) and link.server == "server-b"
        assert a.sessions.session("node2") is None
        a.local.links["node2"] = FakeLink("node2")
        assert a.sessions.session("node2") is a.local.links["node2"]  # its own first

        changed = a.directory.changed
        await b.relay.announce_session("node1", held=False)
        await until(lambda: "node1" not in a.directory.holders, "the announcement")
        assert changed.is_set()
        waiting = asyncio.create_task(a.sessions.wait_connected({"node1"}, DEADLINE))
        await b.relay.announce_session("node1", held=True)
        assert await asyncio.wait_for(waiting, DEADLINE) is True

    run(db, body)


def test_a_command_goes_through_the_holder_as_it_was_stored(db: Database) -> None:
    async def body(a: Server, b: Server) -> None:
        await a.directory.refresh()
        b.local.links["node1"] = FakeLink("node1")
        command(db, "c1")
        link = a.sessions.session("node1")
        assert link is not None
        await link.send(Command(id="c1", command="start", args={"x": 1}, timeout=30))
        await until(lambda: b.local.links["node1"].sent, "b to hand it to its session")
        (sent,) = b.local.links["node1"].sent
        assert isinstance(sent, Command)
        assert (sent.id, sent.command.value, sent.args, sent.vm_uuid, sent.epoch) == (
            "c1", "start", {"x": 1}, "u1", 3,
        )  # fmt: skip
        assert 1.0 <= sent.timeout <= 30
        assert b.relay.relayed == 1 and a.relay.relayed == 0

        # A command that is no longer SENT (answered meanwhile) is not sent again.
        command(db, "c2", CommandState.CREATED)
        await link.send(Command(id="c2", command="start", timeout=30))
        await link.send(Cancel(command_id="c1"))  # (delivered in order, after c2's turn)
        await until(lambda: len(b.local.links["node1"].sent) == 2, "the cancel")
        assert isinstance(b.local.links["node1"].sent[1], Cancel)

        # The holder lost the session meanwhile: the command is INTERRUPTED, for the
        # command reconciler of the node's next server.
        command(db, "c3")
        del b.local.links["node1"]
        await link.send(Command(id="c3", command="start", timeout=30))
        await until(lambda: state_of(db, "c3") == "INTERRUPTED", "c3 interrupted")

        # Announced ends reach every server's handler.
        await b.relay.command_ended("c1")
        await until(lambda: a.ended == ["c1"], "the end announced")

    run(db, body)


def test_an_inspect_and_its_answer_go_both_ways(db: Database) -> None:
    async def body(a: Server, b: Server) -> None:
        await a.directory.refresh()
        b.local.links["node1"] = FakeLink("node1")
        link = a.sessions.session("node1")
        assert link is not None
        await link.send(Inspect(query_id="q1", vm_uuid="u1", console_lines=5))
        await until(lambda: b.local.links["node1"].sent, "the inspect at b")
        # b's inspector did not ask: it hands the answer to the relay, back to a.
        answer = InspectResult(query_id="q1", vm_uuid="u1", console="x" * (3 * MAX_PAYLOAD))
        assert await b.relay.inspect_answered("node1", answer) is True
        await until(lambda: a.results, "the answer at a")
        ((node, result),) = a.results
        assert (node, result.query_id) == ("node1", "q1")
        assert result.console and set(result.console) == {"x"}  # its latest part, cut to fit
        assert len(json.dumps(result.model_dump(mode="json"))) < MAX_PAYLOAD
        assert b.results == []  # addressed to a only
        # An answer to a question nobody relayed is not b's to send anywhere.
        other = InspectResult(query_id="q-unknown", vm_uuid="u1")
        assert await b.relay.inspect_answered("node1", other) is False

    run(db, body)


def test_a_reaped_peers_sessions_end_and_its_commands_are_interrupted(db: Database) -> None:
    """The leader's reaper (Membership.reap): a peer whose row expired is gone; the nodes it
    held are disconnected and their commands in flight INTERRUPTED."""
    from bollard.server.cluster.membership import Membership

    setup(db)
    command(db, "c1")
    with db.write() as conn:
        conn.execute(update(servers.servers).where(servers.servers.c.id == "server-b")
                     .values(expires_at=servers.db_now(conn) - timedelta(seconds=1)))  # fmt: skip

    async def main() -> list[str]:
        me = Membership(work=DatabaseWork(db), clock=SystemClock(), name="a", url="http://a",
                        schema_revision="", ttl=60, single=False)  # fmt: skip
        me.id = "server-a"
        return [peer.id for peer in await me.reap()]

    assert asyncio.run(main()) == ["server-b"]
    with db.read() as conn:
        node1 = nodes.get(conn, "node1")
        assert (node1.connected, nodes.session_holders(conn).get("node1")) == (False, None)
        history = commands.get(conn, "c1", with_history=True).history
    assert state_of(db, "c1") == "INTERRUPTED"
    assert history[-1].note is not None and "server server-b was found gone" in history[-1].note


def test_a_rejoined_server_records_its_sessions_again_unless_another_took_them(
    db: Database,
) -> None:
    """(nodes.reclaim_session) After the leader's reaper ended a server's sessions under its
    old id, the server, joined again under a new id, records those it still holds: not a
    node another server holds now, nor one whose agent is another incarnation."""
    setup(db)
    with db.write() as conn:
        for name, server, incarnation in (
            ("node1", None, "inc-1"),  # reaped: no server
            ("node2", "server-c", "inc-2"),  # taken by another server since
        ):
            conn.execute(update(nodes_table).where(nodes_table.c.name == name).values(
                connected=server is not None, server_id=server, agent_incarnation=incarnation
            ))  # fmt: skip
        assert nodes.reclaim_session(conn, "node1", "inc-1", "server-a", "server-a2", NOW)
        assert not nodes.reclaim_session(conn, "node2", "inc-2", "server-a", "server-a2", NOW)
        assert not nodes.reclaim_session(conn, "node1", "inc-9", "server-a2", "server-a3", NOW)
        holders = nodes.session_holders(conn)
    assert holders == {"node1": "server-a2", "node2": "server-c"}
