"""The sim driver's storage (StorageDriver, StorageCopier, VolumeAttacher, LiveVolumeMover)
and the disks of its VMs: pools and volumes are records in the fabric (see
bollard.sim.storage), copies are jobs (see bollard.sim.volume_copy), and so are live moves of a
running VM's disk (see bollard.sim.live_move), whose pivot the driver applies whenever it
reads the host (every heartbeat's list of VMs, every job poll, a VM's disks, an abort).

Pools are known by name and type: the PoolRef's path only names them. A volume's path is a
``sim://`` path (``sim://local/<pool>/<file>``, ``sim://shared/<pool>/<file>``); a VM defined
with one records the disk (device, path, size, format) in its SimVm's ``drives``. A VM only
starts when each of its volumes is there, whole, on its host (as a hypervisor must open
them). Attaching and detaching change the VM's record, running or not (hot-plug just works).

A volume a copy is filling is listed, with ``partial`` set when VolumeInfo has that field
(VolumeInfo ignores fields it does not know), so the server's reconciler can see it.

A volume's image (export, import) is a JSON document of its record (see
bollard.sim.storage_images): an import makes a volume with the same content checksum.

Mutating operations take ``latency`` seconds and are appended to the host's execution log.
Faults armed for the storage command types (``volume_create``, ``volume_delete``,
``volume_grow``, ``volume_attach``, ``volume_detach``, ``snapshot_create``,
``snapshot_delete``, ``snapshot_revert``, ``volume_copy``, ``volume_move_live``,
``volume_export``, ``volume_import``) fire here as for the VM operations: ``fail`` fails the
operation, ``hang`` never completes it, ``delay`` slows it (for the jobs, copies and live
moves: their start; for an export: before its first chunk; for an import: once its image is
read, before the volume is made).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from bollard.agent.drivers.base import (
    DiskInfo,
    DiskSpec,
    JobInfo,
    JobStatus,
    current_command_id,
    disk_device,
)
from bollard.agent.drivers.sim_jobs import SimJobs
from bollard.agent.drivers.storage import (
    AttachSpec,
    LockHolder,
    PoolRef,
    PoolStats,
    SnapshotInfo,
    VolumeFormat,
    VolumeInfo,
)
from bollard.agent.volume_locks import DirLocks
from bollard.domain.errors import (
    DriverError,
    DriverInvalidState,
    DriverNotFound,
    DriverPermanent,
    DriverTemporary,
)
from bollard.domain.states import CommandType, PowerState
from bollard.sim.live_move import KIND as LIVE_MOVE
from bollard.sim.live_move import LiveMoves, MoveRequest
from bollard.sim.models import SimJob, SimVm
from bollard.sim.storage import PoolKey, StorageRefused, parse_path
from bollard.sim.storage_images import MAX_IMAGE, export_record, import_record, parse_image
from bollard.sim.storage_models import SimDisk, SimVolume
from bollard.sim.volume_copy import CopyRequest, start_copy, volume_info

T = TypeVar("T")

_REFUSALS: dict[str, type[DriverError]] = {
    "not-found": DriverNotFound,
    "invalid-state": DriverInvalidState,
    "temporary": DriverTemporary,
}


def refusal(exc: StorageRefused) -> DriverError:
    """The driver error for a refusal of the fabric's storage."""
    error = _REFUSALS.get(exc.code)
    if error is None:
        return DriverPermanent(exc.message, code=exc.code)
    return error(exc.message)


def pool_key(pool: PoolRef) -> PoolKey:
    return PoolKey(pool.name, pool.type)


def volume_info_of(pool: PoolKey, rec: SimVolume) -> VolumeInfo:
    data: dict[str, Any] = volume_info(pool, rec)
    data["partial"] = rec.partial is not None  # (kept once VolumeInfo has the field)
    return VolumeInfo.model_validate(data)


def merge_disks(
    legacy: Sequence[int], drives: Sequence[SimDisk], wanted: Sequence[DiskSpec]
) -> tuple[list[int], list[SimDisk]]:
    """A VM's disks once ``wanted`` (a VmSpec's disks) is defined over the ones it has:
    those it has are kept as they are; each wanted disk at a device it lacks is added. A
    local disk at the device of its index joins the VM's ``disks`` (sizes by index) when it
    is the next of them; any other disk is a drive at its device. DriverPermanent
    (invalid-input) when two wanted disks name one device."""
    devices = [d.device or disk_device(i) for i, d in enumerate(wanted)]
    doubles = sorted({dev for dev in devices if devices.count(dev) > 1})
    if doubles:
        raise DriverPermanent(f"two disks at {', '.join(doubles)}", code="invalid-input")
    out_legacy = list(legacy)
    out_drives = {d.device: d for d in drives}
    taken = {disk_device(i) for i in range(len(out_legacy))} | set(out_drives)
    for i, (device, disk) in enumerate(zip(devices, wanted, strict=True)):
        if device in taken:
            continue
        taken.add(device)
        if disk.path is None and device == disk_device(i) and i == len(out_legacy):
            out_legacy.append(disk.size_mb)
            continue
        out_drives[device] = SimDisk(
            device=device, size_mb=disk.size_mb, path=disk.path or "", format=disk.format
        )
    return out_legacy, sorted(out_drives.values(), key=lambda d: d.device)


def _local_devices(vm: SimVm) -> set[str]:
    """The devices of the VM's local disks (by index, and drives that are no volume)."""
    by_index = {disk_device(i) for i in range(len(vm.disks))}
    return by_index | {d.device for d in vm.drives if d.path == ""}


class SimStorageDriver(SimJobs):
    """Mixed into SimDriver, which provides the attributes and helpers declared here (and
    in SimJobs)."""

    copy_rate: float
    _sleep: Callable[[float], Awaitable[None]]

    def _require_on(self) -> None:
        raise NotImplementedError

    async def _fault_point(self, command: str) -> None:
        raise NotImplementedError

    # helpers

    async def _read(self, fn: Callable[[], T]) -> T:
        try:
            return await self._io(fn)
        except StorageRefused as exc:
            raise refusal(exc) from None

    async def _change(
        self,
        command: CommandType,
        fn: Callable[[], T],
        uuid: str | None = None,
        *,
        subject: str | None = None,
        faults: bool = True,
    ) -> T:
        """A mutating operation: the host must be on, armed faults fire, it takes the
        operation latency; ``fn`` runs under the fabric lock and is logged with what it
        acted on (the VM's uuid, or ``subject``: the volume, ``<pool>/<file>``), so that one
        command acting on several volumes (a DEFINE making its disks) logs each once."""
        command_id = current_command_id.get()
        await self._check_host_on()
        if faults:
            await self._fault_point(command)
        await self._sleep(self.latency)

        def locked() -> T:
            with self.fabric.lock():
                self._require_on()
                result = fn()
                self.host.exec_log.append(command_id, command.value, uuid or subject)
                return result

        return await self._read(locked)

    @property
    def live_moves(self) -> LiveMoves:
        return LiveMoves(self.storage)

    def _volume_of(self, path: str) -> SimVolume | None:
        """The whole volume at a sim path on this host (None: not a sim path, absent)."""
        parsed = parse_path(path)
        if parsed is None:
            return None
        rec = self.storage.get(self.node, parsed[0], parsed[1], self._wall())
        return None if rec is None or rec.partial is not None else rec

    # StorageDriver

    async def pool_stats(self, pool: PoolRef) -> PoolStats:
        key = pool_key(pool)
        capacity, free = await self._read(lambda: self.storage.stats(self.node, key, self._wall()))
        return PoolStats(capacity_mb=capacity, free_mb=free)

    async def list_volumes(self, pool: PoolRef) -> list[VolumeInfo]:
        key = pool_key(pool)
        recs = await self._read(lambda: self.storage.volumes(self.node, key, self._wall()))
        return [volume_info_of(key, rec) for rec in recs]

    async def volume(self, pool: PoolRef, file: str) -> VolumeInfo | None:
        key = pool_key(pool)
        rec = await self._read(lambda: self.storage.get(self.node, key, file, self._wall()))
        return None if rec is None else volume_info_of(key, rec)

    async def create_volume(
        self, pool: PoolRef, file: str, size_mb: int, fmt: VolumeFormat = "qcow2"
    ) -> VolumeInfo:
        key = pool_key(pool)
        rec = await self._change(
            CommandType.VOLUME_CREATE,
            lambda: self.storage.create(self.node, key, file, size_mb, fmt, self._wall()),
            subject=f"{key}/{file}",
        )
        return volume_info_of(key, rec)

    async def delete_volume(self, pool: PoolRef, file: str) -> bool:
        key = pool_key(pool)
        return await self._change(
            CommandType.VOLUME_DELETE,
            lambda: self.storage.delete(self.node, key, file, self._wall()),
            subject=f"{key}/{file}",
        )

    async def grow_volume(self, pool: PoolRef, file: str, size_mb: int) -> VolumeInfo:
        key = pool_key(pool)
        rec = await self._change(
            CommandType.VOLUME_GROW,
            lambda: self.storage.grow(self.node, key, file, size_mb, self._wall()),
            subject=f"{key}/{file}",
        )
        return volume_info_of(key, rec)

    async def checksum(self, pool: PoolRef, file: str) -> str:
        key = pool_key(pool)

        def read() -> str:
            rec = self.storage.get(self.node, key, file, self._wall())
            if rec is None:
                raise StorageRefused("not-found", f"no volume {file} in {key} on {self.node}")
            if rec.partial is not None:
                raise StorageRefused("invalid-state", f"volume {file} is being copied into")
            return rec.checksum

        return await self._read(read)

    async def create_snapshot(self, pool: PoolRef, file: str, name: str) -> SnapshotInfo:
        key = pool_key(pool)
        snap = await self._change(
            CommandType.SNAPSHOT_CREATE,
            lambda: self.storage.create_snapshot(self.node, key, file, name, self._wall()),
            subject=f"{key}/{file}",
        )
        return SnapshotInfo(name=name, created_at=snap.created_at, size_mb=snap.size_mb)

    async def list_snapshots(self, pool: PoolRef, file: str) -> list[SnapshotInfo]:
        key = pool_key(pool)
        snaps = await self._read(lambda: self.storage.snapshots(self.node, key, file, self._wall()))
        return [
            SnapshotInfo(name=name, created_at=s.created_at, size_mb=s.size_mb) for name, s in snaps
        ]

    async def delete_snapshot(self, pool: PoolRef, file: str, name: str) -> bool:
        key = pool_key(pool)
        return await self._change(
            CommandType.SNAPSHOT_DELETE,
            lambda: self.storage.delete_snapshot(self.node, key, file, name, self._wall()),
            subject=f"{key}/{file}",
        )

    async def revert_snapshot(self, pool: PoolRef, file: str, name: str) -> VolumeInfo:
        key = pool_key(pool)
        rec = await self._change(
            CommandType.SNAPSHOT_REVERT,
            lambda: self.storage.revert_snapshot(self.node, key, file, name, self._wall()),
            subject=f"{key}/{file}",
        )
        return volume_info_of(key, rec)

    async def export_volume(self, pool: PoolRef, file: str) -> AsyncIterator[bytes]:
        key = pool_key(pool)
        await self._check_host_on()
        await self._fault_point(CommandType.VOLUME_EXPORT)
        yield await self._read(
            lambda: export_record(self.storage, self.node, key, file, self._wall())
        )

    async def import_volume(
        self,
        pool: PoolRef,
        file: str,
        fmt: VolumeFormat,
        size_mb: int,
        chunks: AsyncIterator[bytes],
    ) -> VolumeInfo:
        key = pool_key(pool)
        # Its armed faults fire as it begins, before the download (as the export's do): a
        # delayed import is one whose download has not started (a server killed meanwhile
        # serves it once it is back).
        await self._check_host_on()
        await self._fault_point(CommandType.VOLUME_IMPORT)
        data = bytearray()
        async for chunk in chunks:  # (read to its end: the caller's checks run at its end)
            if len(data) <= MAX_IMAGE:
                data += chunk
        try:
            image = parse_image(bytes(data), fmt, size_mb)
        except StorageRefused as exc:
            raise refusal(exc) from None
        rec = await self._change(
            CommandType.VOLUME_IMPORT,
            lambda: import_record(self.storage, self.node, key, file, image, self._wall()),
            subject=f"{key}/{file}",
            faults=False,  # (they fired as it began)
        )
        return volume_info_of(key, rec)

    # StorageCopier

    async def copy_volume(
        self,
        command_id: str,
        pool: PoolRef,
        file: str,
        target_pool: PoolRef,
        target_file: str,
        *,
        target: str,
        target_endpoint: dict[str, Any] | None = None,
        snapshot: str | None = None,
        fmt: VolumeFormat | None = None,
    ) -> JobInfo:
        """(``target_endpoint`` is not needed: sim hosts find each other in the fabric.)"""
        await self._check_host_on()
        await self._fault_point(CommandType.VOLUME_COPY)
        request = CopyRequest(
            command_id=command_id,
            node=self.node,
            pool=pool_key(pool),
            file=file,
            target_node=target,
            target_pool=pool_key(target_pool),
            target_file=target_file,
            snapshot=snapshot,
            fmt=fmt,
        )

        def start() -> SimJob:
            with self.fabric.lock():
                self._require_on()
                return start_copy(self.storage, request, self.copy_rate, self.latency, self._wall())

        return self._job_info(await self._read(start))

    # LiveVolumeMover

    async def move_attached(
        self,
        command_id: str,
        uuid: str,
        device: str,
        target_pool: PoolRef,
        target_file: str,
        *,
        fmt: VolumeFormat = "qcow2",
    ) -> JobInfo:
        """A job lasting the volume's size over the copy rate (see bollard.sim.live_move);
        the target pool is seen from this host (a local one is this host's)."""
        await self._check_host_on()
        await self._fault_point(CommandType.VOLUME_MOVE_LIVE)
        request = MoveRequest(
            command_id=command_id, node=self.node, vm_uuid=uuid, device=device,
            target_pool=pool_key(target_pool), target_file=target_file, fmt=fmt,
        )  # fmt: skip

        def start() -> SimJob:
            with self.fabric.lock():
                self._require_on()
                return self.live_moves.start(request, self.copy_rate, self.latency, self._wall())

        return self._job_info(await self._read(start))

    # the jobs of live moves (SimJobs' hooks, extended)

    def _settle(self) -> None:
        """Apply the migration phases and the live moves' pivots due by now (blocking)."""
        super()._settle()
        self.live_moves.settle(self.node, self._wall())

    def _abort(self, command_id: str, reason: str) -> SimJob | None:
        job = self.host.jobs.get(command_id)
        if job is not None and job.kind == LIVE_MOVE:
            return self.live_moves.abort(self.node, command_id, reason, self._wall())
        return super()._abort(command_id, reason)

    async def abort_jobs(self, reason: str = "") -> list[str]:
        """(Live moves due by now pivot first: they completed, they are not aborted.)"""
        await self._io(self._settle)
        return await super().abort_jobs(reason)

    def _job_info(self, job: SimJob) -> JobInfo:
        """A live move is completed only once the fabric shows its pivot: until then it runs
        (at 100% once its time is up: in sync, pivot pending)."""
        info = super()._job_info(job)
        if job.kind != LIVE_MOVE:
            return info
        if job.aborted_at is not None or job.failed_at is not None:
            return info.model_copy(update={"phase": "copy"})
        if job.completed_at is not None:
            return info.model_copy(update={"phase": "done"})
        progress = job.progress(self._wall())
        phase = "pivot" if progress >= 1.0 else "copy"
        return info.model_copy(
            update={"status": JobStatus.RUNNING, "progress": progress, "phase": phase}
        )

    # VolumeAttacher

    def _update_vm(self, uuid: str, change: Callable[[SimVm], SimVm]) -> SimVm:
        vm = self.host.update_vm(uuid, change)
        if vm is None:
            raise StorageRefused("not-found", f"no VM {uuid} on {self.node}")
        return vm

    async def attach_volume(self, uuid: str, disk: AttachSpec) -> None:
        def change(vm: SimVm) -> SimVm:
            if disk.device in _local_devices(vm):
                raise StorageRefused(
                    "invalid-state", f"VM {uuid} has a local disk at {disk.device}"
                )
            have = next((d for d in vm.drives if d.device == disk.device), None)
            if have is not None:
                if have.path == disk.path:
                    return vm
                raise StorageRefused("invalid-state", f"VM {uuid} has {have.path} at {disk.device}")
            volume = self._volume_of(disk.path)
            if volume is None and vm.power not in (PowerState.STOPPED, PowerState.CRASHED):
                raise StorageRefused(
                    "not-found", f"cannot hot-plug {disk.path}: no such volume on {self.node}"
                )
            size = volume.size_mb if volume is not None else 0
            new = SimDisk(device=disk.device, size_mb=size, path=disk.path, format=disk.format)
            drives = sorted([*vm.drives, new], key=lambda d: d.device)
            return vm.model_copy(update={"drives": drives})

        await self._change(CommandType.VOLUME_ATTACH, lambda: self._update_vm(uuid, change), uuid)

    async def detach_volume(self, uuid: str, device: str) -> bool:
        detached = False

        def change(vm: SimVm) -> SimVm:
            nonlocal detached
            if device in {disk_device(i) for i in range(len(vm.disks))}:
                raise StorageRefused("invalid-state", f"VM {uuid} has a local disk at {device}")
            drives = [d for d in vm.drives if d.device != device]
            detached = len(drives) != len(vm.drives)
            return vm.model_copy(update={"drives": drives}) if detached else vm

        await self._change(CommandType.VOLUME_DETACH, lambda: self._update_vm(uuid, change), uuid)
        return detached

    async def resize_attached(self, uuid: str, device: str, size_mb: int) -> None:
        def grow() -> None:
            vm = self.host.get_vm(uuid)
            if vm is None:
                raise StorageRefused("not-found", f"no VM {uuid} on {self.node}")
            disk = next((d for d in vm.drives if d.device == device), None)
            parsed = parse_path(disk.path) if disk is not None else None
            if disk is None or parsed is None:
                raise StorageRefused("not-found", f"VM {uuid} has no volume at {device}")
            self.storage.grow(self.node, parsed[0], parsed[1], size_mb, self._wall())
            drives = [
                d.model_copy(update={"size_mb": size_mb}) if d.device == device else d
                for d in vm.drives
            ]
            self.host.put_vm(vm.model_copy(update={"drives": drives}))

        await self._change(CommandType.VOLUME_GROW, grow, uuid)

    # the disks of sim VMs

    def _disk_infos(self, vm: SimVm) -> list[DiskInfo]:
        """The VM's disks in device order: local ones by index, then its drives (a volume's
        size as the volume now has it). Its live moves due by now pivot first, so each path
        is the file the VM uses now."""
        if self.live_moves.settle(self.node, self._wall(), vm_uuid=vm.uuid):
            vm = self.host.get_vm(vm.uuid) or vm
        disks = [DiskInfo(device=disk_device(i), size_mb=s) for i, s in enumerate(vm.disks)]
        for d in vm.drives:
            volume = self._volume_of(d.path) if d.path else None
            size = volume.size_mb if volume is not None else d.size_mb
            disks.append(DiskInfo(device=d.device, size_mb=size, path=d.path))
        return sorted(disks, key=lambda d: d.device)

    def _check_volumes(self, vm: SimVm) -> None:
        """DriverPermanent unless each of the VM's volumes is there, whole, on this host."""
        for d in vm.drives:
            if d.path and self._volume_of(d.path) is None:
                raise DriverPermanent(
                    f"cannot start VM {vm.uuid}: its disk {d.device} ({d.path}) is not a "
                    f"whole volume on {self.node}"
                )

    # VolumeLocker: lock files in the shared pool's directory of the fabric, which every sim
    # host sees (agent/volume_locks.py DirLocks).

    def _locks(self, pool: PoolRef) -> DirLocks:
        return DirLocks(self.storage.pool_dir(self.node, pool_key(pool)))

    async def read_lock(self, pool: PoolRef, file: str) -> LockHolder | None:
        return await asyncio.to_thread(self._locks(pool).read, file)

    async def write_lock(
        self, pool: PoolRef, file: str, holder: LockHolder, *, expect: LockHolder | None
    ) -> bool:
        return await asyncio.to_thread(self._locks(pool).write, file, holder, expect)

    async def remove_lock(self, pool: PoolRef, file: str, *, expect: LockHolder) -> bool:
        return await asyncio.to_thread(self._locks(pool).remove, file, expect)
