"""`bollard task ...`: follow the operations (tasks) that VM commands start."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import typer

from bollard.cli.cell_cmd import gather, warn_unreachable, with_cell
from bollard.cli.client import connect
from bollard.cli.output import OUTPUT_OPTION, Output, print_fields, print_json, print_table
from bollard.cli.wait import DEFAULT_WAIT_TIMEOUT, describe, wait_for_task

task_app = typer.Typer(
    help="Tasks (operations on VMs): list, show (with steps), wait, cancel.", no_args_is_help=True
)
TASK_ARGUMENT = typer.Argument(..., help="Task id.")


def register(app: typer.Typer) -> None:
    app.add_typer(task_app, name="task")


def _print_task(task: dict[str, Any]) -> None:
    fields: list[tuple[str, Any]] = [
        ("id", task.get("id")),
        ("type", task.get("type")),
        ("vm", task.get("vm")),
        ("node", task.get("node")),
        ("state", task.get("state")),
        ("actor", task.get("actor")),
        ("server", task.get("server")),
        ("error", task.get("error")),
        ("cancel_requested", "yes" if task.get("cancel_requested") else None),
        ("created_at", task.get("created_at")),
        ("updated_at", task.get("updated_at")),
        ("finished_at", task.get("finished_at")),
    ]
    result = dict(task.get("result") or {})
    placement = result.pop("placement", None)
    if placement:
        ranking = ", ".join(f"{r['node']} ({r['score']})" for r in placement.get("ranking", []))
        rejected = "; ".join(f"{r['node']}: {r['reason']}" for r in placement.get("rejected", []))
        fields += [
            ("target", f"{placement.get('chosen')} (selector {placement.get('selector')})"),
            ("candidates", ranking or None),
            ("rejected", rejected or None),
        ]
    fields += [(f"result.{key}", _short(value)) for key, value in result.items()]
    print_fields(fields)
    steps = task.get("steps") or []
    if steps:
        print_table(
            "steps",
            ["#", "STEP", "STATE", "STARTED", "FINISHED", "RESULT / ERROR", "UNDO"],
            [
                (
                    s["idx"] + 1,
                    s["name"],
                    _state(s),
                    s.get("started_at"),
                    s.get("finished_at"),
                    s.get("error") or _short(s.get("result")),
                    _undo(s),
                )
                for s in steps
            ],
        )


def _state(step: dict[str, Any]) -> str:
    """The step's state, with its retries: "waiting (retry 2 at 12:00:05)", "done (2 retries)"."""
    state, attempts = str(step["state"]), int(step.get("attempts") or 0)
    if state == "waiting" and step.get("retry_at"):
        return f"{state} (retry {attempts} at {step['retry_at']})"
    if attempts:
        return f"{state} ({attempts} {'retry' if attempts == 1 else 'retries'})"
    return state


def _short(value: Any, limit: int = 80) -> str | None:
    if not value:
        return None
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _undo(step: dict[str, Any]) -> str | None:
    if step.get("undo_error"):
        return f"failed: {step['undo_error']}"
    if step.get("undo_finished_at"):
        return f"undone {step['undo_finished_at']}"
    if step.get("undo_started_at"):
        return "undoing"
    return None


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


@task_app.command("cancel")
def cancel(task_id: str = TASK_ARGUMENT, output: Output = OUTPUT_OPTION) -> None:
    """Ask a running task to stop: it stops before its next step (a migration in flight is
    aborted on its host) and rolls back what it had done. `bollard task wait ID` follows it."""
    with connect() as client:
        task: dict[str, Any] = client.post(f"/tasks/{quote(task_id, safe='')}/cancel")
    if output is Output.json:
        print_json(task)
    else:
        print(f"{describe(task)}: cancel requested (state {task.get('state')})")


@task_app.command("list")
def list_tasks(
    vm: str | None = typer.Option(
        None,
        "--vm",
        help="Only the tasks of this VM (the VM of that name now; a uuid for a deleted one).",
    ),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Only the newest N tasks (default: all)."
    ),
    active: bool = typer.Option(
        False, "--active", help="Only tasks not ended yet (pending, running, rolling back)."
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """List tasks, oldest first (with --limit N: the newest N, still oldest first), and
    their cell behind an API server with cells."""
    params: dict[str, str | int] = {"order": "newest" if limit is not None else "oldest"}
    if vm is not None:
        params["vm"] = vm
    if active:
        params["active"] = "true"
    with connect() as client:
        found = gather(client, "/tasks", limit=limit, params=params)
    warn_unreachable(found.unreachable, "its tasks are not listed")
    tasks = found.items
    if limit is not None:
        tasks.reverse()  # fetched newest first: shown oldest first, as without --limit
    if output is Output.json:
        print_json(tasks)
        return
    rows = [
        (
            t.get("id"),
            t.get("type"),
            t.get("vm"),
            t.get("state"),
            t.get("actor"),
            t.get("error"),
            t.get("created_at"),
        )
        for t in tasks
    ]
    columns = ["ID", "TYPE", "VM", "STATE", "ACTOR", "ERROR", "CREATED"]
    if found.with_cells:
        columns, rows = with_cell(columns, rows, tasks)
    print_table(None, columns, rows)
