"""What the `bollard sim` command modules share: the options that find the sim fabric, and
the lookup of a sim host in it.

A leaf of the cli package: it imports no command module, so sim_cmd, sim_power_cmd and
sim_vm_cmd all import it and none of them imports another back.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from bollard.cli.context import fabric_dir_of, load_context
from bollard.cli.output import fail

if TYPE_CHECKING:
    from bollard.sim.fabric import SimHost

FABRIC_OPTION = typer.Option(
    None, "--fabric-dir", metavar="DIR", help="Sim fabric directory (overrides --data-dir)."
)
DATA_DIR_OPTION = typer.Option(
    None,
    "--data-dir",
    metavar="DIR",
    help="Data dir of a cluster started by `bollard up` (its fabric is DIR/fabric).",
)
NODE_ARGUMENT = typer.Argument(..., help="Sim host.")


def resolve_fabric_dir(fabric_dir: Path | None, data_dir: Path | None) -> Path:
    """--fabric-dir, else --data-dir's fabric, else the fabric of the current `bollard up`."""
    if fabric_dir is not None:
        path = fabric_dir
    elif data_dir is not None:
        path = fabric_dir_of(data_dir)
    else:
        ctx = load_context()
        if ctx is None:
            fail(
                "no sim fabric: pass --fabric-dir or --data-dir, "
                "or start a cluster with `bollard up`"
            )
        path = ctx.fabric_dir
    if not path.is_dir():
        fail(f"sim fabric {path} does not exist")
    return path


def existing_host(path: Path, node: str) -> SimHost:
    """Sim host ``node`` of the fabric at ``path``; a one-line error if it has none."""
    from bollard.sim.fabric import Fabric

    fabric = Fabric(path)
    try:
        host = fabric.host(node)
    except ValueError as exc:
        fail(str(exc))
    if host.record() is None:
        known = ", ".join(fabric.nodes()) or "none"
        fail(f"no sim host {node!r} in fabric {path} (hosts: {known})")
    return host
