"""Sim storage beyond the storage contract: the fabric's records (layout, capacity, checksum
chaining), copies as jobs on an explicit clock (progress, partial targets, aborts, leftovers
of a crash), faults, the disks of sim VMs, migrations carrying local volumes, the memory
driver's disks and `bollard sim volume`."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import typer
from typer.testing import CliRunner

from bollard.agent.drivers.base import DiskSpec, JobStatus, VmSpec, current_command_id
from bollard.agent.drivers.memory import MemoryDriver, MemoryFabric
from bollard.agent.drivers.sim import SimDriver
from bollard.agent.drivers.storage import AttachSpec, PoolRef
from bollard.cli.sim_cmd import sim_app
from bollard.domain.errors import (
    DriverInvalidState,
    DriverNotFound,
    DriverPermanent,
    DriverTemporary,
)
from bollard.domain.states import PowerState
from bollard.sim import Fabric, FaultMode, JobState, SimVm
from bollard.sim.migration import MigrationRequest, Migrations
from bollard.sim.storage import (
    EMPTY_CHECKSUM,
    PoolKey,
    SimStorage,
    StorageRefused,
    parse_path,
    volume_path,
)
from bollard.sim.storage_models import SimDisk

T = TypeVar("T")
VM = "11111111-1111-4111-8111-111111111111"
T0 = 1000.0
LOCAL = PoolRef(name="fast", type="local", path="/srv/fast")
SHARED = PoolRef(name="nfs", type="shared", path="/mnt/nfs")
LK = PoolKey("fast", "local")
PATH_V = "sim://local/fast/v"
SK = PoolKey("nfs", "shared")


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
    """Two sim hosts, a and b, whose drivers read an explicit clock."""

    def __init__(self, tmp_path: Path, copy_rate: float = 100.0) -> None:
        self.clock = Clock()
        self.fabric = Fabric(tmp_path)
        self.storage = SimStorage(self.fabric)
        for node in ("a", "b"):
            self.fabric.host(node).ensure_host(8, 8192)
        self.a = self.driver("a", copy_rate)
        self.b = self.driver("b", copy_rate)

    def driver(self, node: str, copy_rate: float = 100.0) -> SimDriver:
        return SimDriver(
            self.fabric.root, node, latency=0, vcpus=8, memory_mb=8192,
            copy_rate=copy_rate, wall=self.clock,
        )  # fmt: skip

    def write(self, node: str, pool: PoolKey, file: str, data: bytes) -> None:
        self.storage.write(node, pool, file, [data], self.clock.now)


# the fabric's records


def test_layout_paths_and_checksums(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def go() -> None:
        local = await w.a.create_volume(LOCAL, "vol-1.qcow2", 100)
        shared = await w.a.create_volume(SHARED, "vol-2.raw", 50, "raw")
        assert local.path == "sim://local/fast/vol-1.qcow2"
        assert shared.path == "sim://shared/nfs/vol-2.raw"
        assert parse_path(local.path) == (LK, "vol-1.qcow2")
        assert parse_path(shared.path) == (SK, "vol-2.raw")
        for bad in ("/x.qcow2", "sim://local/fast", "sim://other/fast/x", "sim://local/Fa/x"):
            assert parse_path(bad) is None
        assert (tmp_path / "hosts/a/pools/fast/vol-1.qcow2.json").is_file()
        assert (tmp_path / "shared/nfs/vol-2.raw.json").is_file()
        assert await w.a.checksum(LOCAL, "vol-1.qcow2") == EMPTY_CHECKSUM
        w.write("a", LK, "vol-1.qcow2", b"abc")
        expected = hashlib.sha256(bytes.fromhex(EMPTY_CHECKSUM) + b"abc").hexdigest()
        assert await w.a.checksum(LOCAL, "vol-1.qcow2") == expected  # deterministic
        w.write("a", LK, "vol-1.qcow2", b"abc")
        assert await w.a.checksum(LOCAL, "vol-1.qcow2") != expected  # every write counts

    run(go())


def test_capacity_and_allocation(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def go() -> None:
        stats = await w.a.pool_stats(LOCAL)
        assert (stats.capacity_mb, stats.free_mb) == (1024 * 1024, 1024 * 1024)  # 1 TiB
        w.storage.set_pool_capacity("a", LK, 1000)
        thin = await w.a.create_volume(LOCAL, "thin", 5000)  # qcow2: nothing allocated yet
        assert thin.allocated_mb == 0
        w.storage.write("a", LK, "thin", [b"x" * (3 * 1024 * 1024 + 1)], w.clock.now)
        assert (await w.a.volume(LOCAL, "thin")).allocated_mb == 4  # type: ignore[union-attr]
        thick = await w.a.create_volume(LOCAL, "thick", 600, "raw")  # raw: all of it
        assert thick.allocated_mb == 600
        assert (await w.a.pool_stats(LOCAL)).free_mb == 1000 - 4 - 600
        with pytest.raises(DriverPermanent) as refused:
            await w.a.create_volume(LOCAL, "too-big", 500, "raw")
        assert refused.value.code == "insufficient-capacity"
        assert await w.a.volume(LOCAL, "too-big") is None
        with pytest.raises(DriverPermanent):
            await w.a.grow_volume(LOCAL, "thick", 1000)
        # Another host's pool of that name, and the shared pools, have their own room.
        assert (await w.b.pool_stats(LOCAL)).free_mb == 1024 * 1024
        assert (await w.a.pool_stats(SHARED)).free_mb == 1024 * 1024

    run(go())


def test_revert_brings_back_the_size_and_snapshots_wait_for_a_stopped_vm(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def go() -> None:
        vol = await w.a.create_volume(LOCAL, "v", 100)
        await w.a.create_snapshot(LOCAL, "v", "s1")
        await w.a.grow_volume(LOCAL, "v", 200)
        reverted = await w.a.revert_snapshot(LOCAL, "v", "s1")
        assert reverted.size_mb == 100  # as qcow2 applies an internal snapshot
        await w.a.define(VmSpec(uuid=VM, name="vm", vcpus=1, memory_mb=64, disks=[
            DiskSpec(size_mb=100, device="vda", path=vol.path)]))  # fmt: skip
        await w.a.start(VM)
        for op in (
            w.a.create_snapshot(LOCAL, "v", "s2"),
            w.a.revert_snapshot(LOCAL, "v", "s1"),
            w.a.delete_snapshot(LOCAL, "v", "s1"),
        ):
            with pytest.raises(DriverInvalidState, match="in use by running VM vm on a"):
                await op
        await w.a.stop(VM)
        assert (await w.a.create_snapshot(LOCAL, "v", "s2")).name == "s2"

    run(go())


# copies on an explicit clock


def test_copy_progress_partial_target_and_completion(tmp_path: Path) -> None:
    w = World(tmp_path, copy_rate=100.0)  # 1000 MiB: 10 s

    async def go() -> None:
        await w.a.create_volume(LOCAL, "src", 1000)
        w.write("a", LK, "src", b"payload")
        data = await w.a.checksum(LOCAL, "src")
        job = await w.a.copy_volume("c1", LOCAL, "src", LOCAL, "dst", target="b")
        assert (job.status, job.progress, job.kind) == (JobStatus.RUNNING, 0.0, "volume-copy")
        assert w.fabric.host("a").executed()[-1].command == "volume_copy"
        w.clock.now = T0 + 2.5
        job2 = await w.a.job("c1")
        assert job2 is not None and (job2.status, job2.progress) == (JobStatus.RUNNING, 0.25)
        # The target is there, partial, while the copy runs: listed, but not to be used.
        [partial] = w.storage.volumes("b", LK, w.clock.now)
        assert partial.partial is not None and partial.partial.command_id == "c1"
        assert [v.file for v in await w.b.list_volumes(LOCAL)] == ["dst"]
        with pytest.raises(DriverInvalidState):
            await w.b.checksum(LOCAL, "dst")
        with pytest.raises(DriverInvalidState):
            await w.b.delete_volume(LOCAL, "dst")
        with pytest.raises(DriverInvalidState):
            await w.b.create_volume(LOCAL, "dst", 1000)
        w.clock.now = T0 + 10.0
        # Whole from the moment the job completes, whoever reads first.
        assert await w.b.checksum(LOCAL, "dst") == data
        assert w.storage.raw("b", LK, "dst").partial is not None  # type: ignore[union-attr]
        done = await w.a.job("c1")
        assert done is not None and (done.status, done.progress) == (JobStatus.COMPLETED, 1.0)
        assert done.result["volume"] == {
            "file": "dst", "format": "qcow2", "size_mb": 1000, "allocated_mb": 1,
            "path": "sim://local/fast/dst",
        }  # fmt: skip
        assert w.storage.raw("b", LK, "dst").partial is None  # type: ignore[union-attr]

    run(go())


def test_a_copy_goes_on_without_its_driver(tmp_path: Path) -> None:
    w = World(tmp_path, copy_rate=100.0)

    async def go() -> None:
        await w.a.create_volume(SHARED, "src", 500)
        await w.a.copy_volume("c1", SHARED, "src", SHARED, "dst", target="a")
        await w.a.close()
        w.clock.now = T0 + 6.0  # past its 5 s
        again = w.driver("a")  # a restarted agent's driver
        job = await again.job("c1")
        assert job is not None and job.status == JobStatus.COMPLETED
        assert await w.b.volume(SHARED, "dst") is not None

    run(go())


def test_abort_removes_the_partial_target_and_a_crash_leaves_nothing_visible(
    tmp_path: Path,
) -> None:
    w = World(tmp_path, copy_rate=100.0)

    async def go() -> None:
        await w.a.create_volume(LOCAL, "src", 1000)
        await w.a.copy_volume("c1", LOCAL, "src", LOCAL, "dst", target="b")
        w.clock.now = T0 + 4.0
        aborted = await w.a.abort_job("c1", "operator")
        assert aborted is not None and (aborted.status, aborted.progress) == (
            JobStatus.ABORTED,
            0.4,
        )
        assert aborted.message == "operator"
        assert w.storage.raw("b", LK, "dst") is None
        # A crash between the abort's two writes: the job is aborted, the file still there.
        await w.a.copy_volume("c2", LOCAL, "src", LOCAL, "dst2", target="b")
        w.fabric.host("a").jobs.abort("c2", "crash", w.clock.now)
        assert w.storage.raw("b", LK, "dst2") is not None
        assert await w.b.volume(LOCAL, "dst2") is None  # no volume...
        # ... but a file the pool holds, listed as a copy's leftover for the reconciler.
        assert [(v.file, v.partial) for v in await w.b.list_volumes(LOCAL)] == [("dst2", True)]
        assert (await w.b.create_volume(LOCAL, "dst2", 10)).size_mb == 10  # replaces it
        # Copies are supervised: the cancel hooks abort them.
        await w.a.copy_volume("c3", LOCAL, "src", LOCAL, "dst3", target="a")
        assert await w.a.abort_jobs("lost the server") == ["c3"]
        assert await w.a.volume(LOCAL, "dst3") is None
        w.clock.now = T0 + 100.0
        assert (await w.a.job("c3")).status == JobStatus.ABORTED  # type: ignore[union-attr]

    run(go())


def test_copy_to_a_host_that_is_off_or_unknown_is_refused(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def go() -> None:
        await w.a.create_volume(LOCAL, "src", 10)
        w.fabric.host("b").power_off()
        with pytest.raises(DriverTemporary, match="b is powered off"):
            await w.a.copy_volume("c1", LOCAL, "src", LOCAL, "dst", target="b")
        with pytest.raises(DriverTemporary, match="does not exist"):
            await w.a.copy_volume("c2", LOCAL, "src", LOCAL, "dst", target="zz")
        assert await w.a.job("c1") is None and await w.a.job("c2") is None

    run(go())


# faults and the execution log


@pytest.mark.parametrize(
    ("command", "op"),
    [
        ("volume_create", lambda d: d.create_volume(LOCAL, "new", 10)),
        ("volume_delete", lambda d: d.delete_volume(LOCAL, "v")),
        ("volume_grow", lambda d: d.grow_volume(LOCAL, "v", 20)),
        ("snapshot_create", lambda d: d.create_snapshot(LOCAL, "v", "s")),
        ("volume_copy", lambda d: d.copy_volume("c9", LOCAL, "v", LOCAL, "w", target="a")),
        ("volume_attach", lambda d: d.attach_volume(VM, AttachSpec(device="vdb", path=PATH_V))),
    ],
)  # fmt: skip
def test_faults_fire_in_storage_operations(tmp_path: Path, command: str, op: Any) -> None:
    w = World(tmp_path)

    async def go() -> None:
        await w.a.create_volume(LOCAL, "v", 10)
        await w.a.define(VmSpec(uuid=VM, name="vm", vcpus=1, memory_mb=64))
        before = (await w.a.list_volumes(LOCAL), await w.a.disks(VM))
        w.fabric.host("a").faults.set(command, FaultMode.FAIL)
        with pytest.raises(DriverPermanent, match=f"injected fault: {command} fails on a"):
            await op(w.a)
        assert (await w.a.list_volumes(LOCAL), await w.a.disks(VM)) == before
        w.fabric.host("a").faults.set(command, FaultMode.HANG)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await op(w.a)
        assert w.fabric.host("a").faults.all() == []

    run(go())


def test_storage_operations_are_logged_with_their_command(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def go() -> None:
        token = current_command_id.set("cmd-7")
        try:
            await w.a.create_volume(LOCAL, "v", 10)
            await w.a.volume(LOCAL, "v")  # a read: not logged
            await w.a.delete_volume(LOCAL, "v")
        finally:
            current_command_id.reset(token)
        ops = [(op.command_id, op.command) for op in w.fabric.host("a").executed()]
        assert ops == [("cmd-7", "volume_create"), ("cmd-7", "volume_delete")]

    run(go())


# the disks of sim VMs


def test_define_records_local_disks_and_volumes(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def go() -> None:
        vol = await w.a.create_volume(SHARED, "data", 300)
        disks = [DiskSpec(size_mb=16), DiskSpec(size_mb=8),
                 DiskSpec(size_mb=300, device="vdd", path=vol.path, format="qcow2")]  # fmt: skip
        await w.a.define(VmSpec(uuid=VM, name="vm", vcpus=1, memory_mb=64, disks=disks))
        rec = w.fabric.host("a").get_vm(VM)
        assert rec is not None and rec.disks == [16, 8]  # local disks by index, as before
        assert rec.drives == [SimDisk(device="vdd", size_mb=300, path=vol.path)]
        shown = [(d.device, d.size_mb, d.path) for d in await w.a.disks(VM)]
        assert shown == [("vda", 16, ""), ("vdb", 8, ""), ("vdd", 300, vol.path)]
        await w.a.grow_volume(SHARED, "data", 400)  # a disk shows its volume's size
        assert (await w.a.disks(VM))[-1].size_mb == 400
        # Again with a local disk at vdc (its index) and one that names vde: both added.
        more = [*disks[:2], DiskSpec(size_mb=4), disks[2], DiskSpec(size_mb=2, device="vde")]
        await w.a.define(VmSpec(uuid=VM, name="vm", vcpus=1, memory_mb=64, disks=more))
        shown = [(d.device, d.size_mb, d.path) for d in await w.a.disks(VM)]
        assert shown == [("vda", 16, ""), ("vdb", 8, ""), ("vdc", 4, ""),
                         ("vdd", 400, vol.path), ("vde", 2, "")]  # fmt: skip
        two = [DiskSpec(size_mb=1), DiskSpec(size_mb=1, device="vda")]
        with pytest.raises(DriverPermanent, match="two disks at vda"):
            await w.a.define(VmSpec(uuid=VM, name="vm", vcpus=1, memory_mb=64, disks=two))
        await w.a.undefine(VM)
        assert await w.a.volume(SHARED, "data") is not None  # volumes stay

    run(go())


def test_a_vm_starts_only_with_its_volumes_there(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def go() -> None:
        path = volume_path(LK, "boot")
        disk = DiskSpec(size_mb=10, device="vda", path=path)
        await w.a.define(VmSpec(uuid=VM, name="vm", vcpus=1, memory_mb=64, disks=[disk]))
        with pytest.raises(DriverPermanent, match="its disk vda"):
            await w.a.start(VM)
        await w.b.define(VmSpec(uuid=VM, name="vm", vcpus=1, memory_mb=64))
        await w.b.start(VM)
        with pytest.raises(DriverNotFound, match="cannot hot-plug"):  # it needs the volume
            await w.b.attach_volume(VM, AttachSpec(device="vdb", path=path))
        await w.a.create_volume(LOCAL, "boot", 10)
        assert (await w.a.start(VM)).power == PowerState.RUNNING
        assert await w.b.disks(VM) == []

    run(go())


def test_attach_detach_refusals(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def go() -> None:
        await w.a.define(VmSpec(uuid=VM, name="vm", vcpus=1, memory_mb=64,
                                disks=[DiskSpec(size_mb=8)]))  # fmt: skip
        vol = await w.a.create_volume(LOCAL, "v", 10)
        with pytest.raises(DriverInvalidState, match="local disk at vda"):
            await w.a.attach_volume(VM, AttachSpec(device="vda", path=vol.path))
        with pytest.raises(DriverInvalidState, match="local disk at vda"):
            await w.a.detach_volume(VM, "vda")
        # A stopped VM takes a volume that is not there (yet): only starting needs it.
        await w.a.attach_volume(VM, AttachSpec(device="vdc", path=volume_path(LK, "later")))
        assert [d.device for d in await w.a.disks(VM)] == ["vda", "vdc"]
        with pytest.raises(DriverNotFound):
            await w.a.resize_attached(VM, "vdb", 20)
        with pytest.raises(DriverNotFound):
            await w.a.resize_attached(VM, "vda", 20)  # a local disk, not a volume

    run(go())


# migrations carry the volumes of local pools


def test_live_migration_moves_local_volumes_and_leaves_shared_ones(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def go() -> None:
        local = await w.a.create_volume(LOCAL, "boot", 100)
        shared = await w.a.create_volume(SHARED, "data", 100)
        w.write("a", LK, "boot", b"os")
        w.write("a", SK, "data", b"db")
        await w.a.create_snapshot(LOCAL, "boot", "before")
        sums = (await w.a.checksum(LOCAL, "boot"), await w.a.checksum(SHARED, "data"))
        disks = [
            DiskSpec(size_mb=100, device="vda", path=local.path),
            DiskSpec(size_mb=100, device="vdb", path=shared.path),
            DiskSpec(size_mb=5),
        ]
        spec = VmSpec(uuid=VM, name="vm", vcpus=1, memory_mb=1024, epoch=1, disks=disks)
        await w.a.define(spec)
        await w.a.start(VM)
        job = await w.a.migrate("m1", VM, "b", live=True, new_epoch=2)
        w.clock.now = T0 + 10.0  # past its 0.5 s
        done = await w.a.job(job.command_id)
        assert done is not None and done.status == JobStatus.COMPLETED, done
        assert await w.a.volume(LOCAL, "boot") is None
        assert await w.b.checksum(LOCAL, "boot") == sums[0]
        assert [s.name for s in await w.b.list_snapshots(LOCAL, "boot")] == ["before"]
        assert await w.b.checksum(SHARED, "data") == sums[1]
        shown = [(d.device, d.path) for d in await w.b.disks(VM)]
        assert shown == [("vda", local.path), ("vdb", shared.path), ("vdc", "")]
        await w.b.stop(VM)
        assert (await w.b.start(VM)).power == PowerState.RUNNING  # its volumes are there

    run(go())


def test_migration_phases_move_local_volumes(tmp_path: Path) -> None:
    """At the switchover the target has the VM's local volumes; the source keeps its own
    copies until the cleanup; a rolled-back migration leaves the target without them."""
    fabric = Fabric(tmp_path)
    storage = SimStorage(fabric)
    for node in ("a", "b"):
        fabric.host(node).ensure_host(8, 8192)
    storage.create("a", LK, "boot", 10, "qcow2", T0)
    drives = [SimDisk(device="vda", size_mb=10, path=volume_path(LK, "boot"))]
    fabric.host("a").put_vm(SimVm(uuid=VM, name="vm", vcpus=1, memory_mb=64,
                                  power=PowerState.RUNNING, epoch=1, drives=drives))  # fmt: skip
    migrations = Migrations(fabric)

    def start(cid: str, **kw: Any) -> None:
        req = MigrationRequest(command_id=cid, uuid=VM, source="a", target="b", live=True,
                               new_epoch=kw.get("epoch", 2), duration=10.0)  # fmt: skip
        migrations.start(req, T0)

    def where(t: float) -> tuple[bool, bool]:
        migrations.settle(T0 + t)
        return (storage.get("a", LK, "boot", T0 + t) is not None,
                storage.get("b", LK, "boot", T0 + t) is not None)  # fmt: skip

    start("m1")
    assert where(8.9) == (True, False)
    fabric.host("a").jobs.abort("m1", "test", T0 + 8.9)
    assert where(9.0) == (True, False)  # rolled back: nothing on the target
    start("m2")
    assert where(8.9) == (True, False)
    assert where(9.0) == (True, True)  # switchover: the VM runs on b with its volume
    assert where(10.0) == (False, True)  # cleanup: the source's copy is gone
    job = fabric.host("a").jobs.get("m2")
    assert job is not None and job.state(T0 + 10) == JobState.COMPLETED


def test_migration_is_refused_when_the_target_has_the_volume(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def go() -> None:
        vol = await w.a.create_volume(LOCAL, "boot", 10)
        await w.b.create_volume(LOCAL, "boot", 10)
        disk = DiskSpec(size_mb=10, device="vda", path=vol.path)
        await w.a.define(VmSpec(uuid=VM, name="vm", vcpus=1, memory_mb=64, epoch=1,
                                disks=[disk]))  # fmt: skip
        with pytest.raises(DriverInvalidState, match="already has volumes of VM"):
            await w.a.migrate("m1", VM, "b", live=False, new_epoch=2)
        assert await w.a.job("m1") is None

    run(go())


# the fabric's refusals


def test_fabric_refusals_have_codes(tmp_path: Path) -> None:
    storage = SimStorage(Fabric(tmp_path))
    with pytest.raises(StorageRefused) as missing:
        storage.grow("a", LK, "none", 10, T0)
    assert missing.value.code == "not-found"
    storage.create("a", LK, "v", 10, "raw", T0)
    with pytest.raises(StorageRefused) as raw:
        storage.create_snapshot("a", LK, "v", "s", T0)
    assert raw.value.code == "invalid-state"
    with pytest.raises(ValueError):
        storage.create("a", LK, "../escape", 10, "raw", T0)
    with pytest.raises(ValueError):
        PoolKey("Bad Name", "local")


# the memory driver records disks with devices and paths


def test_memory_driver_records_volume_disks() -> None:
    d = MemoryDriver(MemoryFabric(), "n1")

    async def go() -> None:
        disks = [DiskSpec(size_mb=16), DiskSpec(size_mb=10, device="vdc", path="/pool/v1")]
        await d.define(VmSpec(uuid=VM, name="vm", vcpus=1, memory_mb=64, disks=disks))
        shown = [(x.device, x.size_mb, x.path) for x in await d.disks(VM)]
        assert shown == [("vda", 16, ""), ("vdc", 10, "/pool/v1")]
        more = [*disks, DiskSpec(size_mb=4, device="vdb")]
        await d.define(VmSpec(uuid=VM, name="vm", vcpus=1, memory_mb=64, disks=more))
        shown = [(x.device, x.size_mb, x.path) for x in await d.disks(VM)]
        assert shown == [("vda", 16, ""), ("vdb", 4, ""), ("vdc", 10, "/pool/v1")]
        two = [DiskSpec(size_mb=1), DiskSpec(size_mb=1, device="vda")]
        with pytest.raises(DriverPermanent, match="two disks at vda"):
            await d.define(VmSpec(uuid=VM, name="vm", vcpus=1, memory_mb=64, disks=two))

    run(go())


# bollard sim volume


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(sim_app, name="sim")
    return app


def test_sim_volume_cli(app: typer.Typer, tmp_path: Path) -> None:
    w = World(tmp_path)
    w.storage.create("a", LK, "v1", 10, "qcow2", T0)
    w.storage.create("b", LK, "v2", 20, "raw", T0)
    w.storage.create("a", SK, "v3", 30, "qcow2", T0)
    fab = ["--fabric-dir", str(tmp_path)]

    def invoke(*args: str) -> Any:
        result = CliRunner().invoke(app, ["sim", "volume", *args, *fab])
        return result

    listed = invoke("list", "-o", "json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(r["node"], r["pool"], r["file"], r["checksum"]) for r in rows] == [
        ("a", "fast", "v1", EMPTY_CHECKSUM),
        ("b", "fast", "v2", EMPTY_CHECKSUM),
        (None, "nfs", "v3", EMPTY_CHECKSUM),
    ]
    only_a = json.loads(invoke("list", "--node", "a", "-o", "json").stdout)
    assert [r["file"] for r in only_a] == ["v1"]
    only_shared = json.loads(invoke("list", "--shared", "-o", "json").stdout)
    assert [r["file"] for r in only_shared] == ["v3"]

    wrote = invoke("write", "fast", "v1", "--node", "a", "--data", "hello", "-o", "json")
    assert wrote.exit_code == 0, wrote.output
    expected = hashlib.sha256(bytes.fromhex(EMPTY_CHECKSUM) + b"hello").hexdigest()
    assert json.loads(wrote.stdout)["checksum"] == expected
    wrote = invoke("write", "nfs", "v3", "--random-mb", "2")
    assert wrote.exit_code == 0 and "behind Bollard's back" in wrote.stdout, wrote.output
    shown = json.loads(invoke("show", "nfs", "v3", "-o", "json").stdout)
    assert shown["allocated_mb"] == 2 and shown["checksum"] != EMPTY_CHECKSUM
    assert shown["path"] == "sim://shared/nfs/v3" and shown["partial"] is None

    for args, says in [
        (("show", "fast", "v9", "--node", "a"), "no volume v9 in local pool fast on a"),
        (("show", "fast", "v1", "--node", "zz"), "no sim host 'zz'"),
        (("write", "nfs", "v3"), "give --data TEXT or --random-mb N"),
        (("list", "--node", "a", "--shared"), "give --node or --shared, not both"),
    ]:
        failed = invoke(*args)
        assert failed.exit_code == 1, (args, failed.output)
        assert says in failed.stderr, (args, failed.stderr)
