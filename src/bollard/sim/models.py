"""Records stored in the fabric: one per sim host, one per VM defined on it."""

from __future__ import annotations

import time
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from bollard.domain.protocol import VmReport
from bollard.domain.states import PowerState


class HostPower(StrEnum):
    ON = "on"
    OFF = "off"


class _Record(BaseModel):
    # Unknown fields (written by a newer version) are ignored rather than fatal.
    model_config = ConfigDict(extra="ignore")


class SimHostRecord(_Record):
    """``<fabric>/hosts/<node>/host.json``."""

    node: str
    power: HostPower = HostPower.ON
    boot_id: str  # new for every simulated boot of the host
    vcpus: int = Field(ge=0)
    memory_mb: int = Field(ge=0)
    booted_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)


class SimVm(_Record):
    """``<fabric>/hosts/<node>/vms/<uuid>.json``: one VM as the simulated hypervisor has it."""

    uuid: str
    name: str
    vcpus: int = Field(ge=0)
    memory_mb: int = Field(ge=0)
    power: PowerState = PowerState.STOPPED
    epoch: int = 0
    # Whether the guest honours an ACPI shutdown request (a graceful shutdown). A guest that
    # does not is only stopped by a forced power off, e.g. when a shutdown times out.
    acpi: bool = True
    updated_at: float = Field(default_factory=time.time)

    def report(self) -> VmReport:
        return VmReport(
            uuid=self.uuid,
            name=self.name,
            power=self.power,
            vcpus=self.vcpus,
            memory_mb=self.memory_mb,
            epoch=self.epoch,
        )
