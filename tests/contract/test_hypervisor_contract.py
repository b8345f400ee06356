"""Contract suite for HypervisorDriver, run against every driver implementation.

Each driver provides a factory returning a ``DriverHarness``: the driver under test plus the
out-of-band hooks the suite needs (e.g. make a guest ignore ACPI shutdown requests).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bollard.agent.drivers.base import HypervisorDriver, VmSpec
from bollard.agent.drivers.sim import SimDriver
from bollard.domain.errors import DriverInvalidState, DriverNotFound
from bollard.domain.protocol import VmReport
from bollard.domain.states import PowerState
from bollard.sim import Fabric

T = TypeVar("T")


@dataclass
class DriverHarness:
    driver: HypervisorDriver
    ignore_acpi: Callable[[str], None]  # make the guest of this VM ignore ACPI shutdown
    vcpus: int
    memory_mb: int


def _sim(tmp_path: Path) -> DriverHarness:
    fabric_dir = tmp_path / "fabric"
    driver = SimDriver(fabric_dir, "node-1", latency=0.01, vcpus=8, memory_mb=4096)

    def ignore_acpi(uuid: str) -> None:
        Fabric(fabric_dir).host("node-1").update_vm(
            uuid, lambda vm: vm.model_copy(update={"acpi": False})
        )

    return DriverHarness(driver, ignore_acpi, vcpus=8, memory_mb=4096)


DRIVER_FACTORIES: list[tuple[str, Callable[[Path], DriverHarness]]] = [("sim", _sim)]


@pytest.fixture(params=[f for _, f in DRIVER_FACTORIES], ids=[n for n, _ in DRIVER_FACTORIES])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> DriverHarness:
    factory: Callable[[Path], DriverHarness] = request.param
    return factory(tmp_path)


def run(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def spec(uuid: str = "11111111-1111-4111-8111-111111111111", epoch: int = 3) -> VmSpec:
    return VmSpec(uuid=uuid, name="web-1", vcpus=2, memory_mb=512, epoch=epoch)


async def _defined(d: HypervisorDriver, power: PowerState = PowerState.STOPPED) -> VmReport:
    report = await d.define(spec())
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
