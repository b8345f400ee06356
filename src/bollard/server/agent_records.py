"""What the database holds of agents' sessions: the node a token belongs to, the session a
node's agent opened (its incarnation, boot, capacity) and that it ended. The gateway's
`SessionRecords`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Connection, select

from bollard.domain.errors import InvalidInput
from bollard.domain.protocol import Hello
from bollard.domain.states import NodeHealth
from bollard.server.auth import hash_token
from bollard.server.clock import Clock
from bollard.server.gateway import AgentConnection
from bollard.server.ports import UnitOfWork
from bollard.store import commands, events, nodes, sriov, vms
from bollard.store.tables import nodes as nodes_table

log = logging.getLogger(__name__)

# An agent waits this long for its welcome (its connect_timeout, by default): a session
# recorded later than this after it dialled (its token looked up; the database did not
# answer meanwhile) is one it has given up on, and may have opened on another server since:
# it is refused, and that one's record left alone.
RECORD_WITHIN = 10.0


class AgentRecords:
    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        server_id: Callable[[], str | None] = lambda: None,
        record_within: float = RECORD_WITHIN,
    ) -> None:
        self.work = work
        self.clock = clock
        self.server_id = server_id  # this server's id now (it changes when it joins again)
        self.record_within = record_within
        # node -> the id its session here is recorded under (until the session ends)
        self._registered: dict[str, str | None] = {}
        self._dialled: dict[str, float] = {}  # node -> when its latest dial here began

    async def node_for_token(self, token: str) -> str | None:
        began = self.clock.monotonic()
        node = await self.work.run(self._node_for_token, token)
        if node is not None:
            self._dialled[node] = began
        return node

    async def opened(self, connection: AgentConnection, hello: Hello) -> None:
        """Record the session (ConnectionError if that came too late: see RECORD_WITHIN)."""
        began = self._dialled.pop(hello.node, self.clock.monotonic())
        connection.prior_health, connection.prior_boot_id = await self.work.run(
            self._register, hello, began
        )

    async def closed(self, connection: AgentConnection) -> None:
        await self.work.run(self._unregister, connection.node, connection.incarnation)

    def _node_for_token(self, token: str) -> str | None:
        with self.work.read() as conn:
            value = conn.execute(
                select(nodes_table.c.name).where(nodes_table.c.token_hash == hash_token(token))
            ).scalar()
        return None if value is None else str(value)

    def _register(self, hello: Hello, began: float) -> tuple[NodeHealth, str | None]:
        """Record the agent's session; returns the node's health and boot id before it."""
        now = self.clock.now()
        me = self.server_id()
        with self.work.write() as conn:
            before = nodes.get(conn, hello.node)
            late = self.clock.monotonic() - began
            if late > self.record_within:  # (raised in the transaction: nothing is written)
                raise ConnectionError(
                    f"its session could be recorded only {late:.1f} s after its agent dialled: "
                    "the agent has given up on it"
                )
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
                server_id=me,
            )
            # Sequence numbers are ordered within one agent incarnation; a new incarnation
            # starts a new order (its session superseded the old one above).
            nodes.reset_sequence(conn, hello.node)
            vms.reset_sequence(conn, hello.node)
            # What was sent over an earlier session (of this server or another, which may be
            # dead) is settled by the command reconciler with this one (its journal).
            commands.interrupt_unfinished(conn, now, nodes=[hello.node], created=False,
                                          why="the node's agent connected again")  # fmt: skip
            if hello.sriov is not None:  # None: an agent that does not report SR-IOV
                _sync_sriov(conn, hello, now)
            if before.health is NodeHealth.SUSPECT and nodes.set_health(
                conn, hello.node, NodeHealth.UP, now, expect=NodeHealth.SUSPECT
            ):
                # A new session is the freshest sign of life there is (what the health
                # monitor would conclude at its next look); a node that was away (dead,
                # fenced) comes back only through the rejoin check of its first report.
                events.add(conn, "node.up", f"node {hello.node}: suspect -> up (its agent "
                           "connected)", now, node=hello.node,
                           data={"old": "suspect", "new": "up"})  # fmt: skip
        self._registered[hello.node] = me
        return before.health, before.boot_id

    async def reclaim(self, sessions: list[AgentConnection]) -> list[str]:
        """This server joined again under a new id: the sessions it still holds are recorded
        under it, each unless its node was taken by another server meanwhile; the nodes."""
        return await self.work.run(self._reclaim, [(s.node, s.incarnation) for s in sessions])

    def _reclaim(self, held: list[tuple[str, str]]) -> list[str]:
        me = self.server_id()
        now = self.clock.now()
        reclaimed = []
        with self.work.write() as conn:
            # In node order, as the reports' group commit locks nodes rows: no deadlock.
            for node, incarnation in sorted(held):
                old = self._registered.get(node)
                if nodes.reclaim_session(conn, node, incarnation, old, me, now):
                    reclaimed.append(node)
        for node in reclaimed:
            self._registered[node] = me
        return reclaimed

    def _unregister(self, node: str, incarnation: str) -> None:
        """The session ended: its node is disconnected, unless the session was never recorded
        here or the record names another server now (the agent went on to it)."""
        if node not in self._registered:
            return
        under = self._registered.pop(node)
        with self.work.write() as conn:
            nodes.mark_disconnected(conn, node, incarnation, self.clock.now(), server_id=under)


def _sync_sriov(conn: Connection, hello: Hello, now: datetime) -> None:
    """The node's PFs and VFs as its agent found them at its start. A report the store
    refuses changes nothing (the session is still recorded: its VMs matter more); a VF that
    is gone while a VM held it is logged (the reconciler raises it)."""
    assert hello.sriov is not None
    try:
        lost = sriov.sync_node(conn, hello.node, hello.sriov, now=now)
    except InvalidInput as exc:
        log.error("node %s: SR-IOV report refused: %s", hello.node, exc.message)
        return
    for vf in lost:
        log.warning(
            "node %s: PF %s VF %d (%s) held by VM %s is no longer on the host",
            hello.node, vf.pf, vf.idx, vf.pci, vf.used_by,
        )  # fmt: skip
