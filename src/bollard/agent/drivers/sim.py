"""The ``sim`` hypervisor driver: VMs are records in a shared fabric directory.

Each VM operation (define, start, shutdown, stop, restart, undefine) takes ``latency``
seconds, modelling the time a real hypervisor needs; reads (``list_vms``, ``host_info``) are
immediate. State changes become visible in the fabric at the end of an operation, and each
is appended to the host's execution log with the id of the command it ran for. Blocking
file I/O runs in a worker thread.

Faults armed in the fabric (``bollard sim fault set``) fire here: ``fail`` makes the
operation fail with a permanent error, ``hang`` makes it never complete by itself (the
executor's command deadline or a cancel ends it); ``drop-answer`` and ``crash-agent`` are
handed to the agent through ``take_agent_fault``. Long operations are jobs (see
bollard.sim.jobs) whose progress is a function of time; a migration is one (see sim_jobs),
a volume copy another. Storage (pools, volumes, snapshots, copies, the disks of VMs) is in
sim_storage.

NICs: the sim hypervisor has no networks, but which SR-IOV VF a VM's NIC takes is reported
(``vf_users``, VfUseSource), so the driver keeps each VM's NICs as ``define`` gave them (by
the rule of every driver: ``nics.merged_nics``) in ``<fabric>/hosts/<node>/nics/<uuid>.json``
(``SimNics``), next to the VM's record and written under the same fabric lock.

A VM record also appears on a host without a ``define`` there: a sim migration brings it in
(bollard.sim.migration writes the record itself). A NIC file left on that host by an earlier
stay of the VM must then not count: each file carries the epoch of the record it was written
with, and is read only while the record still has that epoch (a VM that left a host and came
back has a newer epoch, since every move takes one). A migration given the VM's NICs on the
target writes the target's file at its start, with the epoch the VM lands with
(``_land_nics``): they count once it has landed, as a libvirt domain's destination XML does;
a VM that migrated in without them has none until its next ``define`` there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, Field, ValidationError

from bollard.agent.drivers.base import (
    AgentFault,
    DiskInfo,
    HostInfo,
    NicSpec,
    VmSpec,
    current_command_id,
)
from bollard.agent.drivers.nics import merged_nics, vf_users_of
from bollard.agent.drivers.sim_storage import SimStorageDriver, merge_disks
from bollard.domain.errors import (
    DriverInvalidState,
    DriverNotFound,
    DriverPermanent,
    DriverTemporary,
)
from bollard.domain.protocol import Capacity, VmReport
from bollard.domain.states import CommandType, PowerState
from bollard.sim.fabric import Fabric, FabricBusy, SimHost
from bollard.sim.files import check_component, read_json, report_corrupt, write_json_atomic
from bollard.sim.host_shutdown import ShutdownFlag
from bollard.sim.migration import Migrations
from bollard.sim.models import (
    AGENT_FAULTS,
    DRIVER_FAULTS,
    FaultMode,
    HostPower,
    SimVm,
)
from bollard.sim.out_of_band import take_report_hold
from bollard.sim.partition import PartitionFlag
from bollard.sim.power import register_agent
from bollard.sim.storage import SimStorage

log = logging.getLogger(__name__)

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]

# While a guest that ignores ACPI is asked to shut down, how often to look whether it
# stopped by other means (e.g. an out-of-band change) before the timeout forces it off.
_SHUTDOWN_POLL = 0.05


DEFAULT_MIGRATION_RATE = 2048.0  # MiB of VM memory migrated per second
DEFAULT_COPY_RATE = 2048.0  # MiB of a volume copied per second


class SimNicsRecord(BaseModel):
    """One VM's NICs on one sim host, with the epoch of the VM record they belong to."""

    epoch: int = Field(ge=0)
    nics: list[NicSpec] = Field(default_factory=list)


class SimNics:
    """The NIC files of one sim host (see the module's doc). Writers hold the fabric lock,
    as for the VM record."""

    def __init__(self, host: SimHost) -> None:
        self.dir: Path = host.dir / "nics"

    def _file(self, uuid: str) -> Path:
        return self.dir / f"{check_component('vm uuid', uuid)}.json"

    def of(self, vm: SimVm) -> tuple[NicSpec, ...]:
        """The NICs ``define`` gave ``vm`` on this host (none if they are of another epoch
        of it, or unreadable: a corrupt file is logged once and skipped)."""
        path = self._file(vm.uuid)
        data = read_json(path)
        if data is None:
            return ()
        try:
            record = SimNicsRecord.model_validate(data)
        except ValidationError as exc:
            report_corrupt(path, f"invalid NIC record: {exc.error_count()} errors")
            return ()
        return tuple(record.nics) if record.epoch == vm.epoch else ()

    def put(self, vm: SimVm, nics: tuple[NicSpec, ...]) -> None:
        """Record ``nics`` as those of ``vm`` (as its record now is); none: no file."""
        self.put_at(vm.uuid, vm.epoch, nics)

    def put_at(self, uuid: str, epoch: int, nics: tuple[NicSpec, ...]) -> None:
        """Record ``nics`` as those of VM ``uuid`` while its record here has ``epoch``."""
        if not nics:
            self.remove(uuid)
            return
        record = SimNicsRecord(epoch=epoch, nics=list(nics))
        write_json_atomic(self._file(uuid), record.model_dump(mode="json"))

    def remove(self, uuid: str) -> None:
        self._file(uuid).unlink(missing_ok=True)


class SimDriver(SimStorageDriver):
    name = "sim"

    def __init__(
        self,
        fabric_dir: Path | str,
        node: str,
        latency: float = 0.2,
        vcpus: int = 16,
        memory_mb: int = 32768,
        *,
        migration_rate: float = DEFAULT_MIGRATION_RATE,
        copy_rate: float = DEFAULT_COPY_RATE,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if latency < 0:
            raise ValueError("latency must be >= 0")
        if migration_rate <= 0:
            raise ValueError("migration rate must be > 0")
        if copy_rate <= 0:
            raise ValueError("copy rate must be > 0")
        self.fabric = Fabric(fabric_dir)
        self.host = self.fabric.host(node)
        self.nics = SimNics(self.host)
        self.migrations = Migrations(self.fabric)
        self.storage = SimStorage(self.fabric)
        self.partition_flag = PartitionFlag(self.fabric.root, node)
        self.shutdown_flag = ShutdownFlag(self.fabric, node)
        self.node = node
        self.latency = latency
        self.migration_rate = migration_rate
        self.copy_rate = copy_rate
        self.vcpus = vcpus
        self.memory_mb = memory_mb
        self._sleep = sleep
        self._monotonic = monotonic
        self._wall = wall
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
        await self._io(self._require_on)

    def _require_on(self) -> None:
        """DriverTemporary if the host is off. Also called under the fabric lock by each
        operation's final write: a host switched off meanwhile (a sim power off or fence)
        must not see a VM started, defined or removed after it went off."""
        rec = self.host.record()
        if rec is not None and rec.power != HostPower.ON:
            raise DriverTemporary(f"sim host {self.node} is powered off")

    async def _fault_point(self, command: str, vm: str | None = None) -> None:
        """Where an armed ``fail`` or ``hang`` fault for this operation (a CommandType
        value; of the VM with uuid ``vm``, or of every VM) fires."""
        fault = await self._io(lambda: self.host.faults.take(command, DRIVER_FAULTS, vm))
        if fault is None:
            return
        if fault.mode == FaultMode.FAIL:
            raise DriverPermanent(f"injected fault: {command} fails on {self.node}")
        if fault.mode == FaultMode.DELAY:
            await self._sleep(fault.seconds)  # models a slow operation, as the latency does
            return
        # HANG: never completes by itself; the caller's deadline (or a cancel) ends it.
        await asyncio.Event().wait()

    async def _existing(self, uuid: str) -> SimVm:
        vm = await self._io(lambda: self.host.get_vm(uuid))
        if vm is None:
            raise DriverNotFound(f"no VM {uuid} on {self.node}")
        return vm

    async def _power(self, command: CommandType, uuid: str, power: PowerState) -> VmReport:
        command_id = current_command_id.get()

        def write() -> SimVm | None:
            with self.fabric.lock():
                self._require_on()
                vm = self.host.get_vm(uuid)
                if vm is None:
                    return None
                if vm.power != power:
                    vm = self.host.put_vm(vm.model_copy(update={"power": power}))
                self.host.exec_log.append(command_id, command.value, uuid)
                return vm

        vm = await self._io(write)
        if vm is None:
            raise DriverNotFound(f"no VM {uuid} on {self.node}")
        return vm.report()

    # reads

    async def host_info(self) -> HostInfo:
        rec = await self._io(lambda: self.host.ensure_host(self.vcpus, self.memory_mb))
        self._host_ready = True
        return HostInfo(
            boot_id=rec.boot_id, capacity=Capacity(vcpus=rec.vcpus, memory_mb=rec.memory_mb)
        )

    async def list_vms(self) -> list[VmReport]:
        def read() -> list[SimVm]:
            self._settle()  # migration phases due by now act first
            return self.host.list_vms()

        return [vm.report() for vm in await self._io(read)]

    async def load(self) -> float | None:
        return await self._io(self.host.load)

    async def vf_users(self) -> dict[str, str]:
        """``{VF PCI address: VM uuid}`` for the SR-IOV NICs of the VMs defined here."""

        def read() -> dict[str, str]:
            self._settle()  # migration phases due by now act first
            return vf_users_of((vm.uuid, self.nics.of(vm)) for vm in self.host.list_vms())

        return await self._io(read)

    def _land_nics(self, target: str, uuid: str, epoch: int, nics: Sequence[NicSpec]) -> None:
        """(Under the fabric lock, as a migration starts.) The VM's NICs on ``target`` once
        it lands there with ``epoch``: its NICs here merged with ``nics`` (the rule of
        ``define``: an SR-IOV NIC moves to the target's VF)."""
        vm = self.host.get_vm(uuid)
        have = self.nics.of(vm) if vm is not None else ()
        SimNics(self.fabric.host(target)).put_at(uuid, epoch, merged_nics(have, nics))

    # operations

    async def define(self, spec: VmSpec) -> VmReport:
        command_id = current_command_id.get()
        merge_disks([], [], spec.disks)  # refuses two disks at one device before anything
        await self._check_host_on()
        await self._fault_point(CommandType.DEFINE)
        await self._sleep(self.latency)

        def write() -> SimVm:
            with self.fabric.lock():
                self._require_on()
                self.host.exec_log.append(command_id, CommandType.DEFINE.value, spec.uuid)
                vm = self.host.get_vm(spec.uuid)
                if vm is None:
                    disks, drives = merge_disks([], [], spec.disks)
                    new = SimVm(
                        uuid=spec.uuid,
                        name=spec.name,
                        vcpus=spec.vcpus,
                        memory_mb=spec.memory_mb,
                        epoch=spec.epoch,
                        power=PowerState.STOPPED,
                        disks=disks,
                        drives=drives,
                    )
                    new = self.host.put_vm(new)
                    self.nics.put(new, merged_nics((), spec.nics))
                    return new
                # Same uuid: update the definition in place (as libvirt does), keep power
                # state; the epoch never goes backwards. Disks it has are kept as they are;
                # missing ones are added (volumes are used as they are, never made). NICs
                # likewise, except an SR-IOV NIC on another VF (see nics.merged_nics).
                disks, drives = merge_disks(vm.disks, vm.drives, spec.disks)
                nics = self.nics.of(vm)
                wanted = merged_nics(nics, spec.nics)
                update = {
                    "name": spec.name,
                    "vcpus": spec.vcpus,
                    "memory_mb": spec.memory_mb,
                    "epoch": max(vm.epoch, spec.epoch),
                    "disks": disks,
                    "drives": drives,
                }
                if not all(getattr(vm, k) == v for k, v in update.items()):
                    vm = self.host.put_vm(vm.model_copy(update=update))
                elif wanted == nics:
                    return vm
                self.nics.put(vm, wanted)  # (again with a new epoch: see SimNics)
                return vm

        return (await self._io(write)).report()

    async def disks(self, uuid: str) -> list[DiskInfo]:
        vm = await self._existing(uuid)
        return await self._io(lambda: self._disk_infos(vm))

    async def start(self, uuid: str) -> VmReport:
        await self._check_host_on()
        vm = await self._existing(uuid)
        await self._io(lambda: self._check_volumes(vm))
        await self._fault_point(CommandType.START, uuid)
        await self._sleep(self.latency)
        return await self._power(CommandType.START, uuid, PowerState.RUNNING)

    async def stop(self, uuid: str) -> VmReport:
        await self._check_host_on()
        await self._existing(uuid)
        await self._fault_point(CommandType.STOP)
        await self._sleep(self.latency)
        return await self._power(CommandType.STOP, uuid, PowerState.STOPPED)

    async def shutdown(self, uuid: str, timeout: float) -> VmReport:
        await self._check_host_on()
        vm = await self._existing(uuid)
        await self._fault_point(CommandType.SHUTDOWN)
        if vm.power == PowerState.STOPPED:
            return vm.report()
        timeout = max(0.0, timeout)
        if vm.acpi:
            # The guest powers itself off after `latency`; past `timeout` it is forced off.
            await self._sleep(min(self.latency, timeout))
        else:
            await self._wait_stopped(uuid, self._monotonic() + timeout)
        return await self._power(CommandType.SHUTDOWN, uuid, PowerState.STOPPED)

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
        vm = await self._existing(uuid)
        await self._io(lambda: self._check_volumes(vm))
        await self._fault_point(CommandType.RESTART)
        await self._sleep(self.latency)
        return await self._power(CommandType.RESTART, uuid, PowerState.RUNNING)

    async def undefine(self, uuid: str, *, force: bool = False) -> None:
        """With ``force``, a running or paused VM (e.g. a leftover copy on a migration
        target) is destroyed and undefined in one step."""
        command_id = current_command_id.get()
        await self._check_host_on()
        await self._fault_point(CommandType.UNDEFINE)
        vm = await self._io(lambda: self.host.get_vm(uuid))
        if vm is None:
            return
        if not force and vm.power not in (PowerState.STOPPED, PowerState.CRASHED):
            raise DriverInvalidState(f"VM {uuid} is {vm.power.value}; stop it first")
        await self._sleep(self.latency)

        def delete() -> None:
            with self.fabric.lock():
                self._require_on()
                current = self.host.get_vm(uuid)
                if current is None:
                    return
                if not force and current.power not in (PowerState.STOPPED, PowerState.CRASHED):
                    raise DriverInvalidState(f"VM {uuid} is {current.power.value}; stop it first")
                self.host.exec_log.append(command_id, CommandType.UNDEFINE.value, uuid)
                self.host.delete_vm(uuid)
                self.nics.remove(uuid)

        await self._io(delete)

    async def close(self) -> None:
        return None

    # agent faults (FaultSource)

    async def take_agent_fault(self, command: CommandType) -> AgentFault | None:
        try:
            fault = await self._io(lambda: self.host.faults.take(command.value, AGENT_FAULTS))
        except DriverTemporary as exc:
            raise DriverTemporary(f"cannot read sim faults: {exc}") from exc
        return None if fault is None else AgentFault(fault.mode.value)

    # heartbeat faults (ReportFaultSource)

    async def take_report_hold(self) -> bool:
        """Whether the next heartbeat is to be held back and delivered after a newer one
        (``bollard sim report hold``); counts the armed hold down."""
        return await self._io(lambda: take_report_hold(self.host))

    # simulated network partition (PartitionSource)

    async def partitioned(self) -> bool:
        """The host's partition flag in the fabric (``bollard sim partition``)."""
        return await self.partition_flag.check()

    # a clean shutdown of the host (agent/host_shutdown.py ShutdownSource)

    async def host_shutdown(self) -> str | None:
        """The host's shutdown mark in the fabric (``bollard sim node shutdown``)."""
        kind = await asyncio.to_thread(self.shutdown_flag.read)
        return None if kind is None else kind.value

    # the agent's process, killed by a sim power off (AgentProcessRecorder)

    async def record_agent_process(self) -> None:
        """Record this process as the host's agent in the fabric, so that a sim power off
        (or fence) of the host kills it; creates the host record if needed."""
        try:
            await asyncio.to_thread(
                register_agent, self.fabric.root, self.node, self.vcpus, self.memory_mb
            )
        except (OSError, ValueError, FabricBusy) as exc:
            log.warning("cannot record the agent pid in the sim fabric: %s", exc)
