"""`bollard node ...`: enrol hypervisor hosts and look at them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer
from rich.markup import escape

from bollard.cli.cell_cmd import gather, warn_unreachable, with_cell
from bollard.cli.client import CliError, connect, resolve_tls
from bollard.cli.output import (
    OUTPUT_OPTION,
    Output,
    console,
    name_check,
    print_fields,
    print_json,
    print_table,
)
from bollard.cli.secret_file import shown_once

node_app = typer.Typer(
    help="Hypervisor hosts (nodes): enrol, list, show, power (fencing) settings and actions.",
    no_args_is_help=True,
)

LIMIT_OPTION = typer.Option(None, "--limit", min=1, help="Show at most N items (default: all).")


def register(app: typer.Typer) -> None:
    # node set|power|confirm-down, cluster; node delete, token; node sriov, vf set
    from bollard.cli import node_admin_cmd, node_power_cmd, node_sriov_cmd

    node_power_cmd.register(app, node_app)
    node_admin_cmd.register(node_app)  # node delete, node token rotate
    node_sriov_cmd.register(node_app)  # node sriov, node vf set
    app.add_typer(node_app, name="node")


@node_app.command("add")
def add(
    name: str = typer.Argument(
        ..., help="Node name, as the agent will announce it.", callback=name_check("node")
    ),
    token_file: Path | None = typer.Option(
        None,
        "--token-file",
        help="Write the agent token to this file (mode 0600) instead of printing it.",
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Enrol a node; its agent token is shown only once, keep it."""
    with connect() as client:
        answer: dict[str, Any] = client.post("/nodes", {"name": name})
        url = client.base_url
    if not answer.get("token"):
        raise CliError(f"the server enrolled {name} but sent no token")
    token, shown = shown_once(answer, token_file)
    if output is Output.json:
        print_json(shown)
        return
    node = escape(name)
    console.print(f"Node [bold]{node}[/bold] enrolled.", soft_wrap=True)
    if token_file is None:
        console.print("Its agent token (shown only this once):", highlight=False, soft_wrap=True)
        console.print(f"  {escape(token)}", highlight=False, soft_wrap=True)
        where = "/etc/bollard/agent.token"
        console.print(
            f"Save it on the host in a file only the agent can read, e.g. {where}\n"
            f"  (umask 077; cat > {where})   # paste the token, then Ctrl-D",
            highlight=False,
            soft_wrap=True,
        )
    else:
        where = str(token_file)
        console.print(
            f"Its agent token is in {escape(where)} (mode 0600).", highlight=False, soft_wrap=True
        )
    ca_file = resolve_tls(url).ca_file if url.startswith("https:") else None
    ca = (
        f" --ca-file {escape(ca_file)}"
        if ca_file
        else (" --ca-file CA.pem" if url.startswith("https:") else "")
    )
    console.print(
        "Start the agent on the host with:\n"
        f"  bollard agent --server {escape(url)}{ca} --node {node} --token-file {escape(where)}"
        " --driver sim --state-dir /var/lib/bollard/agent --fabric-dir DIR",
        highlight=False,
        soft_wrap=True,
    )


def age(timestamp: Any) -> str | None:
    """ "3s ago" for an ISO 8601 time (as the API gives), the text itself if unparsable."""
    if not timestamp:
        return None
    try:
        then = datetime.fromisoformat(str(timestamp))
    except ValueError:
        return str(timestamp)
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = max(0.0, (datetime.now(UTC) - then).total_seconds())
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.0f}h ago"


def _usage(used: dict[str, Any] | None, cap: dict[str, Any] | None, key: str) -> str | None:
    if used is None and cap is None:  # e.g. a node of a cell that did not answer
        return None
    return f"{(used or {}).get(key, '-')}/{(cap or {}).get(key, '-')}"


def _yes_no(node: dict[str, Any], key: str) -> str | None:
    if key not in node:  # e.g. a node of a cell that did not answer
        return None
    return "yes" if node.get(key) else "no"


@node_app.command("list")
def list_nodes(limit: int | None = LIMIT_OPTION, output: Output = OUTPUT_OPTION) -> None:
    """List nodes with health, connection and allocated/total resources (and cell, behind
    an API server with cells: the nodes of a cell that did not answer are listed as
    unknown)."""
    with connect() as client:
        found = gather(client, "/nodes", limit=limit)
    warn_unreachable(found.unreachable, "its nodes are shown as unknown")
    nodes = found.items
    if output is Output.json:
        print_json(nodes)
        return
    rows = [
        (
            n.get("name"),
            n.get("health"),
            _yes_no(n, "connected"),
            n.get("scheduling"),
            n.get("vm_count"),
            _usage(n.get("allocated"), n.get("capacity"), "vcpus"),
            _usage(n.get("allocated"), n.get("capacity"), "memory_mb"),
            age(n.get("last_heartbeat")),
        )
        for n in nodes
    ]
    columns = ["NAME", "HEALTH", "CONNECTED", "SCHEDULING", "VMS", "VCPUS", "MEMORY MB", "SEEN"]
    if found.with_cells:
        columns, rows = with_cell(columns, rows, nodes)
    print_table(None, columns, rows)


def _used_free(
    alloc: dict[str, Any] | None, cap: dict[str, Any] | None, free: Any, key: str
) -> str | None:
    used = _usage(alloc, cap, key)
    return None if used is None else f"{used} used, {(free or {}).get(key)} free"


def _with_age(timestamp: Any) -> str | None:
    return f"{timestamp} ({age(timestamp)})" if timestamp else None


def _shutdown_fields(node: dict[str, Any]) -> list[tuple[str, Any]]:
    """Its shutdown policy, and the clean shutdown its agent announced (if any)."""
    from bollard.cli.node_power_cmd import shutdown_line

    if "shutdown_policy_effective" not in node:  # a server before issue 21
        return []
    kind = node.get("shutdown_kind")
    announced = f"{kind}, announced {_with_age(node.get('shutdown_at'))}" if kind else None
    return [("shutdown policy", shutdown_line(node)), ("shutting down", announced)]


@node_app.command("show")
def show(
    name: str = typer.Argument(..., help="Node name.", callback=name_check("node")),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Show one node in detail, and what holds its vCPUs and memory: its VMs (consumer
    vm) and the old copies of resized VMs waiting there for a confirm or revert (consumer
    migration, with the resize's migration id)."""
    with connect() as client:
        node: dict[str, Any] = client.get(f"/nodes/{quote(name, safe='')}")
    if output is Output.json:
        print_json(node)
        return
    cap, alloc, free = node.get("capacity"), node.get("allocated"), node.get("free")
    # The cell only behind an API server with cells (a plain server's nodes name none).
    cell = [("cell", node.get("cell"))] if "cell" in node else []
    print_fields(
        [
            ("name", node.get("name")),
            *cell,
            ("health", node.get("health")),
            ("connected", _yes_no(node, "connected")),
            ("scheduling", node.get("scheduling")),
            *(
                [("maintenance", "on" if node["maintenance"] else "off")]
                if "maintenance" in node
                else []
            ),
            *_shutdown_fields(node),
            ("vms", node.get("vm_count")),
            ("vcpus", _used_free(alloc, cap, free, "vcpus")),
            ("memory_mb", _used_free(alloc, cap, free, "memory_mb")),
            ("driver", node.get("driver")),
            ("last_heartbeat", _with_age(node.get("last_heartbeat"))),
            ("agent_incarnation", node.get("agent_incarnation")),
            ("boot_id", node.get("boot_id")),
            ("created_at", node.get("created_at")),
        ]
    )
    allocations = node.get("allocations")
    if allocations:
        print_table(
            "allocations",
            ["CONSUMER", "VM", "MIGRATION", "VCPUS", "MEMORY MB"],
            [
                (
                    a.get("consumer"),
                    a.get("vm"),
                    a.get("migration_id"),
                    a.get("vcpus"),
                    a.get("memory_mb"),
                )
                for a in allocations
            ],
        )
