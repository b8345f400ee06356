"""The checks of a migration's prepare phase (see bollard.sim.migration): nothing is done
when one fails."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from bollard.domain.states import PowerState
from bollard.sim.fabric import Fabric, SimHost
from bollard.sim.models import HostPower, SimVm

log = logging.getLogger(__name__)


class MigrationRefused(Exception):
    """The migration cannot start; nothing was done. ``code``: not-found, invalid-state,
    invalid-input or temporary (as the driver errors of the same codes)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class MigrationRequest:
    command_id: str
    uuid: str
    source: str
    target: str
    live: bool
    new_epoch: int
    duration: float


def check_request(
    fabric: Fabric, req: MigrationRequest, source: SimHost, active: Callable[[str], bool]
) -> tuple[SimVm, SimHost]:
    """The VM to migrate and the target host, after the prepare phase's checks (the caller
    holds the fabric lock); MigrationRefused if the migration cannot start."""
    if req.target == req.source:
        raise MigrationRefused("invalid-input", f"the VM is already on {req.source}")
    rec = source.record()
    if rec is None or rec.power != HostPower.ON:
        raise MigrationRefused("temporary", f"sim host {req.source} is powered off")
    vm = source.get_vm(req.uuid)
    if vm is None or vm.outgoing is not None:
        raise MigrationRefused("not-found", f"no VM {req.uuid} on {req.source}")
    if vm.incoming is not None:
        raise MigrationRefused(
            "invalid-state", f"VM {req.uuid} is still migrating in to {req.source}"
        )
    if req.live and vm.power != PowerState.RUNNING:
        raise MigrationRefused(
            "invalid-state",
            f"VM {req.uuid} is {vm.power.value}: only a running VM migrates live",
        )
    if not req.live and vm.power not in (PowerState.STOPPED, PowerState.CRASHED):
        raise MigrationRefused(
            "invalid-state", f"VM {req.uuid} is {vm.power.value}: stop it or migrate it live"
        )
    if req.new_epoch <= vm.epoch:
        raise MigrationRefused(
            "invalid-input",
            f"new epoch {req.new_epoch} is not newer than the VM's epoch {vm.epoch}",
        )
    try:
        target = fabric.host(req.target)
    except ValueError as exc:
        raise MigrationRefused("invalid-input", str(exc)) from None
    trec = target.record()
    if trec is None:
        raise MigrationRefused("temporary", f"target host {req.target} does not exist")
    if trec.power != HostPower.ON:
        raise MigrationRefused("temporary", f"target host {req.target} is powered off")
    there = target.get_vm(req.uuid)
    if there is not None:
        if there.epoch > req.new_epoch:
            raise MigrationRefused(
                "invalid-state",
                f"{req.target} has VM {req.uuid} with a newer epoch {there.epoch}",
            )
        if there.power == PowerState.RUNNING:
            raise MigrationRefused("invalid-state", f"VM {req.uuid} already runs on {req.target}")
        other = there.incoming
        if other is not None and other != req.command_id and active(other):
            raise MigrationRefused(
                "invalid-state",
                f"another migration ({other}) brings VM {req.uuid} to {req.target}",
            )
        log.warning(
            "sim migration %s: replacing a leftover copy of %s on %s",
            req.command_id,
            req.uuid,
            req.target,
        )
    return vm, target
