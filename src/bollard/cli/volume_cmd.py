"""`bollard volume ...`: volumes (the disks of VMs, in pools): create, list, show, delete,
grow, attach, detach, copy, migrate, and their snapshots (volume_snapshot_cmd).

Every change is a task on the server: the command waits for it by default, showing its
progress, and exits 1 with the task's error if it fails; `--no-wait` returns at once.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import typer

from bollard.cli import volume_snapshot_cmd
from bollard.cli.cell_cmd import gather, warn_unreachable, with_cell
from bollard.cli.client import Client, connect
from bollard.cli.node_cmd import LIMIT_OPTION
from bollard.cli.output import (
    OUTPUT_OPTION,
    Output,
    fail,
    name_check,
    print_fields,
    print_json,
    print_table,
)
from bollard.cli.storage_common import (
    LONG_TIMEOUT_OPTION,
    SIZE_HELP,
    TIMEOUT_OPTION,
    VOLUME_ARGUMENT,
    WAIT_OPTION,
    YES_OPTION,
    SnapshotRef,
    attachment,
    change_volume,
    confirm,
    device_check,
    follow_volume_task,
    node_option,
    parse_size,
    parse_snapshot_ref,
    pool_option,
    size_text,
    snapshot_path,
    volume_path,
)
from bollard.domain.storage import VolumeState

volume_app = typer.Typer(
    help="Volumes, the disks of VMs kept in pools: create, list, show, delete, grow, attach, "
    "detach, copy, migrate, snapshot. Changes wait for their task (--no-wait: return at once).",
    no_args_is_help=True,
)


class VolumeFormat(StrEnum):
    qcow2 = "qcow2"
    raw = "raw"


NODE_HELP = (
    "Local pools: the host whose directory will hold the volume (it can only be attached to "
    "VMs on that host). Leave it out for a shared pool: every host of the pool reaches it."
)


def register(app: typer.Typer) -> None:
    volume_snapshot_cmd.register(volume_app)  # volume snapshot create|list|delete|revert
    app.add_typer(volume_app, name="volume")


@volume_app.command("create")
def create(
    name: str = VOLUME_ARGUMENT,
    size: int | None = typer.Option(
        None,
        "--size",
        metavar="SIZE",
        parser=parse_size,
        help=f"The volume's size: {SIZE_HELP}. Required, except with --from-snapshot "
        "(default: the snapshot's size).",
    ),
    pool: str = pool_option("The pool to create it in (`bollard pool list`)."),
    node: str | None = node_option(NODE_HELP),
    format_: VolumeFormat = typer.Option(
        VolumeFormat.qcow2,
        "--format",
        help="qcow2 (thin: takes space as it is written; has snapshots) or raw (a plain "
        "image file; no snapshots).",
    ),
    from_snapshot: SnapshotRef | None = typer.Option(
        None,
        "--from-snapshot",
        metavar="VOLUME@SNAPSHOT",
        parser=parse_snapshot_ref,
        help="Start as a copy of this snapshot of another volume (e.g. db1@before-upgrade) "
        "instead of empty.",
    ),
    wait: bool = WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Create a volume, empty or from a snapshot."""
    if size is None and from_snapshot is None:
        fail("give the volume's --size (e.g. --size 10G)")
    body: dict[str, Any] = {
        "name": name,
        "size_mb": size,
        "pool": pool,
        "node": node,
        "format": format_.value,
        "from_snapshot": dict(from_snapshot) if from_snapshot else None,
    }
    with connect() as client:
        if from_snapshot is not None and size is None:
            body["size_mb"] = _snapshot_size(client, from_snapshot)
        answer: dict[str, Any] = client.post("/volumes", body)
        follow_volume_task(client, answer, wait=wait, timeout=timeout, output=output)


def _snapshot_size(client: Client, ref: SnapshotRef) -> int:
    """The size of the snapshot a volume is created from (when no --size is given)."""
    page: dict[str, Any] = client.get(snapshot_path(ref["volume"]))
    for snapshot in page.get("items") or []:
        if snapshot.get("name") == ref["snapshot"]:
            return int(snapshot["size_mb"])
    return fail(f"volume {ref['volume']} has no snapshot {ref['snapshot']!r}")


@volume_app.command("list")
def list_volumes(
    pool: str | None = pool_option("Only the volumes of this pool.", required=False),
    node: str | None = node_option("Only the volumes on this node (local pools)."),
    vm: str | None = typer.Option(
        None,
        "--vm",
        metavar="VM",
        help="Only the volumes attached to this VM.",
        callback=name_check("VM"),
    ),
    state: VolumeState | None = typer.Option(
        None,
        "--state",
        help="Only the volumes in this state (ready: in its pool, unused; attached: a disk of "
        "a VM; error: see its fault; the others are changes under way).",
    ),
    limit: int | None = LIMIT_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """List volumes with pool, node, size, state and the VM (and device) using them (and
    their cell, behind an API server with cells)."""
    given = (("pool", pool), ("node", node), ("vm", vm), ("state", state and state.value))
    params: dict[str, str | int] = {key: value for key, value in given if value is not None}
    with connect() as client:
        found = gather(client, "/volumes", limit=limit, params=params)
    warn_unreachable(found.unreachable, "its volumes are not listed")
    volumes = found.items
    if output is Output.json:
        print_json(volumes)
        return
    rows = [
        (
            v.get("name"),
            v.get("pool"),
            v.get("node"),
            size_text(v.get("size_mb")),
            v.get("format"),
            v.get("state"),
            attachment(v),
        )
        for v in volumes
    ]
    columns = ["NAME", "POOL", "NODE", "SIZE", "FORMAT", "STATE", "VM/DEVICE"]
    if found.with_cells:
        columns, rows = with_cell(columns, rows, volumes)
    print_table(None, columns, rows)


@volume_app.command("show")
def show(name: str = VOLUME_ARGUMENT, output: Output = OUTPUT_OPTION) -> None:
    """Show one volume: where it is, what uses it, its lock, snapshots and task."""
    with connect() as client:
        volume: dict[str, Any] = client.get(volume_path(name))
    if output is Output.json:
        print_json(volume)
        return
    lock = volume.get("lock")
    task_id = volume.get("task_id")
    snapshots = volume.get("snapshots")
    print_fields(
        [
            ("name", volume.get("name")),
            ("id", volume.get("id")),
            ("pool", f"{volume.get('pool')} ({volume.get('pool_type') or '?'})"),
            ("node", volume.get("node") or _no_node(volume)),
            ("file", volume.get("file")),
            ("format", volume.get("format")),
            ("size", size_text(volume.get("size_mb"))),
            ("state", volume.get("state")),
            ("attached to", _attached(volume)),
            ("delete_with_vm", "yes" if volume.get("delete_with_vm") else "no"),
            ("lock", _lock(lock) if lock else "none"),
            ("snapshots", _snapshots(name, snapshots)),
            ("task", f"{task_id} (`bollard task show {task_id}`)" if task_id else None),
            ("fault", volume.get("fault")),
            ("created_at", volume.get("created_at")),
            ("updated_at", volume.get("updated_at")),
        ]
    )


def _no_node(volume: dict[str, Any]) -> str | None:
    if volume.get("pool_type") == "shared":
        return "- (shared pool: every host of the pool)"
    return None


def _attached(volume: dict[str, Any]) -> str:
    if not volume.get("vm"):
        return "no VM"
    return f"{volume['vm']} as {volume.get('device') or '?'} (VM {volume.get('vm_uuid')})"


def _lock(lock: dict[str, Any]) -> str:
    return f"held by {lock.get('node')} (epoch {lock.get('epoch')})"


def _snapshots(name: str, count: Any) -> str | None:
    if not isinstance(count, int):
        return None
    if count == 0:
        return "0"
    return f"{count} (`bollard volume snapshot list {name}`)"


@volume_app.command("delete")
def delete(
    name: str = VOLUME_ARGUMENT,
    yes: bool = YES_OPTION,
    wait: bool = WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Delete a volume and its data, snapshots included.

    Refused while it is attached to a VM: detach it first (a VM's own disks go with it)."""
    confirm(f"Delete volume {name} and all its data?", f"volume {name} not deleted", yes)
    change_volume(volume_path(name), None, wait, timeout, output, method="DELETE")


@volume_app.command("grow")
def grow(
    name: str = VOLUME_ARGUMENT,
    size: int = typer.Option(
        ...,
        "--size",
        metavar="SIZE",
        parser=parse_size,
        help=f"The new size (bigger than now; volumes never shrink): {SIZE_HELP}.",
    ),
    wait: bool = WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Make a volume bigger, also while a running VM uses it.

    The guest sees the new size; growing its partitions and file systems is up to it."""
    change_volume(f"{volume_path(name)}/grow", {"size_mb": size}, wait, timeout, output)


@volume_app.command("attach")
def attach(
    name: str = VOLUME_ARGUMENT,
    vm: str = typer.Argument(..., help="The VM to attach it to.", callback=name_check("VM")),
    device: str | None = typer.Option(
        None,
        "--device",
        metavar="vdX",
        help="The VM's disk device for it, vda to vdp (default: the VM's first free one).",
        callback=device_check,
    ),
    wait: bool = WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Attach a volume to a VM as a disk (a local pool's volume: to a VM on its node)."""
    body = {"vm": vm, "device": device}
    change_volume(f"{volume_path(name)}/attach", body, wait, timeout, output)


@volume_app.command("detach")
def detach(
    name: str = VOLUME_ARGUMENT,
    wait: bool = WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Detach a volume from its VM; it stays, ready to be attached again."""
    change_volume(f"{volume_path(name)}/detach", {}, wait, timeout, output)


@volume_app.command("copy")
def copy(
    name: str = VOLUME_ARGUMENT,
    new: str = typer.Argument(..., help="Name of the new volume.", callback=name_check("volume")),
    pool: str = pool_option("The pool of the new volume (may be the same)."),
    node: str | None = node_option(NODE_HELP),
    wait: bool = WAIT_OPTION,
    timeout: float = LONG_TIMEOUT_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Copy a volume's content to a new volume, in any pool and on any node.

    The waiting shows the copy's progress; the output is about the new volume."""
    body = {"name": new, "pool": pool, "node": node}
    change_volume(f"{volume_path(name)}/copy", body, wait, timeout, output)


@volume_app.command("migrate")
def migrate(
    name: str = VOLUME_ARGUMENT,
    pool: str = pool_option("The pool to move it to (its own, to move it to another node)."),
    node: str | None = node_option(NODE_HELP),
    wait: bool = WAIT_OPTION,
    timeout: float = LONG_TIMEOUT_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Move a volume to another pool, or to another node of its local pool.

    It keeps its name; the waiting shows the copy's progress."""
    body = {"pool": pool, "node": node}
    change_volume(f"{volume_path(name)}/migrate", body, wait, timeout, output)
