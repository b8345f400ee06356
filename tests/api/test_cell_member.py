"""What a cell does for an API server moving a VM between cells: a hidden copy of a VM
(import), hide and unhide, and hidden VMs kept out of sight but holding their room."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.cluster import AgentThread, ServerThread, wait_until

MAC = "52:54:00:aa:bb:01"


def _record(name: str = "moved", **changes: Any) -> dict[str, Any]:
    return {
        "name": name,
        "uuid": str(uuid.uuid4()),
        "vcpus": 2,
        "memory_mb": 2048,
        "node": "node1",
        "flavor": {"id": "f-1", "name": "medium", "vcpus": 2, "memory_mb": 2048, "disk_mb": 1024},
        "nics": [{"network": "default", "mac": MAC}],
        "disks": [
            {"device": "vda", "size_mb": 1024, "pool": "local", "format": "qcow2"},
            {"device": "vdb", "size_mb": 512, "pool": "local", "format": "raw"},
        ],
        "ha": "restart",
        **changes,
    }


def _allocated_memory(server: ServerThread, node: str) -> int:
    return int(server.client.get(f"/nodes/{node}").json()["allocated"]["memory_mb"])


def test_an_imported_vm_is_hidden_but_holds_its_room_and_macs(
    cluster: tuple[ServerThread, list[AgentThread]],
) -> None:
    server, _ = cluster
    api = server.client
    before = _allocated_memory(server, "node1")
    record = _record()
    made = api.post("/vms/import", json=record)
    assert made.status_code == 201, made.text
    vm = made.json()
    assert vm["hidden"] is True and vm["node"] == "node1" and vm["uuid"] == record["uuid"]
    assert vm["status"] == "SHUTOFF" and vm["flavor"]["name"] == "medium"
    assert [(d["device"], d["state"]) for d in vm["disks"]] == [
        ("vda", "reserved"),
        ("vdb", "reserved"),
    ]
    # Out of sight: lists, counts, a show without ?hidden=true, operations.
    assert api.get("/vms").json()["total"] == 0
    assert api.get("/status").json()["vms"]["total"] == 0
    assert api.get("/vms/moved").status_code == 404
    assert api.post("/vms/moved/start").status_code == 404
    assert api.get("/vms/moved", params={"hidden": "true"}).json()["hidden"] is True
    # Still holding its room and its MAC.
    assert _allocated_memory(server, "node1") == before + 2048
    taken = api.post(
        "/vms",
        json={"name": "other", "vcpus": 1, "memory_mb": 64, "nics": [{"network": "n", "mac": MAC}]},
    )
    assert taken.status_code == 409
    # The same copy again is the copy made; another VM of that name is refused.
    again = api.post("/vms/import", json=record)
    assert again.status_code == 201 and again.json()["uuid"] == record["uuid"]
    clash = api.post("/vms/import", json=_record(nics=[]))
    assert clash.status_code == 409
    # Shown, it is an ordinary VM; hidden again, out of sight again.
    assert api.post("/vms/moved/unhide").json()["hidden"] is False
    assert [v["name"] for v in api.get("/vms").json()["items"]] == ["moved"]
    assert api.post("/vms/moved/hide").json()["hidden"] is True
    assert api.get("/vms").json()["items"] == []


@pytest.mark.parametrize(
    ("changes", "status", "words"),
    [
        ({"node": "node2", "memory_mb": 64 * 1024}, 409, "node2"),
        ({"disks": [{"device": "vda", "size_mb": 64, "pool": "nope", "format": "qcow2"}]}, 422,
         "no pool nope"),
        ({"node": "ghost"}, 404, "ghost"),
    ],
)  # fmt: skip
def test_an_import_that_does_not_fit_is_refused_and_leaves_nothing(
    cluster: tuple[ServerThread, list[AgentThread]], changes: dict[str, Any], status: int,
    words: str,
) -> None:  # fmt: skip
    server, _ = cluster
    answer = server.client.post("/vms/import", json=_record(nics=[], **changes))
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]["message"]
    assert server.client.get("/vms/moved", params={"hidden": "true"}).status_code == 404
    assert server.client.get("/volumes").json()["total"] == 0


def test_a_hidden_copy_is_deleted_with_its_reserved_disks(
    cluster: tuple[ServerThread, list[AgentThread]],
) -> None:
    server, _ = cluster
    api = server.client
    assert api.post("/vms/import", json=_record()).status_code == 201
    deleted = api.delete("/vms/moved", params={"hidden": "true"})
    assert deleted.status_code == 202, deleted.text
    task = api.get(f"/tasks/{deleted.json()['task']['id']}/wait", params={"timeout": 20}).json()
    assert task["state"] == "succeeded", task
    wait_until(lambda: api.get("/vms/moved", params={"hidden": "true"}).status_code == 404,
               "the hidden copy to be gone")  # fmt: skip
    assert api.get("/volumes").json()["total"] == 0
    free = api.post(
        "/vms",
        json={"name": "n", "vcpus": 1, "memory_mb": 64, "nics": [{"network": "n", "mac": MAC}]},
    )
    assert free.status_code == 202, free.text
