"""A resumed step whose command never reached its agent (its sender stopped before sending
it; the agent tombstoned the id, so it can never run) sends it again under a new id instead
of failing the step (server/tasks/context.py). Any other failure of the command stays the
step's failure. (Seen when a server stopped between writing a command and sending it: the
task, taken over, rolled back.)"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest

from bollard.domain.errors import CommandFailed
from bollard.domain.models import Task, TaskStep
from bollard.domain.reconcile import NEVER_RECEIVED
from bollard.domain.states import CommandType
from bollard.server.tasks.context import StepContext, StepServices


class _Commands:
    def __init__(self, attach_fails_with: str) -> None:
        self.code = attach_fails_with
        self.attached: list[str] = []
        self.called: list[tuple[str, CommandType]] = []

    async def attach(self, cid: str, timeout: float) -> dict[str, Any]:
        self.attached.append(cid)
        raise CommandFailed(f"start on node 'node1' failed: {self.code}", code=self.code)

    async def call(self, node: str, command: CommandType, *args: Any, **kw: Any) -> dict[str, Any]:
        self.called.append((node, command))
        return {"power": "running"}


class _Resumed(StepContext[Any]):
    """A step resumed with the command `start` recorded (sent earlier, by another server)."""

    async def _step(self) -> TaskStep:
        return cast(TaskStep, SimpleNamespace(commands={"start": "c-old"}))


def _context(commands: _Commands) -> _Resumed:
    services = cast(
        StepServices, SimpleNamespace(commands=commands, timeouts=SimpleNamespace(command=5.0))
    )
    task = cast(Task, SimpleNamespace(id="t1", vm_uuid="u1"))
    return _Resumed(services, cast(Any, None), cast(Any, None), task, cast(Any, None))


def test_a_command_that_never_reached_its_agent_is_sent_again() -> None:
    commands = _Commands(NEVER_RECEIVED)
    ctx = _context(commands)
    result = asyncio.run(ctx.command("start", "node1", CommandType.START, vm_uuid="u1"))
    assert result == {"power": "running"}
    assert commands.attached == ["c-old"]
    assert commands.called == [("node1", CommandType.START)]


def test_any_other_failure_of_the_command_is_the_steps() -> None:
    commands = _Commands("stale-epoch")
    ctx = _context(commands)
    with pytest.raises(CommandFailed, match="stale-epoch"):
        asyncio.run(ctx.command("start", "node1", CommandType.START, vm_uuid="u1"))
    assert commands.called == []
