"""What reading VMs costs the server in transactions: one per call of GET /vms/{name}, of
GET /vms and of GET /status, the VM's hiddenness checked in it (not in a transaction of its
own) and the dead threshold read through it (not through a transaction of its own); a page
reads its VMs' nodes, disks and resizes with the same statements whatever its length; the
answers as before."""

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
    answer, begun, _ = _traced(server, path, **params)
    return answer, begun


def _traced(
    server: ServerThread, path: str, **params: Any
) -> tuple[httpx.Response, int, list[str]]:
    """`_get`'s answer and count, and the SQL text of every statement the request sent."""
    request_id = f"probe-{uuid.uuid4()}"
    begun: list[str | None] = []
    sent: list[str] = []

    def on_begin(_conn: Connection) -> None:
        begun.append(actors.current_request())

    def on_execute(_conn: Connection, _cursor: Any, statement: str, *_: Any) -> None:
        if actors.current_request() == request_id:
            sent.append(statement)

    engine = server.runtime.db.engine
    event.listen(engine, "begin", on_begin)
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        answer = server.client.get(path, params=params, headers={"X-Request-Id": request_id})
    finally:
        event.remove(engine, "begin", on_begin)
        event.remove(engine, "before_cursor_execute", on_execute)
    assert answer.headers["x-request-id"] == request_id
    return answer, begun.count(request_id), sent


def _created(server: ServerThread, name: str, **more: Any) -> None:
    body = {"name": name, "vcpus": 1, "memory_mb": 256, **more}
    answer = server.client.post("/vms", json=body)
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


def test_status_is_one_transaction(cluster: Cluster) -> None:
    server, _ = cluster
    assert server.client.post("/nodes", json={"name": "node3"}).status_code == 201
    status, count = _get(server, "/status")
    assert status.status_code == 200 and status.json()["maintenance"] is False
    assert status.json()["nodes"] == {"total": 3, "connected": 2}  # (node3 never connected)
    assert count == 1
    assert server.client.put("/cluster/maintenance", json={"maintenance": True}).status_code == 200
    status, count = _get(server, "/status")
    assert status.json()["maintenance"] is True
    assert count == 1


def test_a_page_sends_the_same_statements_whatever_its_length(cluster: Cluster) -> None:
    """The VMs' nodes, disks and open resizes are read with a list bound as one parameter
    (store/any_of.py), not one placeholder per VM: one SQL text for every page length."""
    server, _ = cluster
    _created(server, "web1", node="node1", disks=[{"size_mb": 10}, {"size_mb": 20}])
    _created(server, "web2", node="node2", disks=[{"size_mb": 30}])
    _created(server, "web3", node="node1")
    one, _, sent_one = _traced(server, "/vms", limit=1)
    three, _, sent_three = _traced(server, "/vms", limit=3)
    assert [vm["name"] for vm in one.json()["items"]] == ["web1"]
    listed = {vm["name"]: vm for vm in three.json()["items"]}
    assert list(listed) == ["web1", "web2", "web3"]
    assert [d["size_mb"] for d in listed["web1"]["disks"]] == [10, 20]
    assert [d["device"] for d in listed["web1"]["disks"]] == ["vda", "vdb"]
    assert [d["size_mb"] for d in listed["web2"]["disks"]] == [30]
    assert listed["web3"]["disks"] == []
    assert all(vm["reported_at"] is not None for vm in listed.values())
    # (the dead threshold's read is cached for a second: it may be in one and not the other)
    sent_one = [s for s in sent_one if "FROM settings" not in s]
    sent_three = [s for s in sent_three if "FROM settings" not in s]
    assert len(sent_one) >= 5  # the page, its count, the nodes, the disks, the resizes
    assert sent_one == sent_three
