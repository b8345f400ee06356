"""Crash points: a testing facility that SIGKILLs the server at a chosen point of a task.

`BOLLARD_CRASH_POINTS=migrate:migrate:before,create:define:after` (task type, step name,
`before` = step marked running but not yet executed, `after` = executed but its result not
yet written). `command:<type>:written` (dispatch.py): a command of that type is written
(SENT, when its node was connected) and not yet sent. Read once at start; without the
variable nothing happens. Tests use it to crash
the server at every step of an operation in turn and check that it resumes or rolls back.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

_POINTS = frozenset(
    p.strip() for p in os.environ.get("BOLLARD_CRASH_POINTS", "").split(",") if p.strip()
)


def reach(task_type: str, step: str, when: str) -> None:
    point = f"{task_type}:{step}:{when}"
    if point in _POINTS:
        log.warning("crash point %s reached: killing the server (BOLLARD_CRASH_POINTS)", point)
        os.kill(os.getpid(), signal.SIGKILL)
