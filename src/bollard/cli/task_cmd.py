"""`bollard task ...`: follow the operations (tasks) that VM commands start."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import typer

from bollard.cli.client import connect
from bollard.cli.node_cmd import LIMIT_OPTION
from bollard.cli.output import OUTPUT_OPTION, Output, print_fields, print_json, print_table
from bollard.cli.wait import DEFAULT_WAIT_TIMEOUT, describe, wait_for_task

task_app = typer.Typer(help="Tasks (operations on VMs): list, show, wait.", no_args_is_help=True)
TASK_ARGUMENT = typer.Argument(..., help="Task id.")


def register(app: typer.Typer) -> None:
    app.add_typer(task_app, name="task")


def _print_task(task: dict[str, Any]) -> None:
    print_fields(
        [
            ("id", task.get("id")),
            ("type", task.get("type")),
            ("vm", task.get("vm")),
            ("state", task.get("state")),
            ("error", task.get("error")),
            ("created_at", task.get("created_at")),
            ("updated_at", task.get("updated_at")),
            ("finished_at", task.get("finished_at")),
        ]
    )


@task_app.command("show")
def show(task_id: str = TASK_ARGUMENT, output: Output = OUTPUT_OPTION) -> None:
    """Show one task."""
    with connect() as client:
        task: dict[str, Any] = client.get(f"/tasks/{quote(task_id, safe='')}")
    if output is Output.json:
        print_json(task)
    else:
        _print_task(task)


@task_app.command("wait")
def wait(
    task_id: str = TASK_ARGUMENT,
    timeout: float = typer.Option(
        DEFAULT_WAIT_TIMEOUT, "--timeout", min=0.0, help="Give up after this many seconds."
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Wait until a task ends; exit non-zero if it did not succeed."""
    with connect() as client:
        task: dict[str, Any] = client.get(f"/tasks/{quote(task_id, safe='')}")
        task = wait_for_task(client, task, timeout=timeout)
    if output is Output.json:
        print_json(task)
    else:
        print(f"{describe(task)} succeeded")


@task_app.command("list")
def list_tasks(
    vm: str | None = typer.Option(None, "--vm", help="Only the tasks of this VM."),
    limit: int | None = LIMIT_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """List tasks, newest first as the server orders them."""
    params = {"vm": vm} if vm else None
    with connect() as client:
        tasks = client.list_all("/tasks", limit=limit, params=params)
    if output is Output.json:
        print_json(tasks)
        return
    rows = [
        (
            t.get("id"),
            t.get("type"),
            t.get("vm"),
            t.get("state"),
            t.get("error"),
            t.get("created_at"),
        )
        for t in tasks
    ]
    print_table(None, ["ID", "TYPE", "VM", "STATE", "ERROR", "CREATED"], rows)
