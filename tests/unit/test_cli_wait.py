"""Waiting for tasks: long polls, deadlines, failures."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pytest
from rich.console import Console

from bollard.cli.client import Client
from bollard.cli.wait import TaskFailed, WaitTimedOut, poll_task, wait_for_task


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
