"""The interface every SR-IOV backend implements: the simulated NIC (`sim.SimSriov`) and the
Linux host (`linux.LinuxSriov`, sysfs and netlink).

A backend acts on the host only; what Bollard asked for is kept by the manager
(`manager.SriovManager`), which re-applies it at every start because a cold boot resets a
VF's settings. Every failure is a `SriovError` with one line naming the device and the value,
so the agent can hand it to the server as it is.
"""

from __future__ import annotations

from typing import Protocol

from bollard.domain.sriov import PfConfig, SriovPf, VfSettings


class SriovError(Exception):
    """An SR-IOV operation refused or failed on the host (one line, naming the value)."""


class SriovBackend(Protocol):
    async def vfs_total(self, device: str) -> int:
        """The most VFs the PF `device` supports (sriov_totalvfs). Lets the manager check
        every configured PF before it changes any. SriovError: no such device, or one
        without SR-IOV."""
        ...

    async def setup(self, pf: PfConfig) -> SriovPf:
        """Give the PF `pf.vfs` VFs (refused with nothing changed when the device supports
        fewer), set the PF's and the VFs' MTU when `pf.mtu` is given, and report the PF with
        every VF: PCI address, network device and settings as read back. A VF count that
        changes recreates the VFs, with the device's default settings."""
        ...

    async def apply(self, device: str, index: int, settings: VfSettings) -> VfSettings:
        """Apply the fields `settings` sets to VF `index` of PF `device` (the others stay as
        they are) and return the VF's settings as read back. A VLAN id given without a QoS
        keeps the current QoS (0 when the VLAN is 0); a rate given without its partner keeps
        the partner's current value. InvalidInput: the result is out of range (nothing
        changed)."""
        ...

    async def read(self, device: str, index: int) -> VfSettings:
        """VF `index` of PF `device`'s settings as the host reports them (every field the
        host reports set; `mtu` None when the VF has no network device)."""
        ...


def with_partners(change: VfSettings, current: VfSettings) -> VfSettings:
    """`change` with the other half of the VLAN/QoS and of the min/max rate pairs, which
    netlink sets together: the partner keeps its current value (QoS 0 when the VLAN is 0).
    Both backends complete a change with it, so they treat a half pair alike."""
    update: dict[str, object] = {}
    if change.vlan is not None and change.qos is None:
        update["qos"] = (current.qos or 0) if change.vlan else 0
    if change.qos is not None and change.vlan is None:
        update["vlan"] = current.vlan or 0
    if change.min_tx_rate is not None and change.max_tx_rate is None:
        update["max_tx_rate"] = current.max_tx_rate or 0
    if change.max_tx_rate is not None and change.min_tx_rate is None:
        update["min_tx_rate"] = current.min_tx_rate or 0
    return change.model_copy(update=update)
