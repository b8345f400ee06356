"""A host's clean shutdown or reboot (issue 21), through the real server and sim agents: the
agent of a host marked shutting down in the fabric is stopped (as SIGTERM on a real host),
tells the server, and the node's shutdown policy acts. Then the host is powered off (and on
again for a reboot) and its agent started again.

- freeze: no fence, no recovery; its VMs run again when the host is back;
- failover: fenced and recovered once its power reads off, without the dead threshold;
- migrate: drained before the agent exits; maintenance goes off and the VMs come back when the
  agent is back (maintenance the operator set stays);
- conditional (the default setting): freeze on a reboot, failover on a power-off.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bollard.domain.ha import ShutdownKind
from bollard.sim.host_shutdown import mark_shutdown
from bollard.sim.partition import heal_host, partition_host
from bollard.sim.power import power_off_host, power_on_host
from tests.api.test_api_migrate import make_vm, running_on
from tests.api.test_api_vms import Cluster
from tests.api.test_ha_maintenance import events_of, maintenance, node_of, sim_power
from tests.support.cluster import AgentThread, wait_until

NEVER = 1000  # health.dead_after (its maximum; 500 s at 0.5 s heartbeats): never, here


def _settings(c: httpx.Client, **values: Any) -> None:
    for key, value in {"health.startup_grace": 0, **values}.items():
        assert c.put(f"/settings/{key}", json={"value": value}).status_code == 200


def _policy(c: httpx.Client, node: str, policy: str | None) -> dict[str, Any]:
    answer = c.patch(f"/nodes/{node}", json={"shutdown_policy": policy})
    assert answer.status_code == 200, answer.text
    out: dict[str, Any] = answer.json()
    return out


class Host:
    """A sim host with the sim power driver, whose agent runs in a thread of the test."""

    def __init__(self, cluster: Cluster, node: str) -> None:
        self.cluster = cluster
        self.node = node
        self.fabric = sim_power(cluster, node)
        self.config = self._agent().config

    def _agent(self) -> AgentThread:
        return next(a for a in self.cluster[1] if a.config.node == self.node)

    def shut_down(self, kind: ShutdownKind) -> float:
        """Its clean shutdown as `bollard sim node shutdown` does it: mark it, stop the agent
        (as SIGTERM does; this returns once the agent has exited), power off, and on again
        for a reboot. Returns how long the agent took to exit."""
        agent = self._agent()
        mark_shutdown(self.fabric, self.node, kind)
        began = time.monotonic()
        agent.stop()
        took = time.monotonic() - began
        self.cluster[1].remove(agent)
        power_off_host(self.fabric, self.node)
        if kind is ShutdownKind.REBOOT:
            power_on_host(self.fabric, self.node)
        return took

    def back(self, tmp_path: Path) -> None:
        """Powered on (if off), its agent started again."""
        power_on_host(self.fabric, self.node)
        server, agents = self.cluster
        agents.append(AgentThread(server, self.node, tmp_path, config=self.config))


def _kinds(c: httpx.Client, node: str) -> list[str]:
    return [e["kind"] for e in events_of(c, node=node)]


def _one(c: httpx.Client, node: str, kind: str) -> dict[str, Any]:
    found = [e for e in events_of(c, node=node) if e["kind"] == kind]
    assert len(found) == 1, found
    return found[0]


def _vm(c: httpx.Client, name: str) -> dict[str, Any]:
    vm: dict[str, Any] = c.get(f"/vms/{name}").json()
    return vm


def _recovered(c: httpx.Client, name: str) -> bool:
    """Owned by node1 and running there, its recovery over."""
    vm = _vm(c, name)
    return vm["node"] == "node1" and vm["task_id"] is None and vm["status"] == "ACTIVE"


def _restart_tasks(c: httpx.Client) -> list[dict[str, Any]]:
    items = c.get("/tasks", params={"limit": 1000}).json()["items"]
    return [t for t in items if t["type"] in ("ha_restart", "fence", "recover")]


def test_the_policy_is_the_nodes_own_or_the_setting(cluster: Cluster) -> None:
    c = cluster[0].client
    node = node_of(c, "node2")
    assert (node["shutdown_policy"], node["shutdown_policy_effective"]) == (None, "conditional")
    assert (node["shutdown_kind"], node["shutdown_at"]) == (None, None)
    assert _policy(c, "node2", "migrate")["shutdown_policy_effective"] == "migrate"
    listed = {n["name"]: n for n in c.get("/nodes").json()["items"]}
    assert listed["node2"]["shutdown_policy"] == "migrate"
    assert listed["node1"]["shutdown_policy_effective"] == "conditional"
    _settings(c, **{"ha.shutdown_policy": "freeze"})
    assert node_of(c, "node1")["shutdown_policy_effective"] == "freeze"
    assert node_of(c, "node2")["shutdown_policy_effective"] == "migrate"
    cleared = _policy(c, "node2", None)
    assert (cleared["shutdown_policy"], cleared["shutdown_policy_effective"]) == (None, "freeze")
    changes = [e for e in events_of(c, node="node2") if e["kind"] == "node.shutdown_policy"]
    assert [e["data"]["new"] for e in changes] == ["migrate", None]
    refused = c.patch("/nodes/node2", json={"shutdown_policy": "sometimes"})
    assert refused.status_code == 422 and "must be one of" in refused.text
    empty = c.patch("/nodes/node2", json={})
    assert empty.status_code == 422 and "nothing to change" in empty.text
    assert c.patch("/nodes/nosuch", json={"shutdown_policy": "freeze"}).status_code == 404


def test_freeze_fences_nothing_recovers_nothing_and_the_vms_run_again_on_return(
    cluster: Cluster, tmp_path: Path
) -> None:
    c = cluster[0].client
    _settings(c, **{"health.dead_after": 3})  # dead after 1.5 s (heartbeat 0.5 s)
    host = Host(cluster, "node2")
    _policy(c, "node2", "freeze")
    web = make_vm(cluster, "web", node="node2")

    took = host.shut_down(ShutdownKind.POWEROFF)
    assert took < 5, took  # freeze: answered at once
    shutdown = _one(c, "node2", "node.shutdown")
    assert shutdown["data"] == {"kind": "poweroff", "policy": "freeze", "action": "freeze",
                                "maintenance_set": False}  # fmt: skip
    assert node_of(c, "node2")["shutdown_kind"] == "poweroff"
    skipped = wait_until(
        lambda: [e for e in events_of(c, node="node2") if e["kind"] == "node.fence_skipped"],
        "the fence of node2 to be skipped",
    )
    assert "frozen" in skipped[0]["message"]
    assert node_of(c, "node2")["health"] == "dead"
    time.sleep(2)  # a few health passes: still nothing fenced, nothing recovered
    assert node_of(c, "node2")["health"] == "dead"
    assert _vm(c, "web")["node"] == "node2" and _restart_tasks(c) == []
    assert running_on(cluster, web["uuid"]) == []  # it went down with its host

    host.back(tmp_path)
    wait_until(lambda: node_of(c, "node2")["shutdown_kind"] is None, "the freeze to end")
    assert "node.shutdown_ended" in _kinds(c, "node2")
    wait_until(lambda: running_on(cluster, web["uuid"]) == ["node2"], "web to run again")
    assert node_of(c, "node2")["health"] == "up"
    assert _vm(c, "web")["epoch"] == web["epoch"]  # the same owner: never moved
    assert "node.fenced" not in _kinds(c, "node2")


def test_failover_recovers_once_the_host_reads_off_without_the_dead_wait(
    cluster: Cluster,
) -> None:
    c = cluster[0].client
    # Neither the dead threshold nor the fast failover of a dropped session may act here.
    _settings(c, **{"health.dead_after": NEVER, "fencing.fast": False})
    host = Host(cluster, "node2")
    _policy(c, "node2", "failover")
    web = make_vm(cluster, "web", node="node2")

    host.shut_down(ShutdownKind.POWEROFF)
    off_at = time.monotonic()
    wait_until(lambda: _recovered(c, "web"), "web to be recovered on node1")
    took = time.monotonic() - off_at
    assert took < 10, took
    assert running_on(cluster, web["uuid"]) == ["node1"]
    assert _vm(c, "web")["epoch"] == web["epoch"] + 1
    assert node_of(c, "node2")["health"] == "fenced"
    dead = _one(c, "node2", "node.dead")
    assert "shut down cleanly (poweroff)" in dead["message"], dead
    kinds = _kinds(c, "node2")
    assert kinds.index("node.shutdown") < kinds.index("node.dead") < kinds.index("node.fenced")


def test_migrate_drains_before_the_agent_exits_and_brings_the_vms_back(
    cluster: Cluster, tmp_path: Path
) -> None:
    c = cluster[0].client
    _settings(c, **{"health.dead_after": 3})
    host = Host(cluster, "node2")
    _policy(c, "node2", "migrate")
    web = make_vm(cluster, "web", node="node2")
    db = make_vm(cluster, "db", node="node2", ha="none")

    host.shut_down(ShutdownKind.REBOOT)
    # The agent exited only after the drain: by then both ran on node1.
    ready = _one(c, "node2", "node.shutdown_ready")
    assert "2 of 2 VMs moved" in ready["message"], ready
    shutdown = _one(c, "node2", "node.shutdown")
    assert shutdown["data"]["action"] == "migrate" and shutdown["data"]["maintenance_set"]
    assert _vm(c, "web")["node"] == "node1" and _vm(c, "db")["node"] == "node1"
    assert running_on(cluster, web["uuid"]) == ["node1"]
    assert running_on(cluster, db["uuid"]) == ["node1"]
    node = node_of(c, "node2")
    assert node["maintenance"] and node["scheduling"] == "maintenance"
    wait_until(
        lambda: any(e["kind"] == "node.fence_skipped" for e in events_of(c, node="node2")),
        "node2 to be dead and not fenced",
    )

    host.back(tmp_path)
    wait_until(lambda: not node_of(c, "node2")["maintenance"], "maintenance to go off")
    wait_until(
        lambda: (
            running_on(cluster, web["uuid"]) == ["node2"]
            and running_on(cluster, db["uuid"]) == ["node2"]
        ),
        "web and db to come back to node2",
    )
    node = node_of(c, "node2")
    assert (node["shutdown_kind"], node["health"]) == (None, "up")
    wait_until(lambda: node_of(c, "node2")["scheduling"] == "ready", "node2 ready")
    ended = _one(c, "node2", "node.shutdown_ended")
    assert ended["data"]["maintenance_off"] is True
    assert "node.fenced" not in _kinds(c, "node2")


def test_migrate_shuts_down_what_fits_nowhere_and_starts_it_when_the_host_returns(
    cluster: Cluster, tmp_path: Path
) -> None:
    c = cluster[0].client
    _settings(c, **{"health.dead_after": 3})
    host = Host(cluster, "node2")
    _policy(c, "node2", "migrate")
    make_vm(cluster, "filler", memory_mb=24000)  # on node1: 8 GB left there
    big = make_vm(cluster, "big", node="node2", memory_mb=12000)

    host.shut_down(ShutdownKind.REBOOT)
    ready = _one(c, "node2", "node.shutdown_ready")
    assert "0 of 1 VMs moved; big: shut down, autostart" in ready["message"], ready
    assert running_on(cluster, big["uuid"]) == []
    assert _vm(c, "big")["node"] == "node2" and _vm(c, "big")["autostart"] is True

    host.back(tmp_path)
    wait_until(lambda: running_on(cluster, big["uuid"]) == ["node2"], "big to start again")
    wait_until(lambda: not node_of(c, "node2")["maintenance"], "maintenance to go off")
    assert "node.fenced" not in _kinds(c, "node2")


def test_an_agent_that_reconnects_while_its_host_drains_is_answered_on_its_new_session(
    cluster: Cluster, tmp_path: Path
) -> None:
    server, agents = cluster
    c = server.client
    _settings(c, **{"health.dead_after": 3})
    # A third host whose live migrations take 4 s each (512 MiB at 128 MiB/s).
    agents.append(AgentThread(server, "node3", tmp_path, sim_migration_rate=128.0))
    wait_until(lambda: node_of(c, "node3")["connected"], "node3 to connect")
    host = Host(cluster, "node3")
    _policy(c, "node3", "migrate")
    vms = [make_vm(cluster, name, node="node3") for name in ("slow1", "slow2", "slow3")]
    agent = host._agent()
    mark_shutdown(host.fabric, "node3", ShutdownKind.POWEROFF)
    # It returns once the agent has exited: after the drain (three 4 s migrations), a lost
    # session and a reconnection, so with the same deadline as the join below.
    stop_errors: list[BaseException] = []

    def stop() -> None:
        try:
            agent.stop(deadline=60.0)
        except BaseException as exc:  # noqa: BLE001 - asserted below, in the test's thread
            stop_errors.append(exc)

    stopper = threading.Thread(target=stop)
    stopper.start()
    wait_until(lambda: "node.shutdown" in _kinds(c, "node3"), "the shutdown to be announced")
    # Its session drops while the drain runs; it dials again once healed.
    partition_host(host.fabric, "node3")
    wait_until(lambda: not node_of(c, "node3")["connected"], "node3's session to end")
    heal_host(host.fabric, "node3")
    stopper.join(timeout=60)
    assert not stopper.is_alive(), "the agent never got its answer"
    assert not stop_errors, stop_errors
    agents.remove(agent)
    # One shutdown, never taken for the host's return; the answer came once drained.
    assert _kinds(c, "node3").count("node.shutdown") == 1
    assert "node.shutdown_ended" not in _kinds(c, "node3")
    node = node_of(c, "node3")
    assert (node["shutdown_kind"], node["maintenance"]) == ("poweroff", True)
    # (If the drain ended while the agent was away, its answer was lost with the session: the
    # shutdown announced again is answered at once, the node being drained already.)
    ready = [e for e in events_of(c, node="node3") if e["kind"] == "node.shutdown_ready"]
    assert ready and "of 3 VMs moved" in ready[0]["message"], ready
    assert all("in maintenance already" in e["message"] for e in ready[1:]), ready
    for vm in vms:
        assert len(running_on(cluster, vm["uuid"])) == 1  # on one host, wherever it is


def test_maintenance_the_operator_set_stays_after_the_host_returns(
    cluster: Cluster, tmp_path: Path
) -> None:
    c = cluster[0].client
    _settings(c, **{"health.dead_after": 3})
    host = Host(cluster, "node2")
    _policy(c, "node2", "migrate")
    make_vm(cluster, "web", node="node2")
    assert maintenance(c, "node2", True)["state"] == "succeeded"

    took = host.shut_down(ShutdownKind.REBOOT)
    assert took < 5, took  # nothing left to move
    assert _one(c, "node2", "node.shutdown")["data"]["maintenance_set"] is False
    host.back(tmp_path)
    wait_until(lambda: node_of(c, "node2")["shutdown_kind"] is None, "the shutdown to end")
    assert _one(c, "node2", "node.shutdown_ended")["data"]["maintenance_off"] is False
    node = node_of(c, "node2")
    assert node["maintenance"] and node["scheduling"] == "maintenance"
    assert _vm(c, "web")["node"] == "node1"


def test_conditional_freezes_a_reboot_and_fails_a_poweroff_over(
    cluster: Cluster, tmp_path: Path
) -> None:
    c = cluster[0].client
    _settings(c, **{"health.dead_after": 3, "fencing.fast": False})
    host = Host(cluster, "node2")
    web = make_vm(cluster, "web", node="node2")
    assert node_of(c, "node2")["shutdown_policy_effective"] == "conditional"

    host.shut_down(ShutdownKind.REBOOT)  # freeze: it comes back, VMs with it
    assert _one(c, "node2", "node.shutdown")["data"]["action"] == "freeze"
    host.back(tmp_path)
    wait_until(lambda: running_on(cluster, web["uuid"]) == ["node2"], "web to run again")
    wait_until(lambda: node_of(c, "node2")["shutdown_kind"] is None, "the freeze to end")
    assert "node.fenced" not in _kinds(c, "node2")

    _settings(c, **{"health.dead_after": NEVER})
    host.shut_down(ShutdownKind.POWEROFF)  # failover
    actions = [e["data"]["action"] for e in events_of(c, node="node2")
               if e["kind"] == "node.shutdown"]  # fmt: skip
    assert actions == ["freeze", "failover"]
    wait_until(lambda: _recovered(c, "web"), "web to be recovered on node1")
    assert running_on(cluster, web["uuid"]) == ["node1"]
    assert node_of(c, "node2")["health"] == "fenced"
