from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import AgentThread, ServerThread, wait_until


@pytest.fixture
def server(tmp_path: Path, db_url: str) -> Iterator[ServerThread]:
    srv = ServerThread(tmp_path / "server", db_url)
    yield srv
    srv.stop()


@pytest.fixture
def cluster(
    server: ServerThread, tmp_path: Path
) -> Iterator[tuple[ServerThread, list[AgentThread]]]:
    """A server with two connected sim nodes, node1 (16 vCPUs/32 GB) and node2 (8/16 GB)."""
    agents = [
        AgentThread(server, "node1", tmp_path, vcpus=16, memory_mb=32768),
        AgentThread(server, "node2", tmp_path, vcpus=8, memory_mb=16384),
    ]
    for agent in agents:
        wait_until(
            lambda a=agent: server.client.get(f"/nodes/{a.config.node}").json()["connected"],
            f"{agent.config.node} to connect",
        )
    yield server, agents
    for agent in agents:
        agent.stop()
