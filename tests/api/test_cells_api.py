"""The API server in front of two cells: cells, routing, gathered lists, flavors, identity."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cells import Cells, running_cells
from tests.support.cluster import wait_until
from tests.support.databases import SchemaTemplates


@pytest.fixture
def cells(schema_templates: SchemaTemplates, tmp_path: Path) -> Iterator[Cells]:
    with running_cells(schema_templates, tmp_path, nodes=1) as deployment:
        yield deployment


def _vm(cells: Cells, name: str, **body: Any) -> dict[str, Any]:
    answer = cells.client.post(
        "/vms", json={"name": name, "vcpus": 1, "memory_mb": 256, "start": True, **body}
    )
    assert answer.status_code == 202, answer.text
    created: dict[str, Any] = answer.json()
    return created


def _settled(cells: Cells, name: str, status: str) -> dict[str, Any]:
    def look() -> dict[str, Any] | None:
        vm: dict[str, Any] = cells.client.get(f"/vms/{name}").json()
        return vm if vm.get("status") == status else None

    found: dict[str, Any] = wait_until(look, f"{name} to be {status}")
    return found


def test_cells_are_listed_with_their_nodes(cells: Cells) -> None:
    page = cells.client.get("/cells").json()
    assert [c["name"] for c in page["items"]] == ["cell1", "cell2"]
    assert all(c["state"] == "up" and c["nodes"] == 1 for c in page["items"])
    shown = cells.client.get("/cells/cell2").json()
    assert shown["node_names"] == ["cell2-node1"]
    assert shown["status"]["nodes"]["total"] == 1
    status = cells.client.get("/status").json()
    assert status["mode"] == "cells"
    assert status["nodes"] == {"total": 2, "connected": 2}
    assert [c["state"] for c in status["cells"]] == ["up", "up"]


def test_a_cell_is_checked_before_it_is_added(cells: Cells) -> None:
    server = cells.cells["cell1"]
    wrong = cells.client.post(
        "/cells", json={"name": "cell9", "url": server.url, "token": "not-the-token"}
    )
    assert wrong.status_code == 422
    assert wrong.json()["error"]["message"].startswith(f"cell9: {server.url}:")
    again = cells.client.post(
        "/cells", json={"name": "cell1", "url": server.url, "token": server.token}
    )
    assert again.status_code == 409
    api_itself = cells.client.post(
        "/cells", json={"name": "loop", "url": cells.api.url, "token": cells.api.token}
    )
    assert api_itself.status_code == 422
    assert "is an API server" in api_itself.json()["error"]["message"]
    busy = cells.client.delete("/cells/cell1")
    assert busy.status_code == 409
    assert busy.json()["error"]["message"] == "cell cell1 still has 1 nodes and 0 VMs"
    listed = cells.client.get("/cells").json()["items"]
    assert "token" not in str(listed) and server.token not in str(listed)


def test_vms_go_to_their_cell_and_are_listed_once_with_it(cells: Cells) -> None:
    _vm(cells, "a1", cell="cell1")
    _vm(cells, "b1", cell="cell2")
    _vm(cells, "a2", node="cell1-node1")
    assert _settled(cells, "b1", "ACTIVE")["cell"] == "cell2"
    assert cells.cells["cell2"].client.get("/vms/b1").status_code == 200
    assert cells.cells["cell1"].client.get("/vms/b1").status_code == 404
    assert _settled(cells, "a2", "ACTIVE")["node"] == "cell1-node1"
    stopped = cells.client.post("/vms/b1/stop")
    assert stopped.status_code == 202 and stopped.json()["vm"]["cell"] == "cell2"
    _settled(cells, "b1", "SHUTOFF")
    # Pages of one: every VM once, in name order, across both cells.
    seen: list[tuple[str, str]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = cells.client.get("/vms", params=params).json()
        seen += [(v["name"], v["cell"]) for v in page["items"]]
        assert page["total"] == 3 and page["unreachable"] == []
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [("a1", "cell1"), ("a2", "cell1"), ("b1", "cell2")]
    nodes = cells.client.get("/nodes").json()["items"]
    assert [(n["name"], n["cell"]) for n in nodes] == [
        ("cell1-node1", "cell1"),
        ("cell2-node1", "cell2"),
    ]
    duplicate = cells.client.post(
        "/vms", json={"name": "b1", "vcpus": 1, "memory_mb": 256, "cell": "cell1"}
    )
    assert duplicate.status_code == 409
    assert "cell2" in duplicate.json()["error"]["message"]
    unknown = cells.client.post(
        "/vms", json={"name": "z", "vcpus": 1, "memory_mb": 256, "cell": "nowhere"}
    )
    assert unknown.status_code == 422


def test_tasks_are_found_in_their_cell_and_gathered(cells: Cells) -> None:
    task = _vm(cells, "t1", cell="cell2")["task"]
    shown = cells.client.get(f"/tasks/{task['id']}").json()
    assert shown["cell"] == "cell2" and shown["vm"] == "t1"
    _vm(cells, "t2", cell="cell1")
    newest = cells.client.get("/tasks", params={"order": "newest", "limit": 10}).json()
    ids = [t["id"] for t in newest["items"]]
    assert ids == sorted(ids, reverse=True) and task["id"] in ids
    assert {t["cell"] for t in newest["items"]} == {"cell1", "cell2"}
    # A list of one VM's things comes from its cell only (the other has no such VM).
    for path in ("/tasks", "/migrations", "/volumes", "/commands"):
        page = cells.client.get(path, params={"vm": "t1"})
        assert page.status_code == 200, (path, page.text)
        assert all(i["cell"] == "cell2" for i in page.json()["items"]), path
    assert [t["id"] for t in cells.client.get("/tasks", params={"vm": "t1"}).json()["items"]] == [
        task["id"]
    ]
    assert cells.client.get("/tasks", params={"vm": "nobody"}).status_code == 404


def test_a_silent_cell_is_named_and_its_vms_shown_unknown(cells: Cells) -> None:
    _vm(cells, "a1", cell="cell1")
    _vm(cells, "b1", cell="cell2")
    _vm(cells, "b2", cell="cell2")
    _settled(cells, "b2", "ACTIVE")
    cells.stop_cell("cell2")
    page = cells.client.get("/vms").json()
    assert [u["cell"] for u in page["unreachable"]] == ["cell2"]
    by_name = {v["name"]: v for v in page["items"]}
    assert sorted(by_name) == ["a1", "b1", "b2"]
    assert by_name["b1"]["status"] == "UNKNOWN" and by_name["b1"]["unreachable"] is True
    assert by_name["a1"]["cell"] == "cell1" and "unreachable" not in by_name["a1"]
    assert page["total"] == 3
    routed = cells.client.get("/vms/b1")
    assert routed.status_code == 503
    assert routed.json()["error"]["code"] == "cell-unreachable"
    assert "cell2" in routed.json()["error"]["message"]
    status = cells.client.get("/status").json()
    assert [(c["name"], c["state"]) for c in status["cells"]] == [
        ("cell1", "up"),
        ("cell2", "unreachable"),
    ]
    nodes = cells.client.get("/nodes").json()
    assert {n["name"]: n.get("health") for n in nodes["items"]}["cell2-node1"] == "unknown"
    assert cells.client.get("/vms/a1").status_code == 200


def test_a_stale_mapping_is_repaired_from_the_cells(cells: Cells) -> None:
    _vm(cells, "m1", cell="cell2")
    _settled(cells, "m1", "ACTIVE")
    work = cells.api.runtime.work
    from bollard.store import cells as cell_store

    with work.write() as conn:
        cell_store.set_vm(conn, "m1", "cell1", cells.api.runtime.clock.now(), uuid=None)
    assert cells.client.get("/vms/m1").json()["cell"] == "cell2"
    with work.read() as conn:
        mapping = cell_store.vm_cell(conn, "m1")
    assert mapping is not None and mapping.cell == "cell2"
    with work.write() as conn:
        cell_store.unmap_vm(conn, "m1")
    assert cells.client.post("/vms/m1/stop").status_code == 202
    with work.read() as conn:
        mapping = cell_store.vm_cell(conn, "m1")
    assert mapping is not None and mapping.cell == "cell2"
    assert cells.client.get("/vms/nothere").status_code == 404


def test_flavors_live_in_the_api_database_and_reach_every_cell(cells: Cells) -> None:
    made = cells.client.post("/flavors", json={"name": "small", "vcpus": 1, "memory_mb": 512})
    assert made.status_code == 201, made.text
    flavor_id = made.json()["id"]
    for server in cells.cells.values():
        assert server.client.get("/flavors/small").json()["id"] == flavor_id
    created = cells.client.post("/vms", json={"name": "f1", "flavor": "small", "cell": "cell2"})
    assert created.status_code == 202, created.text
    assert cells.client.get("/flavors/small").json()["used_by"] == 1
    refused = cells.client.delete("/flavors/small")
    assert refused.status_code == 409
    changed = cells.client.patch("/flavors/small", json={"description": "one core"})
    assert changed.status_code == 200
    assert cells.cells["cell1"].client.get("/flavors/small").json()["description"] == "one core"
    cells.client.post("/flavors", json={"name": "spare", "vcpus": 1, "memory_mb": 512})
    assert cells.client.delete("/flavors/spare").status_code == 204
    assert cells.cells["cell2"].client.get("/flavors/spare").status_code == 404


def test_users_act_through_the_api_server_with_their_role(cells: Cells) -> None:
    for user, role in (("olga", "operator"), ("rita", "reader")):
        assert cells.client.post("/users", json={"name": user, "role": role}).status_code == 201
    tokens = {
        user: cells.client.post("/tokens", json={"user": user}).json()["token"]
        for user in ("olga", "rita")
    }
    api = cells.client

    def as_user(user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[user]}"}

    body = {"name": "u1", "vcpus": 1, "memory_mb": 256, "cell": "cell1"}
    refused = api.post("/vms", json=body, headers=as_user("rita"))
    assert refused.status_code == 403
    assert api.get("/vms", headers=as_user("rita")).status_code == 200
    made = api.post("/vms", json=body, headers=as_user("olga"))
    assert made.status_code == 202, made.text
    task = cells.cells["cell1"].client.get(f"/tasks/{made.json()['task']['id']}").json()
    assert task["actor"] == "olga"
    events = api.get("/events", params={"vm": "u1", "limit": 50}).json()
    assert events["items"] and all(e["cell"] == "cell1" for e in events["items"])
    assert any(e["actor"] == "olga" for e in events["items"])


def test_events_of_every_cell_are_merged_and_followed(cells: Cells) -> None:
    first = cells.client.get("/events", params={"limit": 5}).json()
    position = first["last_id"]
    assert position.startswith("cells:")
    _vm(cells, "e1", cell="cell1")
    _vm(cells, "e2", cell="cell2")

    def both() -> list[dict[str, Any]] | None:
        page = cells.client.get("/events", params={"after": position, "limit": 1000}).json()
        cells_seen = {e["cell"] for e in page["items"] if e["vm"] in ("e1", "e2")}
        return page["items"] if cells_seen == {"cell1", "cell2"} else None

    items = wait_until(both, "events of both cells")
    times = [e["at"] for e in items]
    assert times == sorted(times)


def test_the_vm_sweep_maps_a_vm_made_in_a_cell_and_drops_a_mapping_no_cell_backs(
    cells: Cells,
) -> None:
    """Discovery lists every VM of every cell now and then: a VM created in a cell directly
    gets its mapping; a mapping to a cell that has no such VM (older than the listing) goes."""
    from bollard.store import cells as cell_store

    direct = cells.cells["cell1"].client.post(
        "/vms", json={"name": "direct1", "vcpus": 1, "memory_mb": 128}
    )
    assert direct.status_code == 202, direct.text
    work, clock = cells.api.runtime.work, cells.api.runtime.clock
    with work.write() as conn:
        cell_store.map_vm(conn, "ghost1", "cell2", clock.now(), uuid=None)

    def swept() -> bool:
        with work.read() as conn:
            made, ghost = cell_store.vm_cell(conn, "direct1"), cell_store.vm_cell(conn, "ghost1")
        return made is not None and made.cell == "cell1" and ghost is None

    wait_until(swept, "the sweep to map direct1 and drop ghost1")
    assert cells.client.get("/vms/direct1").json()["cell"] == "cell1"


def test_a_gathered_page_asks_each_cell_for_its_share_only(
    cells: Cells, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mappings say which cell holds which names of a page: each cell is asked for that
    many (at least one), not for a whole page; a VM the mappings do not know yet (made in a
    cell directly) is still listed once, and every VM once in name order."""
    from bollard.cells.directory import CellClient

    for name, cell in [("a1", "cell1"), ("a2", "cell1"), ("a3", "cell1"), ("b1", "cell2")]:
        _vm(cells, name, cell=cell, start=False)
    direct = cells.cells["cell2"].client.post(
        "/vms", json={"name": "b0", "vcpus": 1, "memory_mb": 128}
    )
    assert direct.status_code == 202, direct.text
    asked: list[tuple[str, str | None]] = []
    call = CellClient.call

    async def counted(self: CellClient, method: str, path: str, **kwargs: Any) -> Any:
        # (the API server's discovery sweep reads whole pages of /vms meanwhile, on its own
        # schedule: that is not the gathered page asking)
        if method == "GET" and path == "/vms" and not _in_discovery_sweep():
            limit = dict(kwargs.get("params") or []).get("limit")
            asked.append((self.name, limit))
        return await call(self, method, path, **kwargs)

    monkeypatch.setattr(CellClient, "call", counted)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = cells.client.get("/vms", params=params).json()
        seen += [v["name"] for v in page["items"]]
        assert page["total"] == 5
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["a1", "a2", "a3", "b0", "b1"]
    # Page 1 by the mappings: a1 a2 a3 (cell1: 3; its answer says it has no more), cell2
    # none (asked for 1: its b0 comes back, after a3). Then only cell2 is asked, for what
    # the mappings give it: b1, and b0 too once the sweep has mapped it.
    assert asked[:2] == [("cell1", "3"), ("cell2", "1")]
    assert asked[2:] and all(cell == "cell2" and int(n or 0) <= 2 for cell, n in asked[2:])


def _in_discovery_sweep() -> bool:
    """Whether the running code was called by the discovery loop's sweep of a cell's lists
    (its coroutine's frame is on the stack of the call being made)."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "_all" and code.co_filename.endswith("cells/discovery.py"):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False
