"""Audit: every event and task names its actor (a user, a token's user, or `system`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.cluster import AgentThread, ServerThread, wait_until


@pytest.fixture
def one_node(server: ServerThread, tmp_path: Path) -> Iterator[ServerThread]:
    agent = AgentThread(server, "node1", tmp_path, vcpus=8, memory_mb=16384)
    wait_until(lambda: server.client.get("/nodes/node1").json()["connected"], "node1 connected")
    yield server
    agent.stop()


def test_events_and_tasks_name_their_actor(one_node: ServerThread) -> None:
    server = one_node
    r = server.client.post("/vms", json={"name": "a1", "vcpus": 1, "memory_mb": 256, "start": True})
    assert r.status_code in (200, 201, 202), r.text
    task_id = r.json()["task"]["id"]
    task = server.client.get(f"/tasks/{task_id}", params={"wait": 20}).json()
    assert task["actor"] == "admin"
    ours = server.client.get("/events", params={"task": task_id, "limit": 1000}).json()["items"]
    assert ours and {e["actor"] for e in ours} == {"admin"}, ours
    # The server's own decisions (a node coming up when its agent connects) act as system.
    node_events = server.client.get("/events", params={"node": "node1"}).json()["items"]
    assert any(e["actor"] == "system" for e in node_events), node_events
    by_admin = server.client.get("/events", params={"actor": "admin", "limit": 1000}).json()
    assert by_admin["items"] and all(e["actor"] == "admin" for e in by_admin["items"])
    by_system = server.client.get("/events", params={"actor": "system", "limit": 1000}).json()
    assert all(e["actor"] == "system" for e in by_system["items"])


def test_settings_and_enrollment_are_events_with_their_actor(server: ServerThread) -> None:
    c = server.client
    assert c.put("/settings/migration.timeout", json={"value": 123}).status_code == 200
    changed = c.get("/events", params={"actor": "admin", "limit": 1000}).json()["items"]
    setting = [e for e in changed if e["kind"] == "settings.changed"]
    assert setting and setting[-1]["data"]["key"] == "migration.timeout"
    assert setting[-1]["data"]["value"] == 123
    assert c.post("/nodes", json={"name": "n-audit"}).status_code == 201
    enrolled = c.get("/events", params={"node": "n-audit"}).json()["items"]
    assert [(e["kind"], e["actor"]) for e in enrolled] == [("node.enrolled", "admin")]


def test_a_users_calls_name_the_user(one_node: ServerThread) -> None:
    server = one_node
    c = server.client
    assert c.post("/users", json={"name": "alice", "role": "operator"}).status_code == 201
    token = c.post("/tokens", json={"user": "alice"}).json()["token"]
    with httpx.Client(
        base_url=server.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as alice:
        made = alice.post("/vms", json={"name": "b1", "vcpus": 1, "memory_mb": 256})
        assert made.status_code == 202, made.text
        task_id = made.json()["task"]["id"]
        done = alice.get(f"/tasks/{task_id}/wait", params={"timeout": 20}).json()
        assert done["actor"] == "alice"
        settings = alice.put("/settings/migration.timeout", json={"value": 5})
        assert settings.status_code == 403  # and refused calls leave no event
    mine = c.get("/events", params={"actor": "alice", "limit": 1000}).json()["items"]
    assert mine and {e["task_id"] for e in mine} == {task_id}
    assert {e["kind"] for e in mine} >= {"task.created", "task.succeeded"}
    assert not [e for e in mine if e["kind"] == "settings.changed"]
