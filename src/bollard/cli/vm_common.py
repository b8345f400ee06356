"""What the `bollard vm` command modules share: the options of VM operations, the request
helpers (a VM's path, the body of its placement and recovery settings, following the task an
operation started, the check of request and migration ids) and the display of one VM (with
its flavor and its open resize).

A leaf of the cli package: it imports no command module, so vm_cmd, vm_migrate_cmd,
vm_resize_cmd and migration_cmd import it and none imports another back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import typer

from bollard.cli.client import ApiError, Client, connect
from bollard.cli.output import (
    BadName,
    Output,
    console,
    name_check,
    print_fields,
    print_json,
    print_table,
)
from bollard.cli.wait import DEFAULT_WAIT_TIMEOUT, describe, wait_for_task

WAIT_OPTION = typer.Option(
    False, "--wait", help="Block until the task ends; exit non-zero if it failed."
)
TIMEOUT_OPTION = typer.Option(
    DEFAULT_WAIT_TIMEOUT,
    "--timeout",
    min=0.0,
    help="With --wait: give up waiting after this many seconds (the task goes on).",
)
VERIFY_RESIZE = "VERIFY_RESIZE"  # the status of a resized VM waiting for confirm or revert
NAME_ARGUMENT = typer.Argument(..., help="VM name.", callback=name_check("VM"))
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
    help="How a target node is picked for this VM: mem, memprov, vcpus, load, vms or static "
    "(lowest vCPU + memory fraction of every VM placed) (default: the cluster's "
    "scheduler.selector).",
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
HA_GROUP_OPTION = typer.Option(
    None,
    "--ha-group",
    metavar="GROUP",
    help="Its HA group (`bollard ha group list`): it runs on the group's highest-priority "
    "available node ('' takes it out).",
)
HA_STATE_OPTION = typer.Option(
    None,
    "--ha-state",
    help="started (HA keeps it running: a stopped VM is started), stopped (HA keeps it "
    "stopped: a running VM is shut down), disabled (not HA) or ignored (HA never touches it). "
    "Setting one clears the error state and the restart and relocate counts.",
)
MAX_RESTART_OPTION = typer.Option(
    None,
    "--max-restart",
    metavar="N|default",
    help="Failed starts retried on its node before it is moved to another (0..100; "
    "default: the setting ha.max_restart).",
)
MAX_RELOCATE_OPTION = typer.Option(
    None,
    "--max-relocate",
    metavar="N|default",
    help="Moves to another node after failed starts before it is left in the error state "
    "(0..100; default: the setting ha.max_relocate).",
)
HA_STATES = ("started", "stopped", "disabled", "ignored")
ON_LOST_OPTION = typer.Option(
    None,
    "--on-lost",
    help="If a migration leaves the VM running nowhere: none (ERROR) or start (start it on "
    "its owner).",
)


def vm_path(name: str) -> str:
    return f"/vms/{quote(name, safe='')}"


def meta_body(
    migration_method: str | None,
    node_limit: str | None,
    selector: str | None,
    on_lost: str | None,
    ha: str | None = None,
    ha_priority: int | None = None,
    *,
    ha_group: str | None = None,
    ha_state: str | None = None,
    max_restart: str | None = None,
    max_relocate: str | None = None,
) -> dict[str, Any]:
    """The settings given (not None) as the body of a VM's create or PATCH request."""
    body: dict[str, Any] = {}
    if ha_group is not None:
        body["ha_group"] = ha_group.strip()
    if ha_state is not None:
        if ha_state not in HA_STATES:
            raise typer.BadParameter(
                f"--ha-state: {ha_state!r} is not one of {', '.join(HA_STATES)}"
            )
        body["ha_state"] = ha_state
    for key, value in (("max_restart", max_restart), ("max_relocate", max_relocate)):
        if value is not None:
            body[key] = ha_limit(key, value)
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


def ha_limit(key: str, value: str) -> int | None:
    """`--max-restart` / `--max-relocate`: a whole number 0..100, or `default` (None: the
    setting's)."""
    if value.strip().lower() == "default":
        return None
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not 0 <= number <= 100:
        option = "--" + key.replace("_", "-")
        raise typer.BadParameter(f"{option}: {value!r} is not 0..100 or default")
    return number


def ha_line(vm: dict[str, Any]) -> str | None:
    """'started, group web (restarts 0/default, relocates 1/2)' for `vm show`."""
    if "ha_state" not in vm:
        return None  # a server before HA policies
    group = f", group {vm['ha_group']}" if vm.get("ha_group") else ""

    def limit(done: Any, own: Any) -> str:
        return f"{done or 0}/{'default' if own is None else own}"

    counts = (
        f"restarts {limit(vm.get('ha_restarts'), vm.get('max_restart'))}, "
        f"relocates {limit(vm.get('ha_relocates'), vm.get('max_relocate'))}"
    )
    return f"{vm.get('ha_state')}{group} ({counts})"


def follow_task(
    client: Client, answer: dict[str, Any], *, wait: bool, timeout: float, output: Output
) -> dict[str, Any] | None:
    """After an accepted operation: wait for its task, or say how to follow it. Returns the
    VM as it is once the task succeeded (None: not waited for, or the VM is gone)."""
    task: dict[str, Any] = answer["task"]
    vm: dict[str, Any] | None = answer.get("vm")
    name = str(task.get("vm") or (vm or {}).get("name"))
    if not wait:
        if output is Output.json:
            print_json(answer)
            return None
        console.print(
            f"{describe(task)} accepted: {task.get('state')}", highlight=False, soft_wrap=True
        )
        console.print(
            f"Follow it with `bollard task wait {task.get('id')}` or `bollard vm show {name}`.",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
        return None
    task = wait_for_task(client, task, timeout=timeout)
    try:
        vm = client.get(vm_path(name))
    except ApiError as exc:
        if exc.status != 404:
            raise
        vm = None  # deleted
    if output is Output.json:
        print_json({"vm": vm, "task": task})
        return vm
    # How it went, when the task says (a migration: live, or by shutdown and for how long).
    summary = (task.get("result") or {}).get("summary")
    done = f"{describe(task)} succeeded" + (f": {summary}" if isinstance(summary, str) else "")
    if vm is None:
        console.print(f"{done}; {name} is gone.", highlight=False, soft_wrap=True, markup=False)
    else:
        console.print(
            f"{done}; {name} is {vm.get('status')} on {vm.get('node') or 'no node'}.",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
    return vm


def show_vm(name: str, output: Output) -> None:
    """Show one VM: intent (desired power) next to what its host last reported; then, when
    the server says which volume each disk is (servers with storage pools), a table of the
    disks with their volume, pool and state."""
    with connect() as client:
        vm: dict[str, Any] = client.get(vm_path(name))
    if output is Output.json:
        print_json(vm)
        return
    # The cell only behind an API server with cells (a plain server's VMs name none).
    cell = [("cell", vm.get("cell"))] if "cell" in vm else []
    print_fields(
        [
            ("name", vm.get("name")),
            ("uuid", vm.get("uuid")),
            ("status", vm.get("status")),
            ("node", vm.get("node")),
            *cell,
            ("vm_state", vm.get("vm_state")),
            ("task_state", vm.get("task_state")),
            ("task_id", vm.get("task_id")),
            # (a server before flavors sends no "flavor": nothing to say then)
            ("flavor", flavor_label(vm["flavor"]) if "flavor" in vm else None),
            ("resize", resize_line(vm)),
            ("power (desired | host)", _side(vm.get("desired_power"), vm.get("observed_power"))),
            ("vcpus (record | host)", _side(vm.get("vcpus"), vm.get("observed_vcpus"))),
            ("memory_mb (record | host)", _side(vm.get("memory_mb"), vm.get("observed_memory_mb"))),
            ("observed_at", vm.get("observed_at")),
            ("observed_seq", vm.get("observed_seq")),
            ("host last reported", _reported(vm)),
            ("epoch", vm.get("epoch")),
            ("previous_node", vm.get("previous_node")),
            ("ha", f"{vm.get('ha')} (priority {vm.get('ha_priority')})"),
            ("ha_state", ha_line(vm)),
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
    disks = vm.get("disks") or []
    if any(d.get(key) is not None for d in disks for key in _VOLUME_KEYS):
        print_table(
            "disks",
            ["DEVICE", "SIZE", "VOLUME", "POOL", "STATE"],
            [
                (
                    d.get("device"),
                    format_size_mb(int(d.get("size_mb") or 0)),
                    d.get("volume"),
                    d.get("pool"),
                    d.get("state"),
                )
                for d in disks
            ],
        )


def flavor_label(flavor: dict[str, Any] | None) -> str:
    """The name of the flavor a VM (or a resize) recorded, or "custom": a size given by hand
    (no flavor, or a recorded flavor without a name)."""
    name = (flavor or {}).get("name")
    return str(name) if name else "custom"


def resize_line(vm: dict[str, Any]) -> str | None:
    """The VM's open resize, for people: ``node1 -> node2, small -> large flavor (finished);
    confirm or revert with ...`` (the hint while it waits for one); None: no open resize."""
    resize = vm.get("resize")
    if not isinstance(resize, dict):
        return None
    error = resize.get("error")  # a confirm or revert that failed (either may be asked again)
    line = (
        f"{resize.get('source') or '-'} -> {resize.get('dest') or '-'}, "
        f"{flavor_label(resize.get('old_flavor'))} -> {flavor_label(resize.get('new_flavor'))} "
        f"flavor ({resize.get('status')}{f': {error}' if error else ''})"
    )
    if vm.get("status") == VERIFY_RESIZE or resize.get("status") == "finished":
        line += f"; confirm or revert with `bollard vm resize {vm.get('name')} --confirm|--revert`"
    return line


# A request id (`req-<uuid>`, naming a VM's action) or a migration record's id, as the API
# takes them (no leading '.': an id must not name another path).
_ID_RULE = re.compile(r"[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,67}")


def id_check(kind: str) -> Callable[[str | None], str | None]:
    """A typer callback refusing a ``kind`` id (e.g. "request") outside the API's rule: a
    usage error (exit code 2) before any request."""

    def check(value: str | None) -> str | None:
        if value is None or _ID_RULE.fullmatch(value):
            return value
        raise BadName(
            f"{value!r} is not a valid {kind} id: 1 to 68 letters, digits, '_', ':', '.' or '-',"
            " not starting with '.'"
        )

    return check


# What a server with volumes adds to each of a VM's disks: `vm show` then lists them as a table.
_VOLUME_KEYS = frozenset({"volume", "pool", "state"})


def format_size_mb(size_mb: int) -> str:
    """10240 -> '10 GiB', 512 -> '512 MiB' (whole units only)."""
    for unit, factor in (("TiB", 1024**2), ("GiB", 1024)):
        if size_mb % factor == 0:
            return f"{size_mb // factor} {unit}"
    return f"{size_mb} MiB"


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
        if n.get("sriov"):
            on = f"sriov={n['sriov']} {n.get('mode') or 'macvtap'}"
        elif n.get("network"):
            on = f"network={n['network']}"
        else:
            on = f"bridge={n.get('bridge')}"
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
