"""Bollard end to end on real libvirt hosts and QEMU guests (TCG): a server process and one
`bollard agent --driver libvirt` per host. The guest prints a counter every second on its
serial console, which shows whether it kept running or booted again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bollard.agent.drivers.libvirt.errors import Err, code_of
from bollard.agent.drivers.libvirt.xml import parse_domain
from tests.libvirt.bollard_cluster import LibvirtCluster, libvirt_cluster, wait_until
from tests.support.libvirt_env import (
    Guest,
    LibvirtHost,
    disk_image,
    raw_copy,
    remove_bollard_domains,
    same_disk_data,
    write_pattern,
)

pytestmark = [pytest.mark.libvirt, pytest.mark.timeout(600)]

HEARTBEAT = 5.0  # long on purpose: what must be fast has to come from libvirt's events


@pytest.fixture(scope="module")
def cluster(
    libvirt_hosts: list[LibvirtHost], guest: Guest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LibvirtCluster]:
    for host in libvirt_hosts:
        remove_bollard_domains(host)
    root = tmp_path_factory.mktemp("bollard-libvirt")
    with libvirt_cluster(root, libvirt_hosts, guest, heartbeat=HEARTBEAT) as c:
        try:
            yield c
        except BaseException:
            print(c.logs())
            raise
    for host in libvirt_hosts:
        remove_bollard_domains(host)


def _boots(log: str) -> int:
    return log.count("bollard-guest boot")


def _events(c: LibvirtCluster, vm: str, kind: str) -> list[dict[str, Any]]:
    items = c.api.get("/events", params={"vm": vm, "limit": 1000}).json()["items"]
    return [e for e in items if e["kind"] == kind]


def _create(c: LibvirtCluster, name: str, node: str = "a", **extra: Any) -> dict[str, Any]:
    body = {"name": name, "vcpus": 1, "memory_mb": 128, "node": node, "start": True, **extra}
    task = c.wait_task(c.api.post("/vms", json=body))
    assert task["state"] == "succeeded", task
    return c.vm(name)


def _delete(c: LibvirtCluster, name: str) -> None:
    """Each test removes its VMs: a host of this machine has room for two of them."""
    assert c.wait_task(c.api.delete(f"/vms/{name}"))["state"] == "succeeded"


def _counting(c: LibvirtCluster, vm: str, above: int = 0) -> int:
    """Wait until the guest's console counter is above `above`; returns it."""
    return wait_until(
        f"{vm}'s counter above {above}",
        lambda: (n := c.counter(vm)) is not None and n > above and n,
        timeout=60,
    )


def test_lifecycle_with_console_and_acpi_shutdown(cluster: LibvirtCluster) -> None:
    c = cluster
    vm = _create(c, "tiny")
    assert (vm["status"], vm["node"], vm["observed_power"]) == ("ACTIVE", "a", "running")
    first = _counting(c, "tiny", above=1)
    console = c.console("tiny")
    assert console["display"]["type"] == "vnc" and int(console["display"]["port"]) >= 5900
    assert _boots(console["log"]) == 1

    # ACPI shutdown: the guest's acpid powers it off.
    task = c.wait_task(c.api.post("/vms/tiny/shutdown", json={"timeout": 60}))
    assert task["state"] == "succeeded", task
    assert c.vm("tiny")["status"] == "SHUTOFF"
    assert "forced" not in str(task.get("result"))

    assert c.wait_task(c.api.post("/vms/tiny/start"))["state"] == "succeeded"
    wait_until("a second boot", lambda: _boots(c.console("tiny", 200)["log"]) == 2, timeout=60)
    assert _counting(c, "tiny", above=0) >= 0 and first >= 1
    _delete(c, "tiny")


def test_virsh_destroy_is_detected_within_two_seconds(cluster: LibvirtCluster) -> None:
    c = cluster
    vm = _create(c, "victim")
    _counting(c, "victim", above=0)
    host = next(h for h in c.hosts if h.name == vm["node"])
    with closing(host.connect()) as conn:
        destroyed_at = time.time()
        conn.lookupByUUIDString(vm["uuid"]).destroy()  # behind Bollard's back
    detected = wait_until(
        "the destroy to be detected",
        lambda: [
            e for e in _events(c, "victim", "reconcile.detected") if e["data"]["class"] == "power"
        ],
        timeout=HEARTBEAT * 3,
    )[0]
    at = datetime.fromisoformat(detected["at"].replace("Z", "+00:00")).timestamp()
    assert at - destroyed_at <= 2.0, f"detected {at - destroyed_at:.2f}s after virsh destroy"
    # An HA VM (the default) is started again by the reconciler: the guest boots again.
    wait_until("victim running again", lambda: c.vm("victim")["status"] == "ACTIVE")
    wait_until("a second boot", lambda: _boots(c.console("victim", 200)["log"]) == 2, timeout=60)
    assert _events(c, "victim", "reconcile.restart")
    _delete(c, "victim")


def test_a_restarted_agent_rediscovers_its_domains(cluster: LibvirtCluster) -> None:
    c = cluster
    vm = _create(c, "steady")
    before = _counting(c, "steady", above=0)
    host = next(h for h in c.hosts if h.name == vm["node"])
    seq_before = c.node(host.name)["last_seq"]
    incarnation = c.node(host.name)["agent_incarnation"]
    c.kill(host.name)
    c.start_agent(host)
    # (The server may not have seen the old session end yet: the report must be the new
    # agent's, so its incarnation is waited for too.)
    wait_until(
        "the new agent's full report",
        lambda: (
            (n := c.node(host.name))["connected"]
            and n["agent_incarnation"] != incarnation
            and n["inventory_known"]
        ),
        timeout=60,
    )
    assert c.node(host.name)["last_seq"] > seq_before
    scan = c.api.get("/reconcile", params={"vm": "steady"}).json()
    assert scan["differences"] == []
    again = c.vm("steady")
    assert (again["status"], again["observed_power"], again["epoch"]) == (
        "ACTIVE",
        "running",
        vm["epoch"],
    )
    log = c.console("steady", 400)["log"]
    assert _boots(log) == 1  # the guest kept running through the agent's restart
    assert _counting(c, "steady", above=before) > before
    _delete(c, "steady")


def _running_on(c: LibvirtCluster, uuid: str) -> list[str]:
    """The hosts on which libvirt runs the domain (read from the daemons themselves)."""

    import libvirt

    found = []
    for host in c.hosts:
        with closing(host.connect()) as conn:
            try:
                if conn.lookupByUUIDString(uuid).isActive():
                    found.append(host.name)
            except libvirt.libvirtError as exc:  # not there (or undefined since the lookup)
                if code_of(exc) != Err.NO_DOMAIN:
                    raise
    return found


def _migrate(c: LibvirtCluster, vm: str, to: str) -> dict[str, Any]:
    answer = c.api.post(f"/vms/{vm}/migrate", json={"to": to, "method": "live"})
    return c.wait_task(answer, timeout=180)


def test_live_migration_there_and_back_keeps_the_guest_running(cluster: LibvirtCluster) -> None:
    c = cluster
    vm = _create(c, "mover")
    before = _counting(c, "mover", above=1)
    task = _migrate(c, "mover", "b")
    assert task["state"] == "succeeded", task
    there = c.vm("mover")
    assert (there["node"], there["status"], there["epoch"]) == ("b", "ACTIVE", vm["epoch"] + 1)
    assert _running_on(c, vm["uuid"]) == ["b"]
    after = _counting(c, "mover", above=before)  # read from host b's console log now
    assert _boots(c.console("mover", 400)["log"]) <= 1  # no second boot line on b

    assert _migrate(c, "mover", "a")["state"] == "succeeded"
    back = c.vm("mover")
    assert (back["node"], back["epoch"]) == ("a", vm["epoch"] + 2)
    assert _running_on(c, vm["uuid"]) == ["a"]
    assert _counting(c, "mover", above=after) > after
    assert not c.api.get("/reconcile", params={"vm": "mover"}).json()["differences"]
    _delete(c, "mover")


def test_source_agent_killed_during_a_live_migration(cluster: LibvirtCluster) -> None:
    """The migration goes on in libvirt while its agent is dead; the restarted agent answers
    from libvirt's real state and the VM ends on exactly one host, its record matching."""
    c = cluster
    source = c.hosts[0]
    c.kill(source.name)  # a slow migration (8 MiB/s) leaves time to kill its agent mid-way
    c.start_agent(source, "--libvirt-migration-bandwidth", "8")
    wait_until("a back", lambda: c.node("a")["connected"] and c.node("a")["inventory_known"])
    vm = _create(c, "crossing")
    _counting(c, "crossing", above=0)
    answer = c.api.post("/vms/crossing/migrate", json={"to": "b", "method": "live"})
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task"]["id"]

    def migrate_sent() -> bool:
        cmds = c.api.get("/commands", params={"vm": vm["uuid"]}).json()["items"]
        return any(x["type"] == "migrate" and x["state"] == "SENT" for x in cmds)

    wait_until("the migrate command to be sent", migrate_sent)
    c.kill(source.name)  # SIGKILL, mid-migration
    assert _running_on(c, vm["uuid"]) in (["a"], ["a", "b"], ["b"])  # libvirt goes on
    c.start_agent(source)
    task = c.wait_task_id(task_id, timeout=240)
    assert task["state"] in ("succeeded", "rolled_back"), task
    final = c.vm("crossing")
    where = _running_on(c, vm["uuid"])
    assert where == [final["node"]], (where, final)
    assert final["status"] == "ACTIVE"
    assert _boots(c.console("crossing", 400)["log"]) <= 1  # it never rebooted
    wait_until(
        "no difference left",
        lambda: not c.api.get("/reconcile", params={"vm": "crossing"}).json()["differences"],
    )
    _delete(c, "crossing")


def test_a_vm_with_a_local_disk_migrates_live_and_by_shutdown_with_its_data(
    cluster: LibvirtCluster, tmp_path: Path
) -> None:
    """The disk is copied by libvirt's storage copy (live) and streamed by the agent
    (shutdown migration); its data is compared as the guest sees it."""
    c = cluster
    a, b = c.hosts[0], c.hosts[1]
    vm = _create(c, "disky", start=False, disks=[{"size_mb": 16}])
    assert [(d["device"], d["size_mb"], d["pool"], d["state"]) for d in vm["disks"]] == [
        ("vda", 16, "local", "attached")
    ]
    on_a = disk_image(a, vm["uuid"], "vda")
    assert on_a.is_file() and not disk_image(b, vm["uuid"], "vda").exists()
    write_pattern(on_a, 0x5A, 3, 2)
    expected = raw_copy(on_a, tmp_path / "expected.raw")
    assert c.wait_task(c.api.post("/vms/disky/start"))["state"] == "succeeded"
    before = _counting(c, "disky", above=0)

    assert _migrate(c, "disky", "b")["state"] == "succeeded"
    assert (c.vm("disky")["node"], _running_on(c, vm["uuid"])) == ("b", ["b"])
    on_b = disk_image(b, vm["uuid"], "vda")
    assert same_disk_data(expected, "raw", on_b)
    assert not on_a.exists()  # the source's copy goes once the VM moved
    assert _counting(c, "disky", above=before) > before  # no reboot: the counter went on

    answer = c.api.post("/vms/disky/migrate", json={"to": "a", "method": "shutdown"})
    task = c.wait_task(answer, timeout=180)
    assert task["state"] == "succeeded", task
    back = c.vm("disky")
    assert (back["node"], back["status"], back["disks"]) == ("a", "ACTIVE", vm["disks"])
    assert same_disk_data(expected, "raw", on_a)
    assert not on_b.exists()
    _delete(c, "disky")
    assert not on_a.exists()  # deleting the VM removes its disk


def test_a_vm_on_a_bridge_keeps_its_mac_wherever_it_runs(
    cluster: LibvirtCluster, bridge: str
) -> None:
    """The server gives the NIC its MAC; each host's domain has the NIC with that MAC."""
    c = cluster

    def nics_on(host: LibvirtHost, uuid: str) -> list[tuple[str | None, str | None]]:
        with closing(host.connect()) as conn:
            facts = parse_domain(conn.lookupByUUIDString(uuid).XMLDesc(0))
        return [(n.mac, n.bridge) for n in facts.nics]

    vm = _create(c, "wired", nics=[{"bridge": bridge}])
    [nic] = vm["nics"]
    assert (nic["bridge"], nic["model"]) == (bridge, "virtio") and nic["mac"].startswith("52:54:00")
    assert nics_on(c.hosts[0], vm["uuid"]) == [(nic["mac"], bridge)]
    before = _counting(c, "wired", above=0)
    assert _migrate(c, "wired", "b")["state"] == "succeeded"
    assert c.vm("wired")["nics"] == [nic]
    assert nics_on(c.hosts[1], vm["uuid"]) == [(nic["mac"], bridge)]
    assert _counting(c, "wired", above=before) > before
    _delete(c, "wired")
