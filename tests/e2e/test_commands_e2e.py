"""Reliable commands with real processes: every lost answer is recovered and no command runs
twice. Each scenario converges with the VM's record equal to the sim fabric, every command
terminal, and every command executed at most once (the fabric's execution log)."""

from __future__ import annotations

import json
import os
import signal
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from bollard.domain.commands import TERMINAL
from bollard.sim.fabric import Fabric

if TYPE_CHECKING:
    from conftest import Cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def api(cli: Cli) -> httpx.Client:
    record = cli.cluster()
    token = (cli.data_dir / "admin.token").read_text().strip()
    return httpx.Client(
        base_url=record.url + "/api/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        verify=ssl.create_default_context(cafile=str(cli.data_dir / "tls" / "ca.pem")),
    )


def fabric(cli: Cli) -> Fabric:
    return Fabric(cli.data_dir / "fabric")


def fabric_power(cli: Cli, node: str, uuid: str) -> str | None:
    vm = fabric(cli).host(node).get_vm(uuid)
    return None if vm is None else str(vm.power)


def executions(cli: Cli, command_id: str) -> int:
    return sum(
        1 for host in fabric(cli).hosts() for op in host.executed() if op.command_id == command_id
    )


def answers(c: httpx.Client) -> bool:
    try:
        return c.get("/status").status_code == 200
    except httpx.TransportError:
        return False


def pid_of(cli: Cli, name: str) -> int:
    return next(p.pid for p in cli.cluster().processes if p.name == name)


def commands_of(c: httpx.Client, vm: str, type_: str) -> list[dict[str, Any]]:
    items = c.get("/commands", params={"vm": vm, "limit": 1000}).json()["items"]
    return [x for x in items if x["type"] == type_]


def one_command(c: httpx.Client, vm: str, type_: str) -> dict[str, Any] | None:
    found = commands_of(c, vm, type_)
    assert len(found) <= 1, found
    return found[0] if found else None


def create(cli: Cli, name: str, node: str) -> dict[str, Any]:
    out = cli.json("vm", "create", name, "--vcpus", "1", "--memory", "64", "--node", node, "--wait")
    assert out["task"]["state"] == "succeeded", out
    vm: dict[str, Any] = cli.json("vm", "show", name)
    return vm


def wait_task(c: httpx.Client, cli: Cli, task_id: str, timeout: float = 90) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        task: dict[str, Any] = c.get(f"/tasks/{task_id}/wait", params={"timeout": 2}).json()
        return task if task["finished_at"] else None

    return cli.wait_until(f"task {task_id} ends", ended, timeout=timeout)


def assert_converged(cli: Cli, c: httpx.Client, name: str, status: str, power: str) -> None:
    vm = cli.wait_until(
        f"{name} shows {status} and observed {power}",
        lambda: (
            v
            if (v := c.get(f"/vms/{name}").json())["status"] == status
            and v["observed_power"] == power
            and v["task_state"] is None
            else None
        ),
    )
    assert fabric_power(cli, vm["node"], vm["uuid"]) == power
    open_commands = [
        x for x in c.get("/commands", params={"limit": 1000}).json()["items"]
        if x["state"] not in {s.value for s in TERMINAL}
    ]  # fmt: skip
    assert open_commands == []


def test_a_agent_killed_while_a_start_is_processing(cluster: Cli) -> None:
    cli = cluster
    with api(cli) as c:
        vm = create(cli, "rc-a", "node1")
        cli.ok("sim", "fault", "set", "node1", "--command", "start", "--mode", "hang",
               "--data-dir", str(cli.data_dir))  # fmt: skip
        task_id = c.post("/vms/rc-a/start").json()["task"]["id"]
        cmd = cli.wait_until(
            "the agent journals the start as PROCESSING",
            lambda: (
                x
                if (x := one_command(c, "rc-a", "start")) and x["agent_state"] == "PROCESSING"
                else None
            ),
        )
        os.kill(pid_of(cli, "node1"), signal.SIGKILL)
        assert fabric_power(cli, "node1", vm["uuid"]) == "stopped"
        cli.ok("up", "--restart-process", "node1", "--data-dir", str(cli.data_dir))

        task = wait_task(c, cli, task_id)
        assert task["state"] == "failed"
        assert "interrupted" in task["error"]
        shown = c.get(f"/commands/{cmd['id']}").json()
        assert shown["state"] == "RECONCILED"
        assert shown["agent_state"] == "INTERRUPTED"
        assert shown["answer"]["ok"] is False
        assert shown["answer"]["error"]["code"] == "interrupted"
        assert [h["to_state"] for h in shown["history"]][-3:] == [
            "INTERRUPTED", "RECONCILING", "RECONCILED"
        ]  # fmt: skip
        assert executions(cli, cmd["id"]) == 0
        assert_converged(cli, c, "rc-a", "SHUTOFF", "stopped")


def test_b_answer_dropped_and_recovered_through_the_heartbeat(cluster: Cli) -> None:
    cli = cluster
    with api(cli) as c:
        create(cli, "rc-b", "node2")
        cli.ok("sim", "fault", "set", "node2", "--command", "start", "--mode", "drop-answer",
               "--data-dir", str(cli.data_dir))  # fmt: skip
        out = cli.json("vm", "start", "rc-b", "--wait")
        assert out["task"]["state"] == "succeeded"
        cmd = one_command(c, "rc-b", "start")
        assert cmd is not None
        shown = c.get(f"/commands/{cmd['id']}").json()
        assert shown["state"] == "COMPLETED"
        assert shown["history"][-1]["note"] == "via journal sync"
        assert executions(cli, cmd["id"]) == 1
        assert cli.json("sim", "fault", "list", "--data-dir", str(cli.data_dir)) == []
        assert_converged(cli, c, "rc-b", "ACTIVE", "running")


def test_c_server_killed_while_a_command_is_sent(cluster: Cli) -> None:
    cli = cluster
    with api(cli) as c:
        vm = create(cli, "rc-c", "node1")
        cli.ok("sim", "fault", "set", "node1", "--command", "start", "--mode", "delay",
               "--seconds", "3", "--data-dir", str(cli.data_dir))  # fmt: skip
        task_id = c.post("/vms/rc-c/start").json()["task"]["id"]
        cmd = cli.wait_until(
            "the start is SENT",
            lambda: x if (x := one_command(c, "rc-c", "start")) and x["state"] == "SENT" else None,
        )
    os.kill(pid_of(cli, "server"), signal.SIGKILL)
    cli.wait_until(
        "the agent finishes the start while the server is down",
        lambda: fabric_power(cli, "node1", vm["uuid"]) == "running",
    )
    cli.ok("up", "--restart-process", "server", "--data-dir", str(cli.data_dir))
    with api(cli) as c:
        cli.wait_until("the server answers", lambda: answers(c))
        task = wait_task(c, cli, task_id)
        assert task["state"] == "succeeded", task
        shown = c.get(f"/commands/{cmd['id']}").json()
        assert shown["state"] == "RECONCILED"
        assert shown["answer"]["ok"] is True
        states = [h["to_state"] for h in shown["history"]]
        assert states[:3] == ["CREATED", "SENT", "INTERRUPTED"]
        assert states[-1] == "RECONCILED"
        assert executions(cli, cmd["id"]) == 1
        assert_converged(cli, c, "rc-c", "ACTIVE", "running")


def test_d_the_same_command_delivered_twice_runs_once(tmp_path: Path) -> None:
    from tests.e2e.duplicate_delivery import run_duplicate_delivery

    report = run_duplicate_delivery(tmp_path)
    assert report.answers_first_run == 3  # two while it ran gave one answer
    assert all(a["ok"] for a in report.answers)
    assert len({json.dumps(a["result"], sort_keys=True) for a in report.answers}) == 1
    assert report.executions == 1
    assert report.answer_after_restart is not None and report.answer_after_restart["ok"]
    assert report.answer_after_restart["result"] == report.answers[0]["result"]
    assert report.executions_after_restart == 1
