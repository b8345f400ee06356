"""A rolling upgrade on PostgreSQL: two servers and two agents of the previous release (the
commit in tests/upgrade/previous_release), replaced one process at a time by this release's,
with VMs created, stopped, started and migrated through either server at every stage, so
that old and new servers relay commands for each other and old and new agents talk to servers
of the other release (the agent protocol negotiated). Afterwards: every task succeeded, every
command completed, each VM runs on exactly the host its record names, nothing left to migrate.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.cluster import poll_until
from tests.support.databases import postgres_database, postgres_unavailable
from tests.upgrade.mixed_cluster import MixedCluster, extract_previous, unavailable_history

NODES = 2
REPORTED = 20.0  # seconds for a host to report a VM that came to it (a heartbeat or two)


@pytest.fixture
def mixed(tmp_path: Path) -> Iterator[MixedCluster]:
    reason = postgres_unavailable() or unavailable_history()
    if reason is not None:
        pytest.skip(reason)
    previous = extract_previous(tmp_path / "previous")
    with postgres_database() as url:
        cluster = MixedCluster(tmp_path / "cluster", db_url=url, previous_src=previous)
        try:
            cluster.start_previous(NODES)
            yield cluster
        finally:
            cluster.use("this")
            note = cluster.down()
            assert not note, note


def _speaks_this_release(cluster: MixedCluster, server: str) -> bool:
    """Whether ``server`` runs this release: its server list names each server's schema
    (the previous release's does not)."""
    return all("schema_revision" in s for s in cluster.servers_view(server)["items"])


def _vm(cluster: MixedCluster, server: str, name: str) -> dict[str, Any]:
    with cluster.api_of(server) as api:
        found: dict[str, Any] = api.get(f"/vms/{name}")
    return found


def _check_vms(cluster: MixedCluster, server: str, running: dict[str, str]) -> None:
    """Each VM of ``running`` (name -> node) runs there only, as the record of ``server``
    says too."""
    for name, node in running.items():
        # The task ends with the move's commit; the new host's report of the VM may come a
        # heartbeat later (until then its observed power is that of the host's last report).
        def shown(name: str = name, node: str = node) -> dict[str, Any] | None:
            vm = _vm(cluster, server, name)
            seen = (vm["node"], vm["status"], vm["observed_power"])
            return vm if seen == (node, "ACTIVE", "running") else None

        vm = poll_until(f"{name} shown running on {node} by {server}", shown, REPORTED)
        assert cluster.running_on(vm["uuid"]) == [node], (name, vm)


def test_servers_and_agents_upgraded_one_at_a_time_keep_working(mixed: MixedCluster) -> None:
    c = mixed
    c.wait_settled(NODES)
    assert not _speaks_this_release(c, "server1")
    c.act("server1", "/vms", {"name": "v1", "vcpus": 1, "memory_mb": 128, "node": "node1",
                              "start": True})  # fmt: skip

    # server2 runs this release beside server1 of the previous one (both agents on server1).
    c.replace("server2")
    c.wait_settled(NODES)
    assert _speaks_this_release(c, "server2") and not _speaks_this_release(c, "server1")
    new_view = {s["name"]: s for s in c.servers_view("server2")["items"] if s["state"] == "up"}
    assert {s["schema_revision"] for s in new_view.values()} == {"0017"}
    # Asked of the new server, done by the old one's agents (relayed), and the other way.
    c.act("server2", "/vms", {"name": "v2", "vcpus": 1, "memory_mb": 128, "node": "node2",
                              "start": True})  # fmt: skip
    c.act("server2", "/vms/v1/stop", {})
    c.act("server1", "/vms/v1/start", {})
    c.act("server2", "/vms/v2/migrate", {"to": "node1", "method": "live"})
    _check_vms(c, "server1", {"v1": "node1", "v2": "node1"})

    # node1's agent runs this release, and talks to server1 (the previous release's).
    c.replace_agent("node1")
    c.wait_settled(NODES)
    assert "protocol 1)" in c.log_of("node1").rsplit("connected to", 1)[-1]
    c.act("server1", "/vms/v2/migrate", {"to": "node2", "method": "live"})
    c.act("server2", "/vms/v1/stop", {})
    c.act("server2", "/vms/v1/start", {})

    # server1 runs this release: the agents move to server2 while it restarts (node2's, of
    # the previous release, to a server of this one), then both servers are new.
    c.replace("server1")
    c.wait_settled(NODES)
    assert _speaks_this_release(c, "server1")
    # (the new server's line names the protocol; node2's agent is still the previous one's)
    assert re.search(r"node node2 connected \(incarnation [^,]+, protocol 1\)", c.log_of("server2"))
    assert c.code["node2"] == "previous"
    c.act("server1", "/vms", {"name": "v3", "vcpus": 1, "memory_mb": 128, "node": "node2",
                              "start": True})  # fmt: skip
    c.act("server1", "/vms/v3/migrate", {"to": "node1", "method": "live"})

    # node2's agent too: everything runs this release.
    c.replace_agent("node2")
    c.wait_settled(NODES)
    c.act("server2", "/vms/v2/stop", {})
    c.act("server1", "/vms/v2/start", {})
    _check_vms(c, "server2", {"v1": "node1", "v2": "node2", "v3": "node1"})

    with c.api_of("server1") as api:
        tasks = api.list_all("/tasks")
        commands = api.list_all("/commands")
        vms = api.list_all("/vms")
    assert sorted(v["name"] for v in vms) == ["v1", "v2", "v3"]
    assert tasks and {t["state"] for t in tasks} == {"succeeded"}, tasks
    assert commands and {k["state"] for k in commands} == {"COMPLETED"}, [
        k for k in commands if k["state"] != "COMPLETED"
    ]
    status = c.cli("db", "status", "--db", c.db_url, "-o", "json")
    assert status.returncode == 0, status.stderr
    schema = json.loads(status.stdout)
    assert (schema["revision"], schema["expand"], schema["contract"]) == ("0017", [], [])
    assert len(schema["servers"]) == 2
