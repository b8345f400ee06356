"""The disks of Bollard's domains: volumes of libvirt storage pools on each host.

Legacy disks (a ``DiskSpec`` without ``path``): every host keeps them in a directory pool of
its own daemon (``bollard``, at the agent's ``--libvirt-image-dir``), which the driver
defines, builds and starts when it first needs it. Disk ``vdX`` of VM ``u`` is the qcow2
volume ``<u>-vdX.qcow2`` (thin: it takes the room its data takes). ``undefine`` removes them.

Volumes of Bollard's pools (a ``DiskSpec`` with ``path``, see ``pools``) are used as they
are: the domain's disk carries the user alias ``ua-bollard-vol-<dev>`` (see ``xml``), so
``undefine`` knows to leave them (the server deletes volumes).

Every step on a pool goes through libvirt, so the daemon (in its own mount namespace, or
on another machine with a remote URI) is what sees the files.

The legacy disks are local to their host: the image directory must not be shared between
hosts (a copy onto the same file would destroy it), and must be the same path on every host,
as a migrated domain's definition names its disks by path. Migrations copy the disks in
local pools (the legacy one and Bollard's local pools, see ``pools``) and leave the disks in
shared pools where they are:

- live: libvirt's storage copy (``VIR_MIGRATE_NON_SHARED_DISK`` with the disks named in
  ``VIR_MIGRATE_PARAM_MIGRATE_DISKS``); the target's daemon creates the volumes in its own
  pool of that directory before the copy (libvirt's pre-creation looks the pool up by the
  disk's directory: the source defines it there first), and QEMU mirrors the data while
  the guest runs;
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
from bollard.domain.errors import DriverPermanent, DriverTemporary

log = logging.getLogger(__name__)

POOL = "bollard"
DEFAULT_IMAGE_DIR = "/var/lib/libvirt/images/bollard"
FORMAT = "qcow2"
CHUNK = 1024 * 1024  # bytes per stream write when copying a volume
_MIB = 1024 * 1024
NO_STORAGE_POOL = 49  # VIR_ERRNO_STORAGE_POOL
NO_STORAGE_VOL = 50  # VIR_ERRNO_STORAGE_VOL
_VOLUME = re.compile(r"^(?P<uuid>[0-9a-f-]{36})-(?P<dev>vd[a-z])\.qcow2$")


@dataclass(frozen=True)
class Storage:
    """A directory pool of the daemon: its directory (absolute, normalised) and name.

    The legacy pool (``bollard``, where legacy disks live) has no ``uuid``: libvirt picks
    one. Bollard's other pools (see ``pools``) have one derived from the pool's type, name
    and path, so that the daemon's definition tells which kind of pool it is; ``shared``:
    every host sees the same directory (the driver never creates it: it must be mounted).
    """

    image_dir: str
    pool: str = POOL
    uuid: str | None = None
    shared: bool = False

    def __post_init__(self) -> None:
        if not posixpath.isabs(self.image_dir):
            raise ValueError(f"the image directory must be an absolute path: {self.image_dir!r}")
        object.__setattr__(self, "image_dir", posixpath.normpath(self.image_dir))

    def path_of(self, file: str) -> str:
        return posixpath.join(self.image_dir, file)


def volume_name(uuid: str, device: str) -> str:
    return f"{canonical_uuid(uuid)}-{device}.{FORMAT}"


def owner_of(name: str) -> str | None:
    """The VM uuid a volume of the pool belongs to (None: not a Bollard disk)."""
    m = _VOLUME.match(name)
    return m.group("uuid") if m else None


def pool_xml(storage: Storage) -> str:
    root = ET.Element("pool", {"type": "dir"})
    ET.SubElement(root, "name").text = storage.pool
    if storage.uuid is not None:
        ET.SubElement(root, "uuid").text = storage.uuid
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "path").text = storage.image_dir
    return ET.tostring(root, encoding="unicode")


def volume_xml(name: str, size_mb: int, fmt: str = FORMAT) -> str:
    """A new volume: thin (no allocation); qcow2 in version 3 (``compat`` 1.1), which can
    be grown while it has internal snapshots (version 2, libvirt's default, cannot)."""
    root = ET.Element("volume")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "capacity", {"unit": "MiB"}).text = str(size_mb)
    ET.SubElement(root, "allocation").text = "0"
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "format", {"type": fmt})
    if fmt == "qcow2":
        ET.SubElement(target, "compat").text = "1.1"
    return ET.tostring(root, encoding="unicode")


def pool_path(pool: Any) -> str:
    path = ET.fromstring(pool.XMLDesc(0)).findtext("target/path") or ""
    return posixpath.normpath(path) if path else ""


def ensure_pool(lib: Any, conn: Any, storage: Storage) -> Any:
    """The pool, active; defined, built and started (autostart on) first if need be.

    The legacy pool: DriverPermanent if a pool of that name keeps its volumes elsewhere.
    Bollard's other pools: a definition of that name with another directory or uuid (the
    pool was deleted and made again with another path or type) is replaced (its files are
    not touched). A local pool's missing directory is made; a shared pool's is not (it must
    be mounted): DriverTemporary."""
    try:
        pool = conn.storagePoolLookupByName(storage.pool)
    except lib.libvirtError as exc:
        if code_of(exc) != NO_STORAGE_POOL:
            raise
        pool = _define_pool(lib, conn, storage)
    there = pool_path(pool)
    if storage.uuid is None and there != storage.image_dir:
        raise DriverPermanent(
            f"libvirt storage pool {storage.pool!r} keeps its volumes in {there}, not in "
            f"{storage.image_dir}: give the agent --libvirt-image-dir {there}, or remove "
            "that pool"
        )
    if storage.uuid is not None and (there, pool.UUIDString()) != (
        storage.image_dir,
        storage.uuid,
    ):
        pool = _redefine_pool(lib, conn, pool, storage, there)
    if not pool.isActive():
        _start_pool(lib, pool, storage)
    return pool


def _start_pool(lib: Any, pool: Any, storage: Storage) -> None:
    try:
        pool.create(0)
        return
    except lib.libvirtError as exc:
        if pool.isActive():
            return  # (started meanwhile by another call: fine)
        if storage.shared:
            raise DriverTemporary(
                f"shared pool directory {storage.image_dir} cannot be used here "
                f"(is it mounted?): {exc.get_error_message()}"
            ) from None
    pool.build(0)  # (its directory was removed: made again)
    try:
        pool.create(0)
    except lib.libvirtError:
        if not pool.isActive():
            raise


def _redefine_pool(lib: Any, conn: Any, pool: Any, storage: Storage, there: str) -> Any:
    log.warning(
        "libvirt storage pool %s was at %s (uuid %s): defined again at %s",
        storage.pool, there, pool.UUIDString(), storage.image_dir,
    )  # fmt: skip
    if pool.isActive():
        pool.destroy()  # (only libvirt's view of it: the files stay)
    pool.undefine()
    return _define_pool(lib, conn, storage)


def _define_pool(lib: Any, conn: Any, storage: Storage) -> Any:
    try:
        pool = conn.storagePoolDefineXML(pool_xml(storage), 0)
    except lib.libvirtError:
        # Defined meanwhile by another call? Then that one builds it; else the error stands.
        return conn.storagePoolLookupByName(storage.pool)
    log.info("libvirt storage pool %s defined at %s", storage.pool, storage.image_dir)
    if not storage.shared:
        pool.build(0)  # makes the directory; fine if it exists
    pool.setAutostart(1)
    return pool


def lookup_volume(lib: Any, pool: Any, name: str) -> Any | None:
    try:
        return pool.storageVolLookupByName(name)
    except lib.libvirtError as exc:
        if code_of(exc) == NO_STORAGE_VOL:
            return None
        raise


def disk_devices(disks: list[DiskSpec]) -> list[str]:
    """The device of each disk: its own, else by its index; ValueError if two share one."""
    devices = [disk.device or disk_device(index) for index, disk in enumerate(disks)]
    if len(set(devices)) != len(devices):
        raise ValueError(f"two disks at one device: {', '.join(devices)}")
    return devices


def ensure_disks(
    lib: Any, conn: Any, storage: Storage, uuid: str, disks: list[DiskSpec]
) -> list[DomainDisk]:
    """The VM's disks as domain XML wants them. A legacy disk's volume is created (empty)
    if missing; one that exists is kept as it is, whatever its size. A disk with a path (a
    volume of a pool) is used as it is."""
    devices = disk_devices(disks)
    out = []
    pool = None
    for device, disk in zip(devices, disks, strict=True):
        if disk.path is not None:
            out.append(DomainDisk(path=disk.path, target=device, format=disk.format, volume=True))
            continue
        if pool is None:
            pool = ensure_pool(lib, conn, storage)
            pool.refresh(0)  # (libvirt's list of volumes is what it last read from the dir)
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
        if code_of(exc) == NO_STORAGE_POOL:
            return []
        raise
    if not pool.isActive():
        return []
    pool.refresh(0)
    uuid = canonical_uuid(uuid)
    return [v for v in pool.listAllVolumes(0) if owner_of(v.name()) == uuid]


def owned_disks(facts: DomainFacts, storage: Storage) -> list[str]:
    """The paths of the domain's legacy disks (its own volumes of the legacy pool, which go
    with its definition); volumes of pools attached to it are not among them."""
    return [
        d.path
        for d in facts.disks
        if not d.volume
        and posixpath.dirname(posixpath.normpath(d.path)) == storage.image_dir
        and owner_of(posixpath.basename(d.path)) == facts.uuid
    ]


def remove_paths(lib: Any, conn: Any, paths: list[str]) -> list[str]:
    """Delete the volumes at ``paths`` (each in an active pool of its directory); the paths
    of those that were there."""
    if not paths:
        return []
    pools = {pool_path(p): p for p in conn.listAllStoragePools(0) if p.isActive()}
    removed = []
    for path in paths:
        pool = pools.get(posixpath.dirname(posixpath.normpath(path)))
        if pool is None:
            log.warning("no active libvirt pool holds %s: left as it is", path)
            continue
        pool.refresh(0)
        vol = lookup_volume(lib, pool, posixpath.basename(path))
        if vol is None:
            continue
        try:
            vol.delete(0)
        except lib.libvirtError as exc:
            if code_of(exc) != NO_STORAGE_VOL:
                raise
        removed.append(path)
    return removed


def remove_disks(lib: Any, conn: Any, storage: Storage, uuid: str) -> list[str]:
    """Delete VM ``uuid``'s legacy volumes (by their names) from the host's legacy pool;
    their names. (For a VM no longer defined: the disks a failed define or migration of it
    left behind.)"""
    removed = []
    for vol in volumes_of(lib, conn, storage, uuid):
        name = vol.name()
        try:
            vol.delete(0)
        except lib.libvirtError as exc:
            if code_of(exc) != NO_STORAGE_VOL:
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
            if code_of(exc) not in (NO_STORAGE_VOL, NO_STORAGE_POOL, Err.NO_SUPPORT):
                raise
        out.append(DiskInfo(device=disk.target, size_mb=size, path=disk.path))
    return out


def volume_format(vol: Any) -> str:
    """The format of a volume (qcow2, raw, ...), from its XML."""
    found = ET.fromstring(vol.XMLDesc(0)).find("target/format")
    return (found.get("type") if found is not None else None) or "raw"


def copy_volume(
    lib: Any,
    source_conn: Any,
    source: Any,
    target_conn: Any,
    target_storage: Storage,
    progress: Callable[[int], None],
    *,
    name: str | None = None,
    replace: bool = True,
) -> Any:
    """Copy the volume ``source`` into the volume ``name`` (default: the source's name) of
    the target host's pool: made anew (with ``replace``, a leftover of an earlier attempt is
    replaced), then written with the source's bytes through two streams; the new volume.
    ``progress(bytes)`` after each chunk (it may raise to stop the copy; the new volume is
    then deleted)."""
    pool = ensure_pool(lib, target_conn, target_storage)
    pool.refresh(0)
    name = name or source.name()
    old = lookup_volume(lib, pool, name)
    if old is not None and replace:
        old.delete(0)
    capacity = int(source.info()[1])
    fmt = volume_format(source)
    created = pool.createXML(volume_xml(name, max(1, -(-capacity // _MIB)), fmt), 0)
    try:
        _stream(lib, source_conn, source, target_conn, created, progress)
    except BaseException:
        try:
            created.delete(0)
        except lib.libvirtError as exc:
            log.warning("cannot remove the partial copy %s: %s", name, exc)
        raise
    return created


def _stream(
    lib: Any,
    source_conn: Any,
    source: Any,
    target_conn: Any,
    created: Any,
    progress: Callable[[int], None],
) -> None:
    name = created.name()
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
