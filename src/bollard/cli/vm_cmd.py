"""`bollard vm ...`: create, list, show, power operations and delete."""

from __future__ import annotations

import re
from typing import Any

import typer

from bollard.cli import vm_migrate_cmd, vm_resize_cmd, vnc_cmd
from bollard.cli.cell_cmd import gather, warn_unreachable, with_cell
from bollard.cli.client import connect
from bollard.cli.node_cmd import LIMIT_OPTION
from bollard.cli.output import (
    OUTPUT_OPTION,
    BadName,
    Output,
    err_console,
    name_check,
    print_json,
    print_table,
)
from bollard.cli.vm_common import (
    HA_GROUP_OPTION,
    HA_OPTION,
    HA_PRIORITY_OPTION,
    HA_STATE_OPTION,
    MAX_RELOCATE_OPTION,
    MAX_RESTART_OPTION,
    MIGRATION_METHOD_OPTION,
    NAME_ARGUMENT,
    NODE_LIMIT_OPTION,
    ON_LOST_OPTION,
    SELECTOR_OPTION,
    TIMEOUT_OPTION,
    WAIT_OPTION,
    follow_task,
    meta_body,
    show_vm,
    vm_path,
)
from bollard.domain.models import (
    MAX_DISK_MB,
    MAX_NICS,
    NIC_ATTACHMENT,
    NIC_MODELS,
    normalise_mac,
)
from bollard.domain.storage import DEFAULT_POOL, POOL_NAME

vm_app = typer.Typer(
    help="Virtual machines: create, list, show, start, stop, shutdown, restart, delete, "
    "migrate, move, unmigrate, meta, resize, actions.",
    no_args_is_help=True,
)


_SIZE_UNITS = {"": 1, "m": 1, "mib": 1, "g": 1024, "gib": 1024, "t": 1024**2, "tib": 1024**2}
_SIZE = re.compile(r"\s*(\d+)\s*([a-z]*)\s*", re.IGNORECASE)


def parse_disk_size(value: str) -> int:
    """A disk size as the CLI takes it, in MiB: a plain number is MiB; M/MiB, G/GiB, T/TiB
    (any case) multiply. A bad value is a usage error (exit code 2)."""
    match = _SIZE.fullmatch(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise typer.BadParameter(
            f"{value!r} is not a size: use a number of MiB or one with M, G or T (e.g. 10G)"
        )
    size_mb = int(match.group(1)) * _SIZE_UNITS[unit]
    if not 1 <= size_mb <= MAX_DISK_MB:
        raise typer.BadParameter(f"{value!r}: a disk is 1 MiB to 64 TiB")
    return size_mb


class DiskRequest(dict[str, Any]):
    """A disk as `--disk` gives it, in the body of POST /vms: size_mb, and pool if named."""


_POOL = re.compile(POOL_NAME)


def parse_disk(value: str) -> DiskRequest:
    """`SIZE` or `SIZE@POOL` (e.g. `10G`, `10G@nfs`): the size as :func:`parse_disk_size`
    takes it, and the pool of the disk's volume (left out: the server's default, `local`).
    A bad value is a usage error (exit code 2)."""
    size, at, pool = value.partition("@")
    spec = DiskRequest(size_mb=parse_disk_size(size))
    if at:
        pool = pool.strip()
        if not _POOL.fullmatch(pool):
            raise typer.BadParameter(
                f"{value!r}: after '@' comes a pool name (1 to 63 lower-case letters, digits, "
                "'_' or '-', starting with a letter or digit; `bollard pool list` shows them)"
            )
        spec["pool"] = pool
    return spec


DISK_OPTION = typer.Option(
    None,
    "--disk",
    metavar="SIZE[@POOL]",
    parser=parse_disk,
    help="Add a disk of SIZE (MiB, or e.g. 512M, 10G, 1T), a new empty volume in POOL "
    f"(default: {DEFAULT_POOL}; e.g. 10G@nfs). Repeat for more, in device order vda, vdb, ... "
    "(at most 16). A disk of a local pool lives on the VM's node and moves with migrations, "
    "but an HA restart on another node after a fence gets a new, EMPTY disk (its data is "
    "lost); one of a shared pool is reached by every node of the pool, and an HA restart "
    "keeps its data. "
    "`bollard pool list` shows the pools.",
)


class NicRequest(dict[str, str]):
    """A NIC as `--nic` gives it, in the body of POST /vms: network, bridge or sriov (with
    mode?), model?, mac?."""


_NIC_KEYS = ("network", "bridge", "sriov", "mode", "model", "mac")
_NIC_FORM = (
    "use network=NAME, bridge=NAME or sriov=PHYSNET[,mode=macvtap|hostdev], then optionally "
    ",model=M and ,mac=MAC"
)
_ATTACHMENTS = ("network", "bridge", "sriov")


def parse_nic(value: str) -> NicRequest:
    """`network=NAME`, `bridge=NAME` or `sriov=PHYSNET` (with `,mode=macvtap|hostdev`),
    optionally followed by `,model=M` and/or `,mac=MAC` (e.g. `bridge=br0,model=e1000`). A bad
    spec is a usage error (exit code 2)."""
    from bollard.domain.sriov import SRIOV_MODES  # pydantic models: only here (issue 24)

    spec = NicRequest()
    for part in value.split(","):
        key, sep, item = part.strip().partition("=")
        key, item = key.strip().lower(), item.strip()
        if not sep or key not in _NIC_KEYS or key in spec:
            raise typer.BadParameter(f"{value!r} is not a NIC: {_NIC_FORM}")
        spec[key] = item
    given = [a for a in _ATTACHMENTS if a in spec]
    if len(given) != 1:
        raise typer.BadParameter(
            f"{value!r}: a NIC has one of network=NAME, bridge=NAME or sriov=PHYSNET"
        )
    attachment = given[0]
    if not re.fullmatch(NIC_ATTACHMENT, spec[attachment]):
        raise typer.BadParameter(
            f"{value!r}: a {attachment} name is 1 to 63 letters, digits and _ . : -"
        )
    if "mode" in spec and attachment != "sriov":
        raise typer.BadParameter(f"{value!r}: mode= is only for an SR-IOV NIC (sriov=PHYSNET)")
    if attachment == "sriov" and spec.setdefault("mode", "macvtap") not in SRIOV_MODES:
        raise typer.BadParameter(f"{value!r}: the mode is one of {', '.join(SRIOV_MODES)}")
    if spec.setdefault("model", "virtio") not in NIC_MODELS:
        raise typer.BadParameter(f"{value!r}: the model is one of {', '.join(NIC_MODELS)}")
    if "mac" in spec:
        try:
            spec["mac"] = normalise_mac(spec["mac"])
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return spec


NIC_OPTION = typer.Option(
    None,
    "--nic",
    metavar="SPEC",
    parser=parse_nic,
    help="Add a NIC: network=NAME (a hypervisor network), bridge=NAME (a host bridge) or "
    "sriov=PHYSNET[,mode=macvtap|hostdev] (a free SR-IOV VF of that physical network on the "
    "VM's node; macvtap passthrough by default, hostdev migrates by shutdown only), "
    f"optionally followed by ,model=M ({'/'.join(NIC_MODELS)}; default virtio) and ,mac=MAC "
    f"(default: a free random 52:54:00:xx:xx:xx), e.g. bridge=br0,model=e1000. Repeat for "
    f"more, in order (at most {MAX_NICS}). Each keeps its MAC for the VM's life.",
)


def register(app: typer.Typer) -> None:
    app.add_typer(vm_app, name="vm")


def _pool_check(value: str | None) -> str | None:
    """A typer callback refusing a pool name outside the API's rule (usage error, exit 2)."""
    if value is None or _POOL.fullmatch(value):
        return value
    raise BadName(
        f"{value!r} is not a valid pool name: 1 to 63 lower-case letters, digits, '_' or '-', "
        "starting with a letter or digit"
    )


def _size_body(
    flavor: str | None, vcpus: int | None, memory: int | None, root_pool: str | None
) -> dict[str, Any]:
    """The size of a new VM in the body of POST /vms: its flavor (and the pool of the root
    disk the flavor makes), or vcpus and memory_mb given by hand; exactly one of the two.
    Anything else is a usage error (exit code 2), before any request."""
    if flavor is not None:
        if vcpus is not None or memory is not None:
            raise typer.BadParameter(
                "give either --flavor or --vcpus and --memory, not both: the flavor sets the size"
            )
        body: dict[str, Any] = {"flavor": flavor}
        if root_pool is not None:
            body["root_pool"] = root_pool
        return body
    if root_pool is not None:
        raise typer.BadParameter(
            "--root-pool goes with --flavor: the root disk is the flavor's (without a flavor, "
            "give the disks with --disk SIZE@POOL)"
        )
    if vcpus is None and memory is None:
        raise typer.BadParameter(
            "give the VM's size: --flavor NAME (`bollard flavor list`), or --vcpus and --memory"
        )
    if vcpus is None:
        raise typer.BadParameter("missing option --vcpus")
    if memory is None:
        raise typer.BadParameter("missing option --memory")
    return {"vcpus": vcpus, "memory_mb": memory}


@vm_app.command("create")
def create(
    name: str = NAME_ARGUMENT,
    flavor: str | None = typer.Option(
        None,
        "--flavor",
        metavar="NAME",
        help="Size it by this flavor (`bollard flavor list`): its vCPUs, memory and, if it "
        "has one, its root disk (vda, in --root-pool). The VM keeps a copy of the flavor: "
        "changing or deleting the flavor later does not change the VM. Give either --flavor "
        "or both --vcpus and --memory.",
        callback=name_check("flavor"),
    ),
    vcpus: int | None = typer.Option(
        None, "--vcpus", help="Number of virtual CPUs (with --memory, instead of --flavor)."
    ),
    memory: int | None = typer.Option(
        None,
        "--memory",
        "--memory-mb",
        help="Memory in MB (with --vcpus, instead of --flavor).",
    ),
    root_pool: str | None = typer.Option(
        None,
        "--root-pool",
        metavar="POOL",
        help="With --flavor: the pool of the root disk (vda) the flavor's root disk size "
        f"makes (default: {DEFAULT_POOL}). Disks given with --disk follow it (vdb, ...).",
        callback=_pool_check,
    ),
    node: str | None = typer.Option(
        None,
        "--node",
        help="Place it on this node (default: the scheduler chooses).",
        callback=name_check("node"),
    ),
    cell: str | None = typer.Option(
        None,
        "--cell",
        metavar="NAME",
        help="With cells (an API server): create it in this cell (`bollard cell list`); "
        "default: the cell of --node, else the cell with the most free memory that can take it.",
        callback=name_check("cell"),
    ),
    start: bool = typer.Option(False, "--start", help="Power it on once created."),
    migration_method: str | None = MIGRATION_METHOD_OPTION,
    node_limit: str | None = NODE_LIMIT_OPTION,
    selector: str | None = SELECTOR_OPTION,
    on_lost: str | None = ON_LOST_OPTION,
    ha: str | None = HA_OPTION,
    ha_priority: int | None = HA_PRIORITY_OPTION,
    ha_group: str | None = HA_GROUP_OPTION,
    ha_state: str | None = HA_STATE_OPTION,
    max_restart: str | None = MAX_RESTART_OPTION,
    max_relocate: str | None = MAX_RELOCATE_OPTION,
    disk: list[DiskRequest] | None = DISK_OPTION,
    nic: list[NicRequest] | None = NIC_OPTION,
    count: int = typer.Option(
        1,
        "--count",
        min=1,
        max=100,
        metavar="N",
        help="Create N VMs alike (2 to 100), named NAME-1 .. NAME-N, all or none: if one "
        "name is taken or one does not fit, none is created. With --node all go there; a "
        "--nic with a given MAC is refused. Shows a table of the VMs and their tasks; "
        "--wait waits for every task and exits non-zero naming the VMs that failed.",
    ),
    wait: bool = WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Create a VM (and start it with --start), sized by a flavor (--flavor) or by hand
    (--vcpus and --memory); with --count N, N VMs at once (NAME-1 .. NAME-N)."""
    body: dict[str, Any] = {"name": name, **_size_body(flavor, vcpus, memory, root_pool)}
    body["start"] = start
    if node is not None:
        body["node"] = node
    if cell is not None:
        body["cell"] = cell
    if disk:
        body["disks"] = [dict(spec) for spec in disk]
    if nic:
        body["nics"] = [dict(spec) for spec in nic]
    body.update(
        meta_body(
            migration_method, node_limit, selector, on_lost, ha, ha_priority,
            ha_group=ha_group, ha_state=ha_state, max_restart=max_restart,
            max_relocate=max_relocate,
        )
    )  # fmt: skip
    with connect() as client:
        if count > 1:
            from bollard.cli.vm_batch import create_many

            create_many(client, body, count, wait=wait, timeout=timeout, output=output)
            return
        answer: dict[str, Any] = client.post("/vms", body)
        follow_task(client, answer, wait=wait, timeout=timeout, output=output)


@vm_app.command("list")
def list_vms(limit: int | None = LIMIT_OPTION, output: Output = OUTPUT_OPTION) -> None:
    """List VMs with status, node, power state and size (and cell, behind an API server with
    cells: the VMs of a cell that did not answer are listed as UNKNOWN)."""
    with connect() as client:
        found = gather(client, "/vms", limit=limit)
    warn_unreachable(found.unreachable, "its VMs are shown as UNKNOWN")
    vms = found.items
    if output is Output.json:
        print_json(vms)
        return
    rows = [
        (
            v.get("name"),
            v.get("status"),
            v.get("task_state"),
            v.get("node"),
            v.get("observed_power"),
            v.get("vcpus"),
            v.get("memory_mb"),
        )
        for v in vms
    ]
    columns = ["NAME", "STATUS", "TASK", "NODE", "POWER", "VCPUS", "MEMORY MB"]
    if found.with_cells:
        columns, rows = with_cell(columns, rows, vms)
    print_table(None, columns, rows)


@vm_app.command("show")
def show(name: str = NAME_ARGUMENT, output: Output = OUTPUT_OPTION) -> None:
    """Show one VM: intent (desired power) next to what its host last reported."""
    show_vm(name, output)


@vm_app.command("console-log")
def console_log(
    name: str = NAME_ARGUMENT,
    lines: int = typer.Option(50, "--lines", "-n", min=1, max=10_000, help="Lines of the tail."),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Print the tail of a VM's serial console log, read on the host that runs it (drivers
    with a console only, e.g. libvirt), and where its display (VNC) listens."""
    with connect() as client:
        answer: dict[str, Any] = client.get(f"{vm_path(name)}/console", params={"lines": lines})
    if output is Output.json:
        print_json(answer)
        return
    display = answer.get("display")
    if display:
        where = f"{display.get('listen')}:{display.get('port')}"
        err_console.print(f"display: {display.get('type', 'vnc')} {where}")
    typer.echo(answer["log"], nl=not answer["log"].endswith("\n"))


def _operation(action: str, summary: str) -> None:
    def command(
        name: str = NAME_ARGUMENT,
        wait: bool = WAIT_OPTION,
        timeout: float = TIMEOUT_OPTION,
        output: Output = OUTPUT_OPTION,
    ) -> None:
        with connect() as client:
            if action == "delete":
                answer: dict[str, Any] = client.delete(vm_path(name))
            else:
                answer = client.post(f"{vm_path(name)}/{action}")
            follow_task(client, answer, wait=wait, timeout=timeout, output=output)

    command.__doc__ = summary
    vm_app.command(action)(command)


_operation("start", "Power a VM on.")
_operation("stop", "Power a VM off at once (like pulling the plug).")


@vm_app.command("shutdown")
def shutdown(
    name: str = NAME_ARGUMENT,
    grace: float | None = typer.Option(
        None,
        "--grace",
        metavar="SECONDS",
        help="Force the VM off if the guest has not shut down after this many seconds"
        " (default: the server's).",
    ),
    wait: bool = WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Ask the guest to shut down cleanly (ACPI power button)."""
    body = {"timeout": grace} if grace is not None else {}
    with connect() as client:
        answer: dict[str, Any] = client.post(f"{vm_path(name)}/shutdown", body)
        follow_task(client, answer, wait=wait, timeout=timeout, output=output)


_operation("restart", "Restart a VM.")
_operation("delete", "Delete a VM and its resources on the host.")
# migrate, move, unmigrate and meta, listed after the commands above in `bollard vm --help`.
vm_migrate_cmd.register(vm_app)
vm_resize_cmd.register(vm_app)  # resize (and its confirm or revert), actions
vnc_cmd.register(vm_app)  # vnc: the graphical console for a desktop VNC viewer
