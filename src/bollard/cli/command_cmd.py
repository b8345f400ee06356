"""`bollard command ...`: the commands the server sent to agents, and what became of them."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import typer

from bollard.cli.cell_cmd import gather, warn_unreachable, with_cell
from bollard.cli.client import connect
from bollard.cli.node_cmd import LIMIT_OPTION
from bollard.cli.output import OUTPUT_OPTION, Output, print_fields, print_json, print_table

command_app = typer.Typer(
    help="Commands sent to agents: both states (server and agent journal), answer, history.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(command_app, name="command")


def _outcome(cmd: dict[str, Any]) -> str:
    answer = cmd.get("answer")
    if not answer:
        return "-"
    if answer.get("ok"):
        return "ok"
    error = answer.get("error") or {}
    return f"failed: {error.get('code') or 'error'}"


@command_app.command("list")
def list_commands(
    node: str | None = typer.Option(None, "--node", help="Only commands sent to this node."),
    vm: str | None = typer.Option(None, "--vm", help="Only commands about this VM (name or uuid)."),
    state: str | None = typer.Option(
        None,
        "--state",
        help="Only commands in these server states, comma-separated "
        "(e.g. INTERRUPTED,TIMED_OUT,RECONCILE_RETRY).",
    ),
    limit: int | None = LIMIT_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """List commands, oldest first (with --limit N: the newest N, still oldest first), and
    their cell behind an API server with cells."""
    params: dict[str, str | int] = {"order": "newest" if limit is not None else "oldest"}
    if node:
        params["node"] = node
    if vm:
        params["vm"] = vm
    if state:
        params["state"] = state
    with connect() as client:
        found = gather(client, "/commands", limit=limit, params=params)
    warn_unreachable(found.unreachable, "its commands are not listed")
    items = found.items
    if limit is not None:
        items.reverse()  # fetched newest first: shown oldest first, as without --limit
    if output is Output.json:
        print_json(items)
        return
    rows = [
        (
            c["id"],
            c["node"],
            c["type"],
            c.get("vm_uuid"),
            c["state"],
            c.get("agent_state"),
            _outcome(c),
            c["attempts"],
            c["created_at"],
        )
        for c in items
    ]
    columns = ["ID", "NODE", "TYPE", "VM", "STATE", "AGENT STATE", "OUTCOME", "ATTEMPTS", "CREATED"]
    if found.with_cells:
        columns, rows = with_cell(columns, rows, items)
    print_table(None, columns, rows)


@command_app.command("show")
def show(
    command_id: str = typer.Argument(..., help="Command id."),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Show one command: both states, the answer, timestamps, attempts and its history."""
    with connect() as client:
        cmd: dict[str, Any] = client.get(f"/commands/{quote(command_id, safe='')}")
    if output is Output.json:
        print_json(cmd)
        return
    answer = cmd.get("answer") or {}
    error = (answer.get("error") or {}) if answer else {}
    print_fields(
        [
            ("id", cmd["id"]),
            ("type", cmd["type"]),
            ("node", cmd["node"]),
            ("vm_uuid", cmd.get("vm_uuid")),
            ("epoch", cmd.get("epoch")),
            ("task_id", cmd.get("task_id")),
            ("args", cmd.get("args") or None),
            ("state", cmd["state"]),
            ("agent_state", cmd.get("agent_state")),
            ("outcome", _outcome(cmd)),
            ("error", error.get("message") or cmd.get("error")),
            ("attempts", cmd["attempts"]),
            ("deadline", cmd.get("deadline")),
            ("created_at", cmd["created_at"]),
            ("updated_at", cmd["updated_at"]),
        ]
    )
    history = cmd.get("history") or []
    if history:
        print_table(
            "history",
            ["AT", "FROM", "TO", "NOTE"],
            [[h["at"], h.get("from_state"), h["to_state"], h.get("note")] for h in history],
        )
