"""The disks of Bollard's domains: volumes of a libvirt storage pool on each host.

Every host keeps its VMs' disks in a directory pool of its own daemon (``bollard``, at the
agent's ``--libvirt-image-dir``), which the driver defines, builds and starts when it first
needs it. Disk ``i`` of VM ``u`` is the qcow2 volume ``<u>-vd<letter>.qcow2`` (thin: it takes
the room its data takes). Every step goes through libvirt, so the daemon (in its own mount
namespace, or on another machine with a remote URI) is what sees the files.

The disks are local to their host: the image directory must not be shared between hosts
(a copy onto the same file would destroy it), and must be the same path on every host, as
a migrated domain's definition names its disks by path. Migrations copy them:

- live: libvirt's storage copy (``VIR_MIGRATE_NON_SHARED_DISK`` with the disks named in
  ``VIR_MIGRATE_PARAM_MIGRATE_DISKS``); the target's daemon creates the volumes in its own
  pool of that directory before the copy (libvirt's pre-creation looks the pool up by the
  disk's directory), and QEMU mirrors the data while the guest runs;
- offline: the agent streams each volume from the source's daemon to a volume it creates
  in the target's pool (``virStorageVolDownload`` → ``virStorageVolUpload``), then moves
  the definition.

These functions take libvirt objects and run in the connection's threads (or a migration's).
"""

from __future__ import annotations

import logging
import posixpath
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bollard.agent.drivers.base import DiskInfo, DiskSpec, disk_device
from bollard.agent.drivers.libvirt.errors import Err, code_of
from bollard.agent.drivers.libvirt.xml import DomainDisk, DomainFacts, canonical_uuid
from bollard.domain.errors import DriverPermanent

log = logging.getLogger(__name__)

POOL = "bollard"
DEFAULT_IMAGE_DIR = "/var/lib/libvirt/images/bollard"
FORMAT = "qcow2"
CHUNK = 1024 * 1024  # bytes per stream write when copying a volume
_MIB = 1024 * 1024
_NO_STORAGE_POOL = 49  # VIR_ERR_NO_STORAGE_POOL
_NO_STORAGE_VOL = 50  # VIR_ERR_NO_STORAGE_VOL
_VOLUME = re.compile(r"^(?P<uuid>[0-9a-f-]{36})-(?P<dev>vd[a-z])\.qcow2$")


@dataclass(frozen=True)
class Storage:
    """Where a host keeps its VMs' disks: the directory of its pool (absolute, normalised)."""

    image_dir: str
    pool: str = POOL

    def __post_init__(self) -> None:
        if not posixpath.isabs(self.image_dir):
            raise ValueError(f"the image directory must be an absolute path: {self.image_dir!r}")
        object.__setattr__(self, "image_dir", posixpath.normpath(self.image_dir))


def volume_name(uuid: str, device: str) -> str:
    return f"{canonical_uuid(uuid)}-{device}.{FORMAT}"


def owner_of(name: str) -> str | None:
    """The VM uuid a volume of the pool belongs to (None: not a Bollard disk)."""
    m = _VOLUME.match(name)
    return m.group("uuid") if m else None


def pool_xml(storage: Storage) -> str:
    root = ET.Element("pool", {"type": "dir"})
    ET.SubElement(root, "name").text = storage.pool
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "path").text = storage.image_dir
    return ET.tostring(root, encoding="unicode")


def volume_xml(name: str, size_mb: int) -> str:
    root = ET.Element("volume")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "capacity", {"unit": "MiB"}).text = str(size_mb)
    ET.SubElement(root, "allocation").text = "0"
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "format", {"type": FORMAT})
    return ET.tostring(root, encoding="unicode")


def pool_path(pool: Any) -> str:
    path = ET.fromstring(pool.XMLDesc(0)).findtext("target/path") or ""
    return posixpath.normpath(path) if path else ""


def ensure_pool(lib: Any, conn: Any, storage: Storage) -> Any:
    """The host's Bollard pool, active; defined, built and started (autostart on) first if
    need be. DriverPermanent if a pool of that name keeps its volumes elsewhere."""
    try:
        pool = conn.storagePoolLookupByName(storage.pool)
    except lib.libvirtError as exc:
        if code_of(exc) != _NO_STORAGE_POOL:
            raise
        pool = _define_pool(lib, conn, storage)
    there = pool_path(pool)
    if there != storage.image_dir:
        raise DriverPermanent(
            f"libvirt storage pool {storage.pool!r} keeps its volumes in {there}, not in "
            f"{storage.image_dir}: give the agent --libvirt-image-dir {there}, or remove "
            "that pool"
        )
    if not pool.isActive():
        try:
            pool.create(0)
        except lib.libvirtError:
            if not pool.isActive():
                raise  # (started meanwhile by another call: fine)
    return pool


def _define_pool(lib: Any, conn: Any, storage: Storage) -> Any:
    try:
        pool = conn.storagePoolDefineXML(pool_xml(storage), 0)
    except lib.libvirtError:
        # Defined meanwhile by another call? Then that one builds it; else the error stands.
        return conn.storagePoolLookupByName(storage.pool)
    log.info("libvirt storage pool %s defined at %s", storage.pool, storage.image_dir)
    pool.build(0)  # makes the directory; fine if it exists
    pool.setAutostart(1)
    return pool


def lookup_volume(lib: Any, pool: Any, name: str) -> Any | None:
    try:
        return pool.storageVolLookupByName(name)
    except lib.libvirtError as exc:
        if code_of(exc) == _NO_STORAGE_VOL:
            return None
        raise


def ensure_disks(
    lib: Any, conn: Any, storage: Storage, uuid: str, disks: list[DiskSpec]
) -> list[DomainDisk]:
    """The VM's disks as domain XML wants them, each volume created (empty) if missing; a
    volume that exists is kept as it is, whatever its size."""
    if not disks:
        return []
    pool = ensure_pool(lib, conn, storage)
    pool.refresh(0)  # (libvirt's list of volumes is what it last read from the directory)
    out = []
    for index, disk in enumerate(disks):
        device = disk_device(index)
        name = volume_name(uuid, device)
        vol = lookup_volume(lib, pool, name)
        if vol is None:
            try:
                vol = pool.createXML(volume_xml(name, disk.size_mb), 0)
            except lib.libvirtError:
                vol = lookup_volume(lib, pool, name)  # created meanwhile?
                if vol is None:
                    raise
            log.info("VM %s: disk %s created (%d MiB)", uuid, device, disk.size_mb)
        out.append(DomainDisk(path=vol.path(), target=device, format=FORMAT))
    return out


def volumes_of(lib: Any, conn: Any, storage: Storage, uuid: str) -> list[Any]:
    """The volumes of VM ``uuid`` in the host's pool ([] when it has no pool)."""
    try:
        pool = conn.storagePoolLookupByName(storage.pool)
    except lib.libvirtError as exc:
        if code_of(exc) == _NO_STORAGE_POOL:
            return []
        raise
    if not pool.isActive():
        return []
    pool.refresh(0)
    uuid = canonical_uuid(uuid)
    return [v for v in pool.listAllVolumes(0) if owner_of(v.name()) == uuid]


def remove_disks(lib: Any, conn: Any, storage: Storage, uuid: str) -> list[str]:
    """Delete VM ``uuid``'s volumes from the host's pool; their names."""
    removed = []
    for vol in volumes_of(lib, conn, storage, uuid):
        name = vol.name()
        try:
            vol.delete(0)
        except lib.libvirtError as exc:
            if code_of(exc) != _NO_STORAGE_VOL:
                raise
        removed.append(name)
    if removed:
        log.info("VM %s: disks removed: %s", uuid, ", ".join(removed))
    return removed


def disk_infos(lib: Any, conn: Any, facts: DomainFacts) -> list[DiskInfo]:
    """The domain's file-backed disks, with their capacity from their volumes."""
    out = []
    for disk in facts.disks:
        size = 0
        try:
            size = int(conn.storageVolLookupByPath(disk.path).info()[1]) // _MIB
        except lib.libvirtError as exc:
            if code_of(exc) not in (_NO_STORAGE_VOL, _NO_STORAGE_POOL, Err.NO_SUPPORT):
                raise
        out.append(DiskInfo(device=disk.target, size_mb=size, path=disk.path))
    return out


def copied_disks(facts: DomainFacts, storage: Storage) -> list[DomainDisk]:
    """The domain's disks that live in the host's pool (those a migration copies)."""
    return [
        d
        for d in facts.disks
        if not d.readonly and posixpath.dirname(posixpath.normpath(d.path)) == storage.image_dir
    ]


def copy_volume(
    lib: Any,
    source_conn: Any,
    source: Any,
    target_conn: Any,
    target_storage: Storage,
    progress: Callable[[int], None],
) -> None:
    """Copy the volume ``source`` (of the source host's pool) into a volume of the same
    name in the target host's pool: made anew (a leftover of an earlier attempt is replaced),
    then written with the source's bytes through two streams. ``progress(bytes)`` after
    each chunk."""
    pool = ensure_pool(lib, target_conn, target_storage)
    pool.refresh(0)
    name = source.name()
    old = lookup_volume(lib, pool, name)
    if old is not None:
        old.delete(0)
    capacity = int(source.info()[1])
    created = pool.createXML(volume_xml(name, max(1, capacity // _MIB)), 0)
    down = source_conn.newStream(0)
    up = target_conn.newStream(0)
    done = 0
    try:
        source.download(down, 0, 0, 0)
        created.upload(up, 0, 0, 0)
        while True:
            chunk = down.recv(CHUNK)
            if isinstance(chunk, int):  # -2, "would block": only non-blocking streams say so
                raise DriverPermanent(f"copying volume {name}: the stream did not block")
            if not chunk:
                break
            view = memoryview(chunk)
            while view:
                sent = up.send(view.tobytes())
                view = view[sent:]
            done += len(chunk)
            progress(done)
        down.finish()
        up.finish()
    except BaseException:
        for stream in (down, up):
            try:
                stream.abort()
            except lib.libvirtError as exc:
                log.debug("aborting a volume stream: %s", exc)
        raise
