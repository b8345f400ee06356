"""`bollard sim`: look at (and, later, inject faults into) the sim fabric directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from bollard.cli.context import fabric_dir_of, load_context
from bollard.cli.output import OUTPUT_OPTION, Output, fail, print_json, print_table

sim_app = typer.Typer(
    help="Inspect the sim fabric: what the simulated hosts really run (not the server's view).",
    no_args_is_help=True,
)

FABRIC_OPTION = typer.Option(
    None, "--fabric-dir", metavar="DIR", help="Sim fabric directory (overrides --data-dir)."
)
DATA_DIR_OPTION = typer.Option(
    None,
    "--data-dir",
    metavar="DIR",
    help="Data dir of a cluster started by `bollard up` (its fabric is DIR/fabric).",
)


@sim_app.callback()
def _sim() -> None:
    """Inspect the sim fabric: what the simulated hosts really run (not the server's view)."""


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


def read_fabric(path: Path) -> dict[str, list[dict[str, Any]]]:
    from bollard.sim.fabric import Fabric

    fabric = Fabric(path)
    hosts: list[dict[str, Any]] = []
    vms: list[dict[str, Any]] = []
    for host in fabric.hosts():
        rec = host.record()
        hosts.append(
            {
                "node": host.node,
                "power": rec.power.value if rec else None,
                "boot_id": rec.boot_id if rec else None,
                "vcpus": rec.vcpus if rec else None,
                "memory_mb": rec.memory_mb if rec else None,
            }
        )
        for vm in host.list_vms():
            vms.append(
                {
                    "node": host.node,
                    "name": vm.name,
                    "uuid": vm.uuid,
                    "power": vm.power.value,
                    "vcpus": vm.vcpus,
                    "memory_mb": vm.memory_mb,
                    "epoch": vm.epoch,
                    "acpi": vm.acpi,
                }
            )
    return {"hosts": hosts, "vms": vms}


@sim_app.command("list")
def list_(
    fabric_dir: Path | None = FABRIC_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Show every sim host and the VMs it really has, read straight from the fabric.

    With -o json the output is one object:
    {"hosts": [{"node", "power", "boot_id", "vcpus", "memory_mb"}],
     "vms": [{"node", "name", "uuid", "power", "vcpus", "memory_mb", "epoch", "acpi"}]}.
    A host whose record is unreadable has null fields.
    """
    path = resolve_fabric_dir(fabric_dir, data_dir)
    try:
        data = read_fabric(path)
    except OSError as exc:
        fail(f"cannot read sim fabric {path}: {exc}")
    if output == Output.json:
        print_json(data)
        return
    host_power = {h["node"]: h["power"] for h in data["hosts"]}
    rows: list[list[Any]] = []
    for host in data["hosts"]:
        vms = [vm for vm in data["vms"] if vm["node"] == host["node"]]
        if not vms:
            rows.append([host["node"], host["power"], None, None, None, None, None, None])
        for vm in vms:
            rows.append(
                [
                    vm["node"],
                    host_power[vm["node"]],
                    vm["name"],
                    vm["uuid"],
                    vm["power"],
                    vm["vcpus"],
                    vm["memory_mb"],
                    vm["epoch"],
                ]
            )
    columns = ["HOST", "HOST POWER", "VM", "UUID", "POWER", "VCPUS", "MEMORY MB", "EPOCH"]
    print_table(None, columns, rows)
