"""A server with peers waiting for a command (a task resumed after a takeover): it reads the
row again now and then, since a peer that stored the outcome announces it on the bus and an
announcement missed (the waiting server's bus reconnecting, or the outcome handed to a caller
on the holder whose task was taken over since) cost the whole deadline. Seen in the
three-server chaos run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from bollard.domain.commands import CommandState
from bollard.server.clock import SystemClock
from bollard.server.dispatch import Dispatcher
from bollard.server.unit_of_work import DatabaseWork
from bollard.store import commands, nodes
from bollard.store.db import Database
from tests.support.cluster_db import DEADLINE
from tests.support.cluster_db import db as db  # the fixture (an explicit re-export)

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
TIMEOUT = 60.0  # the wait's deadline: far past DEADLINE, so only a re-read can end it in time


def _sent_command(db: Database, cid: str, *, sent: bool = True) -> None:
    with db.write() as conn:
        nodes.create(conn, "node1", "hash-node1", NOW)
        commands.create(conn, id=cid, node="node1", type="start", args={}, vm_uuid="u1",
                        epoch=1, task_id=None, deadline=datetime.now(UTC) + timedelta(minutes=5),
                        now=NOW)  # fmt: skip
        if sent:
            assert commands.transition(conn, cid, CommandState.SENT, NOW)


def _state(db: Database, cid: str) -> str:
    with db.read() as conn:
        return commands.get(conn, cid).state


def _completed_by_a_peer(db: Database, cid: str) -> None:
    """What the holder of the node's session stores on the answer (its announcement lost)."""
    answer = {"ok": True, "result": {"power": "running"}, "error": None}
    now = datetime.now(UTC)
    with db.write() as conn:
        done = CommandState.COMPLETED
        assert commands.transition(
            conn, cid, done, now, note="via answer", answer=answer, agent_state="COMPLETED"
        )


def _dispatcher(db: Database, waiting: asyncio.Event) -> Dispatcher:
    return Dispatcher(
        work=DatabaseWork(db),
        clock=SystemClock(),
        sessions=cast(Any, None),  # attach sends nothing
        report_writes=cast(Any, None),
        # attach kicks the reconciler once it has read the command still open, then waits
        kick_commands=lambda node=None: waiting.set(),
        on_late_outcome=lambda cid, outcome: None,
        command_timeout=TIMEOUT,
        on_unawaited=lambda cid: None,  # the server has peers
    )


def test_a_wait_finds_an_outcome_a_peer_stored_without_its_announcement(db: Database) -> None:
    _sent_command(db, "c1")

    async def main() -> tuple[dict[str, Any], float]:
        waits = asyncio.Event()
        dispatcher = _dispatcher(db, waits)
        clock = SystemClock()
        started = clock.monotonic()
        waiting = asyncio.create_task(dispatcher.attach("c1"))
        async with asyncio.timeout(DEADLINE):
            await waits.wait()
        assert not waiting.done()
        await asyncio.to_thread(_completed_by_a_peer, db, "c1")
        async with asyncio.timeout(DEADLINE):
            result = await waiting
        return result, clock.monotonic() - started

    result, took = asyncio.run(main())
    assert result == {"power": "running"}
    assert took < DEADLINE  # (it ran to its 60 s deadline)
