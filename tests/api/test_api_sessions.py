"""Agent sessions that end at awkward moments, and nodes that come back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from websockets.asyncio.client import connect

from bollard.domain.protocol import AGENT_PATH
from bollard.domain.states import NodeHealth
from bollard.store import nodes
from tests.support.cluster import AgentThread, ServerThread, wait_until


def test_an_agent_that_vanishes_before_the_welcome_leaves_no_session(server: ServerThread) -> None:
    token = server.client.post("/nodes", json={"name": "ghost"}).json()["token"]
    hello = {
        "type": "hello", "node": "ghost", "incarnation": "i-1", "boot_id": "b-1",
        "driver": "sim", "capacity": {"vcpus": 4, "memory_mb": 4096},
    }  # fmt: skip

    async def say_hello_and_vanish() -> None:
        url = server.url.replace("http", "ws") + AGENT_PATH
        ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"})
        await ws.send(json.dumps(hello))
        ws.transport.abort()  # a reset: no close handshake, no reading of the welcome

    asyncio.run(say_hello_and_vanish())
    wait_until(
        lambda: (
            "ghost" not in server.runtime.gateway.sessions
            and not server.client.get("/nodes/ghost").json()["connected"]
        ),
        "the server to forget the vanished session",
    )


def test_a_fenced_node_that_did_not_reboot_stays_fenced(
    server: ServerThread, tmp_path: Path
) -> None:
    agent = AgentThread(server, "n1", tmp_path)
    wait_until(lambda: server.client.get("/nodes/n1").json()["health"] == "up", "n1 up")
    agent.stop()
    _fence(server, "n1")  # (the host kept running)
    restarted = AgentThread(server, "n1", tmp_path, config=agent.config)
    try:
        wait_until(
            lambda: any(
                e["kind"] == "node.rejoin_refused"
                for e in server.client.get("/events", params={"node": "n1"}).json()["items"]
            ),
            "the rejoin to be refused",
        )
        assert server.client.get("/nodes/n1").json()["health"] == "fenced"
    finally:
        restarted.stop()


def _fence(server: ServerThread, node: str) -> None:
    with server.runtime.db.write() as conn:  # as the fencer leaves it
        now = server.runtime.clock.now()
        if nodes.get(conn, node).health is not NodeHealth.DEAD:
            nodes.set_health(conn, node, NodeHealth.DEAD, now)
        nodes.set_health(conn, node, NodeHealth.FENCING, now)
        nodes.set_health(conn, node, NodeHealth.FENCED, now)


def test_a_rejoin_check_that_ends_late_never_brings_back_a_fenced_node(
    server: ServerThread, tmp_path: Path
) -> None:
    """The check of a session's first report runs on its own; if it ends after the node was
    fenced (its session over, or still open), the node stays fenced: only a new session's
    own check may bring it back. (Seen as a race: the first session's check set a node
    fenced meanwhile "fenced -> up".)"""
    agent = AgentThread(server, "n1", tmp_path)
    rejoiner = server.runtime.rejoiner

    def checked() -> str | None:  # the session's own check of its first report has ended
        with server.runtime.db.read() as conn:
            node = nodes.get(conn, "n1")
        current = node.inventory_incarnation == node.agent_incarnation is not None
        return node.agent_incarnation if current and not rejoiner._jobs else None

    incarnation = wait_until(checked, "n1's first report to be checked")
    assert server.client.get("/nodes/n1").json()["health"] == "up"
    _fence(server, "n1")  # while its session is open: fenced after the session began
    rejoiner._up("n1", NodeHealth.FENCED, [], incarnation, NodeHealth.SUSPECT)
    assert server.client.get("/nodes/n1").json()["health"] == "fenced"
    agent.stop()
    wait_until(lambda: not server.client.get("/nodes/n1").json()["connected"], "n1 to go")
    rejoiner._up("n1", NodeHealth.FENCED, [], incarnation, NodeHealth.FENCED)  # session over
    assert server.client.get("/nodes/n1").json()["health"] == "fenced"
    events = server.client.get("/events", params={"node": "n1"}).json()["items"]
    assert not [e for e in events if "fenced -> up" in e["message"] or "rejoined" in e["message"]]


def test_a_suspect_node_is_up_as_soon_as_its_agent_connects(
    server: ServerThread, tmp_path: Path
) -> None:
    """A new node is suspect until its agent has spoken; the hello that opens its session is
    that sign of life, so the node takes VMs from then on (the scheduler takes only up nodes)."""
    agent = AgentThread(server, "fresh", tmp_path)  # enrolled suspect, then its agent runs
    try:
        node = wait_until(
            lambda: (n := server.client.get("/nodes/fresh").json())["connected"] and n,
            "fresh to connect",
        )
        # Registered and up in the one transaction that records the session.
        assert node["health"] == "up"
        events = server.client.get("/events", params={"node": "fresh"}).json()["items"]
        assert [e["message"] for e in events if e["kind"] == "node.up"] == [
            "node fresh: suspect -> up (its agent connected)"
        ]
    finally:
        agent.stop()
