"""`bollard migration list|show`: the records of VM moves between nodes (migrations, live
migrations, HA restarts) and of resizes, newest first, as the server keeps them.

A resize's record also says what its source node still holds for it (`source_hold`) while
the VM waits in VERIFY_RESIZE for a confirm or a revert.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import typer

from bollard.cli.cell_cmd import gather, warn_unreachable, with_cell
from bollard.cli.client import connect
from bollard.cli.node_cmd import LIMIT_OPTION
from bollard.cli.output import (
    OUTPUT_OPTION,
    Output,
    console,
    name_check,
    print_fields,
    print_json,
    print_table,
)
from bollard.cli.vm_common import flavor_label, format_size_mb, id_check

migration_app = typer.Typer(
    help="Migration records: every move of a VM between nodes (migration, live-migration, "
    "evacuation: an HA restart) and every resize, with its nodes, status and flavors.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(migration_app, name="migration")


@migration_app.command("list")
def list_migrations(
    vm: str | None = typer.Option(
        None, "--vm", metavar="NAME", help="Only this VM's.", callback=name_check("VM")
    ),
    limit: int | None = LIMIT_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """List migration records, newest first: type, source and destination, status, and for
    a resize its old and new flavor (and the cell, behind an API server with cells)."""
    with connect() as client:
        found = gather(client, "/migrations", limit=limit, params={"vm": vm} if vm else None)
    warn_unreachable(found.unreachable, "its migration records are not listed")
    records = found.items
    if output is Output.json:
        print_json(records)
        return
    if not records:
        _say(f"No migration recorded{f' for {vm}' if vm else ''}.")
        return
    rows = [
        (
            m.get("id"),
            m.get("vm"),
            m.get("type"),
            m.get("source"),
            m.get("dest"),
            m.get("status"),
            flavor_change(m),
            m.get("created_at"),
            m.get("finished_at"),
        )
        for m in records
    ]
    columns = ["ID", "VM", "TYPE", "SOURCE", "DEST", "STATUS", "FLAVOR", "CREATED", "FINISHED"]
    if found.with_cells:
        columns, rows = with_cell(columns, rows, records)
    print_table(None, columns, rows)


@migration_app.command("show")
def show(
    migration_id: str = typer.Argument(
        ...,
        metavar="ID",
        help="Migration id (from `migration list`).",
        callback=id_check("migration"),
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Show one migration record: its nodes, status, task and error; for a resize its old
    and new flavor, and what the source node holds for it until it is confirmed or reverted."""
    with connect() as client:
        record: dict[str, Any] = client.get(f"/migrations/{quote(migration_id, safe='')}")
    if output is Output.json:
        print_json(record)
        return
    task_id = record.get("task_id")
    print_fields(
        [
            ("id", record.get("id")),
            ("vm", f"{record.get('vm')} ({record.get('vm_uuid')})"),
            ("type", record.get("type")),
            ("source", record.get("source")),
            ("dest", record.get("dest")),
            ("status", record.get("status")),
            ("task", f"{task_id} (`bollard task show {task_id}`)" if task_id else None),
            ("old_flavor", flavor_text(record.get("old_flavor"))),
            ("new_flavor", flavor_text(record.get("new_flavor"))),
            ("source_hold", hold_text(record.get("source_hold"))),
            ("error", record.get("error")),
            ("created_at", record.get("created_at")),
            ("updated_at", record.get("updated_at")),
            ("finished_at", record.get("finished_at")),
        ]
    )


def flavor_change(record: dict[str, Any]) -> str | None:
    """'small -> large' for a resize (None for a move, which keeps the VM's flavor)."""
    old, new = record.get("old_flavor"), record.get("new_flavor")
    if old is None and new is None:
        return None
    return f"{flavor_label(old)} -> {flavor_label(new)}"


def flavor_text(flavor: dict[str, Any] | None) -> str | None:
    """'large (4 vCPUs, 8 GiB memory, root disk 40 GiB)'."""
    if flavor is None:
        return None
    vcpus, disk = flavor.get("vcpus"), int(flavor.get("disk_mb") or 0)
    size = [vcpus_text(vcpus)]
    size.append(f"{format_size_mb(int(flavor.get('memory_mb') or 0))} memory")
    if disk:
        size.append(f"root disk {format_size_mb(disk)}")
    return f"{flavor_label(flavor)} ({', '.join(size)})"


def hold_text(hold: dict[str, Any] | None) -> str:
    """What the source node keeps for a resize until it is confirmed or reverted."""
    if not hold:
        return "none"
    return (
        f"{hold.get('node')}: {vcpus_text(hold.get('vcpus'))}, "
        f"{format_size_mb(int(hold.get('memory_mb') or 0))} memory, until confirmed or reverted"
    )


def vcpus_text(vcpus: Any) -> str:
    return f"{vcpus} vCPU{'' if vcpus == 1 else 's'}"


def _say(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True, markup=False)
