"""Names that do not exist are errors, lists show what they say (issue 16, defects 10 and 14):
node limits name existing nodes, `task list --vm` means the VM of that name now, `--limit`
gives the newest, `events` says when it shows only the last N, unknown filters are errors,
and a VM that no node can take says why each node was rejected."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from bollard.domain.states import NodeHealth
from bollard.store import nodes
from tests.api.test_api_vms import Cluster, _wait
from tests.support.cli import bollard, one_error_line, point_cli_at
from tests.support.cluster import ServerThread


@pytest.fixture
def cli_env(server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    point_cli_at(server, tmp_path / "config", monkeypatch)


def _create(c: httpx.Client, name: str, **extra: Any) -> dict[str, Any]:
    body = {"name": name, "vcpus": 1, "memory_mb": 128} | extra
    task = _wait(c, c.post("/vms", json=body))
    assert task["state"] == "succeeded", task
    return task


# -- defect 10: why each node was rejected ---------------------------------------------------


def test_creation_with_every_node_fenced_names_each_node(server: ServerThread) -> None:
    c = server.client
    for name in ("node1", "node2"):
        assert c.post("/nodes", json={"name": name}).status_code == 201
    runtime = server.runtime
    with runtime.work.write() as conn:
        now = runtime.clock.now()
        down = [NodeHealth.SUSPECT, NodeHealth.DEAD, NodeHealth.FENCING]
        for name, last in (("node1", NodeHealth.FENCED), ("node2", NodeHealth.FENCE_FAILED)):
            for src, dst in itertools.pairwise([*down, last]):
                assert nodes.set_health(conn, name, dst, now, expect=src)
    refused = c.post("/vms", json={"name": "v", "vcpus": 1, "memory_mb": 128})
    assert refused.status_code == 409, refused.text
    message = refused.json()["error"]["message"]
    assert message == "no node can take the VM: node1: fenced; node2: fence failed"
    assert "not connected" not in message and "enrolled" not in message
    wanted = c.post("/vms", json={"name": "v", "vcpus": 1, "memory_mb": 128, "node": "node1"})
    assert wanted.status_code == 409
    assert wanted.json()["error"]["message"] == "node node1 cannot take the VM: fenced"


def test_too_little_memory_is_named_with_what_is_free(cluster: Cluster) -> None:
    c = cluster[0].client
    refused = c.post(
        "/vms", json={"name": "huge", "vcpus": 1, "memory_mb": 20000, "node_limit": ["node2"]}
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["message"] == (
        "no node can take the VM: node1: outside the VM's node limit (node2); "
        "node2: 16384 MiB of memory free, 20000 MiB needed"
    )
    assert refused.json()["error"]["code"] == "insufficient-capacity"


# -- defect 14 ------------------------------------------------------------------------------


def test_a_node_limit_naming_unknown_nodes_is_refused(cluster: Cluster) -> None:
    c = cluster[0].client
    refused = c.post(
        "/vms",
        json={"name": "v", "vcpus": 1, "memory_mb": 128, "node_limit": ["node1", "nodeX", "n9"]},
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["message"].startswith("node_limit: no node named n9, nodeX")
    assert c.get("/vms/v").status_code == 404
    _create(c, "v", node_limit=["node1"])
    patched = c.patch("/vms/v", json={"node_limit": ["node2", "ghost"]})
    assert patched.status_code == 422, patched.text
    assert "no node named ghost" in patched.json()["error"]["message"]
    assert c.get("/vms/v").json()["node_limit"] == ["node1"]
    assert c.patch("/vms/v", json={"node_limit": ["node2"]}).status_code == 200


def test_task_list_of_a_name_is_the_vm_of_that_name_now(cluster: Cluster) -> None:
    c = cluster[0].client
    first = _create(c, "dup")
    old_uuid = first["vm_uuid"]
    assert _wait(c, c.delete("/vms/dup"))["state"] == "succeeded"
    second = _create(c, "dup")
    mine = c.get("/tasks", params={"vm": "dup"}).json()["items"]
    assert [t["id"] for t in mine] == [second["id"]]
    earlier = c.get("/tasks", params={"vm": old_uuid}).json()["items"]
    assert [t["type"] for t in earlier] == ["create", "delete"]
    assert first["id"] in {t["id"] for t in earlier}
    unknown = c.get("/tasks", params={"vm": "nosuch"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "no VM named 'nosuch'"
    # Events too: the VM of that name now, a uuid for the earlier one.
    now_events = c.get("/events", params={"vm": "dup"}).json()["items"]
    assert {e["task_id"] for e in now_events if e["task_id"]} == {second["id"]}
    old_events = c.get("/events", params={"vm": old_uuid}).json()["items"]
    assert first["id"] in {e["task_id"] for e in old_events}


def test_unknown_event_filters_are_errors(server: ServerThread) -> None:
    c = server.client
    for params, message in (
        ({"vm": "nosuch"}, "no VM named 'nosuch'"),
        ({"node": "nosuch"}, "no node named 'nosuch'"),
    ):
        answer = c.get("/events", params=params)
        assert answer.status_code == 404, (params, answer.text)
        assert answer.json()["error"]["message"] == message


def test_limit_gives_the_newest_tasks(cluster: Cluster) -> None:
    c = cluster[0].client
    ids = [_create(c, f"t{i}")["id"] for i in range(4)]
    newest = c.get("/tasks", params={"order": "newest", "limit": 2}).json()
    assert [t["id"] for t in newest["items"]] == [ids[3], ids[2]]
    following = c.get(
        "/tasks", params={"order": "newest", "limit": 2, "cursor": newest["next_cursor"]}
    ).json()
    assert [t["id"] for t in following["items"]] == [ids[1], ids[0]]
    oldest = c.get("/tasks", params={"limit": 2}).json()
    assert [t["id"] for t in oldest["items"]] == [ids[0], ids[1]]


@pytest.mark.usefixtures("cli_env")
def test_cli_task_list_limit_and_unknown_vm(cluster: Cluster) -> None:
    c = cluster[0].client
    ids = [_create(c, f"t{i}")["id"] for i in range(3)]
    shown = bollard("task", "list", "--limit", "2", "-o", "json")
    assert shown.exit_code == 0, shown.output
    assert [t["id"] for t in json.loads(shown.stdout)] == [ids[1], ids[2]]  # oldest first
    everything = json.loads(bollard("task", "list", "-o", "json").stdout)
    assert [t["id"] for t in everything] == ids
    line = one_error_line(bollard("task", "list", "--vm", "ghost"))
    assert line == "error: no VM named 'ghost'"


@pytest.mark.usefixtures("cli_env")
def test_cli_events_says_when_it_shows_only_the_last_ones(server: ServerThread) -> None:
    c = server.client
    for on in (True, False, True):  # three events
        assert c.put("/cluster/maintenance", json={"maintenance": on}).status_code == 200
    total = len(c.get("/events", params={"limit": 1000}).json()["items"])
    assert total >= 3
    cut = bollard("events", "--limit", "2")
    assert cut.exit_code == 0, cut.output
    assert "showing the last 2 events; --limit N for more" in cut.stderr
    whole = bollard("events", "--limit", "1000")
    assert whole.exit_code == 0 and "--limit N for more" not in whole.stderr
    assert c.get("/events", params={"limit": 2}).json()["more"] is True
    assert c.get("/events", params={"limit": 1000}).json()["more"] is False
    assert one_error_line(bollard("events", "--node", "ghost")) == "error: no node named 'ghost'"
    assert one_error_line(bollard("events", "--vm", "ghost")) == "error: no VM named 'ghost'"
