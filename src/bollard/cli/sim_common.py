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
from bollard.cli.up_cells import CELLS_DIR, cell_fabrics

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


def resolve_fabric_dir(
    fabric_dir: Path | None, data_dir: Path | None, node: str | None = None
) -> Path:
    """--fabric-dir, else --data-dir's fabric, else the fabric of the current `bollard up`.

    A cluster with cells (`bollard up --cells N`) has one fabric per cell: the one of
    ``node``'s cell (by its name, cellK-nodeJ, else by looking for it in each cell's fabric);
    a command without a node (``node`` None) is told to pick a cell with --data-dir."""
    if fabric_dir is not None:
        path = fabric_dir
    else:
        if data_dir is not None:
            root = data_dir
        else:
            ctx = load_context()
            if ctx is None:
                fail(
                    "no sim fabric: pass --fabric-dir or --data-dir, "
                    "or start a cluster with `bollard up`"
                )
            root = Path(ctx.data_dir)
        path = fabric_dir_of(root)
        if not path.is_dir():
            fabrics = cell_fabrics(root)
            if fabrics:
                path = _cell_fabric(root, fabrics, node)
    if not path.is_dir():
        fail(f"sim fabric {path} does not exist")
    return path


def _cell_fabric(root: Path, fabrics: dict[str, Path], node: str | None) -> Path:
    """The fabric of the cell ``node`` is in, for a cluster with cells in ``root``."""
    from bollard.sim.fabric import Fabric

    cells = ", ".join(fabrics)
    if node is None:
        first = next(iter(fabrics))
        fail(
            f"the cluster in {root} has cells ({cells}), each with its own sim fabric: pass "
            f"--data-dir {root / CELLS_DIR / first} (or another cell's)"
        )
    cell = node.partition("-")[0]
    ordered = ([cell] if cell in fabrics else []) + [c for c in fabrics if c != cell]
    for each in ordered:
        if node in Fabric(fabrics[each]).nodes():
            return fabrics[each]
    fail(f"no sim host {node!r} in the sim fabrics of the cells of {root} ({cells})")


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
