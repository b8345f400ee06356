"""Several servers on one PostgreSQL database (issue 23), in process over real sockets: two
servers, each holding one agent's session; what is asked of one server reaches the node
whose session the other holds (cluster/relay.py), and the cluster-wide duties run on the
leader only (cluster/singletons.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bollard.sim.fabric import Fabric
from tests.api.test_api_vms import _wait
from tests.support.cluster import AgentThread, ServerThread, wait_until

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)

Pair = tuple[ServerThread, ServerThread, dict[str, AgentThread]]


@pytest.fixture
def pair(tmp_path: Path, db_url: str) -> Iterator[Pair]:
    """Servers a and b; node1's agent knows only b, node2's only a."""
    a = ServerThread(tmp_path / "a", db_url)
    (tmp_path / "b").mkdir(mode=0o700)
    shutil.copy(tmp_path / "a" / "admin.token", tmp_path / "b" / "admin.token")
    b = ServerThread(tmp_path / "b", db_url)
    agents: dict[str, AgentThread] = {}
    try:
        for node, server in (("node1", b), ("node2", a)):
            agents[node] = AgentThread(server, node, tmp_path)
        for server in (a, b):
            wait_until(
                lambda s=server: s.client.get("/status").json()["nodes"]["connected"] == 2,  # type: ignore[misc]
                "both nodes connected, as each server sees it",
            )
        yield a, b, agents
    finally:
        for agent in agents.values():
            agent.stop()
        b.stop()
        a.stop()


def _running_on(agent: AgentThread, uuid: str) -> list[str]:
    snapshot = Fabric(agent.config.fabric_dir or "").snapshot()
    return sorted(n for n, found in snapshot.items() for v in found
                  if v.uuid == uuid and v.power.value == "running")  # fmt: skip


def test_a_vm_is_driven_through_the_server_holding_its_nodes_session(pair: Pair) -> None:
    a, b, agents = pair
    # Asked of a, placed on node1, whose session b holds: every command goes through b.
    created = _wait(a.client, a.client.post(
        "/vms", json={"name": "far", "vcpus": 1, "memory_mb": 256, "node": "node1", "start": True}
    ))  # fmt: skip
    assert created["state"] == "succeeded", created
    uuid = a.client.get("/vms/far").json()["uuid"]
    assert _running_on(agents["node1"], uuid) == ["node1"]
    assert b.runtime.relay is not None and b.runtime.relay.relayed >= 1
    cmds = a.client.get("/commands", params={"vm": "far"}).json()["items"]
    assert cmds and all(c["state"] == "COMPLETED" for c in cmds), cmds

    # Stopped through b this time (its own session), started again through a.
    assert _wait(b.client, b.client.post("/vms/far/stop", json={}))["state"] == "succeeded"
    assert _running_on(agents["node1"], uuid) == []
    assert _wait(a.client, a.client.post("/vms/far/start", json={}))["state"] == "succeeded"
    assert _running_on(agents["node1"], uuid) == ["node1"]

    # A question whose answer is not stored (Inspect) comes back through b too: the sim
    # driver's answer (no console log), not "did not answer".
    console = a.client.get("/vms/far/console", params={"lines": 5})
    assert console.status_code == 404, console.text
    assert "keeps no console log" in console.json()["error"]["message"]


def test_one_leader_runs_the_cluster_wide_duties(pair: Pair) -> None:
    a, b, _ = pair

    def leader() -> list[ServerThread]:
        return [s for s in (a, b) if s.runtime.leadership.is_leader]

    wait_until(lambda: len(leader()) == 1 and leader()[0].runtime.duties.running, "a leader")
    (lead,) = leader()
    other = b if lead is a else a
    assert "health-monitor" in lead.runtime.duties.running
    assert "fencer" in lead.runtime.duties.running
    assert other.runtime.duties.running == []
    listing = a.client.get("/servers").json()
    roles = {item["name"]: item["role"] for item in listing["items"]}
    assert sorted(roles.values()) == ["leader", "member"], listing
    assert listing["leader"] == lead.runtime.membership.id
    agents = {item["name"]: item["agents"] for item in listing["items"]}
    assert sorted(agents.values()) == [1, 1], listing
