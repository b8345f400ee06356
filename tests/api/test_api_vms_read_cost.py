"""What reading VMs costs the server in transactions: one per call of GET /vms/{name} and of
GET /vms, the VM's hiddenness checked in it (not in a transaction of its own) and the dead
threshold read through it (not through a transaction of its own); the answers as before."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import Connection, event

from bollard.domain import actors
from tests.support.cluster import AgentThread, ServerThread

Cluster = tuple[ServerThread, list[AgentThread]]


def _get(server: ServerThread, path: str, **params: Any) -> tuple[httpx.Response, int]:
    """The answer to GET `path`, and how many transactions the server began for it (those
    begun under its request id: the request's own work, not the background loops')."""
    request_id = f"probe-{uuid.uuid4()}"
    begun: list[str | None] = []

    def on_begin(_conn: Connection) -> None:
        begun.append(actors.current_request())

    engine = server.runtime.db.engine
    event.listen(engine, "begin", on_begin)
    try:
        answer = server.client.get(path, params=params, headers={"X-Request-Id": request_id})
    finally:
        event.remove(engine, "begin", on_begin)
    assert answer.headers["x-request-id"] == request_id
    return answer, begun.count(request_id)


def _created(server: ServerThread, name: str) -> None:
    answer = server.client.post("/vms", json={"name": name, "vcpus": 1, "memory_mb": 256})
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task"]["id"]
    task = server.client.get(f"/tasks/{task_id}/wait", params={"timeout": 20}).json()
    assert task["state"] == "succeeded", task


def test_a_vm_read_is_one_transaction(cluster: Cluster) -> None:
    server, _ = cluster
    _created(server, "web1")
    shown, count = _get(server, "/vms/web1")
    assert shown.status_code == 200 and shown.json()["name"] == "web1"
    assert count == 1
    listed, count = _get(server, "/vms", limit=50)
    assert [vm["name"] for vm in listed.json()["items"]] == ["web1"]
    assert count == 1


def test_a_hidden_vm_is_not_found_in_the_same_transaction(cluster: Cluster) -> None:
    server, _ = cluster
    _created(server, "web1")
    assert server.client.post("/vms/web1/hide").json()["hidden"] is True
    hidden, count = _get(server, "/vms/web1")
    assert hidden.status_code == 404
    assert hidden.json() == {"error": {"code": "not-found", "message": "VM 'web1' does not exist"}}
    assert count == 1
    missing, _ = _get(server, "/vms/web2")
    assert missing.json() == {"error": {"code": "not-found", "message": "VM 'web2' does not exist"}}
    asked, count = _get(server, "/vms/web1", hidden="true")
    assert asked.status_code == 200 and asked.json()["hidden"] is True
    assert count == 1
    assert server.client.post("/vms/web1/unhide").json()["hidden"] is False
    shown, count = _get(server, "/vms/web1")
    assert shown.status_code == 200 and shown.json()["hidden"] is False
    assert count == 1
