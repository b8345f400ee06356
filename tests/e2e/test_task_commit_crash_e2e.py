"""The boundaries of the task engine's merged writes (server/tasks/engine.py), crossed by a
server SIGKILLed there (BOLLARD_CRASH_POINTS), then restarted: a VM created with start ends
ACTIVE, running once on its node, the task succeeded, every command terminal.

- `command:<type>:written`: the command is written SENT, in one transaction with its CREATED
  and the step's pending writes (its task_state), and never sent. The resumed step finds it
  never reached its agent and sends it again, under a new id.
- `create:<step>:after`: the step has run, and its end is not written: it waits for the next
  write of the task (the next step's start, or the task's end). The resumed task runs the
  step again, which waits for the command it sent instead of sending another.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from bollard.cli.cluster import is_running
from bollard.sim.fabric import Fabric
from tests.e2e.crash_support import api_client, restart_server, server_process

if TYPE_CHECKING:
    from tests.e2e.conftest import Cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

OPEN = "CREATED,SENT,INTERRUPTED,TIMED_OUT,RECONCILING,RECONCILE_RETRY"


def _ended(c: httpx.Client, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    task: dict[str, Any] = c.get(f"/tasks/{task_id}").json()
    while task["finished_at"] is None and time.monotonic() < deadline:
        task = c.get(f"/tasks/{task_id}/wait", params={"timeout": 5}).json()
    return task


@pytest.mark.parametrize(
    ("point", "resent"),
    [
        ("command:define:written", "define"),
        ("command:start:written", "start"),
        ("create:define:after", None),
        ("create:start:after", None),
    ],
)
def test_a_server_killed_at_a_merged_write_resumes_the_create(
    cluster: Cli, point: str, resent: str | None
) -> None:
    cli = cluster
    name = "merged-" + point.replace(":", "-")
    restart_server(cli, point)
    proc = server_process(cli)
    with api_client(cli) as c:
        try:
            answer = c.post(
                "/vms", json={"name": name, "vcpus": 1, "memory_mb": 256, "start": True}
            )
        except httpx.TransportError:  # died before answering: the create is committed
            answer = None
        if answer is not None:
            assert answer.status_code == 202, answer.text
    cli.wait_until(
        f"the server to die at {point}",
        lambda: not is_running(proc.pid, proc.argv),
        timeout=30,
    )
    restart_server(cli, None)
    with api_client(cli) as c:
        vm = c.get(f"/vms/{name}").json()
        tasks = c.get("/tasks", params={"vm": name}).json()["items"]
        create = next(t for t in tasks if t["type"] == "create")
        task = _ended(c, create["id"])
        assert task["state"] == "succeeded", (point, task)
        vm = c.get(f"/vms/{name}").json()
        assert vm["status"] == "ACTIVE" and vm["task_state"] is None, (point, vm)
        snapshot = Fabric(cli.data_dir / "fabric").snapshot()
        copies = {n: v for n, vms in snapshot.items() for v in vms if v.uuid == vm["uuid"]}
        assert list(copies) == [vm["node"]], (point, copies)
        assert copies[vm["node"]].power == "running", (point, copies)
        open_commands = c.get("/commands", params={"state": OPEN}).json()
        assert open_commands["total"] == 0, (point, open_commands["items"])
        sent = c.get("/commands", params={"vm": vm["uuid"], "limit": 100}).json()["items"]
        kinds = sorted(cmd["type"] for cmd in sent if cmd.get("task_id") == create["id"])
        # The command that never left is sent again under a new id; no other is repeated.
        expected = sorted(["define", "start"] + ([resent] if resent else []))
        assert kinds == expected, (point, sent)
