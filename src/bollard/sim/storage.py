"""Storage pools and volumes of sim hosts, in the fabric.

Layout::

    <fabric>/hosts/<node>/pools/<pool>/<file>.json   a volume of a local pool of that host
    <fabric>/shared/<pool>/<file>.json                a volume of a shared pool (every host)
    <pool dir>/.pool.json                             the pool's settings (its capacity)

A pool is known by its name and type (local or shared); the directory the server gives a
pool is only an identifier for the sim, which keeps every pool under the fabric. A pool's
directory is made on first use. Its capacity is 1 TiB unless set (``set_pool_capacity``);
its free room is the capacity less what its volumes allocate (a raw volume its whole size,
a qcow2 volume what the guest wrote). A volume is one JSON record (SimVolume): no bytes are
kept, only a digest standing for the guest-visible content, chained by every write, carried
by copies and migrations, kept per snapshot.

A volume's path, as VMs are defined with it, is ``sim://local/<pool>/<file>`` or
``sim://shared/<pool>/<file>``: a local pool's path names no host (as a local pool has the
same directory on every host), so a VM's definition stays valid when a migration moves the
VM and its local volumes to another host.

A volume a copy job is filling is *partial* (``SimVolume.partial``): the job decides whether
it is there (see bollard.sim.volume_copy). Reads take no lock (records are replaced
atomically); every change is a read-modify-write under the fabric lock. Refusals are
``StorageRefused`` with a code the sim driver turns into its driver errors.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from bollard.domain.states import PowerState
from bollard.durable import TMP_PREFIX, fsync_dir
from bollard.sim.fabric import Fabric
from bollard.sim.files import read_json, report_corrupt, write_json_atomic
from bollard.sim.models import HostPower, JobState, SimVm
from bollard.sim.storage_models import (
    PoolType,
    SimPoolSettings,
    SimSnapshot,
    SimVolume,
    VolumeFormat,
)

__all__ = ["EMPTY_CHECKSUM", "PoolKey", "SimStorage", "StorageRefused", "parse_path"]

log = logging.getLogger(__name__)

EMPTY_CHECKSUM = hashlib.sha256(b"").hexdigest()  # the content of a new, empty volume
MIB = 1024 * 1024
_POOL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")  # as drivers/storage.py's
_SNAPSHOT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")
_SETTINGS = ".pool.json"
PATH_PREFIX = "sim://"


class StorageRefused(Exception):
    """A storage operation was refused; nothing was changed. ``code``: not-found,
    invalid-state, temporary or insufficient-capacity (as the driver errors)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class PoolKey:
    """A pool as the sim knows it: its name and type."""

    name: str
    type: PoolType

    def __post_init__(self) -> None:
        if not _POOL_NAME.match(self.name):
            raise ValueError(f"invalid pool name {self.name!r}")
        if self.type not in ("local", "shared"):
            raise ValueError(f"invalid pool type {self.type!r}: local or shared")

    def __str__(self) -> str:
        return f"{self.type} pool {self.name}"


def check_file(file: str) -> str:
    if not _FILE.match(file):
        raise ValueError(f"{file!r} is not a volume file name")
    return file


def volume_path(pool: PoolKey, file: str) -> str:
    """The path VMs are defined with: ``sim://<type>/<pool>/<file>``."""
    return f"{PATH_PREFIX}{pool.type}/{pool.name}/{check_file(file)}"


def parse_path(path: str) -> tuple[PoolKey, str] | None:
    """The pool and file of a sim volume path; None if ``path`` is not one."""
    if not path.startswith(PATH_PREFIX):
        return None
    parts = path[len(PATH_PREFIX) :].split("/")
    if len(parts) != 3 or parts[0] not in ("local", "shared"):
        return None
    kind, name, file = parts
    if not _POOL_NAME.match(name) or not _FILE.match(file):
        return None
    return PoolKey(name, "local" if kind == "local" else "shared"), file


def chained(checksum: str, chunks: Iterable[bytes]) -> str:
    """The digest of a volume's content after writing ``chunks`` over ``checksum``'s."""
    digest = hashlib.sha256(bytes.fromhex(checksum))
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


class SimStorage:
    """The pools and volumes of one fabric, seen from any host (``node``: the host whose
    local pools are meant; shared pools are the same from every host)."""

    def __init__(self, fabric: Fabric) -> None:
        self.fabric = fabric

    # pools

    def pool_dir(self, node: str, pool: PoolKey) -> Path:
        if pool.type == "shared":
            return self.fabric.root / "shared" / pool.name
        return self.fabric.host(node).dir / "pools" / pool.name

    def pools(self, node: str | None) -> list[PoolKey]:
        """The pools that have a directory: ``node``'s local ones (None: the shared ones)."""
        parent = self.fabric.root / "shared" if node is None else self.fabric.host(node).dir
        if node is not None:
            parent = parent / "pools"
        try:
            names = sorted(e.name for e in os.scandir(parent) if e.is_dir())
        except FileNotFoundError:
            return []
        kind: PoolType = "shared" if node is None else "local"
        return [PoolKey(n, kind) for n in names if _POOL_NAME.match(n)]

    def ensure_pool(self, node: str, pool: PoolKey) -> Path:
        directory = self.pool_dir(node, pool)
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def settings(self, node: str, pool: PoolKey) -> SimPoolSettings:
        path = self.pool_dir(node, pool) / _SETTINGS
        data = read_json(path)
        if data is None:
            return SimPoolSettings()
        try:
            return SimPoolSettings.model_validate(data)
        except ValidationError as exc:
            report_corrupt(path, f"invalid pool settings: {exc.error_count()} errors")
            return SimPoolSettings()

    def set_pool_capacity(self, node: str, pool: PoolKey, capacity_mb: int) -> SimPoolSettings:
        """Set the pool's capacity (MiB) on ``node`` (for a shared pool: everywhere)."""
        settings = SimPoolSettings(capacity_mb=capacity_mb)
        with self.fabric.lock():
            directory = self.ensure_pool(node, pool)
            write_json_atomic(directory / _SETTINGS, settings.model_dump(mode="json"))
        return settings

    def stats(self, node: str, pool: PoolKey, now: float) -> tuple[int, int]:
        """(capacity, free) in MiB; the pool is made if it was not there."""
        self.ensure_pool(node, pool)
        capacity = self.settings(node, pool).capacity_mb
        used = sum(v.allocated_mb for v in self._records(node, pool, now))
        return capacity, max(0, capacity - used)

    def check_room(self, node: str, pool: PoolKey, need_mb: int, now: float) -> None:
        if need_mb <= 0:
            return
        _, free = self.stats(node, pool, now)
        if need_mb > free:
            where = "" if pool.type == "shared" else f" on {node}"
            raise StorageRefused(
                "insufficient-capacity",
                f"{pool}{where} has {free} MiB free, {need_mb} MiB needed",
            )

    # volume records

    def _file(self, node: str, pool: PoolKey, file: str) -> Path:
        return self.pool_dir(node, pool) / f"{check_file(file)}.json"

    def _load(self, path: Path) -> SimVolume | None:
        data = read_json(path)
        if data is None:
            return None
        try:
            rec = SimVolume.model_validate(data)
        except ValidationError as exc:
            report_corrupt(path, f"invalid volume record: {exc.error_count()} errors")
            return None
        if f"{rec.file}.json" != path.name:
            report_corrupt(path, f"file name does not match volume {rec.file}")
            return None
        return rec

    def resolve(self, rec: SimVolume, now: float) -> SimVolume | None:
        """The volume as it is at ``now``: a partial one whose copy completed is whole; one
        whose copy was aborted, failed or is unknown is a leftover, absent (None)."""
        if rec.partial is None:
            return rec
        job = self.fabric.host(rec.partial.node).jobs.get(rec.partial.command_id)
        state = job.state(now) if job is not None else None
        if state == JobState.RUNNING:
            return rec
        if state == JobState.COMPLETED:
            return rec.model_copy(update={"partial": None})
        return None

    def raw(self, node: str, pool: PoolKey, file: str) -> SimVolume | None:
        """The volume's record as stored (a partial one unresolved)."""
        return self._load(self._file(node, pool, file))

    def get(self, node: str, pool: PoolKey, file: str, now: float) -> SimVolume | None:
        rec = self.raw(node, pool, file)
        return None if rec is None else self.resolve(rec, now)

    def _records(self, node: str, pool: PoolKey, now: float) -> list[SimVolume]:
        try:
            entries = list(os.scandir(self.pool_dir(node, pool)))
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            name = entry.name
            if name.startswith((TMP_PREFIX, ".")) or not name.endswith(".json"):
                continue
            rec = self._load(Path(entry.path))
            resolved = None if rec is None else self.resolve(rec, now)
            if resolved is not None:
                found.append(resolved)
            elif rec is not None and rec.partial is not None:
                # The leftover of a copy that died: no volume (``get`` says absent), but a file
                # the pool holds, listed as partial so that the reconciler removes it.
                found.append(rec)
        return found

    def volumes(self, node: str, pool: PoolKey, now: float) -> list[SimVolume]:
        """The pool's files on ``node``, sorted by file: its volumes, the targets of copies
        under way and the leftovers of copies that died (both flagged ``partial``)."""
        return sorted(self._records(node, pool, now), key=lambda v: v.file)

    def put(self, node: str, pool: PoolKey, rec: SimVolume) -> SimVolume:
        """Write a volume record (stamps ``updated_at``; the caller holds the lock)."""
        rec = rec.model_copy(update={"updated_at": time.time()})
        with self.fabric.lock():
            self.ensure_pool(node, pool)
            write_json_atomic(self._file(node, pool, rec.file), rec.model_dump(mode="json"))
        return rec

    def remove(self, node: str, pool: PoolKey, file: str) -> bool:
        path = self._file(node, pool, file)
        with self.fabric.lock():
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            with contextlib.suppress(FileNotFoundError):
                fsync_dir(path.parent)
            return True

    def _whole(self, node: str, pool: PoolKey, file: str, now: float) -> SimVolume:
        """The volume, which must exist and not be partial (the caller holds the lock)."""
        rec = self.get(node, pool, file, now)
        if rec is None:
            where = "" if pool.type == "shared" else f" on {node}"
            raise StorageRefused("not-found", f"no volume {file} in {pool}{where}")
        if rec.partial is not None:
            raise StorageRefused(
                "invalid-state",
                f"volume {file} in {pool} is being copied into (job {rec.partial.command_id})",
            )
        return rec

    # volumes

    def create(
        self, node: str, pool: PoolKey, file: str, size_mb: int, fmt: VolumeFormat, now: float
    ) -> SimVolume:
        """A new empty volume; the existing one if it has that size and format."""
        if size_mb < 1:
            raise ValueError(f"a volume's size must be at least 1 MiB, not {size_mb}")
        with self.fabric.lock():
            rec = self.get(node, pool, file, now)
            if rec is not None:
                if rec.partial is None and (rec.size_mb, rec.format) == (size_mb, fmt):
                    return rec
                what = "being copied into" if rec.partial else f"{rec.format}, {rec.size_mb} MiB"
                raise StorageRefused("invalid-state", f"volume {file} in {pool} exists ({what})")
            new = SimVolume(
                file=file, format=fmt, size_mb=size_mb, checksum=EMPTY_CHECKSUM, created_at=now
            )
            self.check_room(node, pool, new.allocated_mb, now)
            return self.put(node, pool, new)

    def delete(self, node: str, pool: PoolKey, file: str, now: float) -> bool:
        """Delete the volume and its snapshots (a leftover of an ended copy too); False if
        it was not there. Refused while a copy is filling it."""
        with self.fabric.lock():
            rec = self.raw(node, pool, file)
            if rec is None:
                return False
            resolved = self.resolve(rec, now)
            if resolved is not None and resolved.partial is not None:
                raise StorageRefused(
                    "invalid-state",
                    f"volume {file} in {pool} is being copied into "
                    f"(job {resolved.partial.command_id}): abort the copy first",
                )
            self.remove(node, pool, file)
            return resolved is not None

    def grow(self, node: str, pool: PoolKey, file: str, size_mb: int, now: float) -> SimVolume:
        with self.fabric.lock():
            rec = self._whole(node, pool, file, now)
            if size_mb == rec.size_mb:
                return rec
            if size_mb < rec.size_mb:
                raise StorageRefused(
                    "invalid-state",
                    f"volume {file} is {rec.size_mb} MiB: shrinking to {size_mb} MiB is refused",
                )
            grown = rec.model_copy(update={"size_mb": size_mb})
            self.check_room(node, pool, grown.allocated_mb - rec.allocated_mb, now)
            return self.put(node, pool, grown)

    def write(
        self, node: str, pool: PoolKey, file: str, chunks: Iterable[bytes], now: float
    ) -> SimVolume:
        """Write ``chunks`` at the start of the volume, out of band, as a guest would: its
        checksum changes, its allocation covers what was written."""
        with self.fabric.lock():
            rec = self._whole(node, pool, file, now)
            length = 0

            def counted() -> Iterable[bytes]:
                nonlocal length
                for chunk in chunks:
                    length += len(chunk)
                    yield chunk

            checksum = chained(rec.checksum, counted())
            data_mb = min(rec.size_mb, max(rec.data_mb, math.ceil(length / MIB)))
            changed = rec.model_copy(update={"checksum": checksum, "data_mb": data_mb})
            return self.put(node, pool, changed)

    # snapshots

    def _check_unused(self, node: str, pool: PoolKey, file: str) -> None:
        """Refuse while a running VM has the volume open."""
        users = self.running_users(node, pool, file)
        if users:
            who = ", ".join(f"{vm.name} on {host}" for host, vm in users)
            raise StorageRefused("invalid-state", f"volume {file} is in use by running VM {who}")

    def running_users(self, node: str, pool: PoolKey, file: str) -> list[tuple[str, SimVm]]:
        """The running (or paused) VMs that have the volume among their disks."""
        path = volume_path(pool, file)
        hosts = self.fabric.hosts() if pool.type == "shared" else [self.fabric.host(node)]
        users = []
        for host in hosts:
            for vm in host.list_vms():
                if vm.power in (PowerState.STOPPED, PowerState.CRASHED):
                    continue
                if any(d.path == path for d in vm.drives):
                    users.append((host.node, vm))
        return users

    def create_snapshot(
        self, node: str, pool: PoolKey, file: str, name: str, now: float
    ) -> SimSnapshot:
        if not _SNAPSHOT.match(name):
            raise ValueError(f"{name!r} is not a snapshot name")
        with self.fabric.lock():
            rec = self._whole(node, pool, file, now)
            snap = rec.snapshots.get(name)
            if snap is not None:
                return snap
            if rec.format != "qcow2":
                raise StorageRefused(
                    "invalid-state", f"volume {file} is raw: only qcow2 volumes have snapshots"
                )
            self._check_unused(node, pool, file)
            snap = SimSnapshot(
                checksum=rec.checksum, size_mb=rec.size_mb, data_mb=rec.data_mb, created_at=now
            )
            snapshots = {**rec.snapshots, name: snap}
            self.put(node, pool, rec.model_copy(update={"snapshots": snapshots}))
            return snap

    def snapshots(
        self, node: str, pool: PoolKey, file: str, now: float
    ) -> list[tuple[str, SimSnapshot]]:
        """The volume's snapshots, oldest first."""
        rec = self._whole(node, pool, file, now)
        return sorted(rec.snapshots.items(), key=lambda kv: (kv[1].created_at, kv[0]))

    def delete_snapshot(self, node: str, pool: PoolKey, file: str, name: str, now: float) -> bool:
        with self.fabric.lock():
            rec = self._whole(node, pool, file, now)
            if name not in rec.snapshots:
                return False
            self._check_unused(node, pool, file)
            left = {k: v for k, v in rec.snapshots.items() if k != name}
            self.put(node, pool, rec.model_copy(update={"snapshots": left}))
            return True

    def revert_snapshot(
        self, node: str, pool: PoolKey, file: str, name: str, now: float
    ) -> SimVolume:
        """Put the volume's content and size back to the snapshot's (as qcow2 does when it
        applies an internal snapshot); the snapshot is kept."""
        with self.fabric.lock():
            rec = self._whole(node, pool, file, now)
            snap = rec.snapshots.get(name)
            if snap is None:
                raise StorageRefused("not-found", f"volume {file} has no snapshot {name}")
            self._check_unused(node, pool, file)
            back = {"checksum": snap.checksum, "size_mb": snap.size_mb, "data_mb": snap.data_mb}
            return self.put(node, pool, rec.model_copy(update=back))

    # migrations: a VM's volumes in local pools move with it

    def local_volumes(self, vm: SimVm) -> list[tuple[PoolKey, str]]:
        """The volumes of local pools among the VM's disks."""
        found = []
        for disk in vm.drives:
            parsed = parse_path(disk.path)
            if parsed is not None and parsed[0].type == "local":
                found.append(parsed)
        return found

    def conflicts(self, target: str, vm: SimVm, now: float) -> list[str]:
        """The VM's local volumes that host ``target`` already has (a migration would
        overwrite them)."""
        return [
            f"{file} ({pool})"
            for pool, file in self.local_volumes(vm)
            if self.get(target, pool, file, now) is not None
        ]

    def move_in(self, source: str, target: str, vm: SimVm, now: float) -> None:
        """Copy the VM's local volumes (their records: content, snapshots) from ``source``
        to ``target`` as they are (the caller holds the lock; redoing it is harmless)."""
        for pool, file in self.local_volumes(vm):
            rec = self.get(source, pool, file, now)
            if rec is None:
                log.warning(
                    "sim migration of %s: volume %s (%s) is missing on %s; not moved",
                    vm.uuid,
                    file,
                    pool,
                    source,
                )
                continue
            self.put(target, pool, rec)

    def move_out(self, source: str, vm: SimVm) -> None:
        """Remove the VM's local volumes from ``source`` once it has moved."""
        for pool, file in self.local_volumes(vm):
            self.remove(source, pool, file)


def host_is_on(fabric: Fabric, node: str) -> bool:
    rec = fabric.host(node).record()
    return rec is not None and rec.power == HostPower.ON
