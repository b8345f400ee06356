"""VM operations as tasks through the API: steps, rollback, cancel, events."""

from __future__ import annotations

import threading
from typing import Any

from bollard.sim.fabric import Fabric
from bollard.sim.models import FaultMode
from tests.api.test_api_vms import Cluster, _wait
from tests.support.cluster import wait_until


def _fabric(cluster: Cluster) -> Fabric:
    return Fabric(cluster[1][0].config.fabric_dir or "")


def test_task_show_lists_steps(cluster: Cluster) -> None:
    c = cluster[0].client
    created = _wait(c, c.post("/vms", json={"name": "s1", "vcpus": 1, "memory_mb": 128}))
    task = c.get(f"/tasks/{created['id']}").json()
    assert [(s["name"], s["state"]) for s in task["steps"]] == [
        ("define", "done"),
        ("start", "skipped"),
    ]
    define = task["steps"][0]
    assert define["started_at"] <= define["finished_at"]
    assert define["result"]["vm"]["power"] == "stopped"
    assert list(define["commands"]) == ["define"]
    command = c.get(f"/commands/{define['commands']['define']}").json()
    assert command["task_id"] == task["id"] and command["state"] == "COMPLETED"


def test_create_rolls_back_when_start_fails(cluster: Cluster) -> None:
    c = cluster[0].client
    _fabric(cluster).host("node1").faults.set("start", FaultMode.FAIL)
    answer = c.post(
        "/vms", json={"name": "rb", "vcpus": 1, "memory_mb": 128, "node": "node1", "start": True}
    )
    task = _wait(c, answer)
    assert task["state"] == "rolled_back"
    assert "injected fault" in task["error"]
    assert [(s["name"], s["state"]) for s in task["steps"]] == [
        ("define", "undone"),
        ("start", "undone"),
    ]
    vm = c.get("/vms/rb").json()
    assert (vm["vm_state"], vm["status"], vm["task_state"]) == ("error", "ERROR", None)
    assert "injected fault" in vm["fault"]
    assert _fabric(cluster).host("node1").get_vm(vm["uuid"]) is None  # the define was undone
    assert _wait(c, c.delete("/vms/rb"))["state"] == "succeeded"
    assert c.get("/nodes/node1").json()["allocated"] == {"vcpus": 0, "memory_mb": 0}


def test_a_failed_start_fails_without_rollback(cluster: Cluster) -> None:
    c = cluster[0].client
    _wait(c, c.post("/vms", json={"name": "f1", "vcpus": 1, "memory_mb": 128, "node": "node2"}))
    _fabric(cluster).host("node2").faults.set("start", FaultMode.FAIL)
    task = _wait(c, c.post("/vms/f1/start"))
    assert task["state"] == "failed"
    assert task["steps"][0]["state"] == "failed" and "injected" in task["steps"][0]["error"]
    vm = c.get("/vms/f1").json()
    assert (vm["status"], vm["task_state"]) == ("SHUTOFF", None)
    assert "injected fault" in vm["fault"]


def test_cancel_aborts_the_command_in_flight(cluster: Cluster) -> None:
    c = cluster[0].client
    _wait(c, c.post("/vms", json={"name": "cx", "vcpus": 1, "memory_mb": 128, "node": "node1"}))
    _fabric(cluster).host("node1").faults.set("start", FaultMode.HANG)
    started = c.post("/vms/cx/start").json()["task"]
    wait_until(
        lambda: c.get(f"/tasks/{started['id']}").json()["steps"][0]["state"] == "running",
        "the start step to run",
    )
    cancelled = c.post(f"/tasks/{started['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["cancel_requested"]
    task = _wait(c, cancelled_answer(started))
    assert task["state"] == "failed"
    assert "cancel" in task["error"]
    assert c.get("/vms/cx").json()["status"] == "SHUTOFF"
    again = c.post(f"/tasks/{started['id']}/cancel")
    assert again.status_code == 409


def cancelled_answer(task: dict[str, Any]) -> Any:
    class _Answer:  # the shape _wait expects
        status_code = 202
        text = ""

        def json(self) -> dict[str, Any]:
            return {"task": task}

    return _Answer()


def test_events_record_tasks_and_steps_and_can_be_followed(cluster: Cluster) -> None:
    c = cluster[0].client
    _wait(c, c.post("/vms", json={"name": "ev", "vcpus": 1, "memory_mb": 128}))
    page = c.get("/events", params={"vm": "ev"}).json()
    kinds = [e["kind"] for e in page["items"]]
    assert kinds[0] == "task.created" and kinds[-1] == "task.succeeded"
    assert "step.done" in kinds and "step.skipped" in kinds
    last = page["last_id"]

    followed: list[dict[str, Any]] = []

    def follow() -> None:
        answer = c.get("/events", params={"vm": "ev", "after": last, "wait": 10}).json()
        followed.extend(answer["items"])

    reader = threading.Thread(target=follow)
    reader.start()
    _wait(c, c.post("/vms/ev/start"))
    reader.join(timeout=15)
    assert not reader.is_alive()
    assert followed and followed[0]["kind"] == "task.created"
    assert all(e["id"] > last for e in followed)
    empty = c.get("/events", params={"vm": "ev", "after": 10**9, "wait": 0}).json()
    assert empty == {"items": [], "last_id": 10**9, "more": False}
