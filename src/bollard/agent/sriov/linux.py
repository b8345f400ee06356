"""The SR-IOV backend of a Linux host: sysfs for the VF count and the VFs' PCI addresses and
network devices, netlink (`netlink.Netlink`) for MTUs and VF settings.

Under `sysfs_root` (`/sys`, or a fake tree in tests)::

    class/net/<pf>/device                -> the PF's PCI device directory
    class/net/<pf>/device/sriov_totalvfs    the most VFs the device supports
    class/net/<pf>/device/sriov_numvfs      how many it has (written to change it)
    class/net/<pf>/device/virtfn<N>      -> the PCI device directory of VF N
    class/net/<pf>/device/virtfn<N>/net/<netdev>   VF N's network device, while a network
                                                   driver (not vfio-pci) has it

The kernel refuses to change a non-zero VF count to another non-zero one (EBUSY): the count
goes to 0 first, which destroys the VFs. It creates the VF PCI devices before the write
returns; a VF's network device name may still change afterwards (udev), so every call looks
it up anew rather than trusting what `setup` found.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from bollard.agent.sriov.backend import SriovError, with_partners
from bollard.agent.sriov.netlink import Netlink, Pyroute2Netlink
from bollard.domain.sriov import PfConfig, SriovPf, SriovVf, VfSettings

log = logging.getLogger(__name__)


def write_sysfs(path: Path, text: str) -> None:
    """One write of `text`, as `echo text > path` does (sysfs takes a value in one write)."""
    path.write_text(text)


class LinuxSriov:
    """`sysfs_write(path, text)` writes a sysfs attribute; tests give one that plays the
    kernel's part (creating the VFs' entries, refusing what the kernel refuses)."""

    def __init__(
        self,
        sysfs_root: Path = Path("/sys"),
        netlink: Netlink | None = None,
        *,
        sysfs_write: Callable[[Path, str], None] = write_sysfs,
    ) -> None:
        self._root = sysfs_root
        self._netlink: Netlink = netlink if netlink is not None else Pyroute2Netlink()
        self._write = sysfs_write

    async def vfs_total(self, device: str) -> int:
        return _number(self._pci(device) / "sriov_totalvfs", f"PF {device}")

    async def setup(self, pf: PfConfig) -> SriovPf:
        device = self._pci(pf.device)
        total = await self.vfs_total(pf.device)
        if pf.vfs > total:
            raise SriovError(
                f"PF {pf.device}: VF count {pf.vfs} is above the {total} the device supports"
            )
        numvfs = device / "sriov_numvfs"
        current = _number(numvfs, f"PF {pf.device}")
        if current != pf.vfs:
            log.info("PF %s: VF count %d -> %d", pf.device, current, pf.vfs)
            if current:
                await self._write_count(numvfs, 0, pf.device)
            if pf.vfs:
                await self._write_count(numvfs, pf.vfs, pf.device)
        if pf.mtu is not None:  # the PF first: a VF's MTU may not exceed its PF's
            await self._netlink.set_mtu(pf.device, pf.mtu)
            for index in range(pf.vfs):
                netdev = self._netdev(device / f"virtfn{index}")
                if netdev is not None:
                    await self._netlink.set_mtu(netdev, pf.mtu)
        reported = await self._netlink.vfs(pf.device)
        vfs = []
        for index in range(pf.vfs):
            netdev = self._netdev(device / f"virtfn{index}")
            settings = await self._settings(pf.device, index, netdev, reported)
            vfs.append(
                SriovVf(
                    index=index, pci=self._vf_pci(device, index), netdev=netdev, settings=settings
                )
            )
        return SriovPf(
            device=pf.device,
            physnet=pf.physnet,
            pci=device.resolve().name,
            mtu=await self._netlink.mtu(pf.device),
            vfs_total=total,
            vfs=vfs,
        )

    async def apply(self, device: str, index: int, settings: VfSettings) -> VfSettings:
        netdev = self._netdev(self._vf_dir(device, index))
        if settings.mtu is not None and netdev is None:
            raise SriovError(
                f"PF {device} VF {index}: mtu {settings.mtu}: the VF has no network device "
                "(bound to vfio-pci?); its MTU is set where it is used"
            )
        current = (await self._netlink.vfs(device)).get(index)
        if current is None:
            raise SriovError(f"PF {device}: the kernel does not report VF {index}")
        complete = with_partners(settings, current).check()
        link = complete.model_copy(update={"mtu": None})
        if link.given():
            await self._netlink.set_vf(device, index, link)
        if settings.mtu is not None and netdev is not None:
            await self._netlink.set_mtu(netdev, settings.mtu)
        return await self.read(device, index)

    async def read(self, device: str, index: int) -> VfSettings:
        vf = self._vf_dir(device, index)
        return await self._settings(
            device, index, self._netdev(vf), await self._netlink.vfs(device)
        )

    async def _settings(
        self, pf: str, index: int, netdev: str | None, reported: dict[int, VfSettings]
    ) -> VfSettings:
        settings = reported.get(index)
        if settings is None:
            raise SriovError(f"PF {pf}: the kernel does not report VF {index}")
        mtu = None if netdev is None else await self._netlink.mtu(netdev)
        return settings.model_copy(update={"mtu": mtu})

    def _pci(self, device: str) -> Path:
        """The PF's PCI device directory (through class/net/<device>/device)."""
        net = self._root / "class" / "net" / device
        if not net.exists():
            raise SriovError(f"no network device {device!r} on this host")
        pci = net / "device"
        if not (pci / "sriov_totalvfs").exists():
            raise SriovError(f"network device {device}: not an SR-IOV PF (no sriov_totalvfs)")
        return pci

    def _vf_dir(self, device: str, index: int) -> Path:
        pci = self._pci(device)
        count = _number(pci / "sriov_numvfs", f"PF {device}")
        if not 0 <= index < count:
            raise SriovError(f"PF {device} has no VF {index}")
        return pci / f"virtfn{index}"

    def _vf_pci(self, pci: Path, index: int) -> str:
        link = pci / f"virtfn{index}"
        try:
            return Path(os.readlink(link)).name
        except OSError as exc:
            raise SriovError(f"{link}: cannot read the VF's PCI address: {exc.strerror}") from None

    def _netdev(self, vf: Path) -> str | None:
        """The network device of the VF whose PCI directory is `vf`; None while no network
        driver has it."""
        try:
            names = sorted(os.listdir(vf / "net"))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SriovError(f"{vf}: cannot list its network device: {exc.strerror}") from None
        return names[0] if names else None

    async def _write_count(self, numvfs: Path, count: int, device: str) -> None:
        """Write the VF count; the kernel may take seconds to create VFs, so off the loop."""
        try:
            await asyncio.to_thread(self._write, numvfs, str(count))
        except OSError as exc:
            raise SriovError(
                f"PF {device}: cannot set the VF count to {count}: {exc.strerror or exc}"
            ) from None


def _number(path: Path, what: str) -> int:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise SriovError(f"{what}: cannot read {path.name}: {exc.strerror}") from None
    try:
        return int(text)
    except ValueError:
        raise SriovError(f"{what}: {path.name} holds {text!r}, not a number") from None
