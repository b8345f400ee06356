"""What the sim driver adds to the HypervisorDriver contract: state lives in the fabric,
faults fire in its operations, operations are logged, long operations are jobs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bollard.agent.drivers.base import (
    AgentFault,
    JobDriver,
    JobStatus,
    VmSpec,
    current_command_id,
)
from bollard.agent.drivers.sim import SimDriver
from bollard.domain.errors import DriverNotFound, DriverPermanent, DriverTemporary
from bollard.domain.states import CommandType, PowerState
from bollard.sim import Fabric, FaultMode

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


def test_fail_and_hang_faults_fire_in_the_operation(tmp_path: Path) -> None:
    async def go() -> None:
        d = SimDriver(tmp_path, "n1", latency=0)
        host = Fabric(tmp_path).host("n1")
        await d.define(VmSpec(uuid=UUID, name="a", vcpus=1, memory_mb=256))
        host.faults.set("start", FaultMode.FAIL)
        with pytest.raises(DriverPermanent, match="injected fault"):
            await d.start(UUID)
        assert (await d.list_vms())[0].power == PowerState.STOPPED
        assert host.faults.all() == []  # fired once, cleared
        host.faults.set("start", FaultMode.HANG)
        hung = asyncio.create_task(d.start(UUID))
        done, _ = await asyncio.wait({hung}, timeout=0.3)  # it must not end by itself
        assert not done
        hung.cancel()
        assert (await d.list_vms())[0].power == PowerState.STOPPED
        assert (await d.start(UUID)).power == PowerState.RUNNING  # the fault is spent
        # Agent faults are not the driver's to fire: they wait for take_agent_fault.
        host.faults.set("stop", FaultMode.DROP_ANSWER)
        assert (await d.stop(UUID)).power == PowerState.STOPPED
        assert await d.take_agent_fault(CommandType.START) is None
        assert await d.take_agent_fault(CommandType.STOP) == AgentFault.DROP_ANSWER
        assert await d.take_agent_fault(CommandType.STOP) is None

    run(go())


def test_mutating_operations_are_logged_with_their_command_id(tmp_path: Path) -> None:
    async def go() -> None:
        d = SimDriver(tmp_path, "n1", latency=0)
        host = Fabric(tmp_path).host("n1")

        async def as_command(cid: str, op: Any) -> Any:
            token = current_command_id.set(cid)
            try:
                return await op
            finally:
                current_command_id.reset(token)

        await as_command("c1", d.define(VmSpec(uuid=UUID, name="a", vcpus=1, memory_mb=256)))
        await as_command("c2", d.start(UUID))
        await as_command("c3", d.restart(UUID))
        await as_command("c4", d.shutdown(UUID, timeout=1))
        await as_command("c5", d.stop(UUID))
        with pytest.raises(DriverNotFound):
            await as_command("c6", d.start("99999999-9999-4999-8999-999999999999"))
        await as_command("c7", d.undefine(UUID))
        await d.list_vms()  # reads are not logged
        await d.define(VmSpec(uuid=UUID, name="b", vcpus=1, memory_mb=256))  # no command
        ops = [(o.command_id, o.command, o.vm_uuid) for o in host.executed()]
        assert ops == [
            ("c1", "define", UUID),
            ("c2", "start", UUID),
            ("c3", "restart", UUID),
            ("c4", "shutdown", UUID),
            ("c5", "stop", UUID),
            ("c7", "undefine", UUID),
            (None, "define", UUID),
        ]

    run(go())


def test_jobs_run_on_the_fabric_clock_and_outlive_the_driver(tmp_path: Path) -> None:
    now = [1000.0]

    async def go() -> None:
        d = SimDriver(tmp_path, "n1", latency=0, wall=lambda: now[0])
        assert isinstance(d, JobDriver)
        job = await d.start_job("c1", "migrate", 10.0, vm_uuid=UUID)
        assert (job.status, job.progress, job.supervised) == (JobStatus.RUNNING, 0.0, True)
        await d.start_job("c2", "copy", 10.0, supervised=False)
        await d.start_job("c3", "copy", 1.0)
        now[0] += 5
        again = SimDriver(tmp_path, "n1", latency=0, wall=lambda: now[0])  # a restarted agent
        seen = await again.job("c1")
        assert seen is not None and (seen.status, seen.progress) == (JobStatus.RUNNING, 0.5)
        assert await again.abort_jobs("aborted by cancel hook: test") == ["c1"]
        c1 = await d.job("c1")
        assert c1 is not None and c1.status == JobStatus.ABORTED
        assert c1.message == "aborted by cancel hook: test"
        c3 = await d.job("c3")
        assert c3 is not None and c3.status == JobStatus.COMPLETED
        now[0] += 5
        c2 = await d.job("c2")  # unsupervised: left running, and it completed on its own
        assert c2 is not None and (c2.status, c2.progress) == (JobStatus.COMPLETED, 1.0)
        assert await d.abort_job("c2", "too late") == c2
        assert await d.job("nope") is None and await d.abort_job("nope", "x") is None

    run(go())
