"""The agent's SR-IOV (issue 22): which backend a driver gets, setting up the configured PFs
at agent start, the report that goes in the hello and the heartbeats, the VF_SET command,
and a VF's settings given back when the VM using it stops.

Start-up isolates a bad PF: the manager (agent/sriov/manager.py) leaves out a PF it cannot set
up (logged in one line, its reason kept for a VF_SET that names it) and sets up the others: an
agent must still run, its VMs matter more than one NIC. Should start-up fail as a whole (the
agent's record of VF settings cannot be written), the agent reports no SR-IOV at all (None:
the server keeps its records as they were) rather than a picture it cannot vouch for.

The report names the VM whose definition uses each VF (the driver's ``VfUseSource``): the
server compares it with its claims (the state reconciler's VF checks). A VF the driver knows
by network device only (libvirt macvtap) is matched through the VF's netdev. The reporter
looks once a heartbeat (`look`), and that look also notices a VF whose VM stopped or left
since the previous one: libvirt gave the VF back to the host with the device's defaults (a
hostdev VF, rebound to its driver) or with what it found before the VM (a macvtap one), so the
VF gets its recorded settings again (`SriovManager.reapply`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bollard.agent.config import AgentConfig
from bollard.agent.drivers.base import NETDEV_KEY, HypervisorDriver, VfUseSource
from bollard.agent.operations import failure
from bollard.agent.sriov.backend import SriovBackend, SriovError
from bollard.agent.sriov.manager import SriovManager
from bollard.agent.sriov.settings_store import SriovSettingsStore
from bollard.domain.errors import DriverError, InvalidInput
from bollard.domain.power_states import POWERED_ON
from bollard.domain.protocol import Answer, Command, VmReport
from bollard.domain.sriov import SriovPf, SriovVf, VfSettings, vf_settings

log = logging.getLogger(__name__)

SIM_STATE_DIR = "sriov"  # the sim hosts' simulated NICs, one file a host, in the fabric
VF_SET_LOCK = "sriov"  # what the executor serialises VF_SET commands on (no VM to lock)


def sim_state_file(fabric_dir: Path, node: str) -> Path:
    """Where the simulated NICs of sim host `node` are kept: in the fabric (the sim hosts'
    "hardware", which outlives the agent's state dir), what `SimSriov.reboot` resets when the
    host is power-cycled. Not in the host's own directory of the fabric: that layout is the
    sim package's, which the agent reaches only through its sim driver."""
    return fabric_dir / SIM_STATE_DIR / f"{node}.json"


def sriov_backend(config: AgentConfig) -> SriovBackend | None:
    """The backend for the config's driver: sim -> a simulated NIC per PF in the fabric,
    libvirt -> the Linux host (sysfs, netlink); None for drivers without SR-IOV."""
    if config.driver == "sim" and config.fabric_dir is not None:
        from bollard.agent.sriov.sim import SimSriov

        return SimSriov(sim_state_file(config.fabric_dir, config.node))
    if config.driver == "libvirt":
        from bollard.agent.sriov.linux import LinuxSriov

        return LinuxSriov(config.sriov_sysfs)
    return None


class AgentSriov:
    """The agent's SR-IOV once started: the PFs for the hello, and VF changes."""

    def __init__(
        self,
        manager: SriovManager,
        driver: HypervisorDriver,
        *,
        started: bool,
    ) -> None:
        self.manager = manager
        self.driver = driver
        self.started = started  # False: set-up failed, nothing is reported
        # (PF device, VF index) -> the VM that used it, running, at the previous look.
        self._running_users: dict[tuple[str, int], str] = {}

    @property
    def left_out(self) -> frozenset[str]:
        """The configured PFs that could not be set up at the agent's start."""
        return frozenset(self.manager.failed)

    async def report(self) -> list[SriovPf] | None:
        """The PFs with their VFs and each VF's user, for the hello (None: not started)."""
        found = await self._report()
        return None if found is None else found[0]

    async def _report(self) -> tuple[list[SriovPf], bool] | None:
        """The report, and whether the VFs' users could be read (None: not started)."""
        if not self.started:
            return None
        pfs = self.manager.pfs()
        if not pfs:
            return pfs, True
        users = await self._users()
        for pf in pfs:
            for vf in pf.vfs:
                vf.used_by = user_of(vf, users or {})
        return pfs, users is not None

    async def look(self, vms: Sequence[VmReport]) -> list[SriovPf] | None:
        """The report for a heartbeat (as `report`), given the host's VMs as listed for the
        same heartbeat (None: no PF set up). Each VF whose user ran at the previous look and
        now is stopped, gone or another VM gets its recorded settings again first (a failure
        is logged: the server sees the VF's settings as the host has them). When the users
        cannot be read, nothing is re-applied (a VF is not taken for free because the driver
        did not answer)."""
        found = await self._report()
        if found is None or not found[0]:
            return None  # no PF set up: the hello said so, and that does not change
        pfs, users_known = found
        if not users_known:
            return pfs
        running = {vm.uuid for vm in vms if vm.power in POWERED_ON}
        now_running: dict[tuple[str, int], str] = {}
        for pf in pfs:
            for vf in pf.vfs:
                key = (pf.device, vf.index)
                before = self._running_users.get(key)
                if before is not None and (vf.used_by != before or before not in running):
                    vf.settings = await self._reapply(pf.device, vf.index, vf.settings, before)
                if vf.used_by is not None and vf.used_by in running:
                    now_running[key] = vf.used_by
        self._running_users = now_running
        return pfs

    async def _reapply(self, device: str, index: int, settings: VfSettings, vm: str) -> VfSettings:
        try:
            vf = await self.manager.reapply(device, index)
        except (SriovError, InvalidInput) as exc:
            log.warning(
                "SR-IOV: PF %s VF %d: settings not re-applied after VM %s stopped: %s",
                device, index, vm, exc,
            )  # fmt: skip
            return settings
        log.debug("SR-IOV: PF %s VF %d: settings re-applied after VM %s stopped", device, index, vm)
        return vf.settings

    async def set_vf(self, command: Command) -> Answer:
        """Run a VF_SET command; every refusal is a failed answer naming the value, and a
        refused change leaves the host and the agent's record as they were."""
        try:
            args = _VfSetArgs.model_validate(command.args)
        except ValidationError as exc:
            first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "not valid"}
            where = ".".join(str(p) for p in first["loc"]) or "args"
            return failure(command.id, "invalid-input", f"vf_set {where}: {first['msg']}")
        try:
            change = vf_settings(args.settings)
        except InvalidInput as exc:
            return failure(command.id, "invalid-input", exc.message)
        missing = self._missing(args.pf, args.vf)
        if missing is not None:
            return failure(command.id, "not-found", missing)
        try:
            vf = await self.manager.set_vf(args.pf, args.vf, change)
        except InvalidInput as exc:
            return failure(command.id, "invalid-input", exc.message)
        except SriovError as exc:  # the host refused it
            return failure(command.id, "permanent", str(exc))
        vf.used_by = user_of(vf, await self._users() or {})
        return Answer(command_id=command.id, ok=True, result={"vf": vf.model_dump(mode="json")})

    def _missing(self, device: str, index: int) -> str | None:
        """Why this node has no VF `index` of PF `device` (None: it has)."""
        reason = self.manager.failed.get(device)
        if reason is not None:
            return f"PF {device} could not be set up at the agent's start: {reason}"
        if not self.started:
            return f"PF {device}: SR-IOV is not set up on this node (see the agent's log)"
        pf = next((p for p in self.manager.pfs() if p.device == device), None)
        if pf is None:
            return f"PF {device} is not in this node's configuration"
        if not any(vf.index == index for vf in pf.vfs):
            return f"PF {device} has no VF {index}"
        return None

    async def _users(self) -> dict[str, str] | None:
        """Which VM uses each VF ({} for a driver that cannot say; None: it failed now)."""
        if not isinstance(self.driver, VfUseSource):
            return {}
        try:
            return await self.driver.vf_users()
        except DriverError as exc:
            log.warning("SR-IOV: cannot read which VMs use the VFs: %s", exc.message)
            return None


class _VfSetArgs(BaseModel):
    # As every command's arguments: what a newer server adds does not make this agent refuse.
    model_config = ConfigDict(extra="ignore")

    pf: str
    vf: int = Field(ge=0)
    settings: dict[str, Any]


def user_of(vf: SriovVf, users: dict[str, str]) -> str | None:
    """The VM using `vf` in `users` (VfUseSource.vf_users): by PCI address, or by netdev."""
    found = users.get(vf.pci)
    if found is None and vf.netdev is not None:
        found = users.get(NETDEV_KEY + vf.netdev)
    return found


async def start_sriov(config: AgentConfig, driver: HypervisorDriver) -> AgentSriov | None:
    """Set up the configured PFs and re-apply every VF's recorded settings (before the first
    hello). None: the driver has no SR-IOV backend (nothing is reported)."""
    backend = sriov_backend(config)
    if backend is None:
        if config.sriov_pfs:
            log.error("SR-IOV: the %s driver has no SR-IOV; --sriov-pf ignored", config.driver)
        return None
    store = SriovSettingsStore.in_state_dir(config.state_dir)
    manager = SriovManager(backend, list(config.sriov_pfs), store)
    try:
        pfs = await manager.start()
    except (SriovError, InvalidInput, OSError) as exc:  # OSError: its record unwritable
        log.error("SR-IOV: set-up failed, not reported to the server: %s", exc)
        return AgentSriov(manager, driver, started=False)
    for pf in pfs:
        log.info("SR-IOV: PF %s (%s): %d VFs", pf.device, pf.physnet, len(pf.vfs))
    return AgentSriov(manager, driver, started=True)


async def perform_vf_set(sriov: AgentSriov | None, command: Command) -> Answer:
    """The executor's VF_SET (journaled and run once like every command)."""
    if sriov is None:
        pf = command.args.get("pf")
        return failure(command.id, "not-found", f"PF {pf} is not in this node's configuration")
    try:
        return await sriov.set_vf(command)
    except Exception as exc:  # a bug, or the agent's record unwritable: answered, not lost
        log.exception("command %s: VF_SET failed unexpectedly", command.id)
        return failure(command.id, "internal", f"{type(exc).__name__}: {exc}")
