"""`bollard sim list` reads the fabric directly."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bollard.cli.context import Context, save_context
from bollard.cli.sim_cmd import sim_app
from bollard.domain.states import PowerState
from bollard.sim import Fabric, SimVm


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(sim_app, name="sim")
    return app


def populate(fabric_dir: Path) -> None:
    fabric = Fabric(fabric_dir)
    a = fabric.host("node-a")
    a.ensure_host(8, 4096)
    a.put_vm(SimVm(uuid="u1", name="web", vcpus=2, memory_mb=512, power=PowerState.RUNNING))
    fabric.host("node-b").ensure_host(4, 2048)
    fabric.host("node-b").power_off()


def test_list_json(app: typer.Typer, tmp_path: Path) -> None:
    populate(tmp_path / "fab")
    result = CliRunner().invoke(
        app, ["sim", "list", "--fabric-dir", str(tmp_path / "fab"), "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [(h["node"], h["power"], h["vcpus"]) for h in data["hosts"]] == [
        ("node-a", "on", 8),
        ("node-b", "off", 4),
    ]
    assert data["vms"] == [
        {
            "node": "node-a",
            "name": "web",
            "uuid": "u1",
            "power": "running",
            "vcpus": 2,
            "memory_mb": 512,
            "epoch": 0,
            "acpi": True,
            "migration": None,
        }
    ]


def test_list_table_from_data_dir_and_context(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(tmp_path / "data" / "fabric")
    result = CliRunner().invoke(app, ["sim", "list", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "web" in result.output and "node-b" in result.output

    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path / "cfg"))
    save_context(Context(url="http://x", data_dir=str(tmp_path / "data"), token_file="t"))
    result = CliRunner().invoke(app, ["sim", "list", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["vms"]) == 1


def test_no_fabric_is_a_clear_error(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path / "empty-cfg"))
    result = CliRunner().invoke(app, ["sim", "list"])
    assert result.exit_code != 0
    assert "no sim fabric" in result.output
    result = CliRunner().invoke(app, ["sim", "list", "--fabric-dir", str(tmp_path / "nope")])
    assert result.exit_code != 0
    assert "does not exist" in result.output


def test_list_shows_migrations_in_progress(app: typer.Typer, tmp_path: Path) -> None:
    from bollard.sim.migration import MigrationRequest, Migrations

    fab = tmp_path / "fab"
    populate(fab)
    fabric = Fabric(fab)
    fabric.host("node-c").ensure_host(8, 4096)
    request = MigrationRequest(
        "m1", "u1", "node-a", "node-c", live=True, new_epoch=1, duration=3600
    )
    Migrations(fabric).start(request, now=time.time())
    result = CliRunner().invoke(app, ["sim", "list", "--fabric-dir", str(fab), "-o", "json"])
    assert result.exit_code == 0, result.output
    vms = {(vm["node"], vm["power"], vm["migration"]) for vm in json.loads(result.stdout)["vms"]}
    assert vms == {("node-a", "running", None), ("node-c", "paused", "incoming")}
    table = CliRunner().invoke(app, ["sim", "list", "--fabric-dir", str(fab)])
    assert "MIGRATION" in table.output and "incoming" in table.output
