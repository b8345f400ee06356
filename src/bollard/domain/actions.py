"""Instance actions, as Nova shows them: every operation on a VM is an action, named by the
request that asked for it, with its actor, start, finish, result and events.

A VM's actions are its tasks (tasks are never deleted): the action is the task's kind, its
events the task's steps. A task from before request ids (or one the server started by
itself) is shown with the request id `req-<task id>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bollard.domain.models import Task, TaskStep
from bollard.domain.states import TaskStatus

# Task kinds as Nova names the actions (others keep their own name).
_ACTIONS = {
    "resize_confirm": "confirmResize",
    "resize_revert": "revertResize",
    "ha_restart": "evacuate",
    "volume_attach": "attach_volume",
    "volume_detach": "detach_volume",
}
_TASK_TYPES = {action: kind for kind, action in _ACTIONS.items()}


def task_type_of(action: str) -> str:
    """The task kind an action name stands for (the inverse of the names above)."""
    return _TASK_TYPES.get(action, action)


_STEP_RESULTS = {
    "done": "success",
    "failed": "error",
    "undo_failed": "error",
    "running": "running",
    "waiting": "running",
    "undoing": "running",
}


@dataclass(frozen=True)
class ActionEvent:
    event: str
    start_time: datetime | None
    finish_time: datetime | None
    result: str  # success, error, running, pending, skipped, undone
    details: str | None


@dataclass(frozen=True)
class Action:
    request_id: str
    action: str
    vm_uuid: str
    vm_name: str | None
    actor: str | None
    task_id: str
    start_time: datetime
    finish_time: datetime | None
    result: str  # running, success, error
    message: str | None
    events: tuple[ActionEvent, ...] = ()


def action_name(task: Task) -> str:
    if task.type == "migrate":
        mode = str(task.params.get("mode") or "migrate")
        return (
            "live-migration" if mode == "migrate" and task.params.get("method") == "live" else mode
        )
    return _ACTIONS.get(task.type, task.type)


def request_id(task: Task) -> str:
    return task.request_id or f"req-{task.id}"


def _event(step: TaskStep) -> ActionEvent:
    result = _STEP_RESULTS.get(step.state, step.state)
    return ActionEvent(
        event=step.name,
        start_time=step.started_at,
        finish_time=step.undo_finished_at or step.finished_at,
        result=result,
        details=step.undo_error or step.error,
    )


def of_task(task: Task, *, with_events: bool = False) -> Action:
    if not task.state.ended:
        result = "running"
    elif task.state is TaskStatus.SUCCEEDED:
        result = "success"
    else:
        result = "error"
    return Action(
        request_id=request_id(task),
        action=action_name(task),
        vm_uuid=task.vm_uuid or "",
        vm_name=task.vm_name,
        actor=task.actor,
        task_id=task.id,
        start_time=task.created_at,
        finish_time=task.finished_at,
        result=result,
        message=task.error,
        events=tuple(_event(s) for s in task.steps) if with_events else (),
    )
