"""Moving a VM between cells through the API server: a cross-cell resize confirmed, a
cross-cell migration reverted, the policy that allows them, the weigher that chooses the
target, a move that cannot be done rolled back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cells import Cells, running_cells
from tests.support.cluster import wait_until
from tests.support.databases import SchemaTemplates

DEADLINE = 120.0


@pytest.fixture
def cells(schema_templates: SchemaTemplates, tmp_path: Path) -> Iterator[Cells]:
    with running_cells(schema_templates, tmp_path, nodes=1) as deployment:
        api = deployment.client
        for key in ("policy.vm_resize_cross_cell", "policy.vm_migrate_cross_cell"):
            assert api.put(f"/settings/{key}", json={"value": "operator"}).status_code == 200
        for name, vcpus, memory, disk in (("small", 1, 256, 64), ("big", 2, 512, 128)):
            made = api.post(
                "/flavors",
                json={"name": name, "vcpus": vcpus, "memory_mb": memory, "disk_mb": disk},
            )
            assert made.status_code == 201, made.text
        yield deployment


def _vm(cells: Cells, name: str, cell: str) -> dict[str, Any]:
    made = cells.client.post(
        "/vms", json={"name": name, "flavor": "small", "cell": cell, "start": True,
                      "disks": [{"size_mb": 32}]},
    )  # fmt: skip
    assert made.status_code == 202, made.text
    return _wait_vm(cells, name, "ACTIVE")


def _wait_vm(cells: Cells, name: str, status: str) -> dict[str, Any]:
    def look() -> dict[str, Any] | None:
        vm: dict[str, Any] = cells.client.get(f"/vms/{name}").json()
        return vm if vm.get("status") == status else None

    found: dict[str, Any] = wait_until(look, f"{name} to be {status}", timeout=DEADLINE)
    return found


def _done(cells: Cells, answer: Any) -> dict[str, Any]:
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task"]["id"]

    def ended() -> dict[str, Any] | None:
        task: dict[str, Any] = cells.client.get(
            f"/tasks/{task_id}/wait", params={"timeout": 5}
        ).json()
        return (
            task
            if task["state"] in ("succeeded", "failed", "rolled_back", "needs_attention")
            else None
        )

    task: dict[str, Any] = wait_until(ended, f"task {task_id} to end", timeout=DEADLINE)
    return task


def _listed(cells: Cells) -> list[tuple[str, str]]:
    return [(v["name"], v["cell"]) for v in cells.client.get("/vms").json()["items"]]


def _in_cell(cells: Cells, cell: str, name: str) -> dict[str, Any] | None:
    answer = cells.cells[cell].client.get(f"/vms/{name}", params={"hidden": "true"})
    return answer.json() if answer.status_code == 200 else None


def test_a_resize_into_another_cell_is_confirmed(cells: Cells) -> None:
    api = cells.client
    _vm(cells, "v1", "cell1")
    answer = api.post("/vms/v1/resize", json={"flavor": "big", "to": "cell2-node1"})
    assert answer.status_code == 202, answer.text
    assert answer.json()["vm"]["status"] == "RESIZE"
    task = _done(cells, answer)
    assert task["state"] == "succeeded", task
    assert task["cell"] is None and task["type"] == "cross_cell_move"
    vm = _wait_vm(cells, "v1", "VERIFY_RESIZE")
    assert (vm["cell"], vm["node"], vm["vcpus"], vm["memory_mb"]) == (
        "cell2",
        "cell2-node1",
        2,
        512,
    )
    assert vm["resize"]["cross_cell"] is True
    assert {d["device"]: d["size_mb"] for d in vm["disks"]} == {"vda": 128, "vdb": 32}
    assert _listed(cells) == [("v1", "cell2")]
    source = _in_cell(cells, "cell1", "v1")
    assert source is not None and source["hidden"] is True and source["status"] == "SHUTOFF"
    # Its past actions came with it: its creation in cell1 is among its actions in cell2.
    actions = api.get("/vms/v1/actions").json()["items"]
    assert actions[0]["cell"] == "cell2"
    created = [a for a in actions if a["action"] == "create"]
    assert len(created) == 1 and created[0]["result"] == "success"
    assert cells.cells["cell1"].client.get(f"/tasks/{created[0]['task_id']}").status_code == 200
    # While it waits, nothing but confirm or revert.
    assert api.post("/vms/v1/stop").status_code == 409
    confirmed = _done(cells, api.post("/vms/v1/resize/confirm"))
    assert confirmed["state"] == "succeeded", confirmed
    assert _in_cell(cells, "cell1", "v1") is None
    assert _wait_vm(cells, "v1", "ACTIVE")["cell"] == "cell2"
    record = api.get(f"/migrations/{task['id']}").json()
    assert record["status"] == "confirmed" and record["cell"] is None
    newest = api.get("/tasks", params={"order": "newest", "limit": 50}).json()["items"]
    ours = {t["id"]: t["cell"] for t in newest if t["type"].startswith("cross_cell")}
    assert ours == {task["id"]: None, confirmed["id"]: None}
    listed = api.get("/migrations").json()["items"]
    assert any(m["id"] == task["id"] and m["cell"] is None for m in listed)
    # A VM's own lists have its moves too, and a move's task its steps.
    of_vm = api.get("/tasks", params={"vm": "v1", "order": "newest"}).json()["items"]
    assert {task["id"], confirmed["id"]} <= {t["id"] for t in of_vm}
    assert {t["cell"] for t in of_vm} == {None, "cell2"}
    assert [m["id"] for m in api.get("/migrations", params={"vm": "v1"}).json()["items"]] == [
        task["id"]
    ]
    steps = api.get(f"/tasks/{task['id']}").json()["steps"]
    assert [s["name"] for s in steps][:3] == ["check", "copy_records", "stop_source"]
    assert all(s["state"] in ("done", "skipped") for s in steps)
    for server in cells.cells.values():
        images = server.client.get(f"/images/move-{task['id']}")
        assert images.status_code == 404 or images.json()["disks"] == []
    assert not any((cells.api.config.data_dir / "images").glob("*/*"))


def test_a_migration_into_another_cell_is_reverted(cells: Cells) -> None:
    api = cells.client
    _vm(cells, "v2", "cell2")
    refused = api.post("/vms/v2/migrate", json={"to": "cell1-node1"})
    assert refused.status_code == 422
    assert "by shutdown only" in refused.json()["error"]["message"]
    moved = _done(
        cells, api.post("/vms/v2/migrate", json={"to": "cell1-node1", "method": "shutdown"})
    )
    assert moved["state"] == "succeeded", moved
    assert _wait_vm(cells, "v2", "VERIFY_RESIZE")["cell"] == "cell1"
    reverted = _done(cells, api.post("/vms/v2/resize/revert"))
    assert reverted["state"] == "succeeded", reverted
    vm = _wait_vm(cells, "v2", "ACTIVE")
    assert (vm["cell"], vm["node"], vm["hidden"]) == ("cell2", "cell2-node1", False)
    assert _in_cell(cells, "cell1", "v2") is None
    assert _listed(cells) == [("v2", "cell2")]


def test_moves_between_cells_need_the_policy(cells: Cells) -> None:
    api = cells.client
    _vm(cells, "v3", "cell1")
    assert (
        api.put("/settings/policy.vm_resize_cross_cell", json={"value": "nobody"}).status_code
        == 200
    )
    refused = api.post("/vms/v3/resize", json={"flavor": "big", "to": "cell2-node1"})
    assert refused.status_code == 403
    assert "vm:resize:cross_cell" in refused.json()["error"]["message"]
    setting = api.get("/settings/policy.vm_resize_cross_cell").json()
    assert setting["value"] == "nobody" and setting["cells"] is None
    assert (
        cells.cells["cell1"].client.get("/settings/policy.vm_resize_cross_cell").json()["value"]
        == "nobody"
    )


def test_the_weigher_keeps_a_vm_in_its_cell_unless_the_cell_drains(
    cells: Cells, tmp_path: Path
) -> None:
    api = cells.client
    cells.add_agent("cell1", "cell1-node2", tmp_path)
    cells.wait_mapped("cell1-node2")
    _vm(cells, "v4", "cell1")
    # Its own cell has room: the migration stays there (the cell's own task).
    stays = _done(cells, api.post("/vms/v4/migrate", json={"method": "shutdown"}))
    assert stays["cell"] == "cell1" and stays["state"] == "succeeded", stays
    here = _wait_vm(cells, "v4", "ACTIVE")
    assert here["cell"] == "cell1" and here["node"] != "cell1-node1"
    # A negative multiplier drains the cell: the next one leaves it.
    assert api.patch("/cells/cell1", json={"weight_multiplier": -1000000}).status_code == 200
    moved = _done(cells, api.post("/vms/v4/migrate", json={"method": "shutdown"}))
    assert moved["state"] == "succeeded", moved
    assert _wait_vm(cells, "v4", "VERIFY_RESIZE")["node"] == "cell2-node1"


def test_a_move_that_cannot_be_done_is_rolled_back(cells: Cells) -> None:
    api = cells.client
    _vm(cells, "v5", "cell1")
    too_big = api.post(
        "/flavors", json={"name": "huge", "vcpus": 1, "memory_mb": 16 * 1024, "disk_mb": 64}
    )
    assert too_big.status_code == 201
    _vm(cells, "filler", "cell2")  # leaves less than 15 GiB on cell2-node1
    task = _done(cells, api.post("/vms/v5/resize", json={"flavor": "huge", "to": "cell2-node1"}))
    assert task["state"] == "rolled_back", task
    vm = _wait_vm(cells, "v5", "ACTIVE")
    assert (vm["cell"], vm["node"], vm["vcpus"]) == ("cell1", "cell1-node1", 1)
    assert _in_cell(cells, "cell2", "v5") is None
    assert api.get(f"/migrations/{task['id']}").json()["status"] == "failed"


def test_a_move_left_in_verify_resize_is_confirmed_after_the_window(cells: Cells) -> None:
    api = cells.client
    _vm(cells, "v6", "cell1")
    assert api.put("/settings/resize.confirm_window", json={"value": 1}).status_code == 200
    task = _done(cells, api.post("/vms/v6/resize", json={"flavor": "big", "to": "cell2-node1"}))
    assert task["state"] == "succeeded", task
    wait_until(
        lambda: api.get(f"/migrations/{task['id']}").json()["status"] == "confirmed",
        "the move to be confirmed by itself",
        timeout=DEADLINE,
    )
    assert _wait_vm(cells, "v6", "ACTIVE")["cell"] == "cell2"
    assert _in_cell(cells, "cell1", "v6") is None
    noted = api.get("/events", params={"vm": "v6", "limit": 200}).json()["items"]
    assert any(e["kind"] == "resize.auto_confirmed" and e["cell"] is None for e in noted)


def test_a_move_to_a_cell_that_does_not_answer_rolls_back_after_the_wait(cells: Cells) -> None:
    api = cells.client
    _vm(cells, "v7", "cell1")
    cells.stop_cell("cell2")
    answer = api.post("/vms/v7/resize", json={"flavor": "big", "to": "cell2-node1"})
    task = _done(cells, answer)
    assert task["state"] == "failed", task
    assert "cell cell2 did not answer" in task["error"]
    vm = _wait_vm(cells, "v7", "ACTIVE")
    assert (vm["cell"], vm["node"], vm["vcpus"]) == ("cell1", "cell1-node1", 1)
    assert api.get(f"/migrations/{task['id']}").json()["status"] == "failed"
    assert api.post("/vms/v7/stop").status_code == 202  # nothing holds it any more
