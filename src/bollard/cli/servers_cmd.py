"""`bollard cluster servers`: the management servers sharing the cluster's database, which
one leads, and how many agents each holds; and the `servers:` line of `bollard status`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import typer

from bollard.cli.client import ApiError, CliError, connect
from bollard.cli.node_cmd import age
from bollard.cli.output import OUTPUT_OPTION, Output, console, print_json, print_table

COLUMNS = ["NAME", "ROLE", "STATE", "AGENTS", "VERSION", "SCHEMA", "URL", "STARTED", "RENEWED"]


def register(cluster_app: typer.Typer) -> None:
    cluster_app.command("servers")(servers)


def servers(output: Output = OUTPUT_OPTION) -> None:
    """The management servers on the cluster's database: each with its role (the leader runs
    the cluster-wide duties), its state, the agents connected to it, its version and address;
    those that stopped or died in the last hour too. `(this)` marks the one that answered."""
    with connect() as client:
        try:
            answer: dict[str, Any] = client.get("/servers")
        except ApiError as exc:
            if exc.status == 404:
                raise CliError(
                    f"{client.base_url} lists no servers: it is an older server, or an API "
                    "server in front of cells (ask a cell's server)"
                ) from None
            raise
    if output is Output.json:
        print_json(answer)
        return
    items: list[dict[str, Any]] = [i for i in answer.get("items") or [] if isinstance(i, dict)]
    if not items:
        console.print("No server has registered yet.", highlight=False, markup=False)
        return
    print_table(None, COLUMNS, [server_row(i) for i in items])
    if answer.get("leader") is None and any(i.get("state") == "up" for i in items):
        console.print(
            "\nNo leader now: the leader lease is free or ran out (a server takes it shortly).",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )


def server_row(item: Mapping[str, Any]) -> list[Any]:
    name = str(item.get("name"))
    return [
        f"{name} (this)" if item.get("this") else name,
        item.get("role"),
        item.get("state"),
        item.get("agents"),
        item.get("version"),
        item.get("schema_revision"),  # (none from servers before rolling upgrades)
        item.get("url"),
        age(item.get("started_at")),
        age(item.get("renewed_at")),
    ]


def servers_line(counts: Any) -> str | None:
    """'3 up, leader node-a:8443' (or '2 up of 3, no leader') from the `servers` of a
    StatusOut; None when the server does not say (an older one, or an API server)."""
    if not isinstance(counts, Mapping):
        return None
    up, total = int(counts.get("up") or 0), int(counts.get("total") or 0)
    text = f"{up} up" if up == total else f"{up} up of {total} listed"
    leader = counts.get("leader")
    return f"{text}, leader {leader}" if leader else f"{text}, no leader"
