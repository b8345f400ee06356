"""Bodies of /api/v1/nodes/{name}/sriov: a node's SR-IOV PFs with their VFs (what its agent
reports, the settings Bollard set, and the VM NIC holding each VF), and a VF's change."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bollard.domain.models import Vm
from bollard.domain.sriov import VfSettings
from bollard.store.sriov import PfRow, VfRow


class VfSettingsOut(BaseModel):
    """A VF's runtime settings; null: not set (the device's default)."""

    mtu: int | None = None
    mac: str | None = None
    vlan: int | None = Field(default=None, description="VLAN id; 0: no VLAN.")
    qos: int | None = Field(default=None, description="The VLAN's 802.1p priority.")
    min_tx_rate: int | None = Field(default=None, description="Mbit/s; 0: no limit.")
    max_tx_rate: int | None = Field(default=None, description="Mbit/s; 0: no limit.")
    spoof_check: bool | None = None
    link_state: str | None = Field(default=None, description="auto, enable or disable.")
    trust: bool | None = None
    query_rss: bool | None = None

    @classmethod
    def of(cls, settings: VfSettings) -> VfSettingsOut:
        return cls.model_validate(settings.model_dump())


class VmRefOut(BaseModel):
    name: str | None = Field(description="null: no VM with this uuid is recorded.")
    uuid: str


class VfOut(BaseModel):
    index: int = Field(description="Its number on the PF (`vf N`).")
    pci: str = Field(description="Its PCI address.")
    netdev: str | None = Field(description="Its network device (null while bound to vfio-pci).")
    settings: VfSettingsOut = Field(
        description="The settings Bollard set (re-applied by the agent at every start)."
    )
    applied: VfSettingsOut = Field(description="The settings as the host last reported them.")
    differs: list[str] = Field(
        description="The settings Bollard set that the host does not report as set."
    )
    used_by: VmRefOut | None = Field(description="The VM whose NIC holds it.")
    mac: str | None = Field(description="The MAC of the VM NIC that holds it.")
    claim_pending: bool = Field(
        description="Held by a task that has not ended (a create, migration or HA restart)."
    )
    claim_task: str | None = Field(description="That task's id.")
    claimed_at: datetime | None
    host_used_by: VmRefOut | None = Field(
        description="The VM whose definition uses it on the host, as the host reports it."
    )

    @classmethod
    def of(cls, row: VfRow, vms: dict[str, Vm]) -> VfOut:
        return cls(
            index=row.idx, pci=row.pci, netdev=row.netdev,
            settings=VfSettingsOut.of(row.settings), applied=VfSettingsOut.of(row.applied),
            differs=differences(row.settings, row.applied),
            used_by=_ref(row.used_by, vms), mac=row.mac, claim_pending=row.task_id is not None,
            claim_task=row.task_id, claimed_at=row.claimed_at,
            host_used_by=_ref(row.host_used_by, vms),
        )  # fmt: skip


def differences(desired: VfSettings, applied: VfSettings) -> list[str]:
    """The fields set in `desired` whose value the host does not report."""
    have = applied.model_dump()
    return [k for k, v in desired.given().items() if have.get(k) != v]


def _ref(uuid: str | None, vms: dict[str, Vm]) -> VmRefOut | None:
    if uuid is None:
        return None
    vm = vms.get(uuid)
    return VmRefOut(name=vm.name if vm is not None else None, uuid=uuid)


class PfOut(BaseModel):
    device: str = Field(description="Its network device on the host.")
    physnet: str = Field(description="The physical network it is cabled to.")
    pci: str
    mtu: int | None = Field(description="Its VFs' MTU from the agent's configuration.")
    vfs_total: int = Field(description="The most VFs the device supports.")
    free: int = Field(description="VFs no VM NIC holds.")
    updated_at: datetime = Field(description="When its host's report last changed it.")
    vfs: list[VfOut]

    @classmethod
    def of(cls, pf: PfRow, vfs: list[VfRow], vms: dict[str, Vm]) -> PfOut:
        return cls(
            device=pf.device, physnet=pf.physnet, pci=pf.pci, mtu=pf.mtu,
            vfs_total=pf.vfs_total, free=sum(1 for v in vfs if v.free),
            updated_at=pf.updated_at, vfs=[VfOut.of(v, vms) for v in vfs],
        )  # fmt: skip


class NodeSriovOut(BaseModel):
    node: str
    connected: bool = Field(description="Whether its agent is connected (VF changes need it).")
    pfs: list[PfOut] = Field(description="Empty: its agent reports no SR-IOV PF.")


class VfChange(BaseModel):
    """The settings to change; the others stay as they are (null: unchanged). Each is
    applied with `ip link set PF vf N ...` on the host and re-applied at every agent start."""

    model_config = ConfigDict(extra="forbid")

    mtu: int | None = Field(default=None, description="68 to 65535.")
    mac: str | None = Field(default=None, description="Not of a VF a VM holds.")
    vlan: int | None = Field(default=None, description="0 to 4094; 0: no VLAN.")
    qos: int | None = Field(default=None, description="0 to 7; needs a VLAN.")
    min_tx_rate: int | None = Field(default=None, description="Mbit/s; 0: no limit.")
    max_tx_rate: int | None = Field(default=None, description="Mbit/s; 0: no limit.")
    spoof_check: bool | None = None
    link_state: str | None = Field(default=None, description="auto, enable or disable.")
    trust: bool | None = None
    query_rss: bool | None = None

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}
