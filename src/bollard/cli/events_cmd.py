"""`bollard events`: the event log, optionally followed as it grows."""

from __future__ import annotations

import json
import time
from typing import Any

import typer

from bollard.cli.cell_cmd import warn_unreachable, with_cell
from bollard.cli.client import connect, unreachable_cells
from bollard.cli.output import (
    OUTPUT_OPTION,
    Output,
    console,
    err_console,
    fail,
    print_json,
    print_table,
)

FOLLOW_POLL = 30.0  # seconds one long-poll waits on the server
DEFAULT_LIMIT = 50


def register(app: typer.Typer) -> None:
    app.command("events")(events)


def _line(e: dict[str, Any]) -> str:
    who = " ".join(x for x in (e.get("vm") or "", f"@{e['node']}" if e.get("node") else "") if x)
    task = f" [{e['task_id']}]" if e.get("task_id") else ""
    actor = f" ({e['actor']})" if e.get("actor") else ""
    # Through an API server with cells, each event names its cell (null: the API server's).
    cell = f"{e.get('cell') or '-':<8} " if "cell" in e else ""
    return f"{e['at']}  {cell}{e['kind']:<22} {who:<24} {e['message']}{actor}{task}"


def events(
    vm: str | None = typer.Option(None, "--vm", help="Only events of this VM (name or uuid)."),
    node: str | None = typer.Option(None, "--node", help="Only events of this node."),
    task: str | None = typer.Option(None, "--task", help="Only events of this task."),
    actor: str | None = typer.Option(
        None,
        "--actor",
        help="Only events caused by this user (or token), or `system` for the server's own.",
    ),
    limit: int = typer.Option(
        DEFAULT_LIMIT, "--limit", min=1, max=1000, help="Show the last N events (default 50)."
    ),
    before: int | None = typer.Option(
        None,
        "--before",
        min=0,
        help="Only events older than this id (page back: the first id shown, with -o json).",
    ),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="Keep printing new events as they happen (Ctrl-C stops)."
    ),
    duration: float | None = typer.Option(
        None, "--for", min=0.1, help="With --follow: stop after this many seconds."
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Show the event log: every task and step transition and every decision, oldest first
    (the last 50, or --limit N; a note on stderr says when there are more).

    Behind an API server with cells: the events of every cell and of the API server, merged,
    each with its cell (a warning on stderr names each cell that did not answer).

    With -o json and --follow, one JSON object per line (JSON Lines)."""
    filters: dict[str, str | int] = {}
    if vm:
        filters["vm"] = vm
    if node:
        filters["node"] = node
    if task:
        filters["task"] = task
    if actor:
        filters["actor"] = actor
    if before is not None:
        if follow:
            fail("--before and --follow: one pages back, the other forward; give one")
        filters["before"] = before
    with connect(timeout=FOLLOW_POLL + 15) as client:
        page = client.get("/events", params={**filters, "limit": limit})
        items: list[dict[str, Any]] = page["items"]
        silent = unreachable_cells(page)
        if not follow:
            warn_unreachable(silent, "its events are not listed")
            _print_page(page, items, output)
            return
        warn_unreachable(silent, "its events follow once it answers")
        _emit(items, output)
        # An opaque position through an API server ("cells:..."): passed back as it came.
        last = page["last_id"]
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while deadline is None or time.monotonic() < deadline:
                wait = (
                    FOLLOW_POLL
                    if deadline is None
                    else max(0.0, min(FOLLOW_POLL, deadline - time.monotonic()))
                )
                page = client.get(
                    "/events", params={**filters, "after": last, "limit": 1000, "wait": wait}
                )
                now_silent = unreachable_cells(page)
                fresh = {c: why for c, why in now_silent.items() if c not in silent}
                warn_unreachable(fresh, "its events follow once it answers")
                silent = now_silent
                _emit(page["items"], output)
                last = page["last_id"]
        except KeyboardInterrupt:
            return


def _print_page(page: dict[str, Any], items: list[dict[str, Any]], output: Output) -> None:
    if output is Output.json:
        print_json(items)
    else:
        rows = [
            (
                e["at"],
                e["kind"],
                e.get("vm"),
                e.get("node"),
                e.get("actor"),
                e["message"],
                e.get("task_id"),
            )
            for e in items
        ]
        columns = ["AT", "KIND", "VM", "NODE", "ACTOR", "MESSAGE", "TASK"]
        if any("cell" in e for e in items):
            columns, rows = with_cell(columns, rows, items)
        print_table(None, columns, rows)
    if page.get("more"):
        # Through an API server, an event's id is its cell's: no --before across cells.
        more = (
            "--limit N for more"
            if any("cell" in e for e in items)
            else f"--limit N for more, or --before {items[0]['id']} for older ones"
        )
        err_console.print(
            f"showing the last {len(items)} events; {more}",
            highlight=False,
            soft_wrap=True,
        )


def _emit(items: list[dict[str, Any]], output: Output) -> None:
    for e in items:
        if output is Output.json:
            print(json.dumps(e), flush=True)
        else:
            console.print(_line(e), highlight=False, soft_wrap=True)
