"""A real local cluster (server + 2 sim agents) driven only through the `bollard` CLI.

What the API says about a VM must match what the sim fabric (the "hosts") really runs, through
power operations, the SIGKILL of an agent and its restart, and deletion.
"""

from __future__ import annotations

import os
import signal
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest

from bollard.cli.cluster import is_running

if TYPE_CHECKING:
    from conftest import Cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

VM = "e2e-web"


def fabric_vm(cli: Cli, name: str) -> dict[str, Any] | None:
    vms = cli.json("sim", "list")["vms"]
    found = [v for v in vms if v["name"] == name]
    assert len(found) <= 1, f"{name} is on several hosts: {found}"
    return found[0] if found else None


def node_of(cli: Cli, name: str) -> dict[str, Any]:
    node: dict[str, Any] = cli.json("node", "show", name)
    return node


def vm_where(cli: Cli, name: str, **expected: Any) -> dict[str, Any] | None:
    vm: dict[str, Any] = cli.json("vm", "show", name)
    return vm if all(vm.get(k) == v for k, v in expected.items()) else None


def test_vm_lifecycle_matches_the_fabric_through_an_agent_kill(cluster: Cli) -> None:
    cli = cluster
    status = cli.json("status")
    assert status["nodes"] == {"total": 2, "connected": 2}

    created = cli.json("vm", "create", VM, "--vcpus", "1", "--memory", "64", "--wait")
    assert created["task"]["state"] == "succeeded"
    started = cli.json("vm", "start", VM, "--wait")
    assert started["task"]["type"] == "start" and started["task"]["state"] == "succeeded"

    vm = cli.wait_until(
        "the VM is ACTIVE and reported running",
        lambda: vm_where(cli, VM, status="ACTIVE", observed_power="running"),
    )
    node = vm["node"]
    assert node in ("node1", "node2")
    on_host = fabric_vm(cli, VM)
    assert on_host is not None and on_host["power"] == "running" and on_host["node"] == node
    assert on_host["uuid"] == vm["uuid"]

    cli.ok("vm", "stop", VM, "--wait")
    cli.wait_until(
        "the VM is SHUTOFF and reported stopped",
        lambda: vm_where(cli, VM, status="SHUTOFF", observed_power="stopped"),
    )
    on_host = fabric_vm(cli, VM)
    assert on_host is not None and on_host["power"] == "stopped"

    cli.ok("vm", "start", VM, "--wait")
    before = cli.wait_until(
        "the VM is ACTIVE again",
        lambda: vm_where(cli, VM, status="ACTIVE", observed_power="running"),
    )

    # SIGKILL the agent of the VM's node: the VM keeps running on the host.
    agent = cli.cluster().find(node)
    assert agent is not None
    incarnation = node_of(cli, node)["agent_incarnation"]
    os.kill(agent.pid, signal.SIGKILL)
    cli.wait_until("the agent is dead", lambda: not is_running(agent.pid, agent.argv))
    cli.wait_until(
        "the server sees the node disconnected", lambda: not node_of(cli, node)["connected"]
    )
    on_host = fabric_vm(cli, VM)
    assert on_host is not None and on_host["power"] == "running" and on_host["node"] == node

    # Restart it exactly as cluster.json records it.
    cli.ok("up", "--restart-process", node, "--data-dir", str(cli.data_dir))
    restarted = cli.cluster().find(node)
    assert restarted is not None and restarted.pid != agent.pid
    assert restarted.argv == agent.argv and restarted.log == agent.log
    # (Connected comes with the hello; `up` once the first report has been checked.)
    cli.wait_until(
        "the node is connected again with a new agent incarnation, and up",
        lambda: (
            (n := node_of(cli, node))["connected"]
            and n["agent_incarnation"] != incarnation
            and n["health"] == "up"
            and n
        ),
    )

    def reported_again() -> dict[str, Any] | None:
        vm = vm_where(cli, VM, status="ACTIVE", observed_power="running", node=node)
        if vm is None or vm["observed_seq"] <= before["observed_seq"]:
            return None
        return vm

    after = cli.wait_until("the VM is reported running by the new agent", reported_again)
    assert datetime.fromisoformat(after["observed_at"]) > datetime.fromisoformat(
        before["observed_at"]
    )

    deleted = cli.json("vm", "delete", VM, "--wait")
    assert deleted["task"]["state"] == "succeeded" and deleted["vm"] is None
    assert VM in cli.one_line_error("vm", "show", VM)
    assert VM not in [v["name"] for v in cli.json("vm", "list")]
    assert fabric_vm(cli, VM) is None


def test_bad_input_gives_one_line_errors(cluster: Cli) -> None:
    cli = cluster
    unknown = cli.one_line_error("vm", "show", "no-such-vm")
    assert "no-such-vm" in unknown
    cli.one_line_error("vm", "start", "no-such-vm", "--wait")
    cli.one_line_error("node", "show", "no-such-node")

    negative = cli.one_line_error("vm", "create", "neg", "--vcpus", "1", "--memory", "-5")
    assert "memory" in negative

    cli.ok("vm", "create", "dup", "--vcpus", "1", "--memory", "64", "--wait")
    duplicate = cli.one_line_error("vm", "create", "dup", "--vcpus", "1", "--memory", "64")
    assert "already exists" in duplicate
    cli.ok("vm", "delete", "dup", "--wait")

    bad_token = cli.one_line_error("vm", "list", env={"BOLLARD_TOKEN": "wrong"})
    assert "refused the token" in bad_token

    url = f"http://127.0.0.1:{cli.free_port()}"
    unreachable = cli.one_line_error("status", env={"BOLLARD_URL": url})
    assert f"cannot reach the Bollard server at {url}" in unreachable

    # A second `up` on the same data dir refuses, and says how to stop the running one.
    again = cli.one_line_error("up", "--detach", "--data-dir", str(cli.data_dir))
    assert "already running" in again and "bollard down" in again
