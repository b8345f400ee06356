"""A migration shows the progress its source host reports while it runs, and says how the VM
moved once it has: live, or by shutdown (after a failed live migration: a fallback) and for
how long the VM was down; through the API, the events and `bollard vm migrate --wait`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bollard.cli.main import app
from bollard.sim.fabric import Fabric
from bollard.sim.models import FaultMode, MigrationPhase
from tests.api.test_api_vms import _wait
from tests.support.cluster import AgentThread, ServerThread, wait_until

Slow = tuple[ServerThread, list[AgentThread]]
RATE = 1024.0  # MiB/s: a VM of 6 GiB takes 6 s to migrate


@pytest.fixture
def slow(server: ServerThread, tmp_path: Path) -> Iterator[Slow]:
    """Two sim nodes whose migrations take memory / RATE seconds."""
    agents = [
        AgentThread(server, name, tmp_path, vcpus=16, memory_mb=32768, sim_migration_rate=RATE)
        for name in ("node1", "node2")
    ]
    for agent in agents:
        wait_until(
            lambda a=agent: server.client.get(f"/nodes/{a.config.node}").json()["connected"],
            f"{agent.config.node} to connect",
        )
    yield server, agents
    for agent in agents:
        agent.stop()


def _vm(server: ServerThread, name: str, memory_mb: int, **extra: Any) -> None:
    body = {"name": name, "vcpus": 1, "memory_mb": memory_mb, "node": "node1", "start": True}
    task = _wait(server.client, server.client.post("/vms", json={**body, **extra}))
    assert task["state"] == "succeeded", task


def _events(server: ServerThread, task_id: str) -> dict[str, str]:
    items = server.client.get("/events", params={"task": task_id}).json()["items"]
    return {e["kind"]: e["message"] for e in items}


def test_a_running_migration_shows_the_hosts_progress_then_how_it_moved(slow: Slow) -> None:
    server, _ = slow
    _vm(server, "big", 6144)
    answer = server.client.post("/vms/big/migrate", json={"to": "node2"})
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task"]["id"]

    def progress() -> dict[str, Any] | None:
        task = server.client.get(f"/tasks/{task_id}").json()
        shown: dict[str, Any] | None = task["result"].get("progress")
        return shown if shown and 0 < shown["fraction"] < 1 else None

    seen = wait_until(progress, "the migration's progress in its task", timeout=10)
    assert seen["step"] == "live_migrate"
    assert seen["message"].startswith("migrate transfer: ")
    assert seen["message"].endswith("%")

    task = _wait(server.client, answer)
    assert task["state"] == "succeeded", task
    assert "progress" not in task["result"]  # only while it runs
    assert task["result"]["summary"] == "migrated live to node2"
    assert "fallback" not in task["result"]
    assert "migration.downtime" not in _events(server, task_id)


def test_a_fallback_says_so_and_how_long_the_vm_was_down(
    slow: Slow, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server, agents = slow
    _vm(server, "fb", 512)
    Fabric(agents[0].config.fabric_dir or "").host("node1").faults.set(
        "migrate", FaultMode.FAIL, phase=MigrationPhase.TRANSFER
    )
    monkeypatch.setenv("BOLLARD_URL", server.url)
    monkeypatch.setenv("BOLLARD_TOKEN", server.token)
    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path / "config"))
    result = CliRunner().invoke(app, ["vm", "migrate", "fb", "--to", "node2", "--wait"])
    assert result.exit_code == 0, result.output

    task = server.client.get("/tasks", params={"vm": "fb"}).json()["items"]
    migration = next(t for t in task if t["type"] == "migrate")
    summary = migration["result"]["summary"]
    assert summary.startswith("migrated by shutdown to node2 (live migration failed: ")
    assert "injected fault" in summary
    assert "; the VM was down for " in summary and summary.endswith(" s")
    fallback = migration["result"]["fallback"]
    assert "injected fault" in fallback["live_error"]
    assert isinstance(fallback["downtime_s"], float) and fallback["downtime_s"] >= 0
    # Said by `vm migrate --wait`, in the events, and in the event of the commit.
    assert result.stdout.strip() == (
        f"task {migration['id']} (migrate fb) succeeded: {summary}; fb is ACTIVE on node2."
    )
    events = _events(server, migration["id"])
    assert events["migration.downtime"] == summary
    assert "by a shutdown migration (live migration failed)" in events["vm.migrated"]
    assert "falling back to a shutdown migration" in events["migration.fallback"]


def test_a_planned_shutdown_migration_says_the_downtime_without_a_fallback(slow: Slow) -> None:
    server, _ = slow
    _vm(server, "sd", 512, migration_method="shutdown")
    task = _wait(server.client, server.client.post("/vms/sd/migrate", json={"to": "node2"}))
    assert task["state"] == "succeeded", task
    summary = task["result"]["summary"]
    assert summary.startswith("migrated by shutdown to node2; the VM was down for ")
    assert "fallback" not in task["result"]
    assert _events(server, task["id"])["migration.downtime"] == summary


def test_a_stopped_vm_moves_without_downtime(slow: Slow) -> None:
    server, _ = slow
    body = {"name": "off", "vcpus": 1, "memory_mb": 512, "node": "node1", "start": False}
    assert _wait(server.client, server.client.post("/vms", json=body))["state"] == "succeeded"
    task = _wait(server.client, server.client.post("/vms/off/migrate", json={"to": "node2"}))
    assert task["state"] == "succeeded", task
    assert task["result"]["summary"] == "moved to node2 while stopped"
