"""The in-memory hypervisor driver, beyond the contract suite: cached reports, migrations on
an injected clock, epochs, aborts, host power and boot ids."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from bollard.agent.drivers.base import JobStatus, VmSpec
from bollard.agent.drivers.memory import MAX_ENDED_JOBS, MemoryDriver, MemoryFabric
from bollard.domain.errors import (
    DriverInvalidState,
    DriverNotFound,
    DriverPermanent,
    DriverTemporary,
)
from bollard.domain.states import PowerState

T = TypeVar("T")

A = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
B = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
C = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    """An injected sleep that returns at once and records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def spec(uuid: str = A, epoch: int = 3, memory_mb: int = 1024, name: str = "web") -> VmSpec:
    return VmSpec(uuid=uuid, name=name, vcpus=2, memory_mb=memory_mb, epoch=epoch)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fabric(clock: Clock) -> MemoryFabric:
    return MemoryFabric(monotonic=clock)


def host(fabric: MemoryFabric, node: str, **kw: Any) -> MemoryDriver:
    kw.setdefault("migration_rate", 512.0)  # a 1024 MiB VM migrates in 2 s
    return MemoryDriver(fabric, node, vcpus=8, memory_mb=8192, sleep=Sleeps(), **kw)


@pytest.fixture
def src(fabric: MemoryFabric) -> MemoryDriver:
    return host(fabric, "n1")


@pytest.fixture
def dst(fabric: MemoryFabric) -> MemoryDriver:
    return host(fabric, "n2")


async def _on(d: MemoryDriver) -> dict[str, tuple[PowerState, int]]:
    return {vm.uuid: (vm.power, vm.epoch) for vm in await d.list_vms()}


# cached reports


def test_an_unchanged_vm_keeps_its_report_object(src: MemoryDriver) -> None:
    async def go() -> None:
        await src.define(spec(A))
        await src.define(spec(B))
        first, second = await src.list_vms(), await src.list_vms()
        assert first is not second  # a new list each time
        assert [r.uuid for r in first] == [A, B]
        assert all(a is b for a, b in zip(first, second, strict=True))
        first.clear()  # the caller's list is its own
        assert len(await src.list_vms()) == 2

    run(go())


def test_a_changed_vm_gets_a_new_report(src: MemoryDriver) -> None:
    async def go() -> None:
        await src.define(spec(A))
        await src.define(spec(B))
        before = {r.uuid: r for r in await src.list_vms()}
        started = await src.start(A)
        after = {r.uuid: r for r in await src.list_vms()}
        assert after[A] is started and after[A] is not before[A]
        assert after[A].power == PowerState.RUNNING
        assert before[A].power == PowerState.STOPPED  # the old report was not modified
        assert after[B] is before[B]
        assert await src.start(A) is started  # no change: the same report

        renamed = await src.define(spec(A, name="web-2", epoch=5))
        assert (renamed.name, renamed.epoch, renamed.power) == ("web-2", 5, PowerState.RUNNING)
        assert {r.uuid: r for r in await src.list_vms()}[A] is renamed
        assert await src.define(spec(A, name="web-2", epoch=5)) is renamed

    run(go())


def test_load_follows_the_running_vms(src: MemoryDriver) -> None:
    async def go() -> None:
        await src.define(spec(A))
        assert await src.load() == 0.0
        await src.start(A)
        assert await src.load() == 2 / 8
        await src.undefine(A, force=True)
        assert await src.load() == 0.0

    run(go())


# operations


def test_no_sleep_without_latency(fabric: MemoryFabric) -> None:
    sleeps = Sleeps()
    d = MemoryDriver(fabric, "n1", sleep=sleeps)

    async def go() -> None:
        await d.define(spec())
        await d.start(A)
        await d.restart(A)
        await d.shutdown(A, timeout=5.0)
        await d.stop(A)
        await d.undefine(A)

    run(go())
    assert sleeps.calls == []


def test_each_operation_takes_the_latency(fabric: MemoryFabric) -> None:
    sleeps = Sleeps()
    d = MemoryDriver(fabric, "n1", latency=0.5, sleep=sleeps)

    async def go() -> None:
        await d.define(spec())
        await d.start(A)
        await d.shutdown(A, timeout=0.2)  # a cooperative guest: at most the timeout
        await d.undefine(A)

    run(go())
    assert sleeps.calls == [0.5, 0.5, 0.2, 0.5]


def test_a_guest_ignoring_acpi_runs_until_the_timeout(fabric: MemoryFabric) -> None:
    sleeps = Sleeps()
    d = MemoryDriver(fabric, "n1", sleep=sleeps)

    async def go() -> None:
        await d.define(spec())
        await d.start(A)
        d.ignore_acpi(A)
        assert (await d.shutdown(A, timeout=7.0)).power == PowerState.STOPPED

    run(go())
    assert sleeps.calls == [7.0]
    with pytest.raises(DriverNotFound):
        d.ignore_acpi(B)


def test_define_never_lowers_the_epoch(src: MemoryDriver) -> None:
    async def go() -> None:
        await src.define(spec(epoch=5))
        assert (await src.define(spec(epoch=2))).epoch == 5
        assert (await src.define(spec(epoch=6))).epoch == 6

    run(go())


# host power


def test_power_off_and_on(fabric: MemoryFabric, src: MemoryDriver) -> None:
    async def go() -> None:
        boot = (await src.host_info()).boot_id
        await src.define(spec(A))
        await src.start(A)
        fabric.power_off("n1")
        assert await _on(src) == {A: (PowerState.STOPPED, 3)}  # reads still answer
        for op in (src.start(A), src.stop(A), src.define(spec(B)), src.undefine(A)):
            with pytest.raises(DriverTemporary):
                await op
        fabric.power_off("n1")  # already off: nothing
        assert (await src.host_info()).boot_id == boot
        fabric.power_on("n1")
        again = (await src.host_info()).boot_id
        assert again != boot
        fabric.power_on("n1")  # already on: the same boot
        assert (await src.host_info()).boot_id == again
        assert await _on(src) == {A: (PowerState.STOPPED, 3)}
        assert (await src.start(A)).power == PowerState.RUNNING

    run(go())
    with pytest.raises(KeyError):
        fabric.power_off("nowhere")


def test_drivers_of_one_node_share_it(fabric: MemoryFabric, src: MemoryDriver) -> None:
    async def go() -> None:
        other = host(fabric, "n1")
        await src.define(spec(A))
        assert await _on(other) == {A: (PowerState.STOPPED, 3)}
        assert (await other.host_info()).boot_id == (await src.host_info()).boot_id
        assert fabric.vm_count() == 1

    run(go())


# migrations


def test_live_migration_completes_on_read_once_its_time_is_up(
    fabric: MemoryFabric, clock: Clock, src: MemoryDriver, dst: MemoryDriver
) -> None:
    async def go() -> None:
        await src.define(spec(A))
        await src.start(A)
        job = await src.migrate("m1", A, "n2", live=True, new_epoch=4)
        assert (job.status, job.progress, job.phase) == (JobStatus.RUNNING, 0.0, "transfer")
        assert await src.vm_busy(A) and await dst.vm_busy(A)
        clock.now += 1.0
        job = await src.job("m1")
        assert job is not None and job.status == JobStatus.RUNNING and job.progress == 0.5
        assert await _on(src) == {A: (PowerState.RUNNING, 3)}
        assert await _on(dst) == {}
        assert fabric.vm_count() == 1
        clock.now += 1.0
        # the target's read completes it
        assert await _on(dst) == {A: (PowerState.RUNNING, 4)}
        assert await _on(src) == {}
        assert fabric.vm_count() == 1
        done = await src.job("m1")
        assert done is not None
        assert (done.status, done.progress, done.phase) == (JobStatus.COMPLETED, 1.0, "done")
        assert done.result["vm"]["epoch"] == 4 and done.result["vm"]["power"] == "running"
        assert done.result["migration"]["vm_on"] == "n2"
        assert not await src.vm_busy(A) and not await dst.vm_busy(A)
        # the same command again: the same (completed) job, nothing new
        again = await src.migrate("m1", A, "n2", live=True, new_epoch=4)
        assert again.status == JobStatus.COMPLETED
        assert (await dst.load()) == 2 / 8 and (await src.load()) == 0.0

    run(go())


def test_offline_migration_moves_a_stopped_vm_on_job_read(
    clock: Clock, src: MemoryDriver, dst: MemoryDriver
) -> None:
    async def go() -> None:
        await src.define(spec(A, memory_mb=2048))  # 4 s at 512 MiB/s
        await src.migrate("m1", A, "n2", live=False, new_epoch=7)
        clock.now += 3.9
        job = await src.job("m1")
        assert job is not None and job.status == JobStatus.RUNNING
        clock.now += 0.1
        job = await src.job("m1")
        assert job is not None and job.status == JobStatus.COMPLETED
        assert await _on(dst) == {A: (PowerState.STOPPED, 7)}
        assert await _on(src) == {}

    run(go())


def test_a_migration_lasts_at_least_the_latency(
    fabric: MemoryFabric, clock: Clock, dst: MemoryDriver
) -> None:
    async def go() -> None:
        slow = host(fabric, "n1", latency=5.0)
        await slow.define(spec(A))  # 2 s of memory, but 5 s of latency
        await slow.migrate("m1", A, "n2", live=False, new_epoch=4)
        clock.now += 4.0
        assert await _on(dst) == {}
        clock.now += 1.0
        assert await _on(dst) == {A: (PowerState.STOPPED, 4)}

    run(go())


def test_epochs_of_a_migration(src: MemoryDriver, dst: MemoryDriver) -> None:
    async def go() -> None:
        await src.define(spec(A, epoch=3))
        with pytest.raises(DriverPermanent) as exc:
            await src.migrate("m1", A, "n2", live=False, new_epoch=3)
        assert exc.value.code == "invalid-input"
        with pytest.raises(DriverPermanent):
            await src.migrate("m2", A, "n1", live=False, new_epoch=4)  # to itself
        await dst.define(spec(A, epoch=4))  # a leftover of the same epoch: replaced
        job = await src.migrate("m3", A, "n2", live=False, new_epoch=4)
        assert job.status == JobStatus.RUNNING
        for cid in ("m1", "m2"):
            assert await src.job(cid) is None

    run(go())


def test_a_vm_migrates_once_at_a_time(src: MemoryDriver, dst: MemoryDriver) -> None:
    async def go() -> None:
        host(src.fabric, "n3")
        await src.define(spec(A))
        await src.start(A)
        await src.migrate("m1", A, "n2", live=True, new_epoch=4)
        with pytest.raises(DriverInvalidState):
            await src.migrate("m2", A, "n3", live=True, new_epoch=5)

    run(go())


def test_abort_before_completion_leaves_the_vm_on_the_source(
    clock: Clock, src: MemoryDriver, dst: MemoryDriver
) -> None:
    async def go() -> None:
        await src.define(spec(A))
        await src.start(A)
        await src.migrate("m1", A, "n2", live=True, new_epoch=4)
        clock.now += 1.5
        aborted = await src.abort_job("m1", "operator said so")
        assert aborted is not None and aborted.status == JobStatus.ABORTED
        assert aborted.message == "operator said so" and aborted.progress == 0.75
        assert aborted.result["migration"]["vm_on"] == "n1"
        clock.now += 10.0  # its time passes: nothing happens
        assert await _on(src) == {A: (PowerState.RUNNING, 3)}
        assert await _on(dst) == {}
        job = await src.job("m1")
        assert job is not None and job.status == JobStatus.ABORTED
        assert not await src.vm_busy(A) and not await dst.vm_busy(A)
        assert await src.abort_job("none", "x") is None

    run(go())


def test_abort_once_its_time_is_up_completes_it(
    clock: Clock, src: MemoryDriver, dst: MemoryDriver
) -> None:
    async def go() -> None:
        await src.define(spec(A))
        await src.migrate("m1", A, "n2", live=False, new_epoch=4)
        clock.now += 2.0
        job = await src.abort_job("m1", "too late")
        assert job is not None and job.status == JobStatus.COMPLETED
        assert await _on(dst) == {A: (PowerState.STOPPED, 4)}

    run(go())


def test_abort_jobs_aborts_the_running_migrations_of_this_host(
    clock: Clock, src: MemoryDriver, dst: MemoryDriver
) -> None:
    async def go() -> None:
        await src.define(spec(A))
        await src.define(spec(B, memory_mb=4096))  # 8 s
        await dst.define(spec(C, memory_mb=4096))
        await src.migrate("m1", A, "n2", live=False, new_epoch=4)
        await src.migrate("m2", B, "n2", live=False, new_epoch=4)
        await dst.migrate("m3", C, "n1", live=False, new_epoch=4)
        clock.now += 2.0  # m1 is done
        assert await src.abort_jobs("lost the server") == ["m2"]  # not m3: n2's job
        m2 = await src.job("m2")
        assert m2 is not None and m2.status == JobStatus.ABORTED
        m3 = await dst.job("m3")
        assert m3 is not None and m3.status == JobStatus.RUNNING
        assert await src.abort_jobs() == []

    run(go())


def test_powering_a_host_off_fails_its_migrations(
    fabric: MemoryFabric, clock: Clock, src: MemoryDriver, dst: MemoryDriver
) -> None:
    async def go() -> None:
        await src.define(spec(A))
        await src.start(A)
        await src.migrate("m1", A, "n2", live=True, new_epoch=4)
        clock.now += 1.0
        fabric.power_off("n2")
        job = await src.job("m1")
        assert job is not None and job.status == JobStatus.FAILED
        assert job.error_code == "migration-failed" and "n2" in job.message
        clock.now += 5.0
        assert await _on(src) == {A: (PowerState.RUNNING, 3)}
        assert await _on(dst) == {}

    run(go())


def test_a_vm_stopped_during_a_live_migration_stays(
    clock: Clock, src: MemoryDriver, dst: MemoryDriver
) -> None:
    async def go() -> None:
        await src.define(spec(A))
        await src.start(A)
        await src.migrate("m1", A, "n2", live=True, new_epoch=4)
        await src.stop(A)
        clock.now += 2.0
        job = await src.job("m1")
        assert job is not None and job.status == JobStatus.FAILED
        assert job.phase == "switchover" and job.result["migration"]["vm_on"] == "n1"
        assert await _on(src) == {A: (PowerState.STOPPED, 3)}
        assert await _on(dst) == {}

    run(go())


def test_old_ended_jobs_are_forgotten(clock: Clock, src: MemoryDriver) -> None:
    host(src.fabric, "n2")

    async def go() -> None:
        for i in range(MAX_ENDED_JOBS + 5):
            uuid = f"{i:08d}-0000-4000-8000-000000000000"
            await src.define(spec(uuid))
            await src.migrate(f"m{i}", uuid, "n2", live=False, new_epoch=4)
            clock.now += 10.0
            assert (await src.job(f"m{i}")) is not None
        assert await src.job("m0") is None
        assert await src.job(f"m{MAX_ENDED_JOBS + 4}") is not None

    run(go())
