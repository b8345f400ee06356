"""`bollard sim power`: switch a sim host off or on with the sim power driver (as a fence
does), straight on the fabric, and show its power state."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from bollard.cli.output import OUTPUT_OPTION, Output, console, fail, print_json
from bollard.cli.sim_common import (
    DATA_DIR_OPTION,
    FABRIC_OPTION,
    NODE_ARGUMENT,
    existing_host,
    resolve_fabric_dir,
)

if TYPE_CHECKING:
    from bollard.power.sim import SimPowerDriver

power_app = typer.Typer(
    help="Switch a sim host off or on, as its power driver (a fence) does.",
    no_args_is_help=True,
)

TIMEOUT_OPTION = typer.Option(
    10.0, "--timeout", min=0.1, metavar="SECONDS", help="Give up after this long."
)


@power_app.callback()
def _power() -> None:
    """Switch a sim host off or on, as its power driver (a fence) does."""


def _driver(node: str, fabric_dir: Path | None, data_dir: Path | None) -> SimPowerDriver:
    from bollard.power.sim import SimPowerDriver

    path = resolve_fabric_dir(fabric_dir, data_dir, node=node)
    existing_host(path, node)
    return SimPowerDriver(path, node)


@power_app.command("off")
def power_off(
    node: str = NODE_ARGUMENT,
    timeout: float = TIMEOUT_OPTION,
    fabric_dir: Path | None = FABRIC_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
) -> None:
    """Cut a sim host's power: its VMs stop, its agent process is killed.

    The agent is killed with SIGKILL (only if the recorded pid is still that process).
    Idempotent. `power on` does not restart the agent: whoever supervises it does.
    """
    import asyncio  # here: every `bollard` command imports this module (issue 24)

    from bollard.power.errors import PowerError

    driver = _driver(node, fabric_dir, data_dir)
    try:
        done = asyncio.run(driver.power_off_report(timeout))
    except PowerError as exc:
        fail(exc.message)
    if not done.was_on:
        what = "was already off"
    elif done.killed is not None:
        what = f"powered off; agent pid {done.killed.pid} killed"
    else:
        what = f"powered off; {done.note}"
    console.print(f"{node} {what}", highlight=False)


@power_app.command("on")
def power_on(
    node: str = NODE_ARGUMENT,
    timeout: float = TIMEOUT_OPTION,
    fabric_dir: Path | None = FABRIC_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
) -> None:
    """Boot a sim host with a new boot id; its VMs stay defined and stopped.

    Idempotent. Its agent is not started: restart it (it reports the new boot id).
    """
    import asyncio

    from bollard.power.errors import PowerError

    driver = _driver(node, fabric_dir, data_dir)

    async def switch_on() -> tuple[str, str]:
        before = await driver.record(timeout)
        await driver.power_on(timeout)
        return before.boot_id, (await driver.record(timeout)).boot_id

    try:
        before, after = asyncio.run(switch_on())
    except PowerError as exc:
        fail(exc.message)
    what = "was already on" if after == before else "powered on"
    console.print(f"{node} {what} (boot {after})", highlight=False)


@power_app.command("status")
def power_status(
    node: str = NODE_ARGUMENT,
    timeout: float = TIMEOUT_OPTION,
    fabric_dir: Path | None = FABRIC_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Show a sim host's power state.

    With -o json: {"node", "power" ("on" or "off"), "boot_id", "agent_pid" (null when no
    agent process is recorded)}.
    """
    import asyncio

    from bollard.power.errors import PowerError

    driver = _driver(node, fabric_dir, data_dir)
    try:
        rec = asyncio.run(driver.record(timeout))
    except PowerError as exc:
        fail(exc.message)
    pid = rec.agent.pid if rec.agent is not None else None
    if output == Output.json:
        print_json(
            {"node": node, "power": rec.power.value, "boot_id": rec.boot_id, "agent_pid": pid}
        )
        return
    agent = f", agent pid {pid}" if pid is not None else ""
    console.print(f"{node} is {rec.power.value} (boot {rec.boot_id}{agent})", highlight=False)
