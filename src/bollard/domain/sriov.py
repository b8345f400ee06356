"""SR-IOV: a host's physical functions (PFs), their virtual functions (VFs), and the runtime
settings of a VF (issue 22).

A PF comes from the agent's configuration (`PfConfig`: its network device, how many VFs it
should have, their MTU and the physical network it is cabled to). The agent sets the VF count,
discovers the VFs (`SriovPf`, `SriovVf`: what it reports with its inventory) and applies each
VF's settings (`VfSettings`: what `ip link set PF vf N ...` changes) at every start, so a reboot
loses nothing. The server records them with the VM that holds each VF.

Every check here raises `InvalidInput` with one line naming the value, before anything changes.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bollard.domain.errors import InvalidInput

PHYSNET = re.compile(r"[A-Za-z0-9_.:-]{1,63}")  # a physical network's label
DEVICE = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")  # a Linux network device name (IFNAMSIZ - 1)
PCI_ADDRESS = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")  # 0000:03:10.2
SRIOV_MODES = ("macvtap", "hostdev")  # how a VM NIC takes its VF
LINK_STATES = ("auto", "enable", "disable")
MAX_VLAN = 4094
MAX_QOS = 7  # 802.1p priority
MAX_VFS = 256  # the most VFs a PF may be asked for, whatever the device says
MAX_RATE = 1_000_000  # Mbit/s (1 Tbit/s)
MIN_MTU, MAX_MTU = 68, 65535

SriovMode = Literal["macvtap", "hostdev"]
LinkState = Literal["auto", "enable", "disable"]


def check_physnet(value: str) -> str:
    if not PHYSNET.fullmatch(value):
        raise InvalidInput(
            f"physical network {value!r}: 1 to 63 letters, digits or '_', '.', ':', '-'"
        )
    return value


def check_device(value: str) -> str:
    if not DEVICE.fullmatch(value):
        raise InvalidInput(f"network device {value!r}: not a Linux network device name")
    return value


def check_mode(value: str) -> str:
    if value not in SRIOV_MODES:
        raise InvalidInput(f"SR-IOV mode {value!r}: must be one of {', '.join(SRIOV_MODES)}")
    return value


def check_mtu(value: int, what: str = "mtu") -> int:
    if not MIN_MTU <= value <= MAX_MTU:
        raise InvalidInput(f"{what} {value}: must be between {MIN_MTU} and {MAX_MTU}")
    return value


class PfConfig(BaseModel):
    """A PF as the agent's configuration names it."""

    model_config = ConfigDict(frozen=True)

    device: str  # its network device, e.g. ens1f0
    vfs: int  # how many VFs it should have
    physnet: str  # the physical network it is cabled to
    mtu: int | None = None  # the VFs' MTU (None: as the device has it)

    def check(self) -> PfConfig:
        check_device(self.device)
        check_physnet(self.physnet)
        if not 0 <= self.vfs <= MAX_VFS:
            raise InvalidInput(f"PF {self.device}: VF count {self.vfs}: must be 0 to {MAX_VFS}")
        if self.mtu is not None:
            check_mtu(self.mtu, f"PF {self.device}: mtu")
        return self


def parse_pf(text: str) -> PfConfig:
    """`DEVICE:VFS:PHYSNET[:MTU]` (the agent's repeatable `--sriov-pf`) → a checked PfConfig."""
    parts = text.split(":")
    if len(parts) not in (3, 4) or not all(parts):
        raise InvalidInput(f"SR-IOV PF {text!r}: expected DEVICE:VFS:PHYSNET[:MTU]")
    device, count, physnet = parts[:3]
    try:
        vfs = int(count)
        mtu = int(parts[3]) if len(parts) == 4 else None
    except ValueError:
        raise InvalidInput(f"SR-IOV PF {text!r}: VFS and MTU are whole numbers") from None
    return PfConfig(device=device, vfs=vfs, physnet=physnet, mtu=mtu).check()


class VfSettings(BaseModel):
    """A VF's runtime settings (`ip link set PF vf N ...`); None: not set by Bollard (the
    device's default stays). `merged` applies a change; `check` refuses what is out of range."""

    model_config = ConfigDict(frozen=True)

    mtu: int | None = None
    mac: str | None = None  # lower case; the VM NIC's MAC while a VM holds the VF
    vlan: int | None = None  # 0: no VLAN
    qos: int | None = None  # the VLAN's 802.1p priority (needs vlan)
    min_tx_rate: int | None = None  # Mbit/s, 0: no limit
    max_tx_rate: int | None = None  # Mbit/s, 0: no limit
    spoof_check: bool | None = None
    link_state: LinkState | None = None
    trust: bool | None = None
    query_rss: bool | None = None

    def check(self) -> VfSettings:
        if self.mtu is not None:
            check_mtu(self.mtu)
        if self.mac is not None:
            from bollard.domain.models import normalise_mac

            try:
                normalise_mac(self.mac)
            except ValueError as exc:
                raise InvalidInput(f"mac: {exc}") from None
        if self.vlan is not None and not 0 <= self.vlan <= MAX_VLAN:
            raise InvalidInput(f"vlan {self.vlan}: must be between 0 and {MAX_VLAN}")
        if self.qos is not None:
            if not 0 <= self.qos <= MAX_QOS:
                raise InvalidInput(f"qos {self.qos}: must be between 0 and {MAX_QOS}")
            if self.qos and not self.vlan:
                raise InvalidInput(f"qos {self.qos}: needs a vlan")
        for name in ("min_tx_rate", "max_tx_rate"):
            rate = getattr(self, name)
            if rate is not None and not 0 <= rate <= MAX_RATE:
                raise InvalidInput(f"{name.replace('_', '-')} {rate}: must be 0 to {MAX_RATE}")
        low, high = self.min_tx_rate, self.max_tx_rate
        if low and high and low > high:
            raise InvalidInput(f"min-tx-rate {low}: above max-tx-rate {high}")
        if self.link_state is not None and self.link_state not in LINK_STATES:
            raise InvalidInput(
                f"link-state {self.link_state!r}: must be one of {', '.join(LINK_STATES)}"
            )
        return self

    def merged(self, change: VfSettings) -> VfSettings:
        """These settings with every field `change` sets replaced."""
        return self.model_copy(update=change.model_dump(exclude_none=True))

    def given(self) -> dict[str, Any]:
        """Only the fields that are set."""
        return self.model_dump(exclude_none=True)


def vf_settings(values: dict[str, Any]) -> VfSettings:
    """VfSettings from a request's or a command's dict, checked; a bad field or type is an
    InvalidInput naming it (never a pydantic trace)."""
    try:
        settings = VfSettings.model_validate(values)
    except ValidationError as exc:
        errors = exc.errors()
        if errors:
            first = errors[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "settings"
            given = first.get("input")
            raise InvalidInput(f"{where} {given!r}: {first.get('msg', 'invalid')}") from None
        raise InvalidInput("VF settings: not valid") from None
    return settings.check()


class SriovVf(BaseModel):
    """A VF as its host found it."""

    index: int = Field(ge=0)  # its number on the PF (`vf N`)
    pci: str  # its PCI address, 0000:03:10.2
    netdev: str | None = None  # its network device (None while bound to vfio-pci)
    settings: VfSettings = Field(default_factory=VfSettings)  # as applied on the host
    used_by: str | None = None  # the uuid of the VM whose definition uses it on the host


class SriovPf(BaseModel):
    """A PF as its host found it, with its VFs, reported with the host's inventory."""

    device: str
    physnet: str
    pci: str = ""
    mtu: int | None = None
    vfs_total: int = 0  # the most VFs the device supports (sriov_totalvfs)
    vfs: list[SriovVf] = Field(default_factory=list)  # in index order
    # Why a configured PF could not be set up at the agent's start (its VFs are not
    # reported): the server keeps its records as they were, holders included, so a PF away
    # for one boot never has its VFs handed out again while VMs still hold them.
    error: str | None = Field(default=None, max_length=500)
