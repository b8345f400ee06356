"""Out-of-band changes to a sim host: what an operator (or a bug) does behind Bollard's back.

These change the ground truth of a sim host without any command from the server, so that
end-to-end tests of state reconciliation can make the hosts disagree with Bollard's database:
a VM dies (``kill_vm``), its definition vanishes (``undefine_vm``), an unknown VM appears
(``define_vm``) or a VM's size changes (``set_vm``). A VM is named by its name or its uuid on
that host. Each change is a read-modify-write under the fabric lock and stamps
``updated_at``; nothing is written to the host's execution log (no command asked for it).

The "hold report" fault (``hold_reports``) makes the host's agent hold back its next
heartbeat(s) and deliver each one late, after a newer one, to test that the server ignores
out-of-order reports; the agent takes one hold per heartbeat with ``take_report_hold``.

Every refusal is an ``OutOfBandError`` (a ValueError) naming the node and the VM.
"""

from __future__ import annotations

import logging
import time
import uuid as uuidlib

from bollard.domain.states import PowerState
from bollard.sim.fabric import SimHost
from bollard.sim.files import check_component, write_json_atomic
from bollard.sim.models import HostPower, SimHostRecord, SimVm

__all__ = [
    "OutOfBandError",
    "define_vm",
    "find_vm",
    "hold_reports",
    "kill_vm",
    "set_vm",
    "take_report_hold",
    "undefine_vm",
]

log = logging.getLogger(__name__)


class OutOfBandError(ValueError):
    """An out-of-band change was refused (no such host or VM, an ambiguous name, a VM in
    the wrong state, an invalid value); nothing was changed."""


def _record(host: SimHost) -> SimHostRecord:
    rec = host.record()
    if rec is None:
        raise OutOfBandError(f"sim host {host.node} does not exist in {host.fabric.root}")
    return rec


def _write_record(host: SimHost, rec: SimHostRecord) -> SimHostRecord:
    rec = rec.model_copy(update={"updated_at": time.time()})
    write_json_atomic(host.host_file, rec.model_dump(mode="json"))
    return rec


def find_vm(host: SimHost, vm: str) -> SimVm:
    """The VM named ``vm`` (its uuid, else its name) on ``host``.

    OutOfBandError if the host does not exist, no VM has that uuid or name, or several VMs
    have that name (name it by uuid then).
    """
    _record(host)
    vms = host.list_vms()
    by_uuid = [v for v in vms if v.uuid == vm]
    if by_uuid:
        return by_uuid[0]
    by_name = [v for v in vms if v.name == vm]
    if not by_name:
        raise OutOfBandError(f"no VM {vm!r} (name or uuid) on sim host {host.node}")
    if len(by_name) > 1:
        uuids = ", ".join(v.uuid for v in by_name)
        raise OutOfBandError(
            f"VM name {vm!r} is ambiguous on sim host {host.node} ({uuids}): use its uuid"
        )
    return by_name[0]


def _check_size(what: str, value: int) -> int:
    if value < 1:
        raise OutOfBandError(f"{what} must be >= 1 (got {value})")
    return value


def kill_vm(host: SimHost, vm: str, crashed: bool = False) -> SimVm:
    """The VM stops behind the manager's back: its power becomes STOPPED (CRASHED with
    ``crashed``). OutOfBandError if it is already stopped or crashed."""
    power = PowerState.CRASHED if crashed else PowerState.STOPPED
    with host.fabric.lock():
        current = find_vm(host, vm)
        if current.power in (PowerState.STOPPED, PowerState.CRASHED):
            raise OutOfBandError(
                f"VM {current.name} ({current.uuid}) on sim host {host.node} "
                f"is already {current.power.value}"
            )
        killed = host.put_vm(current.model_copy(update={"power": power}))
    log.info("out of band: VM %s (%s) on %s %s", killed.name, killed.uuid, host.node, power.value)
    return killed


def undefine_vm(host: SimHost, vm: str) -> SimVm:
    """The VM's definition disappears from the host, whatever its power; the VM as it was."""
    with host.fabric.lock():
        current = find_vm(host, vm)
        host.delete_vm(current.uuid)
    log.info(
        "out of band: VM %s (%s, %s) undefined on %s",
        current.name,
        current.uuid,
        current.power.value,
        host.node,
    )
    return current


def define_vm(
    host: SimHost,
    name: str,
    memory_mb: int,
    vcpus: int = 1,
    running: bool = True,
    uuid: str | None = None,
    epoch: int = 0,
) -> SimVm:
    """A VM Bollard does not know appears on the host (running unless ``running`` is False),
    with ``uuid`` or a new uuid4.

    OutOfBandError if the host already has a VM with that name or uuid, a value is invalid,
    or the VM is to run on a host that is powered off.
    """
    try:
        check_component("VM name", name)
        if uuid is not None:
            check_component("VM uuid", uuid)
    except ValueError as exc:
        raise OutOfBandError(f"cannot define a VM on sim host {host.node}: {exc}") from exc
    _check_size("memory_mb", memory_mb)
    _check_size("vcpus", vcpus)
    if epoch < 0:
        raise OutOfBandError(f"epoch must be >= 0 (got {epoch})")
    new_uuid = uuid if uuid is not None else str(uuidlib.uuid4())
    with host.fabric.lock():
        rec = _record(host)
        if running and rec.power != HostPower.ON:
            raise OutOfBandError(
                f"sim host {host.node} is powered off: VM {name} cannot run there "
                "(define it stopped)"
            )
        for existing in host.list_vms():
            if existing.uuid == new_uuid:
                raise OutOfBandError(
                    f"sim host {host.node} already has a VM with uuid {new_uuid} ({existing.name})"
                )
            if existing.name == name:
                raise OutOfBandError(
                    f"sim host {host.node} already has a VM named {name} ({existing.uuid})"
                )
        vm = host.put_vm(
            SimVm(
                uuid=new_uuid,
                name=name,
                vcpus=vcpus,
                memory_mb=memory_mb,
                power=PowerState.RUNNING if running else PowerState.STOPPED,
                epoch=epoch,
            )
        )
    log.info("out of band: VM %s (%s) defined on %s", vm.name, vm.uuid, host.node)
    return vm


def set_vm(host: SimHost, vm: str, memory_mb: int | None = None, vcpus: int | None = None) -> SimVm:
    """Change the VM's memory and/or vCPUs on the host (at least one; each >= 1)."""
    if memory_mb is None and vcpus is None:
        raise OutOfBandError(f"nothing to change on VM {vm} on sim host {host.node}")
    update: dict[str, int] = {}
    if memory_mb is not None:
        update["memory_mb"] = _check_size("memory_mb", memory_mb)
    if vcpus is not None:
        update["vcpus"] = _check_size("vcpus", vcpus)
    with host.fabric.lock():
        current = find_vm(host, vm)
        changed = host.put_vm(current.model_copy(update=update))
    log.info(
        "out of band: VM %s (%s) on %s now has %d vCPUs, %d MB",
        changed.name,
        changed.uuid,
        host.node,
        changed.vcpus,
        changed.memory_mb,
    )
    return changed


def hold_reports(host: SimHost, count: int = 1) -> SimHostRecord:
    """Make the host's agent hold back its next ``count`` heartbeats, each delivered late,
    after a newer one (replaces any count armed before; 0 disarms)."""
    if count < 0:
        raise OutOfBandError(f"hold count must be >= 0 (got {count})")
    with host.fabric.lock():
        rec = _write_record(host, _record(host).model_copy(update={"hold_reports": count}))
    log.info("sim host %s holds back its next %d heartbeat(s)", host.node, count)
    return rec


def take_report_hold(host: SimHost) -> bool:
    """Whether the next heartbeat is to be held back: if a hold is armed, count it down and
    return True, else False (also when the host has no record)."""
    rec = host.record()  # the common case, nothing armed: no lock taken
    if rec is None or rec.hold_reports <= 0:
        return False
    with host.fabric.lock():
        rec = host.record()
        if rec is None or rec.hold_reports <= 0:
            return False
        _write_record(host, rec.model_copy(update={"hold_reports": rec.hold_reports - 1}))
    log.info("sim host %s: a heartbeat is held back", host.node)
    return True
