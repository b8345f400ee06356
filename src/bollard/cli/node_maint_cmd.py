"""`bollard node maintenance NODE on|off|status`: per-node maintenance (drain, and no fencing
of the node while it lasts)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import typer

from bollard.cli.client import connect
from bollard.cli.output import OUTPUT_OPTION, Output, console, fail, print_json
from bollard.cli.wait import DEFAULT_WAIT_TIMEOUT, wait_for_task

NODE_ARGUMENT = typer.Argument(..., help="Node name.")
STATES = ("on", "off", "status")


def register(node_app: typer.Typer) -> None:
    node_app.command("maintenance")(maintenance)


def maintenance(
    name: str = NODE_ARGUMENT,
    state: str = typer.Argument(..., help="on, off or status."),
    wait: bool = typer.Option(
        False, "--wait", help="Block until the drain (on) or the return (off) ends."
    ),
    timeout: float = typer.Option(
        DEFAULT_WAIT_TIMEOUT * 4, "--timeout", min=0.0, help="With --wait: give up after this."
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Per-node maintenance. `on`: move the node's VMs away (as `node flush` does; VMs whose
    HA state is ignored or error stay), end in the scheduling state `maintenance`, and never
    fence the node while it lasts (if it dies meanwhile it is only marked dead). `off`: bring
    its VMs back (as `node unflush` does) and make it ready; it may be fenced again. `status`
    shows whether it is in maintenance."""
    if state not in STATES:
        fail(f"maintenance takes on, off or status, not {state!r}")
    path = f"/nodes/{quote(name, safe='')}"
    with connect() as client:
        if state == "status":
            node: dict[str, Any] = client.get(path)
            if output is Output.json:
                print_json({"node": name, "maintenance": node.get("maintenance", False),
                            "scheduling": node.get("scheduling")})  # fmt: skip
            else:
                on = "on" if node.get("maintenance") else "off"
                print(f"{name}: maintenance {on} (scheduling {node.get('scheduling')})")
            return
        task: dict[str, Any] = client.post(f"{path}/maintenance", {"on": state == "on"})
        if wait:
            task = wait_for_task(client, task, timeout=timeout)
    if output is Output.json:
        print_json(task)
        return
    what = "drain" if state == "on" else "return of its VMs"
    if not wait:
        console.print(f"{name}: maintenance {state}; {what}: task {task['id']} "
                      f"(`bollard task wait {task['id']}`)", highlight=False,
                      soft_wrap=True)  # fmt: skip
        return
    progress = (task.get("result") or {}).get("progress") or {}
    ends = "in maintenance" if state == "on" else "ready"
    console.print(f"{name}: maintenance {state}: {what} done ({progress.get('done', 0)} VMs); "
                  f"{name} is {ends}", highlight=False, soft_wrap=True)  # fmt: skip
    for vm, outcome in (progress.get("outcomes") or {}).items():
        console.print(f"  {vm}: {outcome}", highlight=False, soft_wrap=True)
