"""`bollard up --server-db URL` (once per server) and `--lease-ttl SECONDS`: what each server
it starts is given, and what is refused in one line (no process is started here; the chaos
harness with three servers, tests/chaos/servers_cluster.py, starts them for real)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bollard.cli import up_cmd, up_servers
from bollard.cli.main import app as main_app
from bollard.cli.up_cells import CellsPlan
from bollard.cli.up_servers import ServersPlan, server_argv, servers_lines
from tests.unit.cli_api19 import flat, one_line_error, run

DB = "postgresql://bollard@127.0.0.1:5432/up"
VIA = [f"postgresql://bollard@127.0.0.1:{port}/up" for port in (6001, 6002, 6003)]


def _value(argv: list[str], option: str) -> str | None:
    return argv[argv.index(option) + 1] if option in argv else None


def test_each_server_gets_its_own_url_and_the_lease(tmp_path: Path) -> None:
    base = CellsPlan(tmp_path, "127.0.0.1", 8700, 0, 2, scheme="http")
    plan = ServersPlan(base, 3, DB, tuple(VIA), 6.0)
    for name, url in zip(plan.names, VIA, strict=True):
        argv = server_argv(plan, name, None)
        assert argv.count("--db") == 1 and _value(argv, "--db") == url
        assert _value(argv, "--lease-ttl") == "6"
    lines = servers_lines(plan)
    assert any(VIA[1] in line and "server2" in line for line in lines), lines
    assert any("leases: 6s" in line for line in lines), lines


def test_without_them_every_server_gets_db_and_the_servers_lease(tmp_path: Path) -> None:
    plan = ServersPlan(CellsPlan(tmp_path, "127.0.0.1", 8700, 0, 2, scheme="http"), 3, DB)
    for name in plan.names:
        argv = server_argv(plan, name, None)
        assert _value(argv, "--db") == DB and "--lease-ttl" not in argv
    assert not any("; database " in ln or "leases" in ln for ln in servers_lines(plan))


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--servers", "3", "--db", DB, "--server-db", VIA[0], "--server-db", VIA[1]],
         ["--servers 3 takes --server-db 3 times", "not 2"]),
        (["--server-db", VIA[0]], ["--server-db needs --db"]),
        (["--db", "sqlite:////tmp/x.db", "--server-db", VIA[0]], ["needs a PostgreSQL --db"]),
        (["--db", DB, "--server-db", "sqlite:////tmp/x.db"], ["--server-db must be a postgresql"]),
        (["--servers", "2", "--db", DB, "--server-db", VIA[0],
          "--server-db", "postgresql://bollard:s3cret@127.0.0.1:6002/up"],
         ["--server-db must not hold a password"]),
        (["--cells", "2", "--lease-ttl", "5"], ["do not go with --cells"]),
        (["--cells", "2", "--db", DB, "--server-db", VIA[0]], ["do not go with --cells"]),
        (["--lease-ttl", "0"], ["--lease-ttl", "at least 1"]),
        (["--lease-ttl", "601"], ["--lease-ttl", "at most 600"]),
    ],
)  # fmt: skip
def test_up_refuses_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], fragments: list[str]
) -> None:
    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path / "config"))
    data = tmp_path / "up"
    result = run("up", "--data-dir", str(data), *args)
    line = one_line_error(result, *fragments, code=result.exit_code or 1)
    assert result.exit_code != 0
    assert "s3cret" not in line
    assert not data.exists(), "refused before anything was made"


def test_the_server_refuses_a_lease_that_is_not_positive(tmp_path: Path) -> None:
    result = run("server", "--data-dir", str(tmp_path), "--lease-ttl", "-1")
    one_line_error(result, "--lease-ttl", "at least 1", code=result.exit_code or 1)
    assert result.exit_code != 0


def test_help_describes_both() -> None:
    text = flat(run("up", "--help").stdout)
    assert "--server-db URL" in text and "once per server" in text
    assert "--lease-ttl SECONDS" in text and "bollard server --lease-ttl" in text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_up_hands_them_to_the_servers_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan `bollard up` starts its server from (the start itself replaced)."""
    plans: list[ServersPlan] = []

    def fake_start(launcher: Any, plan: ServersPlan, *args: Any) -> list[str]:
        plans.append(plan)
        return ["node1"]

    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setattr(up_servers, "start_servers", fake_start)
    monkeypatch.setattr(up_cmd, "_print_usage", lambda *a, **k: None)
    umask = os.umask(0o022)  # `bollard up` sets its own: the test process gets it back
    os.umask(umask)
    argv = ["up", "--detach", "--insecure-http", "--data-dir", str(tmp_path / "data"),
            "--port", str(_free_port()), "--db", DB, "--server-db", VIA[0],
            "--lease-ttl", "4.5"]  # fmt: skip
    try:
        result = CliRunner().invoke(main_app, argv)
    finally:
        os.umask(umask)
    assert result.exit_code == 0, result.output
    [plan] = plans
    argv = server_argv(plan, plan.names[0], None)
    assert _value(argv, "--db") == VIA[0]
    assert _value(argv, "--lease-ttl") == "4.5"
