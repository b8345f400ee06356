"""Waiting for tasks: long polls, deadlines, failures."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pytest
from rich.console import Console

from bollard.cli.client import Client
from bollard.cli.wait import (
    TaskFailed,
    WaitTimedOut,
    describe,
    poll_task,
    progress_of,
    status_line,
    wait_for_task,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _client(states: list[str], seen: list[httpx.Request], clock: FakeClock) -> Client:
    """Each long poll "takes" the timeout it asked for, then answers the next state."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        clock.now += float(request.url.params["timeout"])
        state = states.pop(0) if len(states) > 1 else states[0]
        return httpx.Response(200, json={"id": "t1", "type": "start", "vm": "a", "state": state})

    return Client("http://x", "t", transport=httpx.MockTransport(handler))


def _task(state: str = "pending") -> dict[str, Any]:
    return {"id": "t1", "type": "start", "vm": "a", "state": state}


def test_poll_reports_each_state_change_and_returns_the_ended_task() -> None:
    clock, seen, changes = FakeClock(), list[httpx.Request](), list[str]()
    client = _client(["running", "running", "succeeded"], seen, clock)
    final = poll_task(
        client, _task(), timeout=60, on_change=lambda t: changes.append(t["state"]), clock=clock
    )
    assert final["state"] == "succeeded"
    assert changes == ["running", "succeeded"]
    assert [r.url.path for r in seen] == ["/api/v1/tasks/t1/wait"] * 3


def test_poll_gives_up_at_the_deadline_and_says_how_to_follow() -> None:
    clock, seen = FakeClock(), list[httpx.Request]()
    client = _client(["running"], seen, clock)
    with pytest.raises(WaitTimedOut) as info:
        poll_task(client, _task(), timeout=7, on_change=lambda t: None, clock=clock)
    assert clock.now <= 7.5
    assert "bollard task wait t1" in info.value.message
    # Chunks of POLL_CHUNK (2 s), the last one only what was left of the deadline.
    assert [float(r.url.params["timeout"]) for r in seen] == [2.0, 2.0, 2.0, 1.0]


def test_poll_backs_off_when_the_server_answers_early() -> None:
    clock, calls = FakeClock(), list[httpx.Request]()

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)  # answers at once, no time passes
        return httpx.Response(200, json=_task("running"))

    client = Client("http://x", "t", transport=httpx.MockTransport(handler))
    with pytest.raises(WaitTimedOut):
        poll_task(client, _task(), timeout=3, on_change=lambda t: None, clock=clock,
                  sleep=clock.sleep)  # fmt: skip
    assert len(calls) <= 7  # 0.5 s backoff per early answer, not a busy loop


@pytest.mark.parametrize("state", ["failed", "rolled_back", "needs_attention"])
def test_wait_for_task_raises_with_the_tasks_error(state: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={**_task(state), "error": "disk on fire"})

    client = Client("http://x", "t", transport=httpx.MockTransport(handler))
    quiet = Console(file=io.StringIO(), force_terminal=False)
    with pytest.raises(TaskFailed) as info:
        wait_for_task(client, _task(), timeout=5, console=quiet)
    assert info.value.message == f"task t1 (start a) {state}: disk on fire"


def _answers(*tasks: dict[str, Any]) -> Client:
    """A server whose long polls answer ``tasks`` in turn (the last one again and again)."""
    queue = list(tasks)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=queue.pop(0) if len(queue) > 1 else queue[0])

    return Client("http://x", "t", transport=httpx.MockTransport(handler))


def _migrating(
    state: str, step: str | None = None, message: str | None = None, of: str = "live_migrate"
) -> dict[str, Any]:
    """A migrate task as a long poll answers it: ``step`` running, ``message`` the latest
    progress (of step ``of``)."""
    progress = {"step": of, "fraction": 0.5, "message": message} if message else None
    steps = [{"name": name, "state": "running" if name == step else "done"} for name in [step]]
    return {
        "id": "t1",
        "type": "migrate",
        "vm": "a",
        "state": state,
        "result": {"progress": progress} if progress else {},
        "steps": steps if step else [],
    }


def test_wait_shows_each_step_and_each_change_of_a_migrations_progress() -> None:
    client = _answers(
        _migrating("running", "check"),
        _migrating("running", "live_migrate", "migrate transfer: 10%"),
        _migrating("running", "live_migrate", "migrate transfer: 10%"),
        _migrating("running", "live_migrate", "migrate transfer: 60%"),
        # Fell back: the live step's last progress is not the move's.
        _migrating("running", "move", "migrate transfer: 70%"),
        _migrating("running", "move", "migrate transfer: 20%", of="move"),
        {**_migrating("succeeded"), "result": {"summary": "migrated by shutdown to node2"}},
    )
    out = io.StringIO()
    wait_for_task(client, _migrating("pending"), timeout=60, console=Console(file=out))
    assert out.getvalue().splitlines() == [
        "waiting for task t1 (migrate a): pending",
        "task t1 (migrate a): running, check",
        "task t1 (migrate a): running, live_migrate: migrate transfer: 10%",
        "task t1 (migrate a): running, live_migrate: migrate transfer: 60%",
        "task t1 (migrate a): running, move",
        "task t1 (migrate a): running, move: migrate transfer: 20%",
        "task t1 (migrate a): succeeded",
    ]


def test_a_task_on_a_node_names_the_node_and_counts_its_vms() -> None:
    flush = {"id": "t2", "type": "flush", "vm": None, "node": "node2", "state": "running"}
    flush["result"] = {"progress": {"total": 5, "done": 3, "outcomes": {}}}
    assert describe(flush) == "task t2 (flush node2)"  # not "(flush None)"
    assert status_line(flush) == "task t2 (flush node2): running, 3/5 VMs done"
    flush["steps"] = [{"name": "evacuate", "state": "running"}]
    assert status_line(flush) == "task t2 (flush node2): running, evacuate: 3/5 VMs done"
    assert progress_of({**flush, "state": "succeeded"}) is None


def test_a_volume_task_names_its_volume() -> None:
    copy: dict[str, Any] = {"id": "t3", "type": "volume_copy", "vm": None, "node": "node2"}
    copy["state"] = "running"
    copy["params"] = {"volume_id": "0b7e", "volume": "data1", "pool": "fast", "node": "node2"}
    copy["result"] = {"progress": {"step": "copy", "fraction": 0.4, "message": "volume-copy: 40%"}}
    copy["steps"] = [{"name": "copy", "state": "running"}]
    assert describe(copy) == "task t3 (volume_copy volume data1)"  # not its target node
    assert (
        status_line(copy) == "task t3 (volume_copy volume data1): running, copy: volume-copy: 40%"
    )


def test_a_task_of_a_vms_volume_names_the_vm() -> None:
    attach: dict[str, Any] = {"id": "t4", "type": "volume_attach", "vm": "web1", "node": "node1"}
    attach["params"] = {"volume_id": "0b7e", "volume": "data1", "vm_uuid": "u1", "device": "vdb"}
    assert describe(attach) == "task t4 (volume_attach web1)"


def test_params_without_a_volume_name_fall_back_to_the_node() -> None:
    for params in ({}, {"volume": ""}, {"volume": None}, None):
        task: dict[str, Any] = {
            "id": "t5",
            "type": "volume_delete",
            "vm": None,
            "node": "node1",
            "params": params,
        }
        assert describe(task) == "task t5 (volume_delete node1)"
