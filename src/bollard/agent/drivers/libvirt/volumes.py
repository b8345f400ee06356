"""The libvirt driver's StorageDriver: pools, volumes, checksums and snapshots.

Pools are the daemon's directory pools (see ``pools``), made on first use. Volumes are made,
listed, grown and deleted through libvirt's storage API (``virStorageVolCreateXML``,
``virStorageVolResize``, ...), so the daemon is what touches the pool's directory. A pool's
listing is refreshed before each use (files made by other hosts in a shared pool, or by a
copy, are not in libvirt's list until then). Files whose names are not volume file names
(e.g. the hidden scratch files of checksums and copies, and the pool's trash) are not
volumes. A delete links the volume's data into the pool's hidden trash before libvirt
deletes the volume, so that the caller does not wait for its blocks to be freed (see
``trash``).

What libvirt has no API for is done with ``qemu-img`` on the volume's path (see
``host_tools``: the agent runs on the daemon's machine and sees its files):

- snapshots: qcow2 internal snapshots (``qemu-img snapshot -c|-d|-a``); listed from the
  image's snapshot table, read through ``virStorageVolDownload`` (see ``qcow2``: it has the
  size the volume had at each). A raw volume has none: taking one is refused
  (DriverInvalidState). qemu-img takes the image's lock, so a volume a running VM has open
  is refused too (DriverInvalidState). Reverting to a snapshot taken before the volume
  grew gives the volume its size of then.
- checksum: the sha256 of the guest-visible bytes, written out as a sparse raw file in the
  pool's directory by ``qemu-img convert -U`` and hashed (``qemu-img compare`` tells
  whether two images hold the same data, but gives no digest to keep). It reads the whole
  volume: a diagnostic for tests, not a thing to run often on big volumes. Two volumes with
  the same data have the same checksum, whatever their formats.
"""

from __future__ import annotations

import asyncio
import posixpath
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from functools import cached_property
from typing import Any, TypeVar

from bollard.agent.drivers.libvirt.errors import code_of
from bollard.agent.drivers.libvirt.host_tools import HostTools, in_use
from bollard.agent.drivers.libvirt.jobs import JobTable, partial_targets
from bollard.agent.drivers.libvirt.pools import pool_stats, storage_of
from bollard.agent.drivers.libvirt.qcow2 import (
    HEADER_BYTES,
    Qcow2Error,
    Snapshot,
    parse_table,
    table_location,
)
from bollard.agent.drivers.libvirt.storage import (
    NO_STORAGE_VOL,
    Storage,
    ensure_pool,
    lookup_volume,
    volume_format,
    volume_xml,
)
from bollard.agent.drivers.libvirt.trash import Trash
from bollard.agent.drivers.storage import (
    SNAPSHOT_NAME,
    VOLUME_FILE,
    PoolRef,
    PoolStats,
    SnapshotInfo,
    VolumeFormat,
    VolumeInfo,
)
from bollard.domain.errors import (
    DriverError,
    DriverInvalidState,
    DriverNotFound,
    DriverPermanent,
)

T = TypeVar("T")

MIB = 1024 * 1024
TABLE_READ = 64 * 1024  # bytes of a snapshot table read at first (doubled until enough)
TABLE_MAX = 64 * MIB
_FILE = re.compile(VOLUME_FILE)
SNAPSHOT_RE = re.compile(SNAPSHOT_NAME)


def check_name(file: str, pattern: re.Pattern[str] = _FILE, what: str = "volume file") -> str:
    if not pattern.fullmatch(file):
        raise DriverError(f"{file!r} is not a valid {what} name", code="invalid-input")
    return file


def refresh(lib: Any, pool: Any) -> None:
    """Re-read the pool's directory; a refresh refused while libvirt builds a volume in it
    keeps the list libvirt has."""
    try:
        pool.refresh(0)
    except lib.libvirtError as exc:
        if "asynchronous jobs" not in (exc.get_error_message() or ""):
            raise


def volume_info(vol: Any, partial: bool = False) -> VolumeInfo:
    """The volume as Bollard describes it; ``partial``: a running copy is filling it (kept
    once VolumeInfo has that field, see drivers/storage.py; ignored until then)."""
    _type, capacity, allocation = vol.info()
    fmt = volume_format(vol)
    if fmt not in ("qcow2", "raw"):
        raise DriverPermanent(f"volume {vol.name()} is of format {fmt}, not qcow2 or raw")
    return VolumeInfo.model_validate(
        {
            "file": vol.name(),
            "format": fmt,
            "size_mb": int(capacity) // MIB,
            "allocated_mb": -(-int(allocation) // MIB),
            "path": vol.path(),
            "partial": partial,
        }
    )


def physical_bytes(vol: Any) -> int:
    """The size of the volume's file (what a download of it streams)."""
    found = ET.fromstring(vol.XMLDesc(0)).findtext("physical")
    return int(found) if found and found.strip().isdigit() else int(vol.info()[1])


def download(conn: Any, vol: Any, offset: int, length: int) -> bytes:
    """``length`` bytes of the volume's file from ``offset`` (fewer at its end)."""
    stream = conn.newStream(0)
    chunks = []
    try:
        vol.download(stream, offset, length, 0)
        while True:
            chunk = stream.recv(256 * 1024)
            if isinstance(chunk, int) or not chunk:
                break
            chunks.append(chunk)
        stream.finish()
    except BaseException:
        stream.abort()
        raise
    return b"".join(chunks)


def read_snapshots(conn: Any, vol: Any) -> list[Snapshot]:
    """The qcow2 volume's snapshot table (see ``qcow2``)."""
    try:
        where = table_location(download(conn, vol, 0, HEADER_BYTES))
        if where.count == 0:
            return []
        length = TABLE_READ
        while True:
            table = parse_table(download(conn, vol, where.offset, length), where.count)
            if table is not None:
                return table
            if length >= TABLE_MAX:
                raise Qcow2Error("the snapshot table is too large")
            length *= 2
    except Qcow2Error as exc:
        raise DriverPermanent(f"volume {vol.name()}: {exc}") from None


def snapshot_info(snap: Snapshot, current_bytes: int) -> SnapshotInfo:
    size = snap.disk_size if snap.disk_size is not None else current_bytes
    return SnapshotInfo(name=snap.name, created_at=snap.created_at, size_mb=size // MIB)


def unambiguous(snaps: list[Snapshot], name: str, file: str) -> Snapshot | None:
    """The snapshot named ``name``; DriverInvalidState when another one has it as its id
    (qemu-img looks snapshots up by id first, then by name)."""
    clash = [s for s in snaps if s.id == name and s.name != name]
    if clash:
        raise DriverInvalidState(
            f"volume {file}: snapshot name {name!r} is also the id of snapshot "
            f"{clash[0].name!r}; qemu-img cannot tell them apart"
        )
    return next((s for s in snaps if s.name == name), None)


class LibvirtVolumes:
    """Mixed into LibvirtDriver, which provides the attributes and helpers declared here."""

    lib: Any
    storage: Storage
    tools: HostTools
    jobs: JobTable

    async def _call(self, action: str, fn: Callable[[Any], T]) -> T:
        raise NotImplementedError

    # in the connection's threads

    def _pool_of(self, conn: Any, ref: PoolRef) -> Any:
        """The pool of ``ref``, active and refreshed."""
        pool = ensure_pool(self.lib, conn, storage_of(ref, self.storage))
        refresh(self.lib, pool)
        return pool

    def _vol(self, conn: Any, ref: PoolRef, file: str) -> Any:
        vol = lookup_volume(self.lib, self._pool_of(conn, ref), file)
        if vol is None:
            raise DriverNotFound(f"volume {file} is not in pool {ref.name} on this host")
        return vol

    def _qcow2(self, conn: Any, ref: PoolRef, file: str) -> tuple[str, int, list[Snapshot]]:
        """The qcow2 volume's path, size (bytes) and snapshots."""
        vol = self._vol(conn, ref, file)
        if volume_format(vol) != "qcow2":
            raise DriverInvalidState(f"volume {file} is raw: only qcow2 volumes have snapshots")
        return vol.path(), int(vol.info()[1]), read_snapshots(conn, vol)

    # StorageDriver

    @cached_property
    def trash(self) -> Trash:
        """The pools' trash (see ``trash``)."""
        return Trash(self.tools)

    def _first_use(self, pool: PoolRef) -> None:
        """Empty the pool's trash if this process has not yet (what an earlier agent
        process left there)."""
        self.trash.first_use(storage_of(pool, self.storage).image_dir)

    async def pool_stats(self, pool: PoolRef) -> PoolStats:
        self._first_use(pool)
        return await self._call(
            f"read pool {pool.name}", lambda c: pool_stats(self._pool_of(c, pool))
        )

    async def _partial(self, pool: PoolRef) -> set[str]:
        """The files of the pool running copies of this host are filling."""
        directory = storage_of(pool, self.storage).image_dir
        try:
            return partial_targets(await asyncio.to_thread(self.jobs.all), directory)
        except OSError as exc:
            raise DriverPermanent(f"libvirt job records in {self.jobs.dir}: {exc}") from None

    async def list_volumes(self, pool: PoolRef) -> list[VolumeInfo]:
        self._first_use(pool)
        partial = await self._partial(pool)

        def read(conn: Any) -> list[VolumeInfo]:
            vols = self._pool_of(conn, pool).listAllVolumes(0)
            return sorted(
                (volume_info(v, v.name() in partial) for v in vols if _FILE.fullmatch(v.name())),
                key=lambda v: v.file,
            )

        return await self._call(f"list pool {pool.name}", read)

    async def volume(self, pool: PoolRef, file: str) -> VolumeInfo | None:
        check_name(file)
        partial = await self._partial(pool)

        def read(conn: Any) -> VolumeInfo | None:
            vol = lookup_volume(self.lib, self._pool_of(conn, pool), file)
            return None if vol is None else volume_info(vol, file in partial)

        return await self._call(f"read volume {file}", read)

    async def create_volume(
        self, pool: PoolRef, file: str, size_mb: int, fmt: VolumeFormat = "qcow2"
    ) -> VolumeInfo:
        check_name(file)
        if size_mb < 1:
            raise DriverError(
                f"a volume's size must be >= 1 MiB, not {size_mb}", code="invalid-input"
            )

        def create(conn: Any) -> VolumeInfo:
            lib, p = self.lib, self._pool_of(conn, pool)
            vol = lookup_volume(lib, p, file)
            if vol is None:
                try:
                    vol = p.createXML(volume_xml(file, size_mb, fmt), 0)
                except lib.libvirtError:
                    vol = lookup_volume(lib, p, file)  # (made meanwhile?)
                    if vol is None:
                        raise
            info = volume_info(vol)
            if (info.size_mb, info.format) != (size_mb, fmt):
                raise DriverInvalidState(
                    f"volume {file} exists in pool {pool.name} as {info.format} of "
                    f"{info.size_mb} MiB, not {fmt} of {size_mb} MiB"
                )
            return info

        return await self._call(f"create volume {file}", create)

    async def delete_volume(self, pool: PoolRef, file: str) -> bool:
        """Delete the volume through libvirt, its data linked into the pool's trash first
        (see ``trash``): the file is gone at once, its blocks are freed in the background."""
        check_name(file)
        directory = storage_of(pool, self.storage).image_dir
        trash = self.trash  # (made here, in the event loop's thread, if it is the first use)

        def delete(conn: Any) -> bool:
            vol = lookup_volume(self.lib, self._pool_of(conn, pool), file)
            if vol is None:
                return False
            entry = trash.put(directory, file)
            try:
                vol.delete(0)
            except self.lib.libvirtError as exc:
                if code_of(exc) == NO_STORAGE_VOL:  # (deleted meanwhile)
                    return False
                if entry is not None:  # refused: the volume stays, and its data with it
                    trash.take_back(directory, entry)
                    entry = None
                raise
            finally:
                if entry is not None:
                    trash.empty_soon(directory)
            return True

        return await self._call(f"delete volume {file}", delete)

    async def grow_volume(self, pool: PoolRef, file: str, size_mb: int) -> VolumeInfo:
        check_name(file)

        def grow(conn: Any) -> VolumeInfo:
            vol = self._vol(conn, pool, file)
            info = volume_info(vol)
            if size_mb < info.size_mb:
                raise DriverInvalidState(
                    f"volume {file} has {info.size_mb} MiB: it cannot shrink to {size_mb} MiB"
                )
            if size_mb == info.size_mb:
                return info
            try:
                vol.resize(size_mb * MIB, 0)
            except self.lib.libvirtError as exc:
                if in_use(exc.get_error_message() or ""):
                    raise DriverInvalidState(
                        f"volume {file} is in use by a running VM: grow it through the VM"
                    ) from None
                raise
            return volume_info(vol)

        return await self._call(f"grow volume {file}", grow)

    async def checksum(self, pool: PoolRef, file: str) -> str:
        check_name(file)
        info = await self._call(
            f"read volume {file}", lambda c: volume_info(self._vol(c, pool, file))
        )
        return await self.tools.checksum(info.path, info.format, posixpath.dirname(info.path))

    async def create_snapshot(self, pool: PoolRef, file: str, name: str) -> SnapshotInfo:
        check_name(file)
        check_name(name, SNAPSHOT_RE, "snapshot")
        path, size, snaps = await self._snapshots(pool, file)
        found = unambiguous(snaps, name, file)
        if found is None:
            await self.tools.snapshot("-c", name, path)
            _, size, snaps = await self._snapshots(pool, file)
            found = unambiguous(snaps, name, file)
            if found is None:
                raise DriverPermanent(f"volume {file}: snapshot {name} was not taken")
        return snapshot_info(found, size)

    async def _snapshots(self, pool: PoolRef, file: str) -> tuple[str, int, list[Snapshot]]:
        return await self._call(
            f"read the snapshots of {file}", lambda c: self._qcow2(c, pool, file)
        )

    async def list_snapshots(self, pool: PoolRef, file: str) -> list[SnapshotInfo]:
        check_name(file)

        def read(conn: Any) -> list[SnapshotInfo]:
            vol = self._vol(conn, pool, file)
            if volume_format(vol) != "qcow2":
                return []
            size = int(vol.info()[1])
            snaps = sorted(read_snapshots(conn, vol), key=lambda s: s.created_at)
            return [snapshot_info(s, size) for s in snaps]

        return await self._call(f"list the snapshots of {file}", read)

    async def delete_snapshot(self, pool: PoolRef, file: str, name: str) -> bool:
        check_name(file)
        path, _, snaps = await self._snapshots(pool, file)
        if unambiguous(snaps, name, file) is None:
            return False
        await self.tools.snapshot("-d", name, path)
        return True

    async def revert_snapshot(self, pool: PoolRef, file: str, name: str) -> VolumeInfo:
        check_name(file)
        path, _, snaps = await self._snapshots(pool, file)
        if unambiguous(snaps, name, file) is None:
            raise DriverNotFound(f"volume {file} has no snapshot {name}")
        await self.tools.snapshot("-a", name, path)
        return await self._call(
            f"read volume {file}", lambda c: volume_info(self._vol(c, pool, file))
        )
