"""`bollard sim`: look at the sim fabric directly, and inject faults into it."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from bollard.cli.output import OUTPUT_OPTION, Output, console, fail, print_json, print_table
from bollard.cli.sim_common import (
    DATA_DIR_OPTION,
    FABRIC_OPTION,
    existing_host,
    resolve_fabric_dir,
)
from bollard.cli.sim_node_cmd import node_app
from bollard.cli.sim_power_cmd import power_app
from bollard.cli.sim_scenario_cmd import scenario_app
from bollard.cli.sim_vm_cmd import report_app, vm_app
from bollard.cli.sim_volume_cmd import volume_app
from bollard.domain.states import CommandType

sim_app = typer.Typer(
    help="Inspect the sim fabric: what the simulated hosts really run (not the server's view).",
    no_args_is_help=True,
)
fault_app = typer.Typer(
    help="Inject faults into sim hosts: make a command type fail, hang, lose its answer or "
    "crash the agent.",
    no_args_is_help=True,
)
sim_app.add_typer(fault_app, name="fault")
load_app = typer.Typer(
    help="Set the load a sim host reports in its heartbeats (for tests and demos).",
    no_args_is_help=True,
)
sim_app.add_typer(load_app, name="load")
sim_app.add_typer(power_app, name="power")  # bollard.cli.sim_power_cmd
sim_app.add_typer(node_app, name="node")  # bollard.cli.sim_node_cmd: clean shutdown, reboot
sim_app.add_typer(vm_app, name="vm")  # bollard.cli.sim_vm_cmd: out-of-band changes
sim_app.add_typer(report_app, name="report")  # bollard.cli.sim_vm_cmd
sim_app.add_typer(volume_app, name="volume")  # bollard.cli.sim_volume_cmd: pools' volumes
sim_app.add_typer(scenario_app, name="scenario")  # bollard.cli.sim_scenario_cmd


@sim_app.callback()
def _sim(ctx: typer.Context) -> None:
    """Inspect the sim fabric: what the simulated hosts really run (not the server's view)."""
    _mute_fabric_logs(ctx)


# The sim fabric and the sim power driver log what they change, for the agents' and the
# server's logs. A `bollard sim` command prints its own line for each change, and with no
# logging set up, Python's last-resort handler would print their warnings on stderr too:
# every message twice. They are muted while the command runs (errors still show).
_FABRIC_LOGGERS = ("bollard.sim", "bollard.power")


def _mute_fabric_logs(ctx: typer.Context) -> None:
    loggers = [logging.getLogger(name) for name in _FABRIC_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.ERROR))

    def restore() -> None:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)

    ctx.call_on_close(restore)


def read_fabric(path: Path) -> dict[str, list[dict[str, Any]]]:
    from bollard.sim.fabric import Fabric

    fabric = Fabric(path)
    hosts: list[dict[str, Any]] = []
    vms: list[dict[str, Any]] = []
    # One consistent cut, with the migration phases due by now applied first.
    snapshot = fabric.snapshot()
    for host in fabric.hosts():
        rec = host.record()
        hosts.append(
            {
                "node": host.node,
                "power": rec.power.value if rec else None,
                "boot_id": rec.boot_id if rec else None,
                "vcpus": rec.vcpus if rec else None,
                "memory_mb": rec.memory_mb if rec else None,
                "partitioned": rec.partitioned if rec else None,
            }
        )
        for vm in snapshot.get(host.node, []):
            migration = "incoming" if vm.incoming else "outgoing" if vm.outgoing else None
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
                    "migration": migration,
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
    {"hosts": [{"node", "power", "boot_id", "vcpus", "memory_mb", "partitioned"}],
     "vms": [{"node", "name", "uuid", "power", "vcpus", "memory_mb", "epoch", "acpi",
              "migration"}]}.
    A host whose record is unreadable has null fields; "partitioned" is true while its
    agent is cut off from the server (`bollard sim partition`). "migration" is "incoming" for the
    paused copy a migration in progress brings to a host, "outgoing" for the stopped
    definition a migration past its switchover leaves on the source until its cleanup,
    else null.
    """
    path = resolve_fabric_dir(fabric_dir, data_dir)
    try:
        data = read_fabric(path)
    except OSError as exc:
        fail(f"cannot read sim fabric {path}: {exc}")
    if output == Output.json:
        print_json(data)
        return
    host_power = {
        h["node"]: f"{h['power']} (partitioned)" if h["partitioned"] else h["power"]
        for h in data["hosts"]
    }
    rows: list[list[Any]] = []
    for host in data["hosts"]:
        vms = [vm for vm in data["vms"] if vm["node"] == host["node"]]
        if not vms:
            rows.append([host["node"], host_power[host["node"]], *[None] * 7])
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
                    vm["migration"],
                ]
            )
    columns = ["HOST", "HOST POWER", "VM", "UUID", "POWER", "VCPUS", "MEMORY MB", "EPOCH"]
    columns.append("MIGRATION")
    print_table(None, columns, rows)


class PhaseOption(StrEnum):
    prepare = "prepare"
    transfer = "transfer"
    switchover = "switchover"
    cleanup = "cleanup"


class FaultModeOption(StrEnum):
    fail = "fail"
    hang = "hang"
    delay = "delay"
    drop_answer = "drop-answer"
    crash_agent = "crash-agent"


COMMAND_TYPES = tuple(c.value for c in CommandType)


def _check_command(command: str) -> str:
    valid = COMMAND_TYPES
    if command not in valid:
        fail(f"unknown command type {command!r}; one of: {', '.join(valid)}")
    return command


def fault_rows(path: Path) -> list[dict[str, Any]]:
    from bollard.sim.fabric import Fabric

    rows = []
    for host in Fabric(path).hosts():
        for fault in host.faults.all():
            rows.append(
                {
                    "node": host.node,
                    "command": fault.command,
                    "mode": fault.mode.value,
                    "count": fault.count,
                    "fired": fault.fired,
                    "seconds": fault.seconds,
                    "phase": fault.phase.value if fault.phase else None,
                    "vm": fault.vm,
                    "remaining": fault.remaining,
                    "set_at": fault.set_at,
                }
            )
    return rows


@fault_app.callback()
def _fault() -> None:
    """Inject faults into sim hosts (stored in the fabric; every agent on it obeys)."""


@fault_app.command("set")
def fault_set(
    node: str = typer.Argument(..., help="Sim host the fault applies to."),
    command: str = typer.Option(
        ..., "--command", metavar="TYPE", help=f"Command type: {', '.join(COMMAND_TYPES)}."
    ),
    mode: FaultModeOption = typer.Option(
        ...,
        "--mode",
        help="fail: the operation fails (permanent error). hang: it never completes by "
        "itself (the command times out). delay: it takes --seconds longer. "
        "drop-answer: it runs but its answer is not sent "
        "(the heartbeat's journal sync delivers it). crash-agent: the agent process dies "
        "after journaling PROCESSING, before the hypervisor acts.",
    ),
    count: int = typer.Option(
        1, "--count", min=0, help="How many commands it hits; 0 = until cleared."
    ),
    seconds: float = typer.Option(
        0.0, "--seconds", min=0.0, help="With --mode delay: how much longer the operation takes."
    ),
    phase: PhaseOption | None = typer.Option(
        None,
        "--phase",
        help="With --command migrate --mode fail: the migration phase that fails (default "
        "prepare). Up to switchover the VM stays on the source and the target's copy is "
        "removed; at cleanup the VM runs on the target, the source keeps a stopped "
        "definition, and the answer is a failure.",
    ),
    fabric_dir: Path | None = FABRIC_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
) -> None:
    """Arm a fault for one command type on one sim host (replacing any armed for that type).

    For migrate, the fault is armed on the source host (the one the command goes to).
    """
    from bollard.sim.models import FaultMode, MigrationPhase

    if mode is FaultModeOption.delay and seconds <= 0:
        fail("--mode delay needs --seconds greater than 0")
    if phase is not None and (command != "migrate" or mode is not FaultModeOption.fail):
        fail("--phase is only for --command migrate --mode fail")
    path = resolve_fabric_dir(fabric_dir, data_dir, node=node)
    host = existing_host(path, node)
    fault = host.faults.set(
        _check_command(command),
        FaultMode(mode.value),
        count,
        seconds,
        MigrationPhase(phase.value) if phase is not None else None,
    )
    times = "until cleared" if count == 0 else f"{count} time{'s' if count != 1 else ''}"
    at = f" at {fault.phase.value}" if fault.phase is not None else ""
    console.print(
        f"fault armed on {node}: {fault.command} -> {fault.mode.value}{at} ({times})",
        highlight=False,
    )


@fault_app.command("clear")
def fault_clear(
    node: str = typer.Argument(..., help="Sim host to clear."),
    command: str | None = typer.Option(
        None, "--command", metavar="TYPE", help="Only the fault of this command type."
    ),
    fabric_dir: Path | None = FABRIC_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
) -> None:
    """Disarm the faults of a sim host (all of them, or one command type's)."""
    path = resolve_fabric_dir(fabric_dir, data_dir, node=node)
    host = existing_host(path, node)
    removed = host.faults.clear(None if command is None else _check_command(command))
    plural = "s" if removed != 1 else ""
    console.print(f"{removed} fault{plural} cleared on {node}", highlight=False)


@fault_app.command("list")
def fault_list(
    fabric_dir: Path | None = FABRIC_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Show the armed faults of every sim host.

    With -o json: a list of {"node", "command", "mode", "count", "fired", "seconds",
    "phase", "vm", "remaining", "set_at"}; count 0 and remaining null mean "until
    cleared"; phase is the failing migration phase (null unless set); vm the uuid of the VM
    it is narrowed to (null: every VM's).
    """
    path = resolve_fabric_dir(fabric_dir, data_dir)
    try:
        rows = fault_rows(path)
    except OSError as exc:
        fail(f"cannot read sim fabric {path}: {exc}")
    if output == Output.json:
        print_json(rows)
        return
    table = [
        [r["node"], r["command"], r["mode"], r["fired"], r["remaining"] or "until cleared"]
        for r in rows
    ]
    print_table(None, ["HOST", "COMMAND", "MODE", "FIRED", "REMAINING"], table)


@load_app.callback()
def _load() -> None:
    """Set the load a sim host reports in its heartbeats (for tests and demos)."""


@load_app.command("set")
def load_set(
    node: str = typer.Argument(..., help="Sim host."),
    value: float = typer.Argument(..., min=0.0, help="Runnable work per CPU, e.g. 0.75."),
    fabric_dir: Path | None = FABRIC_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
) -> None:
    """Make a sim host report VALUE as its load, instead of the computed one."""
    host = existing_host(resolve_fabric_dir(fabric_dir, data_dir, node=node), node)
    host.set_load(value)
    console.print(f"{node} reports load {value:g}", highlight=False)


@load_app.command("clear")
def load_clear(
    node: str = typer.Argument(..., help="Sim host."),
    fabric_dir: Path | None = FABRIC_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
) -> None:
    """Report the computed load again: vCPUs of the running VMs over the host's vCPUs."""
    host = existing_host(resolve_fabric_dir(fabric_dir, data_dir, node=node), node)
    host.set_load(None)
    console.print(f"{node} reports its computed load", highlight=False)


@sim_app.command("partition")
def partition(
    node: str = typer.Argument(..., help="Sim host whose agent is cut off from the server."),
    fabric_dir: Path | None = FABRIC_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
) -> None:
    """Cut a sim host's agent off from the server; the host stays on, its VMs keep running.

    The agent closes its connection (within a heartbeat) and does not reconnect until
    `bollard sim heal`; it stops nothing on the host. To the server the node falls silent:
    it is declared dead and fenced. Idempotent.
    """
    from bollard.sim.partition import partition_host

    host = existing_host(resolve_fabric_dir(fabric_dir, data_dir, node=node), node)
    try:
        done = partition_host(host.fabric, node)
    except (LookupError, OSError, TimeoutError) as exc:
        fail(f"cannot partition {node}: {exc}")
    what = "partitioned from the server" if done.changed else "was already partitioned"
    console.print(f"{node} {what}", highlight=False)


@sim_app.command("heal")
def heal(
    node: str = typer.Argument(..., help="Sim host whose partition is lifted."),
    fabric_dir: Path | None = FABRIC_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
) -> None:
    """Lift a sim host's partition: its agent (if running) reconnects by itself. Idempotent."""
    from bollard.sim.partition import heal_host

    host = existing_host(resolve_fabric_dir(fabric_dir, data_dir, node=node), node)
    try:
        done = heal_host(host.fabric, node)
    except (LookupError, OSError, TimeoutError) as exc:
        fail(f"cannot heal {node}: {exc}")
    what = "healed: its agent reconnects" if done.changed else "was not partitioned"
    console.print(f"{node} {what}", highlight=False)
