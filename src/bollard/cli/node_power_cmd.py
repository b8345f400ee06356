"""`bollard node set|power|confirm-down` and `bollard cluster maintenance`: fencing controls."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer

from bollard.cli.client import connect
from bollard.cli.output import OUTPUT_OPTION, Output, console, fail, print_fields, print_json
from bollard.cli.wait import DEFAULT_WAIT_TIMEOUT, wait_for_task

NODE_ARGUMENT = typer.Argument(..., help="Node name.")
cluster_app = typer.Typer(help="Cluster-wide switches.", no_args_is_help=True)


def _node(name: str) -> str:
    return f"/nodes/{quote(name, safe='')}"


def set_node(
    name: str = NODE_ARGUMENT,
    power_driver: str | None = typer.Option(
        None, "--power-driver", help="sim, ipmi or redfish; 'none' removes the driver."
    ),
    power_address: str | None = typer.Option(
        None,
        "--power-address",
        help="BMC host[:port] (ipmi), Redfish base URL (redfish), or the sim node name (sim).",
    ),
    power_username: str | None = typer.Option(None, "--power-username", help="BMC user."),
    power_password_file: Path | None = typer.Option(
        None,
        "--power-password-file",
        help="File holding the BMC password (never give a password on the command line).",
    ),
    store_untested: bool = typer.Option(
        False,
        "--store-untested",
        help="Store the driver even if its test fails (it is then marked not verified).",
    ),
    shutdown_policy: str | None = typer.Option(
        None,
        "--shutdown-policy",
        metavar="POLICY",
        help="What a clean shutdown or reboot of the host does: freeze (its VMs wait for it: "
        "no fence, no recovery), failover (fenced and its HA VMs recovered once it reads off), "
        "migrate (its VMs move away first, and back when it returns), conditional (freeze on a "
        "reboot, failover on a power-off); 'default': the setting ha.shutdown_policy.",
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Set a node's power (fencing) driver, or its shutdown policy. A power driver is tested,
    then stored (credentials encrypted); a failed test stores nothing, unless
    --store-untested."""
    if power_driver is None and shutdown_policy is None:
        fail("nothing to set: give --power-driver (and --power-address), or --shutdown-policy")
    policy_line: list[tuple[str, Any]] = []
    if shutdown_policy is not None:
        policy = shutdown_policy.strip().lower()
        if policy not in SHUTDOWN_POLICIES:
            fail(
                f"--shutdown-policy: {shutdown_policy!r} is not one of "
                + ", ".join(SHUTDOWN_POLICIES)
            )
        with connect() as client:
            change = {"shutdown_policy": None if policy == "default" else policy}
            node: dict[str, Any] = client.request("PATCH", _node(name), json=change)
        policy_line = [("shutdown policy", shutdown_line(node))]
        if power_driver is None:
            if output is Output.json:
                print_json(node)
                return
            print_fields([("node", node["name"]), *policy_line])
            return
    assert power_driver is not None
    body: dict[str, Any] = {"driver": None if power_driver == "none" else power_driver}
    if store_untested:
        body["store_untested"] = True
    if power_address is not None:
        body["address"] = power_address
    if power_username is not None:
        body["username"] = power_username
    if power_password_file is not None:
        try:
            body["password"] = power_password_file.read_text().strip()
        except OSError as exc:
            fail(f"cannot read {power_password_file}: {exc.strerror or exc}")
    with connect() as client:
        node = client.request("PUT", f"{_node(name)}/power", json=body)
    if output is Output.json:
        print_json(node)
        return
    power = node.get("power") or {}
    tested = node.get("power_test") or {}
    verdict = None
    if tested:
        verdict = (
            f"passed ({tested.get('detail')})"
            if tested.get("verified")
            else f"FAILED, stored untested (NOT verified): {tested.get('detail')}"
        )
    print_fields(
        [
            ("node", node["name"]),
            ("power driver", power.get("driver")),
            ("power address", power.get("address")),
            ("credentials", "stored (encrypted)" if power.get("credentials") else None),
            ("test", verdict),
            *policy_line,
        ]
    )


SHUTDOWN_POLICIES = ("freeze", "failover", "migrate", "conditional", "default")


def shutdown_line(node: dict[str, Any]) -> str | None:
    """ "migrate (its own)" or "conditional (the setting ha.shutdown_policy)"."""
    effective = node.get("shutdown_policy_effective")
    if effective is None:
        return None
    own = node.get("shutdown_policy")
    return f"{effective} ({'its own' if own else 'the setting ha.shutdown_policy'})"


power_app = typer.Typer(
    help="A node's power through its driver: status, on, off, cycle, test.",
    no_args_is_help=True,
)


def _power(action: str, summary: str) -> None:
    def command(name: str = NODE_ARGUMENT, output: Output = OUTPUT_OPTION) -> None:
        with connect(timeout=120) as client:
            answer: dict[str, Any] = client.post(f"{_node(name)}/power/{action}")
        if output is Output.json:
            print_json(answer)
            return
        status = answer.get("status")
        detail = answer.get("detail")
        console.print(
            f"{name}: {action}"
            + (f" -> power {status}" if status else "")
            + (f" ({detail})" if detail else ""),
            highlight=False,
            soft_wrap=True,
        )

    command.__doc__ = summary
    power_app.command(action)(command)


_power("status", "Show the node's power state as its driver reads it.")
_power("on", "Power the node on.")
_power("off", "Power the node off at once (hard off).")
_power("cycle", "Power the node off, then on.")
_power("test", "Check the driver and its credentials without acting.")


def confirm_down(
    name: str = NODE_ARGUMENT,
    yes: bool = typer.Option(
        False, "--yes", help="Confirm that the node is off (required: a VM could run twice)."
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Take responsibility: the node is off. It counts as fenced and its HA VMs restart
    elsewhere. Use it only when the power driver cannot confirm the fence and you know."""
    if not yes:
        fail(f"confirm-down restarts {name}'s VMs elsewhere; if {name} is really off, add --yes")
    with connect() as client:
        task: dict[str, Any] = client.post(f"{_node(name)}/confirm-down")
    if output is Output.json:
        print_json(task)
    else:
        console.print(
            f"{name} confirmed down; recovery task {task['id']} started "
            f"(`bollard task wait {task['id']}`)",
            highlight=False,
            soft_wrap=True,
        )


@cluster_app.command("maintenance")
def maintenance(
    state: str = typer.Argument("status", help="on, off or status."),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Maintenance mode: no fencing and no recovery while it is on."""
    if state not in ("on", "off", "status"):
        fail("maintenance takes on, off or status")
    with connect() as client:
        if state == "status":
            answer: dict[str, Any] = client.get("/cluster/maintenance")
        else:
            answer = client.request(
                "PUT", "/cluster/maintenance", json={"maintenance": state == "on"}
            )
    if output is Output.json:
        print_json(answer)
    else:
        print(f"maintenance {'on' if answer['maintenance'] else 'off'}")


def _drain(kind: str, summary: str) -> Any:
    def command(
        name: str = NODE_ARGUMENT,
        wait: bool = typer.Option(False, "--wait", help="Block until it ends, with progress."),
        timeout: float = typer.Option(
            DEFAULT_WAIT_TIMEOUT * 4, "--timeout", min=0.0, help="With --wait: give up after this."
        ),
        output: Output = OUTPUT_OPTION,
    ) -> None:
        with connect() as client:
            task: dict[str, Any] = client.post(f"{_node(name)}/{kind}")
            if wait:
                task = wait_for_task(client, task, timeout=timeout)
        if output is Output.json:
            print_json(task)
            return
        progress = (task.get("result") or {}).get("progress") or {}
        outcomes = progress.get("outcomes") or {}
        if not wait:
            console.print(f"{kind} of {name}: task {task['id']} (`bollard task wait {task['id']}`)",
                          highlight=False, soft_wrap=True)  # fmt: skip
            return
        console.print(f"{kind} of {name} succeeded ({progress.get('done', 0)} VMs)",
                      highlight=False, soft_wrap=True)  # fmt: skip
        for vm, outcome in outcomes.items():
            console.print(f"  {vm}: {outcome}", highlight=False, soft_wrap=True)

    command.__doc__ = summary
    return command


def register(app: typer.Typer, node_app: typer.Typer) -> None:
    node_app.command("flush")(
        _drain(
            "flush",
            "Move every VM off the node (live, or per VM method); it ends flushed "
            "and gets no new VMs. VMs that cannot move are shut down with autostart.",
        )
    )
    node_app.command("unflush")(
        _drain(
            "unflush",
            "Bring back the VMs migrated away from the node, start those marked "
            "autostart, and make it ready again.",
        )
    )
    node_app.command("set")(set_node)
    node_app.add_typer(power_app, name="power")
    node_app.command("confirm-down")(confirm_down)
    app.add_typer(cluster_app, name="cluster")
