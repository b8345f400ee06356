"""What the web console needs of the API, against a real server with sim agents: who the
caller is, where a migration could go and why not elsewhere, unfinished tasks, the event
log as server-sent events, and the console's own files with their security headers."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx

from tests.api.test_api_migrate import make_vm
from tests.api.test_api_roles import add_user, as_token
from tests.api.test_api_vms import Cluster, _wait
from tests.support.cluster import ServerThread


def test_whoami_names_the_user_role_and_permissions(server: ServerThread) -> None:
    me = server.client.get("/whoami").json()
    assert (me["user"], me["role"], me["token_id"]) == ("admin", "admin", None)
    assert {"settings.write", "vm.create", "read"} <= set(me["permissions"])
    token_id, token = add_user(server, "rita", "reader")
    with as_token(server, token) as reader:
        them = reader.get("/whoami").json()
    assert (them["user"], them["role"], them["token_id"]) == ("rita", "reader", token_id)
    assert them["permissions"] == ["read"]
    assert httpx.get(server.url + "/api/v1/whoami").status_code == 401


def test_candidates_rank_the_nodes_and_name_every_rejection(cluster: Cluster) -> None:
    c = cluster[0].client
    make_vm(cluster, "pick")
    answer = c.get("/vms/pick/migrate/candidates")
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["chosen"] == "node2"
    assert [r["node"] for r in found["ranking"]] == ["node2"]
    assert found["rejected"] == [{"node": "node1", "reason": "is the VM's current node"}]
    # Nothing moved: no task was created, the VM is still on node1.
    assert c.get("/vms/pick").json()["node"] == "node1"
    assert [t["type"] for t in c.get("/tasks").json()["items"]] == ["create"]
    # With a node limit that leaves nothing, the scheduler says why, and chooses nothing.
    assert c.patch("/vms/pick", json={"node_limit": ["node1"]}).status_code == 200
    limited = c.get("/vms/pick/migrate/candidates").json()
    assert limited["chosen"] is None and limited["ranking"] == []
    assert {"node": "node2", "reason": "outside the VM's node limit (node1)"} in limited["rejected"]
    assert c.get("/vms/nope/migrate/candidates").status_code == 404


def test_active_tasks_are_the_ones_not_ended(cluster: Cluster) -> None:
    c = cluster[0].client
    make_vm(cluster, "done1")
    assert c.get("/tasks", params={"active": "true"}).json()["items"] == []
    ended = c.get("/tasks", params={"state": "succeeded"}).json()["items"]
    assert [t["vm"] for t in ended] == ["done1"]
    assert c.get("/tasks", params={"state": "failed"}).json()["items"] == []
    assert c.get("/tasks", params={"state": "bogus"}).status_code == 422


def _read_events(
    server: ServerThread, query: dict[str, Any], wanted: int, out: list[dict[str, Any]]
) -> None:
    headers = {"Authorization": server.client.headers["Authorization"]}
    with httpx.stream(
        "GET", server.url + "/api/v1/events/stream", params=query, headers=headers, timeout=30
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        data: list[str] = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                data.append(line[len("data: ") :])
            elif line == "" and data:
                out.append(json.loads("\n".join(data)))
                data = []
                if len(out) >= wanted:
                    return


def test_the_event_stream_sends_every_event_after_the_given_id(cluster: Cluster) -> None:
    c = cluster[0].client
    before = c.get("/events", params={"limit": 1}).json()["last_id"]
    got: list[dict[str, Any]] = []
    reader = threading.Thread(
        target=_read_events, args=(cluster[0], {"after": before, "max_seconds": 30}, 3, got)
    )
    reader.start()
    _wait(c, c.post("/vms", json={"name": "live1", "vcpus": 1, "memory_mb": 256}))
    reader.join(timeout=30)
    assert not reader.is_alive(), "the stream did not deliver three events within 30 s"
    expected = c.get("/events", params={"after": before, "limit": 3}).json()["items"]
    assert got == expected
    assert [e["id"] for e in got] == sorted(e["id"] for e in got)
    assert got[0]["id"] > before


def test_the_event_stream_with_max_seconds_0_sends_what_is_there_and_ends(
    cluster: Cluster,
) -> None:
    c = cluster[0].client
    _wait(c, c.post("/vms", json={"name": "now1", "vcpus": 1, "memory_mb": 256}))
    expected = c.get("/events", params={"after": 0, "limit": 1000}).json()["items"]
    got: list[dict[str, Any]] = []
    _read_events(cluster[0], {"after": 0, "max_seconds": 0}, 10_000, got)  # returns at its end
    assert got == expected


def test_the_event_stream_needs_a_token(server: ServerThread) -> None:
    assert httpx.get(server.url + "/api/v1/events/stream").status_code == 401


def test_the_console_is_served_with_a_strict_content_security_policy(
    server: ServerThread,
) -> None:
    root = httpx.get(server.url + "/")
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    page = httpx.get(server.url + "/ui/")
    assert page.status_code == 200
    assert '<script type="module" src="js/app.js">' in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    host = server.url.removeprefix("http://")
    assert f"connect-src 'self' ws://{host} wss://{host};" in csp  # this server only
    odd = httpx.get(server.url + "/ui/", headers={"Host": "x y;script-src *"})
    assert "connect-src 'self';" in odd.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    script = httpx.get(server.url + "/ui/js/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert httpx.get(server.url + "/ui/js/nope.js").status_code == 404
    # The files hold no data: everything the console shows still needs a token.
    assert httpx.get(server.url + "/api/v1/vms").status_code == 401


def test_events_page_back_with_before(cluster: Cluster) -> None:
    c = cluster[0].client
    _wait(c, c.post("/vms", json={"name": "old1", "vcpus": 1, "memory_mb": 256}))
    every = c.get("/events", params={"limit": 1000}).json()["items"]
    assert len(every) >= 4
    newest = c.get("/events", params={"limit": 2}).json()
    assert newest["items"] == every[-2:] and newest["more"] is True
    older = c.get("/events", params={"limit": 2, "before": newest["items"][0]["id"]}).json()
    assert older["items"] == every[-4:-2]
    first = c.get("/events", params={"limit": 1000, "before": every[1]["id"]}).json()
    assert first["items"] == every[:1] and first["more"] is False
    both = c.get("/events", params={"after": 1, "before": 5})
    assert both.status_code == 422
    assert "give one of them" in both.json()["error"]["message"]


def test_commands_newest_first(cluster: Cluster) -> None:
    c = cluster[0].client
    _wait(c, c.post("/vms", json={"name": "cmd1", "vcpus": 1, "memory_mb": 256, "start": True}))
    oldest = c.get("/commands").json()["items"]
    assert len(oldest) >= 2
    newest = c.get("/commands", params={"order": "newest", "limit": 2}).json()
    assert [x["id"] for x in newest["items"]] == [x["id"] for x in reversed(oldest)][:2]
