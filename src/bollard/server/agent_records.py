"""What the database holds of agents' sessions: the node a token belongs to, the session a
node's agent opened (its incarnation, boot, capacity) and that it ended. The gateway's
`SessionRecords`."""

from __future__ import annotations

from sqlalchemy import select

from bollard.domain.protocol import Hello
from bollard.domain.states import NodeHealth
from bollard.server.auth import hash_token
from bollard.server.clock import Clock
from bollard.server.gateway import AgentConnection
from bollard.server.ports import UnitOfWork
from bollard.store import events, nodes, vms
from bollard.store.tables import nodes as nodes_table


class AgentRecords:
    def __init__(self, *, work: UnitOfWork, clock: Clock) -> None:
        self.work = work
        self.clock = clock

    async def node_for_token(self, token: str) -> str | None:
        return await self.work.run(self._node_for_token, token)

    async def opened(self, connection: AgentConnection, hello: Hello) -> None:
        connection.prior_health, connection.prior_boot_id = await self.work.run(
            self._register, hello
        )

    async def closed(self, connection: AgentConnection) -> None:
        await self.work.run(self._unregister, connection.node, connection.incarnation)

    def _node_for_token(self, token: str) -> str | None:
        with self.work.read() as conn:
            value = conn.execute(
                select(nodes_table.c.name).where(nodes_table.c.token_hash == hash_token(token))
            ).scalar()
        return None if value is None else str(value)

    def _register(self, hello: Hello) -> tuple[NodeHealth, str | None]:
        """Record the agent's session; returns the node's health and boot id before it."""
        now = self.clock.now()
        with self.work.write() as conn:
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
            if before.health is NodeHealth.SUSPECT and nodes.set_health(
                conn, hello.node, NodeHealth.UP, now, expect=NodeHealth.SUSPECT
            ):
                # A new session is the freshest sign of life there is (what the health
                # monitor would conclude at its next look); a node that was away (dead,
                # fenced) comes back only through the rejoin check of its first report.
                events.add(conn, "node.up", f"node {hello.node}: suspect -> up (its agent "
                           "connected)", now, node=hello.node,
                           data={"old": "suspect", "new": "up"})  # fmt: skip
        return before.health, before.boot_id

    def _unregister(self, node: str, incarnation: str) -> None:
        with self.work.write() as conn:
            nodes.mark_disconnected(conn, node, incarnation, self.clock.now())
