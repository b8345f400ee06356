"""The ``sim`` hypervisor driver: VMs are records in a shared fabric directory.

Each VM operation (define, start, shutdown, stop, restart, undefine) takes ``latency``
seconds, modelling the time a real hypervisor needs; reads (``list_vms``, ``host_info``) are
immediate. State changes become visible in the fabric at the end of an operation. Blocking
file I/O runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from bollard.agent.drivers.base import HostInfo, VmSpec
from bollard.domain.errors import (
    DriverInvalidState,
    DriverNotFound,
    DriverPermanent,
    DriverTemporary,
)
from bollard.domain.protocol import Capacity, VmReport
from bollard.domain.states import PowerState
from bollard.sim.fabric import Fabric, FabricBusy
from bollard.sim.models import HostPower, SimVm

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]

# While a guest that ignores ACPI is asked to shut down, how often to look whether it
# stopped by other means (e.g. an out-of-band change) before the timeout forces it off.
_SHUTDOWN_POLL = 0.05


class SimDriver:
    name = "sim"

    def __init__(
        self,
        fabric_dir: Path | str,
        node: str,
        latency: float = 0.2,
        vcpus: int = 16,
        memory_mb: int = 32768,
        *,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if latency < 0:
            raise ValueError("latency must be >= 0")
        self.fabric = Fabric(fabric_dir)
        self.host = self.fabric.host(node)
        self.node = node
        self.latency = latency
        self.vcpus = vcpus
        self.memory_mb = memory_mb
        self._sleep = sleep
        self._monotonic = monotonic
        self._host_ready = False

    def __repr__(self) -> str:
        return f"SimDriver(node={self.node!r}, fabric={str(self.fabric.root)!r})"

    async def _io(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except FabricBusy as exc:
            raise DriverTemporary(str(exc)) from exc
        except (OSError, ValueError) as exc:
            raise DriverPermanent(f"sim fabric: {exc}") from exc

    async def _ensure_host(self) -> None:
        if not self._host_ready:
            await self._io(lambda: self.host.ensure_host(self.vcpus, self.memory_mb))
            self._host_ready = True

    async def _check_host_on(self) -> None:
        await self._ensure_host()
        rec = await self._io(self.host.record)
        if rec is not None and rec.power != HostPower.ON:
            raise DriverTemporary(f"sim host {self.node} is powered off")

    async def _existing(self, uuid: str) -> SimVm:
        vm = await self._io(lambda: self.host.get_vm(uuid))
        if vm is None:
            raise DriverNotFound(f"no VM {uuid} on {self.node}")
        return vm

    async def _set(self, uuid: str, change: Callable[[SimVm], SimVm]) -> VmReport:
        vm = await self._io(lambda: self.host.update_vm(uuid, change))
        if vm is None:
            raise DriverNotFound(f"no VM {uuid} on {self.node}")
        return vm.report()

    async def _power(self, uuid: str, power: PowerState) -> VmReport:
        def change(vm: SimVm) -> SimVm:
            return vm if vm.power == power else vm.model_copy(update={"power": power})

        return await self._set(uuid, change)

    # reads

    async def host_info(self) -> HostInfo:
        rec = await self._io(lambda: self.host.ensure_host(self.vcpus, self.memory_mb))
        self._host_ready = True
        return HostInfo(
            boot_id=rec.boot_id, capacity=Capacity(vcpus=rec.vcpus, memory_mb=rec.memory_mb)
        )

    async def list_vms(self) -> list[VmReport]:
        vms = await self._io(self.host.list_vms)
        return [vm.report() for vm in vms]

    # operations

    async def define(self, spec: VmSpec) -> VmReport:
        await self._check_host_on()
        await self._sleep(self.latency)

        def write() -> SimVm:
            with self.fabric.lock():
                vm = self.host.get_vm(spec.uuid)
                if vm is None:
                    new = SimVm(
                        uuid=spec.uuid,
                        name=spec.name,
                        vcpus=spec.vcpus,
                        memory_mb=spec.memory_mb,
                        epoch=spec.epoch,
                        power=PowerState.STOPPED,
                    )
                    return self.host.put_vm(new)
                # Same uuid: update the definition in place (as libvirt does), keep power
                # state; the epoch never goes backwards.
                update = {
                    "name": spec.name,
                    "vcpus": spec.vcpus,
                    "memory_mb": spec.memory_mb,
                    "epoch": max(vm.epoch, spec.epoch),
                }
                if all(getattr(vm, k) == v for k, v in update.items()):
                    return vm
                return self.host.put_vm(vm.model_copy(update=update))

        return (await self._io(write)).report()

    async def start(self, uuid: str) -> VmReport:
        await self._check_host_on()
        await self._existing(uuid)
        await self._sleep(self.latency)
        return await self._power(uuid, PowerState.RUNNING)

    async def stop(self, uuid: str) -> VmReport:
        await self._check_host_on()
        await self._existing(uuid)
        await self._sleep(self.latency)
        return await self._power(uuid, PowerState.STOPPED)

    async def shutdown(self, uuid: str, timeout: float) -> VmReport:
        await self._check_host_on()
        vm = await self._existing(uuid)
        if vm.power == PowerState.STOPPED:
            return vm.report()
        timeout = max(0.0, timeout)
        if vm.acpi:
            # The guest powers itself off after `latency`; past `timeout` it is forced off.
            await self._sleep(min(self.latency, timeout))
        else:
            await self._wait_stopped(uuid, self._monotonic() + timeout)
        return await self._power(uuid, PowerState.STOPPED)

    async def _wait_stopped(self, uuid: str, deadline: float) -> None:
        """Wait until the VM is no longer running, or until ``deadline``."""
        while True:
            vm = await self._existing(uuid)
            if vm.power == PowerState.STOPPED:
                return
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                return
            await self._sleep(min(_SHUTDOWN_POLL, remaining))

    async def restart(self, uuid: str) -> VmReport:
        await self._check_host_on()
        await self._existing(uuid)
        await self._sleep(self.latency)
        return await self._power(uuid, PowerState.RUNNING)

    async def undefine(self, uuid: str) -> None:
        await self._check_host_on()
        vm = await self._io(lambda: self.host.get_vm(uuid))
        if vm is None:
            return
        if vm.power not in (PowerState.STOPPED, PowerState.CRASHED):
            raise DriverInvalidState(f"VM {uuid} is {vm.power.value}; stop it first")
        await self._sleep(self.latency)

        def delete() -> None:
            with self.fabric.lock():
                current = self.host.get_vm(uuid)
                if current is None:
                    return
                if current.power not in (PowerState.STOPPED, PowerState.CRASHED):
                    raise DriverInvalidState(f"VM {uuid} is {current.power.value}; stop it first")
                self.host.delete_vm(uuid)

        await self._io(delete)

    async def close(self) -> None:
        return None
