"""Restart and relocate limits (issue 21), in process over real sockets: an HA VM whose start
fails on its node is retried there `max_restart` times, relocated `max_relocate` times, then
put in the HA error state and left alone; an ignored VM is never restarted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import typer
from typer.testing import CliRunner

from bollard.cli.sim_cmd import sim_app
from bollard.domain.ha import HaHold
from bollard.domain.models import Vm
from bollard.server.reconcile.ha_restarts import Limits, Next, next_step
from bollard.sim.fabric import Fabric, SimHost
from bollard.sim.models import DRIVER_FAULTS, FaultMode
from bollard.sim.out_of_band import define_vm, kill_vm
from bollard.store import ha_counts, vms
from tests.api.test_api_vms import Cluster, _wait
from tests.support.cluster import ServerThread, wait_until

HA_KINDS = ("reconcile.restart", "vm.ha_restart", "vm.ha_relocate", "vm.ha_error")


def _quick(c: httpx.Client) -> None:
    """Passes of the state reconciler every half second (a failed start changes nothing a
    host reports, so the next look at it is the next pass)."""
    assert c.put("/settings/reconcile.state.interval", json={"value": 0.5}).status_code == 200


def _create(c: httpx.Client, name: str, node: str = "node1") -> str:
    body = {"name": name, "vcpus": 1, "memory_mb": 256, "node": node, "start": True}
    assert _wait(c, c.post("/vms", json=body))["state"] == "succeeded"
    return str(c.get(f"/vms/{name}").json()["uuid"])


def _host(cluster: Cluster, node: str) -> SimHost:
    return Fabric(cluster[1][0].config.fabric_dir or "").host(node)


def _copies(cluster: Cluster, uuid: str) -> dict[str, str]:
    """Every sim host's copy of the VM: node -> power."""
    fabric = Fabric(cluster[1][0].config.fabric_dir or "")
    return {n: v.power.value for n, found in fabric.snapshot().items() for v in found
            if v.uuid == uuid}  # fmt: skip


def _events(c: httpx.Client, name: str, kinds: tuple[str, ...] = HA_KINDS) -> list[dict[str, Any]]:
    items = c.get("/events", params={"vm": name, "limit": 1000}).json()["items"]
    return [e for e in items if e["kind"] in kinds]


def _row(server: ServerThread, name: str) -> Vm:
    with server.runtime.db.read() as conn:
        return vms.get(conn, name)


def _starts(c: httpx.Client, name: str, node: str) -> list[dict[str, Any]]:
    items = c.get("/commands", params={"vm": name, "limit": 1000}).json()["items"]
    return [x for x in items if x["type"] == "start" and x["node"] == node]


def test_next_step_follows_the_counts() -> None:
    def vm(restarts: int, relocates: int) -> Any:
        class _Counts:
            ha_restarts = restarts
            ha_relocates = relocates

        return _Counts()

    limits = Limits(max_restart=2, max_relocate=1)
    assert next_step(vm(0, 0), limits) is Next.RETRY
    assert next_step(vm(1, 0), limits) is Next.RETRY
    assert next_step(vm(2, 0), limits) is Next.RELOCATE
    assert next_step(vm(0, 1), limits) is Next.RETRY  # a relocation starts the retries anew
    assert next_step(vm(2, 1), limits) is Next.ERROR
    assert next_step(vm(0, 0), Limits(0, 0)) is Next.ERROR


def test_a_start_fault_narrowed_to_one_vm(tmp_path: Path) -> None:
    """`bollard sim vm fail-start NODE [VM]`: one VM's starts, or every VM's, on one host."""
    host = Fabric(tmp_path).host("node-a")
    host.ensure_host(4, 4096)
    one = define_vm(host, "one", 128, running=False)
    other = define_vm(host, "other", 128, running=False)
    app = typer.Typer()
    app.add_typer(sim_app, name="sim")
    where = ["--fabric-dir", str(tmp_path)]

    def run(*args: str) -> Any:
        result = CliRunner().invoke(app, ["sim", "vm", *args, *where, "-o", "json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    assert run("fail-start", "node-a", "one", "--times", "2")["uuid"] == one.uuid
    assert host.faults.take("start", DRIVER_FAULTS, other.uuid) is None  # not its fault
    assert host.faults.take("start", DRIVER_FAULTS, one.uuid) is not None
    assert host.faults.take("start", DRIVER_FAULTS, one.uuid) is not None
    assert host.faults.take("start", DRIVER_FAULTS, one.uuid) is None  # fired twice: gone
    run("fail-start", "node-a", "--times", "0")  # every VM's, until cleared
    assert host.faults.take("start", DRIVER_FAULTS, other.uuid) is not None
    run("fail-start", "node-a", "one", "--times", "0")
    gone = "6d1f7d36-0000-4000-8000-000000000000"  # a VM not on the host: by its uuid
    assert run("fail-start", "node-a", gone)["uuid"] == gone
    assert run("fail-start", "node-a", gone, "--clear")["cleared"] == 1
    assert run("fail-start", "node-a", one.uuid, "--clear")["cleared"] == 1
    assert run("fail-start", "node-a", "--clear")["cleared"] == 1
    assert host.faults.all() == []
    refused = CliRunner().invoke(app, ["sim", "vm", "fail-start", "node-a", "nosuch", *where])
    assert refused.exit_code != 0 and "nosuch" in refused.output


def test_a_failing_start_is_retried_then_relocated(cluster: Cluster) -> None:
    server, _ = cluster
    c = server.client
    _quick(c)
    uuid = _create(c, "web")
    node1 = _host(cluster, "node1")
    node1.faults.set("start", FaultMode.FAIL, 0, vm=uuid)  # its starts fail on node1
    kill_vm(node1, "web", crashed=True)

    wait_until(
        lambda: (v := c.get("/vms/web").json())["node"] == "node2" and v["status"] == "ACTIVE",
        "web to run on node2",
        timeout=40,
    )
    # The crash: a restart within the budget; its start fails; one retry (ha.max_restart 1)
    # fails too; then a relocation to node2, where it starts.
    assert [e["kind"] for e in _events(c, "web")] == [
        "reconcile.restart",
        "vm.ha_restart",
        "vm.ha_relocate",
    ]
    relocated = _events(c, "web", ("vm.ha_relocate",))[0]
    assert relocated["data"]["target"] == "node2" and relocated["data"]["failed_on"] == ["node1"]
    assert relocated["actor"] == "system"
    failed = [x for x in _starts(c, "web", "node1") if x["state"] == "FAILED"]
    assert len(failed) == 2, _starts(c, "web", "node1")
    task = c.get(f"/tasks/{relocated['task_id']}").json()
    assert (task["type"], task["state"]) == ("ha_relocate", "succeeded")
    assert (task["params"]["source"], task["params"]["target"]) == ("node1", "node2")
    assert _copies(cluster, uuid) == {"node2": "running"}  # moved, not copied
    vm = c.get("/vms/web").json()
    assert (vm["desired_power"], vm["epoch"]) == ("running", 2)

    # Once it has run steadily (a heartbeat interval), its counts start anew.
    wait_until(lambda: _events(c, "web", ("vm.ha_steady",)), "web's counts to be reset")
    row = _row(server, "web")
    assert (row.ha_restarts, row.ha_relocates, row.ha_hold) == (0, 0, None)


def test_limits_used_up_put_the_vm_in_ha_error_and_leave_it_alone(cluster: Cluster) -> None:
    server, _ = cluster
    c = server.client
    _quick(c)
    uuid = _create(c, "db")
    with server.runtime.db.write() as conn:  # its own limits win over the settings (1, 1)
        vms.set_meta(conn, uuid, server.runtime.clock.now(), max_restart=0, max_relocate=1)
    for node in ("node1", "node2"):
        _host(cluster, node).faults.set("start", FaultMode.FAIL, 0, vm=uuid)
    kill_vm(_host(cluster, "node1"), "db", crashed=True)

    error = wait_until(lambda: _events(c, "db", ("vm.ha_error",)), "db's HA error", timeout=40)
    assert error[0]["data"]["failed_on"] == ["node1", "node2"]
    assert [e["kind"] for e in _events(c, "db")] == [
        "reconcile.restart",  # the crash: restarted on node1, failed (no retry: max_restart 0)
        "vm.ha_relocate",  # to node2, where its start fails as well
        "vm.ha_error",  # one relocation allowed: done
    ]
    row = _row(server, "db")
    assert row.ha_hold == HaHold.ERROR and row.node == "node2"
    vm = c.get("/vms/db").json()
    assert (vm["status"], vm["desired_power"], vm["ha_state"]) == ("SHUTOFF", "stopped", "error")
    assert "node1, node2" in vm["fault"] and "HA error" in vm["fault"]
    assert _copies(cluster, uuid) == {"node2": "stopped"}

    # Left alone: the reconciler passes, nothing starts it again.
    tried = len(_starts(c, "db", "node1")) + len(_starts(c, "db", "node2"))
    passes = server.runtime.state_reconciler.passes
    wait_until(lambda: server.runtime.state_reconciler.passes >= passes + 4, "four more passes")
    # (node1: its creation's and the crash restart's; node2: the relocation's)
    assert len(_starts(c, "db", "node1")) + len(_starts(c, "db", "node2")) == tried == 3
    assert _row(server, "db").ha_hold == HaHold.ERROR


def test_an_ignored_vm_found_off_is_not_restarted(cluster: Cluster) -> None:
    server, _ = cluster
    c = server.client
    _quick(c)
    uuid = _create(c, "quiet")
    with server.runtime.db.write() as conn:
        ha_counts.set_hold(conn, uuid, HaHold.IGNORED, server.runtime.clock.now())
    kill_vm(_host(cluster, "node1"), "quiet", crashed=True)
    # The record follows its host, as for a VM without HA.
    wait_until(lambda: c.get("/vms/quiet").json()["desired_power"] == "stopped", "quiet's record")
    assert _events(c, "quiet") == []
    assert len(_starts(c, "quiet", "node1")) == 1  # its creation's start only
    assert _copies(cluster, uuid) == {"node1": "crashed"}


def test_a_crash_after_running_steadily_is_the_budgets(cluster: Cluster) -> None:
    """A VM that started and ran is restarted by the budget, not counted by the limits."""
    server, _ = cluster
    c = server.client
    _quick(c)
    uuid = _create(c, "steady")
    kill_vm(_host(cluster, "node1"), "steady", crashed=True)
    wait_until(lambda: _copies(cluster, uuid) == {"node1": "running"}, "steady to run again")
    wait_until(lambda: c.get("/vms/steady").json()["status"] == "ACTIVE", "steady ACTIVE")
    assert [e["kind"] for e in _events(c, "steady")] == ["reconcile.restart"]
    row = _row(server, "steady")
    assert (row.ha_restarts, row.ha_relocates) == (0, 0)
