"""The API's contract: out-of-range and unstorable input is a 422 naming the field (never a
500), refusals are 4xx, validation messages are for people, and the OpenAPI document lists
every status each operation answers with the error body. Each test here is a defect the
fuzz (test_openapi_fuzz.py) or the issue found."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bollard.domain.errors import NodeUnavailable
from bollard.server.api import responses
from bollard.server.api.errors import describe, error_body
from bollard.server.api.params import INT32_MAX
from bollard.server.assembly import prepare
from bollard.server.config import ServerConfig
from tests.support.cluster import ServerThread
from tests.support.databases import sqlite_url

NO_CONFLICT = ("/api/v1/settings/{key}", "/api/v1/cluster/maintenance")
LIBRARY_PHRASES = ("should", "Value error", "after validation", "Input ", "pydantic", "[type=")


def _error(answer: httpx.Response, status: int = 422) -> str:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    message: str = body["error"]["message"]
    return message


def _plain(message: str) -> str:
    for phrase in LIBRARY_PHRASES:
        assert phrase not in message, f"{phrase!r} in {message!r}"
    assert "\n" not in message
    return message


# -- integers the database cannot hold (defect 6) ----------------------------------------


def test_event_ids_past_the_database_are_refused(server: ServerThread) -> None:
    c = server.client
    for after in (2**63, INT32_MAX + 1, 10**30):
        message = _error(c.get("/events", params={"after": after}))
        assert message == f"after: must be at most {INT32_MAX} (not {after})"
    assert _error(c.get("/events", params={"after": -1})) == "after: must be at least 0 (not -1)"
    page = c.get("/events", params={"after": INT32_MAX})
    assert page.status_code == 200 and page.json()["items"] == [], page.text


# -- text the database cannot store or compare (found by the fuzz on PostgreSQL) ----------


@pytest.mark.parametrize(
    ("method", "path", "params", "body", "field"),
    [
        ("GET", "/vms/a%00b", None, None, "name"),
        ("GET", "/nodes/%00", None, None, "name"),
        ("GET", "/tasks/a%00", None, None, "task_id"),
        ("GET", "/events", {"task": "\x00"}, None, "task"),
        ("GET", "/events", {"actor": "x\x00"}, None, "actor"),
        ("GET", "/reconcile", {"vm": "\U000fe253\x00_"}, None, "vm"),
        ("GET", "/commands", {"node": "a\x00"}, None, "node"),
        ("GET", "/tasks", {"vm": "a\x00"}, None, "vm"),
        ("POST", "/reconcile/fix", None, {"classes": ["stale"], "vm": "\x00"}, "vm"),
        ("POST", "/tokens", None, {"description": "\xb8\x00\x1e"}, "description"),
        ("PUT", "/nodes/n1/power", None, {"driver": "sim", "address": "a\x00"}, "address"),
    ],
)
def test_text_with_a_nul_is_refused(
    server: ServerThread,
    method: str,
    path: str,
    params: dict[str, str] | None,
    body: dict[str, Any] | None,
    field: str,
) -> None:
    answer = server.client.request(method, path, params=params, json=body)
    message = _plain(_error(answer))
    assert message.startswith(f"{field}: "), message


def test_a_cursor_holding_a_nul_is_refused(server: ServerThread) -> None:
    for path in ("/vms", "/nodes", "/tasks", "/commands"):
        answer = server.client.get(path, params={"cursor": "YWZ0ZXI6AA"})  # "after:\0"
        assert _error(answer) == "cursor: not a cursor this server issued"


def test_a_lone_surrogate_is_refused_and_never_breaks_an_answer(server: ServerThread) -> None:
    body = '{"driver": "sim", "address": "\\ud800"}'
    answer = server.client.put(
        "/nodes/n1/power", content=body, headers={"Content-Type": "application/json"}
    )
    assert _error(answer).startswith("address: must be valid Unicode text")
    encoded = json.dumps(error_body("x", "no node 'a\ud800'"), ensure_ascii=False)
    assert "\\ud800" in encoded.encode("utf-8").decode()


# -- refusals are client errors (defect 17) ------------------------------------------------


def test_a_node_that_is_not_connected_is_a_conflict(server: ServerThread) -> None:
    c = server.client
    assert c.post("/nodes", json={"name": "away"}).status_code == 201
    answer = c.post("/vms", json={"name": "v", "vcpus": 1, "memory_mb": 128, "node": "away"})
    _error(answer, 409)
    assert answer.json()["error"]["code"] == "node-unavailable"
    assert NodeUnavailable.http_status == 409


# -- validation messages for people (defect 13) --------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"name": "bad name!", "vcpus": 1, "memory_mb": 128},
            "name: use letters, digits, '.', '_' and '-', starting with a letter or digit",
        ),
        ({"name": "", "vcpus": 1, "memory_mb": 128}, "name: must not be empty"),
        ({"name": "a" * 64, "vcpus": 1, "memory_mb": 128}, "name: must have at most 63 characters"),
        ({"name": "a", "vcpus": 1, "memory_mb": 1}, "memory_mb: must be at least 16 (not 1)"),
        ({"name": "a", "vcpus": 2000, "memory_mb": 128}, "vcpus: must be at most 1024 (not 2000)"),
        ({"name": "a", "memory_mb": 128}, "vcpus: required (or give a flavor)"),
        ({"name": "a", "vcpus": "two", "memory_mb": 128}, "vcpus: must be a whole number"),
        ({"name": "a", "vcpus": 1.5, "memory_mb": 128}, "vcpus: must be a whole number"),
        (
            {"name": "a", "vcpus": 1, "memory_mb": 128, "start": "maybe"},
            "start: must be true or false",
        ),
        (
            {"name": "a", "vcpus": 1, "memory_mb": 128, "disks": [{"size_mb": 0}]},
            "disks[0].size_mb: must be at least 1 (not 0)",
        ),
        (
            {"name": "a", "vcpus": 1, "memory_mb": 128, "nics": [{"network": "n", "bridge": "b"}]},
            "nics[0]: a NIC has a network, a bridge or an SR-IOV physical network (exactly one)",
        ),
        (
            {
                "name": "a",
                "vcpus": 1,
                "memory_mb": 128,
                "nics": [{"bridge": "b", "mode": "hostdev"}],
            },
            "nics[0]: mode hostdev: only for an SR-IOV NIC (sriov=PHYSNET)",
        ),
        (
            {"name": "a", "vcpus": 1, "memory_mb": 128, "nics": [{"sriov": "p", "mode": "vfio"}]},
            "nics[0].mode: must be one of 'macvtap' or 'hostdev'",
        ),
        (
            {"name": "a", "vcpus": 1, "memory_mb": 128, "nics": [{"network": "n", "mac": "x"}]},
            "nics[0].mac: 'x' is not a MAC address (six hex pairs separated by ':')",
        ),
        (
            {"name": "a", "vcpus": 1, "memory_mb": 128, "migration_method": "fast"},
            "migration_method: must be one of 'default', 'live' or 'shutdown'",
        ),
        ({"name": "a", "vcpus": 1, "memory_mb": 128, "disks": {}}, "disks: must be a list"),
        ([1], "request body: must be an object"),
    ],
)
def test_validation_messages_are_for_people(server: ServerThread, body: Any, message: str) -> None:
    assert _plain(_error(server.client.post("/vms", json=body))) == message


@pytest.mark.parametrize(
    ("method", "path", "params", "body", "message"),
    [
        ("GET", "/events", {"wait": "nan"}, None, "wait: must be a finite number"),
        ("GET", "/events", {"wait": 61}, None, "wait: must be at most 60 (not 61)"),
        ("GET", "/events", {"limit": "many"}, None, "limit: must be a whole number"),
        ("GET", "/tasks/t/wait", {"timeout": 0}, None, "timeout: must be more than 0 (not 0)"),
        ("POST", "/vms/x/shutdown", None, {"timeout": -1}, "timeout: must be more than 0 (not -1)"),
        (
            "POST",
            "/nodes/n/power/explode",
            None,
            None,
            "action: must be one of 'status', 'on', 'off', 'cycle' or 'test'",
        ),
        (
            "PATCH",
            "/vms/x",
            None,
            {"node_limit": ["ok", "no way"]},
            "node_limit[1]: use letters, digits, '.', '_' and '-', starting with a letter or digit",
        ),
        ("POST", "/reconcile/fix", None, {"classes": []}, "classes: must not be empty"),
    ],
)
def test_parameters_are_refused_in_plain_words(
    server: ServerThread,
    method: str,
    path: str,
    params: dict[str, Any] | None,
    body: dict[str, Any] | None,
    message: str,
) -> None:
    answer = server.client.request(method, path, params=params, json=body)
    assert _plain(_error(answer)) == message


def test_several_errors_are_one_line(server: ServerThread) -> None:
    answer = server.client.post("/vms", json={"name": "a", "vcpus": 0, "memory_mb": 1})
    assert _error(answer) == (
        "vcpus: must be at least 1 (not 0); memory_mb: must be at least 16 (not 1)"
    )
    answer = server.client.post("/vms", json={"name": "a"})
    assert _error(answer) == (
        "vcpus: required (or give a flavor); memory_mb: required (or give a flavor)"
    )
    answer = server.client.post("/vms", json={"name": "a", "flavor": "f", "vcpus": 1})
    assert _error(answer) == "vcpus: not with a flavor (the flavor gives it)"


def test_unreadable_bodies_and_unknown_paths_say_what_was_wrong(server: ServerThread) -> None:
    c = server.client
    headers = {"Content-Type": "application/json"}
    assert _error(c.post("/vms", content=b"{", headers=headers)) == (
        "request body: is not valid JSON"
    )
    bad_utf8 = c.put("/cluster/maintenance", content=b"\xe9\x12$\x03", headers=headers)
    assert (
        _error(bad_utf8, 400) == "the request body could not be read: send JSON, encoded in UTF-8"
    )
    assert bad_utf8.json()["error"]["code"] == "bad-request"
    assert _error(c.get("/nope"), 404) == "no such API path: /api/v1/nope"
    assert _error(c.delete("/status"), 405) == "DELETE is not allowed on /api/v1/status"


def test_an_unknown_kind_of_error_falls_back_to_plain_words() -> None:
    errors = [
        {"type": "uuid_parsing", "loc": ("query", "x"), "msg": "Input should be a valid UUID"},
        {"type": "value_error", "loc": ("body", "a", 2), "msg": "Value error, no", "ctx": {}},
        {"type": "missing", "loc": ("body",), "msg": "Field required"},
        {"type": "extra_forbidden", "loc": ("body", "x"), "msg": "Extra inputs are not permitted"},
    ]
    assert describe(errors) == (
        "x: must be a valid UUID; a[2]: no; request body: required; "
        "x: is not a field of this request"
    )


# -- the OpenAPI document (defect 17) ------------------------------------------------------


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base: Path = tmp_path_factory.mktemp("openapi")
    config = ServerConfig(data_dir=base / "data", db_url=sqlite_url(base), port=1)
    runtime = prepare(config)
    yield runtime.app().openapi()
    runtime.db.dispose()


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def test_every_error_status_is_documented_with_the_error_body(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["ErrorOut"]["properties"]) == {"error"}
    assert set(schemas["ErrorInfo"]["required"]) == {"code", "message"}
    for method, path, operation in _operations(document):
        answers = operation["responses"]
        for status, answer in answers.items():
            if int(status) >= 400:
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (method, path)
        wanted = set()
        if path.startswith("/api/v1") or path == "/metrics":
            wanted |= {"401", "403"}
        if operation.get("parameters"):
            wanted.add("422")
        if "requestBody" in operation:
            wanted |= {"400", "413", "422"}
        if "{" in path:
            wanted.add("404")
        if method != "get" and path.startswith("/api/v1") and path not in NO_CONFLICT:
            wanted.add("409")
        assert wanted <= set(answers), (method, path, sorted(answers))


def test_the_statuses_that_depend_on_the_operation(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert "409" in paths["/api/v1/vms/{name}/console"]["get"]["responses"]
    assert {"502", "503", "504"} <= set(
        paths["/api/v1/nodes/{name}/power/{action}"]["post"]["responses"]
    )
    assert "404" in paths["/api/v1/events"]["get"]["responses"]  # an unknown vm or node
    assert "409" not in paths["/api/v1/settings/{key}"]["put"]["responses"]
    assert set(paths["/healthz"]["get"]["responses"]) == {"200"}
    metrics = paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert set(metrics) == {"text/plain"}


def test_the_tables_name_operations_that_exist(document: dict[str, Any]) -> None:
    listed = {(m, path) for m, path, _ in _operations(document)}
    named = set(responses.EXTRA) | responses.NEVER_CONFLICT | set(responses.OTHER_CONTENT)
    assert named <= listed, sorted(named - listed)


def test_bounds_are_in_the_document(document: dict[str, Any]) -> None:
    events = document["paths"]["/api/v1/events"]["get"]["parameters"]
    after = next(p for p in events if p["name"] == "after")["schema"]["anyOf"][0]
    assert after["maximum"] == INT32_MAX
    show = document["paths"]["/api/v1/vms/{name}"]["get"]["parameters"][0]["schema"]
    assert show["maxLength"] == 63 and show["pattern"]
