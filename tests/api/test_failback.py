"""Failback (issue 21), in process over real sockets: an HA VM in a group goes back, live, to
the group's better node when it is available; never with nofailback, never an ignored, error or
stopped VM, never when `ha.failback_interval` is 0."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import update

from bollard.domain.ha import HaHold
from bollard.sim.fabric import Fabric
from bollard.sim.models import FaultMode
from bollard.sim.out_of_band import kill_vm
from bollard.store import ha_counts, ha_groups, vms
from bollard.store.tables import leases
from tests.api.test_api_vms import Cluster, _wait
from tests.support.cluster import ServerThread, wait_until


def _setting(c: httpx.Client, key: str, value: object) -> None:
    assert c.put(f"/settings/{key}", json={"value": value}).status_code == 200


def _create(c: httpx.Client, name: str, node: str, *, start: bool = True) -> str:
    body = {"name": name, "vcpus": 1, "memory_mb": 256, "node": node, "start": start}
    assert _wait(c, c.post("/vms", json=body))["state"] == "succeeded"
    return str(c.get(f"/vms/{name}").json()["uuid"])


def _group(server: ServerThread, name: str, *, nofailback: bool = False) -> None:
    with server.runtime.db.write() as conn:
        ha_groups.create(
            conn, name=name, nodes={"node1": 2, "node2": 1}, restricted=False,
            nofailback=nofailback, description="", now=server.runtime.clock.now(),
        )  # fmt: skip


def _join(server: ServerThread, uuid: str, group: str, hold: HaHold | None = None) -> None:
    now = server.runtime.clock.now()
    with server.runtime.db.write() as conn:
        vms.set_meta(conn, uuid, now, ha_group=group)
        if hold is not None:
            ha_counts.set_hold(conn, uuid, hold, now)


def _running_on(cluster: Cluster, uuid: str) -> list[str]:
    snapshot = Fabric(cluster[1][0].config.fabric_dir or "").snapshot()
    return sorted(n for n, found in snapshot.items() for v in found
                  if v.uuid == uuid and v.power.value == "running")  # fmt: skip


def test_a_vm_fails_back_to_its_groups_better_node(cluster: Cluster) -> None:
    server, _ = cluster
    c = server.client
    failback = server.runtime.failback
    _setting(c, "health.startup_grace", 0)
    _setting(c, "ha.failback_interval", 0)  # never, to begin with
    _group(server, "pref")
    uuid = _create(c, "home", "node2")  # priority 1; node1 (priority 2) is available
    _join(server, uuid, "pref")
    ticks = failback.ticks
    wait_until(lambda: failback.ticks >= ticks + 3, "three ticks of the failback loop")
    assert c.get("/vms/home").json()["node"] == "node2"  # interval 0: never

    _setting(c, "ha.failback_interval", 0.5)
    wait_until(
        lambda: (v := c.get("/vms/home").json())["node"] == "node1" and v["task_id"] is None,
        "home to fail back to node1",
    )
    vm = c.get("/vms/home").json()
    assert (vm["status"], vm["previous_node"], vm["epoch"]) == ("ACTIVE", None, 2)
    assert _running_on(cluster, uuid) == ["node1"]
    events = c.get("/events", params={"vm": "home", "limit": 1000}).json()["items"]
    back = [e for e in events if e["kind"] == "vm.failback"]
    assert len(back) == 1 and back[0]["actor"] == "system", back
    assert back[0]["data"] == {"source": "node2", "target": "node1", "group": "pref"}
    task = c.get(f"/tasks/{back[0]['task_id']}").json()
    assert (task["type"], task["state"], task["params"]["mode"]) == ("migrate", "succeeded", "move")
    assert task["params"]["was_running"] and task["params"]["method"] == "default"  # live

    # Home: the loop looks again and leaves it there.
    passes = failback.passes
    wait_until(lambda: failback.passes >= passes + 2, "two more failback looks")
    assert c.get("/vms/home").json()["node"] == "node1"


def test_failback_leaves_nofailback_ignored_error_and_stopped_vms(cluster: Cluster) -> None:
    server, _ = cluster
    c = server.client
    failback = server.runtime.failback
    _setting(c, "health.startup_grace", 0)
    _setting(c, "ha.failback_interval", 0.2)
    _group(server, "pref")
    _group(server, "sticky", nofailback=True)
    kept = {
        "stay": ("sticky", None, True),
        "aside": ("pref", HaHold.IGNORED, True),
        "broken": ("pref", HaHold.ERROR, True),
        "off": ("pref", None, False),
    }
    for name, (group, hold, start) in kept.items():
        _join(server, _create(c, name, "node2", start=start), group, hold)
    passes = failback.passes
    wait_until(lambda: failback.passes >= passes + 3, "three failback looks")
    for name in kept:
        vm = c.get(f"/vms/{name}").json()
        assert (vm["node"], vm["task_id"]) == ("node2", None), vm
    kinds = {e["kind"] for e in c.get("/events", params={"limit": 1000}).json()["items"]}
    assert "vm.failback" not in kinds


def test_only_the_health_lead_fails_back(cluster: Cluster) -> None:
    """Another server holds the lease that decides who fails back (SQLite: the health
    monitor's; PostgreSQL: the leader's): this one fails nothing back until the lease is free
    and it takes it."""
    server, _ = cluster
    c = server.client
    runtime = server.runtime
    failback = runtime.failback
    sqlite = runtime.db.kind == "sqlite"
    _setting(c, "health.startup_grace", 0)
    _setting(c, "ha.failback_interval", 0.2)
    _group(server, "pref")

    def lease(holder: str, seconds: float) -> None:
        until = runtime.clock.now() + timedelta(seconds=seconds)
        with runtime.db.write() as conn:
            conn.execute(
                update(leases)
                .where(leases.c.name == ("health-monitor" if sqlite else "leader"))
                .values(holder=holder, expires_at=until)
            )

    wait_until(lambda: failback.passes > 0, "a failback look as the lead")
    lease("server-elsewhere", 600)
    if sqlite:
        uuid = _create(c, "led", "node2")
        _join(server, uuid, "pref")
        ticks = failback.ticks
        wait_until(lambda: failback.ticks >= ticks + 4, "four ticks while another server leads")
    else:  # the leader's duties stop on this server once it finds its lease taken
        wait_until(
            lambda: not runtime.leadership.is_leader and runtime.duties.running == [],
            "this server to be deposed, its duties stopped",
        )
        uuid = _create(c, "led", "node2")
        _join(server, uuid, "pref")
        assert runtime.duties.running == []
    assert c.get("/vms/led").json()["node"] == "node2"
    lease("server-elsewhere", -1)  # its lease runs out: this server takes it
    wait_until(
        lambda: c.get("/vms/led").json()["node"] == "node1",
        "led to fail back",
        timeout=runtime.config.lease_ttl + 15,  # (a deposed leader waits a lease's time)
    )


def test_no_failback_to_a_node_its_start_failed_on(cluster: Cluster) -> None:
    """Relocated away from node1 because its start failed there: not sent back to node1 by
    failback (within reconcile.restart_window), though node1 has the higher priority."""
    server, _ = cluster
    c = server.client
    failback = server.runtime.failback
    for key, value in (
        ("health.startup_grace", 0),
        ("ha.failback_interval", 0.2),
        ("ha.max_restart", 0),
        ("reconcile.state.interval", 0.5),
    ):
        _setting(c, key, value)
    _group(server, "pref")
    uuid = _create(c, "fragile", "node1")
    _join(server, uuid, "pref")
    fabric = Fabric(cluster[1][0].config.fabric_dir or "")
    fabric.host("node1").faults.set("start", FaultMode.FAIL, 0, vm=uuid)
    kill_vm(fabric.host("node1"), "fragile", crashed=True)
    wait_until(
        lambda: (v := c.get("/vms/fragile").json())["node"] == "node2" and v["status"] == "ACTIVE",
        "fragile to be relocated to node2",
        timeout=30,
    )
    passes = failback.passes
    wait_until(lambda: failback.passes >= passes + 4, "four failback looks")
    assert c.get("/vms/fragile").json()["node"] == "node2"
    assert _running_on(cluster, uuid) == ["node2"]
    kinds = [e["kind"] for e in c.get("/events", params={"vm": "fragile"}).json()["items"]]
    assert "vm.ha_relocate" in kinds and "vm.failback" not in kinds
