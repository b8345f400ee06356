"""`bollard vm ...`: create, list, show, power operations and delete."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import typer

from bollard.cli.client import ApiError, Client, connect
from bollard.cli.node_cmd import LIMIT_OPTION
from bollard.cli.output import (
    OUTPUT_OPTION,
    Output,
    console,
    err_console,
    print_fields,
    print_json,
    print_table,
)
from bollard.cli.wait import DEFAULT_WAIT_TIMEOUT, describe, wait_for_task
from bollard.domain.models import (
    MAX_DISK_MB,
    MAX_NICS,
    NIC_ATTACHMENT,
    NIC_MODELS,
    normalise_mac,
)

vm_app = typer.Typer(
    help="Virtual machines: create, list, show, start, stop, shutdown, restart, delete, "
    "migrate, move, unmigrate, meta.",
    no_args_is_help=True,
)

WAIT_OPTION = typer.Option(
    False, "--wait", help="Block until the task ends; exit non-zero if it failed."
)
TIMEOUT_OPTION = typer.Option(
    DEFAULT_WAIT_TIMEOUT,
    "--timeout",
    min=0.0,
    help="With --wait: give up waiting after this many seconds (the task goes on).",
)
NAME_ARGUMENT = typer.Argument(..., help="VM name.")
MIGRATION_METHOD_OPTION = typer.Option(
    None,
    "--migration-method",
    help="default (live, falling back to shutdown migration), live (never falls back) or "
    "shutdown (stop, move, start).",
)
NODE_LIMIT_OPTION = typer.Option(
    None,
    "--node-limit",
    metavar="NODE,NODE",
    help="The only nodes the VM may run on, comma-separated ('' to lift the limit).",
)
SELECTOR_OPTION = typer.Option(
    None,
    "--selector",
    help="How a target node is picked for this VM: mem, memprov, vcpus, load or vms "
    "(default: the cluster's scheduler.selector).",
)
HA_OPTION = typer.Option(
    None,
    "--ha",
    help="restart (restart it on another node when its node is fenced) or none "
    "(default: restart if it is meant to run).",
)
HA_PRIORITY_OPTION = typer.Option(
    None, "--ha-priority", help="Order of recovery after a fence: higher first (default 0)."
)
ON_LOST_OPTION = typer.Option(
    None,
    "--on-lost",
    help="If a migration leaves the VM running nowhere: none (ERROR) or start (start it on "
    "its owner).",
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


def format_size_mb(size_mb: int) -> str:
    """10240 -> '10 GiB', 512 -> '512 MiB' (whole units only)."""
    for unit, factor in (("TiB", 1024**2), ("GiB", 1024)):
        if size_mb % factor == 0:
            return f"{size_mb // factor} {unit}"
    return f"{size_mb} MiB"


DISK_OPTION = typer.Option(
    None,
    "--disk",
    metavar="SIZE",
    parser=parse_disk_size,
    help="Add a local disk of SIZE (MiB, or e.g. 512M, 10G, 1T); repeat for more, in device "
    "order vda, vdb, ... (at most 16). Hosts create them empty; they move with migrations, but "
    "an HA restart on another node after a fence gets new, EMPTY disks (the data is lost).",
)


class NicSpec(dict[str, str]):
    """A NIC as `--nic` gives it, in the body of POST /vms: network or bridge, model?, mac?."""


_NIC_KEYS = ("network", "bridge", "model", "mac")
_NIC_FORM = "use network=NAME or bridge=NAME, then optionally ,model=M and ,mac=MAC"


def parse_nic(value: str) -> NicSpec:
    """`network=NAME` or `bridge=NAME`, optionally followed by `,model=M` and/or `,mac=MAC`
    (e.g. `bridge=br0,model=e1000`). A bad spec is a usage error (exit code 2)."""
    spec = NicSpec()
    for part in value.split(","):
        key, sep, item = part.strip().partition("=")
        key, item = key.strip().lower(), item.strip()
        if not sep or key not in _NIC_KEYS or key in spec:
            raise typer.BadParameter(f"{value!r} is not a NIC: {_NIC_FORM}")
        spec[key] = item
    if ("network" in spec) == ("bridge" in spec):
        raise typer.BadParameter(f"{value!r}: a NIC has either network=NAME or bridge=NAME")
    attachment = "network" if "network" in spec else "bridge"
    if not re.fullmatch(NIC_ATTACHMENT, spec[attachment]):
        raise typer.BadParameter(
            f"{value!r}: a {attachment} name is 1 to 63 letters, digits and _ . : -"
        )
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
    help="Add a NIC: network=NAME (a hypervisor network) or bridge=NAME (a host bridge), "
    f"optionally followed by ,model=M ({'/'.join(NIC_MODELS)}; default virtio) and ,mac=MAC "
    f"(default: a free random 52:54:00:xx:xx:xx), e.g. bridge=br0,model=e1000. Repeat for "
    f"more, in order (at most {MAX_NICS}). Each keeps its MAC for the VM's life.",
)


def meta_body(
    migration_method: str | None,
    node_limit: str | None,
    selector: str | None,
    on_lost: str | None,
    ha: str | None = None,
    ha_priority: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if ha is not None:
        body["ha"] = ha
    if ha_priority is not None:
        body["ha_priority"] = ha_priority
    if migration_method is not None:
        body["migration_method"] = migration_method
    if node_limit is not None:
        body["node_limit"] = [n.strip() for n in node_limit.split(",") if n.strip()]
    if selector is not None:
        body["node_selector"] = selector
    if on_lost is not None:
        body["on_lost"] = on_lost
    return body


def register(app: typer.Typer) -> None:
    from bollard.cli import vm_migrate_cmd  # adds migrate, move, unmigrate and meta

    assert vm_migrate_cmd.migrate.__name__ == "migrate"
    app.add_typer(vm_app, name="vm")


def vm_path(name: str) -> str:
    return f"/vms/{quote(name, safe='')}"


@vm_app.command("create")
def create(
    name: str = NAME_ARGUMENT,
    vcpus: int = typer.Option(..., "--vcpus", help="Number of virtual CPUs."),
    memory: int = typer.Option(..., "--memory", "--memory-mb", help="Memory in MB."),
    node: str | None = typer.Option(
        None, "--node", help="Place it on this node (default: the scheduler chooses)."
    ),
    start: bool = typer.Option(False, "--start", help="Power it on once created."),
    migration_method: str | None = MIGRATION_METHOD_OPTION,
    node_limit: str | None = NODE_LIMIT_OPTION,
    selector: str | None = SELECTOR_OPTION,
    on_lost: str | None = ON_LOST_OPTION,
    ha: str | None = HA_OPTION,
    ha_priority: int | None = HA_PRIORITY_OPTION,
    disk: list[int] | None = DISK_OPTION,
    nic: list[NicSpec] | None = NIC_OPTION,
    wait: bool = WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Create a VM (and start it with --start)."""
    body: dict[str, Any] = {"name": name, "vcpus": vcpus, "memory_mb": memory, "start": start}
    if node is not None:
        body["node"] = node
    if disk:
        body["disks"] = [{"size_mb": size_mb} for size_mb in disk]
    if nic:
        body["nics"] = [dict(spec) for spec in nic]
    body.update(meta_body(migration_method, node_limit, selector, on_lost, ha, ha_priority))
    with connect() as client:
        answer: dict[str, Any] = client.post("/vms", body)
        _follow(client, answer, wait=wait, timeout=timeout, output=output)


def _follow(
    client: Client, answer: dict[str, Any], *, wait: bool, timeout: float, output: Output
) -> None:
    """After an accepted operation: wait for its task, or say how to follow it."""
    task: dict[str, Any] = answer["task"]
    vm: dict[str, Any] | None = answer.get("vm")
    name = str(task.get("vm") or (vm or {}).get("name"))
    if not wait:
        if output is Output.json:
            print_json(answer)
            return
        console.print(
            f"{describe(task)} accepted: {task.get('state')}", highlight=False, soft_wrap=True
        )
        console.print(
            f"Follow it with `bollard task wait {task.get('id')}` or `bollard vm show {name}`.",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
        return
    task = wait_for_task(client, task, timeout=timeout)
    try:
        vm = client.get(vm_path(name))
    except ApiError as exc:
        if exc.status != 404:
            raise
        vm = None  # deleted
    if output is Output.json:
        print_json({"vm": vm, "task": task})
        return
    if vm is None:
        console.print(
            f"{describe(task)} succeeded; {name} is gone.", highlight=False, soft_wrap=True
        )
    else:
        console.print(
            f"{describe(task)} succeeded; {name} is {vm.get('status')}"
            f" on {vm.get('node') or 'no node'}.",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )


@vm_app.command("list")
def list_vms(limit: int | None = LIMIT_OPTION, output: Output = OUTPUT_OPTION) -> None:
    """List VMs with status, node, power state and size."""
    with connect() as client:
        vms = client.list_all("/vms", limit=limit)
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
    print_table(None, ["NAME", "STATUS", "TASK", "NODE", "POWER", "VCPUS", "MEMORY MB"], rows)


@vm_app.command("show")
def show(name: str = NAME_ARGUMENT, output: Output = OUTPUT_OPTION) -> None:
    """Show one VM: intent (desired power) next to what its host last reported."""
    with connect() as client:
        vm: dict[str, Any] = client.get(vm_path(name))
    if output is Output.json:
        print_json(vm)
        return
    print_fields(
        [
            ("name", vm.get("name")),
            ("uuid", vm.get("uuid")),
            ("status", vm.get("status")),
            ("node", vm.get("node")),
            ("vm_state", vm.get("vm_state")),
            ("task_state", vm.get("task_state")),
            ("task_id", vm.get("task_id")),
            ("power (desired | host)", _side(vm.get("desired_power"), vm.get("observed_power"))),
            ("vcpus (record | host)", _side(vm.get("vcpus"), vm.get("observed_vcpus"))),
            ("memory_mb (record | host)", _side(vm.get("memory_mb"), vm.get("observed_memory_mb"))),
            ("observed_at", vm.get("observed_at")),
            ("observed_seq", vm.get("observed_seq")),
            ("host last reported", _reported(vm)),
            ("epoch", vm.get("epoch")),
            ("previous_node", vm.get("previous_node")),
            ("ha", f"{vm.get('ha')} (priority {vm.get('ha_priority')})"),
            ("autostart", "yes" if vm.get("autostart") else None),
            ("migration_method", vm.get("migration_method")),
            ("node_limit", ",".join(vm.get("node_limit") or []) or None),
            ("node_selector", vm.get("node_selector")),
            ("on_lost", vm.get("on_lost")),
            ("disks", _disks(vm.get("disks"))),
            ("nics", _nics(vm.get("nics"))),
            ("fault", vm.get("fault")),
            ("created_at", vm.get("created_at")),
            ("updated_at", vm.get("updated_at")),
        ]
    )


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


def _side(record: Any, host: Any) -> str:
    shown = "-" if host is None else str(host)
    same = host is None or host == record or (record, host) == ("running", "paused")
    return f"{record} | {shown}" + ("" if same else "   <- differs")


def _disks(disks: list[dict[str, Any]] | None) -> str:
    """'vda 10 GiB, vdb 512 MiB', or 'none'."""
    shown = [f"{d.get('device')} {format_size_mb(int(d.get('size_mb') or 0))}" for d in disks or []]
    return ", ".join(shown) or "none"


def _nics(nics: list[dict[str, Any]] | None) -> str:
    """'52:54:00:12:34:56 bridge=br0 virtio; 52:54:00:ab:cd:ef network=default e1000', or
    'none'."""
    shown = []
    for n in nics or []:
        on = f"network={n['network']}" if n.get("network") else f"bridge={n.get('bridge')}"
        shown.append(f"{n.get('mac')} {on} {n.get('model')}")
    return "; ".join(shown) or "none"


def _reported(vm: dict[str, Any]) -> str | None:
    """When the owner host last reported, and how long ago (from the server's clock)."""
    at = vm.get("reported_at")
    if not at:
        return None
    try:
        when = datetime.fromisoformat(str(at))
    except ValueError:
        return str(at)
    age = (datetime.now(UTC) - when).total_seconds()
    return f"{at} ({age:.1f} s ago)"


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
            _follow(client, answer, wait=wait, timeout=timeout, output=output)

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
        _follow(client, answer, wait=wait, timeout=timeout, output=output)


_operation("restart", "Restart a VM.")
_operation("delete", "Delete a VM and its resources on the host.")
