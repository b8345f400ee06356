"""The libvirt driver's VolumeAttacher: volumes of pools added to and removed from VMs.

The disk goes into the domain's persistent definition (``VIR_DOMAIN_AFFECT_CONFIG``) and,
while the domain runs, into the running guest (``VIR_DOMAIN_AFFECT_LIVE``: hot-plug, a
virtio disk on the guest's PCI bus). Each part is done only where it is missing, so a call
repeated after a partial failure finishes the work. The disk carries the user alias that
marks it as a volume (see ``xml``): ``undefine`` leaves it.

Hot-unplug needs the guest: QEMU asks it to release the device (ACPI) and removes it once
it did. libvirt waits a few seconds for that and then returns with the removal pending;
``detach_volume`` then watches the running domain's definition until the disk is gone, and
asks again every ``DETACH_REPEAT`` seconds (a guest still booting misses the first
request), at most ``detach_timeout`` seconds (DriverTemporary after that: the guest did
not release it; the definition has lost it already, so the next start is without it).

``resize_attached`` grows a running VM's disk through QEMU (``virDomainBlockResize``: the
guest sees the new size at once); a stopped VM's disk is grown as a volume.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from bollard.agent.drivers.libvirt import domains
from bollard.agent.drivers.libvirt.volumes import MIB, volume_info
from bollard.agent.drivers.libvirt.xml import DomainDisk, disk_xml, parse_domain
from bollard.agent.drivers.storage import AttachSpec
from bollard.domain.errors import DriverInvalidState, DriverNotFound, DriverTemporary

T = TypeVar("T")

AFFECT_LIVE = 1  # VIR_DOMAIN_AFFECT_LIVE
AFFECT_CONFIG = 2  # VIR_DOMAIN_AFFECT_CONFIG
BLOCK_RESIZE_BYTES = 1  # VIR_DOMAIN_BLOCK_RESIZE_BYTES
DETACH_TIMEOUT = 30.0
DETACH_POLL = 0.2
DETACH_REPEAT = 2.0


def _at(disks: list[DomainDisk], device: str) -> DomainDisk | None:
    return next((d for d in disks if d.target == device), None)


class LibvirtAttacher:
    """Mixed into LibvirtDriver, which provides the attributes and helpers declared here."""

    lib: Any
    detach_timeout: float

    async def _call(self, action: str, fn: Callable[[Any], T]) -> T:
        raise NotImplementedError

    def _uuid(self, uuid: str) -> str:
        raise NotImplementedError

    async def attach_volume(self, uuid: str, disk: AttachSpec) -> None:
        uuid = self._uuid(uuid)
        wanted = DomainDisk(path=disk.path, target=disk.device, format=disk.format, volume=True)

        def attach(conn: Any) -> None:
            d = domains.get(self.lib, conn, uuid)
            flags = 0
            defined = _at(d.facts.disks, disk.device)
            if defined is None:
                flags |= AFFECT_CONFIG
            elif defined.path != disk.path:
                raise DriverInvalidState(
                    f"VM {uuid} has {defined.path} at {disk.device}, not {disk.path}"
                )
            if d.dom.isActive():
                running = _at(parse_domain(d.dom.XMLDesc(0)).disks, disk.device)
                if running is None:
                    flags |= AFFECT_LIVE
                elif running.path != disk.path:
                    raise DriverInvalidState(
                        f"VM {uuid} runs with {running.path} at {disk.device} (being "
                        f"removed?), not {disk.path}"
                    )
            if flags:
                d.dom.attachDeviceFlags(disk_xml(wanted), flags)

        await self._call(f"attach {disk.device} to {uuid}", attach)

    async def detach_volume(self, uuid: str, device: str) -> bool:
        uuid = self._uuid(uuid)

        def detach(conn: Any) -> tuple[bool, bool]:
            """Whether the VM had the disk, and whether the running guest still has it."""
            d = domains.get(self.lib, conn, uuid)
            defined = _at(d.facts.disks, device)
            if defined is not None:
                d.dom.detachDeviceFlags(disk_xml(defined), AFFECT_CONFIG)
            running = self._unplug(d.dom, device)
            return defined is not None or running, running

        had, pending = await self._call(f"detach {device} from {uuid}", detach)
        if pending:
            await self._until_released(uuid, device)
        return had

    def _running_disk(self, dom: Any, device: str) -> DomainDisk | None:
        if not dom.isActive():
            return None
        return _at(parse_domain(dom.XMLDesc(0)).disks, device)

    def _unplug(self, dom: Any, device: str) -> bool:
        """Ask the running guest to release the disk; whether it had it."""
        running = self._running_disk(dom, device)
        if running is None:
            return False
        try:
            dom.detachDeviceFlags(disk_xml(running), AFFECT_LIVE)
        except self.lib.libvirtError:
            if self._running_disk(dom, device) is not None:
                raise  # (else removed meanwhile, or stopped: fine)
        return True

    async def _until_released(self, uuid: str, device: str) -> None:
        deadline = time.monotonic() + self.detach_timeout
        ask_again = time.monotonic() + DETACH_REPEAT

        def still(conn: Any) -> bool:
            return self._running_disk(domains.get(self.lib, conn, uuid).dom, device) is not None

        def again(conn: Any) -> bool:
            return self._unplug(domains.get(self.lib, conn, uuid).dom, device)

        while await self._call(f"read the disks of {uuid}", still):
            now = time.monotonic()
            if now >= deadline:
                raise DriverTemporary(
                    f"VM {uuid} has not released {device} within {self.detach_timeout:g}s "
                    "(the guest must allow hot-unplug); it is gone from its definition: "
                    "detach again, or restart the VM"
                )
            if now >= ask_again:
                if not await self._call(f"detach {device} from {uuid}", again):
                    return
                ask_again = time.monotonic() + DETACH_REPEAT
            await asyncio.sleep(DETACH_POLL)  # (QEMU's removal event: polled, see above)

    async def resize_attached(self, uuid: str, device: str, size_mb: int) -> None:
        uuid = self._uuid(uuid)
        wanted = size_mb * MIB

        def grow(conn: Any) -> None:
            d = domains.get(self.lib, conn, uuid)
            if d.dom.isActive():
                if self._running_disk(d.dom, device) is None:
                    raise DriverNotFound(f"VM {uuid} has no disk at {device}")
                capacity = int(d.dom.blockInfo(device, 0)[0])
                self._check_growth(uuid, device, capacity, wanted)
                if wanted > capacity:
                    d.dom.blockResize(device, wanted, BLOCK_RESIZE_BYTES)
                return
            defined = _at(d.facts.disks, device)
            if defined is None:
                raise DriverNotFound(f"VM {uuid} has no disk at {device}")
            vol = conn.storageVolLookupByPath(defined.path)
            capacity = volume_info(vol).size_mb * MIB
            self._check_growth(uuid, device, capacity, wanted)
            if wanted > capacity:
                vol.resize(wanted, 0)

        await self._call(f"grow {device} of {uuid}", grow)

    @staticmethod
    def _check_growth(uuid: str, device: str, capacity: int, wanted: int) -> None:
        if wanted < capacity:
            raise DriverInvalidState(
                f"disk {device} of VM {uuid} has {capacity // MIB} MiB: it cannot shrink "
                f"to {wanted // MIB} MiB"
            )
