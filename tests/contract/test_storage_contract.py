"""Contract suite for the storage facilities of hypervisor drivers (StorageDriver,
StorageCopier, VolumeAttacher: bollard.agent.drivers.storage), run against every driver that
has them; the tests of live moves (LiveVolumeMover) are skipped for drivers without it.

Each driver provides a factory returning a ``StorageHarness`` (tests/support/storage_harness.py):
the driver of one host and of a second one, a local pool and a shared pool, a way to write
into a volume out of band (as a guest would) so that checksums prove data moved, and a slow
driver whose copies can be aborted while they run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator
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
    MigrationEndpoint,
    VmSpec,
)
from bollard.agent.drivers.sim import SimDriver
from bollard.agent.drivers.storage import (
    AttachSpec,
    LiveVolumeMover,
    PoolRef,
    StorageCopier,
    StorageDriver,
    VolumeAttacher,
    VolumeFormat,
    VolumeInfo,
)
from bollard.domain.errors import DriverInvalidState, DriverNotFound
from bollard.domain.states import PowerState
from bollard.sim import Fabric
from bollard.sim.storage import PoolKey, SimStorage
from tests.support.storage_harness import StorageHarness

T = TypeVar("T")

VM = "11111111-1111-4111-8111-111111111111"
MISSING_VM = "99999999-9999-4999-8999-999999999999"
SIZE = 16  # MiB: the suite's volumes are small, for real drivers' sake


def _sim(request: pytest.FixtureRequest, tmp_path: Path) -> StorageHarness:
    """Two sim hosts of one fabric; the slow driver (node-1) copies at 1 MiB/s, so a copy
    of 64 MiB takes a minute."""
    fabric_dir = tmp_path / "fabric"

    def driver(node: str, copy_rate: float = 2048.0) -> SimDriver:
        return SimDriver(
            fabric_dir, node, latency=0.01, vcpus=8, memory_mb=4096, copy_rate=copy_rate
        )

    fabric = Fabric(fabric_dir)
    for node in ("node-1", "node-2"):
        fabric.host(node).ensure_host(8, 4096)
    storage = SimStorage(fabric)

    def write(host: str, pool: PoolRef, file: str, data: bytes) -> None:
        storage.write(host, PoolKey(pool.name, pool.type), file, [data], now=time.time())

    return StorageHarness(
        driver=driver("node-1"),
        node="node-1",
        peer=driver("node-2"),
        peer_node="node-2",
        local_pool=PoolRef(name="local-pool", type="local", path=str(tmp_path / "local")),
        shared_pool=PoolRef(name="shared-pool", type="shared", path=str(tmp_path / "shared")),
        write=write,
        slow_driver=driver("node-1", copy_rate=1.0),
        slow_size_mb=64,
    )


def _libvirt(request: pytest.FixtureRequest, tmp_path: Path) -> StorageHarness:
    """Real libvirt hosts (tests/support/libvirt_storage.py, written with the libvirt
    driver's storage)."""
    try:
        from tests.support.libvirt_storage import libvirt_storage_harness
    except ModuleNotFoundError as exc:
        if exc.name != "tests.support.libvirt_storage":
            raise
        pytest.skip("no libvirt storage harness yet (tests/support/libvirt_storage.py is missing)")
    harness: StorageHarness = libvirt_storage_harness(request, tmp_path)
    return harness


FACTORIES: list[Any] = [
    pytest.param(_sim, id="sim"),
    pytest.param(_libvirt, id="libvirt", marks=pytest.mark.libvirt),
]
_RUN_TIMEOUT = [10.0]


@pytest.fixture(params=FACTORIES)
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageHarness]:
    harness: StorageHarness = request.param(request, tmp_path)
    for d in (harness.driver, harness.peer):
        assert isinstance(d, StorageDriver) and isinstance(d, StorageCopier)
        assert isinstance(d, VolumeAttacher) and isinstance(d, JobDriver)
    _RUN_TIMEOUT[0] = harness.timeout
    yield harness
    _RUN_TIMEOUT[0] = 10.0


def run(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout if timeout is not None else _RUN_TIMEOUT[0]):
            return await coro

    return asyncio.run(bounded())


def _endpoint(h: StorageHarness, node: str) -> dict[str, Any] | None:
    """The target endpoint the server would pass for ``node``."""
    d = h.peer if node == h.peer_node else h.driver
    return d.migration_endpoint() if isinstance(d, MigrationEndpoint) else None


async def _copy(
    h: StorageHarness,
    command_id: str,
    pool: PoolRef,
    file: str,
    target_pool: PoolRef,
    target_file: str,
    *,
    target: str | None = None,
    snapshot: str | None = None,
    fmt: VolumeFormat | None = None,
    driver: Any = None,
) -> JobInfo:
    """Copy with ``driver`` (default: the one under test) and wait for the job's end."""
    d = driver or h.driver
    to = target or h.node
    job: JobInfo = await d.copy_volume(
        command_id, pool, file, target_pool, target_file,
        target=to, target_endpoint=_endpoint(h, to), snapshot=snapshot, fmt=fmt,
    )  # fmt: skip
    assert job.command_id == command_id
    return await _until_ended(d, job)


async def _until_ended(jobs: Any, job: JobInfo) -> JobInfo:
    """Poll the job until it ends (the run's timeout bounds it)."""
    while job.status == JobStatus.RUNNING:
        await asyncio.sleep(0.01)
        latest = await jobs.job(job.command_id)
        assert latest is not None
        job = latest
    return job


def _shape(v: VolumeInfo | None) -> tuple[str, str, int] | None:
    return None if v is None else (v.file, v.format, v.size_mb)


# pools


def test_pool_stats(h: StorageHarness) -> None:
    async def go() -> None:
        for d in (h.driver, h.peer):
            for pool in (h.local_pool, h.shared_pool):
                stats = await d.pool_stats(pool)
                assert stats.capacity_mb > 0
                assert 0 <= stats.free_mb <= stats.capacity_mb
                assert await d.list_volumes(pool) == []

    run(go())


# volumes


def test_create_is_idempotent_and_refuses_another_size_or_format(h: StorageHarness) -> None:
    d, pool = h.driver, h.local_pool

    async def go() -> None:
        made = await d.create_volume(pool, "vol-a.qcow2", SIZE)
        assert _shape(made) == ("vol-a.qcow2", "qcow2", SIZE)
        assert made.path and 0 <= made.allocated_mb <= SIZE
        again = await d.create_volume(pool, "vol-a.qcow2", SIZE, "qcow2")
        assert (_shape(again), again.path) == (_shape(made), made.path)
        with pytest.raises(DriverInvalidState):
            await d.create_volume(pool, "vol-a.qcow2", 2 * SIZE)
        with pytest.raises(DriverInvalidState):
            await d.create_volume(pool, "vol-a.qcow2", SIZE, "raw")
        raw = await d.create_volume(pool, "vol-b.raw", SIZE, "raw")
        assert _shape(raw) == ("vol-b.raw", "raw", SIZE)
        assert _shape(await d.volume(pool, "vol-a.qcow2")) == _shape(made)

    run(go())


def test_list_and_volume(h: StorageHarness) -> None:
    d, peer = h.driver, h.peer

    async def go() -> None:
        await d.create_volume(h.local_pool, "vol-b", SIZE)
        await d.create_volume(h.local_pool, "vol-a", SIZE, "raw")
        listed = await d.list_volumes(h.local_pool)
        assert [_shape(v) for v in listed] == [("vol-a", "raw", SIZE), ("vol-b", "qcow2", SIZE)]
        assert await d.volume(h.local_pool, "vol-c") is None
        # A local pool is each host's own; a shared pool is the same from every host.
        assert await peer.volume(h.local_pool, "vol-a") is None
        assert await peer.list_volumes(h.local_pool) == []
        await d.create_volume(h.shared_pool, "vol-s", SIZE)
        assert _shape(await peer.volume(h.shared_pool, "vol-s")) == ("vol-s", "qcow2", SIZE)
        assert [v.file for v in await peer.list_volumes(h.shared_pool)] == ["vol-s"]

    run(go())


def test_delete(h: StorageHarness) -> None:
    d, pool = h.driver, h.local_pool

    async def go() -> None:
        await d.create_volume(pool, "vol-a", SIZE)
        await d.create_snapshot(pool, "vol-a", "snap-1")
        assert await d.delete_volume(pool, "vol-a") is True
        assert await d.volume(pool, "vol-a") is None
        assert await d.list_volumes(pool) == []
        assert await d.delete_volume(pool, "vol-a") is False
        # A new volume of that name starts empty, with no snapshot.
        await d.create_volume(pool, "vol-a", SIZE)
        assert await d.list_snapshots(pool, "vol-a") == []

    run(go())


def test_grow(h: StorageHarness) -> None:
    d, pool = h.driver, h.local_pool

    async def go() -> None:
        await d.create_volume(pool, "vol-a", SIZE)
        assert (await d.grow_volume(pool, "vol-a", SIZE)).size_mb == SIZE  # nothing to do
        assert (await d.grow_volume(pool, "vol-a", 2 * SIZE)).size_mb == 2 * SIZE
        assert _shape(await d.volume(pool, "vol-a")) == ("vol-a", "qcow2", 2 * SIZE)
        with pytest.raises(DriverInvalidState):
            await d.grow_volume(pool, "vol-a", SIZE)
        assert _shape(await d.volume(pool, "vol-a")) == ("vol-a", "qcow2", 2 * SIZE)
        with pytest.raises(DriverNotFound):
            await d.grow_volume(pool, "vol-none", 2 * SIZE)

    run(go())


def test_checksum_follows_writes_not_formats(h: StorageHarness) -> None:
    d, pool = h.driver, h.local_pool

    async def go() -> None:
        await d.create_volume(pool, "vol-q", SIZE, "qcow2")
        await d.create_volume(pool, "vol-r", SIZE, "raw")
        empty = await d.checksum(pool, "vol-q")
        assert empty == await d.checksum(pool, "vol-r")  # the same (empty) content
        h.write(h.node, pool, "vol-q", b"first data")
        written = await d.checksum(pool, "vol-q")
        assert written != empty
        assert await d.checksum(pool, "vol-r") == empty  # the other volume is untouched
        with pytest.raises(DriverNotFound):
            await d.checksum(pool, "vol-none")

    run(go())


# snapshots


def test_snapshots(h: StorageHarness) -> None:
    d, pool = h.driver, h.local_pool

    async def go() -> None:
        await d.create_volume(pool, "vol-a", SIZE)
        h.write(h.node, pool, "vol-a", b"content A")
        at_a = await d.checksum(pool, "vol-a")
        first = await d.create_snapshot(pool, "vol-a", "snap-1")
        assert (first.name, first.size_mb) == ("snap-1", SIZE)
        again = await d.create_snapshot(pool, "vol-a", "snap-1")  # idempotent by name
        assert (again.name, again.created_at) == (first.name, first.created_at)
        h.write(h.node, pool, "vol-a", b"content B")
        at_b = await d.checksum(pool, "vol-a")
        assert at_b != at_a
        await d.create_snapshot(pool, "vol-a", "snap-2")
        assert [s.name for s in await d.list_snapshots(pool, "vol-a")] == ["snap-1", "snap-2"]

        reverted = await d.revert_snapshot(pool, "vol-a", "snap-1")
        assert _shape(reverted) == ("vol-a", "qcow2", SIZE)
        assert await d.checksum(pool, "vol-a") == at_a  # the content is back
        assert [s.name for s in await d.list_snapshots(pool, "vol-a")] == ["snap-1", "snap-2"]
        await d.revert_snapshot(pool, "vol-a", "snap-2")
        assert await d.checksum(pool, "vol-a") == at_b

        assert await d.delete_snapshot(pool, "vol-a", "snap-2") is True
        assert await d.delete_snapshot(pool, "vol-a", "snap-2") is False
        assert [s.name for s in await d.list_snapshots(pool, "vol-a")] == ["snap-1"]
        assert await d.checksum(pool, "vol-a") == at_b  # deleting a snapshot keeps the content
        with pytest.raises(DriverNotFound):
            await d.revert_snapshot(pool, "vol-a", "snap-2")
        with pytest.raises(DriverNotFound):
            await d.create_snapshot(pool, "vol-none", "snap-1")

    run(go())


def test_a_raw_volume_has_no_snapshots(h: StorageHarness) -> None:
    d, pool = h.driver, h.local_pool

    async def go() -> None:
        await d.create_volume(pool, "vol-r", SIZE, "raw")
        with pytest.raises(DriverInvalidState):
            await d.create_snapshot(pool, "vol-r", "snap-1")
        assert await d.list_snapshots(pool, "vol-r") == []

    run(go())


# copies


@pytest.mark.parametrize("where", ["within-host", "to-peer", "within-shared"])
def test_copy_carries_the_content(h: StorageHarness, where: str) -> None:
    d = h.driver
    shared = where == "within-shared"
    pool = h.shared_pool if shared else h.local_pool
    to, target_driver = (h.peer_node, h.peer) if where == "to-peer" else (h.node, h.driver)

    async def go() -> None:
        await d.create_volume(pool, "vol-src", SIZE)
        h.write(h.node, pool, "vol-src", b"the data to carry")
        data = await d.checksum(pool, "vol-src")
        done = await _copy(h, "copy-1", pool, "vol-src", pool, "vol-dst", target=to)
        assert done.status == JobStatus.COMPLETED, done
        assert done.progress == 1.0
        made = VolumeInfo.model_validate(done.result["volume"])
        assert _shape(made) == ("vol-dst", "qcow2", SIZE)
        there = await target_driver.volume(pool, "vol-dst")
        assert _shape(there) == _shape(made) and there is not None and there.path == made.path
        assert await target_driver.checksum(pool, "vol-dst") == data
        assert await d.checksum(pool, "vol-src") == data  # the source stays as it was
        again = await d.copy_volume(
            "copy-1", pool, "vol-src", pool, "vol-dst",
            target=to, target_endpoint=_endpoint(h, to),
        )  # fmt: skip
        assert again.status == JobStatus.COMPLETED  # the same job, not a second copy

    run(go())


def test_copy_converts_the_format_and_keeps_the_checksum(h: StorageHarness) -> None:
    d, pool = h.driver, h.local_pool

    async def go() -> None:
        await d.create_volume(pool, "vol-q", SIZE, "qcow2")
        h.write(h.node, pool, "vol-q", b"format-independent")
        data = await d.checksum(pool, "vol-q")
        done = await _copy(h, "copy-raw", pool, "vol-q", pool, "vol-r", fmt="raw")
        assert done.status == JobStatus.COMPLETED, done
        assert _shape(await d.volume(pool, "vol-r")) == ("vol-r", "raw", SIZE)
        assert await d.checksum(pool, "vol-r") == data

    run(go())


def test_copy_from_a_snapshot(h: StorageHarness) -> None:
    d, pool = h.driver, h.local_pool

    async def go() -> None:
        await d.create_volume(pool, "vol-a", SIZE)
        h.write(h.node, pool, "vol-a", b"as it was")
        then = await d.checksum(pool, "vol-a")
        await d.create_snapshot(pool, "vol-a", "snap-1")
        h.write(h.node, pool, "vol-a", b"as it is now")
        now = await d.checksum(pool, "vol-a")
        done = await _copy(h, "copy-s", pool, "vol-a", pool, "vol-then", snapshot="snap-1")
        assert done.status == JobStatus.COMPLETED, done
        assert await d.checksum(pool, "vol-then") == then
        assert await d.checksum(pool, "vol-a") == now
        assert await d.list_snapshots(pool, "vol-then") == []  # a copy has no snapshots

    run(go())


def test_copy_refusals_start_nothing(h: StorageHarness) -> None:
    d, pool = h.driver, h.local_pool

    async def go() -> None:
        await d.create_volume(pool, "vol-a", SIZE)
        await d.create_volume(pool, "vol-b", SIZE)
        h.write(h.node, pool, "vol-b", b"not to be overwritten")
        kept = await d.checksum(pool, "vol-b")

        async def copy(cid: str, file: str, target_file: str, **kw: Any) -> JobInfo:
            return await d.copy_volume(
                cid, pool, file, pool, target_file,
                target=h.node, target_endpoint=_endpoint(h, h.node), **kw,
            )  # fmt: skip

        with pytest.raises(DriverInvalidState):  # the target file exists
            await copy("r1", "vol-a", "vol-b")
        with pytest.raises(DriverNotFound):
            await copy("r2", "vol-none", "vol-c")
        with pytest.raises(DriverNotFound):
            await copy("r3", "vol-a", "vol-c", snapshot="snap-none")
        assert await d.checksum(pool, "vol-b") == kept
        assert await d.volume(pool, "vol-c") is None
        for cid in ("r1", "r2", "r3"):
            assert await d.job(cid) is None

    run(go())


def test_copy_runs_as_a_job_and_an_abort_leaves_no_target(h: StorageHarness) -> None:
    slow, pool, size = h.slow_driver, h.local_pool, h.slow_size_mb
    assert slow is not None

    async def go() -> None:
        await h.driver.create_volume(pool, "vol-big", size)
        h.write(h.node, pool, "vol-big", b"some data")
        job = await slow.copy_volume(
            "copy-slow", pool, "vol-big", pool, "vol-big-copy",
            target=h.peer_node, target_endpoint=_endpoint(h, h.peer_node),
        )  # fmt: skip
        assert job.status == JobStatus.RUNNING, job
        assert 0.0 <= job.progress < 1.0
        running = await slow.job("copy-slow")
        assert running is not None and running.status == JobStatus.RUNNING
        assert 0.0 <= running.progress < 1.0
        again = await slow.copy_volume(
            "copy-slow", pool, "vol-big", pool, "vol-big-copy",
            target=h.peer_node, target_endpoint=_endpoint(h, h.peer_node),
        )  # fmt: skip
        assert again.command_id == "copy-slow" and again.status == JobStatus.RUNNING

        aborted = await slow.abort_job("copy-slow", "test")
        assert aborted is not None and aborted.status == JobStatus.ABORTED, aborted
        assert aborted.progress < 1.0
        ended = await slow.job("copy-slow")
        assert ended is not None and ended.status == JobStatus.ABORTED
        assert await h.peer.volume(pool, "vol-big-copy") is None
        assert "vol-big-copy" not in [v.file for v in await h.peer.list_volumes(pool)]
        assert await h.driver.volume(pool, "vol-big") is not None  # the source stays
        assert await slow.abort_job("copy-none", "test") is None

    run(go())


def test_cancel_hooks_abort_copies(h: StorageHarness) -> None:
    slow, pool, size = h.slow_driver, h.local_pool, h.slow_size_mb
    assert slow is not None

    async def go() -> None:
        await h.driver.create_volume(pool, "vol-big", size)
        await slow.copy_volume(
            "copy-slow", pool, "vol-big", pool, "vol-big-copy",
            target=h.peer_node, target_endpoint=_endpoint(h, h.peer_node),
        )  # fmt: skip
        assert await slow.abort_jobs("cancel hook") == ["copy-slow"]
        job = await slow.job("copy-slow")
        assert job is not None and job.status == JobStatus.ABORTED
        assert await h.peer.volume(pool, "vol-big-copy") is None

    run(go())


# the disks of VMs


def _spec(disks: list[DiskSpec] | None = None) -> VmSpec:
    return VmSpec(uuid=VM, name="vol-vm", vcpus=1, memory_mb=512, epoch=1, disks=disks or [])


async def _disks(d: Any, uuid: str = VM) -> list[tuple[str, int, str]]:
    assert isinstance(d, DiskSource)
    return [(x.device, x.size_mb, x.path) for x in await d.disks(uuid)]


@pytest.mark.parametrize("running", [False, True], ids=["stopped", "running"])
def test_attach_and_detach(h: StorageHarness, running: bool) -> None:
    d: Any = h.driver
    pool = h.local_pool

    async def go() -> None:
        vol = await d.create_volume(pool, "vol-data", SIZE)
        other = await d.create_volume(pool, "vol-other", SIZE)
        hv: HypervisorDriver = d
        await hv.define(_spec())
        if running:
            await hv.start(VM)
        disk = AttachSpec(device="vdb", path=vol.path, format=vol.format)
        await d.attach_volume(VM, disk)
        await d.attach_volume(VM, disk)  # idempotent
        assert await _disks(d) == [("vdb", SIZE, vol.path)]
        with pytest.raises(DriverInvalidState):  # another volume at that device
            await d.attach_volume(VM, AttachSpec(device="vdb", path=other.path))
        with pytest.raises(DriverNotFound):
            await d.attach_volume(MISSING_VM, disk)
        if running:
            await d.resize_attached(VM, "vdb", 2 * SIZE)
            assert await _disks(d) == [("vdb", 2 * SIZE, vol.path)]
            assert (await d.volume(pool, "vol-data")).size_mb == 2 * SIZE
        assert await d.detach_volume(VM, "vdb") is True
        assert await _disks(d) == []
        assert await d.detach_volume(VM, "vdb") is False
        with pytest.raises(DriverNotFound):
            await d.detach_volume(MISSING_VM, "vdb")
        assert await d.volume(pool, "vol-data") is not None  # detaching keeps the volume
        expected = PowerState.RUNNING if running else PowerState.STOPPED
        assert [vm.power for vm in await hv.list_vms()] == [expected]

    run(go())


def test_define_with_a_volume_and_undefine_leaves_it(h: StorageHarness) -> None:
    d: Any = h.driver
    pool = h.local_pool

    async def go() -> None:
        vol = await d.create_volume(pool, "vol-boot", SIZE)
        h.write(h.node, pool, "vol-boot", b"the guest's data")
        data = await d.checksum(pool, "vol-boot")
        disk = DiskSpec(size_mb=vol.size_mb, device="vda", path=vol.path, format=vol.format)
        hv: HypervisorDriver = d
        await hv.define(_spec([disk]))
        assert await _disks(d) == [("vda", SIZE, vol.path)]
        await hv.define(_spec([disk]))  # again: the same disk, kept as it is
        assert await _disks(d) == [("vda", SIZE, vol.path)]
        assert (await hv.start(VM)).power == PowerState.RUNNING
        await hv.stop(VM)
        await hv.undefine(VM)
        assert await hv.list_vms() == []
        left = await d.volume(pool, "vol-boot")
        assert _shape(left) == ("vol-boot", "qcow2", SIZE)
        assert await d.checksum(pool, "vol-boot") == data

    run(go())


# live moves of a running VM's disk (LiveVolumeMover; optional)

MIB = 1024 * 1024


def _mover(d: Any) -> Any:
    if not isinstance(d, LiveVolumeMover):
        pytest.skip(f"the {d.name} driver cannot move a running VM's disk (no LiveVolumeMover)")
    return d


async def _running_with(d: Any, vol: VolumeInfo, device: str = "vdb") -> None:
    """Define the suite's VM with ``vol`` at ``device`` and start it."""
    disk = DiskSpec(size_mb=vol.size_mb, device=device, path=vol.path, format=vol.format)
    hv: HypervisorDriver = d
    await hv.define(_spec([disk]))
    assert (await hv.start(VM)).power == PowerState.RUNNING


def test_live_move_carries_the_disk_and_the_guest_uses_the_new_file(h: StorageHarness) -> None:
    d = _mover(h.driver)
    pool, shared = h.local_pool, h.shared_pool

    async def go() -> None:
        vol = await d.create_volume(pool, "vol-live", SIZE)
        h.write(h.node, pool, "vol-live", b"the guest's data")
        data = await d.checksum(pool, "vol-live")
        await _running_with(d, vol)
        job = await d.move_attached("move-1", VM, "vdb", shared, "vol-moved")
        assert (job.command_id, job.vm_uuid) == ("move-1", VM)
        done = await _until_ended(d, job)
        assert done.status == JobStatus.COMPLETED, done
        assert done.progress == 1.0
        made = VolumeInfo.model_validate(done.result["volume"])
        assert _shape(made) == ("vol-moved", "qcow2", SIZE)
        assert done.result["path"] == made.path != vol.path
        # The running guest uses the new file; it holds the data; it is a whole volume.
        assert await _disks(d) == [("vdb", SIZE, made.path)]
        assert await d.checksum(shared, "vol-moved") == data
        there = await d.volume(shared, "vol-moved")
        assert there is not None and not there.partial and there.path == made.path
        assert await d.volume(pool, "vol-live") is not None  # the source stays (the server's)
        again = await d.move_attached("move-1", VM, "vdb", shared, "vol-moved")
        assert again.status == JobStatus.COMPLETED  # the same job, not a second move
        assert [vm.power for vm in await d.list_vms()] == [PowerState.RUNNING]
        # Its definition names the new file too: a cold restart keeps it.
        await d.restart(VM)
        assert await _disks(d) == [("vdb", SIZE, made.path)]

    run(go())


def test_live_move_refusals_start_nothing(h: StorageHarness) -> None:
    d = _mover(h.driver)
    pool, shared = h.local_pool, h.shared_pool

    async def go() -> None:
        vol = await d.create_volume(pool, "vol-a", SIZE)
        await d.create_volume(shared, "vol-taken", SIZE)
        hv: HypervisorDriver = d
        await hv.define(
            _spec([DiskSpec(size_mb=SIZE, device="vdb", path=vol.path, format=vol.format)])
        )
        with pytest.raises(DriverInvalidState):  # the VM does not run
            await d.move_attached("r1", VM, "vdb", shared, "vol-new")
        await hv.start(VM)
        with pytest.raises(DriverNotFound):  # no disk at that device
            await d.move_attached("r2", VM, "vdc", shared, "vol-new")
        with pytest.raises(DriverNotFound):
            await d.move_attached("r3", MISSING_VM, "vdb", shared, "vol-new")
        with pytest.raises(DriverInvalidState):  # the target file exists
            await d.move_attached("r4", VM, "vdb", shared, "vol-taken")
        for cid in ("r1", "r2", "r3", "r4"):
            assert await d.job(cid) is None
        assert await d.volume(shared, "vol-new") is None
        assert await _disks(d) == [("vdb", SIZE, vol.path)]

    run(go())


@pytest.mark.parametrize("how", ["abort_job", "cancel_hooks"])
def test_an_aborted_live_move_keeps_the_old_file_and_leaves_no_target(
    h: StorageHarness, how: str
) -> None:
    slow = _mover(h.slow_driver)
    pool, shared, size = h.local_pool, h.shared_pool, h.slow_size_mb

    async def go() -> None:
        vol = await h.driver.create_volume(pool, "vol-big", size)
        h.write(h.node, pool, "vol-big", b"\x5a" * (8 * MIB))  # (data to copy: it takes time)
        data = await h.driver.checksum(pool, "vol-big")
        await _running_with(h.driver, vol)
        job = await slow.move_attached("move-slow", VM, "vdb", shared, "vol-big-moved")
        assert job.status == JobStatus.RUNNING, job
        assert 0.0 <= job.progress < 1.0
        running = await slow.job("move-slow")
        assert running is not None and running.status == JobStatus.RUNNING
        if how == "abort_job":
            aborted = await slow.abort_job("move-slow", "test")
            assert aborted is not None and aborted.status == JobStatus.ABORTED, aborted
            assert aborted.progress < 1.0
        else:
            assert await slow.abort_jobs("cancel hook") == ["move-slow"]
        ended = await slow.job("move-slow")
        assert ended is not None and ended.status == JobStatus.ABORTED
        # The guest keeps its file, with its data; the partial target is gone.
        assert await _disks(h.driver) == [("vdb", size, vol.path)]
        assert await h.driver.checksum(pool, "vol-big") == data
        assert await h.driver.volume(shared, "vol-big-moved") is None
        assert [vm.power for vm in await h.driver.list_vms()] == [PowerState.RUNNING]

    run(go())
