"""`bollard pool ...`: the storage pools volumes live in: create, list, show, update, delete.

A pool is a directory of volume files on the hosts. A **local** pool is a directory each host
has for itself (a volume in it lives on one host, and moves with `volume migrate`); a
**shared** pool is one directory every host of the pool mounts (NFS, a cluster file system):
a volume in it is reachable from each of them, so its VM migrates without copying it.
Pool changes are immediate (no task); only volumes have tasks.
"""

from __future__ import annotations

import posixpath
from typing import Any

import typer

from bollard.cli.cell_cmd import gather, warn_unreachable, with_cell
from bollard.cli.client import connect
from bollard.cli.node_cmd import LIMIT_OPTION, age
from bollard.cli.output import (
    OUTPUT_OPTION,
    Output,
    console,
    fail,
    print_fields,
    print_json,
    print_table,
)
from bollard.cli.storage_common import (
    YES_OPTION,
    amount_text,
    confirm,
    nodes_option,
    pool_check,
    pool_path,
    used_percent,
)
from bollard.domain.storage import PoolType

pool_app = typer.Typer(
    help="Storage pools, the directories volumes live in: create, list, show, update, delete. "
    "A local pool is a directory each host has for itself (a volume in it is on one host); a "
    "shared pool is one directory every host of the pool mounts (a volume in it is reachable "
    "from each, so its VM migrates without copying it).",
    no_args_is_help=True,
)

POOL_ARGUMENT = typer.Argument(
    ..., help="Pool name (lower-case letters, digits, '_', '-').", callback=pool_check
)
DEFAULT_DIR = "each host's default storage directory"
EVERY_NODE = "every node"


def register(app: typer.Typer) -> None:
    app.add_typer(pool_app, name="pool")


@pool_app.command("create")
def create(
    name: str = POOL_ARGUMENT,
    type_: PoolType = typer.Option(
        ...,
        "--type",
        help="local: a directory each host has for itself; a volume in it lives on one host "
        "(moved by `volume migrate`). shared: one directory all the pool's hosts mount (NFS, "
        "a cluster file system); a volume in it is reachable from each of them.",
    ),
    path: str | None = typer.Option(
        None,
        "--path",
        metavar="DIR",
        help="The pool's absolute directory on the hosts (the mount point, for a shared "
        "pool; required there). A local pool without --path uses each host's default "
        "storage directory, where VM disks lived before pools.",
    ),
    node: list[str] | None = nodes_option(
        "A node that has the pool (mounts it, for a shared pool); repeat for more. "
        "Default: every node, present and future."
    ),
    description: str | None = typer.Option(
        None, "--description", metavar="TEXT", help="Free text for people."
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Define a storage pool.

    Hosts make its directory on first use; a shared pool's directory must already be
    mounted on each of its nodes (Bollard does not mount it)."""
    if path is not None and not posixpath.isabs(path):
        fail(f"--path must be an absolute directory, got {path!r}")
    if type_ is PoolType.SHARED and path is None:
        fail("a shared pool needs --path: the directory where every node of the pool mounts it")
    body: dict[str, Any] = {
        "name": name,
        "type": type_.value,
        "path": path,
        "nodes": node or None,
        "description": description,
    }
    with connect() as client:
        pool: dict[str, Any] = client.post("/pools", body)
    if output is Output.json:
        print_json(pool)
        return
    _say(
        f"Pool {pool.get('name')} created: {pool.get('type')}, in {pool.get('path') or DEFAULT_DIR}"
        f", on {_nodes(pool.get('nodes'))}."
    )


@pool_app.command("list")
def list_pools(limit: int | None = LIMIT_OPTION, output: Output = OUTPUT_OPTION) -> None:
    """List pools: type, directory, nodes, volumes, space provisioned and free (and their
    cell, behind an API server with cells: each cell has its own pools)."""
    with connect() as client:
        found = gather(client, "/pools", limit=limit)
    warn_unreachable(found.unreachable, "its pools are not listed")
    pools = found.items
    if output is Output.json:
        print_json(pools)
        return
    rows = [
        (
            p.get("name"),
            p.get("type"),
            p.get("path") or "(default)",
            _nodes(p.get("nodes"), short=True),
            p.get("volumes"),
            amount_text(p.get("provisioned_mb")),
            amount_text(p.get("free_mb")),
            amount_text(p.get("capacity_mb")),
        )
        for p in pools
    ]
    columns = ["NAME", "TYPE", "PATH", "NODES", "VOLUMES", "PROVISIONED", "FREE", "CAPACITY"]
    if found.with_cells:
        columns, rows = with_cell(columns, rows, pools)
    print_table(None, columns, rows)


@pool_app.command("show")
def show(name: str = POOL_ARGUMENT, output: Output = OUTPUT_OPTION) -> None:
    """Show one pool, and what each of its hosts last reported of its space."""
    with connect() as client:
        pool: dict[str, Any] = client.get(pool_path(name))
    if output is Output.json:
        print_json(pool)
        return
    print_fields(
        [
            ("name", pool.get("name")),
            ("type", pool.get("type")),
            ("path", pool.get("path") or DEFAULT_DIR),
            ("nodes", _nodes(pool.get("nodes"))),
            ("description", pool.get("description")),
            ("volumes", pool.get("volumes")),
            ("provisioned", amount_text(pool.get("provisioned_mb"))),
            ("capacity", amount_text(pool.get("capacity_mb")) or "not reported yet"),
            ("free", amount_text(pool.get("free_mb")) or "not reported yet"),
            ("created_at", pool.get("created_at")),
        ]
    )
    hosts = pool.get("hosts") or []
    if not hosts:
        _say("No host has reported on this pool yet.")
        return
    print_table(
        "hosts",
        ["NODE", "CAPACITY", "FREE", "USED", "REPORTED", "ERROR"],
        [
            (
                h.get("node"),
                amount_text(h.get("capacity_mb")),
                amount_text(h.get("free_mb")),
                used_percent(h.get("capacity_mb"), h.get("free_mb")),
                age(h.get("reported_at")),
                h.get("error"),
            )
            for h in hosts
        ],
    )


@pool_app.command("update")
def update(
    name: str = POOL_ARGUMENT,
    node: list[str] | None = nodes_option(
        "The nodes that have the pool from now on (repeat for more); replaces the list."
    ),
    all_nodes: bool = typer.Option(
        False, "--all-nodes", help="Every node has the pool, present and future."
    ),
    description: str | None = typer.Option(
        None, "--description", metavar="TEXT", help="New description ('' removes it)."
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Change which nodes have a pool, or its description (the rest is fixed)."""
    if node and all_nodes:
        fail("give either --node (the list) or --all-nodes, not both")
    body: dict[str, Any] = {}
    if node:
        body["nodes"] = node
    elif all_nodes:
        body["nodes"] = None
    if description is not None:
        body["description"] = description or None
    if not body:
        fail("nothing to change: give --node, --all-nodes or --description")
    with connect() as client:
        pool: dict[str, Any] = client.request("PATCH", pool_path(name), json=body)
    if output is Output.json:
        print_json(pool)
        return
    _say(f"Pool {pool.get('name')} updated: on {_nodes(pool.get('nodes'))}.")


@pool_app.command("delete")
def delete(name: str = POOL_ARGUMENT, yes: bool = YES_OPTION) -> None:
    """Remove a pool's definition (refused while it holds volumes).

    The hosts' directories are left as they are."""
    confirm(f"Delete pool {name}?", f"pool {name} not deleted", yes)
    with connect() as client:
        client.delete(pool_path(name))
    _say(f"Pool {name} deleted.")


def _nodes(nodes: list[str] | None, *, short: bool = False) -> str:
    if nodes is None:
        return "(all)" if short else EVERY_NODE
    if not nodes:
        return "no node"
    return ",".join(nodes) if short else ", ".join(nodes)


def _say(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True, markup=False)
