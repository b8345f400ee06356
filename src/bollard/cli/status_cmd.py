"""`bollard status`: the server's version, database, maintenance mode, nodes and VMs at a
glance."""

from __future__ import annotations

from typing import Any

import typer

from bollard.cli.client import connect
from bollard.cli.output import OUTPUT_OPTION, Output, console, print_fields, print_json


def register(app: typer.Typer) -> None:
    app.command("status")(status)


def status(output: Output = OUTPUT_OPTION) -> None:
    """Show the server's version and database, whether the cluster is in maintenance mode,
    how many nodes are connected, VMs by status."""
    with connect() as client:
        data: dict[str, Any] = client.get("/status")
        url = client.base_url
    if output is Output.json:
        print_json(data)
        return
    nodes = data.get("nodes") or {}
    vms = data.get("vms") or {}
    by_status: dict[str, int] = vms.get("by_status") or {}
    breakdown = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()) if n) or "none"
    print_fields(
        [
            ("server", url),
            ("version", data.get("version")),
            ("database", data.get("database")),
            ("maintenance", _maintenance(data.get("maintenance"))),
            ("nodes", f"{nodes.get('connected', 0)}/{nodes.get('total', 0)} connected"),
            ("vms", f"{vms.get('total', 0)} ({breakdown})"),
        ]
    )
    if not nodes.get("total"):
        console.print(
            "\nNo nodes yet: add one with `bollard node add NAME`.", highlight=False, soft_wrap=True
        )


def _maintenance(on: Any) -> str | None:
    if on is None:  # a server that does not say
        return None
    if on:
        return "ON: fencing and recovery are suspended (`bollard cluster maintenance off`)"
    return "off"
