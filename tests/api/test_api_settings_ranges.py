"""Settings are finite and in range, through the API and the CLI (issue 16, defects 3 and 12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bollard.store import settings as stored_settings
from tests.support.cli import bollard, one_error_line, point_cli_at
from tests.support.cluster import ServerThread


@pytest.fixture
def cli_env(server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    point_cli_at(server, tmp_path / "config", monkeypatch)


@pytest.mark.parametrize(
    ("key", "body"),
    [
        ("migration.timeout", '{"value": "nan"}'),
        ("migration.timeout", '{"value": NaN}'),  # Python's JSON reader takes the literal
        ("reconcile.state.interval", '{"value": "NaN"}'),
        ("reconcile.state.interval", '{"value": Infinity}'),
        ("fencing.timeout", '{"value": "-inf"}'),
        ("health.dead_after", '{"value": "inf"}'),
    ],
)
def test_nan_and_infinities_are_refused_and_nothing_is_stored(
    server: ServerThread, key: str, body: str
) -> None:
    c = server.client
    before = c.get(f"/settings/{key}").json()["value"]
    answer = c.put(f"/settings/{key}", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    message = answer.json()["error"]["message"]
    setting = c.get(f"/settings/{key}").json()
    assert message.startswith(f"{key}: ") and "is not allowed" in message
    assert setting["allowed"] in message  # the range, e.g. "a number from 1 to 86400"
    assert setting["value"] == before


def test_out_of_range_names_the_setting_the_value_and_the_range(server: ServerThread) -> None:
    answer = server.client.put("/settings/migration.timeout", json={"value": 0.5})
    assert answer.status_code == 422
    assert answer.json()["error"]["message"] == (
        "migration.timeout: 0.5 is not allowed; give a number from 1 to 86400"
    )
    shown = server.client.get("/settings/migration.timeout").json()
    assert (shown["minimum"], shown["maximum"], shown["allowed"]) == (
        1,
        86400,
        "a number from 1 to 86400",
    )


def test_a_bad_value_already_stored_reads_as_the_default(server: ServerThread) -> None:
    """A value stored before ranges were checked ("nan" was stored, and broke every
    migration): every reader gets the default instead, and the API still answers."""
    runtime = server.runtime

    def plant() -> None:
        with runtime.work.write() as conn:
            stored_settings.put(conn, "migration.timeout", "nan", runtime.clock.now())
            stored_settings.put(conn, "scheduler.vcpu_allocation_ratio", "inf", runtime.clock.now())

    plant()
    assert runtime.settings.get("migration.timeout") == 600.0
    assert runtime.settings.all()["scheduler.vcpu_allocation_ratio"] == 1.0
    listed = {s["key"]: s["value"] for s in server.client.get("/settings").json()}
    assert listed["migration.timeout"] == 600.0
    assert server.client.get("/settings/scheduler.vcpu_allocation_ratio").json()["value"] == 1.0
    # The scheduler reads it in its own transaction: creation still places a VM.
    created = server.client.post("/nodes", json={"name": "n1"})
    assert created.status_code == 201
    refused = server.client.post("/vms", json={"name": "v", "vcpus": 1, "memory_mb": 64})
    assert refused.status_code == 409 and "n1: not connected" in refused.text, refused.text


@pytest.mark.usefixtures("cli_env")
def test_cli_takes_negative_values_and_refuses_them_by_range(server: ServerThread) -> None:
    refused = bollard("settings", "set", "reconcile.restart_budget", "-1")
    assert one_error_line(refused) == (
        "error: reconcile.restart_budget: -1 is not allowed; give a whole number from 0 to 1000"
    )
    zero = bollard("settings", "set", "health.startup_grace", "-0")
    assert zero.exit_code == 0, zero.output
    assert zero.stdout.strip() == "health.startup_grace = 0.0"


@pytest.mark.usefixtures("cli_env")
def test_cli_refuses_nan_in_one_line(server: ServerThread) -> None:
    line = one_error_line(bollard("settings", "set", "migration.timeout", "nan"))
    assert line == "error: migration.timeout: nan is not allowed; give a number from 1 to 86400"
    assert server.client.get("/settings/migration.timeout").json()["value"] == 600.0
    shown = bollard("settings", "get", "migration.timeout")
    assert "a number from 1 to 86400" in shown.stdout
