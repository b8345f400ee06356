"""`bollard status`: the server's version, database, maintenance mode, nodes and VMs at a
glance."""

from __future__ import annotations

from typing import Any

import typer

from bollard.cli.cell_cmd import status_counts
from bollard.cli.client import connect
from bollard.cli.output import (
    OUTPUT_OPTION,
    Output,
    console,
    print_fields,
    print_json,
    print_table,
)
from bollard.cli.servers_cmd import servers_line


def register(app: typer.Typer) -> None:
    app.command("status")(status)


def status(output: Output = OUTPUT_OPTION) -> None:
    """Show the server's version and database, how many management servers are up and which
    one leads (`bollard cluster servers` lists them), whether the cluster is in maintenance mode,
    how many nodes are connected, VMs by status; behind an API server with cells, also each
    cell and whether it answered (the counts are the sums over the cells that did)."""
    with connect() as client:
        data: dict[str, Any] = client.get("/status")
        url = client.base_url
    cells_mode = data.get("mode") == "cells"
    unreachable = {
        str(u.get("cell")): str(u.get("error") or "")
        for u in data.get("unreachable") or []
        if isinstance(u, dict) and u.get("cell")
    }
    if output is Output.json:
        print_json(data)
        return
    connected, vms = status_counts(data)
    cells: list[dict[str, Any]] = [c for c in data.get("cells") or [] if isinstance(c, dict)]
    mode = [("mode", _mode_text(cells, unreachable))] if cells_mode else []
    servers = servers_line(data.get("servers"))
    print_fields(
        [
            ("server", url),
            *mode,
            ("version", data.get("version")),
            ("database", data.get("database")),
            *([("servers", servers)] if servers is not None else []),
            ("maintenance", _maintenance(data.get("maintenance"))),
            ("nodes", connected),
            ("vms", vms),
        ]
    )
    if cells_mode and cells:
        console.print()
        print_table(
            "cells",
            ["NAME", "STATE", "ERROR"],
            [(c.get("name"), c.get("state"), c.get("error")) for c in cells],
        )
    if cells_mode and not cells:
        console.print(
            "\nNo cells yet: add one with `bollard cell create NAME --url URL --token-file F`.",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
    elif not (data.get("nodes") or {}).get("total") and not cells_mode:
        console.print(
            "\nNo nodes yet: add one with `bollard node add NAME`.", highlight=False, soft_wrap=True
        )


def _mode_text(cells: list[dict[str, Any]], unreachable: dict[str, str]) -> str:
    """'cells: an API server in front of 2 cells (1 did not answer; counts from the others)'."""
    count = len(cells)
    text = f"cells: an API server in front of {count} cell{'' if count == 1 else 's'}"
    if unreachable:
        text += f" ({len(unreachable)} did not answer: the counts are the others')"
    return text


def _maintenance(on: Any) -> str | None:
    if on is None:  # a server that does not say
        return None
    if on:
        return "ON: fencing and recovery are suspended (`bollard cluster maintenance off`)"
    return "off"
