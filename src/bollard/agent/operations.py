"""What each command type does through the hypervisor driver, and the answers it makes."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from bollard.agent import volume_locks
from bollard.agent.drivers.base import HypervisorDriver, VmSpec
from bollard.agent.storage_ops import BadStorageArgs, define_disks, perform_storage
from bollard.domain.errors import DriverError
from bollard.domain.protocol import Answer, AnswerError, Command
from bollard.domain.states import CommandType, PowerState

log = logging.getLogger(__name__)


class BadArgs(Exception):
    pass


class _ShutdownArgs(BaseModel):
    model_config = ConfigDict(extra="ignore")
    timeout: float = 60.0


class _UndefineArgs(BaseModel):
    model_config = ConfigDict(extra="ignore")
    # Destroy (forced stop) a running or paused VM first, e.g. a leftover copy on a
    # migration target; without it, undefining a VM that is not stopped is refused.
    force: bool = False


def failure(command_id: str, code: str, message: str) -> Answer:
    return Answer(command_id=command_id, ok=False, error=AnswerError(code=code, message=message))


async def perform(driver: HypervisorDriver, command: Command, uuid: str | None) -> Answer:
    """Run ``command`` (on VM ``uuid``, if it concerns one); every error becomes a failed
    answer with its code."""
    try:
        if command.command.storage:
            result = await perform_storage(driver, command)
        elif uuid is None:
            raise BadArgs("command has no vm_uuid")
        else:
            result = await _dispatch(driver, command, uuid)
    except DriverError as exc:
        return failure(command.id, exc.code, exc.message)
    except (BadArgs, BadStorageArgs) as exc:
        return failure(command.id, "invalid-input", str(exc))
    except Exception as exc:
        log.exception("command %s: unexpected error", command.id)
        return failure(command.id, "internal", f"{type(exc).__name__}: {exc}")
    return Answer(command_id=command.id, ok=True, result=result)


async def _dispatch(driver: HypervisorDriver, command: Command, uuid: str) -> dict[str, Any]:
    kind = command.command
    if kind == CommandType.DEFINE:
        spec = _define_spec(command, uuid)
        disks = await define_disks(driver, list(command.args.get("disks") or []))
        report = await driver.define(spec.model_copy(update={"disks": disks}))
    elif kind in (CommandType.START, CommandType.RESTART):
        # One writer per disk: the VM's shared volumes are locked by this host first.
        locks = volume_locks.parse(command.args)
        notes: list[str] = []
        if locks is not None:
            notes = await volume_locks.acquire(driver, uuid, locks, await _boot_id(driver))
        if kind == CommandType.START:
            report = await driver.start(uuid)
        else:
            report = await driver.restart(uuid)
        if notes:
            return {"vm": report.model_dump(mode="json"), "locks": notes}
    elif kind == CommandType.SHUTDOWN:
        report = await driver.shutdown(uuid, _parse(_ShutdownArgs, command.args).timeout)
        await _release(driver, command, uuid, report.power)
    elif kind == CommandType.STOP:
        report = await driver.stop(uuid)
        await _release(driver, command, uuid, report.power)
    elif kind == CommandType.UNDEFINE:
        await driver.undefine(uuid, force=_parse(_UndefineArgs, command.args).force)
        await _release(driver, command, uuid, None)
        return {}
    else:  # a CommandType added to the domain but not handled here yet
        raise BadArgs(f"command {kind.value!r} is not supported by this agent")
    return {"vm": report.model_dump(mode="json")}


async def _boot_id(driver: HypervisorDriver) -> str:
    return (await driver.host_info()).boot_id


async def _release(
    driver: HypervisorDriver, command: Command, uuid: str, power: PowerState | None
) -> None:
    """The VM no longer runs here: its volume locks are given back."""
    locks = volume_locks.parse(command.args)
    if locks is None or power in (PowerState.RUNNING, PowerState.PAUSED):
        return
    await volume_locks.release(driver, uuid, locks)


_Args = TypeVar("_Args", bound=BaseModel)


def _parse(model: type[_Args], args: dict[str, Any]) -> _Args:
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        raise BadArgs(_brief(exc)) from None


def _define_spec(command: Command, uuid: str) -> VmSpec:
    try:
        return VmSpec.model_validate(
            {
                "name": command.args.get("name"),
                "vcpus": command.args.get("vcpus"),
                "memory_mb": command.args.get("memory_mb"),
                "disks": [],  # (made into DiskSpecs by define_disks)
                "nics": command.args.get("nics") or [],
                "uuid": uuid,
                "epoch": command.epoch,
            }
        )
    except ValidationError as exc:
        raise BadArgs(_brief(exc)) from None


def _brief(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'args'}: {err['msg']}" for err in exc.errors()
    )
