"""The ``migrate`` command on the agent of the VM's current (source) host.

Args: ``target`` (node name), ``live`` (bool), ``new_epoch`` (int, newer than the command's
epoch), ``nics`` (optional: the VM's NICs as the target is to have them, each SR-IOV NIC on
the VF the server claimed there; a live migration of a VM with a hostdev NIC is refused,
``invalid-state``, since a PCI device cannot move while the guest runs): the VM moves to
``target`` as a hypervisor job (PROCESSING_IN_BACKEND) through the driver's ``migrate`` (see
``MigrationDriver``), with ``progress`` messages during the transfer. What the server can
rely on, from the answer:

- ``ok``: the VM is on the target with ``new_epoch`` (running if live, stopped if not) and
  the source no longer has it; ``result["vm"]`` is the VM on the target.
- Not moved for certain (the VM is on the source as it was, no copy on the target):
  ``not-found``, ``invalid-state``, ``invalid-input``, ``temporary`` (refused before
  starting), ``stale-epoch``, ``never-received``, ``migration-failed`` (failed at prepare,
  transfer or switchover), ``aborted`` (by a cancel hook: the agent lost its server or
  restarted before the switchover), ``cancelled`` and ``timed-out`` (a cancel or the
  deadline aborted it before the switchover, or came before it started), ``job-lost`` (the
  agent died before the job started), ``interrupted`` (the agent restarted before the job
  started: a started migration is DANGLED_IN_BACKEND instead, then settled as above).
- Moved, with a leftover: ``migration-cleanup-failed``: the VM runs on the target with
  ``new_epoch``; the source still has a stopped definition (remove it with ``undefine``).
- Unknown, ask both hosts (``inspect``): ``abort-failed``, ``job-unknown``, ``internal``,
  ``journal-unavailable``, ``permanent`` and any other code.

A cancel, or the deadline, reaching a migration past its switchover does not abort it: it
finishes and the answer is ``ok`` (the command is COMPLETED). Failed answers of a started
migration carry ``result["migration"] = {"phase", "source", "target", "vm_on"}``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bollard.agent.backend import JobStarter
from bollard.agent.drivers.base import MAX_NICS, JobInfo, MigrationDriver, NicSpec
from bollard.domain.errors import DriverError, DriverInvalidState
from bollard.domain.protocol import Command


class MigrateArgs(BaseModel):
    model_config = ConfigDict(extra="ignore")
    target: str = Field(min_length=1)
    live: bool
    new_epoch: int = Field(ge=1)
    # What the target's driver advertised in its hello (e.g. its libvirt URI).
    target_endpoint: dict[str, Any] | None = None
    # The VM's NICs on the target (an older server sends none: the NICs move unchanged).
    nics: list[NicSpec] | None = Field(default=None, max_length=MAX_NICS)


def migration_starter(driver: MigrationDriver) -> JobStarter:
    """The JobStarter of ``migrate`` commands for ``driver``."""

    async def start(command: Command) -> JobInfo:
        try:
            args = MigrateArgs.model_validate(command.args)
        except ValidationError as exc:
            raise DriverError(_brief(exc), code="invalid-input") from None
        if command.vm_uuid is None:
            raise DriverError("command has no vm_uuid", code="invalid-input")
        if args.new_epoch <= command.epoch:
            message = f"new_epoch {args.new_epoch} is not newer than the epoch {command.epoch}"
            raise DriverError(message, code="invalid-input")
        hostdev = [n.mac for n in args.nics or () if n.sriov is not None and n.mode == "hostdev"]
        if args.live and hostdev:
            raise DriverInvalidState(
                f"VM {command.vm_uuid} has a hostdev SR-IOV NIC ({hostdev[0]}): it cannot "
                "migrate live"
            )
        return await driver.migrate(
            command.id,
            command.vm_uuid,
            args.target,
            live=args.live,
            new_epoch=args.new_epoch,
            target_endpoint=args.target_endpoint,
            nics=args.nics,
        )

    return start


def _brief(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'args'}: {err['msg']}" for err in exc.errors()
    )
