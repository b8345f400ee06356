"""What the operator wanted survives failures and fences (issue 16, defects 8 and 9): a fence
does not start an HA VM meant to stay off, and a power operation that failed leaves the
desired power it found, so nothing carries it out later."""

from __future__ import annotations

from typing import Any

import httpx

from bollard.sim.fabric import Fabric
from tests.api.test_api_vms import Cluster, _fabric_power, _wait
from tests.support.cluster import AgentThread, wait_until


def _vm(c: httpx.Client, name: str) -> dict[str, Any]:
    vm: dict[str, Any] = c.get(f"/vms/{name}").json()
    return vm


def test_a_fence_defines_a_stopped_ha_vm_elsewhere_without_starting_it(cluster: Cluster) -> None:
    server, agents = cluster
    c = server.client
    server.runtime.power.sim_fabric_dir = agents[0].config.fabric_dir
    assert c.put("/settings/health.startup_grace", json={"value": 0}).status_code == 200
    fence = c.put("/nodes/node2/power", json={"driver": "sim", "address": "node2"})
    assert fence.status_code == 200, fence.text
    for name, start in (("quiet", False), ("busy", True)):
        body = {"name": name, "vcpus": 1, "memory_mb": 256, "node": "node2", "start": start}
        created = _wait(c, c.post("/vms", json=body | {"ha": "restart"}))
        assert created["state"] == "succeeded", created
    assert _vm(c, "quiet")["desired_power"] == "stopped"

    agents.pop(1).stop()  # node2's agent dies; the health monitor fences it (sim power off)
    wait_until(lambda: c.get("/nodes/node2").json()["health"] == "fenced", "node2 fenced")
    for name in ("quiet", "busy"):
        wait_until(
            lambda n=name: _vm(c, n)["node"] == "node1" and _vm(c, n)["task_id"] is None,
            f"{name} to be recovered on node1",
        )
    quiet, busy = _vm(c, "quiet"), _vm(c, "busy")
    assert (quiet["status"], quiet["desired_power"], quiet["epoch"]) == ("SHUTOFF", "stopped", 2)
    assert _fabric_power(cluster, "node1", quiet["uuid"]) == "stopped"  # defined, not started
    assert (busy["status"], busy["desired_power"]) == ("ACTIVE", "running")
    assert _fabric_power(cluster, "node1", busy["uuid"]) == "running"
    restarts = c.get("/tasks", params={"vm": "quiet"}).json()["items"]
    ha = [t for t in restarts if t["type"] == "ha_restart"]
    assert len(ha) == 1 and ha[0]["state"] == "succeeded", restarts


def test_a_start_that_failed_leaves_the_vm_stopped_when_its_node_returns(
    cluster: Cluster,
) -> None:
    server, agents = cluster
    c = server.client
    # node2 stays suspect while away (no fence, no recovery): this is about the start only.
    assert c.put("/settings/health.dead_after", json={"value": 1000}).status_code == 200
    created = _wait(
        c, c.post("/vms", json={"name": "lazy", "vcpus": 1, "memory_mb": 256, "node": "node2"})
    )
    assert created["state"] == "succeeded"
    assert _vm(c, "lazy")["desired_power"] == "stopped"

    config = agents[1].config
    agents.pop(1).stop()
    wait_until(lambda: not c.get("/nodes/node2").json()["connected"], "node2 to disconnect")
    failed = _wait(c, c.post("/vms/lazy/start"))
    assert failed["state"] in ("failed", "rolled_back"), failed
    lazy = _vm(c, "lazy")
    assert lazy["desired_power"] == "stopped", lazy  # the intent it found
    assert lazy["ha"] == "none", lazy  # (desired running had made it an HA VM)
    kinds = [e["kind"] for e in c.get("/events", params={"vm": "lazy"}).json()["items"]]
    assert "vm.desired" in kinds

    agents.append(AgentThread(server, "node2", config.state_dir.parent, config=config))
    wait_until(lambda: c.get("/nodes/node2").json()["connected"], "node2 to come back")
    wait_until(lambda: c.get("/nodes/node2").json()["inventory_known"], "node2 to report its VMs")
    # A reconcile pass, now, deterministically: nothing to start.
    fixed = c.post("/reconcile/fix", json={"classes": ["power"], "vm": "lazy"})
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["fixed"] == [] and fixed.json()["failed"] == []
    lazy = _vm(c, "lazy")
    assert (lazy["status"], lazy["desired_power"], lazy["task_id"]) == ("SHUTOFF", "stopped", None)
    assert _fabric_power(cluster, "node2", lazy["uuid"]) == "stopped"
    starts = c.get("/tasks", params={"vm": "lazy"}).json()["items"]
    assert [t["type"] for t in starts] == ["create", "start"], starts


def test_a_stop_that_failed_gives_back_the_desired_power_running(cluster: Cluster) -> None:
    server, agents = cluster
    c = server.client
    assert c.put("/settings/health.dead_after", json={"value": 1000}).status_code == 200
    body = {"name": "keep", "vcpus": 1, "memory_mb": 256, "node": "node2", "start": True}
    assert _wait(c, c.post("/vms", json=body))["state"] == "succeeded"
    agents.pop(1).stop()
    wait_until(lambda: not c.get("/nodes/node2").json()["connected"], "node2 to disconnect")
    for verb in ("stop", "shutdown", "restart"):
        failed = _wait(c, c.post(f"/vms/keep/{verb}"))
        assert failed["state"] in ("failed", "rolled_back"), (verb, failed)
        assert _vm(c, "keep")["desired_power"] == "running", verb
    failed = _wait(c, c.delete("/vms/keep"))
    assert failed["state"] in ("failed", "rolled_back"), failed
    assert _vm(c, "keep")["desired_power"] == "running"
    assert (
        Fabric(agents[0].config.fabric_dir or "").host("node2").get_vm(_vm(c, "keep")["uuid"])
        is not None
    )
