"""`bollard sim node shutdown NODE [--reboot]`: a clean shutdown or reboot of a sim host, as
systemd does it on a real host (bollard.sim.host_shutdown)."""

from __future__ import annotations

from pathlib import Path

import typer

from bollard.cli.output import OUTPUT_OPTION, Output, console, fail, print_json
from bollard.cli.sim_common import (
    DATA_DIR_OPTION,
    FABRIC_OPTION,
    NODE_ARGUMENT,
    existing_host,
    resolve_fabric_dir,
)

node_app = typer.Typer(
    help="A sim host as a whole: shut it down or reboot it cleanly.", no_args_is_help=True
)


@node_app.callback()
def _node() -> None:
    """A sim host as a whole: shut it down or reboot it cleanly."""


@node_app.command("shutdown")
def shutdown(
    node: str = NODE_ARGUMENT,
    reboot: bool = typer.Option(False, "--reboot", help="Reboot: power on again afterwards."),
    timeout: float = typer.Option(
        630.0,
        "--timeout",
        min=0.1,
        metavar="SECONDS",
        help="How long the agent has to exit (it may wait up to its --shutdown-wait, 600 s by "
        "default, for the server to move its VMs away); then the power goes off anyway.",
    ),
    fabric_dir: Path | None = FABRIC_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Shut a sim host down cleanly (or reboot it), as systemd would.

    Marks the host as shutting down (poweroff or reboot) in the fabric, stops its agent with
    SIGTERM and waits for it to exit: the agent tells the server, which applies the node's
    shutdown policy (freeze, failover, migrate, conditional; `bollard node set NODE
    --shutdown-policy`) and, for migrate, moves its VMs away before the agent exits. Then the
    host is powered off (VMs still running stop) and, with --reboot, on again with a new boot
    id. The agent is not started again: `bollard up --restart-process NODE` does that.

    With -o json: {"node", "kind", "agent_pid", "agent_exited", "agent_seconds", "boot_id"}.
    """
    from bollard.sim.host_shutdown import shutdown_host

    host = existing_host(resolve_fabric_dir(fabric_dir, data_dir, node=node), node)
    try:
        done = shutdown_host(host.fabric, node, reboot=reboot, timeout=timeout)
    except (LookupError, ValueError, OSError, TimeoutError) as exc:
        fail(f"cannot shut {node} down: {exc}")
    if output is Output.json:
        print_json(
            {
                "node": node,
                "kind": done.kind.value,
                "agent_pid": done.agent_pid,
                "agent_exited": done.agent_exited,
                "agent_seconds": round(done.agent_seconds, 3),
                "boot_id": done.boot_id,
            }
        )
        return
    if done.agent_pid is None:
        agent = f"no agent stopped ({done.note})"
    elif done.agent_exited:
        agent = f"agent pid {done.agent_pid} exited after {done.agent_seconds:.1f} s"
    else:
        agent = f"agent pid {done.agent_pid} did not exit within {timeout:g} s (killed)"
    after = f"; powered on again (boot {done.boot_id})" if done.boot_id else "; powered off"
    console.print(f"{node}: clean {done.kind.value}: {agent}{after}", highlight=False)
