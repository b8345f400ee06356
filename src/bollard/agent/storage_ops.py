"""What the storage commands do through the driver's storage facilities (drivers/storage.py),
the answer to a storage query, and how a DEFINE's disks become paths the driver uses."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bollard.agent import volume_locks
from bollard.agent.drivers.base import DiskSpec, HypervisorDriver, JobInfo
from bollard.agent.drivers.storage import (
    AttachSpec,
    LiveVolumeMover,
    PoolRef,
    StorageCopier,
    StorageDriver,
    VolumeAttacher,
    VolumeFormat,
    VolumeInfo,
    check_file,
)
from bollard.domain.errors import DriverError, DriverNotFound
from bollard.domain.protocol import (
    Command,
    PoolReport,
    StorageQuery,
    StorageReport,
    VolumeFileReport,
)
from bollard.domain.states import CommandType, PowerState
from bollard.domain.storage import UNSUPPORTED

log = logging.getLogger(__name__)

# (backend.JobStarter, which cannot be imported here: backend imports operations, which
# imports this module.)
JobStarter = Callable[[Command], Awaitable[JobInfo]]


class _Args(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _VolumeArgs(_Args):
    pool: PoolRef
    file: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")


class _CreateArgs(_VolumeArgs):
    size_mb: int = Field(ge=1, le=2**31 - 1)
    format: VolumeFormat = "qcow2"


class _GrowArgs(_VolumeArgs):
    size_mb: int = Field(ge=1, le=2**31 - 1)
    device: str | None = Field(default=None, pattern=r"^vd[a-p]$")  # attached to a running VM


class _AttachArgs(_VolumeArgs):
    device: str = Field(pattern=r"^vd[a-p]$")
    format: VolumeFormat = "qcow2"


class _DetachArgs(_Args):
    device: str = Field(pattern=r"^vd[a-p]$")


class _SnapshotArgs(_VolumeArgs):
    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")


class CopyArgs(_VolumeArgs):
    target_pool: PoolRef
    target_file: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")
    target: str = Field(min_length=1, max_length=63)
    target_endpoint: dict[str, Any] | None = None
    snapshot: str | None = None
    format: VolumeFormat | None = None


class DefineDisk(_Args):
    """One disk of a DEFINE as the server sends it: a volume of a pool (made if `create`),
    or (no pool) a disk of the legacy kind."""

    size_mb: int = Field(ge=1)
    device: str | None = Field(default=None, pattern=r"^vd[a-p]$")
    pool: PoolRef | None = None
    file: str | None = None
    format: VolumeFormat = "qcow2"
    create: bool = True


class BadStorageArgs(Exception):
    pass


def _parse(model: type[_Args], args: dict[str, Any]) -> Any:
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        raise BadStorageArgs(
            "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'args'}: {e['msg']}" for e in exc.errors()
            )
        ) from None


def _storage(driver: HypervisorDriver) -> StorageDriver:
    if not isinstance(driver, StorageDriver):
        raise DriverError(f"the {driver.name} driver has no storage pools", code=UNSUPPORTED)
    return driver


def _attacher(driver: HypervisorDriver) -> VolumeAttacher:
    if not isinstance(driver, VolumeAttacher):
        raise DriverError(f"the {driver.name} driver cannot attach volumes", code=UNSUPPORTED)
    return driver


def _volume(info: VolumeInfo) -> dict[str, Any]:
    return {"volume": info.model_dump(mode="json")}


async def perform_storage(driver: HypervisorDriver, command: Command) -> dict[str, Any]:
    """Run a storage command (not a copy: that is a job, see copy_starter); its result.
    DriverError for the driver's refusals, BadStorageArgs for bad arguments."""
    kind, args = command.command, command.args
    if kind is CommandType.VOLUME_CREATE:
        a = _parse(_CreateArgs, args)
        return _volume(await _storage(driver).create_volume(a.pool, a.file, a.size_mb, a.format))
    if kind is CommandType.VOLUME_DELETE:
        a = _parse(_VolumeArgs, args)
        return {"deleted": await _storage(driver).delete_volume(a.pool, a.file)}
    if kind is CommandType.VOLUME_GROW:
        a = _parse(_GrowArgs, args)
        storage = _storage(driver)
        if a.device is not None and command.vm_uuid is not None:
            await _attacher(driver).resize_attached(command.vm_uuid, a.device, a.size_mb)
            info = await storage.volume(a.pool, a.file)
            if info is None:
                raise DriverNotFound(f"volume {a.file} is not in pool {a.pool.name}")
            return _volume(info)
        return _volume(await storage.grow_volume(a.pool, a.file, a.size_mb))
    if kind is CommandType.VOLUME_ATTACH:
        a = _parse(_AttachArgs, args)
        if command.vm_uuid is None:
            raise BadStorageArgs("an attach names its VM (vm_uuid)")
        info = await _storage(driver).volume(a.pool, a.file)
        if info is None:
            raise DriverNotFound(f"volume {a.file} is not in pool {a.pool.name} on this host")
        spec = AttachSpec(device=a.device, path=info.path, format=a.format)
        locks = volume_locks.parse(args)
        notes: list[str] = []
        if locks is not None and await _runs(driver, command.vm_uuid):
            # Hot-plugged into a running guest: this host takes the volume's lock first.
            boot_id = (await driver.host_info()).boot_id
            notes = await volume_locks.acquire(driver, command.vm_uuid, locks, boot_id)
        try:
            await _attacher(driver).attach_volume(command.vm_uuid, spec)
        except BaseException:
            if locks is not None:
                await volume_locks.release(driver, command.vm_uuid, locks)
            raise
        return {"device": a.device, "path": info.path, **({"locks": notes} if notes else {})}
    if kind is CommandType.VOLUME_DETACH:
        d = _parse(_DetachArgs, args)
        if command.vm_uuid is None:
            raise BadStorageArgs("a detach names its VM (vm_uuid)")
        detached = await _attacher(driver).detach_volume(command.vm_uuid, d.device)
        locks = volume_locks.parse(args)
        if locks is not None:  # no longer its disk: its lock is given back
            await volume_locks.release(driver, command.vm_uuid, locks)
        return {"detached": detached}
    if kind is CommandType.SNAPSHOT_CREATE:
        s = _parse(_SnapshotArgs, args)
        snap = await _storage(driver).create_snapshot(s.pool, s.file, s.name)
        return {"snapshot": snap.model_dump(mode="json")}
    if kind is CommandType.SNAPSHOT_DELETE:
        s = _parse(_SnapshotArgs, args)
        return {"deleted": await _storage(driver).delete_snapshot(s.pool, s.file, s.name)}
    if kind is CommandType.SNAPSHOT_REVERT:
        s = _parse(_SnapshotArgs, args)
        return _volume(await _storage(driver).revert_snapshot(s.pool, s.file, s.name))
    raise BadStorageArgs(f"command {kind.value!r} is not a storage command this agent runs")


async def _runs(driver: HypervisorDriver, uuid: str) -> bool:
    vm = next((v for v in await driver.list_vms() if v.uuid == uuid), None)
    return vm is not None and vm.power in (PowerState.RUNNING, PowerState.PAUSED)


def copy_starter(driver: HypervisorDriver) -> JobStarter:
    """The JobStarter of ``volume_copy`` commands."""

    async def start(command: Command) -> JobInfo:
        if not isinstance(driver, StorageCopier):
            raise DriverError(f"the {driver.name} driver cannot copy volumes", code=UNSUPPORTED)
        try:
            a = CopyArgs.model_validate(command.args)
        except ValidationError as exc:
            raise DriverError(str(exc).splitlines()[0], code="invalid-input") from None
        return await driver.copy_volume(
            command.id,
            a.pool,
            a.file,
            a.target_pool,
            a.target_file,
            target=a.target,
            target_endpoint=a.target_endpoint,
            snapshot=a.snapshot,
            fmt=a.format,
        )

    return start


class LiveMoveArgs(_Args):
    device: str = Field(pattern=r"^vd[a-p]$")
    target_pool: PoolRef
    target_file: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")
    format: VolumeFormat = "qcow2"


def live_move_starter(driver: HypervisorDriver) -> JobStarter:
    """The JobStarter of ``volume_move_live`` commands (the VM's disk moves while it runs)."""

    async def start(command: Command) -> JobInfo:
        if not isinstance(driver, LiveVolumeMover):
            raise DriverError(
                f"the {driver.name} driver cannot move a running VM's disk", code=UNSUPPORTED
            )
        if command.vm_uuid is None:
            raise DriverError("a live move names its VM (vm_uuid)", code="invalid-input")
        try:
            a = LiveMoveArgs.model_validate(command.args)
        except ValidationError as exc:
            raise DriverError(str(exc).splitlines()[0], code="invalid-input") from None
        return await driver.move_attached(
            command.id, command.vm_uuid, a.device, a.target_pool, a.target_file, fmt=a.format
        )

    return start


def lock_key(command: Command) -> str | None:
    """What a storage command without a VM is serialised on: its volume file."""
    pool, file = command.args.get("pool"), command.args.get("file")
    if not isinstance(pool, dict) or not isinstance(file, str):
        return None
    return f"volume:{pool.get('type')}:{pool.get('name')}:{file}"


async def define_disks(driver: HypervisorDriver, raw: list[Any]) -> list[DiskSpec]:
    """A DEFINE's disks as the driver takes them: each volume of a pool made (``create``) or
    found there, with its path. DriverNotFound when a volume that must exist is missing; a
    driver without storage gets the disks as legacy ones (it keeps no files)."""
    disks = [_parse(DefineDisk, d) if isinstance(d, dict) else d for d in raw]
    out: list[DiskSpec] = []
    for index, disk in enumerate(disks):
        if not isinstance(disk, DefineDisk):
            raise BadStorageArgs(f"disks.{index}: not an object")
        if disk.pool is None or disk.file is None or not isinstance(driver, StorageDriver):
            out.append(DiskSpec(size_mb=disk.size_mb, device=disk.device, format=disk.format))
            continue
        check_file(disk.file)
        if disk.create:
            info = await driver.create_volume(disk.pool, disk.file, disk.size_mb, disk.format)
        else:
            found = await driver.volume(disk.pool, disk.file)
            if found is None:
                raise DriverNotFound(
                    f"disk {disk.device or index}: volume {disk.file} is not in pool "
                    f"{disk.pool.name} on this host"
                )
            info = found
        out.append(
            DiskSpec(size_mb=disk.size_mb, device=disk.device, path=info.path, format=disk.format)
        )
    return out


async def storage_report(driver: HypervisorDriver, query: StorageQuery) -> StorageReport:
    """Each pool's room (and files, when asked) as this host sees it; a pool that cannot be
    read is reported with its error, not left out."""
    reports: list[PoolReport] = []
    for spec in query.pools:
        pool = PoolRef(name=spec.name, type=spec.type, path=spec.path)
        if not isinstance(driver, StorageDriver):
            error = f"the {driver.name} driver has no storage pools"
            reports.append(PoolReport(name=pool.name, ok=False, error=error))
            continue
        try:
            stats = await driver.pool_stats(pool)
            files = await driver.list_volumes(pool) if query.volumes else None
        except DriverError as exc:
            reports.append(PoolReport(name=pool.name, ok=False, error=exc.message))
            continue
        volumes = None
        if files is not None:
            volumes = [
                VolumeFileReport(
                    file=f.file, format=f.format, size_mb=f.size_mb,
                    allocated_mb=f.allocated_mb, partial=f.partial,
                )
                for f in files
            ]  # fmt: skip
        reports.append(
            PoolReport(
                name=pool.name,
                ok=True,
                capacity_mb=stats.capacity_mb,
                free_mb=stats.free_mb,
                volumes=volumes,
            )
        )
    return StorageReport(query_id=query.query_id, pools=reports)
