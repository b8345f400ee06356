"""`bollard volume snapshot create|list|delete|revert`: snapshots of a volume.

A snapshot is kept inside its volume (qcow2's internal snapshots): it is taken, reverted to
and deleted only while no running VM uses the volume. Reverting throws away what the volume
holds now, so it asks first (as deletes do) unless `--yes`.
"""

from __future__ import annotations

from typing import Any

import typer

from bollard.cli.client import connect
from bollard.cli.output import OUTPUT_OPTION, Output, print_json, print_table
from bollard.cli.storage_common import (
    TIMEOUT_OPTION,
    VOLUME_ARGUMENT,
    WAIT_OPTION,
    YES_OPTION,
    change_volume,
    confirm,
    size_text,
    snapshot_check,
    snapshot_path,
)

snapshot_app = typer.Typer(
    help="Snapshots of a volume (qcow2), taken while no running VM uses it: create, list, "
    "delete, revert. `volume create --from-snapshot VOLUME@SNAPSHOT` makes a new volume of one.",
    no_args_is_help=True,
)

SNAPSHOT_ARGUMENT = typer.Argument(..., help="Snapshot name.", callback=snapshot_check)


def register(volume_app: typer.Typer) -> None:
    """Add `snapshot` to `bollard volume` (volume_cmd calls it)."""
    volume_app.add_typer(snapshot_app, name="snapshot")


@snapshot_app.command("create")
def create(
    volume: str = VOLUME_ARGUMENT,
    name: str = SNAPSHOT_ARGUMENT,
    wait: bool = WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Take a snapshot of a volume's content now."""
    change_volume(snapshot_path(volume), {"name": name}, wait, timeout, output)


@snapshot_app.command("list")
def list_snapshots(volume: str = VOLUME_ARGUMENT, output: Output = OUTPUT_OPTION) -> None:
    """List a volume's snapshots, oldest first."""
    with connect() as client:
        page: dict[str, Any] = client.get(snapshot_path(volume))
    snapshots: list[dict[str, Any]] = page.get("items") or []
    if output is Output.json:
        print_json(snapshots)
        return
    rows = [(s.get("name"), size_text(s.get("size_mb")), s.get("created_at")) for s in snapshots]
    print_table(None, ["NAME", "SIZE", "CREATED"], rows)


@snapshot_app.command("delete")
def delete(
    volume: str = VOLUME_ARGUMENT,
    name: str = SNAPSHOT_ARGUMENT,
    yes: bool = YES_OPTION,
    wait: bool = WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Delete a snapshot (the volume's current content is kept)."""
    confirm(
        f"Delete snapshot {name} of volume {volume}?",
        f"snapshot {name} of volume {volume} not deleted",
        yes,
    )
    change_volume(snapshot_path(volume, name), None, wait, timeout, output, method="DELETE")


@snapshot_app.command("revert")
def revert(
    volume: str = VOLUME_ARGUMENT,
    name: str = SNAPSHOT_ARGUMENT,
    yes: bool = YES_OPTION,
    wait: bool = WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Put a volume back to a snapshot's content; what it holds now is lost.

    Take another snapshot first to keep it. The snapshot reverted to stays."""
    confirm(
        f"Revert volume {volume} to snapshot {name}? What it holds now is lost.",
        f"volume {volume} not reverted",
        yes,
    )
    change_volume(f"{snapshot_path(volume, name)}/revert", {}, wait, timeout, output)
