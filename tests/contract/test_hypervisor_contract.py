"""Contract suite for HypervisorDriver, run against every driver implementation.

Each driver provides a factory returning a ``DriverHarness``: the driver under test plus the
out-of-band hooks the suite needs (e.g. make a guest ignore ACPI shutdown requests). Drivers
that migrate (MigrationDriver) also provide a ``MigrationHarness``: a second host and its
driver, and a way to power a host off; the migration section runs against those.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bollard.agent.drivers.base import (
    DiskSource,
    DiskSpec,
    HypervisorDriver,
    JobDriver,
    JobInfo,
    JobStatus,
    MigrationDriver,
    MigrationEndpoint,
    VmSpec,
)
from bollard.agent.drivers.libvirt.driver import LibvirtDriver
from bollard.agent.drivers.memory import MemoryDriver, MemoryFabric
from bollard.agent.drivers.sim import SimDriver
from bollard.domain.errors import DriverInvalidState, DriverNotFound, DriverTemporary
from bollard.domain.protocol import VmReport
from bollard.domain.states import PowerState
from bollard.sim import Fabric
from tests.support.libvirt_env import (
    Guest,
    LibvirtHost,
    ignore_acpi_on,
    power_off_host,
    power_on_host,
    remove_bollard_domains,
)

T = TypeVar("T")


@dataclass
class MigrationHarness:
    peer_name: str  # the second host
    peer: HypervisorDriver  # its driver
    slow: MigrationDriver  # the driver of the first host, migrating slowly (>= 30 s per VM)
    power_off: Callable[[str], None]  # power a host off (its VMs stop)


@dataclass
class DriverHarness:
    driver: HypervisorDriver
    ignore_acpi: Callable[[str], None]  # make the guest of this VM ignore ACPI shutdown
    vcpus: int
    memory_mb: int
    migration: MigrationHarness | None = None
    timeout: float = 10.0  # how long one test's driver calls may take in all


def _sim(request: pytest.FixtureRequest, tmp_path: Path) -> DriverHarness:
    fabric_dir = tmp_path / "fabric"
    driver = SimDriver(fabric_dir, "node-1", latency=0.01, vcpus=8, memory_mb=4096)

    def ignore_acpi(uuid: str) -> None:
        Fabric(fabric_dir).host("node-1").update_vm(
            uuid, lambda vm: vm.model_copy(update={"acpi": False})
        )

    migration = MigrationHarness(
        peer_name="node-2",
        peer=SimDriver(fabric_dir, "node-2", latency=0.01, vcpus=8, memory_mb=4096),
        slow=SimDriver(fabric_dir, "node-1", latency=0.01, vcpus=8, memory_mb=4096,
                       migration_rate=1.0),
        power_off=lambda node: Fabric(fabric_dir).host(node).power_off(),
    )  # fmt: skip
    return DriverHarness(driver, ignore_acpi, vcpus=8, memory_mb=4096, migration=migration)


def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> DriverHarness:
    """Two hosts of one in-memory fabric; the slow driver (node-1 at 1 MiB/s) takes 512 s
    to migrate the suite's 512 MiB VM."""
    fabric = MemoryFabric()

    def driver(node: str, migration_rate: float = 2048.0) -> MemoryDriver:
        return MemoryDriver(
            fabric, node, vcpus=8, memory_mb=4096, latency=0.01, migration_rate=migration_rate
        )

    d = driver("node-1")
    migration = MigrationHarness(
        peer_name="node-2",
        peer=driver("node-2"),
        slow=driver("node-1", migration_rate=1.0),
        power_off=fabric.power_off,
    )
    return DriverHarness(d, d.ignore_acpi, vcpus=8, memory_mb=4096, migration=migration)


def _libvirt(request: pytest.FixtureRequest, tmp_path: Path) -> DriverHarness:
    """Real libvirtd hosts "a" (the driver under test) and "b" (the migration peer) with
    real QEMU guests (TCG), booting the tiny test guest."""
    guest: Guest = request.getfixturevalue("guest")
    hosts: list[LibvirtHost] = request.getfixturevalue("libvirt_hosts")
    host, peer = hosts[0], hosts[1]

    def reset() -> None:  # the daemons are shared by the session's tests
        for h in (host, peer):
            power_on_host(h)  # a test may have powered it off
            remove_bollard_domains(h)  # (a migration still running ends with its VM)

    reset()
    request.addfinalizer(reset)
    with closing(host.connect()) as conn:
        info = conn.getInfo()

    def driver_on(h: LibvirtHost, **kw: Any) -> LibvirtDriver:
        return LibvirtDriver(
            h.uri,
            "qemu",
            tmp_path / "consoles",
            boot_kernel=str(guest.kernel),
            boot_initrd=str(guest.initrd),
            boot_cmdline="console=ttyS0 quiet panic=-1",
            migration_uri=h.uri,
            migration_address="127.0.0.1",
            jobs_dir=tmp_path / f"jobs-{h.name}",
            node=h.name,
            **kw,
        )

    by_name = {h.name: h for h in hosts}
    migration = MigrationHarness(
        peer_name=peer.name,
        peer=driver_on(peer),
        # 1 MiB/s: the 512 MiB guest needs minutes (libvirt counts its zero pages too).
        slow=driver_on(host, migration_bandwidth_mib=1),
        power_off=lambda node: power_off_host(by_name[node]),
    )
    # A guest booted with the button module blacklisted never hears the power button.
    return DriverHarness(
        driver_on(host, migration_max_downtime_ms=300),
        lambda uuid: ignore_acpi_on(host, uuid),
        vcpus=int(info[2]),
        memory_mb=int(info[1]),
        migration=migration,
        timeout=60.0,
    )


HarnessFactory = Callable[[pytest.FixtureRequest, Path], DriverHarness]
DRIVER_FACTORIES: list[Any] = [
    pytest.param(_sim, id="sim"),
    pytest.param(_memory, id="memory"),
    pytest.param(_libvirt, id="libvirt", marks=pytest.mark.libvirt),
]
_RUN_TIMEOUT = [10.0]


@pytest.fixture(params=DRIVER_FACTORIES)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DriverHarness]:
    factory: HarnessFactory = request.param
    h = factory(request, tmp_path)
    _RUN_TIMEOUT[0] = h.timeout
    yield h
    _RUN_TIMEOUT[0] = 10.0


def run(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout if timeout is not None else _RUN_TIMEOUT[0]):
            return await coro

    return asyncio.run(bounded())


def spec(
    uuid: str = "11111111-1111-4111-8111-111111111111", epoch: int = 3, disks: Sequence[int] = ()
) -> VmSpec:
    return VmSpec(
        uuid=uuid, name="web-1", vcpus=2, memory_mb=512, epoch=epoch,
        disks=[DiskSpec(size_mb=n) for n in disks],
    )  # fmt: skip


async def _defined(
    d: HypervisorDriver, power: PowerState = PowerState.STOPPED, disks: Sequence[int] = ()
) -> VmReport:
    report = await d.define(spec(disks=disks))
    if power == PowerState.RUNNING:
        report = await d.start(report.uuid)
    return report


async def _only(d: HypervisorDriver) -> VmReport:
    vms = await d.list_vms()
    assert len(vms) == 1, vms
    return vms[0]


MISSING = "99999999-9999-4999-8999-999999999999"


def test_host_info_is_stable(harness: DriverHarness) -> None:
    async def go() -> None:
        d = harness.driver
        first = await d.host_info()
        second = await d.host_info()
        assert first.boot_id
        assert first.boot_id == second.boot_id
        assert (first.capacity.vcpus, first.capacity.memory_mb) == (
            harness.vcpus,
            harness.memory_mb,
        )
        assert await d.list_vms() == []
        await d.close()

    run(go())


def test_define_creates_a_stopped_vm_and_is_idempotent(harness: DriverHarness) -> None:
    async def go() -> None:
        d = harness.driver
        report = await d.define(spec())
        assert report.power == PowerState.STOPPED
        assert (report.name, report.vcpus, report.memory_mb, report.epoch) == ("web-1", 2, 512, 3)
        again = await d.define(spec())
        assert again == report
        assert await _only(d) == report

    run(go())


def test_define_again_keeps_power_state(harness: DriverHarness) -> None:
    async def go() -> None:
        d = harness.driver
        await _defined(d, PowerState.RUNNING)
        report = await d.define(spec())
        assert report.power == PowerState.RUNNING
        assert (await _only(d)).power == PowerState.RUNNING

    run(go())


def test_start_is_idempotent(harness: DriverHarness) -> None:
    async def go() -> None:
        d = harness.driver
        vm = await _defined(d)
        assert (await d.start(vm.uuid)).power == PowerState.RUNNING
        assert (await d.start(vm.uuid)).power == PowerState.RUNNING
        assert (await _only(d)).power == PowerState.RUNNING

    run(go())


def test_stop_is_forced_and_idempotent(harness: DriverHarness) -> None:
    async def go() -> None:
        d = harness.driver
        vm = await _defined(d, PowerState.RUNNING)
        harness.ignore_acpi(vm.uuid)  # a forced stop does not need the guest's help
        assert (await d.stop(vm.uuid)).power == PowerState.STOPPED
        assert (await d.stop(vm.uuid)).power == PowerState.STOPPED
        assert (await _only(d)).power == PowerState.STOPPED

    run(go())


def test_shutdown_of_a_cooperative_guest(harness: DriverHarness) -> None:
    async def go() -> None:
        d = harness.driver
        vm = await _defined(d, PowerState.RUNNING)
        assert (await d.shutdown(vm.uuid, timeout=5.0)).power == PowerState.STOPPED
        assert (await d.shutdown(vm.uuid, timeout=5.0)).power == PowerState.STOPPED
        assert (await _only(d)).power == PowerState.STOPPED

    run(go())


def test_shutdown_forces_off_a_guest_that_ignores_acpi(harness: DriverHarness) -> None:
    async def go() -> None:
        d = harness.driver
        vm = await _defined(d, PowerState.RUNNING)
        harness.ignore_acpi(vm.uuid)
        began = time.monotonic()
        report = await d.shutdown(vm.uuid, timeout=0.3)
        took = time.monotonic() - began
        assert report.power == PowerState.STOPPED
        assert took >= 0.3, f"forced off after {took:.3f}s, before the timeout"
        assert (await _only(d)).power == PowerState.STOPPED

    run(go())


def test_restart(harness: DriverHarness) -> None:
    async def go() -> None:
        d = harness.driver
        vm = await _defined(d, PowerState.RUNNING)
        assert (await d.restart(vm.uuid)).power == PowerState.RUNNING
        await d.stop(vm.uuid)
        assert (await d.restart(vm.uuid)).power == PowerState.RUNNING
        assert (await _only(d)).power == PowerState.RUNNING

    run(go())


def test_undefine(harness: DriverHarness) -> None:
    async def go() -> None:
        d = harness.driver
        vm = await _defined(d)
        await d.undefine(vm.uuid)
        assert await d.list_vms() == []
        await d.undefine(vm.uuid)  # absent: fine
        await d.undefine(MISSING)

    run(go())


def test_undefine_of_a_running_vm_is_refused(harness: DriverHarness) -> None:
    async def go() -> None:
        d = harness.driver
        vm = await _defined(d, PowerState.RUNNING)
        with pytest.raises(DriverInvalidState):
            await d.undefine(vm.uuid)
        assert (await _only(d)).power == PowerState.RUNNING

    run(go())


@pytest.mark.parametrize("op", ["start", "stop", "restart", "shutdown"])
def test_unknown_vm_is_not_found(harness: DriverHarness, op: str) -> None:
    async def go() -> None:
        d = harness.driver
        await _defined(d)
        with pytest.raises(DriverNotFound):
            if op == "shutdown":
                await d.shutdown(MISSING, timeout=0.1)
            else:
                await getattr(d, op)(MISSING)
        assert len(await d.list_vms()) == 1

    run(go())


def test_vms_are_independent(harness: DriverHarness) -> None:
    async def go() -> None:
        d = harness.driver
        a = await d.define(spec("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", epoch=1))
        b = await d.define(spec("bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb", epoch=2))
        await asyncio.gather(d.start(a.uuid), d.start(b.uuid))
        await d.stop(a.uuid)
        powers = {vm.uuid: (vm.power, vm.epoch) for vm in await d.list_vms()}
        assert powers == {a.uuid: (PowerState.STOPPED, 1), b.uuid: (PowerState.RUNNING, 2)}

    run(go())


def test_undefine_force_destroys_a_running_vm(harness: DriverHarness) -> None:
    async def go() -> None:
        d = harness.driver
        vm = await _defined(d, PowerState.RUNNING)
        await d.undefine(vm.uuid, force=True)
        assert await d.list_vms() == []
        await d.undefine(vm.uuid, force=True)  # absent: fine

    run(go())


# Disks (DiskSource)


def _sizes(disks: list[Any]) -> list[tuple[str, int]]:
    return [(d.device, d.size_mb) for d in disks]


def test_define_creates_the_disks_and_keeps_them(harness: DriverHarness) -> None:
    d = harness.driver
    assert isinstance(d, DiskSource)

    async def go() -> None:
        vm = await _defined(d, disks=[16, 8])
        assert _sizes(await d.disks(vm.uuid)) == [("vda", 16), ("vdb", 8)]
        # Defining again keeps the disks it has (whatever size is asked) and adds missing ones.
        await d.define(spec(disks=[32, 8, 4]))
        assert _sizes(await d.disks(vm.uuid)) == [("vda", 16), ("vdb", 8), ("vdc", 4)]
        await d.start(vm.uuid)  # a VM with disks runs
        assert (await _only(d)).power == PowerState.RUNNING
        other = await d.define(spec("22222222-2222-4222-8222-222222222222"))
        assert await d.disks(other.uuid) == []
        with pytest.raises(DriverNotFound):
            await d.disks(MISSING)

    run(go())


# Migration: for the drivers that can migrate.


@dataclass
class Pair:
    source: HypervisorDriver
    migrator: MigrationDriver
    jobs: JobDriver
    m: MigrationHarness
    timeout: float

    def endpoint(self, node: str) -> dict[str, Any] | None:
        """The target endpoint the server would pass for ``node`` (what its driver
        advertises; None for a host that is not known)."""
        peer = self.m.peer
        if node != self.m.peer_name or not isinstance(peer, MigrationEndpoint):
            return None
        return peer.migration_endpoint()


@pytest.fixture
def pair(harness: DriverHarness) -> Pair:
    m = harness.migration
    d = harness.driver
    if m is None or not isinstance(d, MigrationDriver) or not isinstance(d, JobDriver):
        pytest.skip(f"driver {d.name} does not migrate")
    asyncio.run(m.peer.host_info())  # the second host is up
    return Pair(d, d, d, m, harness.timeout)


async def _until_ended(jobs: JobDriver, job: JobInfo, timeout: float) -> JobInfo:
    """Poll the job until it ends (the job runs on the hypervisor's clock)."""
    async with asyncio.timeout(timeout):
        while job.status == JobStatus.RUNNING:
            await asyncio.sleep(0.01)
            latest = await jobs.job(job.command_id)
            assert latest is not None
            job = latest
    return job


async def _on(d: HypervisorDriver) -> dict[str, tuple[PowerState, int]]:
    return {vm.uuid: (vm.power, vm.epoch) for vm in await d.list_vms()}


@pytest.mark.parametrize("live", [True, False])
def test_migration_moves_the_vm_and_bumps_its_epoch(pair: Pair, live: bool) -> None:
    async def go() -> None:
        power = PowerState.RUNNING if live else PowerState.STOPPED
        vm = await _defined(pair.source, power)
        target, endpoint = pair.m.peer_name, pair.endpoint(pair.m.peer_name)
        job = await pair.migrator.migrate(
            "m1", vm.uuid, target, live=live, new_epoch=4, target_endpoint=endpoint
        )
        assert job.command_id == "m1" and job.vm_uuid == vm.uuid
        again = await pair.migrator.migrate(
            "m1", vm.uuid, target, live=live, new_epoch=4, target_endpoint=endpoint
        )
        assert again.command_id == "m1"  # the same job, not a second migration
        done = await _until_ended(pair.jobs, job, pair.timeout)
        assert done.status == JobStatus.COMPLETED, done
        assert done.result["vm"]["epoch"] == 4 and done.result["vm"]["power"] == power.value
        assert await _on(pair.source) == {}
        assert await _on(pair.m.peer) == {vm.uuid: (power, 4)}
        assert not await pair.jobs.vm_busy(vm.uuid)

    run(go())


@pytest.mark.parametrize("live", [True, False])
def test_migration_takes_the_disks_along(pair: Pair, live: bool) -> None:
    source, peer = pair.source, pair.m.peer
    assert isinstance(source, DiskSource) and isinstance(peer, DiskSource)

    async def go() -> None:
        power = PowerState.RUNNING if live else PowerState.STOPPED
        vm = await _defined(source, power, disks=[16, 8])
        target, endpoint = pair.m.peer_name, pair.endpoint(pair.m.peer_name)
        job = await pair.migrator.migrate(
            "m1", vm.uuid, target, live=live, new_epoch=4, target_endpoint=endpoint
        )
        done = await _until_ended(pair.jobs, job, pair.timeout)
        assert done.status == JobStatus.COMPLETED, done
        assert await _on(peer) == {vm.uuid: (power, 4)}
        assert _sizes(await peer.disks(vm.uuid)) == [("vda", 16), ("vdb", 8)]
        with pytest.raises(DriverNotFound):
            await source.disks(vm.uuid)

    run(go())


def test_migration_refusals(pair: Pair) -> None:
    async def go() -> None:
        vm = await _defined(pair.source, PowerState.STOPPED)
        target = pair.m.peer_name

        async def migrate(cid: str, uuid: str, live: bool, to: str = target) -> JobInfo:
            return await pair.migrator.migrate(
                cid, uuid, to, live=live, new_epoch=4, target_endpoint=pair.endpoint(to)
            )

        with pytest.raises(DriverNotFound):
            await migrate("r1", MISSING, live=False)
        with pytest.raises(DriverInvalidState):  # live needs a running VM
            await migrate("r2", vm.uuid, live=True)
        await pair.source.start(vm.uuid)
        with pytest.raises(DriverInvalidState):  # offline needs a stopped one
            await migrate("r3", vm.uuid, live=False)
        with pytest.raises(DriverTemporary):
            await migrate("r4", vm.uuid, live=True, to="no-such-host")
        await pair.m.peer.define(spec(epoch=9))
        with pytest.raises(DriverInvalidState):  # the target has a newer epoch
            await migrate("r5", vm.uuid, live=True)
        await pair.m.peer.undefine(vm.uuid)
        pair.m.power_off(target)
        with pytest.raises(DriverTemporary):
            await migrate("r6", vm.uuid, live=True)
        assert await _on(pair.source) == {vm.uuid: (PowerState.RUNNING, 3)}
        for cid in ("r1", "r2", "r3", "r4", "r5", "r6"):
            assert await pair.jobs.job(cid) is None

    run(go())


def test_migration_replaces_a_leftover_copy_on_the_target(pair: Pair) -> None:
    async def go() -> None:
        vm = await _defined(pair.source, PowerState.RUNNING)
        await pair.m.peer.define(spec(epoch=2))  # left by an earlier attempt, stopped
        target = pair.m.peer_name
        job = await pair.migrator.migrate(
            "m1", vm.uuid, target, live=True, new_epoch=4, target_endpoint=pair.endpoint(target)
        )
        assert (await _until_ended(pair.jobs, job, pair.timeout)).status == JobStatus.COMPLETED
        assert await _on(pair.m.peer) == {vm.uuid: (PowerState.RUNNING, 4)}

    run(go())


def test_migration_aborted_before_switchover_leaves_the_vm_on_the_source(pair: Pair) -> None:
    async def go() -> None:
        vm = await _defined(pair.source, PowerState.RUNNING)
        target = pair.m.peer_name
        job = await pair.m.slow.migrate(
            "m1", vm.uuid, target, live=True, new_epoch=4, target_endpoint=pair.endpoint(target)
        )
        assert job.status == JobStatus.RUNNING
        assert await pair.jobs.vm_busy(vm.uuid) and await _peer_busy(pair, vm.uuid)
        assert (await _on(pair.source))[vm.uuid] == (PowerState.RUNNING, 3)
        aborted = await pair.jobs.abort_job("m1", "test")
        assert aborted is not None and aborted.status == JobStatus.ABORTED
        assert await _on(pair.source) == {vm.uuid: (PowerState.RUNNING, 3)}
        assert vm.uuid not in await _on(pair.m.peer)
        assert not await pair.jobs.vm_busy(vm.uuid)

    run(go())


def test_cancel_hooks_abort_migrations(pair: Pair) -> None:
    async def go() -> None:
        vm = await _defined(pair.source, PowerState.RUNNING)
        target = pair.m.peer_name
        await pair.m.slow.migrate(
            "m1", vm.uuid, target, live=True, new_epoch=4, target_endpoint=pair.endpoint(target)
        )
        assert await pair.jobs.abort_jobs("cancel hook") == ["m1"]
        job = await pair.jobs.job("m1")
        assert job is not None and job.status == JobStatus.ABORTED
        assert await _on(pair.source) == {vm.uuid: (PowerState.RUNNING, 3)}

    run(go())


async def _peer_busy(pair: Pair, uuid: str) -> bool:
    assert isinstance(pair.m.peer, JobDriver)
    return await pair.m.peer.vm_busy(uuid)
