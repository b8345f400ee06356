"""The REST API's contract, against a real server on SQLite and PostgreSQL."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from bollard.domain.errors import SchemaTooNew
from bollard.server.assembly import prepare
from bollard.server.config import ServerConfig
from bollard.store import migrate, settings
from bollard.store.db import Database
from tests.support.cluster import ServerThread


def test_healthz_needs_no_token(server: ServerThread) -> None:
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic abc"])
def test_api_refuses_missing_or_bad_token(server: ServerThread, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    answer = httpx.get(server.url + "/api/v1/status", headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"


def test_admin_token_file_is_private(server: ServerThread) -> None:
    mode = (server.config.data_dir / "admin.token").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert len(server.token) >= 32


def test_admin_token_survives_restart(tmp_path: Path, db_url: str) -> None:
    first = ServerThread(tmp_path / "d", db_url)
    token = first.token
    first.stop()
    second = ServerThread(tmp_path / "d", db_url)
    try:
        assert second.token == token
        assert second.client.get("/status").status_code == 200
    finally:
        second.stop()


def test_errors_are_json_with_code(server: ServerThread) -> None:
    missing = server.client.get("/vms/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"code": "not-found", "message": "VM 'nope' does not exist"}}
    bad = server.client.post("/vms", json={"name": "a", "vcpus": 1, "memory_mb": -5})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid-input"
    assert "memory_mb" in bad.json()["error"]["message"]
    bad_name = server.client.post("/nodes", json={"name": "has space"})
    assert bad_name.status_code == 422
    assert "name" in bad_name.json()["error"]["message"]


def test_node_add_shows_token_once_and_refuses_duplicates(server: ServerThread) -> None:
    created = server.client.post("/nodes", json={"name": "n1"})
    assert created.status_code == 201
    body = created.json()
    assert body["node"]["name"] == "n1" and body["node"]["connected"] is False
    assert len(body["token"]) >= 32
    shown = server.client.get("/nodes/n1").json()
    assert "token" not in shown and "token_hash" not in shown
    again = server.client.post("/nodes", json={"name": "n1"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already-exists"


def test_lists_are_paginated(server: ServerThread) -> None:
    names = [f"n{i:02d}" for i in range(7)]
    for name in names:
        assert server.client.post("/nodes", json={"name": name}).status_code == 201
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = server.client.get("/nodes", params=params).json()
        assert page["total"] == 7
        assert len(page["items"]) <= 3
        seen += [n["name"] for n in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == names
    assert pages == 3
    default = server.client.get("/nodes").json()
    assert len(default["items"]) == 7 and default["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"cursor": "%%%"}, "cursor")],
)
def test_bad_page_parameters(server: ServerThread, params: dict[str, object], field: str) -> None:
    answer = server.client.get("/vms", params=params)
    assert answer.status_code == 422
    assert field in answer.json()["error"]["message"]


def test_openapi_is_served(server: ServerThread) -> None:
    spec = httpx.get(server.url + "/openapi.json").json()
    assert "/api/v1/vms" in spec["paths"]
    assert "/api/v1/vms/{name}/start" in spec["paths"]


def test_refuses_a_schema_newer_than_it_knows(tmp_path: Path, db_url: str) -> None:
    config = ServerConfig(data_dir=tmp_path / "d", db_url=db_url)
    prepare(config).db.dispose()
    db = Database(db_url)
    with db.write() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
        # (and contracted: servers of this release may not run on it; see test_schema_phases)
        settings.put(conn, migrate.OLDEST_SERVER_KEY, "9998_contracted", datetime.now(UTC))
    db.dispose()
    with pytest.raises(SchemaTooNew, match="9999_from_the_future"):
        prepare(config)


def test_unknown_vm_operations_are_404(server: ServerThread) -> None:
    for verb in ("start", "stop", "shutdown", "restart"):
        answer = server.client.post(f"/vms/ghost/{verb}")
        assert answer.status_code == 404, verb
    assert server.client.delete("/vms/ghost").status_code == 404
    assert server.client.get("/tasks/no-such-task").status_code == 404


def test_status_says_whether_maintenance_mode_is_on(server: ServerThread) -> None:
    assert server.client.get("/status").json()["maintenance"] is False
    assert server.client.put("/cluster/maintenance", json={"maintenance": True}).status_code == 200
    assert server.client.get("/status").json()["maintenance"] is True
