"""A node's power driver is tested, then stored; a failed test stores nothing unless
`store_untested` (issue 16, defect 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bollard.sim.fabric import Fabric
from tests.support.cli import bollard, point_cli_at
from tests.support.cluster import ServerThread


@pytest.fixture
def fabric(server: ServerThread, tmp_path: Path) -> Path:
    """A sim fabric with one host, node1 (no agent needed to test its power driver), that the
    server's sim power driver uses."""
    root = tmp_path / "fabric"
    fab = Fabric(root)
    with fab.lock():
        fab.host("node1").ensure_host(4, 4096)
    server.runtime.power.sim_fabric_dir = root
    assert server.client.post("/nodes", json={"name": "node1"}).status_code == 201
    return root


def _kinds(server: ServerThread, node: str) -> list[str]:
    items = server.client.get("/events", params={"node": node}).json()["items"]
    return [e["kind"] for e in items]


def _power(server: ServerThread, node: str) -> dict[str, Any]:
    power: dict[str, Any] = server.client.get(f"/nodes/{node}").json()["power"]
    return power


@pytest.mark.usefixtures("fabric")
def test_a_failed_test_stores_nothing_and_says_what_the_test_said(server: ServerThread) -> None:
    c = server.client
    answer = c.put("/nodes/node1/power", json={"driver": "sim", "address": "node9"})
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "power-test-failed"
    assert error["message"].startswith("power test of node1 failed, nothing was stored: ")
    assert "no sim host node9" in error["message"]
    assert _power(server, "node1") == {"driver": None, "address": None, "credentials": False}
    assert "node.power_test_failed" in _kinds(server, "node1")
    assert "node.power" not in _kinds(server, "node1")


@pytest.mark.usefixtures("fabric")
def test_a_failed_test_keeps_the_driver_stored_before(server: ServerThread) -> None:
    c = server.client
    good = c.put("/nodes/node1/power", json={"driver": "sim", "address": "node1"})
    assert good.status_code == 200, good.text
    bad = c.put(
        "/nodes/node1/power",
        json={
            "driver": "redfish",
            "address": "http://127.0.0.1:9",
            "username": "u",
            "password": "p",
        },
    )
    assert bad.status_code == 422
    assert _power(server, "node1") == {"driver": "sim", "address": "node1", "credentials": False}


@pytest.mark.usefixtures("fabric")
def test_store_untested_stores_and_says_it_was_not_verified(server: ServerThread) -> None:
    answer = server.client.put(
        "/nodes/node1/power",
        json={"driver": "sim", "address": "node9", "store_untested": True},
    )
    assert answer.status_code == 200, answer.text
    tested = answer.json()["power_test"]
    assert tested["verified"] is False and "no sim host node9" in tested["detail"]
    assert _power(server, "node1")["driver"] == "sim"
    assert "node.power_untested" in _kinds(server, "node1")


@pytest.mark.usefixtures("fabric")
def test_a_passing_test_stores_and_says_what_answered(server: ServerThread) -> None:
    answer = server.client.put("/nodes/node1/power", json={"driver": "sim", "address": "node1"})
    assert answer.status_code == 200, answer.text
    tested = answer.json()["power_test"]
    assert tested["verified"] is True and tested["detail"].startswith("sim host node1: power on")
    assert _power(server, "node1") == {"driver": "sim", "address": "node1", "credentials": False}


@pytest.mark.usefixtures("fabric")
def test_enrollment_with_a_failing_driver_enrolls_nothing(server: ServerThread) -> None:
    c = server.client
    power = {"driver": "sim", "address": "node9"}
    refused = c.post("/nodes", json={"name": "node2", "power": power})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "power-test-failed"
    assert c.get("/nodes/node2").status_code == 404
    kept = c.post("/nodes", json={"name": "node2", "power": power | {"store_untested": True}})
    assert kept.status_code == 201, kept.text
    assert _power(server, "node2")["driver"] == "sim"


@pytest.fixture
def cli_env(server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    point_cli_at(server, tmp_path / "config", monkeypatch)


@pytest.mark.usefixtures("fabric", "cli_env")
def test_cli_node_set_fails_in_one_line_or_stores_untested(server: ServerThread) -> None:
    failed = bollard("node", "set", "node1", "--power-driver", "sim", "--power-address", "node9")
    assert failed.exit_code == 1, failed.output
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: power test of node1 failed"), lines
    assert "--store-untested" in lines[0]
    assert _power(server, "node1")["driver"] is None

    stored = bollard(
        "node", "set", "node1", "--power-driver", "sim", "--power-address", "node9",
        "--store-untested",
    )  # fmt: skip
    assert stored.exit_code == 0, stored.output
    assert "NOT verified" in stored.stdout and "no sim host node9" in stored.stdout
    assert _power(server, "node1")["driver"] == "sim"
