"""Bollard's pools (drivers/storage.py's ``PoolRef``) as libvirt directory pools.

Every storage command names its pool; the driver makes the daemon's pool for it on first use
(``ensure_pool``: defined, built, started, autostart on) and keeps no pool configuration of
its own. Names in libvirt:

- ``bollard``: a local pool whose path is "" (the host's default storage directory) or the
  driver's ``image_dir`` itself: the legacy pool, where VM disks lived before pools existed,
  so that existing disks and migrations keep working;
- ``bollard-<pool name>``: every other pool, with a uuid derived from its type, name and
  path (``pool_uuid``). The daemon's definition thus says which kind of pool a directory is
  (``bollard_pools``): a migration copies the disks in local pools and leaves those in
  shared pools where they are, even after the agent restarted and before it saw any
  PoolRef. A pool made again with another path or type gets its definition replaced.

These functions take libvirt objects and run in the connection's threads.
"""

from __future__ import annotations

import posixpath
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any

from bollard.agent.drivers.libvirt.storage import POOL, Storage, pool_path
from bollard.agent.drivers.libvirt.xml import DomainDisk
from bollard.agent.drivers.storage import PoolRef, PoolStats
from bollard.domain.errors import DriverPermanent

PREFIX = "bollard-"
_NS = uuidlib.UUID("0b9c1f6e-3a57-4f1e-9d51-7c8f2a4b6e10")  # Bollard's pool uuids
_MIB = 1024 * 1024


def pool_uuid(kind: str, name: str, path: str) -> str:
    """The uuid of the libvirt pool of Bollard's pool ``name`` of type ``kind`` at ``path``."""
    return str(uuidlib.uuid5(_NS, f"{kind}\n{name}\n{path}"))


def storage_of(ref: PoolRef, legacy: Storage) -> Storage:
    """The libvirt pool of ``ref`` on a host whose legacy pool is ``legacy``.

    DriverPermanent for a shared pool without a path, or at the legacy pool's directory
    (which is each host's own)."""
    if ref.path in ("", legacy.image_dir):
        if ref.type == "shared":
            where = ref.path or "the host's default directory"
            raise DriverPermanent(
                f"shared pool {ref.name} is at {where}, the directory of this host's own "
                "disks: a shared pool needs a directory of its own that every host mounts"
            )
        return legacy
    return Storage(
        ref.path,
        PREFIX + ref.name,
        uuid=pool_uuid(ref.type, ref.name, ref.path),
        shared=ref.type == "shared",
    )


def kind_of(name: str, uuid: str, path: str, legacy: Storage) -> Storage | None:
    """The Bollard pool a libvirt pool is (None: not one of Bollard's)."""
    if name == POOL:
        return legacy if path == legacy.image_dir else None
    if not name.startswith(PREFIX) or not path:
        return None
    short = name.removeprefix(PREFIX)
    for kind in ("local", "shared"):
        if uuid == pool_uuid(kind, short, path):
            return Storage(path, name, uuid=uuid, shared=kind == "shared")
    return None


def bollard_pools(conn: Any, legacy: Storage) -> dict[str, Storage]:
    """The daemon's pools that are Bollard's, by directory."""
    found: dict[str, Storage] = {}
    for pool in conn.listAllStoragePools(0):
        path = pool_path(pool)
        storage = kind_of(pool.name(), pool.UUIDString(), path, legacy)
        if storage is not None:
            found[path] = storage
    return found


@dataclass(frozen=True)
class DiskPlacement:
    """Where a domain's disks are, as a migration sees them."""

    copied: list[tuple[DomainDisk, Storage]]  # in local pools: copied to the target
    shared: list[tuple[DomainDisk, Storage]]  # in shared pools: the target opens the same file


def placement(conn: Any, disks: list[DomainDisk], legacy: Storage) -> DiskPlacement:
    """Which of the domain's (writable, file) disks a migration copies: those in local
    pools. Disks in shared pools stay; disks in no pool of Bollard's are neither (as
    before pools existed, libvirt decides whether it can migrate with them)."""
    pools = bollard_pools(conn, legacy)
    copied: list[tuple[DomainDisk, Storage]] = []
    shared: list[tuple[DomainDisk, Storage]] = []
    for disk in disks:
        if disk.readonly:
            continue
        storage = pools.get(posixpath.dirname(posixpath.normpath(disk.path)))
        if storage is None:
            continue
        (shared if storage.shared else copied).append((disk, storage))
    return DiskPlacement(copied, shared)


def pool_stats(pool: Any) -> PoolStats:
    """The pool's file system's size and free room, from ``virStoragePoolGetInfo``."""
    _state, capacity, _allocation, available = pool.info()
    return PoolStats(capacity_mb=int(capacity) // _MIB, free_mb=int(available) // _MIB)
