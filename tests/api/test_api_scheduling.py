"""One scheduler for creation, migration and HA restart, through the REST API: a VM's selector
and the cluster's `scheduler.vcpu_allocation_ratio` decide where a VM is created exactly as they
decide where it migrates or restarts, and every one of these tasks records its placement (the
node chosen, the ranking, every node rejected and why)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.api.test_api_drain import _task_answer
from tests.api.test_api_vms import Cluster, _wait
from tests.support.cluster import AgentThread, wait_until

PLACEMENT_KEYS = {"chosen", "selector", "wanted", "ranking", "rejected"}


def _all_up(c: httpx.Client, count: int) -> None:
    """Wait for every node to be up: a node is `suspect` from its agent's hello until its first
    heartbeat is processed, and the scheduler takes only `up` nodes."""
    wait_until(
        lambda: [n["health"] for n in c.get("/nodes").json()["items"]] == ["up"] * count,
        f"{count} nodes up",
    )


def _placement(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 202, answer.text
    placement: dict[str, Any] = answer.json()["task"]["result"]["placement"]
    return placement


def _create(c: httpx.Client, name: str, **extra: Any) -> httpx.Response:
    return c.post("/vms", json={"name": name, "vcpus": 1, "memory_mb": 512, **extra})


def _error(answer: httpx.Response) -> str:
    assert answer.status_code == 409, answer.text
    message: str = answer.json()["error"]["message"]
    return message


def _ratio(c: httpx.Client, value: float) -> None:
    answer = c.put("/settings/scheduler.vcpu_allocation_ratio", json={"value": value})
    assert answer.status_code == 200, answer.text


def test_creation_and_migration_follow_the_same_selector(cluster: Cluster, tmp_path: Path) -> None:
    """node3 has the most memory but more VMs than node2: `mem` picks node3, `vms` node2, for a
    new VM and for a VM leaving node1 alike."""
    server, agents = cluster
    c = server.client
    agents.append(AgentThread(server, "node3", tmp_path, vcpus=8, memory_mb=65536))
    _all_up(c, 3)
    for name, node, selector in [
        ("anchor3a", "node3", None),
        ("anchor3b", "node3", None),
        ("anchor1", "node1", None),
        ("twin-vms", "node1", "vms"),
        ("twin-mem", "node1", None),
    ]:  # all stopped: `mem` counts running VMs only, so it ranks by capacity here
        assert _wait(c, _create(c, name, node=node, node_selector=selector))["state"] == "succeeded"
    # VMs: node1 3, node2 0, node3 2.

    created = _placement(_create(c, "new-vms", node_selector="vms"))
    assert created == {
        "chosen": "node2",
        "selector": "vms",
        "wanted": None,
        "ranking": [
            {"node": "node2", "score": 0},
            {"node": "node3", "score": 2},
            {"node": "node1", "score": 3},
        ],
        "rejected": [],
    }
    assert c.get("/vms/new-vms").json()["node"] == "node2"
    # VMs: node1 3, node2 1, node3 2: the twin with the same selector goes to node2 too.
    migrated = c.post("/vms/twin-vms/migrate")
    assert _placement(migrated) == {
        "chosen": "node2",
        "selector": "vms",
        "wanted": None,
        "ranking": [{"node": "node2", "score": 1}, {"node": "node3", "score": 2}],
        "rejected": [{"node": "node1", "reason": "is the VM's current node"}],
    }
    assert _wait(c, migrated)["state"] == "succeeded"
    assert c.get("/vms/twin-vms").json()["node"] == "node2"

    # The cluster's default selector, mem: node3's 64 GB first, for creation and migration.
    created = _placement(_create(c, "new-mem"))
    assert (created["chosen"], created["selector"]) == ("node3", "mem")
    assert [r["node"] for r in created["ranking"]] == ["node3", "node1", "node2"]
    migrated = c.post("/vms/twin-mem/migrate")
    assert (_placement(migrated)["chosen"], _placement(migrated)["selector"]) == ("node3", "mem")
    assert [r["node"] for r in _placement(migrated)["ranking"]] == ["node3", "node2"]
    assert _wait(c, migrated)["state"] == "succeeded"

    # The cluster's selector set to vms moves both the same way (the VM's own still wins).
    assert c.put("/settings/scheduler.selector", json={"value": "vms"}).status_code == 200
    created = _placement(_create(c, "new-default"))  # VMs: node1 1, node2 2, node3 4
    assert (created["chosen"], created["selector"]) == ("node1", "vms")
    mem = _placement(_create(c, "new-own-mem", node_selector="mem"))
    assert (mem["chosen"], mem["selector"]) == ("node3", "mem")


def test_vcpu_allocation_ratio_admits_creation_as_it_admits_migration(cluster: Cluster) -> None:
    c = cluster[0].client
    _all_up(c, 2)
    big = {"vcpus": 20, "memory_mb": 1024}  # more vCPUs than node1 (16) or node2 (8) has

    message = _error(_create(c, "big", **big))
    assert message == (
        "no node can take the VM: "
        "node1: 16 vCPUs free (16 x ratio 1.0 - 0 provisioned), 20 needed; "
        "node2: 8 vCPUs free (8 x ratio 1.0 - 0 provisioned), 20 needed"
    )
    assert c.get("/vms/big").status_code == 404

    _ratio(c, 2)
    wanted_node2 = _error(_create(c, "big", node="node2", **big))
    assert wanted_node2 == (
        "node node2 cannot take the VM: 16 vCPUs free (8 x ratio 2.0 - 0 provisioned), 20 needed"
    )
    answer = _create(c, "big", **big)
    placement = _placement(answer)
    assert placement["chosen"] == "node1"
    assert placement["ranking"] == [{"node": "node1", "score": 32768}]  # selector mem
    assert placement["rejected"] == [
        {"node": "node2", "reason": "16 vCPUs free (8 x ratio 2.0 - 0 provisioned), 20 needed"}
    ]
    assert _wait(c, answer)["state"] == "succeeded"
    node1 = c.get("/nodes/node1").json()
    assert node1["allocated"]["vcpus"] == 20  # overcommitted, as the ratio allows

    # The same VM's migration: refused at ratio 2 for the reason its creation on node2 was.
    assert _error(c.post("/vms/big/migrate", json={"to": "node2"})) == wanted_node2
    refused = _error(c.post("/vms/big/migrate"))
    assert "node1: is the VM's current node" in refused
    assert "node2: 16 vCPUs free (8 x ratio 2.0 - 0 provisioned), 20 needed" in refused
    _ratio(c, 1)
    refused = _error(c.post("/vms/big/migrate"))
    assert "node2: 8 vCPUs free (8 x ratio 1.0 - 0 provisioned), 20 needed" in refused
    # ... and accepted where the ratio makes room (node2: 8 x 3 = 24 vCPUs), as a creation is.
    _ratio(c, 3)
    accepted = c.post("/vms/big/migrate")
    assert _placement(accepted)["chosen"] == "node2"
    assert _placement(accepted)["rejected"] == [
        {"node": "node1", "reason": "is the VM's current node"}
    ]
    assert _wait(c, accepted)["state"] == "succeeded"  # the claim counts by the ratio too
    # node1 is free again: a creation asking for it is admitted by the same ratio.
    created = _placement(_create(c, "big2", node="node1", **big))
    assert (created["chosen"], created["wanted"]) == ("node1", "node1")


def test_a_migration_overcommitting_vcpus_completes(cluster: Cluster) -> None:
    c = cluster[0].client
    _all_up(c, 2)
    _ratio(c, 3)
    body = {"vcpus": 20, "memory_mb": 1024, "node": "node1"}
    assert _wait(c, _create(c, "big", **body))["state"] == "succeeded"
    task = _wait(c, c.post("/vms/big/migrate", json={"to": "node2"}))
    assert task["state"] == "succeeded", task
    assert c.get("/vms/big").json()["node"] == "node2"
    assert c.get("/nodes/node2").json()["allocated"]["vcpus"] == 20


def test_the_create_task_records_its_placement_like_a_migration(cluster: Cluster) -> None:
    c = cluster[0].client
    _all_up(c, 2)
    answer = _create(c, "limited", node_limit=["node2"], start=True)
    placement = _placement(answer)
    assert placement == {
        "chosen": "node2",
        "selector": "mem",
        "wanted": None,
        "ranking": [{"node": "node2", "score": 16384}],
        "rejected": [{"node": "node1", "reason": "outside the VM's node limit (node2)"}],
    }
    task = _wait(c, answer)
    assert task["state"] == "succeeded"
    assert task["result"]["placement"] == placement  # kept once the task has run
    assert c.get("/vms/limited").json()["node"] == "node2"

    pinned = _create(c, "pinned", node="node1")
    wanted = _placement(pinned)
    assert wanted["chosen"] == wanted["wanted"] == "node1"
    assert wanted["rejected"] == []
    assert _wait(c, pinned)["state"] == "succeeded"

    migrated = c.post("/vms/limited/migrate")  # the node limit holds for migration too
    assert "node1: outside the VM's node limit (node2)" in _error(migrated)
    assert c.patch("/vms/limited", json={"node_limit": []}).status_code == 200
    migrated = c.post("/vms/limited/migrate")
    assert set(_placement(migrated)) == set(placement) == PLACEMENT_KEYS
    assert _placement(migrated)["chosen"] == "node1"
    _wait(c, migrated)

    # The CLI's `task show` reads the same record for both.
    for task_id in (answer.json()["task"]["id"], migrated.json()["task"]["id"]):
        shown = c.get(f"/tasks/{task_id}").json()
        assert set(shown["result"]["placement"]) == PLACEMENT_KEYS


def _task_of(c: httpx.Client, vm: str, type_: str) -> list[dict[str, Any]]:
    items = c.get("/tasks", params={"vm": vm}).json()["items"]
    return [t for t in items if t["type"] == type_]


def test_an_ha_restart_is_admitted_by_the_ratio_as_a_creation_is(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A 12-vCPU HA VM of a lost node1 does not fit node2's 8 vCPUs at ratio 1, as a creation
    there would not; at ratio 2 it restarts on a node of 8 vCPUs."""
    server, agents = cluster
    c = server.client
    _all_up(c, 2)
    c.put("/settings/health.startup_grace", json={"value": 0})
    body = {"vcpus": 12, "memory_mb": 1024, "node": "node1", "start": True}
    assert _wait(c, _create(c, "hv", **body))["state"] == "succeeded"
    refused = _error(_create(c, "twin", **{**body, "node": "node2"}))
    reason = "8 vCPUs free (8 x ratio 1.0 - 0 provisioned), 12 needed"
    assert refused == f"node node2 cannot take the VM: {reason}"

    agents[0].stop()  # node1's agent dies; no power driver: its fence fails
    agents.pop(0)
    wait_until(
        lambda: c.get("/nodes/node1").json()["health"] == "fence_failed", "the fence to fail"
    )
    _wait(c, _task_answer(c.post("/nodes/node1/confirm-down").json()))
    wait_until(lambda: _task_of(c, "hv", "ha_restart"), "an HA restart of hv")
    first = _wait(c, _task_answer(_task_of(c, "hv", "ha_restart")[0]))
    assert first["result"]["placement"]["chosen"] is None
    assert first["result"]["placement"]["rejected"] == [
        {"node": "node1", "reason": "is the VM's current node"},
        {"node": "node2", "reason": reason},
    ]
    assert c.get("/vms/hv").json()["autostart"] is True  # waits for capacity

    _ratio(c, 2)  # a node coming up retries the waiting HA VMs
    agents.append(AgentThread(server, "node3", tmp_path, vcpus=8, memory_mb=32768))
    wait_until(
        lambda: (
            c.get("/vms/hv").json()["node"] == "node3"
            and c.get("/vms/hv").json()["status"] == "ACTIVE"
        ),
        "hv to restart on node3",
    )
    [second] = [t for t in _task_of(c, "hv", "ha_restart") if t["id"] != first["id"]]
    placement = second["result"]["placement"]
    assert (placement["chosen"], placement["selector"]) == ("node3", "mem")
    assert [r["node"] for r in placement["ranking"]] == ["node3", "node2"]  # 12 <= 8 x 2
    assert c.get("/nodes/node3").json()["allocated"]["vcpus"] == 12
