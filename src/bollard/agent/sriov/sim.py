"""A simulated SR-IOV NIC per PF, kept in a JSON file so that an agent restart finds the VFs
and their settings as a real host's kernel keeps them, and a simulated reboot
(`SimSriov.reboot`) loses them as a cold boot does: the manager must re-apply them.

Each PF gets a deterministic PCI address from its device name (the bus from a hash of the
name, moved on when another PF of this file has it) and its VFs the addresses that follow,
as a real PF's routing IDs do; VF N's network device is `<device>v<N>`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from bollard.agent.sriov.backend import SriovError, with_partners
from bollard.domain.sriov import PfConfig, SriovPf, SriovVf, VfSettings
from bollard.durable import write_atomic

DEFAULT_MTU = 1500
# What a VF reports before anyone sets it, as common NIC drivers report it.
DEFAULT_VF = VfSettings(
    mtu=DEFAULT_MTU,
    vlan=0,
    qos=0,
    min_tx_rate=0,
    max_tx_rate=0,
    spoof_check=True,
    link_state="auto",
    trust=False,
    query_rss=False,
)
VF_OFFSET = 16  # the first VF's routing ID after its PF's (slot 2), as on many NICs
BUS_STRIDE = 2  # buses a PF's routing IDs may span (MAX_VFS + VF_OFFSET < 512)


class _SimPf(BaseModel):
    bus: int
    vfs_total: int
    mtu: int = DEFAULT_MTU
    vfs: list[VfSettings] = Field(default_factory=list)  # index order; len = sriov_numvfs


class _SimState(BaseModel):
    pfs: dict[str, _SimPf] = Field(default_factory=dict)


def pci_address(bus: int, routing_id: int) -> str:
    """Domain 0 address of the function `routing_id` functions after `bus`'s first."""
    bus += routing_id // 256
    devfn = routing_id % 256
    return f"0000:{bus:02x}:{devfn >> 3:02x}.{devfn & 7}"


class SimSriov:
    """The SriovBackend of a simulated host. `devices`: the PFs the simulated host has (None:
    any device the configuration names exists); each supports `vfs_total` VFs."""

    def __init__(
        self, state_file: Path, vfs_total: int = 64, devices: Collection[str] | None = None
    ) -> None:
        self._file = state_file
        self._vfs_total = vfs_total
        self._devices = None if devices is None else frozenset(devices)

    @staticmethod
    def reboot(state_file: Path) -> None:
        """A cold boot of the simulated host: every PF loses its VFs (sriov_numvfs back to 0)
        and its MTU; the devices themselves and their PCI addresses stay."""
        state = _load(state_file)
        for pf in state.pfs.values():
            pf.vfs = []
            pf.mtu = DEFAULT_MTU
        _save(state_file, state)

    async def vfs_total(self, device: str) -> int:
        state = _load(self._file)
        return self._pf(state, device).vfs_total

    async def setup(self, pf: PfConfig) -> SriovPf:
        state = _load(self._file)
        sim = self._pf(state, pf.device)
        if pf.vfs > sim.vfs_total:
            raise SriovError(
                f"PF {pf.device}: VF count {pf.vfs} is above the {sim.vfs_total} "
                "the device supports"
            )
        if len(sim.vfs) != pf.vfs:  # the kernel destroys the VFs, then creates them anew
            sim.vfs = [DEFAULT_VF] * pf.vfs
        if pf.mtu is not None:
            sim.mtu = pf.mtu
            sim.vfs = [vf.merged(VfSettings(mtu=pf.mtu)) for vf in sim.vfs]
        _save(self._file, state)
        return SriovPf(
            device=pf.device,
            physnet=pf.physnet,
            pci=pci_address(sim.bus, 0),
            mtu=sim.mtu,
            vfs_total=sim.vfs_total,
            vfs=[
                SriovVf(
                    index=i,
                    pci=pci_address(sim.bus, VF_OFFSET + i),
                    netdev=f"{pf.device}v{i}",
                    settings=settings,
                )
                for i, settings in enumerate(sim.vfs)
            ],
        )

    async def apply(self, device: str, index: int, settings: VfSettings) -> VfSettings:
        state = _load(self._file)
        sim = self._pf(state, device)
        current = _vf(sim, device, index)
        sim.vfs[index] = current.merged(with_partners(settings, current).check())
        _save(self._file, state)
        return sim.vfs[index]

    async def read(self, device: str, index: int) -> VfSettings:
        state = _load(self._file)
        return _vf(self._pf(state, device), device, index)

    def _pf(self, state: _SimState, device: str) -> _SimPf:
        """The simulated PF `device`, created (not yet persisted) the first time it is named."""
        if self._devices is not None and device not in self._devices:
            raise SriovError(f"no network device {device!r} on this host")
        sim = state.pfs.get(device)
        if sim is None:
            sim = _SimPf(bus=_free_bus(state, device), vfs_total=self._vfs_total)
            state.pfs[device] = sim
        return sim


def _vf(sim: _SimPf, device: str, index: int) -> VfSettings:
    if not 0 <= index < len(sim.vfs):
        raise SriovError(f"PF {device} has no VF {index}")
    return sim.vfs[index]


def _free_bus(state: _SimState, device: str) -> int:
    """A bus from a hash of the device's name, moved on past the buses other PFs span."""
    taken = {pf.bus + n for pf in state.pfs.values() for n in range(BUS_STRIDE)}
    first = 1 + hashlib.sha256(device.encode()).digest()[0] % 0xF0
    bus = first
    while bus in taken or bus + BUS_STRIDE - 1 in taken:
        bus = 1 + (bus - 1 + BUS_STRIDE) % 0xF0
        if bus == first:
            raise SriovError(f"PF {device}: the simulated host has no PCI bus left")
    return bus


def _load(path: Path) -> _SimState:
    try:
        raw: Any = json.loads(path.read_bytes())
    except FileNotFoundError:
        return _SimState()
    except (OSError, ValueError) as exc:
        raise SriovError(f"simulated SR-IOV state {path}: unreadable: {exc}") from None
    try:
        return _SimState.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]["msg"] if exc.errors() else "not valid"
        raise SriovError(f"simulated SR-IOV state {path}: {first}") from None


def _save(path: Path, state: _SimState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, state.model_dump_json(indent=1).encode())
