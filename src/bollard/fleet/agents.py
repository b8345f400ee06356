"""Simulated agents: the real agent session over a real WebSocket, an in-memory hypervisor.

Each agent is ``bollard.agent.session.AgentSession`` (hello, heartbeats with full-then-delta
reports, commands through the executor and its journal, reconnects with backoff), the code
path of ``bollard agent``. What differs is only what a simulation may leave out: the host is
a ``MemoryDriver`` on one ``MemoryFabric`` shared by the whole fleet (so migrations between
the fleet's nodes work), and the command journal lives in memory (the fleet's hosts do not
survive the fleet process, so there is nothing to recover it for).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bollard.agent.config import AgentConfig
from bollard.agent.drivers.base import HypervisorDriver
from bollard.agent.drivers.memory import MemoryDriver, MemoryFabric
from bollard.agent.seq import SeqCounter
from bollard.agent.session import AgentSession
from bollard.domain.protocol import Welcome

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0

# ``progress(done, total)``: how a long phase advances.
ProgressFn = Callable[[int, int], None]


class FleetSession(AgentSession):
    """An agent session that tells when the server welcomed it, and can beat at its own
    interval (``heartbeat``) instead of the one the server asks for."""

    def __init__(
        self,
        config: AgentConfig,
        token: str,
        driver: HypervisorDriver,
        *,
        heartbeat: float | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        # Sequence numbers are ordered per agent incarnation (the server resets its record
        # of them when a new incarnation says hello), so every run may start at generation 1.
        super().__init__(config, token, driver, SeqCounter(1), str(uuid.uuid4()), tls=tls)
        self.forced_heartbeat = heartbeat
        self.welcomed = asyncio.Event()

    def _welcome(self, msg: Welcome) -> None:
        super()._welcome(msg)
        if self.forced_heartbeat is not None:
            self.heartbeat_interval = self.forced_heartbeat
        self.welcomed.set()


@dataclass(frozen=True)
class HostShape:
    vcpus: int = 64
    memory_mb: int = 262144
    latency: float = 0.0  # seconds per VM operation
    migration_rate: float = 2048.0  # MiB/s


@dataclass
class FleetAgent:
    node: str
    driver: MemoryDriver
    session: FleetSession
    task: asyncio.Task[None] | None = None


@dataclass
class FleetAgents:
    server_url: str
    shape: HostShape = field(default_factory=HostShape)
    heartbeat: float | None = None  # None: the server's interval
    fabric: MemoryFabric = field(default_factory=MemoryFabric)
    agents: dict[str, FleetAgent] = field(default_factory=dict)
    # https servers: one TLS context for every agent (its CA and client certificate).
    tls: ssl.SSLContext | None = None

    def add(self, node: str, token: str) -> FleetAgent:
        """Create (not start) the agent of ``node``."""
        config = AgentConfig(
            server_url=self.server_url,
            node=node,
            token_file=Path("/nonexistent"),  # the token is handed over directly
            state_dir=Path("/nonexistent"),  # nothing is kept on disk
            driver="memory",
            vcpus=self.shape.vcpus,
            memory_mb=self.shape.memory_mb,
            connect_timeout=30.0,
            send_timeout=30.0,
        )
        driver = MemoryDriver(
            self.fabric,
            node,
            vcpus=self.shape.vcpus,
            memory_mb=self.shape.memory_mb,
            latency=self.shape.latency,
            migration_rate=self.shape.migration_rate,
        )
        session = FleetSession(config, token, driver, heartbeat=self.heartbeat, tls=self.tls)
        agent = FleetAgent(node, driver, session)
        self.agents[node] = agent
        return agent

    def start(self, agent: FleetAgent) -> None:
        agent.task = asyncio.create_task(agent.session.run(), name=f"fleet-agent-{agent.node}")

    async def start_all(
        self, *, batch: int, timeout: float, progress: ProgressFn | None = None
    ) -> int:
        """Start the agents ``batch`` at a time, each batch once the previous one was
        welcomed (so the server is not dialled by thousands at once); returns how many were
        welcomed before ``timeout`` seconds passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending = [a for a in self.agents.values() if a.task is None]
        welcomed = 0
        for start in range(0, len(pending), batch):
            group = pending[start : start + batch]
            for agent in group:
                self.start(agent)
            waits = [asyncio.ensure_future(a.session.welcomed.wait()) for a in group]
            remaining = max(0.0, deadline - loop.time())
            done, not_done = await asyncio.wait(waits, timeout=remaining)
            for w in not_done:
                w.cancel()
            welcomed += len(done)
            if progress is not None:
                progress(welcomed, len(pending))
            if not_done:
                break
        return welcomed

    def connected(self) -> int:
        return sum(1 for a in self.agents.values() if a.session.outbox.ws is not None)

    async def stop_all(self) -> None:
        tasks = [a.task for a in self.agents.values() if a.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            if pending:
                log.warning("%d fleet agents did not stop within %.0fs", len(pending), STOP_TIMEOUT)
        for agent in self.agents.values():
            await agent.session.aclose()
            await agent.driver.close()
            agent.task = None
