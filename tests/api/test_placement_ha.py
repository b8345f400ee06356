"""HA policies in placement, through the REST API and the real store (SQLite, and PostgreSQL
when one is reachable): creation follows a VM's HA group (priorities; a restricted group
never leaves it), a migration follows the VM's affinity rules (a named node that breaks a
strict one is refused with the reason), two VMs kept apart recovered after two nodes die land
on two nodes, and two placements of VMs of one strict rule never both pass (the rule rows are
locked by the placing transaction)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from bollard.domain.migrations import MigrationStatus, MigrationType
from bollard.domain.scheduler import Decision
from bollard.server import scheduling
from bollard.store import migrations_log, vms
from bollard.store.db import Database
from tests.api.test_api_vms import Cluster, _wait
from tests.support.cluster import DEADLINE, AgentThread, wait_until


def _all_up(c: httpx.Client, count: int) -> None:
    wait_until(
        lambda: [n["health"] for n in c.get("/nodes").json()["items"]] == ["up"] * count,
        f"{count} nodes up",
    )


def _placement(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 202, answer.text
    placement: dict[str, Any] = answer.json()["task"]["result"]["placement"]
    return placement


def _create(c: httpx.Client, name: str, **extra: Any) -> httpx.Response:
    return c.post("/vms", json={"name": name, "vcpus": 1, "memory_mb": 512, **extra})


def _made(c: httpx.Client, name: str, **extra: Any) -> None:
    assert _wait(c, _create(c, name, **extra))["state"] == "succeeded"


def _group(c: httpx.Client, name: str, nodes: dict[str, int], **extra: Any) -> None:
    answer = c.post("/ha/groups", json={"name": name, "nodes": nodes, **extra})
    assert answer.status_code == 201, answer.text


def _rule(c: httpx.Client, name: str, kind: str, members: list[str], strict: bool) -> None:
    answer = c.post(
        "/ha/rules", json={"name": name, "kind": kind, "vms": members, "strict": strict}
    )
    assert answer.status_code == 201, answer.text


def _refusal(answer: httpx.Response) -> str:
    assert answer.status_code == 409, answer.text
    message: str = answer.json()["error"]["message"]
    return message


def test_creation_follows_the_groups_priorities_and_a_restricted_group_never_leaves(
    cluster: Cluster, tmp_path: Path, db_url: str
) -> None:
    server, agents = cluster  # node1 16 vCPUs / 32 GiB, node2 8 / 16 GiB
    c = server.client
    agents.append(AgentThread(server, "node3", tmp_path, vcpus=8, memory_mb=24576))
    _all_up(c, 3)
    _group(c, "pref", {"node2": 2, "node3": 1})

    # Without a group `mem` picks node1 (most free memory); in the group, node2 (priority 2).
    assert _placement(_create(c, "plain"))["chosen"] == "node1"
    placed = _placement(_create(c, "g1", ha_group="pref"))
    assert (placed["chosen"], placed["group"]) == ("node2", "pref")
    assert placed["ranking"] == [
        {"node": "node2", "score": 16384, "priority": 2},
        {"node": "node3", "score": 24576, "priority": 1},
        {"node": "node1", "score": 32768, "priority": None},
    ]
    shown = c.get("/vms/g1").json()
    assert (shown["node"], shown["ha_group"]) == ("node2", "pref")
    # 20000 MiB does not fit node2: the next priority (node3), not node1 outside the group.
    big = {"ha_group": "pref", "memory_mb": 20000}
    assert _placement(_create(c, "g2", **big))["chosen"] == "node3"

    # A restricted group whose nodes cannot take the VM: refused, every node named with why.
    _group(c, "only2", {"node2": 1}, restricted=True)
    message = _refusal(_create(c, "r1", ha_group="only2", memory_mb=20000))
    assert message == (
        "no node can take the VM: "
        "node1: outside restricted HA group only2 (node2:1); "
        "node2: 15872 MiB of memory free, 20000 MiB needed; "  # (g1 has 512 of it)
        "node3: outside restricted HA group only2 (node2:1)"
    )
    assert c.get("/vms/r1").status_code == 404
    assert _placement(_create(c, "r2", ha_group="only2"))["chosen"] == "node2"

    # Failback: a VM of the group put on node3 by name belongs on node2 (higher priority);
    # g1 is on its group's top node already, and a nofailback group stays where it is.
    _made(c, "fb", ha_group="pref", node="node3")
    _group(c, "stay", {"node2": 2, "node3": 1}, nofailback=True)
    _made(c, "fb-stay", ha_group="stay", node="node3")
    db = Database(db_url)
    try:
        with db.read() as conn:
            found = {n: scheduling.failback_target(conn, vms.get(conn, n))
                     for n in ("fb", "g1", "fb-stay", "plain")}  # fmt: skip
    finally:
        db.engine.dispose()
    assert found == {"fb": "node2", "g1": None, "fb-stay": None, "plain": None}


def test_migration_follows_affinity_rules(cluster: Cluster, tmp_path: Path) -> None:
    server, agents = cluster
    c = server.client
    agents.append(AgentThread(server, "node3", tmp_path, vcpus=8, memory_mb=8192))
    _all_up(c, 3)
    for name, node in [("web1", "node1"), ("web2", "node2"), ("db1", "node1"), ("db2", "node3")]:
        _made(c, name, node=node)
    _rule(c, "web-apart", "apart", ["web1", "web2"], strict=True)

    # A named node that breaks a strict rule: refused, naming the rule and the VM.
    message = _refusal(c.post("/vms/web1/migrate", json={"to": "node2"}))
    assert message == "node node2 cannot take the VM: apart rule web-apart: VM web2 is on node2"
    assert c.get("/vms/web1").json()["node"] == "node1"
    # Without a target: node2 (the most free memory) is rejected with the same reason.
    migrated = c.post("/vms/web1/migrate")
    placement = _placement(migrated)
    assert placement["chosen"] == "node3"
    assert placement["rejected"] == [
        {"node": "node1", "reason": "is the VM's current node"},
        {"node": "node2", "reason": "apart rule web-apart: VM web2 is on node2"},
    ]
    assert _wait(c, migrated)["state"] == "succeeded"

    # A strict together rule keeps db1 where db2 is: node3, the one node it may go to.
    _rule(c, "db-pair", "together", ["db1", "db2"], strict=True)
    migrated = c.post("/vms/db1/migrate")
    placement = _placement(migrated)
    assert placement["chosen"] == "node3"
    assert {r["node"]: r["reason"] for r in placement["rejected"]}["node2"] == (
        "together rule db-pair: VM db2 is on node3"
    )
    assert _wait(c, migrated)["state"] == "succeeded"

    # A non-strict apart rule is a preference: the node breaking it ranks last, and is taken
    # when named.
    _made(c, "spread1", node="node2")
    _made(c, "spread2", node="node1")
    _rule(c, "spread", "apart", ["spread1", "spread2"], strict=False)
    candidates = c.get("/vms/spread2/migrate/candidates")
    assert candidates.status_code == 200, candidates.text
    ranking = candidates.json()["ranking"]
    assert [r["node"] for r in ranking] == ["node3", "node2"]
    named = c.post("/vms/spread2/migrate", json={"to": "node2"})
    assert _placement(named)["ranking"] == [
        {"node": "node2", "score": ranking[1]["score"],
         "breaks": ["apart rule spread: VM spread1 is on node2"]},
    ]  # fmt: skip
    assert _wait(c, named)["state"] == "succeeded"


def test_two_apart_vms_recovered_after_two_nodes_die_land_on_two_nodes(
    cluster: Cluster, tmp_path: Path
) -> None:
    server, agents = cluster
    c = server.client
    c.put("/settings/health.startup_grace", json={"value": 0})
    # node3 has by far the most memory: without the rule both VMs would restart there.
    agents.append(AgentThread(server, "node3", tmp_path, vcpus=8, memory_mb=65536))
    agents.append(AgentThread(server, "node4", tmp_path, vcpus=8, memory_mb=16384))
    _all_up(c, 4)
    _made(c, "a", node="node1", start=True)
    _made(c, "b", node="node2", start=True)
    _rule(c, "ab-apart", "apart", ["a", "b"], strict=True)

    for agent in agents[:2]:  # node1 and node2 die (no power driver: their fences fail)
        agent.stop()
    dead = agents[:2]
    del agents[:2]
    for agent in dead:
        node = agent.config.node
        wait_until(
            lambda n=node: c.get(f"/nodes/{n}").json()["health"] == "fence_failed",
            f"{node}'s fence to fail",
        )
    for agent in dead:
        answer = c.post(f"/nodes/{agent.config.node}/confirm-down")
        assert answer.status_code == 200, answer.text

    def placed() -> bool:
        found = [c.get(f"/vms/{n}").json() for n in ("a", "b")]
        return all(v["status"] == "ACTIVE" and v["node"] in ("node3", "node4") for v in found)

    wait_until(placed, "a and b to run again on node3 and node4")
    nodes = {n: c.get(f"/vms/{n}").json()["node"] for n in ("a", "b")}
    assert sorted(nodes.values()) == ["node3", "node4"], nodes
    # The one placed second saw the first on node3 (or moving there) and was kept off it.
    second = next(n for n, where in nodes.items() if where == "node4")
    tasks = c.get("/tasks", params={"vm": second}).json()["items"]
    restart = next(t for t in tasks if t["type"] == "ha_restart")
    rejected = {r["node"]: r["reason"] for r in restart["result"]["placement"]["rejected"]}
    first = "b" if second == "a" else "a"
    assert rejected["node3"] in (
        f"apart rule ab-apart: VM {first} is on node3",
        f"apart rule ab-apart: VM {first} is moving to node3",
    )


def _lock_waiters(db: Database) -> int:
    with db.read() as conn:
        query = text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return int(conn.execute(query).scalar_one())


def test_two_placements_of_one_strict_rule_never_both_pass(
    cluster: Cluster, tmp_path: Path, db_url: str
) -> None:
    """a's placement holds its rule locked until it writes where a goes and commits; b's
    placement, begun meanwhile, waits for it and then sees a's destination."""
    server, agents = cluster
    c = server.client
    agents.append(AgentThread(server, "node3", tmp_path, vcpus=8, memory_mb=65536))
    _all_up(c, 3)
    _made(c, "a", node="node1")
    _made(c, "b", node="node2")
    _rule(c, "ab-apart", "apart", ["a", "b"], strict=True)

    db = Database(db_url)
    seen: list[Decision] = []
    failed: list[BaseException] = []

    def place_b() -> None:
        try:
            with db.write() as conn:
                vm = vms.get(conn, "b")
                request = scheduling.request_for_vm(conn, vm, leaving=vm.node)
                seen.append(scheduling.place(conn, request))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failed.append(exc)

    other = threading.Thread(target=place_b)
    try:
        with db.write() as conn:
            vm = vms.get(conn, "a")
            mine = scheduling.place(conn, scheduling.request_for_vm(conn, vm, leaving=vm.node))
            assert mine.chosen == "node3"
            migrations_log.create(
                conn, id="race-a", vm_uuid=vm.uuid, vm_name=vm.name,
                type=MigrationType.MIGRATION, source=vm.node, dest=mine.chosen,
                status=MigrationStatus.RUNNING, task_id=None, now=datetime.now(UTC),
            )  # fmt: skip
            other.start()
            if not db.is_sqlite:  # (on SQLite b waits for the one writer's lock)
                wait_until(lambda: _lock_waiters(db) >= 1, "b's placement to wait for the lock")
            assert not seen
        other.join(DEADLINE)
        assert not other.is_alive() and not failed, failed
        [decision] = seen
        assert decision.chosen is None  # a is on node1 and moving to node3
        assert decision.rejected == {
            "node1": "apart rule ab-apart: VM a is on node1",
            "node2": "is the VM's current node",
            "node3": "apart rule ab-apart: VM a is moving to node3",
        }
    finally:
        with db.write() as conn:
            migrations_log.force_end(conn, "race-a", datetime.now(UTC), "test record")
        db.engine.dispose()
