"""VM operations through the real server and real sim agents, checked against the fabric."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from bollard.sim.fabric import Fabric
from tests.support.cluster import AgentThread, ServerThread, wait_until

Cluster = tuple[ServerThread, list[AgentThread]]


def _wait(client: httpx.Client, answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task"]["id"]
    for _ in range(10):
        task: dict[str, Any] = client.get(f"/tasks/{task_id}/wait", params={"timeout": 5}).json()
        if task["finished_at"] is not None:
            return task
    raise AssertionError(f"task {task_id} did not end: {task}")


def _fabric_power(cluster: Cluster, node: str, uuid: str) -> str | None:
    fabric = Fabric(cluster[1][0].config.fabric_dir or "")
    vm = fabric.host(node).get_vm(uuid)
    return None if vm is None else str(vm.power)


def test_create_places_on_most_free_memory_and_runs(cluster: Cluster) -> None:
    server, _ = cluster
    answer = server.client.post(
        "/vms", json={"name": "web1", "vcpus": 2, "memory_mb": 1024, "start": True}
    )
    assert answer.json()["vm"]["status"] == "BUILD"
    task = _wait(server.client, answer)
    assert task["state"] == "succeeded", task
    vm = server.client.get("/vms/web1").json()
    assert vm["node"] == "node1"  # 32 GB free beats 16 GB
    assert (vm["status"], vm["vm_state"], vm["task_state"]) == ("ACTIVE", "active", None)
    assert vm["desired_power"] == "running"
    assert _fabric_power(cluster, "node1", vm["uuid"]) == "running"
    wait_until(
        lambda: server.client.get("/vms/web1").json()["observed_power"] == "running",
        "the heartbeat to report the VM running",
    )
    node = server.client.get("/nodes/node1").json()
    assert node["allocated"] == {"vcpus": 2, "memory_mb": 1024}
    assert node["free"] == {"vcpus": 14, "memory_mb": 31744}


def test_lifecycle_follows_the_fabric(cluster: Cluster) -> None:
    server, _ = cluster
    c = server.client
    created = _wait(
        c, c.post("/vms", json={"name": "db1", "vcpus": 1, "memory_mb": 512, "node": "node2"})
    )
    assert created["state"] == "succeeded"
    vm = c.get("/vms/db1").json()
    assert (vm["node"], vm["status"]) == ("node2", "SHUTOFF")
    uuid = vm["uuid"]
    assert _fabric_power(cluster, "node2", uuid) == "stopped"

    for verb, status, power in [
        ("start", "ACTIVE", "running"),
        ("restart", "ACTIVE", "running"),
        ("shutdown", "SHUTOFF", "stopped"),
        ("start", "ACTIVE", "running"),
        ("stop", "SHUTOFF", "stopped"),
    ]:
        task = _wait(c, c.post(f"/vms/db1/{verb}"))
        assert task["state"] == "succeeded", (verb, task)
        assert task["type"] == verb
        assert c.get("/vms/db1").json()["status"] == status, verb
        assert _fabric_power(cluster, "node2", uuid) == power, verb

    deleted = _wait(c, c.delete("/vms/db1"))
    assert deleted["state"] == "succeeded"
    assert c.get("/vms/db1").status_code == 404
    assert _fabric_power(cluster, "node2", uuid) is None
    assert c.get("/nodes/node2").json()["allocated"] == {"vcpus": 0, "memory_mb": 0}
    assert [t["type"] for t in c.get("/tasks", params={"vm": "db1"}).json()["items"]] == [
        "create",
        "start",
        "restart",
        "shutdown",
        "start",
        "stop",
        "delete",
    ]


def test_operations_refused_in_the_wrong_state(cluster: Cluster) -> None:
    c = cluster[0].client
    _wait(c, c.post("/vms", json={"name": "v", "vcpus": 1, "memory_mb": 256}))
    for verb in ("stop", "shutdown", "restart"):
        answer = c.post(f"/vms/v/{verb}")
        assert answer.status_code == 409, verb
        assert "stopped" in answer.json()["error"]["message"]


def test_a_busy_vm_refuses_a_second_operation_naming_the_task(cluster: Cluster) -> None:
    server, _ = cluster
    c = server.client
    _wait(c, c.post("/vms", json={"name": "slow", "vcpus": 1, "memory_mb": 256}))
    # Keep the agent from answering quickly: a graceful shutdown of a guest that ignores ACPI
    # is the slowest operation; start is enough while the sim latency applies.
    started = c.post("/vms/slow/start")
    task_id = started.json()["task"]["id"]
    second = c.post("/vms/slow/start")
    if c.get(f"/tasks/{task_id}").json()["finished_at"] is None:
        assert second.status_code == 409
        assert task_id in second.json()["error"]["message"]
    _wait(c, started)


def test_no_capacity_anywhere_creates_nothing(cluster: Cluster) -> None:
    c = cluster[0].client
    answer = c.post("/vms", json={"name": "huge", "vcpus": 2, "memory_mb": 40000})
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "insufficient-capacity"
    assert "node1" in answer.json()["error"]["message"]
    assert c.get("/vms/huge").status_code == 404
    assert c.get("/vms").json()["total"] == 0


def test_duplicate_name_is_refused(cluster: Cluster) -> None:
    c = cluster[0].client
    _wait(c, c.post("/vms", json={"name": "dup", "vcpus": 1, "memory_mb": 256}))
    again = c.post("/vms", json={"name": "dup", "vcpus": 1, "memory_mb": 256})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already-exists"


def test_concurrent_creates_never_overcommit(cluster: Cluster) -> None:
    c = cluster[0].client

    # 32 GB + 16 GB: room for exactly twelve 4 GB VMs.
    def create(i: int) -> int:
        return c.post("/vms", json={"name": f"c{i}", "vcpus": 1, "memory_mb": 4096}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(create, range(14)))
    assert sorted(codes) == [202] * 12 + [409] * 2
    nodes = {n["name"]: n for n in c.get("/nodes").json()["items"]}
    assert nodes["node1"]["allocated"]["memory_mb"] == 32768
    assert nodes["node2"]["allocated"]["memory_mb"] == 16384


def test_disconnected_node_is_not_a_target(cluster: Cluster) -> None:
    server, agents = cluster
    agents[1].stop()
    wait_until(lambda: not server.client.get("/nodes/node2").json()["connected"], "node2 to go")
    answer = server.client.post(
        "/vms", json={"name": "x", "vcpus": 1, "memory_mb": 256, "node": "node2"}
    )
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "node-unavailable"
    agents.pop()  # already stopped


def test_status_counts(cluster: Cluster) -> None:
    c = cluster[0].client
    _wait(c, c.post("/vms", json={"name": "a", "vcpus": 1, "memory_mb": 256, "start": True}))
    _wait(c, c.post("/vms", json={"name": "b", "vcpus": 1, "memory_mb": 256}))
    status = c.get("/status").json()
    assert status["nodes"] == {"total": 2, "connected": 2}
    assert status["vms"] == {"total": 2, "by_status": {"ACTIVE": 1, "SHUTOFF": 1}}
