"""The ``memory`` hypervisor driver: the sim driver's semantics, kept in memory.

Made for the fleet simulator, which runs thousands of simulated hosts in one process: a
``MemoryFabric`` holds the hosts of the process (their VMs and migration jobs), each
``MemoryDriver`` is one host's view of it. Several drivers of one node share that node's
state. There is no file I/O, no thread and no background task: a migration's progress is a
function of the fabric's clock, and a migration whose time is up completes when it is next
read (``job``, ``list_vms`` or any operation on its source or target host), so an idle host
costs nothing. Each VM's ``VmReport`` is built once and rebuilt only when the VM changes;
``list_vms`` returns a new list of the cached reports (which are never modified in place).

Disks: each disk of a VM is recorded at its device (``DiskSpec.device``, else by its index)
with its size and, for a volume of a pool, its path; the memory driver has no storage of its
own (no pools, no volumes), so a path is kept as it is and never checked.

NICs are kept as ``define`` is given them (``nics.merged_nics``: by MAC; an SR-IOV NIC on
another VF is moved to the VF given) and travel with the VM when it migrates, as a libvirt
domain's XML does: merged by the same rule with the NICs the migration is given (an SR-IOV
NIC lands on the target's VF the server claimed), or unchanged when it is given none;
``vf_users`` (VfUseSource) reports the VFs of SR-IOV NICs.

Operations (define, start, stop, shutdown, restart, undefine) take ``latency`` seconds of
``sleep`` each (none at all when it is 0); reads are immediate. A powered-off host's
operations raise DriverTemporary; its VMs are stopped and its migrations fail at once.
"""

from __future__ import annotations

import asyncio
import time
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bollard.agent.drivers.base import (
    MIGRATION_FAILED,
    DiskInfo,
    DiskSpec,
    HostInfo,
    JobInfo,
    JobStatus,
    NicSpec,
    VmSpec,
    disk_device,
)
from bollard.agent.drivers.nics import merged_nics, vf_users_of
from bollard.domain.errors import (
    DriverInvalidState,
    DriverNotFound,
    DriverPermanent,
    DriverTemporary,
)
from bollard.domain.protocol import Capacity, VmReport
from bollard.domain.states import PowerState

Sleep = Callable[[float], Awaitable[None]]

KIND = "migrate"
# Ended jobs kept per host (for ``job`` and idempotent ``migrate``); older ones are dropped.
MAX_ENDED_JOBS = 64

_STOPPED = (PowerState.STOPPED, PowerState.CRASHED)


def _boot_id() -> str:
    return str(uuidlib.uuid4())


@dataclass(slots=True, eq=False)
class _Vm:
    uuid: str
    name: str
    vcpus: int
    memory_mb: int
    epoch: int
    power: PowerState = PowerState.STOPPED
    acpi: bool = True  # False: the guest ignores ACPI shutdown requests
    disks: tuple[DiskInfo, ...] = ()  # in device order (never changed in place)
    nics: tuple[NicSpec, ...] = ()  # as its definition has them (never changed in place)
    cached: VmReport | None = None  # dropped (by _Host.touched) whenever the VM changes

    def report(self) -> VmReport:
        report = self.cached
        if report is None:
            report = self.cached = VmReport(
                uuid=self.uuid,
                name=self.name,
                power=self.power,
                vcpus=self.vcpus,
                memory_mb=self.memory_mb,
                epoch=self.epoch,
            )
        return report


@dataclass(slots=True, eq=False)
class _Host:
    node: str
    vcpus: int
    memory_mb: int
    boot_id: str = field(default_factory=_boot_id)
    on: bool = True
    vms: dict[str, _Vm] = field(default_factory=dict)
    jobs: dict[str, _Migration] = field(default_factory=dict)  # from here, by command id
    pending: dict[str, _Migration] = field(default_factory=dict)  # running, from or to here
    reports: list[VmReport] | None = None  # cached list_vms
    busy_vcpus: int | None = None  # cached vCPUs of the running VMs

    def touched(self, vm: _Vm | None = None) -> None:
        """A VM changed (``vm``), appeared or went away: drop what was cached of it."""
        if vm is not None:
            vm.cached = None
        self.reports = None
        self.busy_vcpus = None


@dataclass(slots=True, eq=False)
class _Migration:
    command_id: str
    uuid: str
    source: _Host
    target: _Host
    live: bool
    new_epoch: int
    started_at: float
    duration: float
    status: JobStatus = JobStatus.RUNNING
    ended_at: float = 0.0
    phase: str = "transfer"  # where it is, or ended: transfer, switchover, cleanup
    message: str = ""
    vm: VmReport | None = None  # the VM on the target, once completed
    nics: tuple[NicSpec, ...] | None = None  # its NICs on the target (None: as they are)

    def info(self, now: float) -> JobInfo:
        status = self.status
        end = now if status == JobStatus.RUNNING else self.ended_at  # (completed: at its end)
        if self.duration > 0:
            progress = max(0.0, min(1.0, (end - self.started_at) / self.duration))
        else:
            progress = 1.0 if status in (JobStatus.RUNNING, JobStatus.COMPLETED) else 0.0
        result: dict[str, Any] = {}
        if self.vm is not None:
            result["vm"] = self.vm.model_dump(mode="json")
        if status != JobStatus.RUNNING:
            moved = status == JobStatus.COMPLETED
            result["migration"] = {
                "phase": self.phase,
                "source": self.source.node,
                "target": self.target.node,
                "vm_on": self.target.node if moved else self.source.node,
            }
        return JobInfo(
            command_id=self.command_id,
            kind=KIND,
            vm_uuid=self.uuid,
            status=status,
            progress=progress,
            message=self.message,
            error_code=MIGRATION_FAILED if status == JobStatus.FAILED else "",
            phase="done" if status == JobStatus.COMPLETED else self.phase,
            result=result,
        )


class MemoryFabric:
    """The hosts of one process; migrations move VMs between them."""

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.monotonic = monotonic
        self._hosts: dict[str, _Host] = {}

    def _attach(self, node: str, vcpus: int, memory_mb: int) -> _Host:
        """The host ``node`` (created powered on, or given this capacity)."""
        host = self._hosts.get(node)
        if host is None:
            host = self._hosts[node] = _Host(node, vcpus, memory_mb)
        elif (host.vcpus, host.memory_mb) != (vcpus, memory_mb):
            host.vcpus, host.memory_mb = vcpus, memory_mb
            host.touched()
        return host

    def power_off(self, node: str) -> None:
        """Cut the host's power: its VMs stop, its migrations (from or to it) fail."""
        host = self._hosts[node]  # KeyError: no such host
        if not host.on:
            return
        self._settle(host)  # migrations due by now have completed before
        host.on = False
        for vm in host.vms.values():
            if vm.power != PowerState.STOPPED:
                vm.power = PowerState.STOPPED
                host.touched(vm)
        for job in list(host.pending.values()):
            self._end(job, JobStatus.FAILED, f"host {node} was powered off")

    def power_on(self, node: str) -> None:
        """Boot the host: a new boot id; its VMs stay defined, stopped. No-op if on."""
        host = self._hosts[node]  # KeyError: no such host
        if not host.on:
            host.on, host.boot_id = True, _boot_id()

    def vm_count(self) -> int:
        """VMs defined on all hosts (a migrating VM counts once, on its source)."""
        return sum(len(host.vms) for host in self._hosts.values())

    # migrations

    def _settle(self, host: _Host) -> None:
        """Complete the migrations from or to ``host`` whose time is up."""
        if host.pending:
            now = self.monotonic()
            for job in list(host.pending.values()):
                if now >= job.started_at + job.duration:
                    self._complete(job)

    def _complete(self, job: _Migration) -> None:
        """The switchover, at the end of the migration: the VM moves, or stays if it can't."""
        source, target = job.source, job.target
        vm = source.vms.get(job.uuid)
        there = target.vms.get(job.uuid)
        problem = ""
        if vm is None:
            problem = f"VM {job.uuid} is no longer defined on {source.node}"
        elif job.live and vm.power != PowerState.RUNNING:
            problem = f"VM {job.uuid} is {vm.power.value} on {source.node}, no longer running"
        elif not job.live and vm.power not in _STOPPED:
            problem = f"VM {job.uuid} was started on {source.node} during an offline migration"
        elif there is not None and there.power == PowerState.RUNNING:
            problem = f"VM {job.uuid} was started on {target.node} meanwhile"
        elif there is not None and there.epoch > job.new_epoch:
            problem = f"{target.node} has VM {job.uuid} with a newer epoch {there.epoch}"
        if vm is None or problem:
            self._end(job, JobStatus.FAILED, problem, at=job.started_at + job.duration)
            job.phase = "switchover"
            return
        power = PowerState.RUNNING if job.live else PowerState.STOPPED
        moved = _Vm(
            vm.uuid,
            vm.name,
            vm.vcpus,
            vm.memory_mb,
            job.new_epoch,
            power,
            vm.acpi,
            vm.disks,
            vm.nics if job.nics is None else merged_nics(vm.nics, job.nics),
        )
        del source.vms[job.uuid]
        source.touched()
        target.vms[job.uuid] = moved
        target.touched()
        job.vm = moved.report()
        job.phase = "cleanup"
        self._end(job, JobStatus.COMPLETED, "", at=job.started_at + job.duration)

    def _end(self, job: _Migration, status: JobStatus, why: str, at: float | None = None) -> None:
        job.status, job.message = status, why
        job.ended_at = self.monotonic() if at is None else at
        job.source.pending.pop(job.command_id, None)
        job.target.pending.pop(job.command_id, None)


class MemoryDriver:
    """One host of a MemoryFabric (HypervisorDriver, JobDriver, MigrationDriver,
    LoadSource, VfUseSource)."""

    name = "memory"

    def __init__(
        self,
        fabric: MemoryFabric,
        node: str,
        *,
        vcpus: int = 64,
        memory_mb: int = 262144,
        latency: float = 0.0,
        migration_rate: float = 2048.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if latency < 0:
            raise ValueError("latency must be >= 0")
        if migration_rate <= 0:
            raise ValueError("migration rate must be > 0")
        self.fabric = fabric
        self.node = node
        self.latency = latency
        self.migration_rate = migration_rate
        self._sleep = sleep
        self._host = fabric._attach(node, vcpus, memory_mb)

    def __repr__(self) -> str:
        return f"MemoryDriver(node={self.node!r})"

    def ignore_acpi(self, uuid: str) -> None:
        """Test hook: the guest of this VM ignores ACPI shutdown requests."""
        vm = self._host.vms.get(uuid)
        if vm is None:
            raise DriverNotFound(f"no VM {uuid} on {self.node}")
        vm.acpi = False

    # helpers

    def _on(self) -> _Host:
        host = self._host
        if not host.on:
            raise DriverTemporary(f"memory host {self.node} is powered off")
        self.fabric._settle(host)
        return host

    def _vm(self, uuid: str) -> _Vm:
        vm = self._on().vms.get(uuid)
        if vm is None:
            raise DriverNotFound(f"no VM {uuid} on {self.node}")
        return vm

    async def _wait(self, seconds: float) -> None:
        if seconds > 0:
            await self._sleep(seconds)

    def _set_power(self, vm: _Vm, power: PowerState) -> VmReport:
        if vm.power != power:
            vm.power = power
            self._host.touched(vm)
        return vm.report()

    async def _power(self, uuid: str, power: PowerState) -> VmReport:
        self._vm(uuid)
        await self._wait(self.latency)
        return self._set_power(self._vm(uuid), power)  # the host may be off by now

    # reads

    async def host_info(self) -> HostInfo:
        host = self._host
        capacity = Capacity(vcpus=host.vcpus, memory_mb=host.memory_mb)
        return HostInfo(boot_id=host.boot_id, capacity=capacity)

    async def list_vms(self) -> list[VmReport]:
        host = self._host
        self.fabric._settle(host)
        reports = host.reports
        if reports is None:
            reports = host.reports = [vm.report() for vm in host.vms.values()]
        return list(reports)

    async def load(self) -> float | None:
        """The vCPUs of the running VMs over the host's vCPUs (None without vCPUs)."""
        host = self._host
        if host.vcpus <= 0:
            return None
        busy = host.busy_vcpus
        if busy is None:
            running = (vm.vcpus for vm in host.vms.values() if vm.power == PowerState.RUNNING)
            busy = host.busy_vcpus = sum(running)
        return busy / host.vcpus

    async def vf_users(self) -> dict[str, str]:
        """``{VF PCI address: VM uuid}`` for the SR-IOV NICs of the VMs defined here."""
        host = self._host
        self.fabric._settle(host)  # a migration whose time is up has moved its VM
        return vf_users_of((vm.uuid, vm.nics) for vm in host.vms.values())

    # operations

    async def define(self, spec: VmSpec) -> VmReport:
        self._on()
        await self._wait(self.latency)
        host = self._on()
        vm = host.vms.get(spec.uuid)
        if vm is None:
            vm = _Vm(spec.uuid, spec.name, spec.vcpus, spec.memory_mb, spec.epoch)
            vm.disks = _merged_disks((), spec.disks)
            vm.nics = merged_nics((), spec.nics)
            host.vms[spec.uuid] = vm
            host.touched()
            return vm.report()
        # Same uuid: update the definition in place, keep the power state; the epoch never
        # goes backwards. Disks it has are kept as they are; missing ones are added. NICs
        # likewise, except an SR-IOV NIC on another VF (see merged_nics).
        disks = _merged_disks(vm.disks, spec.disks)
        new = (spec.name, spec.vcpus, spec.memory_mb, max(vm.epoch, spec.epoch))
        if (vm.name, vm.vcpus, vm.memory_mb, vm.epoch) != new:
            vm.name, vm.vcpus, vm.memory_mb, vm.epoch = new
            host.touched(vm)
        vm.disks = disks
        vm.nics = merged_nics(vm.nics, spec.nics)
        return vm.report()

    async def disks(self, uuid: str) -> list[DiskInfo]:
        return [d.model_copy() for d in self._vm(uuid).disks]

    async def start(self, uuid: str) -> VmReport:
        return await self._power(uuid, PowerState.RUNNING)

    async def stop(self, uuid: str) -> VmReport:
        return await self._power(uuid, PowerState.STOPPED)

    async def restart(self, uuid: str) -> VmReport:
        return await self._power(uuid, PowerState.RUNNING)

    async def shutdown(self, uuid: str, timeout: float) -> VmReport:
        vm = self._vm(uuid)
        if vm.power == PowerState.STOPPED:
            return vm.report()
        timeout = max(0.0, timeout)
        # A cooperative guest powers itself off after `latency`; one that ignores ACPI runs
        # until the timeout, then is forced off.
        await self._wait(min(self.latency, timeout) if vm.acpi else timeout)
        return self._set_power(self._vm(uuid), PowerState.STOPPED)

    async def undefine(self, uuid: str, *, force: bool = False) -> None:
        """With ``force``, a running VM is destroyed and undefined in one step."""
        vm = self._on().vms.get(uuid)
        if vm is None:
            return
        _check_undefinable(vm, force)
        await self._wait(self.latency)
        host = self._on()
        vm = host.vms.get(uuid)
        if vm is None:
            return
        _check_undefinable(vm, force)
        del host.vms[uuid]
        host.touched()

    async def close(self) -> None:
        return None

    # jobs (JobDriver)

    async def job(self, command_id: str) -> JobInfo | None:
        job = self._host.jobs.get(command_id)
        if job is None:
            return None
        self.fabric._settle(job.source)
        return job.info(self.fabric.monotonic())

    async def abort_job(self, command_id: str, reason: str) -> JobInfo | None:
        """Abort a migration whose time is not up (the VM stays on the source as it is);
        one whose time is up completes instead."""
        job = self._host.jobs.get(command_id)
        if job is None:
            return None
        self.fabric._settle(job.source)
        if job.status == JobStatus.RUNNING:
            self.fabric._end(job, JobStatus.ABORTED, reason)
        return job.info(self.fabric.monotonic())

    async def abort_jobs(self, reason: str = "") -> list[str]:
        host = self._host
        self.fabric._settle(host)
        running = [cid for cid, job in host.jobs.items() if job.status == JobStatus.RUNNING]
        for cid in running:
            self.fabric._end(host.jobs[cid], JobStatus.ABORTED, reason)
        return running

    async def vm_busy(self, uuid: str) -> bool:
        host = self._host
        self.fabric._settle(host)
        return any(job.uuid == uuid for job in host.pending.values())

    # migrations (MigrationDriver)

    async def migrate(
        self,
        command_id: str,
        uuid: str,
        target: str,
        *,
        live: bool,
        new_epoch: int,
        target_endpoint: dict[str, Any] | None = None,
        nics: Sequence[NicSpec] | None = None,
    ) -> JobInfo:
        """(``target_endpoint`` is not needed: the hosts find each other in the fabric.)
        ``nics``: merged into the VM's at the switchover (see the module's doc)."""
        source = self._on()
        job = source.jobs.get(command_id)
        if job is not None:
            self.fabric._settle(job.source)
            return job.info(self.fabric.monotonic())
        vm, to = self._check_migration(uuid, target, live, new_epoch)
        duration = max(self.latency, vm.memory_mb / self.migration_rate)
        now = self.fabric.monotonic()
        job = _Migration(command_id, uuid, source, to, live, new_epoch, now, duration)
        job.nics = None if nics is None else tuple(nics)
        source.jobs[command_id] = source.pending[command_id] = to.pending[command_id] = job
        _forget_ended(source)
        return job.info(job.started_at)

    def _check_migration(
        self, uuid: str, target: str, live: bool, new_epoch: int
    ) -> tuple[_Vm, _Host]:
        """The VM and the target host; the refusals of MigrationDriver.migrate."""
        source = self._host
        if target == self.node:
            raise DriverPermanent(f"the VM is already on {self.node}", code="invalid-input")
        vm = self._vm(uuid)
        if any(job.uuid == uuid for job in source.pending.values()):
            raise DriverInvalidState(f"VM {uuid} is already migrating from or to {self.node}")
        if live and vm.power != PowerState.RUNNING:
            raise DriverInvalidState(f"VM {uuid} is {vm.power.value}: it cannot migrate live")
        if not live and vm.power not in _STOPPED:
            raise DriverInvalidState(f"VM {uuid} is {vm.power.value}: stop it or migrate it live")
        if new_epoch <= vm.epoch:
            message = f"new epoch {new_epoch} is not newer than the VM's epoch {vm.epoch}"
            raise DriverPermanent(message, code="invalid-input")
        to = self.fabric._hosts.get(target)
        if to is None:
            raise DriverTemporary(f"target host {target} does not exist")
        if not to.on:
            raise DriverTemporary(f"target host {target} is powered off")
        self.fabric._settle(to)
        there = to.vms.get(uuid)
        if there is not None and there.epoch > new_epoch:
            raise DriverInvalidState(f"{target} has VM {uuid} with a newer epoch {there.epoch}")
        if there is not None and there.power == PowerState.RUNNING:
            raise DriverInvalidState(f"VM {uuid} already runs on {target}")
        if any(job.uuid == uuid for job in to.pending.values()):
            raise DriverInvalidState(f"another migration brings VM {uuid} to {target}")
        return vm, to


def _merged_disks(have: tuple[DiskInfo, ...], wanted: list[DiskSpec]) -> tuple[DiskInfo, ...]:
    """The disks ``have`` plus each of ``wanted`` at a device they lack, in device order;
    DriverPermanent (invalid-input) when two wanted disks name one device."""
    devices = [d.device or disk_device(i) for i, d in enumerate(wanted)]
    doubles = sorted({dev for dev in devices if devices.count(dev) > 1})
    if doubles:
        raise DriverPermanent(f"two disks at {', '.join(doubles)}", code="invalid-input")
    taken = {d.device for d in have}
    added = [
        DiskInfo(device=dev, size_mb=d.size_mb, path=d.path or "")
        for dev, d in zip(devices, wanted, strict=True)
        if dev not in taken
    ]
    if not added:
        return have
    return tuple(sorted([*have, *added], key=lambda d: d.device))


def _check_undefinable(vm: _Vm, force: bool) -> None:
    if not force and vm.power not in _STOPPED:
        raise DriverInvalidState(f"VM {vm.uuid} is {vm.power.value}; stop it first")


def _forget_ended(host: _Host) -> None:
    """Drop the oldest ended jobs beyond MAX_ENDED_JOBS."""
    if len(host.jobs) > MAX_ENDED_JOBS:
        ended = [cid for cid, job in host.jobs.items() if job.status != JobStatus.RUNNING]
        for cid in ended[: len(ended) - MAX_ENDED_JOBS]:
            del host.jobs[cid]
