"""`bollard cluster servers`, the `servers` line of `bollard status`, and what `bollard up
--servers N --db URL` checks and starts, against an in-memory fake of /api/v1/servers and
/api/v1/status (no process is started here; tests/e2e runs `bollard up`)."""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bollard.cli import client as client_mod
from bollard.cli import up_servers
from bollard.cli.up_cells import CellsPlan
from bollard.cli.up_servers import ServersPlan, agent_argv, server_argv
from tests.unit.cli_api19 import TOKEN, field, one_line_error, run


def item(
    name: str, role: str, state: str = "up", agents: int = 0, this: bool = False
) -> dict[str, Any]:
    now = datetime.now(UTC)  # (whole hours: "5h ago" and "2h ago" for half an hour)
    started, renewed = (
        (now - timedelta(hours=5)).isoformat(),
        (now - timedelta(hours=2)).isoformat(),
    )
    return {
        "id": f"id-{name}", "name": name, "url": f"https://{name}", "version": "0.23",
        "schema_revision": "0017", "state": state, "started_at": started,
        "renewed_at": renewed, "expires_at": renewed,
        "stopped_at": None if state == "up" else renewed, "role": role, "agents": agents,
        "this": this,
    }  # fmt: skip


class ServersApi:
    def __init__(self) -> None:
        self.items = [
            item("a:8443", "leader", agents=2, this=True),
            item("b:8443", "member", agents=1),
            item("c:8443", "-", state="gone"),
        ]
        self.leader: str | None = "id-a:8443"
        self.counts: dict[str, Any] | None = {"total": 3, "up": 2, "leader": "a:8443"}
        self.has_servers = True

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return httpx.Response(401, json={"error": {"code": "unauthorized", "message": "no"}})
        path = request.url.path.removeprefix("/api/v1")
        if path == "/servers" and self.has_servers:
            return httpx.Response(200, json={"items": self.items, "leader": self.leader})
        if path == "/status":
            status: dict[str, Any] = {
                "version": "0.23", "database": "postgresql", "maintenance": False,
                "nodes": {"total": 3, "connected": 3}, "vms": {"total": 0, "by_status": {}},
                "tasks_running": 0, "mode": "single",
            }  # fmt: skip
            if self.counts is not None:
                status["servers"] = self.counts
            return httpx.Response(200, json=status)
        return httpx.Response(404, json={"error": {"code": "not-found", "message": "no route"}})


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ServersApi:
    fake = ServersApi()
    monkeypatch.setattr(client_mod, "transport_override", httpx.MockTransport(fake))
    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("BOLLARD_URL", "http://bollard.test")
    monkeypatch.setenv("BOLLARD_TOKEN", TOKEN)
    monkeypatch.delenv("BOLLARD_DEBUG", raising=False)
    return fake


def rows(table: str) -> list[list[str]]:
    """The cells of a table's rows (after its header and rule)."""
    return [[c.strip() for c in ln.split("│")] for ln in table.strip().splitlines()[2:]]


def ok(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_servers_table_shows_each_with_role_state_agents(api: ServersApi) -> None:
    out = ok("cluster", "servers")
    header = [c.strip() for c in out.strip().splitlines()[0].split("┃")]
    assert header == ["NAME", "ROLE", "STATE", "AGENTS", "VERSION", "SCHEMA", "URL", "STARTED",
                      "RENEWED"]  # fmt: skip
    assert rows(out) == [
        ["a:8443 (this)", "leader", "up", "2", "0.23", "0017", "https://a:8443", "5h ago",
         "2h ago"],
        ["b:8443", "member", "up", "1", "0.23", "0017", "https://b:8443", "5h ago", "2h ago"],
        ["c:8443", "-", "gone", "0", "0.23", "0017", "https://c:8443", "5h ago", "2h ago"],
    ]  # fmt: skip
    assert "No leader" not in out


def test_servers_json_is_the_answer(api: ServersApi) -> None:
    assert json.loads(ok("cluster", "servers", "-o", "json")) == {
        "items": api.items,
        "leader": "id-a:8443",
    }


def test_servers_says_when_none_leads(api: ServersApi) -> None:
    api.leader = None
    api.items[0]["role"] = "member"
    assert "No leader now" in ok("cluster", "servers")


def test_servers_says_when_none_registered(api: ServersApi) -> None:
    api.items, api.leader = [], None
    assert ok("cluster", "servers").strip() == "No server has registered yet."


def test_servers_of_a_server_without_the_route_is_one_line(api: ServersApi) -> None:
    api.has_servers = False
    one_line_error(run("cluster", "servers"), "lists no servers", "http://bollard.test")


def test_status_has_a_servers_line(api: ServersApi) -> None:
    assert field(ok("status"), "servers") == "2 up of 3 listed, leader a:8443"
    api.counts = {"total": 2, "up": 2, "leader": None}
    assert field(ok("status"), "servers") == "2 up, no leader"
    api.counts = None  # an older server, or an API server with cells: no line
    assert re.search(r"^servers\s", ok("status"), re.MULTILINE) is None


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--servers", "2"], "--servers 2 needs --db postgresql://"),
        (["--servers", "3", "--db", "sqlite:////tmp/x.db"], "needs a PostgreSQL --db"),
        (["--db", "postgresql://bollard:secret@db/bollard"], "must not hold a password"),
        (["--db", "mysql://db/bollard"], "postgresql:// or sqlite:///"),
        (["--servers", "2", "--cells", "1", "--db", "postgresql://db/b"], "do not go with"),
    ],
)
def test_up_refuses_what_it_cannot_start(
    api: ServersApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    fragment: str,
) -> None:
    data = tmp_path / "up"
    line = one_line_error(run("up", "--data-dir", str(data), *args), fragment)
    assert "secret" not in line
    assert not data.exists(), "refused before anything was made"


def test_several_servers_on_postgresql_pass_the_check() -> None:
    up_servers.check_db("postgresql://bollard@db/b", 3)  # no error
    up_servers.check_db(None, 1)


def test_several_servers_plan_their_ports_dirs_and_the_agents_addresses(tmp_path: Path) -> None:
    base = CellsPlan(tmp_path, "127.0.0.1", 8700, 0, 2, scheme="https")
    db = "postgresql://bollard@127.0.0.1:5432/up"
    plan = ServersPlan(base, 3, db)
    assert plan.names == ["server1", "server2", "server3"]
    assert plan.ports == [8700, 8701, 8702]
    assert plan.data_dir("server2") == tmp_path / "servers" / "server2"
    argv = server_argv(plan, "server2", None)
    assert argv[:3] == [sys.executable, "-m", "bollard"]
    assert argv[argv.index("--data-dir") + 1] == str(tmp_path / "servers" / "server2")
    assert argv[argv.index("--listen") + 1] == "127.0.0.1:8701"
    assert argv[argv.index("--db") + 1] == db
    assert argv[argv.index("--sim-fabric-dir") + 1] == str(tmp_path / "fabric")
    agent = agent_argv(plan, "node1", None)
    given = [agent[i + 1] for i, a in enumerate(agent) if a == "--server"]
    assert given == ["https://127.0.0.1:8700", "https://127.0.0.1:8701", "https://127.0.0.1:8702"]


def test_one_server_keeps_the_usual_layout(tmp_path: Path) -> None:
    plan = ServersPlan(CellsPlan(tmp_path, "127.0.0.1", 8700, 0, 1, scheme="http"))
    assert plan.names == ["server"] and plan.data_dir("server") == tmp_path
    argv = server_argv(plan, "server", None)
    assert "--db" not in argv
    assert argv[argv.index("--data-dir") + 1] == str(tmp_path)
    agent = agent_argv(plan, "node1", None)
    assert [a for a in agent if a.startswith("http")] == ["http://127.0.0.1:8700"]
