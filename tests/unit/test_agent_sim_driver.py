"""What the sim driver adds to the HypervisorDriver contract: state lives in the fabric."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bollard.agent.drivers.base import VmSpec
from bollard.agent.drivers.sim import SimDriver
from bollard.domain.errors import DriverTemporary
from bollard.domain.states import PowerState
from bollard.sim import Fabric

T = TypeVar("T")
UUID = "11111111-1111-4111-8111-111111111111"


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(10):
            return await coro

    return asyncio.run(bounded())


def test_vms_survive_the_driver_and_boot_id_is_per_boot(tmp_path: Path) -> None:
    async def go() -> None:
        first = SimDriver(tmp_path, "n1", latency=0, vcpus=4, memory_mb=2048)
        info = await first.host_info()
        await first.define(VmSpec(uuid=UUID, name="a", vcpus=1, memory_mb=256, epoch=5))
        await first.start(UUID)
        await first.close()

        second = SimDriver(tmp_path, "n1", latency=0, vcpus=4, memory_mb=2048)
        assert (await second.host_info()).boot_id == info.boot_id  # agent restart != reboot
        [vm] = await second.list_vms()
        assert (vm.power, vm.epoch) == (PowerState.RUNNING, 5)

        Fabric(tmp_path).host("n1").power_off()
        with pytest.raises(DriverTemporary):
            await second.start(UUID)
        Fabric(tmp_path).host("n1").power_on()
        assert (await second.host_info()).boot_id != info.boot_id
        [vm] = await second.list_vms()
        assert vm.power == PowerState.STOPPED

    run(go())


def test_capacity_is_recorded_in_host_json(tmp_path: Path) -> None:
    run(SimDriver(tmp_path, "n1", latency=0, vcpus=12, memory_mb=3000).host_info())
    data = json.loads((tmp_path / "hosts" / "n1" / "host.json").read_text())
    assert (data["vcpus"], data["memory_mb"], data["power"]) == (12, 3000, "on")


def test_define_again_never_lowers_the_epoch(tmp_path: Path) -> None:
    async def go() -> None:
        d = SimDriver(tmp_path, "n1", latency=0)
        await d.define(VmSpec(uuid=UUID, name="a", vcpus=1, memory_mb=256, epoch=5))
        stale = await d.define(VmSpec(uuid=UUID, name="a", vcpus=1, memory_mb=256, epoch=2))
        assert stale.epoch == 5
        newer = await d.define(VmSpec(uuid=UUID, name="a", vcpus=2, memory_mb=256, epoch=6))
        assert (newer.epoch, newer.vcpus) == (6, 2)

    run(go())


def test_operations_take_the_latency_and_change_state_at_the_end(tmp_path: Path) -> None:
    async def go() -> None:
        entered: asyncio.Queue[float] = asyncio.Queue()
        release = asyncio.Event()

        async def gated_sleep(seconds: float) -> None:
            entered.put_nowait(seconds)
            await release.wait()

        d = SimDriver(tmp_path, "n1", latency=0.25, sleep=gated_sleep)
        host = Fabric(tmp_path).host("n1")
        define = asyncio.create_task(d.define(VmSpec(uuid=UUID, name="a", vcpus=1, memory_mb=256)))
        assert await entered.get() == 0.25
        assert host.get_vm(UUID) is None  # not defined before the operation's time is up
        release.set()
        await define
        release.clear()
        start = asyncio.create_task(d.start(UUID))
        assert await entered.get() == 0.25
        vm = host.get_vm(UUID)
        assert vm is not None and vm.power == PowerState.STOPPED
        release.set()
        assert (await start).power == PowerState.RUNNING

    run(go())


def test_non_acpi_shutdown_ends_early_if_the_guest_stops_out_of_band(tmp_path: Path) -> None:
    async def go() -> None:
        d = SimDriver(tmp_path, "n1", latency=0)
        host = Fabric(tmp_path).host("n1")
        await d.define(VmSpec(uuid=UUID, name="a", vcpus=1, memory_mb=256))
        await d.start(UUID)
        host.update_vm(UUID, lambda v: v.model_copy(update={"acpi": False}))
        shutdown = asyncio.create_task(d.shutdown(UUID, timeout=30))
        await asyncio.to_thread(
            host.update_vm, UUID, lambda v: v.model_copy(update={"power": PowerState.STOPPED})
        )
        async with asyncio.timeout(5):
            assert (await shutdown).power == PowerState.STOPPED

    run(go())
