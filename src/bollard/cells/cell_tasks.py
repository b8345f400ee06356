"""A step of an API server task that makes a cell do something and waits for it.

A call that starts a task in a cell carries `X-Request-Id: <key>` (the API task's id and the
step's name), so a step run again (after the API server restarted, or a retry) first looks
for the task that key started in that cell (the VM's action of that request id) and waits
for it instead of asking twice. A cell that does not answer is `CellUnreachable`, which the
steps retry with a deadline (then roll back)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from bollard.cells.directory import CellClient, CellUnreachable, refusal
from bollard.domain.errors import BollardError, StepFailed
from bollard.domain.policy import Identity
from bollard.server.clock import Clock, Deadline

log = logging.getLogger(__name__)

T = TypeVar("T")
Accept = Callable[[int, dict[str, Any]], bool]

WAIT_SLICE = 30.0  # seconds per long poll of a cell's task
UNDO_DEADLINE = 300.0  # how long an undo keeps trying a cell that does not answer
RETRY_PAUSE = 2.0


def hidden(flag: bool) -> dict[str, str]:
    return {"hidden": "true"} if flag else {}


async def find_action(
    client: CellClient, vm: str, key: str, identity: Identity | None
) -> str | None:
    """The id of the task request `key` started for VM `vm` in this cell (None: none)."""
    answer = await client.call("GET", f"/vms/{vm}/actions/{key}", identity=identity)
    if answer.status_code == 404:
        return None
    if answer.status_code >= 400:
        raise refusal(client.name, answer)
    return str(answer.json()["task_id"])


async def run_task(
    client: CellClient, key: str, method: str, path: str, *, vm: str, clock: Clock,
    deadline: float, identity: Identity | None = None, json: Any = None,
    params: dict[str, str] | None = None, accept: Accept | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Start `method path` in the cell once (see the module docstring) and wait until its
    task ends; its result if it succeeded, StepFailed naming the cell and the task if not.
    `accept(status, error)` may take a refusal as done (e.g. "already stopped"): {} then."""
    task_id = await find_action(client, vm, key, identity)
    if task_id is None:
        answer = await client.call(
            method, path, json=json, params=params, identity=identity,
            headers={"x-request-id": key},
        )  # fmt: skip
        if answer.status_code >= 400:
            error = _error(answer.json() if answer.content else {})
            if accept is not None and accept(answer.status_code, error):
                return {}
            raise refusal(client.name, answer)
        task_id = str(answer.json()["task"]["id"])
    return await wait_task(client, task_id, clock=clock, deadline=deadline, identity=identity)


async def wait_task(
    client: CellClient, task_id: str, *, clock: Clock, deadline: float,
    identity: Identity | None = None,
) -> dict[str, Any]:  # fmt: skip
    limit = Deadline.after(clock, deadline)
    while True:
        slice_ = max(0.1, min(WAIT_SLICE, limit.remaining()))
        task = await client.json(
            "GET", f"/tasks/{task_id}/wait", params={"timeout": slice_}, identity=identity,
            deadline=client.deadline + slice_,
        )  # fmt: skip
        state = str(task["state"])
        if state == "succeeded":
            result: dict[str, Any] = task.get("result") or {}
            return result
        if state in ("failed", "rolled_back", "needs_attention"):
            raise StepFailed(
                f"cell {client.name}: task {task['type']} {task_id} {state}: "
                f"{task.get('error') or 'no error given'}"
            )
        if limit.remaining() <= 0:
            raise StepFailed(
                f"cell {client.name}: task {task['type']} {task_id} still {state} after "
                f"{deadline:g} s"
            )


def _error(body: dict[str, Any]) -> dict[str, Any]:
    error = body.get("error")
    return error if isinstance(error, dict) else {}


async def persist(fn: Callable[[], Awaitable[T]], *, clock: Clock, what: str) -> T:
    """Run `fn` until a cell answers it (for undos: they must not give up on a cell that is
    away for a while), at most UNDO_DEADLINE seconds."""
    limit = Deadline.after(clock, UNDO_DEADLINE)
    while True:
        try:
            return await fn()
        except CellUnreachable as exc:
            if limit.remaining() <= 0:
                raise BollardError(f"{what}: {exc.message}", code="cell-unreachable") from exc
            log.warning("%s: %s; trying again", what, exc.message)
            await clock.sleep(RETRY_PAUSE)
