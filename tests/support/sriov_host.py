"""A fake Linux host with SR-IOV NICs, for `bollard.agent.sriov.linux.LinuxSriov`: a sysfs
tree under a temporary directory, a `sysfs_write` that plays the kernel's part (creating and
destroying the VFs' entries, refusing what the kernel refuses: EBUSY for a non-zero count over
a non-zero one, ERANGE above sriov_totalvfs), and a recording `Netlink` whose VF attributes go
through pyroute2's real encoder and decoder (`FakeNetlink`).
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from bollard.agent.sriov.backend import SriovError
from bollard.agent.sriov.linux import LinuxSriov
from bollard.agent.sriov.netlink import LINK_STATES, NO_MAC, vf_info_list, vfs_of
from bollard.domain.sriov import MIN_MTU, VfSettings

DEFAULT_MTU = 1500


def _kernel_vf() -> dict[str, Any]:
    """A new VF's attributes as a kernel reports them (struct ifla_vf_* fields)."""
    return {
        "mac": NO_MAC,
        "vlan": 0,
        "qos": 0,
        "min_tx_rate": 0,
        "max_tx_rate": 0,
        "spoofchk": 1,
        "link_state": LINK_STATES["auto"],
        "trust": 0,
        "rss_query_en": 0,
    }


@dataclass
class FakePf:
    device: str
    pci_dir: Path
    total: int
    vfs: list[dict[str, Any]] = field(default_factory=list)


class FakeHost:
    """`devices`: PF device -> sriov_totalvfs. Also has `lo`, a network device without
    SR-IOV."""

    def __init__(self, root: Path, devices: dict[str, int]) -> None:
        self.root = root
        self.pfs: dict[str, FakePf] = {}
        self.mtus: dict[str, int] = {"lo": 65536}
        self.writes: list[tuple[str, str]] = []  # (PF device, text) per sriov_numvfs write
        self.netlink_calls: list[tuple[Any, ...]] = []
        self.refuse_numvfs: int | None = None  # errno the next count writes fail with
        self.refuse_netlink: str | None = None  # message the next set_vf calls fail with
        (root / "class" / "net" / "lo").mkdir(parents=True)
        for n, (device, total) in enumerate(devices.items()):
            pci_dir = root / "devices" / "pci0000:00" / f"0000:{n + 3:02x}:00.0"
            pci_dir.mkdir(parents=True)
            (pci_dir / "sriov_totalvfs").write_text(f"{total}\n")
            (pci_dir / "sriov_numvfs").write_text("0\n")
            net = root / "class" / "net" / device
            net.mkdir(parents=True)
            (net / "device").symlink_to(os.path.relpath(pci_dir, net))
            self.pfs[device] = FakePf(device, pci_dir, total)
            self.mtus[device] = DEFAULT_MTU

    def backend(self) -> LinuxSriov:
        """A LinuxSriov over this host, as an agent (re)start builds one."""
        return LinuxSriov(self.root, FakeNetlink(self), sysfs_write=self.sysfs_write)

    def numvfs(self, device: str) -> int:
        return int((self.pfs[device].pci_dir / "sriov_numvfs").read_text())

    def reboot(self) -> None:
        """A cold boot: no VFs, PF MTUs back to the default."""
        for pf in self.pfs.values():
            self._set_count(pf, 0)
            self.mtus[pf.device] = DEFAULT_MTU

    def unbind(self, device: str, index: int) -> None:
        """VF `index` leaves its network driver (as when vfio-pci takes it)."""
        vf = self.pfs[device].pci_dir / f"virtfn{index}"
        for netdev in os.listdir(vf / "net"):
            shutil.rmtree(self.root / "class" / "net" / netdev)
            del self.mtus[netdev]
        shutil.rmtree(vf.resolve() / "net")

    def sysfs_write(self, path: Path, text: str) -> None:
        if path.name != "sriov_numvfs":
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        pf = next(p for p in self.pfs.values() if p.pci_dir == path.parent.resolve())
        self.writes.append((pf.device, text))
        if self.refuse_numvfs is not None:
            raise OSError(self.refuse_numvfs, os.strerror(self.refuse_numvfs))
        count = int(text)
        if count > pf.total:
            raise OSError(errno.ERANGE, os.strerror(errno.ERANGE))
        if count and self.numvfs(pf.device):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        self._set_count(pf, count)

    def _set_count(self, pf: FakePf, count: int) -> None:
        bus = int(pf.pci_dir.name.split(":")[1], 16)
        for index in range(len(pf.vfs)):
            link = pf.pci_dir / f"virtfn{index}"
            shutil.rmtree(link.resolve())
            link.unlink()
            netdev = f"{pf.device}v{index}"
            if netdev in self.mtus:
                shutil.rmtree(self.root / "class" / "net" / netdev)
                del self.mtus[netdev]
        pf.vfs = [_kernel_vf() for _ in range(count)]
        for index in range(count):
            devfn = 0x10 + index
            vf_dir = pf.pci_dir.parent / f"0000:{bus:02x}:{devfn >> 3:02x}.{devfn & 7}"
            netdev = f"{pf.device}v{index}"
            (vf_dir / "net" / netdev).mkdir(parents=True)
            (pf.pci_dir / f"virtfn{index}").symlink_to(f"../{vf_dir.name}")
            (self.root / "class" / "net" / netdev).mkdir()
            self.mtus[netdev] = DEFAULT_MTU
        (pf.pci_dir / "sriov_numvfs").write_text(f"{count}\n")


class FakeNetlink:
    """The kernel's netlink side of a FakeHost; records every change it is asked for."""

    def __init__(self, host: FakeHost) -> None:
        self.host = host

    async def mtu(self, device: str) -> int:
        if device not in self.host.mtus:
            raise SriovError(f"no network device {device!r} on this host")
        return self.host.mtus[device]

    async def set_mtu(self, device: str, mtu: int) -> None:
        self.host.netlink_calls.append(("set_mtu", device, mtu))
        await self.mtu(device)
        if mtu < MIN_MTU:
            raise SriovError(f"{device}: setting MTU {mtu}: Invalid argument")
        self.host.mtus[device] = mtu

    async def vfs(self, pf: str) -> dict[int, VfSettings]:
        fake = self._pf(pf)
        msg = ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", pf), ("IFLA_NUM_VF", len(fake.vfs))]
        if fake.vfs:
            infos = [("IFLA_VF_INFO", {"attrs": _attrs(i, vf)}) for i, vf in enumerate(fake.vfs)]
            msg["attrs"].append(("IFLA_VFINFO_LIST", {"attrs": infos}))
        return vfs_of(_wire(msg))

    async def set_vf(self, pf: str, index: int, settings: VfSettings) -> None:
        self.host.netlink_calls.append(("set_vf", pf, index, settings))
        fake = self._pf(pf)
        if self.host.refuse_netlink is not None:
            raise SriovError(f"PF {pf} VF {index}: {self.host.refuse_netlink}")
        msg = ifinfmsg()
        msg["attrs"] = [("IFLA_VFINFO_LIST", vf_info_list(index, settings))]
        (info,) = _wire(msg).get_attr("IFLA_VFINFO_LIST").get_attrs("IFLA_VF_INFO")
        for _name, value in info["attrs"]:  # one attribute sets all of its fields
            fields = dict(value)
            if fields.pop("vf") != index or index >= len(fake.vfs):
                raise SriovError(f"PF {pf} VF {index}: Invalid argument")
            fake.vfs[index].update(fields)

    def _pf(self, pf: str) -> FakePf:
        if pf not in self.host.pfs:
            raise SriovError(f"no network device {pf!r} on this host")
        return self.host.pfs[pf]


def _attrs(index: int, vf: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("IFLA_VF_MAC", {"vf": index, "mac": vf["mac"]}),
        ("IFLA_VF_VLAN", {"vf": index, "vlan": vf["vlan"], "qos": vf["qos"]}),
        ("IFLA_VF_TX_RATE", {"vf": index, "tx_rate": vf["max_tx_rate"]}),
        (
            "IFLA_VF_RATE",
            {"vf": index, "min_tx_rate": vf["min_tx_rate"], "max_tx_rate": vf["max_tx_rate"]},
        ),
        ("IFLA_VF_SPOOFCHK", {"vf": index, "spoofchk": vf["spoofchk"]}),
        ("IFLA_VF_LINK_STATE", {"vf": index, "link_state": vf["link_state"]}),
        ("IFLA_VF_RSS_QUERY_EN", {"vf": index, "rss_query_en": vf["rss_query_en"]}),
        ("IFLA_VF_TRUST", {"vf": index, "trust": vf["trust"]}),
    ]


def _wire(msg: Any) -> Any:
    """`msg` encoded and decoded again, as it crosses a netlink socket."""
    msg.encode()
    decoded = ifinfmsg(msg.data)
    decoded.decode()
    return decoded
