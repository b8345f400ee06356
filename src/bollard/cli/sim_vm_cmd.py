"""`bollard sim vm` and `bollard sim report`: change a sim host behind Bollard's back.

These write the fabric directly, as an operator (or a bug) acting on a hypervisor without
Bollard would: a VM dies, vanishes, appears or changes size, and the server only learns it
from the host's heartbeats. They exist to test state reconciliation.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

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
    from bollard.sim.fabric import SimHost
    from bollard.sim.models import SimVm

T = TypeVar("T")

vm_app = typer.Typer(
    help="Change a sim host's VMs behind Bollard's back (out of band), for testing reconciliation.",
    no_args_is_help=True,
)
report_app = typer.Typer(
    help="Tamper with a sim host's heartbeats behind Bollard's back (out-of-order reports).",
    no_args_is_help=True,
)

VM_ARGUMENT = typer.Argument(..., help="VM on that host: its name or uuid.")


@vm_app.callback()
def _vm() -> None:
    """Change a sim host's VMs behind Bollard's back (out of band), for testing
    reconciliation.

    These write the fabric directly, with no command from the server: it only learns of
    the change from the host's heartbeats."""


@report_app.callback()
def _report() -> None:
    """Tamper with a sim host's heartbeats behind Bollard's back (out-of-order reports)."""


def _host(node: str, fabric_dir: Path | None, data_dir: Path | None) -> SimHost:
    return existing_host(resolve_fabric_dir(fabric_dir, data_dir, node=node), node)


def _run(what: str, change: Callable[[], T]) -> T:
    """``change()``, with any refusal or fabric error as a one-line error."""
    try:
        return change()
    except (ValueError, LookupError, OSError, TimeoutError) as exc:
        fail(f"cannot {what}: {exc}")


def _vm_json(node: str, vm: SimVm) -> dict[str, Any]:
    return {"node": node, **vm.model_dump(mode="json")}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


@vm_app.command("kill")
def vm_kill(
    node: str = NODE_ARGUMENT,
    vm: str = VM_ARGUMENT,
    crashed: bool = typer.Option(
        False, "--crashed", help="The VM crashes (power: crashed) instead of stopping."
    ),
    fabric_dir: Path | None = FABRIC_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Stop (or crash) a VM behind Bollard's back, for testing reconciliation.

    The VM (running or paused) is stopped, or crashed with --crashed; it is an error if it
    is already stopped or crashed. Nothing tells the server: it learns it from heartbeats.

    With -o json: the VM record as the host now has it ({"node", "uuid", "name", "vcpus",
    "memory_mb", "power", "epoch", ...}).
    """
    from bollard.sim.out_of_band import kill_vm

    host = _host(node, fabric_dir, data_dir)
    killed = _run(f"kill {vm} on {node}", lambda: kill_vm(host, vm, crashed=crashed))
    if output == Output.json:
        print_json(_vm_json(node, killed))
        return
    console.print(
        f"killed {killed.name} on {node} behind Bollard's back (power: {killed.power.value})",
        highlight=False,
    )


@vm_app.command("undefine")
def vm_undefine(
    node: str = NODE_ARGUMENT,
    vm: str = VM_ARGUMENT,
    fabric_dir: Path | None = FABRIC_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Remove a VM's definition behind Bollard's back, for testing reconciliation.

    The VM vanishes from the sim host whatever its power (a running VM too).

    With -o json: the VM record that was removed.
    """
    from bollard.sim.out_of_band import undefine_vm

    host = _host(node, fabric_dir, data_dir)
    gone = _run(f"undefine {vm} on {node}", lambda: undefine_vm(host, vm))
    if output == Output.json:
        print_json(_vm_json(node, gone))
        return
    console.print(
        f"undefined {gone.name} ({gone.uuid}) on {node} behind Bollard's back "
        f"(it was {gone.power.value})",
        highlight=False,
    )


@vm_app.command("define")
def vm_define(
    node: str = NODE_ARGUMENT,
    name: str = typer.Argument(..., help="Name of the new VM."),
    memory: int = typer.Option(..., "--memory", metavar="MB", help="Memory in MiB."),
    vcpus: int = typer.Option(1, "--vcpus", metavar="N", help="Virtual CPUs."),
    stopped: bool = typer.Option(False, "--stopped", help="Define it stopped (default: running)."),
    uuid: str | None = typer.Option(
        None, "--uuid", metavar="UUID", help="Its uuid (default: a new random one)."
    ),
    epoch: int = typer.Option(0, "--epoch", metavar="E", help="Its epoch."),
    fabric_dir: Path | None = FABRIC_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Make an unknown VM appear behind Bollard's back, for testing reconciliation.

    The VM is running unless --stopped; it is an error if the host already has a VM with
    that name or uuid, or is powered off (unless --stopped).

    With -o json: the new VM record.
    """
    from bollard.sim.out_of_band import define_vm

    host = _host(node, fabric_dir, data_dir)
    new = _run(
        f"define {name} on {node}",
        lambda: define_vm(
            host, name, memory, vcpus=vcpus, running=not stopped, uuid=uuid, epoch=epoch
        ),
    )
    if output == Output.json:
        print_json(_vm_json(node, new))
        return
    console.print(
        f"defined {new.name} ({new.uuid}) on {node} behind Bollard's back "
        f"(power: {new.power.value}, {_plural(new.vcpus, 'vCPU')}, {new.memory_mb} MB, "
        f"epoch {new.epoch})",
        highlight=False,
    )


@vm_app.command("set")
def vm_set(
    node: str = NODE_ARGUMENT,
    vm: str = VM_ARGUMENT,
    memory: int | None = typer.Option(None, "--memory", metavar="MB", help="New memory in MiB."),
    vcpus: int | None = typer.Option(None, "--vcpus", metavar="N", help="New virtual CPUs."),
    fabric_dir: Path | None = FABRIC_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Change a VM's memory or vCPUs behind Bollard's back, for testing reconciliation.

    Give --memory, --vcpus or both (each at least 1); the power state is unchanged.

    With -o json: the VM record as the host now has it.
    """
    from bollard.sim.out_of_band import set_vm

    host = _host(node, fabric_dir, data_dir)
    changed = _run(
        f"change {vm} on {node}", lambda: set_vm(host, vm, memory_mb=memory, vcpus=vcpus)
    )
    if output == Output.json:
        print_json(_vm_json(node, changed))
        return
    console.print(
        f"set {changed.name} on {node} behind Bollard's back: "
        f"{_plural(changed.vcpus, 'vCPU')}, {changed.memory_mb} MB",
        highlight=False,
    )


def _is_uuid(text: str) -> bool:
    try:
        uuidlib.UUID(text)
    except ValueError:
        return False
    return True


@vm_app.command("fail-start")
def vm_fail_start(
    node: str = NODE_ARGUMENT,
    vm: str | None = typer.Argument(
        None,
        help="VM on that host (name or uuid): only its starts fail. Without: every "
        "start on the host fails.",
    ),
    times: int = typer.Option(
        1, "--times", metavar="N", min=0, help="How many starts fail; 0 = until cleared."
    ),
    clear: bool = typer.Option(False, "--clear", help="Disarm it: starts succeed again."),
    fabric_dir: Path | None = FABRIC_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Make the next starts of a VM (or of every VM) on a sim host fail, for testing HA's
    restart and relocate limits.

    The host's hypervisor refuses the next --times starts (a permanent error, as a broken
    disk or a missing bridge would). It follows the host, not the VM: a VM relocated to
    another host starts there. The same fault as `bollard sim fault set NODE --command
    start --mode fail --count N`, narrowed to one VM when one is named. Name a VM not on
    the host (yet, or any more: one that will be relocated there, or left) by its uuid.

    With -o json: {"node", "vm", "uuid", "times", "cleared"}.
    """
    from bollard.sim.faults import fault_key
    from bollard.sim.models import FaultMode
    from bollard.sim.out_of_band import OutOfBandError, find_vm

    host = _host(node, fabric_dir, data_dir)
    uuid, what = None, "every VM"
    if vm is not None:
        try:
            found = find_vm(host, vm)
            uuid, what = found.uuid, found.name
        except OutOfBandError as exc:
            if not _is_uuid(vm):  # a uuid: a VM not (or no longer) on the host
                fail(str(exc))
            uuid, what = vm, vm
    if clear:
        removed = _run(f"clear on {node}", lambda: host.faults.clear(fault_key("start", uuid)))
        if output == Output.json:
            print_json({"node": node, "vm": vm, "uuid": uuid, "times": 0, "cleared": removed})
            return
        console.print(f"starts of {what} on {node} succeed again", highlight=False)
        return
    _run(
        f"arm a start fault on {node}",
        lambda: host.faults.set("start", FaultMode.FAIL, times, vm=uuid),
    )
    if output == Output.json:
        print_json({"node": node, "vm": vm, "uuid": uuid, "times": times, "cleared": 0})
        return
    count = "until cleared" if times == 0 else f"the next {_plural(times, 'time')}"
    console.print(f"starts of {what} on {node} fail {count}", highlight=False)


@report_app.command("hold")
def report_hold(
    node: str = NODE_ARGUMENT,
    count: int = typer.Option(
        1, "--count", metavar="N", help="How many heartbeats to hold back (0: disarm)."
    ),
    fabric_dir: Path | None = FABRIC_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Hold back a sim host's next heartbeats behind Bollard's back (out-of-order reports).

    The host's agent holds back each of its next --count heartbeats and delivers it late,
    after a newer one: for testing that the server ignores out-of-order reports. Replaces
    any count armed before; --count 0 disarms.

    With -o json: {"node", "hold_reports"} (the heartbeats still to be held back).
    """
    from bollard.sim.out_of_band import hold_reports

    host = _host(node, fabric_dir, data_dir)
    rec = _run(f"hold reports of {node}", lambda: hold_reports(host, count))
    if output == Output.json:
        print_json({"node": node, "hold_reports": rec.hold_reports})
        return
    if rec.hold_reports == 0:
        console.print(f"{node} holds back no heartbeat", highlight=False)
        return
    console.print(
        f"{node} holds back its next {_plural(rec.hold_reports, 'heartbeat')} behind "
        "Bollard's back (each delivered late, after a newer one)",
        highlight=False,
    )
