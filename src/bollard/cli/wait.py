"""Waiting for a task to end: long polls with an overall deadline, and a progress display.

On a terminal a Rich spinner shows the task's state, its progress and the time spent;
elsewhere (pipes, CI logs) one plain line per change of state or progress goes to stderr, so
stdout stays clean for ``-o json``. The progress is what the task's result holds while it
runs: a migration's or a volume copy's ``progress`` (the phase and percentage its source host
reports, e.g. ``migrate transfer: 42%``), a flush's or unflush's count of VMs done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from bollard.cli.client import Client, CliError
from bollard.cli.output import err_console

DEFAULT_WAIT_TIMEOUT = 300.0
# Each long poll asks the server to hold the request at most this long (its maximum is 60 s);
# short enough for the display to notice a pending -> running change.
POLL_CHUNK = 2.0
# The HTTP timeout of one long poll is the chunk plus this margin.
HTTP_MARGIN = 15.0

ENDED_STATES = frozenset({"succeeded", "failed", "rolled_back", "needs_attention"})


class TaskFailed(CliError):
    def __init__(self, task: dict[str, Any]) -> None:
        self.task = task
        error = task.get("error") or "no error message"
        super().__init__(f"{describe(task)} {task.get('state')}: {error}")


class WaitTimedOut(CliError):
    def __init__(self, task: dict[str, Any], timeout: float) -> None:
        self.task = task
        super().__init__(
            f"{describe(task)} still {task.get('state')} after {timeout:g}s; it goes on"
            f" without us: follow it with `bollard task wait {task.get('id')}`"
        )


def describe(task: dict[str, Any]) -> str:
    """``task ID (migrate web1)``: a task names its VM; else a volume task (no VM; its params
    name the volume) its volume, ``task ID (volume_copy volume data1)``; else a task on a
    node (flush, fence, ...) its node."""
    subject = task.get("vm") or _volume_of(task) or task.get("node")
    return f"task {task.get('id')} ({task.get('type')}{f' {subject}' if subject else ''})"


def _volume_of(task: dict[str, Any]) -> str | None:
    """``volume data1`` for a task whose params name a volume (server/tasks/params.py
    VolumeParams), else None."""
    params = task.get("params")
    volume = params.get("volume") if isinstance(params, dict) else None
    return f"volume {volume}" if isinstance(volume, str) and volume else None


def is_ended(task: dict[str, Any]) -> bool:
    return task.get("state") in ENDED_STATES


def progress_of(task: dict[str, Any]) -> str | None:
    """Where a running task is: its running step (when the answer lists the steps) and what
    it reports of its progress, e.g. ``live_migrate: migrate transfer: 42%`` (None: nothing
    to say, or it has ended)."""
    if is_ended(task):
        return None
    steps = task.get("steps") or []
    step = next((s.get("name") for s in steps if s.get("state") == "running"), None)
    progress = (task.get("result") or {}).get("progress")
    said = None
    if isinstance(progress, dict) and progress.get("step", step) == step:  # not a past step's
        if progress.get("message"):  # a host's report, e.g. "migrate transfer: 42%"
            said = str(progress["message"])
        elif "done" in progress and "total" in progress:  # a drain: VMs moved so far
            said = f"{progress['done']}/{progress['total']} VMs done"
    if step and said:
        return f"{step}: {said}"
    return step or said


def status_line(task: dict[str, Any]) -> str:
    """``task ID (migrate web1): running, live_migrate: migrate transfer: 42%``"""
    progress = progress_of(task)
    return f"{describe(task)}: {task.get('state')}" + (f", {progress}" if progress else "")


def poll_task(
    client: Client,
    task: dict[str, Any],
    *,
    timeout: float,
    on_change: Callable[[dict[str, Any]], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Long-poll until the task ends; raise :class:`WaitTimedOut` at the deadline.
    ``on_change`` is told of every change of the task's state or progress."""
    deadline = clock() + timeout
    last_seen = (task.get("state"), progress_of(task))
    while not is_ended(task):
        remaining = deadline - clock()
        if remaining <= 0:
            raise WaitTimedOut(task, timeout)
        chunk = max(0.1, min(POLL_CHUNK, remaining))
        started = clock()
        task = client.get(
            f"/tasks/{task['id']}/wait",
            params={"timeout": round(chunk, 3)},
            timeout=chunk + HTTP_MARGIN,
        )
        if (task.get("state"), progress_of(task)) != last_seen:
            last_seen = (task.get("state"), progress_of(task))
            on_change(task)
        elif not is_ended(task) and clock() - started < chunk / 2:
            # The server answered early without news: back off rather than spin.
            sleep(min(0.5, max(0.0, deadline - clock())))
    return task


def wait_for_task(
    client: Client,
    task: dict[str, Any],
    *,
    timeout: float = DEFAULT_WAIT_TIMEOUT,
    console: Console | None = None,
) -> dict[str, Any]:
    """Block until ``task`` ends; return it if it succeeded, else raise :class:`TaskFailed`."""
    con = console or err_console
    if con.is_terminal:
        final = _wait_with_spinner(client, task, timeout, con)
    else:
        con.print(f"waiting for {status_line(task)}", highlight=False, soft_wrap=True, markup=False)
        final = poll_task(
            client,
            task,
            timeout=timeout,
            on_change=lambda t: con.print(
                status_line(t), highlight=False, soft_wrap=True, markup=False
            ),
        )
    if final.get("state") != "succeeded":
        raise TaskFailed(final)
    return final


def _wait_with_spinner(
    client: Client, task: dict[str, Any], timeout: float, con: Console
) -> dict[str, Any]:
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=con, transient=False) as progress:
        bar: TaskID = progress.add_task(_line(task), total=None)

        def update(t: dict[str, Any]) -> None:
            progress.update(bar, description=_line(t))

        final = poll_task(client, task, timeout=timeout, on_change=update)
        progress.update(bar, description=_line(final), total=1, completed=1)
    return final


def _line(task: dict[str, Any]) -> str:
    state = str(task.get("state"))
    colour = {"succeeded": "green", "failed": "red", "running": "cyan"}.get(state, "yellow")
    progress = progress_of(task)
    shown = f", {escape(progress)}" if progress else ""
    return f"{escape(describe(task))}: [{colour}]{escape(state)}[/{colour}]{shown}"
