"""Live moves of a running sim VM's disk (LiveVolumeMover on the sim driver), on an explicit
clock: progress over time, the partial target, the mirror of the guest's writes, the pivot,
aborts, the cancel hooks of a restarted agent, refusals, faults and crash leftovers."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bollard.agent.drivers.base import DiskSpec, JobStatus, VmSpec
from bollard.agent.drivers.sim import SimDriver
from bollard.agent.drivers.storage import LiveVolumeMover, PoolRef
from bollard.domain.errors import DriverInvalidState, DriverNotFound, DriverPermanent
from bollard.domain.states import PowerState
from bollard.sim import Fabric, FaultMode
from bollard.sim.live_move import LiveMoves
from bollard.sim.storage import PoolKey, SimStorage, volume_path

T = TypeVar("T")
VM = "22222222-2222-4222-8222-222222222222"
T0 = 1000.0
LOCAL = PoolRef(name="local", type="local", path="")
SHARED = PoolRef(name="nfs", type="shared", path="/mnt/nfs")
LK = PoolKey("local", "local")
SK = PoolKey("nfs", "shared")
SOURCE = volume_path(LK, "disk.qcow2")
TARGET = volume_path(SK, "disk-m1.qcow2")


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(10):
            return await coro

    return asyncio.run(bounded())


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class World:
    """Sim host `a` whose driver reads an explicit clock; VM `vm` runs there with a 1000 MiB
    volume of the local pool at vdb (a move of it lasts 10 s at 100 MiB/s)."""

    def __init__(self, tmp_path: Path) -> None:
        self.clock = Clock()
        self.fabric = Fabric(tmp_path)
        self.storage = SimStorage(self.fabric)
        self.fabric.host("a").ensure_host(8, 8192)
        self.a = self.driver()

    def driver(self) -> SimDriver:
        """The host's driver (a new one: as a restarted agent's)."""
        return SimDriver(
            self.fabric.root, "a", latency=0, vcpus=8, memory_mb=8192, copy_rate=100.0,
            wall=self.clock,
        )  # fmt: skip

    async def vm_with_volume(self, *, start: bool = True) -> None:
        await self.a.create_volume(LOCAL, "disk.qcow2", 1000)
        disks = [DiskSpec(size_mb=8), DiskSpec(size_mb=1000, device="vdb", path=SOURCE)]
        await self.a.define(VmSpec(uuid=VM, name="vm", vcpus=1, memory_mb=64, disks=disks))
        if start:
            await self.a.start(VM)

    def write(self, pool: PoolKey, file: str, data: bytes) -> str:
        """Write into a volume as the guest would; its new checksum."""
        return self.storage.write("a", pool, file, [data], self.clock.now).checksum

    async def uses(self, device: str = "vdb") -> str:
        """The file the VM uses at `device`, as the driver reports it (DiskSource)."""
        return next(d.path for d in await self.a.disks(VM) if d.device == device)

    def power(self) -> PowerState | None:
        vm = self.fabric.host("a").get_vm(VM)
        return None if vm is None else vm.power

    def target(self) -> Any:
        """The target's record as stored (None: no file), partial or not."""
        return self.storage.raw("a", SK, "disk-m1.qcow2")


def test_the_sim_driver_is_a_live_volume_mover(tmp_path: Path) -> None:
    assert isinstance(World(tmp_path).a, LiveVolumeMover)


def test_a_move_progresses_mirrors_the_guests_writes_and_pivots(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def go() -> None:
        await w.vm_with_volume()
        w.write(LK, "disk.qcow2", b"before the move")
        job = await w.a.move_attached("m1", VM, "vdb", SHARED, "disk-m1.qcow2")
        assert (job.kind, job.status, job.progress, job.vm_uuid) == (
            "volume_move_live", JobStatus.RUNNING, 0.0, VM,
        )  # fmt: skip
        assert job.supervised and await w.a.vm_busy(VM)
        assert w.fabric.host("a").executed()[-1].command == "volume_move_live"
        # While it runs: the target is there, partial; the guest uses (and writes) the source.
        w.clock.now = T0 + 4.0
        running = await w.a.job("m1")
        assert running is not None
        assert (running.status, running.progress, running.phase) == (
            JobStatus.RUNNING, 0.4, "copy",
        )  # fmt: skip
        [listed] = await w.a.list_volumes(SHARED)
        assert (listed.file, listed.partial) == ("disk-m1.qcow2", True)
        with pytest.raises(DriverInvalidState):
            await w.a.checksum(SHARED, "disk-m1.qcow2")
        assert await w.uses() == SOURCE
        w.clock.now = T0 + 9.0
        latest = w.write(LK, "disk.qcow2", b"written during the move")
        # Its time is up: the pivot. The VM uses the target, which has every write.
        w.clock.now = T0 + 10.0
        done = await w.a.job("m1")
        assert done is not None
        assert (done.status, done.progress, done.phase) == (JobStatus.COMPLETED, 1.0, "done")
        assert done.result["path"] == TARGET
        assert done.result["volume"]["file"] == "disk-m1.qcow2"
        assert done.result["volume"]["size_mb"] == 1000
        assert await w.uses() == TARGET
        assert await w.a.checksum(SHARED, "disk-m1.qcow2") == latest
        assert w.target().partial is None
        drive = next(d for d in w.fabric.host("a").get_vm(VM).drives)  # type: ignore[union-attr]
        assert (drive.device, drive.path, drive.format, drive.size_mb) == (
            "vdb", TARGET, "qcow2", 1000,
        )  # fmt: skip
        assert w.power() == PowerState.RUNNING  # never stopped
        assert not await w.a.vm_busy(VM)
        # The source is left as it was (the server removes it once the volume moved).
        assert await w.a.checksum(LOCAL, "disk.qcow2") == latest
        # Writes from now on go to the new file; the move's job stays completed.
        w.write(SK, "disk-m1.qcow2", b"after")
        w.clock.now = T0 + 100.0
        again = await w.a.job("m1")
        assert again is not None and again.status == JobStatus.COMPLETED
        assert await w.uses() == TARGET
        assert [op.command for op in w.fabric.host("a").executed()].count("volume_move_live") == 1

    run(go())


def test_the_pivot_happens_at_any_read_of_the_host(tmp_path: Path) -> None:
    """No job poll needed: a heartbeat's list of VMs, or the VM's disks, settle it."""
    w = World(tmp_path)

    async def go() -> None:
        await w.vm_with_volume()
        await w.a.move_attached("m1", VM, "vdb", SHARED, "disk-m1.qcow2")
        w.clock.now = T0 + 10.0
        assert w.fabric.host("a").get_vm(VM).drives[0].path == SOURCE  # type: ignore[union-attr]
        await w.a.list_vms()
        assert w.fabric.host("a").get_vm(VM).drives[0].path == TARGET  # type: ignore[union-attr]
        assert w.target().partial is None

    run(go())


def test_a_move_within_the_hosts_local_pools_and_a_raw_target(tmp_path: Path) -> None:
    w = World(tmp_path)
    fast = PoolRef(name="fast", type="local", path="/srv/fast")

    async def go() -> None:
        await w.vm_with_volume()
        data = w.write(LK, "disk.qcow2", b"data")
        await w.a.move_attached("m1", VM, "vdb", fast, "disk.raw", fmt="raw")
        w.clock.now = T0 + 10.0
        assert await w.uses() == "sim://local/fast/disk.raw"
        moved = await w.a.volume(fast, "disk.raw")
        assert moved is not None and (moved.format, moved.allocated_mb) == ("raw", 1000)
        assert await w.a.checksum(fast, "disk.raw") == data
        vm = w.fabric.host("a").get_vm(VM)
        assert vm is not None and vm.drives[0].format == "raw"

    run(go())


def test_an_abort_before_the_pivot_leaves_the_vm_on_its_file(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def go() -> None:
        await w.vm_with_volume()
        data = w.write(LK, "disk.qcow2", b"data")
        await w.a.move_attached("m1", VM, "vdb", SHARED, "disk-m1.qcow2")
        w.clock.now = T0 + 4.0
        aborted = await w.a.abort_job("m1", "operator")
        assert aborted is not None
        assert (aborted.status, aborted.progress, aborted.message) == (
            JobStatus.ABORTED, 0.4, "operator",
        )  # fmt: skip
        assert w.target() is None  # the partial target is gone
        assert await w.a.list_volumes(SHARED) == []
        w.clock.now = T0 + 100.0  # long past its end: nothing pivots
        assert (await w.a.job("m1")).status == JobStatus.ABORTED  # type: ignore[union-attr]
        assert await w.uses() == SOURCE
        assert await w.a.checksum(LOCAL, "disk.qcow2") == data
        assert w.power() == PowerState.RUNNING
        # The device is free for another move, which can use the same target name.
        again = await w.a.move_attached("m2", VM, "vdb", SHARED, "disk-m1.qcow2")
        assert again.status == JobStatus.RUNNING
        # An abort after the pivot changes nothing: completed stays completed.
        w.clock.now = T0 + 110.0
        late = await w.a.abort_job("m2", "too late")
        assert late is not None and late.status == JobStatus.COMPLETED
        assert await w.uses() == TARGET

    run(go())


def test_a_restarted_agents_cancel_hook_aborts_a_running_move(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def go() -> None:
        await w.vm_with_volume()
        await w.a.move_attached("m1", VM, "vdb", SHARED, "disk-m1.qcow2")
        await w.a.close()  # the agent dies; the job goes on in the fabric
        w.clock.now = T0 + 5.0
        again = w.driver()
        assert await again.abort_jobs("aborted by cancel hook: agent restarted") == ["m1"]
        job = await again.job("m1")
        assert job is not None and job.status == JobStatus.ABORTED
        assert w.target() is None
        assert [d.path for d in await again.disks(VM) if d.device == "vdb"] == [SOURCE]
        assert w.power() == PowerState.RUNNING

    run(go())


def test_a_move_that_ended_while_its_agent_was_away_is_found_completed(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def go() -> None:
        await w.vm_with_volume()
        await w.a.move_attached("m1", VM, "vdb", SHARED, "disk-m1.qcow2")
        await w.a.close()
        w.clock.now = T0 + 6.0
        latest = w.write(LK, "disk.qcow2", b"the guest wrote while no agent watched")
        w.clock.now = T0 + 30.0
        again = w.driver()
        assert await again.abort_jobs("aborted by cancel hook: agent restarted") == []
        job = await again.job("m1")
        assert job is not None and job.status == JobStatus.COMPLETED
        assert job.result["path"] == TARGET
        assert [d.path for d in await again.disks(VM) if d.device == "vdb"] == [TARGET]
        assert await again.checksum(SHARED, "disk-m1.qcow2") == latest

    run(go())


def test_a_move_whose_vm_stops_fails_and_leaves_no_target(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def go() -> None:
        await w.vm_with_volume()
        await w.a.move_attached("m1", VM, "vdb", SHARED, "disk-m1.qcow2")
        w.clock.now = T0 + 3.0
        await w.a.stop(VM)  # (out of band: the server does not stop a VM under a move)
        w.clock.now = T0 + 20.0
        job = await w.a.job("m1")
        assert job is not None and job.status == JobStatus.FAILED
        assert "stopped" in job.message and "block copy ended" in job.message
        assert w.target() is None
        assert await w.uses() == SOURCE

    run(go())


def test_refusals_change_nothing(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def go() -> None:
        await w.vm_with_volume(start=False)
        with pytest.raises(DriverInvalidState, match="vm is stopped: only a running VM"):
            await w.a.move_attached("r1", VM, "vdb", SHARED, "t1")
        await w.a.start(VM)
        with pytest.raises(DriverNotFound, match="no VM"):
            await w.a.move_attached("r2", "33333333-3333-4333-8333-333333333333", "vdb",
                                    SHARED, "t2")  # fmt: skip
        with pytest.raises(DriverNotFound, match="has no volume at vdc"):
            await w.a.move_attached("r3", VM, "vdc", SHARED, "t3")
        with pytest.raises(DriverNotFound, match="has no volume at vda"):  # a local disk
            await w.a.move_attached("r4", VM, "vda", SHARED, "t4")
        await w.a.create_volume(SHARED, "taken", 10)
        with pytest.raises(DriverInvalidState, match="volume taken exists in shared pool nfs"):
            await w.a.move_attached("r5", VM, "vdb", SHARED, "taken")
        with pytest.raises(DriverInvalidState, match="exists"):  # onto itself
            await w.a.move_attached("r6", VM, "vdb", LOCAL, "disk.qcow2")
        w.storage.set_pool_capacity("a", SK, 10)
        w.write(LK, "disk.qcow2", b"x" * (12 * 1024 * 1024))  # 12 MiB to copy
        with pytest.raises(DriverPermanent) as full:
            await w.a.move_attached("r7", VM, "vdb", SHARED, "t7")
        assert full.value.code == "insufficient-capacity"
        for cid in ("r1", "r2", "r3", "r4", "r5", "r6", "r7"):
            assert await w.a.job(cid) is None
        assert [v.file for v in await w.a.list_volumes(SHARED)] == ["taken"]
        assert await w.uses() == SOURCE
        assert LiveMoves(w.storage).pending("a") == []
        # Idempotent by command id; one move of a disk at a time.
        w.storage.set_pool_capacity("a", SK, 1024 * 1024)
        first = await w.a.move_attached("m1", VM, "vdb", SHARED, "disk-m1.qcow2")
        w.clock.now = T0 + 1.0
        same = await w.a.move_attached("m1", VM, "vdb", SHARED, "disk-m1.qcow2")
        assert (same.command_id, same.progress) == (first.command_id, 0.1)
        with pytest.raises(DriverInvalidState, match="disk vdb of VM vm is being moved"):
            await w.a.move_attached("m2", VM, "vdb", SHARED, "other")
        assert await w.a.job("m2") is None

    run(go())


@pytest.mark.parametrize("mode", [FaultMode.FAIL, FaultMode.HANG])
def test_faults_fire_at_the_start(tmp_path: Path, mode: FaultMode) -> None:
    w = World(tmp_path)

    async def go() -> None:
        await w.vm_with_volume()
        w.fabric.host("a").faults.set("volume_move_live", mode)
        if mode == FaultMode.FAIL:
            with pytest.raises(DriverPermanent, match="injected fault: volume_move_live fails"):
                await w.a.move_attached("m1", VM, "vdb", SHARED, "disk-m1.qcow2")
        else:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await w.a.move_attached("m1", VM, "vdb", SHARED, "disk-m1.qcow2")
        assert w.fabric.host("a").faults.all() == []
        assert await w.a.job("m1") is None and w.target() is None
        assert await w.uses() == SOURCE
        # Once fired, the next one goes through.
        assert (await w.a.move_attached("m2", VM, "vdb", SHARED, "t")).status == JobStatus.RUNNING

    run(go())


def test_leftovers_of_a_crashed_start_are_cleaned_at_the_next_settling(tmp_path: Path) -> None:
    """A crash after the target and the record were written, before the job: nothing
    started; the partial target counts as absent at once and goes at the next read."""
    w = World(tmp_path)

    async def go() -> None:
        await w.vm_with_volume()
        await w.a.move_attached("m1", VM, "vdb", SHARED, "disk-m1.qcow2")
        (tmp_path / "hosts/a/jobs/m1.json").unlink()  # as if it had never been written
        assert w.target() is not None and await w.a.volume(SHARED, "disk-m1.qcow2") is None
        await w.a.list_vms()
        assert w.target() is None
        assert LiveMoves(w.storage).pending("a") == []
        w.clock.now = T0 + 20.0
        assert await w.uses() == SOURCE

    run(go())
