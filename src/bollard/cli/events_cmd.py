"""`bollard events`: the event log, optionally followed as it grows."""

from __future__ import annotations

import json
import time
from typing import Any

import typer

from bollard.cli.client import connect
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
    return f"{e['at']}  {e['kind']:<22} {who:<24} {e['message']}{actor}{task}"


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
        if not follow:
            if output is Output.json:
                print_json(items)
            else:
                print_table(
                    None,
                    ["AT", "KIND", "VM", "NODE", "ACTOR", "MESSAGE", "TASK"],
                    [
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
                    ],
                )
            if page.get("more"):
                err_console.print(
                    f"showing the last {len(items)} events; --limit N for more, or "
                    f"--before {items[0]['id']} for older ones",
                    highlight=False,
                    soft_wrap=True,
                )
            return
        _emit(items, output)
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
                _emit(page["items"], output)
                last = page["last_id"]
        except KeyboardInterrupt:
            return


def _emit(items: list[dict[str, Any]], output: Output) -> None:
    for e in items:
        if output is Output.json:
            print(json.dumps(e), flush=True)
        else:
            console.print(_line(e), highlight=False, soft_wrap=True)
