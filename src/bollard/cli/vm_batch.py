"""`bollard vm create NAME --count N`: N VMs at once (`POST /vms/batch`), NAME-1 .. NAME-N,
all created or none; with --wait, every create task followed to its end (one progress line
for them all on a terminal, one plain line per change on stderr elsewhere)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bollard.cli.client import ApiError, Client, CliError
from bollard.cli.output import Output, console, err_console, print_json, print_table
from bollard.cli.vm_common import vm_path
from bollard.cli.wait import WaitTimedOut, is_ended, poll_task, status_line

COLUMNS = ("NAME", "NODE", "STATUS", "TASK", "STATE", "ERROR")


def create_many(
    client: Client,
    body: dict[str, Any],
    count: int,
    *,
    wait: bool,
    timeout: float,
    output: Output,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Ask for the batch; show its VMs and their tasks, waited for with `wait` (CliError
    naming the VMs whose task failed or did not end in `timeout` seconds)."""
    answer: dict[str, Any] = client.post("/vms/batch", {**body, "count": count})
    items: list[dict[str, Any]] = answer["items"]
    if not wait:
        if output is Output.json:
            print_json(answer)
            return
        _table(items)
        first = items[0]["task"]["id"] if items else "ID"
        console.print(
            f"{len(items)} VMs accepted; follow each with `bollard task wait {first}` (its "
            "task) or `bollard vm list`.",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
        return
    tasks = _wait_all(client, [i["task"] for i in items], timeout, clock)
    ended: list[dict[str, Any]] = [
        {"vm": _vm_now(client, i), "task": t} for i, t in zip(items, tasks, strict=True)
    ]
    late = [i for i in ended if not is_ended(i["task"])]
    if output is Output.json:
        print_json({"items": ended})
    else:
        _table(ended)
    failed = [i for i in ended if is_ended(i["task"]) and i["task"].get("state") != "succeeded"]
    problems = [
        f"{_name(i)} (task {i['task'].get('id')} {i['task'].get('state')}: "
        f"{i['task'].get('error') or 'no error message'})"
        for i in failed
    ]
    if late:
        problems.append(
            f"still running after {timeout:g}s (they go on; `bollard task wait ID`): "
            + ", ".join(f"{_name(i)} (task {i['task'].get('id')})" for i in late)
        )
    if problems:
        raise CliError(
            f"{len(failed) + len(late)} of {len(ended)} VMs not created: " + "; ".join(problems)
        )


def _name(item: dict[str, Any]) -> str:
    return str(item["task"].get("vm") or (item.get("vm") or {}).get("name"))


def _vm_now(client: Client, item: dict[str, Any]) -> dict[str, Any] | None:
    try:
        vm: dict[str, Any] = client.get(vm_path(_name(item)))
    except ApiError as exc:
        if exc.status != 404:
            raise
        return None  # a failed create leaves no VM
    return vm


def _table(items: list[dict[str, Any]]) -> None:
    rows = []
    for item in items:
        vm, task = item.get("vm") or {}, item["task"]
        rows.append(
            (_name(item), vm.get("node"), vm.get("status") or "gone", task.get("id"),
             task.get("state"), task.get("error"))
        )  # fmt: skip
    print_table(None, COLUMNS, rows)


def _wait_all(
    client: Client, tasks: list[dict[str, Any]], timeout: float, clock: Callable[[], float]
) -> list[dict[str, Any]]:
    """Every task as it ended, or as it was at the deadline."""
    deadline = clock() + timeout
    total, done, failed = len(tasks), 0, 0
    out: list[dict[str, Any]] = []

    def summary() -> str:
        return f"{done}/{total} create tasks ended" + (f", {failed} failed" if failed else "")

    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, disable=not err_console.is_terminal) as bar:
        shown = bar.add_task(summary(), total=total)

        def say(task: dict[str, Any]) -> None:
            if not err_console.is_terminal:
                err_console.print(status_line(task), highlight=False, soft_wrap=True, markup=False)

        if not err_console.is_terminal:
            err_console.print(
                f"waiting for {total} create tasks", highlight=False, soft_wrap=True, markup=False
            )
        for task in tasks:
            remaining = deadline - clock()
            try:
                if remaining <= 0:
                    raise WaitTimedOut(task, timeout)
                task = poll_task(client, task, timeout=remaining, on_change=say, clock=clock)
            except WaitTimedOut:
                task = client.get(f"/tasks/{task['id']}")  # the deadline passed: as it is now
            out.append(task)
            if is_ended(task):
                done += 1
                failed += task.get("state") != "succeeded"
            bar.update(shown, description=summary(), completed=done)
    return out
