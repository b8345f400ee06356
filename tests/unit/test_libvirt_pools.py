"""The libvirt driver's pools and volumes without real daemons: Bollard's pools as libvirt
pools (names, uuids, kinds), where a domain's disks are for a migration, the qcow2 snapshot
table, qemu-img's progress and errors, the disk XML of volumes; and the StorageDriver on
libvirt's test driver (``test:///<node file>``, in memory). What needs qemu-img and real
files (snapshots, checksums, copies, hot-plug) is tested on real daemons
(tests/contract/test_storage_contract.py, tests/libvirt/test_libvirt_volumes.py)."""

from __future__ import annotations

import asyncio
import mmap
import os
import shutil
import struct
import subprocess
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bollard.agent.drivers.base import JobStatus
from bollard.agent.drivers.libvirt import host_tools as T
from bollard.agent.drivers.libvirt import migrate_plan as P
from bollard.agent.drivers.libvirt import pools
from bollard.agent.drivers.libvirt import qcow2 as Q
from bollard.agent.drivers.libvirt.jobs import CopyPlan, JobRecord, PoolDef, partial_targets
from bollard.agent.drivers.libvirt.storage import Storage, owned_disks, volume_xml
from bollard.agent.drivers.libvirt.xml import (
    DomainDisk,
    DomainFacts,
    DomainSpec,
    HostSettings,
    disk_xml,
    domain_xml,
    parse_domain,
)
from bollard.agent.drivers.storage import PoolRef
from bollard.domain.errors import DriverError, DriverInvalidState, DriverPermanent

R = TypeVar("R")

UUID = "11111111-1111-4111-8111-111111111111"
LEGACY = Storage("/var/lib/libvirt/images/bollard")


def run(coro: Coroutine[Any, Any, R]) -> R:
    async def bounded() -> R:
        async with asyncio.timeout(10):
            return await coro

    return asyncio.run(bounded())


# pools


def test_the_legacy_pool_and_the_others() -> None:
    assert pools.storage_of(PoolRef(name="local", type="local"), LEGACY) is LEGACY
    same_dir = PoolRef(name="old", type="local", path=LEGACY.image_dir)
    assert pools.storage_of(same_dir, LEGACY) is LEGACY
    fast = pools.storage_of(PoolRef(name="fast", type="local", path="/srv/fast/"), LEGACY)
    assert (fast.pool, fast.image_dir, fast.shared) == ("bollard-fast", "/srv/fast", False)
    nfs = pools.storage_of(PoolRef(name="nfs", type="shared", path="/mnt/nfs"), LEGACY)
    assert (nfs.pool, nfs.shared) == ("bollard-nfs", True)
    assert fast.uuid == pools.pool_uuid("local", "fast", "/srv/fast")
    assert nfs.uuid not in (None, fast.uuid)
    # The uuid says the pool's kind, and changes with its path.
    assert pools.pool_uuid("shared", "fast", "/srv/fast") != fast.uuid
    assert pools.pool_uuid("local", "fast", "/srv/other") != fast.uuid
    for bad in (PoolRef(name="s", type="shared"), PoolRef(name="s", type="shared",
                                                          path=LEGACY.image_dir)):  # fmt: skip
        with pytest.raises(DriverPermanent, match="shared pool s"):
            pools.storage_of(bad, LEGACY)


def test_which_libvirt_pools_are_bollards() -> None:
    fast = pools.storage_of(PoolRef(name="fast", type="local", path="/srv/fast"), LEGACY)
    nfs = pools.storage_of(PoolRef(name="nfs", type="shared", path="/mnt/nfs"), LEGACY)
    for storage in (fast, nfs):
        assert storage.uuid is not None
        assert pools.kind_of(storage.pool, storage.uuid, storage.image_dir, LEGACY) == storage
    assert pools.kind_of("bollard", "x", LEGACY.image_dir, LEGACY) == LEGACY
    assert pools.kind_of("bollard", "x", "/elsewhere", LEGACY) is None
    assert fast.uuid is not None
    assert pools.kind_of("bollard-fast", fast.uuid, "/srv/moved", LEGACY) is None
    assert pools.kind_of("default", fast.uuid, "/srv/fast", LEGACY) is None


class FakePool:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def name(self) -> str:
        return self.storage.pool

    def UUIDString(self) -> str:
        return self.storage.uuid or "00000000-0000-4000-8000-000000000000"

    def XMLDesc(self, _flags: int) -> str:
        return f"<pool><target><path>{self.storage.image_dir}</path></target></pool>"


class FakeConn:
    def __init__(self, *storages: Storage) -> None:
        self.pools = [FakePool(s) for s in storages]

    def listAllStoragePools(self, _flags: int) -> list[FakePool]:
        return self.pools


def test_a_migration_copies_disks_of_local_pools_and_leaves_those_of_shared_ones() -> None:
    fast = pools.storage_of(PoolRef(name="fast", type="local", path="/srv/fast"), LEGACY)
    nfs = pools.storage_of(PoolRef(name="nfs", type="shared", path="/mnt/nfs"), LEGACY)
    conn = FakeConn(LEGACY, fast, nfs, Storage("/srv/other", "default"))
    disks = [
        DomainDisk(path=f"{LEGACY.image_dir}/{UUID}-vda.qcow2", target="vda"),
        DomainDisk(path="/srv/fast/vol-1.qcow2", target="vdb", volume=True),
        DomainDisk(path="/mnt/nfs/vol-2.qcow2", target="vdc", volume=True),
        DomainDisk(path="/srv/other/x.qcow2", target="vdd"),  # not Bollard's: neither
        DomainDisk(path="/srv/fast/iso.raw", target="vde", readonly=True),
    ]
    placed = pools.placement(conn, disks, LEGACY)
    assert [(d.target, s.pool) for d, s in placed.copied] == [
        ("vda", "bollard"), ("vdb", "bollard-fast"),
    ]  # fmt: skip
    assert [(d.target, s.pool) for d, s in placed.shared] == [("vdc", "bollard-nfs")]
    params, flags = P.migration_call(True, _definition(), 2, None, None, ["vda", "vdb"],
                                     unsafe=True)  # fmt: skip
    assert flags & P.MIGRATE_UNSAFE and flags & P.MIGRATE_NON_SHARED_DISK
    assert params[P.PARAM_MIGRATE_DISKS] == ["vda", "vdb"]
    _, plain = P.migration_call(True, _definition(), 2, None, None, ["vda"])
    assert not plain & P.MIGRATE_UNSAFE


def _definition() -> str:
    return domain_xml(DomainSpec(UUID, "w", 1, 64), HostSettings(Path("/c")))


# disks of VMs


def test_volumes_are_marked_in_the_domain_xml_and_not_owned_by_the_vm() -> None:
    legacy = DomainDisk(path=f"{LEGACY.image_dir}/{UUID}-vda.qcow2", target="vda")
    volume = DomainDisk(path=f"{LEGACY.image_dir}/{UUID}-vdb.qcow2", target="vdb", volume=True)
    raw = DomainDisk(path="/srv/fast/vol-1.raw", target="vdc", format="raw", volume=True)
    xml = domain_xml(DomainSpec(UUID, "w", 1, 64, disks=(legacy, volume, raw)),
                     HostSettings(Path("/c")))  # fmt: skip
    facts = parse_domain(xml)
    assert facts.disks == [legacy, volume, raw]
    assert 'alias name="ua-bollard-vol-vdb"' in disk_xml(volume)
    assert "alias" not in disk_xml(legacy)
    # Only the VM's own legacy disk goes with it (a volume named like one stays).
    assert owned_disks(facts, LEGACY) == [legacy.path]
    other_vm = DomainFacts(uuid="22222222-2222-4222-8222-222222222222", vcpus=1, memory_mb=64,
                           meta=None, disks=[legacy])  # fmt: skip
    assert owned_disks(other_vm, LEGACY) == []


def test_new_qcow2_volumes_are_version_3() -> None:
    assert "<compat>1.1</compat>" in volume_xml("v.qcow2", 16)
    raw = volume_xml("v.raw", 16, "raw")
    assert "compat" not in raw and '<format type="raw"' in raw


def test_copy_records_round_trip(tmp_path: Path) -> None:
    plan = CopyPlan(
        source_pool=PoolDef(name="bollard", dir="/var/lib/libvirt/images/bollard"),
        source_file="vol-a.qcow2", source_format="qcow2",
        target_pool=PoolDef(name="bollard-nfs", dir="/mnt/nfs", uuid=UUID, shared=True),
        target_file="vol-b.raw", target_format="raw", here=True,
    )  # fmt: skip
    record = JobRecord(command_id="c1", kind="volume-copy", source="a", target="a",
                       copy_plan=plan, started_at=1.0)  # fmt: skip
    again = JobRecord.model_validate_json(record.model_dump_json())
    assert again.copy_plan == plan and again.vm_uuid == "" and again.disks is None
    # While it runs, its target is a partial file of its pool (and only then, only there).
    assert partial_targets([record], "/mnt/nfs") == {"vol-b.raw"}
    assert partial_targets([record], "/srv/other") == set()
    ended = record.model_copy(update={"status": JobStatus.COMPLETED})
    streamed = record.model_copy(update={"copy_plan": plan.model_copy(update={"here": False})})
    assert partial_targets([ended, streamed], "/mnt/nfs") == set()


# qcow2 snapshot tables


def _entry(ident: str, name: str, sec: int, disk_size: int | None) -> bytes:
    extra = b"" if disk_size is None else struct.pack(">QQQ", 0, disk_size, 0)
    fixed = struct.pack(">QIHHIIQII", 0, 0, len(ident), len(name), sec, 500_000_000, 0, 0,
                        len(extra))  # fmt: skip
    raw = fixed + extra + ident.encode() + name.encode()
    return raw + b"\0" * (-len(raw) % 8)


def test_the_snapshot_table_is_read() -> None:
    header = bytearray(Q.HEADER_BYTES)
    header[:4] = Q.MAGIC
    struct.pack_into(">IQ", header, 60, 2, 4096)
    assert Q.table_location(bytes(header)) == Q.TableLocation(2, 4096)
    table = _entry("1", "snap-1", 100, 16 << 20) + _entry("2", "snap-two", 200, None)
    snaps = Q.parse_table(table, 2)
    assert snaps == [
        Q.Snapshot("1", "snap-1", 100.5, 16 << 20), Q.Snapshot("2", "snap-two", 200.5, None),
    ]  # fmt: skip
    assert Q.parse_table(table[:-8], 2) is None  # (read more)
    with pytest.raises(Q.Qcow2Error):
        Q.table_location(b"\0" * Q.HEADER_BYTES)


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")
def test_the_snapshot_table_of_a_real_image(tmp_path: Path) -> None:
    image = tmp_path / "a.qcow2"

    def qemu_img(*args: str) -> None:
        subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=60)

    qemu_img("create", "-f", "qcow2", "-o", "compat=1.1", str(image), "16M")
    qemu_img("snapshot", "-c", "before", str(image))
    qemu_img("resize", str(image), "32M")
    qemu_img("snapshot", "-c", "after", str(image))
    data = image.read_bytes()
    where = Q.table_location(data[: Q.HEADER_BYTES])
    snaps = Q.parse_table(data[where.offset :], where.count)
    assert snaps is not None
    assert [(s.name, s.disk_size) for s in snaps] == [("before", 16 << 20), ("after", 32 << 20)]


# tools


def test_qemu_img_progress_and_errors() -> None:
    assert T.progress_of(b"    (0.00/100%)\r    (12.50/100%)\r") == 0.125
    assert T.progress_of(b"") is None
    locked = "qemu-img: Could not open 'x': Failed to get \"write\" lock\nIs another process..."
    assert isinstance(T.tool_error("take snapshot s", 1, locked), DriverInvalidState)
    other = T.tool_error("copy x", 1, "qemu-img: Could not open 'x': No such file\n")
    assert isinstance(other, DriverPermanent) and "No such file" in other.message


def test_tools_run_with_a_deadline_and_a_prefix() -> None:
    tools = T.HostTools(["env", "BOLLARD_TEST=1"], timeout=5)
    assert run(tools.run("print", ["sh", "-c", "echo $BOLLARD_TEST"])) == "1\n"
    with pytest.raises(DriverPermanent, match="boom"):
        run(tools.run("fail", ["sh", "-c", "echo boom >&2; exit 3"]))
    started = asyncio.run(_timed(tools))
    assert started < 3.0


def _direct_io_works(directory: Path) -> bool:
    """The oracle: can this process write a file of ``directory`` with O_DIRECT?"""
    probe = directory / "oracle"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError:
        return False
    try:
        buf = mmap.mmap(-1, 4096)  # (page-aligned, as O_DIRECT wants)
        os.write(fd, buf)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        probe.unlink()


def test_copies_write_with_o_direct_where_the_directory_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy's target is flushed at its end (never qemu-img's default cache=unsafe): with
    O_DIRECT (-t none) where the file system can, else -t writeback."""
    tools = T.HostTools()
    expected = "none" if _direct_io_works(tmp_path) else "writeback"
    assert tools.copy_cache_mode(str(tmp_path)) == expected
    assert list(tmp_path.iterdir()) == []  # the probe's file is gone
    assert tools.copy_cache_mode(str(tmp_path / "no such dir")) == "writeback"

    def no_more(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("probed twice")

    monkeypatch.setattr(T.subprocess, "run", no_more)
    assert tools.copy_cache_mode(str(tmp_path)) == expected  # probed once per directory


async def _timed(tools: T.HostTools) -> float:
    loop = asyncio.get_running_loop()
    began = loop.time()
    from bollard.domain.errors import DriverTemporary

    with pytest.raises(DriverTemporary, match=r"no answer within 0\.2s"):
        await tools.run("hang", ["sleep", "30"], timeout=0.2)
    return loop.time() - began


# the StorageDriver on libvirt's test driver


def _test_driver(tmp_path: Path) -> Any:
    pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    from bollard.agent.drivers.libvirt import LibvirtDriver
    from tests.unit.test_libvirt_storage import fresh_host

    return LibvirtDriver(fresh_host(tmp_path), "qemu", tmp_path / "c", image_dir="/images/b")


def test_volumes_of_a_pool(tmp_path: Path) -> None:
    d = _test_driver(tmp_path)
    fast = PoolRef(name="fast", type="local", path="/srv/fast")

    async def go() -> None:
        assert (await d.pool_stats(fast)).capacity_mb > 0
        made = await d.create_volume(fast, "vol-b.qcow2", 16)
        assert (made.file, made.format, made.size_mb, made.path) == (
            "vol-b.qcow2", "qcow2", 16, "/srv/fast/vol-b.qcow2",
        )  # fmt: skip
        assert await d.create_volume(fast, "vol-b.qcow2", 16) == made
        with pytest.raises(DriverInvalidState, match="not raw of 16 MiB"):
            await d.create_volume(fast, "vol-b.qcow2", 16, "raw")
        await d.create_volume(fast, "vol-a.raw", 8, "raw")
        assert [v.file for v in await d.list_volumes(fast)] == ["vol-a.raw", "vol-b.qcow2"]
        # The legacy pool: path "" is the driver's image directory.
        legacy = await d.create_volume(PoolRef(name="local", type="local"), "vol-c.qcow2", 4)
        assert legacy.path == "/images/b/vol-c.qcow2"
        assert await d.delete_volume(fast, "vol-b.qcow2") is True
        assert await d.delete_volume(fast, "vol-b.qcow2") is False
        assert await d.volume(fast, "vol-b.qcow2") is None
        with pytest.raises(DriverError, match="not a valid volume file name") as bad:
            await d.volume(fast, "../etc/passwd")
        assert bad.value.code == "invalid-input"
        # The pool made again elsewhere: libvirt's definition follows it.
        moved = PoolRef(name="fast", type="local", path="/srv/fast2")
        assert await d.list_volumes(moved) == []
        assert (await d.create_volume(moved, "vol-d", 4)).path == "/srv/fast2/vol-d"
        await d.close()

    run(go())


def test_a_vm_keeps_the_volumes_of_pools_and_takes_its_legacy_disks_along(
    tmp_path: Path,
) -> None:
    from bollard.agent.drivers.base import DiskSpec, VmSpec

    d = _test_driver(tmp_path)
    fast = PoolRef(name="fast", type="local", path="/srv/fast")

    def names(conn: Any, pool: str) -> list[str]:
        p = conn.storagePoolLookupByName(pool)
        p.refresh(0)
        return sorted(p.listVolumes())

    async def go() -> None:
        vol = await d.create_volume(fast, "vol-1.qcow2", 16)
        spec = VmSpec(uuid=UUID, name="w", vcpus=1, memory_mb=64, disks=[
            DiskSpec(size_mb=8),  # legacy: vda
            DiskSpec(size_mb=16, device="vdc", path=vol.path),
        ])  # fmt: skip
        await d.define(spec)
        disks = [(x.device, x.size_mb, x.path) for x in await d.disks(UUID)]
        assert disks == [("vda", 8, f"/images/b/{UUID}-vda.qcow2"), ("vdc", 16, vol.path)]
        with pytest.raises(DriverPermanent, match="two disks at one device"):
            await d.define(spec.model_copy(update={"disks": [*spec.disks, DiskSpec(
                size_mb=1, device="vda", path="/srv/fast/x")]}))  # fmt: skip
        await d.undefine(UUID)
        assert await d._call("list", lambda c: names(c, "bollard")) == []
        assert await d._call("list", lambda c: names(c, "bollard-fast")) == ["vol-1.qcow2"]
        await d.close()

    run(go())
