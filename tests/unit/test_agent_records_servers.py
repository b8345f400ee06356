"""Agents' session records with several servers (bollard.server.agent_records): a session a
server recorded late, or ended late, must not undo the session its agent opened on another
server meanwhile. Seen in the three-server chaos run: a restarted agent's hello reached a
server cut from the database; the agent gave up after its 10 s and connected to another
server; when the database answered again, the first server recorded the session (same
incarnation), failed to welcome the agent, and marked the node disconnected: shown so for
good while its agent, connected to the other server, kept beating."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from bollard.domain.protocol import Capacity, Hello
from bollard.server.agent_records import AgentRecords
from bollard.server.auth import hash_token
from bollard.server.clock import SystemClock
from bollard.server.gateway import AgentConnection
from bollard.server.unit_of_work import DatabaseWork
from bollard.store import nodes
from bollard.store.db import Database
from tests.support.cluster_db import DEADLINE, FaultyWork
from tests.support.cluster_db import db as db  # the fixture (an explicit re-export)

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
RECORD_WITHIN = 0.5  # (the servers' is 10 s: an agent's wait for its welcome)
TOKEN = "token-node1"


def _hello(incarnation: str = "inc-2") -> Hello:
    return Hello(node="node1", incarnation=incarnation, boot_id="boot-1", driver="sim",
                 capacity=Capacity(vcpus=4, memory_mb=4096))  # fmt: skip


def _session(hello: Hello) -> AgentConnection:
    return AgentConnection(cast(Any, None), hello.node, hello.incarnation)  # (no socket used)


def _records(work: DatabaseWork, server: str) -> AgentRecords:
    return AgentRecords(
        work=work, clock=SystemClock(), server_id=lambda: server, record_within=RECORD_WITHIN
    )


def _holders(db: Database) -> dict[str, str]:
    with db.read() as conn:
        return nodes.session_holders(conn)


def _node(db: Database) -> None:
    with db.write() as conn:
        nodes.create(conn, "node1", hash_token(TOKEN), NOW)


async def _dial(records: AgentRecords, hello: Hello) -> None:
    """What the gateway asks of the records when an agent dials: its token, then its hello."""
    assert await records.node_for_token(TOKEN) == hello.node
    await records.opened(_session(hello), hello)


def test_a_session_recorded_too_late_is_refused_and_ends_nothing(db: Database) -> None:
    _node(db)

    async def main() -> None:
        cut = FaultyWork(db)  # server a: its database stops answering
        a, b = _records(cut, "server-a"), _records(DatabaseWork(db), "server-b")
        hello = _hello()
        cut.hang()  # while a looks its token up
        late = asyncio.create_task(_dial(a, hello))
        await _dial(b, hello)  # the agent gave up on a, and dialled b
        assert _holders(db) == {"node1": "server-b"}
        await asyncio.sleep(RECORD_WITHIN * 2)  # the cut lasts longer than the agent waits
        cut.answer()
        with pytest.raises(ConnectionError, match="given up"):
            async with asyncio.timeout(DEADLINE):
                await late
        await a.closed(_session(hello))  # the gateway ends the session it could not welcome

    asyncio.run(main())
    assert _holders(db) == {"node1": "server-b"}  # (it was {}: node1 shown disconnected)


def test_the_end_of_a_session_leaves_the_one_its_agent_opened_elsewhere(db: Database) -> None:
    _node(db)

    async def main() -> None:
        a, b = _records(DatabaseWork(db), "server-a"), _records(DatabaseWork(db), "server-b")
        hello = _hello()
        await _dial(a, hello)
        await _dial(b, hello)  # same agent process, on b now
        await a.closed(_session(hello))  # a learns late that its socket is gone

    asyncio.run(main())
    assert _holders(db) == {"node1": "server-b"}


def test_the_end_of_a_session_disconnects_its_node(db: Database) -> None:
    _node(db)

    async def main() -> None:
        a = _records(DatabaseWork(db), "server-a")
        hello = _hello()
        await _dial(a, hello)
        assert _holders(db) == {"node1": "server-a"}
        await a.closed(_session(hello))

    asyncio.run(main())
    assert _holders(db) == {}
