"""Several servers on one PostgreSQL database (issue 23), in process over real sockets: two
servers, each holding one agent's session; what is asked of one server reaches the node
whose session the other holds (cluster/relay.py), and the cluster-wide duties run on the
leader only (cluster/singletons.py)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from bollard.server.consoles import PAIR_TIMEOUT
from bollard.sim.fabric import Fabric
from bollard.sim.power import power_off_host
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


def test_a_stopped_servers_task_is_taken_over_and_waited_for_elsewhere(
    tmp_path: Path, db_url: str
) -> None:
    """A task runs on a; a stops in the middle of it; b takes it over (its owner's row is
    stopped), resumes it from its persisted steps and ends it. b waits for it meanwhile."""
    a = ServerThread(tmp_path / "a", db_url)
    (tmp_path / "b").mkdir(mode=0o700)
    shutil.copy(tmp_path / "a" / "admin.token", tmp_path / "b" / "admin.token")
    b = ServerThread(tmp_path / "b", db_url)
    agent = AgentThread(b, "node1", tmp_path, sim_latency=1.5)  # each command takes 1.5 s
    a_stopped = False
    try:
        wait_until(lambda: a.client.get("/status").json()["nodes"]["connected"] == 1, "node1")
        answer = a.client.post("/vms", json={"name": "moved", "vcpus": 1, "memory_mb": 256,
                                             "node": "node1", "start": True})  # fmt: skip
        assert answer.status_code == 202, answer.text
        task_id = answer.json()["task"]["id"]
        first = b.client.get(f"/tasks/{task_id}").json()
        assert first["server"] == a.runtime.membership.id

        def a_step_done() -> bool:
            task = b.client.get(f"/tasks/{task_id}").json()
            return any(s["state"] == "done" for s in task["steps"] or [])

        wait_until(a_step_done, "a step of the task to be done on a")
        a.stop()
        a_stopped = True
        # Waited for on b: taken over within a takeover interval (ttl/3), then ended there.
        wait_until(
            lambda: b.client.get(f"/tasks/{task_id}/wait", params={"timeout": 5}).json()[
                "finished_at"
            ],
            "the task to end on b",
            timeout=60,
        )
        task = b.client.get(f"/tasks/{task_id}").json()
        assert (task["state"], task["server"]) == ("succeeded", b.runtime.membership.id), task
        assert _running_on(agent, b.client.get("/vms/moved").json()["uuid"]) == ["node1"]
        kinds = [e["kind"] for e in b.client.get("/events", params={"limit": 1000}).json()["items"]
                 if e.get("task_id") == task_id]  # fmt: skip
        assert "task.failed" not in kinds and "task.rolling_back" not in kinds, kinds
    finally:
        agent.stop()
        b.stop()
        if not a_stopped:
            a.stop()


def test_a_graphical_console_opens_through_a_server_that_does_not_hold_the_node(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ticket and the browser's socket are a's; node gfx's agent is b's: the TunnelOpen
    goes through b naming a, and the agent dials a. A refusal (a node without a display)
    comes back through b at once, not at the pairing's deadline."""
    from tests.api.test_console_vnc import (
        GREETING,
        FakeDisplay,
        closed,
        give_gfx_a_display,
        read,
    )

    display = FakeDisplay()
    give_gfx_a_display(monkeypatch, display)
    a = ServerThread(tmp_path / "a", db_url)
    (tmp_path / "b").mkdir(mode=0o700)
    shutil.copy(tmp_path / "a" / "admin.token", tmp_path / "b" / "admin.token")
    b = ServerThread(tmp_path / "b", db_url)
    agents = [AgentThread(b, node, tmp_path) for node in ("gfx", "sim1")]
    try:
        wait_until(lambda: a.client.get("/status").json()["nodes"]["connected"] == 2, "nodes")
        for vm, node in (("desk", "gfx"), ("plain", "sim1")):
            body = {"name": vm, "vcpus": 1, "memory_mb": 128, "node": node, "start": True}
            assert _wait(a.client, a.client.post("/vms", json=body))["state"] == "succeeded"
        ws_base = a.url.replace("http://", "ws://", 1)

        def ticket(vm: str) -> str:
            answer = a.client.post(f"/vms/{vm}/console/vnc")
            assert answer.status_code == 201, answer.text
            return str(answer.json()["path"])

        with connect(ws_base + ticket("desk"), open_timeout=20, close_timeout=5) as ws:
            assert read(ws, len(GREETING)) == GREETING
            ws.send(b"through a, not b")
            assert read(ws, 16) == b"through a, not b"
        assert display.accepted == 1

        started = time.monotonic()
        with connect(ws_base + ticket("plain"), open_timeout=20, close_timeout=5) as ws:
            assert closed(ws) == (4409, "the driver of node sim1 (sim) has no graphical console")
        assert time.monotonic() - started < PAIR_TIMEOUT  # the refusal came back through b
    finally:
        for agent in agents:
            agent.stop()
        b.stop()
        a.stop()
        display.close()


def test_a_host_off_whose_agent_a_member_held_is_fenced_by_the_leader_at_once(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    """Fast failover on the server that does not lead: it declares the host dead and asks
    the leader's fencer over the bus. The leader's health monitor is kept from fencing here,
    so only that request can (the dead wait is for ever too)."""
    a, b, agents = pair
    leader, member = (a, b) if a.runtime.leadership.is_leader else (b, a)
    node = "node1" if member is b else "node2"  # the node whose agent the member holds
    other = "node2" if node == "node1" else "node1"
    c = leader.client
    for key, value in {"health.startup_grace": 0, "health.dead_after": 1000}.items():
        assert c.put(f"/settings/{key}", json={"value": value}).status_code == 200
    fabric_dir = agents[node].config.fabric_dir
    assert fabric_dir is not None
    for server in (a, b):
        server.runtime.power.sim_fabric_dir = fabric_dir
    answer = c.put(f"/nodes/{node}/power", json={"driver": "sim", "address": node})
    assert answer.status_code == 200, answer.text
    created = _wait(c, c.post("/vms", json={"name": "web", "vcpus": 1, "memory_mb": 256,
                                            "node": node, "start": True}))  # fmt: skip
    assert created["state"] == "succeeded", created
    leader.runtime.monitor.request_fence = lambda name: None  # only the bus may fence now

    power_off_host(Fabric(fabric_dir), node)
    agents.pop(node).stop()
    moved = wait_until(
        lambda: (vm := c.get("/vms/web").json())["node"] == other
        and vm["status"] == "ACTIVE" and vm["task_id"] is None and vm,
        "web recovered on the other node",
    )  # fmt: skip
    assert moved["observed_power"] == "running"
    assert member.runtime.fence_requests.sent == 1
    assert leader.runtime.fence_requests.sent == 0
    fences = [t for t in c.get("/tasks").json()["items"] if t["type"] == "fence"]
    assert [(t["state"], t["node"]) for t in fences] == [("succeeded", node)], fences
