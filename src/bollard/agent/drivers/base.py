"""The interface every hypervisor driver implements (sim now, libvirt later).

All methods are idempotent where the operation allows it: defining a VM that is already
defined with the same uuid, starting a running VM, stopping a stopped one and undefining an
absent one succeed without doing anything. Errors are the Driver* errors of
bollard.domain.errors: DriverNotFound (no such VM), DriverInvalidState (e.g. undefine while
running), DriverTemporary (retry later), DriverPermanent.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel

from bollard.domain.protocol import Capacity, VmReport


class VmSpec(BaseModel):
    uuid: str
    name: str
    vcpus: int
    memory_mb: int
    epoch: int = 0


class HostInfo(BaseModel):
    boot_id: str
    capacity: Capacity


class HypervisorDriver(Protocol):
    name: str

    async def host_info(self) -> HostInfo: ...

    async def list_vms(self) -> list[VmReport]: ...

    async def define(self, spec: VmSpec) -> VmReport: ...

    async def start(self, uuid: str) -> VmReport: ...

    async def shutdown(self, uuid: str, timeout: float) -> VmReport:
        """Graceful (ACPI) shutdown; forced stop once ``timeout`` seconds have passed."""
        ...

    async def stop(self, uuid: str) -> VmReport:
        """Forced power off."""
        ...

    async def restart(self, uuid: str) -> VmReport: ...

    async def undefine(self, uuid: str) -> None: ...

    async def close(self) -> None: ...
