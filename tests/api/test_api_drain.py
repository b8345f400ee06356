"""Draining a node through the API: flush, unflush, VMs that cannot move, and a flush cancelled
half way by an unflush."""

from __future__ import annotations

from typing import Any

from bollard.sim.fabric import Fabric
from bollard.sim.models import FaultMode
from tests.api.test_api_migrate import make_vm, running_on
from tests.api.test_api_vms import Cluster, _wait
from tests.support.cluster import wait_until


def _task_answer(task: dict[str, Any]) -> Any:
    class _Answer:
        status_code = 202
        text = ""

        def json(self) -> dict[str, Any]:
            return {"task": task}

    return _Answer()


def _node(cluster: Cluster, name: str) -> dict[str, Any]:
    node: dict[str, Any] = cluster[0].client.get(f"/nodes/{name}").json()
    return node


def test_flush_and_unflush_round_trip(cluster: Cluster) -> None:
    c = cluster[0].client
    a, b = make_vm(cluster, "d1"), make_vm(cluster, "d2")
    off = make_vm(cluster, "d3", start=False)
    flush = c.post("/nodes/node1/flush")
    assert flush.status_code == 202
    task = _wait(c, _task_answer(flush.json()))
    assert task["state"] == "succeeded", task
    assert task["result"]["progress"]["done"] == 3
    assert _node(cluster, "node1")["scheduling"] == "flushed"
    for vm in (a, b):
        assert running_on(cluster, vm["uuid"]) == ["node2"]
    assert (
        c.get("/vms/d3").json()["node"] == "node2"
        and c.get("/vms/d3").json()["status"] == "SHUTOFF"
    )
    refused = c.post("/vms", json={"name": "new", "vcpus": 1, "memory_mb": 128, "node": "node1"})
    assert refused.status_code == 409 and "flushed" in refused.json()["error"]["message"]
    placed = _wait(c, c.post("/vms", json={"name": "new2", "vcpus": 1, "memory_mb": 128}))
    assert placed["node"] == "node2"
    again = c.post("/nodes/node1/flush")
    assert again.status_code == 409

    back = _wait(c, _task_answer(c.post("/nodes/node1/unflush").json()))
    assert back["state"] == "succeeded", back
    assert _node(cluster, "node1")["scheduling"] == "ready"
    for vm in (a, b):
        assert running_on(cluster, vm["uuid"]) == ["node1"]
        assert c.get(f"/vms/{vm['name']}").json()["previous_node"] is None
    assert c.get("/vms/d3").json()["node"] == "node1"
    del off


def test_a_vm_that_cannot_move_is_shut_down_with_autostart(cluster: Cluster) -> None:
    c = cluster[0].client
    pinned = make_vm(cluster, "pin", node_limit=["node1"])
    task = _wait(c, _task_answer(c.post("/nodes/node1/flush").json()))
    assert task["state"] == "succeeded", task
    vm = c.get("/vms/pin").json()
    assert (vm["node"], vm["status"], vm["autostart"]) == ("node1", "SHUTOFF", True)
    kinds = [e["kind"] for e in c.get("/events", params={"vm": "pin"}).json()["items"]]
    assert "vm.parked" in kinds
    assert running_on(cluster, pinned["uuid"]) == []
    _wait(c, _task_answer(c.post("/nodes/node1/unflush").json()))
    vm = c.get("/vms/pin").json()
    assert (vm["status"], vm["autostart"]) == ("ACTIVE", False)
    assert running_on(cluster, pinned["uuid"]) == ["node1"]


def test_an_unflush_stops_a_flush_half_way_cleanly(cluster: Cluster) -> None:
    c = cluster[0].client
    made = [make_vm(cluster, f"h{i}") for i in range(5)]
    Fabric(cluster[1][0].config.fabric_dir or "").host("node1").faults.set(
        "migrate", FaultMode.DELAY, count=0, seconds=0.5
    )
    flush = c.post("/nodes/node1/flush").json()
    wait_until(
        lambda: (
            (c.get(f"/tasks/{flush['id']}").json()["result"].get("progress") or {}).get("done", 0)
            >= 1
        ),
        "the flush to move a VM",
    )
    unflush = c.post("/nodes/node1/unflush")
    assert unflush.status_code == 202, unflush.text
    stopped = _wait(c, _task_answer(flush))
    assert stopped["state"] in ("failed", "rolled_back"), stopped
    assert "stopped after" in stopped["error"]
    back = _wait(c, _task_answer(unflush.json()))
    assert back["state"] == "succeeded", back
    assert _node(cluster, "node1")["scheduling"] == "ready"
    for vm in made:
        assert running_on(cluster, vm["uuid"]) == ["node1"], vm["name"]
        assert c.get(f"/vms/{vm['name']}").json()["task_state"] is None
