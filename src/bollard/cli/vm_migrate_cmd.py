"""`bollard vm migrate|move|unmigrate|meta`: moving VMs between nodes, and how they move."""

from __future__ import annotations

from typing import Any

import typer

from bollard.cli.client import connect
from bollard.cli.output import (
    OUTPUT_OPTION,
    Output,
    fail,
    name_check,
    print_fields,
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

TO_OPTION = typer.Option(
    None,
    "--to",
    help="Target node (default: chosen by the VM's or the cluster's selector).",
    callback=name_check("node"),
)
METHOD_OPTION = typer.Option(
    None, "--method", help="live or shutdown (default: the VM's migration method)."
)
FORCE_LIVE_OPTION = typer.Option(
    False, "--force-live", help="Never fall back to a shutdown migration if live migration fails."
)


def _request(
    action: str,
    name: str,
    to: str | None,
    method: str | None,
    force_live: bool,
    wait: bool,
    timeout: float,
    output: Output,
) -> None:
    if method is not None and method not in ("live", "shutdown", "default"):
        fail("--method must be live or shutdown")
    body: dict[str, Any] = {"force_live": force_live}
    if to is not None:
        body["to"] = to
    if method is not None:
        body["method"] = method
    with connect() as client:
        answer: dict[str, Any] = client.post(f"{vm_path(name)}/{action}", body)
        follow_task(client, answer, wait=wait, timeout=timeout, output=output)


def migrate(
    name: str = NAME_ARGUMENT,
    to: str | None = TO_OPTION,
    method: str | None = METHOD_OPTION,
    force_live: bool = FORCE_LIVE_OPTION,
    wait: bool = WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Move a VM to another node for now; it remembers its previous node (see unmigrate).

    A running VM moves live (method live or default), or is shut down, moved and started
    (method shutdown; and method default when live migration fails, unless --force-live).
    A VM with an SR-IOV NIC needs a free VF on the NIC's physical network on the target (it
    takes that VF; its old one is freed once it has moved). A VM with a hostdev SR-IOV NIC
    (PCI passthrough) migrates by shutdown only: --method live and --force-live are refused
    for it, and method default shuts it down, moves and starts it.
    `bollard task show ID` lists the steps and every node the scheduler rejected, with why."""
    _request("migrate", name, to, method, force_live, wait, timeout, output)


def move(
    name: str = NAME_ARGUMENT,
    to: str | None = TO_OPTION,
    method: str | None = METHOD_OPTION,
    force_live: bool = FORCE_LIVE_OPTION,
    wait: bool = WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Move a VM to another node for good (it forgets any previous node)."""
    _request("move", name, to, method, force_live, wait, timeout, output)


def unmigrate(
    name: str = NAME_ARGUMENT,
    method: str | None = METHOD_OPTION,
    force_live: bool = FORCE_LIVE_OPTION,
    wait: bool = WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Send a migrated VM back to its previous node."""
    _request("unmigrate", name, None, method, force_live, wait, timeout, output)


def meta(
    name: str = NAME_ARGUMENT,
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
    output: Output = OUTPUT_OPTION,
) -> None:
    """Change how a VM is migrated, placed, recovered and kept by HA (options left out are
    unchanged). `--ha-state started` on a stopped VM also starts it, `stopped` on a running
    one shuts it down (follow that task with `bollard task wait`)."""
    body = meta_body(
        migration_method, node_limit, selector, on_lost, ha, ha_priority, ha_group=ha_group,
        ha_state=ha_state, max_restart=max_restart, max_relocate=max_relocate,
    )  # fmt: skip
    if not body:
        fail(
            "nothing to change: give --migration-method, --node-limit, --selector, --on-lost,"
            " --ha, --ha-priority, --ha-group, --ha-state, --max-restart or --max-relocate"
        )
    with connect() as client:
        vm: dict[str, Any] = client.request("PATCH", vm_path(name), json=body)
    if output is Output.json:
        print_json(vm)
    else:
        show_vm(name, output)


def register(vm_app: typer.Typer) -> None:
    """Add migrate, move, unmigrate and meta to `bollard vm` (vm_cmd calls it)."""
    vm_app.command("migrate")(migrate)
    vm_app.command("candidates")(candidates)
    vm_app.command("move")(move)
    vm_app.command("unmigrate")(unmigrate)
    vm_app.command("meta")(meta)


def candidates(name: str = NAME_ARGUMENT, output: Output = OUTPUT_OPTION) -> None:
    """Where a migration of the VM would go now, without starting one: the nodes the
    scheduler accepts, best first (the first is its choice), and every node it rejects, with
    why. `vm migrate --to NODE` takes any accepted node."""
    with connect() as client:
        answer: dict[str, Any] = client.get(f"{vm_path(name)}/migrate/candidates")
    if output is Output.json:
        print_json(answer)
        return
    print_fields(
        [("vm", answer.get("vm")), ("selector", answer.get("selector")),
         ("choice", answer.get("chosen") or "none: no node can take it")]
    )  # fmt: skip
    rows: list[tuple[Any, ...]] = [
        (c.get("node"), "candidate", _score(c.get("score"))) for c in answer.get("ranking", [])
    ]
    rows += [(r.get("node"), "rejected", r.get("reason")) for r in answer.get("rejected", [])]
    print_table(None, ["NODE", "VERDICT", "SCORE / REASON"], rows)


def _score(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "unknown" if value is None else str(value)
