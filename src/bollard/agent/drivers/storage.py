"""The storage interface of hypervisor drivers: pools, volumes, snapshots, copies, and the
disks of defined VMs (optional facilities, checked with ``isinstance``).

A **pool** is a directory of volume files: ``local`` (each host has its own, at the same
path; a volume in it lives on one host) or ``shared`` (every host of the pool mounts the same
directory: a volume in it is reachable from each). The server defines pools; every storage
command carries the pool it concerns as a ``PoolRef`` (name, type, absolute path), so drivers
keep no pool configuration of their own. A pool a driver has not seen yet is made (its
directory created, libvirt's dir pool defined and started) on first use.

A **volume** is one file of a pool, named by the server (``file``: a plain file name, no
directory part). Formats: ``qcow2`` (thin) and ``raw``. Sizes are in MiB. Operations are
idempotent where the operation allows it: creating a volume that exists with the same size
and format returns it, deleting an absent one succeeds (``False``), growing to the size it has
does nothing. Shrinking is refused (``DriverInvalidState``).

**Snapshots** are internal snapshots of a volume (qcow2's; the sim keeps a content checksum
per snapshot), named by the server. They are taken and reverted only while no running VM has
the volume open (the server checks; drivers may refuse with ``DriverInvalidState``).

The hypervisor drivers that have storage (``sim``, ``libvirt``) implement these protocols
themselves, so copies share the driver's jobs and disks share its domains.

**Copies** (``StorageCopier``) run as hypervisor jobs of the driver's ``JobDriver``: a volume
of this host's pool (or a snapshot of it) is copied to a file of a pool on this host or on
another one (``target`` node, with that host's ``migration_endpoint`` forwarded by the server).
The job's ``result`` is ``{"volume": VolumeInfo}`` of the new file on the target. A copy that
is aborted or fails removes its partial target file. A copy is ``supervised``: the cancel
hooks abort it when the agent restarts or loses its server.

The **checksum** of a volume is a digest of its guest-visible content (not of the file: two
qcow2 files holding the same data have the same checksum), so tests can prove data moved.

A volume's **image** is what carries it to a host that shares nothing with this one (a host
of another cell, through the cells' image spools): ``export_volume`` gives it as bytes, in
chunks (a directory pool's file as it is, qcow2 or raw; the sim's a small JSON document of
its volume record), and ``import_volume`` makes a new volume from such bytes, under a
temporary name renamed once the image is whole and checked, so a volume never appears half
written under its name. Exporting the same unchanged volume twice gives the same bytes.

Errors are the Driver* errors of bollard.domain.errors: DriverNotFound (no such volume or
snapshot), DriverInvalidState (shrink, snapshot of a volume in use, a target file that
exists), DriverTemporary (the pool's directory is not reachable now), DriverPermanent.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bollard.agent.drivers.base import JobInfo

# A volume's file name in its pool: no directory part, no leading dot.
VOLUME_FILE = r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$"
SNAPSHOT_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$"
VolumeFormat = Literal["qcow2", "raw"]
PoolType = Literal["local", "shared"]
_VOLUME_FILE = re.compile(VOLUME_FILE)
IMAGE_CHUNK = 1024 * 1024  # bytes: the most one chunk of an exported image holds


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class PoolRef(_Model):
    """A pool as the server defines it."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    type: PoolType
    # An absolute directory; "" (local pools only): the host's default storage directory
    # (the libvirt driver's --libvirt-image-dir, where VM disks lived before pools existed).
    path: str = Field(default="", max_length=1024)

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if value == "":
            return value
        if not posixpath.isabs(value) or "\x00" in value:
            raise ValueError(f"a pool's path must be an absolute path: {value!r}")
        return posixpath.normpath(value)


def check_file(file: str) -> str:
    """``file`` if it is a valid volume file name, else ValueError."""
    if not _VOLUME_FILE.fullmatch(file):
        raise ValueError(f"{file!r} is not a volume file name")
    return file


class PoolStats(_Model):
    """A pool as a host sees it: its file system's size and free room (MiB)."""

    capacity_mb: int = Field(ge=0)
    free_mb: int = Field(ge=0)


class VolumeInfo(_Model):
    """One volume file of a pool."""

    file: str
    format: VolumeFormat
    size_mb: int = Field(ge=0)  # its virtual size (what the guest sees)
    allocated_mb: int = Field(ge=0)  # what it takes on disk
    path: str = ""  # where the host has it (a sim volume has a sim:// path)
    # The target of a copy still running (or left by one that died): not a volume yet.
    partial: bool = False


class SnapshotInfo(_Model):
    name: str
    created_at: float  # seconds since the epoch (host clock)
    size_mb: int = Field(ge=0)  # the volume's size when it was taken


@runtime_checkable
class StorageDriver(Protocol):
    async def pool_stats(self, pool: PoolRef) -> PoolStats:
        """The pool's capacity and free room on this host (made first if need be).
        DriverTemporary: its directory cannot be reached or made now."""
        ...

    async def list_volumes(self, pool: PoolRef) -> list[VolumeInfo]:
        """Every volume file of the pool on this host, sorted by file name."""
        ...

    async def volume(self, pool: PoolRef, file: str) -> VolumeInfo | None:
        """The volume, or None if the pool has no such file."""
        ...

    async def create_volume(
        self, pool: PoolRef, file: str, size_mb: int, fmt: VolumeFormat = "qcow2"
    ) -> VolumeInfo:
        """Create an empty volume (idempotent: an existing file of that size and format is
        returned; one of another size or format: DriverInvalidState)."""
        ...

    async def delete_volume(self, pool: PoolRef, file: str) -> bool:
        """Delete the volume and its snapshots; False if it was not there."""
        ...

    async def grow_volume(self, pool: PoolRef, file: str, size_mb: int) -> VolumeInfo:
        """Grow the volume to ``size_mb`` (the same size: nothing to do; smaller:
        DriverInvalidState). For a volume a running VM has open, use ``VolumeAttacher``."""
        ...

    async def checksum(self, pool: PoolRef, file: str) -> str:
        """A digest of the volume's guest-visible content (hex)."""
        ...

    async def create_snapshot(self, pool: PoolRef, file: str, name: str) -> SnapshotInfo:
        """Take an internal snapshot (idempotent by name)."""
        ...

    async def list_snapshots(self, pool: PoolRef, file: str) -> list[SnapshotInfo]:
        """The volume's snapshots, oldest first."""
        ...

    async def delete_snapshot(self, pool: PoolRef, file: str, name: str) -> bool:
        """False if the volume has no such snapshot."""
        ...

    async def revert_snapshot(self, pool: PoolRef, file: str, name: str) -> VolumeInfo:
        """Put the volume's content back to the snapshot's (the snapshot is kept)."""
        ...

    def export_volume(self, pool: PoolRef, file: str) -> AsyncIterator[bytes]:
        """The volume's image, in chunks of at most IMAGE_CHUNK bytes (close the iterator
        when it is not read to its end). Checked before the first chunk: DriverNotFound (no
        such volume), DriverInvalidState (a copy is filling it, or a running VM has it
        open)."""
        ...

    async def import_volume(
        self,
        pool: PoolRef,
        file: str,
        fmt: VolumeFormat,
        size_mb: int,
        chunks: AsyncIterator[bytes],
    ) -> VolumeInfo:
        """A new volume ``file`` made from an image (``export_volume``'s bytes), which must
        be of format ``fmt`` and ``size_mb`` MiB (else DriverPermanent, code invalid-input:
        nothing is left). The bytes go to a temporary name, renamed once whole and checked:
        an error of the driver's or of ``chunks`` (its iteration may raise, e.g. for a
        digest that does not match) leaves nothing. Idempotent: the file there already with
        the same content is returned as it is; with other content: DriverInvalidState
        (nothing changed)."""
        ...


@runtime_checkable
class StorageCopier(Protocol):
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
        """Start copying the volume (or its snapshot ``snapshot``) into a new file
        ``target_file`` of ``target_pool`` on host ``target`` (this host's own node name for
        a copy within the host), as the job of ``command_id`` (idempotent: an existing job of
        that command is returned as it is). ``fmt``: the new file's format (default: the
        source's). Refused with nothing done: DriverNotFound (no such volume or snapshot),
        DriverInvalidState (the target file exists), DriverTemporary (target unreachable).
        The completed job's ``result`` is ``{"volume": VolumeInfo}`` (on the target)."""
        ...


class AttachSpec(_Model):
    """A volume to attach to a VM as ``device`` (vdb, vdc, ...)."""

    device: str = Field(pattern=r"^vd[a-p]$")
    path: str = Field(min_length=1, max_length=4096)
    format: VolumeFormat = "qcow2"


@runtime_checkable
class VolumeAttacher(Protocol):
    async def attach_volume(self, uuid: str, disk: AttachSpec) -> None:
        """Add the disk to the VM's definition, and to the running guest when it runs
        (hot-plug). Idempotent: a disk already at that device with that path is fine; another
        path at that device: DriverInvalidState. DriverNotFound: no such VM here."""
        ...

    async def detach_volume(self, uuid: str, device: str) -> bool:
        """Remove the disk from the VM's definition and from the running guest (hot-unplug;
        DriverTemporary if the guest does not release it in time). False if the VM has no
        disk at that device. DriverNotFound: no such VM here."""
        ...

    async def resize_attached(self, uuid: str, device: str, size_mb: int) -> None:
        """Grow a disk of a running VM (the guest sees the new size at once)."""
        ...


class LockHolder(_Model):
    """Who holds a volume of a shared pool open: the host, the VM, the VM's ownership epoch
    there, and the host's boot id when it took the lock (a lock from before the host's reboot
    is stale)."""

    node: str = Field(min_length=1, max_length=63)
    vm_uuid: str = Field(min_length=1, max_length=36)
    epoch: int = Field(ge=0)
    boot_id: str = Field(default="", max_length=64)
    taken_at: float = 0.0


@runtime_checkable
class VolumeLocker(Protocol):
    """Locks of volumes of shared pools, kept where every host of the pool sees them (the sim:
    its fabric; a real shared directory: lock files beside the volumes, see
    agent/volume_locks.py). Writes are compare-and-set, so two hosts never both believe they
    took a lock."""

    async def read_lock(self, pool: PoolRef, file: str) -> LockHolder | None:
        """The volume's lock holder (None: not locked)."""
        ...

    async def write_lock(
        self, pool: PoolRef, file: str, holder: LockHolder, *, expect: LockHolder | None
    ) -> bool:
        """Make ``holder`` the lock's holder if the lock is held by ``expect`` now (None: not
        locked); False (nothing written) if it is not."""
        ...

    async def remove_lock(self, pool: PoolRef, file: str, *, expect: LockHolder) -> bool:
        """Remove the lock if ``expect`` holds it; False otherwise."""
        ...


@runtime_checkable
class LiveVolumeMover(Protocol):
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
        """Start moving the disk at ``device`` of running VM ``uuid`` to a new file
        ``target_file`` of ``target_pool`` on this host while the guest runs, as the job of
        ``command_id`` (idempotent by command id): a block copy that mirrors the guest's writes
        and, once in sync, pivots (the guest then uses the new file; its definition names it).
        The completed job's ``result`` is ``{"volume": VolumeInfo, "path": new path}``. Aborted
        or failed before the pivot: the guest keeps the old file and the partial target is
        removed. Refused with nothing done: DriverNotFound (no such VM or disk),
        DriverInvalidState (the VM is not running, the target file exists). A supervised job:
        the cancel hooks abort it (before its pivot) when the agent restarts or loses its
        server."""
        ...
