"""The tasks this server has just created, as created, until it launches them: a launched
task's drive starts from them instead of reading the task back (and validating its params
again).

Kept from `create_in` (in the creator's transaction, in a worker thread) to `launch` (after
its commit). A task whose creating transaction rolled back is never launched: its entry is
dropped once KEPT newer ones are kept. Only a launch takes an entry; a task resumed or
taken over is always read from the database.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from bollard.domain.models import Task, TaskStep
from bollard.domain.tasks import StepState
from bollard.server.tasks.params import TaskParams

KEPT = 1024

Created = tuple[Task, TaskParams]  # the task with its steps, and its validated params


class CreatedTasks:
    def __init__(self, kept: int = KEPT) -> None:
        self._kept = kept
        self._lock = threading.Lock()  # kept from worker threads, taken on the loop
        self._tasks: OrderedDict[str, Created] = OrderedDict()

    def keep(self, task_id: str, task: Task, params: TaskParams) -> None:
        with self._lock:
            self._tasks[task_id] = (task, params)
            while len(self._tasks) > self._kept:
                self._tasks.popitem(last=False)

    def take(self, task_id: str) -> Created | None:
        with self._lock:
            return self._tasks.pop(task_id, None)

    def __len__(self) -> int:
        return len(self._tasks)


def pending_steps(task_id: str, names: list[str]) -> list[TaskStep]:
    """A new task's steps as `steps.create_all` writes them."""
    blank: dict[str, Any] = dict.fromkeys(
        ("error", "started_at", "finished_at", "undo_started_at", "undo_finished_at", "undo_error")
    )
    pending = StepState.PENDING.value
    return [
        TaskStep(
            task_id=task_id, idx=idx, name=name, state=pending, result={}, commands={}, **blank
        )
        for idx, name in enumerate(names)
    ]
