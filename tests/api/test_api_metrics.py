"""GET /metrics: the admin token is needed; connected agents' heartbeats and the
reconciliation passes show up in the histograms."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cluster import AgentThread, ServerThread, wait_until


def _samples(server: ServerThread) -> dict[str, float]:
    answer = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {server.token}"})
    answer.raise_for_status()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            if sample.name.endswith("_count") or sample.name == "bollard_agents_connected":
                found[sample.name] = found.get(sample.name, 0.0) + sample.value
    return found


def test_metrics_need_the_admin_token(server: ServerThread) -> None:
    assert httpx.get(server.url + "/metrics").status_code == 401
    bad = httpx.get(server.url + "/metrics", headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401


def test_heartbeats_and_passes_are_counted(server: ServerThread, tmp_path: Path) -> None:
    before = _samples(server)
    assert before.get("bollard_agents_connected") == 0
    agent = AgentThread(server, "node1", tmp_path)
    try:
        wait_until(
            lambda: _samples(server).get("bollard_heartbeat_seconds_count", 0) >= 3,
            "three heartbeats counted",
        )
        now = _samples(server)
        assert now["bollard_agents_connected"] == 1
        server.client.get("/reconcile").raise_for_status()
        assert _samples(server)["bollard_reconcile_pass_seconds_count"] >= 1
    finally:
        agent.stop()
