"""HA groups, affinity rules and a VM's HA fields through the real server (api/ha.py,
operations/ha_policy_ops.py, the VM PATCH): CRUD, one-line 422s, 409 deleting a group in
use, 404s, roles and the events naming their actor; a VM's HA request state starting,
stopping and clearing an error hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from bollard.domain.ha import HaHold
from bollard.sim.fabric import Fabric
from bollard.store import ha_counts, vms
from tests.support.cells import running_cells
from tests.support.cluster import AgentThread, ServerThread, wait_until
from tests.support.databases import SchemaTemplates

Cluster = tuple[ServerThread, list[AgentThread]]


def _wait(client: httpx.Client, task_id: str) -> dict[str, Any]:
    for _ in range(10):
        task: dict[str, Any] = client.get(f"/tasks/{task_id}/wait", params={"timeout": 5}).json()
        if task["finished_at"] is not None:
            return task
    raise AssertionError(f"task {task_id} did not end: {task}")


def _create_vm(client: httpx.Client, name: str, **fields: Any) -> dict[str, Any]:
    body = {"name": name, "vcpus": 1, "memory_mb": 256, **fields}
    answer = client.post("/vms", json=body)
    assert answer.status_code == 202, answer.text
    assert _wait(client, answer.json()["task"]["id"])["state"] == "succeeded"
    vm: dict[str, Any] = client.get(f"/vms/{name}").json()
    return vm


def _events(client: httpx.Client, prefix: str) -> list[dict[str, Any]]:
    items = client.get("/events", params={"limit": 500}).json()["items"]
    return [e for e in items if e["kind"].startswith(prefix)]


def _refused(answer: httpx.Response, status: int, *fragments: str) -> str:
    assert answer.status_code == status, answer.text
    message: str = answer.json()["error"]["message"]
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _as(server: ServerThread, name: str, role: str) -> httpx.Client:
    assert server.client.post("/users", json={"name": name, "role": role}).status_code == 201
    token = server.client.post("/tokens", json={"user": name}).json()["token"]
    return httpx.Client(
        base_url=server.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


# --- groups --------------------------------------------------------------------------------


def test_groups_are_created_listed_changed_and_deleted_with_events(server: ServerThread) -> None:
    c = server.client
    answer = c.post(
        "/ha/groups",
        json={"name": "web", "nodes": {"node2": 1, "node1": 2, "node3": 1}, "restricted": True},
    )
    assert answer.status_code == 201, answer.text
    group = answer.json()
    assert list(group["nodes"].items()) == [("node1", 2), ("node2", 1), ("node3", 1)]
    assert (group["restricted"], group["nofailback"], group["vms"]) == (True, False, 0)
    assert group["description"] == ""
    for name in ("db", "batch"):
        assert c.post("/ha/groups", json={"name": name, "nodes": {"node1": 0}}).status_code == 201
    _refused(c.post("/ha/groups", json={"name": "web", "nodes": {"n": 1}}), 409, "web")

    first = c.get("/ha/groups", params={"limit": 2}).json()
    assert [g["name"] for g in first["items"]] == ["batch", "db"] and first["total"] == 3
    rest = c.get("/ha/groups", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [g["name"] for g in rest["items"]] == ["web"] and rest["next_cursor"] is None
    assert c.get("/ha/groups/web").json() == group

    changed = c.patch(
        "/ha/groups/web",
        json={"nodes": {"node4": 5}, "nofailback": True, "description": "front ends"},
    ).json()
    assert changed["nodes"] == {"node4": 5}
    assert (changed["restricted"], changed["nofailback"]) == (True, True)
    assert changed["description"] == "front ends"
    cleared = c.patch("/ha/groups/web", json={"description": None, "restricted": False}).json()
    assert (cleared["description"], cleared["restricted"], cleared["nodes"]) == (
        "", False, {"node4": 5},
    )  # fmt: skip

    assert c.delete("/ha/groups/web").status_code == 204
    _refused(c.get("/ha/groups/web"), 404, "no HA group named 'web'")
    _refused(c.patch("/ha/groups/web", json={"restricted": True}), 404, "web")
    _refused(c.delete("/ha/groups/web"), 404, "web")
    kinds = [(e["kind"], e["data"].get("group"), e["actor"]) for e in _events(c, "ha.group.")]
    assert kinds == [
        ("ha.group.created", "web", "admin"),
        ("ha.group.created", "db", "admin"),
        ("ha.group.created", "batch", "admin"),
        ("ha.group.changed", "web", "admin"),
        ("ha.group.changed", "web", "admin"),
        ("ha.group.deleted", "web", "admin"),
    ]


def test_bad_groups_and_rules_are_one_line_422s_naming_the_field(server: ServerThread) -> None:
    c = server.client
    for body, fragment in [
        ({"name": "g", "nodes": {}}, "nodes: must not be empty"),
        ({"name": "g"}, "nodes: required"),
        ({"name": "g", "nodes": {"node1": 1001}}, "nodes.node1: must be at most 1000"),
        ({"name": "g", "nodes": {"node1": "high"}}, "nodes.node1: must be a whole number"),
        ({"name": "a b", "nodes": {"node1": 1}}, "name: use letters, digits"),
        ({"name": "g", "nodes": {"node1": 1}, "priority": 3}, "priority: is not a field"),
        ({"name": "g", "nodes": {"node1": 1}, "restricted": "maybe"}, "restricted: must be true"),
    ]:
        _refused(c.post("/ha/groups", json=body), 422, fragment)
    for body, fragment in [
        ({"name": "r", "kind": "near", "vms": ["a", "b"]}, "kind: must be one of"),
        ({"name": "r", "kind": "apart", "vms": ["a"]}, "vms: must have at least 2 items"),
        ({"name": "r", "kind": "apart", "vms": ["a", "a"]}, "at least 2 different VMs"),
        ({"name": "r", "kind": "apart", "vms": ["web1", "nope"]}, "no VM named web1, nope"),
    ]:
        _refused(c.post("/ha/rules", json=body), 422, fragment)
    _refused(c.patch("/ha/groups/none-such", json={"nodes": {}}), 422, "nodes: must not be empty")
    _refused(c.get("/ha/rules/nope"), 404, "no affinity rule named 'nope'")
    _refused(c.get("/ha/groups", params={"cursor": "junk"}), 422, "cursor")
    assert c.get("/ha/groups").json() == {"items": [], "next_cursor": None, "total": 0}
    assert _events(c, "ha.") == []


# --- rules ---------------------------------------------------------------------------------


def test_rules_name_existing_vms_and_change_with_events(cluster: Cluster) -> None:
    server, _ = cluster
    c = server.client
    for name in ("db1", "db2", "db3"):
        _create_vm(c, name)
    answer = c.post("/ha/rules", json={"name": "dbs", "kind": "apart", "vms": ["db2", "db1"]})
    assert answer.status_code == 201, answer.text
    rule = answer.json()
    assert (rule["kind"], rule["strict"], rule["vms"]) == ("apart", False, ["db1", "db2"])
    ghosts = {"name": "x", "kind": "together", "vms": ["db1", "ghost", "gone"]}
    _refused(c.post("/ha/rules", json=ghosts), 422, "vms: no VM named ghost, gone")
    _refused(c.post("/ha/rules", json={"name": "dbs", "kind": "apart", "vms": ["db1", "db3"]}),
             409, "dbs")  # fmt: skip

    changed = c.patch(
        "/ha/rules/dbs", json={"strict": True, "vms": ["db1", "db2", "db3"], "kind": "together"}
    ).json()
    assert (changed["kind"], changed["strict"], changed["vms"]) == (
        "together", True, ["db1", "db2", "db3"],
    )  # fmt: skip
    _refused(c.patch("/ha/rules/dbs", json={"vms": ["db1", "nope"]}), 422, "no VM named nope")
    assert c.get("/ha/rules/dbs").json()["vms"] == ["db1", "db2", "db3"]  # unchanged
    page = c.get("/ha/rules").json()
    assert [r["name"] for r in page["items"]] == ["dbs"] and page["total"] == 1

    # A VM deleted leaves its rules.
    assert _wait(c, c.delete("/vms/db3").json()["task"]["id"])["state"] == "succeeded"
    assert c.get("/ha/rules/dbs").json()["vms"] == ["db1", "db2"]

    assert c.delete("/ha/rules/dbs").status_code == 204
    _refused(c.delete("/ha/rules/dbs"), 404, "dbs")
    kinds = [(e["kind"], e["data"].get("rule"), e["actor"]) for e in _events(c, "ha.rule.")]
    assert kinds == [
        ("ha.rule.created", "dbs", "admin"),
        ("ha.rule.changed", "dbs", "admin"),
        ("ha.rule.deleted", "dbs", "admin"),
    ]


# --- a VM's group and a group in use -------------------------------------------------------


def test_a_group_in_use_is_not_deleted_and_vms_join_and_leave(cluster: Cluster) -> None:
    server, _ = cluster
    c = server.client
    assert c.post("/ha/groups", json={"name": "g", "nodes": {"node1": 1}}).status_code == 201
    vm = _create_vm(c, "web1", ha_group="g", max_restart=3)
    assert (vm["ha_group"], vm["max_restart"], vm["max_relocate"]) == ("g", 3, None)
    body = {"name": "web2", "vcpus": 1, "memory_mb": 256, "ha_group": "nope"}
    _refused(c.post("/vms", json=body), 422, "ha_group: no HA group named 'nope'")
    assert c.get("/vms/web2").status_code == 404

    _create_vm(c, "web2")
    _refused(c.patch("/vms/web2", json={"ha_group": "nope"}), 422, "no HA group named 'nope'")
    assert c.patch("/vms/web2", json={"ha_group": "g"}).json()["ha_group"] == "g"
    assert c.get("/ha/groups/g").json()["vms"] == 2
    _refused(c.delete("/ha/groups/g"), 409, "HA group g has 2 VM(s): web1, web2")

    assert c.patch("/vms/web1", json={"ha_group": ""}).json()["ha_group"] is None
    assert c.patch("/vms/web2", json={"ha_group": None}).json()["ha_group"] is None
    assert c.get("/ha/groups").json()["items"][0]["vms"] == 0
    assert c.delete("/ha/groups/g").status_code == 204


def test_roles_reader_reads_operator_changes(cluster: Cluster) -> None:
    server, _ = cluster
    _create_vm(server.client, "a1")
    _create_vm(server.client, "a2")
    reader, operator = _as(server, "rita", "reader"), _as(server, "olga", "operator")
    try:
        assert (
            operator.post("/ha/groups", json={"name": "g", "nodes": {"node1": 1}}).status_code
            == 201
        )
        rule = {"name": "r", "kind": "apart", "vms": ["a1", "a2"]}
        assert operator.post("/ha/rules", json=rule).status_code == 201
        assert operator.patch("/ha/groups/g", json={"restricted": True}).status_code == 200
        assert operator.patch("/vms/a1", json={"ha_group": "g"}).status_code == 200
        for path in ("/ha/groups", "/ha/groups/g", "/ha/rules", "/ha/rules/r"):
            assert reader.get(path).status_code == 200, path
        for method, path in [
            ("POST", "/ha/groups"), ("PATCH", "/ha/groups/g"), ("DELETE", "/ha/groups/g"),
            ("POST", "/ha/rules"), ("PATCH", "/ha/rules/r"), ("DELETE", "/ha/rules/r"),
        ]:  # fmt: skip
            answer = reader.request(method, path, json={})
            _refused(answer, 403, "needs permission ha.manage", "has role reader")
        actors = {(e["kind"], e["actor"]) for e in _events(server.client, "ha.")}
        assert actors == {("ha.group.created", "olga"), ("ha.rule.created", "olga"),
                          ("ha.group.changed", "olga")}  # fmt: skip
        assert operator.delete("/ha/rules/r").status_code == 204
    finally:
        reader.close()
        operator.close()


# --- a VM's HA request state ---------------------------------------------------------------


def _power(cluster: Cluster, node: str, uuid: str) -> str | None:
    fabric = Fabric(cluster[1][0].config.fabric_dir or "")
    vm = fabric.host(node).get_vm(uuid)
    return None if vm is None else str(vm.power)


def test_ha_state_starts_stops_ignores_and_clears_an_error_hold(cluster: Cluster) -> None:
    server, _ = cluster
    c = server.client
    vm = _create_vm(c, "app1", node="node2")
    assert (vm["status"], vm["ha_state"], vm["ha_restarts"]) == ("SHUTOFF", "disabled", 0)

    started = c.patch("/vms/app1", json={"ha_state": "started"})
    assert started.status_code == 200, started.text
    assert (started.json()["ha_state"], started.json()["ha"]) == ("started", "restart")
    assert _wait(c, started.json()["task_id"])["type"] == "start"
    assert c.get("/vms/app1").json()["status"] == "ACTIVE"
    assert _power(cluster, "node2", vm["uuid"]) == "running"

    stopped = c.patch("/vms/app1", json={"ha_state": "stopped"}).json()
    assert stopped["ha_state"] == "stopped" and stopped["ha"] == "restart"
    assert _wait(c, stopped["task_id"])["type"] == "shutdown"
    assert c.get("/vms/app1").json()["status"] == "SHUTOFF"
    assert _power(cluster, "node2", vm["uuid"]) == "stopped"

    ignored = c.patch("/vms/app1", json={"ha_state": "ignored", "max_relocate": 4}).json()
    assert (ignored["ha_state"], ignored["task_id"], ignored["max_relocate"]) == (
        "ignored",
        None,
        4,
    )
    disabled = c.patch("/vms/app1", json={"ha_state": "disabled", "max_relocate": None}).json()
    assert (disabled["ha_state"], disabled["ha"], disabled["max_relocate"]) == (
        "disabled", "none", None,
    )  # fmt: skip

    # Its limits ran out (as the HA restart path leaves it): error, counts kept.
    with server.runtime.db.write() as conn:
        now = server.runtime.clock.now()
        ha_counts.count_restart(conn, vm["uuid"], now)
        ha_counts.set_hold(conn, vm["uuid"], HaHold.ERROR, now)
    held = c.get("/vms/app1").json()
    assert (held["ha_state"], held["ha_restarts"]) == ("error", 1)
    cleared = c.patch("/vms/app1", json={"ha_state": "started"}).json()
    assert (cleared["ha_state"], cleared["ha_restarts"], cleared["ha_relocates"]) == (
        "started", 0, 0,
    )  # fmt: skip
    assert _wait(c, cleared["task_id"])["state"] == "succeeded"
    wait_until(lambda: _power(cluster, "node2", vm["uuid"]) == "running", "app1 to run")
    with server.runtime.db.read() as conn:
        assert vms.get(conn, "app1").ha_hold is None

    meta = [e for e in _events(c, "vm.meta") if e["vm"] == "app1"]
    assert [e["data"].get("ha_state") for e in meta] == [
        "started", "stopped", "ignored", "disabled", "started",
    ]  # fmt: skip


def test_ha_state_refusals_are_one_line(cluster: Cluster) -> None:
    server, _ = cluster
    c = server.client
    _create_vm(c, "app2", start=True)
    for body, fragment in [
        ({"ha_state": "error"}, "ha_state: must be one of"),
        ({"ha_state": None}, "ha_state: may not be null"),
        ({"ha_state": "started", "ha": "none"}, "ha_state started means ha restart"),
        ({"max_restart": 101}, "max_restart: must be at most 100"),
        ({"max_relocate": -1}, "max_relocate: must be at least 0"),
        ({"ha_group": "a b"}, "ha_group:"),
    ]:
        _refused(c.patch("/vms/app2", json=body), 422, fragment)
    _refused(c.patch("/vms/nope", json={"ha_state": "started"}), 404, "nope")
    created = c.post(
        "/vms", json={"name": "app3", "vcpus": 1, "memory_mb": 256, "ha_state": "stopped",
                      "start": True},
    )  # fmt: skip
    _refused(created, 422, "ha_state stopped: not with start")
    vm = _create_vm(c, "app4", ha_state="started")
    assert (vm["ha_state"], vm["status"], vm["ha"]) == ("started", "ACTIVE", "restart")
    assert _create_vm(c, "app5", ha_state="ignored")["ha_state"] == "ignored"


# --- through an API server in front of cells -----------------------------------------------


def test_groups_and_rules_live_in_a_cell_behind_an_api_server(
    schema_templates: SchemaTemplates, tmp_path: Path
) -> None:
    with running_cells(schema_templates, tmp_path, nodes=1) as cells:
        c = cells.client
        made = c.post("/ha/groups", json={"name": "g2", "nodes": {"cell2-node1": 1}})
        assert made.status_code == 201, made.text
        assert made.json()["cell"] == "cell2"  # its first node's cell
        assert cells.cells["cell2"].client.get("/ha/groups/g2").status_code == 200
        assert cells.cells["cell1"].client.get("/ha/groups/g2").status_code == 404
        given = c.post("/ha/groups", json={"name": "g1", "nodes": {"n": 1}, "cell": "cell1"})
        assert given.status_code == 201 and given.json()["cell"] == "cell1", given.text
        listed = c.get("/ha/groups").json()
        assert [(g["name"], g["cell"]) for g in listed["items"]] == [
            ("g1", "cell1"),
            ("g2", "cell2"),
        ]
        assert listed["total"] == 2 and listed["unreachable"] == []
        changed = c.patch("/ha/groups/g2", json={"restricted": True})
        assert changed.status_code == 200 and changed.json()["restricted"] is True
        assert changed.json()["cell"] == "cell2"

        for name in ("a1", "a2"):
            answer = c.post("/vms", json={"name": name, "vcpus": 1, "memory_mb": 256,
                                          "cell": "cell1"})  # fmt: skip
            assert answer.status_code == 202, answer.text
            wait_until(lambda n=name: c.get(f"/vms/{n}").json().get("status") == "SHUTOFF",
                       f"{name} to be created")  # fmt: skip
        rule = c.post("/ha/rules", json={"name": "r", "kind": "apart", "vms": ["a1", "a2"]})
        assert rule.status_code == 201 and rule.json()["cell"] == "cell1", rule.text
        assert [r["name"] for r in c.get("/ha/rules").json()["items"]] == ["r"]
        assert c.get("/ha/rules/r").json()["vms"] == ["a1", "a2"]

        assert c.delete("/ha/groups/g2").status_code == 204
        _refused(c.get("/ha/groups/g2"), 404, "g2")
        assert c.delete("/ha/rules/r").status_code == 204
