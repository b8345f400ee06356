"""The server is SIGKILLed at each step of a live migration in turn, then restarted: every run
ends with the VM running on exactly one node, its owner and epoch matching the fabric, the
task terminal, and the resources of both nodes accounted correctly."""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from bollard.cli.cluster import is_running
from bollard.sim.fabric import Fabric
from tests.e2e.crash_support import (
    api_client,
    restart_server,
    server_process,
)

if TYPE_CHECKING:
    from conftest import Cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

STEPS = ("check", "claim", "live_migrate", "commit")
# Every step, after it runs and before, in an order where the server restarted after one
# crash can already be armed for the next point (see _chained): a resumed task runs the step
# it died in again, and the steps after it, so the next point must be at an earlier step.
POINTS = [f"{step}:{when}" for when in ("after", "before") for step in reversed(STEPS)] + [
    "live_migrate:during"  # an outside SIGKILL while the hosts are migrating
]


def _chained(point: str) -> str | None:
    """The crash point to arm when the server restarts after the crash at `point`: the next
    point, if the resumed task cannot reach it (its step comes before `point`'s); else none
    (the next point restarts the server armed)."""
    following = POINTS[POINTS.index(point) + 1] if point != POINTS[-1] else None
    if following is None or following.endswith(":during"):
        return None
    if STEPS.index(following.split(":")[0]) >= STEPS.index(point.split(":")[0]):
        return None
    return following


def _check_invariants(cli: Cli, c: httpx.Client, name: str, point: str) -> dict[str, Any]:
    vm = c.get(f"/vms/{name}").json()
    assert vm["task_state"] is None, (point, vm)
    snapshot = Fabric(cli.data_dir / "fabric").snapshot()
    copies = {n: v for n, vms in snapshot.items() for v in vms if v.uuid == vm["uuid"]}
    running = sorted(n for n, v in copies.items() if v.power == "running")
    assert running == [vm["node"]], (point, vm, copies)
    assert list(copies) == [vm["node"]], f"{point}: leftover definitions {copies}"
    assert copies[vm["node"]].epoch == vm["epoch"], (point, vm, copies)
    vms = c.get("/vms", params={"limit": 1000}).json()["items"]
    for node in c.get("/nodes").json()["items"]:
        mine = [v for v in vms if v["node"] == node["name"]]
        assert node["allocated"]["memory_mb"] == sum(v["memory_mb"] for v in mine), (point, node)
        assert node["allocated"]["vcpus"] == sum(v["vcpus"] for v in mine), (point, node)
    open_commands = c.get(
        "/commands",
        params={"state": "CREATED,SENT,INTERRUPTED,TIMED_OUT,RECONCILING,RECONCILE_RETRY"},
    ).json()
    assert open_commands["total"] == 0, (point, open_commands["items"])
    return vm


def _task_ids(c: httpx.Client, name: str) -> set[str]:
    answer = c.get("/tasks", params={"vm": name, "limit": 1000})
    assert answer.status_code == 200, answer.text
    return {t["id"] for t in answer.json()["items"]}


def test_server_killed_at_each_step_of_a_live_migration(cluster: Cli) -> None:
    cli = cluster
    name = "crashy"
    out = cli.json("vm", "create", name, "--vcpus", "1", "--memory", "512", "--node", "node1",
                   "--start", "--wait")  # fmt: skip
    assert out["task"]["state"] == "succeeded"
    outcomes: dict[str, str] = {}
    armed: str | None = None  # the crash point the running server was started with
    for point in POINTS:
        _step, when = point.split(":")
        with api_client(cli) as c:
            vm = c.get(f"/vms/{name}").json()
            target = "node2" if vm["node"] == "node1" else "node1"
        wanted = None if when == "during" else point
        server = server_process(cli)
        if armed != wanted or not is_running(server.pid, server.argv):
            restart_server(cli, f"migrate:{wanted}" if wanted else None)
            armed = wanted
        with api_client(cli) as c:
            known = _task_ids(c, name)
            try:
                answer = c.post(f"/vms/{name}/migrate", json={"to": target})
            except httpx.RemoteProtocolError:
                # A crash point at the first step can kill the server after the task is
                # written and before the 202 is sent: the task is found once it is back.
                assert wanted is not None, point
                task_id = None
            else:
                assert answer.status_code == 202, answer.text
                task_id = answer.json()["task"]["id"]
            if when == "during":
                cli.wait_until(
                    "the migration to be in flight on the hosts",
                    lambda tid=task_id: any(  # type: ignore[misc]
                        s["name"] == "live_migrate" and s["commands"]
                        for s in c.get(f"/tasks/{tid}").json()["steps"]
                    ),
                )
        proc = server_process(cli)
        if when == "during":
            os.kill(proc.pid, signal.SIGKILL)
        cli.wait_until(
            f"the server to die at {point}",
            lambda p=proc: not is_running(p.pid, p.argv),  # type: ignore[misc]
            timeout=30,
        )
        armed = _chained(point)
        restart_server(cli, f"migrate:{armed}" if armed else None)
        with api_client(cli) as c:
            if task_id is None:
                (task_id,) = _task_ids(c, name) - known
            deadline = time.monotonic() + 90
            task = c.get(f"/tasks/{task_id}").json()
            while task["finished_at"] is None and time.monotonic() < deadline:
                task = c.get(f"/tasks/{task_id}/wait", params={"timeout": 5}).json()
            assert task["finished_at"] is not None, (point, task)
            assert task["state"] in ("succeeded", "rolled_back"), (point, task)
            vm = _check_invariants(cli, c, name, point)
            outcomes[point] = f"{task['state']} on {vm['node']} epoch {vm['epoch']}"
    print("outcomes:", outcomes)
    assert len(outcomes) == len(POINTS)
