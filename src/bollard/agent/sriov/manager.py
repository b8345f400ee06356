"""The agent's SR-IOV: sets up the configured PFs at start, re-applies every VF's recorded
settings (a cold boot or a VF count change resets them on the host), and changes one VF's
settings on request.

Order of a change: check the result against the domain's limits (InvalidInput, nothing
touched), apply it on the host, and record it only after the host took it, so the record
never holds what the host refused. A host that fails half-way gets the previous settings back
(as far as it takes them) before the error is raised.

A PF that cannot be set up at start (its device is missing, supports fewer VFs than
configured, or the host refuses the set-up) is left out with one log line and its reason in
`failed`; the others are set up, because an agent must run for its VMs whatever one NIC does.
Its recorded settings are kept: the device may be back at the next boot, and the settings
Bollard gave its VFs are still wanted then. A left-out PF is checked before anything is
written to it, so a PF whose VF count is too high keeps what it had.

`reapply` gives one VF its recorded settings again: the agent calls it when the VM using the
VF stops or leaves, since libvirt hands a hostdev VF back to the host driver with the
device's defaults (and restores what it found for a macvtap one).
"""

from __future__ import annotations

import asyncio
import logging

from bollard.agent.sriov.backend import SriovBackend, SriovError
from bollard.agent.sriov.settings_store import SriovSettingsStore
from bollard.domain.errors import InvalidInput
from bollard.domain.models import normalise_mac
from bollard.domain.sriov import PfConfig, SriovPf, SriovVf, VfSettings

log = logging.getLogger(__name__)


class SriovManager:
    def __init__(
        self, backend: SriovBackend, pfs: list[PfConfig], store: SriovSettingsStore
    ) -> None:
        devices = [pf.check().device for pf in pfs]
        twice = sorted({d for d in devices if devices.count(d) > 1})
        if twice:
            raise InvalidInput(f"SR-IOV PF {twice[0]}: configured more than once")
        self._backend = backend
        self._config = {pf.device: pf for pf in pfs}
        self._store = store
        self._reported: dict[str, SriovPf] = {}
        # PF device -> why it could not be set up at the last start (one line each).
        self.failed: dict[str, str] = {}
        self._lock = asyncio.Lock()  # one change at a time: read, apply, record

    async def start(self) -> list[SriovPf]:
        """Set up every PF that can be and re-apply the recorded settings; the PFs set up,
        each VF with its settings as read back and used_by None (the driver knows the users).
        A PF that cannot be set up is left out (logged, its reason in `failed`)."""
        async with self._lock:
            failed: dict[str, str] = {}
            for pf in self._config.values():
                reason = await self._unusable(pf)
                if reason is not None:
                    failed[pf.device] = reason
            # Every configured PF keeps its VFs' settings, a left-out one too.
            forgotten = self._store.keep({d: pf.vfs for d, pf in self._config.items()})
            if forgotten:
                log.info("SR-IOV: forgot the settings of VFs no longer configured: %s", forgotten)
            reported = {}
            for pf in self._config.values():
                if pf.device in failed:
                    continue
                try:
                    found = await self._backend.setup(pf)
                except SriovError as exc:
                    failed[pf.device] = _without_device(pf.device, str(exc))
                    continue
                for vf in found.vfs:
                    vf.settings = await self._reapply(pf.device, vf)
                reported[pf.device] = found
            for device, reason in failed.items():
                log.error("SR-IOV: PF %s left out: %s", device, reason)
            self.failed = failed
            self._reported = reported
            return self.pfs()

    async def reapply(self, device: str, index: int) -> SriovVf:
        """Give VF `index` of PF `device` its recorded settings again (after the VM using it
        stopped or left); the VF as read back. SriovError: no such PF or VF, or the host
        refused (the VF keeps what it has)."""
        async with self._lock:
            vf = self._vf(device, index)
            recorded = self._store.get(device, index)
            if not recorded.given():
                return vf.model_copy(deep=True)
            if vf.netdev is None:  # as at start: a VF found without netdev keeps its MTU
                recorded = recorded.model_copy(update={"mtu": None})
            vf.settings = await self._backend.apply(device, index, recorded)
            return vf.model_copy(deep=True)

    async def _unusable(self, pf: PfConfig) -> str | None:
        """Why `pf` cannot be set up as configured (None: it can), before anything changes."""
        try:
            total = await self._backend.vfs_total(pf.device)
        except SriovError as exc:
            return _without_device(pf.device, str(exc))
        if pf.vfs > total:
            return f"VF count {pf.vfs} is above the {total} the device supports"
        return None

    async def set_vf(self, device: str, index: int, change: VfSettings) -> SriovVf:
        """Change the fields `change` sets on VF `index` of PF `device`; the VF as read back.
        InvalidInput: a value out of range (with the VF's other recorded settings);
        SriovError: no such PF or VF, or the host refused (nothing recorded then)."""
        async with self._lock:
            vf = self._vf(device, index)
            before = self._store.get(device, index)
            if change.mac is not None:
                VfSettings(mac=change.mac).check()  # named as given, before it is normalised
                change = change.model_copy(update={"mac": normalise_mac(change.mac)})
            wanted = before.merged(change).check()
            if not change.given():
                return vf.model_copy(deep=True)
            try:
                applied = await self._backend.apply(device, index, change)
            except SriovError:
                vf.settings = await self._restore(device, index, before, change, vf.settings)
                raise
            self._store.put(device, index, wanted)
            vf.settings = applied
            return vf.model_copy(deep=True)

    def pfs(self) -> list[SriovPf]:
        """The PFs as last found (empty before `start`), copies the caller may change, then
        the configured ones that could not be set up, each with its `error` and no VFs."""
        found = [pf.model_copy(deep=True) for pf in self._reported.values()]
        for device, reason in self.failed.items():
            config = self._config.get(device)
            if config is not None and device not in self._reported:
                found.append(SriovPf(device=device, physnet=config.physnet, error=reason))
        return found

    def _vf(self, device: str, index: int) -> SriovVf:
        if device not in self._config:
            raise SriovError(f"PF {device} is not in this node's configuration")
        pf = self._reported.get(device)
        if pf is None and device in self.failed:
            raise SriovError(
                f"PF {device} could not be set up at the agent's start: {self.failed[device]}"
            )
        if pf is None:
            raise SriovError(f"PF {device}: SR-IOV is not set up yet on this node")
        if not 0 <= index < len(pf.vfs):
            raise SriovError(f"PF {device} has no VF {index}")
        return pf.vfs[index]

    async def _reapply(self, device: str, vf: SriovVf) -> VfSettings:
        """The VF's recorded settings applied again; a VF the host refuses them for keeps
        what it has (logged: the server sees the difference in the report)."""
        recorded = self._store.get(device, vf.index)
        if vf.netdev is None:  # bound to vfio-pci: its MTU is the user's (a VM's) to set
            recorded = recorded.model_copy(update={"mtu": None})
        if not recorded.given():
            return vf.settings
        try:
            return await self._backend.apply(device, vf.index, recorded)
        except SriovError as exc:
            log.warning(
                "SR-IOV: PF %s VF %d: recorded settings not re-applied: %s", device, vf.index, exc
            )
            return vf.settings

    async def _restore(
        self, device: str, index: int, before: VfSettings, change: VfSettings, last: VfSettings
    ) -> VfSettings:
        """After a failed change: put back the recorded value of every field the change
        touched (fields never recorded stay as the host has them); the VF's settings as read
        back then (`last` when the host cannot say)."""
        previous = VfSettings(**{k: v for k, v in before.given().items() if k in change.given()})
        try:
            if previous.given():
                return await self._backend.apply(device, index, previous)
            return await self._backend.read(device, index)
        except SriovError as exc:
            log.warning(
                "SR-IOV: PF %s VF %d: previous settings not restored: %s", device, index, exc
            )
            return last


def _without_device(device: str, message: str) -> str:
    """A backend's one-line error without its leading "PF <device>: " (the log line and the
    answers name the PF themselves)."""
    prefix = f"PF {device}: "
    return message[len(prefix) :] if message.startswith(prefix) else message
