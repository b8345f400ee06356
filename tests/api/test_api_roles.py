"""Roles against a real server: a reader reads and changes nothing, an operator runs VMs and
nodes but manages no users, settings or other users' tokens, and what a call causes names
the user who made it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from bollard.server.api.authn import protected
from tests.support.cluster import AgentThread, ServerThread


@dataclass
class People:
    reader: httpx.Client
    operator: httpx.Client
    reader_token_id: str
    operator_token_id: str

    def close(self) -> None:
        self.reader.close()
        self.operator.close()


def as_token(server: ServerThread, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def add_user(server: ServerThread, name: str, role: str) -> tuple[str, str]:
    """A user with one token: (token id, token)."""
    assert server.client.post("/users", json={"name": name, "role": role}).status_code == 201
    answer = server.client.post("/tokens", json={"user": name})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"], answer.json()["token"]


@pytest.fixture
def people(server: ServerThread) -> Iterator[People]:
    reader_id, reader = add_user(server, "rita", "reader")
    operator_id, operator = add_user(server, "olga", "operator")
    found = People(as_token(server, reader), as_token(server, operator), reader_id, operator_id)
    yield found
    found.close()


def routes(server: ServerThread) -> list[tuple[str, str]]:
    """(method, path template) of every HTTP route the server's app serves under auth."""
    found = []
    for route in iter_route_contexts(server.runtime.app().routes):
        path, methods = route.path_format, route.methods
        if path is None or methods is None or not protected(path):
            continue
        found += [(m, path) for m in sorted(methods) if m != "HEAD"]
    return sorted(found)


def concrete(path: str) -> str:
    """The template with each path parameter filled in."""
    return re.sub(r"\{[^}]+\}", "x1", path).removeprefix("/api/v1")


def last_event_id(server: ServerThread) -> int:
    items = server.client.get("/events", params={"limit": 1}).json()["items"]
    return int(items[-1]["id"]) if items else 0


def test_a_reader_can_change_nothing(server: ServerThread, people: People) -> None:
    before = last_event_id(server)
    changes = [(m, p) for m, p in routes(server) if m != "GET"]
    assert len(changes) >= 25
    for method, path in changes:
        url = concrete(path) if path.startswith("/api/v1") else server.url + path
        answer = people.reader.request(method, url, json={})
        assert answer.status_code == 403, (method, path, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "forbidden"
        assert "needs permission" in error["message"] and "has role reader" in error["message"]
    assert last_event_id(server) == before  # not one change was made
    assert server.client.get("/users/rita").json()["tokens"] == 1


def test_a_reader_can_read(server: ServerThread, people: People) -> None:
    reads = [p for m, p in routes(server) if m == "GET" and "{" not in p]
    assert len(reads) >= 10
    for path in reads:
        url = path.removeprefix("/api/v1") if path.startswith("/api/v1") else server.url + path
        # (the event stream runs until max_seconds: 0 sends what there is and ends)
        query = {"max_seconds": 0} if path.endswith("/events/stream") else None
        answer = people.reader.get(url, params=query)
        assert answer.status_code == 200, (path, answer.text)
    # Reads of one thing get past the check (the thing does not exist: 404, not 403).
    for path in ("/vms/x1", "/nodes/x1", "/tasks/x1", "/users/x1", "/settings/nope"):
        assert people.reader.get(path).status_code == 404, path
    # The console is the one read that is an operation (the display can be reached with it).
    console = people.reader.get("/vms/x1/console")
    assert console.status_code == 403 and "vm.console" in console.json()["error"]["message"]


def test_an_operator_manages_no_users_settings_or_others_tokens(
    server: ServerThread, people: People
) -> None:
    refused = [
        ("PUT", "/settings/migration.timeout", {"value": 30}),
        ("POST", "/users", {"name": "mallory", "role": "admin"}),
        ("DELETE", "/users/rita", None),
        ("POST", "/tokens", {"user": "rita"}),
        ("POST", f"/tokens/{people.reader_token_id}/revoke", None),
        ("GET", "/tokens?user=rita", None),
    ]
    for method, path, body in refused:
        answer = people.operator.request(method, path, json=body)
        assert answer.status_code == 403, (method, path, answer.text)
        assert "has role operator" in answer.json()["error"]["message"]
    assert "token.manage" in people.operator.get("/tokens?user=rita").json()["error"]["message"]
    # Its own tokens it manages: create, list (only its own), revoke.
    own = people.operator.post("/tokens", json={"description": "ci"})
    assert own.status_code == 201 and own.json()["user"] == "olga"
    listed = people.operator.get("/tokens").json()["items"]
    assert {t["user"] for t in listed} == {"olga"} and len(listed) == 2
    revoked = people.operator.post(f"/tokens/{own.json()['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert server.client.get("/users").json()["total"] == 3  # admin, rita, olga: no mallory


def test_an_operator_runs_vms_and_nodes_and_its_calls_name_it(
    cluster: tuple[ServerThread, list[AgentThread]], tmp_path: Path
) -> None:
    server, _ = cluster
    _, token = add_user(server, "olga", "operator")
    with as_token(server, token) as olga:
        created = olga.post(
            "/vms", json={"name": "op1", "vcpus": 1, "memory_mb": 64, "start": True}
        )
        assert created.status_code == 202, created.text
        task_id = created.json()["task"]["id"]
        done = olga.get(f"/tasks/{task_id}/wait", params={"timeout": 20}).json()
        assert done["state"] == "succeeded", done
        stop = olga.post("/vms/op1/stop")
        assert stop.status_code == 202, stop.text
        assert olga.post("/nodes", json={"name": "n9"}).status_code == 201
        assert olga.delete("/nodes/n9").status_code == 200
        assert olga.put("/cluster/maintenance", json={"maintenance": False}).status_code == 200
    # Everything the create task did names olga: the API's events and the task's steps.
    events = server.client.get("/events", params={"task": task_id, "limit": 500}).json()
    assert events["items"], events
    assert {e["actor"] for e in events["items"]} == {"olga"}
    node_events = server.client.get("/events", params={"node": "n9"}).json()["items"]
    assert [(e["kind"], e["actor"]) for e in node_events if e["kind"] == "node.deleted"] == [
        ("node.deleted", "olga")
    ]
    # The admin token acts as the built-in admin.
    assert server.client.post("/users", json={"name": "eve", "role": "reader"}).status_code == 201
    created_by = server.client.get("/users/eve").json()["created_by"]
    assert created_by == "admin"
