"""The libvirt driver's volumes on real daemons, beyond the storage contract suite
(tests/contract/test_storage_contract.py): migrations of VMs whose disks are volumes of a
local pool (copied) and of a shared pool (left where they are), copies between hosts that
convert first (a snapshot, another format, a volume with snapshots), volumes a running VM
has open, copies whose agent dies, what ``undefine`` leaves, and live moves of a running
VM's disk (the guest's writes during the move, an agent that dies mid-move).

The pools are those of tests/support/libvirt_storage.py: the local pool at a path under
/var/lib/libvirt (each daemon's own directory), the shared pool in the test's tmp_path.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid as uuidlib
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from bollard.agent.drivers.base import DiskSpec, JobStatus, VmSpec
from bollard.agent.drivers.libvirt import LibvirtDriver
from bollard.agent.drivers.libvirt.domains import XML_INACTIVE
from bollard.agent.drivers.libvirt.live_move import BLOCK_JOB_ABORT_PIVOT
from bollard.agent.drivers.libvirt.xml import parse_domain
from bollard.agent.drivers.storage import PoolRef
from bollard.domain.errors import DriverInvalidState, DriverTemporary
from bollard.domain.states import PowerState
from tests.libvirt.driver_pair import Hosts, migrated, run, run_closing, until_counting
from tests.support.libvirt_env import (
    Guest,
    LibvirtHost,
    raw_copy,
    remove_bollard_domains,
    same_disk_data,
    write_pattern,
)
from tests.support.libvirt_storage import (
    LOCAL_ROOT,
    drop_pools,
    seen_here,
    tool_prefix,
    write_into,
)

pytestmark = pytest.mark.libvirt

UUID = "44444444-4444-4444-8444-444444444444"
MIB = 1024 * 1024


class Env(Hosts):
    """The two hosts, a local and a shared pool of the test's own, drivers that see them."""

    def __init__(self, hosts: list[LibvirtHost], guest: Guest, tmp_path: Path) -> None:
        super().__init__(hosts, guest, tmp_path)
        self.id = uuidlib.uuid4().hex[:10]
        self.local = PoolRef(
            name=f"v{self.id}-local", type="local", path=f"{LOCAL_ROOT}/{self.id}/local"
        )
        (tmp_path / "shared").mkdir()
        self.shared = PoolRef(
            name=f"v{self.id}-shared", type="shared", path=str(tmp_path / "shared")
        )

    def driver(self, host: LibvirtHost, **kw: Any) -> LibvirtDriver:
        return super().driver(host, tool_prefix=tool_prefix(host), **kw)

    def file(self, host: LibvirtHost, pool: PoolRef, name: str) -> Path:
        return seen_here(host, pool, name)

    def clean_up(self) -> None:
        for host in (self.a, self.b):
            remove_bollard_domains(host)
            drop_pools(host, ["bollard-" + self.local.name, "bollard-" + self.shared.name])
            subprocess.run(["rm", "-rf", str(host.dir / "lib" / "bollard-test" / self.id)])


@pytest.fixture
def env(libvirt_hosts: list[LibvirtHost], guest: Guest, tmp_path: Path) -> Iterator[Env]:
    e = Env(libvirt_hosts, guest, tmp_path)
    for host in (e.a, e.b):
        remove_bollard_domains(host)
    yield e
    e.clean_up()


def vm(*disks: DiskSpec) -> VmSpec:
    return VmSpec(uuid=UUID, name="volumes", vcpus=1, memory_mb=128, epoch=1, disks=list(disks))


@pytest.mark.parametrize("live", [True, False], ids=["live", "offline"])
def test_a_migration_copies_volumes_of_local_pools_and_leaves_shared_ones(
    env: Env, live: bool
) -> None:
    a, b = env.driver(env.a), env.driver(env.b)

    async def go() -> None:
        here = await a.create_volume(env.local, "vol-l.qcow2", 16)
        there = await a.create_volume(env.shared, "vol-s.qcow2", 16)
        write_into(env.file(env.a, env.local, "vol-l.qcow2"), b"local data")
        write_into(env.file(env.a, env.shared, "vol-s.qcow2"), b"shared data")
        local_data = await a.checksum(env.local, "vol-l.qcow2")
        shared_file = env.file(env.a, env.shared, "vol-s.qcow2")
        inode = shared_file.stat().st_ino
        await a.define(vm(
            DiskSpec(size_mb=16, device="vda", path=here.path),
            DiskSpec(size_mb=16, device="vdb", path=there.path),
        ))  # fmt: skip
        counted = -1
        if live:
            await a.start(UUID)
            counted = await until_counting(env.console(UUID))
        await migrated(env, a, b, f"mig-{live}", UUID, live=live)
        (moved,) = await b.list_vms()
        assert moved.power == (PowerState.RUNNING if live else PowerState.STOPPED)
        assert [(d.device, d.path) for d in await b.disks(UUID)] == [
            ("vda", here.path), ("vdb", there.path),
        ]  # fmt: skip
        # The local volume moved (data and all); the shared one is the same file.
        assert await b.checksum(env.local, "vol-l.qcow2") == local_data
        assert await a.volume(env.local, "vol-l.qcow2") is None
        assert shared_file.stat().st_ino == inode
        assert [v.file for v in await b.list_volumes(env.shared)] == ["vol-s.qcow2"]
        if live:
            assert await until_counting(env.console(UUID), counted) > counted
        # Undefining leaves the volumes (the server deletes them).
        await b.undefine(UUID, force=True)
        assert await b.volume(env.local, "vol-l.qcow2") is not None
        assert await b.volume(env.shared, "vol-s.qcow2") is not None

    run_closing(go(), a, b)


async def _ended(d: LibvirtDriver, command_id: str) -> Any:
    while True:
        job = await d.job(command_id)
        assert job is not None
        if job.status != JobStatus.RUNNING:
            return job
        await asyncio.sleep(0.1)


def test_copies_to_another_host_that_convert_first(env: Env) -> None:
    a, b = env.driver(env.a), env.driver(env.b)
    pool, endpoint = env.local, b.migration_endpoint()

    async def copy(cid: str, target_file: str, **kw: Any) -> Any:
        await a.copy_volume(cid, pool, "vol-a", pool, target_file, target="b",
                            target_endpoint=endpoint, **kw)  # fmt: skip
        done = await _ended(a, cid)
        assert done.status == JobStatus.COMPLETED, done
        return done

    async def go() -> None:
        await a.create_volume(pool, "vol-a", 16)
        write_into(env.file(env.a, pool, "vol-a"), b"before")
        before = await a.checksum(pool, "vol-a")
        await a.create_snapshot(pool, "vol-a", "snap-1")
        await a.grow_volume(pool, "vol-a", 32)  # (qcow2 version 3: with its snapshot)
        write_into(env.file(env.a, pool, "vol-a"), b"after")
        after = await a.checksum(pool, "vol-a")
        # A snapshot taken at 16 MiB, as raw: the copy is the snapshot as it was.
        done = await copy("c-snap", "vol-then.raw", snapshot="snap-1", fmt="raw")
        assert done.result["volume"]["size_mb"] == 16
        then = await b.volume(pool, "vol-then.raw")
        assert then is not None and (then.format, then.size_mb) == ("raw", 16)
        assert await b.checksum(pool, "vol-then.raw") == before
        # The whole volume: its data, without its snapshots.
        await copy("c-all", "vol-now")
        assert await b.checksum(pool, "vol-now") == after
        assert await b.list_snapshots(pool, "vol-now") == []
        assert [s.name for s in await a.list_snapshots(pool, "vol-a")] == ["snap-1"]
        # No scratch file is left in the source's pool.
        assert sorted(os.listdir(env.file(env.a, pool, ""))) == ["vol-a"]

    run_closing(go(), a, b)


def test_a_volume_a_running_vm_has_open(env: Env) -> None:
    a = env.driver(env.a)
    pool = env.local

    async def go() -> None:
        vol = await a.create_volume(pool, "vol-a", 16)
        await a.create_snapshot(pool, "vol-a", "snap-0")
        await a.define(vm(DiskSpec(size_mb=16, device="vdb", path=vol.path)))
        await a.start(UUID)
        for refused in (
            a.create_snapshot(pool, "vol-a", "snap-1"),
            a.revert_snapshot(pool, "vol-a", "snap-0"),
            a.grow_volume(pool, "vol-a", 32),
            a.copy_volume("c-whole", pool, "vol-a", pool, "vol-b", target="a"),
        ):
            with pytest.raises(DriverInvalidState, match="in use"):
                await refused
        assert await a.job("c-whole") is None
        assert await a.volume(pool, "vol-b") is None
        # What does not change while it runs can be read: its checksum, a snapshot.
        assert len(await a.checksum(pool, "vol-a")) == 64
        await a.copy_volume("c-snap", pool, "vol-a", pool, "vol-b", target="a",
                            snapshot="snap-0")  # fmt: skip
        assert (await _ended(a, "c-snap")).status == JobStatus.COMPLETED
        # Growing it goes through the VM.
        await a.resize_attached(UUID, "vdb", 32)
        assert [(d.device, d.size_mb) for d in await a.disks(UUID)] == [("vdb", 32)]
        with pytest.raises(DriverInvalidState, match="cannot shrink"):
            await a.resize_attached(UUID, "vdb", 16)

    run_closing(go(), a)


def test_the_target_of_a_copy_under_way_is_listed_partial(env: Env) -> None:
    a, slow = env.driver(env.a), env.driver(env.a, copy_bandwidth_mib=1)
    pool = env.local

    async def go() -> None:
        await a.create_volume(pool, "vol-big", 64)
        subprocess.run(
            ["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 64M",
             str(env.file(env.a, pool, "vol-big"))],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        job = await slow.copy_volume("c-part", pool, "vol-big", pool, "vol-copy", target="a")
        assert job.status == JobStatus.RUNNING
        while (copy := await a.volume(pool, "vol-copy")) is None:
            await asyncio.sleep(0.05)  # (qemu-img makes it first thing)
        assert copy.partial
        listed = {v.file: v.partial for v in await a.list_volumes(pool)}
        assert listed == {"vol-big": False, "vol-copy": True}
        aborted = await slow.abort_job("c-part", "test")
        assert aborted is not None and aborted.status == JobStatus.ABORTED
        assert [v.file for v in await a.list_volumes(pool)] == ["vol-big"]

    run_closing(go(), a, slow)


def test_undefine_takes_legacy_disks_only(env: Env) -> None:
    """A legacy disk detached from its VM (a volume of the "local" pool now) is not the
    VM's any more: undefining the VM leaves it."""
    a = env.driver(env.a)
    legacy = PoolRef(name="local", type="local")  # (path "": the driver's image_dir)

    async def go() -> None:
        await a.define(vm(DiskSpec(size_mb=8), DiskSpec(size_mb=8)))
        assert await a.detach_volume(UUID, "vdb") is True
        await a.undefine(UUID)
        assert await a.volume(legacy, f"{UUID}-vda.qcow2") is None
        assert await a.volume(legacy, f"{UUID}-vdb.qcow2") is not None
        assert await a.delete_volume(legacy, f"{UUID}-vdb.qcow2") is True

    run_closing(go(), a)


def test_pools_made_again_elsewhere_and_shared_ones_not_mounted(env: Env) -> None:
    a = env.driver(env.a)

    async def go() -> None:
        await a.create_volume(env.local, "vol-a", 4)
        moved = env.local.model_copy(update={"path": f"{LOCAL_ROOT}/{env.id}/moved"})
        assert await a.list_volumes(moved) == []
        assert (await a.create_volume(moved, "vol-b", 4)).path.endswith("/moved/vol-b")
        assert [v.file for v in await a.list_volumes(env.local)] == ["vol-a"]
        missing = env.shared.model_copy(
            update={"name": f"v{env.id}-gone", "path": str(env.tmp_path / "not-mounted")}
        )
        with pytest.raises(DriverTemporary, match="is it mounted"):
            await a.pool_stats(missing)
        assert not (env.tmp_path / "not-mounted").exists()  # (not made on the local disk)
        drop_pools(env.a, ["bollard-" + missing.name])

    run_closing(go(), a)


# A copy whose agent dies: the agent process starts a slow copy and is killed.
AGENT = """
import asyncio, json, sys
from bollard.agent.drivers.libvirt import LibvirtDriver
from bollard.agent.drivers.libvirt.domains import XML_INACTIVE
from bollard.agent.drivers.libvirt.live_move import BLOCK_JOB_ABORT_PIVOT
from bollard.agent.drivers.libvirt.xml import parse_domain
from bollard.agent.drivers.storage import PoolRef

uri, jobs, prefix, pool, target, endpoint = sys.argv[1:]
d = LibvirtDriver(uri, "qemu", jobs + "-consoles", jobs_dir=jobs, node="a",
                  tool_prefix=json.loads(prefix), copy_bandwidth_mib=1)
pool = PoolRef.model_validate_json(pool)

async def main():
    job = await d.copy_volume("c-dies", pool, "vol-big", pool, "vol-copy", target=target,
                              target_endpoint=json.loads(endpoint))
    while (await d.job("c-dies")).progress < 0.01:
        await asyncio.sleep(0.05)
    print(job.model_dump_json(), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _qemu_img_copying(target: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"qemu-img" in argv[:8] and any(target.encode() in a for a in argv):
                found.append(int(proc.name))
    return found


@pytest.mark.parametrize("to", ["a", "b"], ids=["within-host", "to-peer"])
def test_a_copy_dies_with_its_agent_and_is_settled_aborted(env: Env, to: str) -> None:
    a, b = env.driver(env.a), env.driver(env.b)
    pool = env.local
    target = env.a if to == "a" else env.b
    run(a.create_volume(pool, "vol-big", 64))
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 64M",
         str(env.file(env.a, pool, "vol-big"))],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    jobs = str(env.tmp_path / "jobs-a")
    endpoint = (a if to == "a" else b).migration_endpoint()
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, env.a.uri, jobs, json.dumps(tool_prefix(env.a)),
         pool.model_dump_json(), to, json.dumps(endpoint)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert agent.stdout is not None
        line = agent.stdout.readline()
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait(30)
    assert line, "the agent process did not start the copy"
    copy_path = f"{pool.path}/vol-copy"

    async def go() -> None:
        if to == "a":  # qemu-img died with the agent (it would go on writing the copy)
            async with asyncio.timeout(10):
                while _qemu_img_copying(copy_path):
                    await asyncio.sleep(0.1)
        restarted = env.driver(env.a)
        job = await restarted.job("c-dies")  # settled: nothing runs it any more
        assert job is not None and job.status == JobStatus.ABORTED, job
        assert "stopped with the agent" in job.message
        peer = restarted if to == "a" else b
        assert await peer.volume(pool, "vol-copy") is None
        assert not env.file(target, pool, "vol-copy").exists()
        assert await restarted.abort_jobs("cancel hook") == []
        await restarted.close()

    run_closing(go(), a, b)


# Live moves of a running VM's disk (LiveVolumeMover; its contract is in the storage suite).

_DISK_BACKEND = "/machine/peripheral/ua-bollard-vol-{}/virtio-backend"  # (QOM path, in QEMU)


def _guest_writes(host: LibvirtHost, uuid: str, device: str, command: str) -> None:
    """Make the running guest's disk at ``device`` do ``command`` (a qemu-io command, e.g.
    ``write -P 0x77 12M 1M``) through the guest's own device, as the guest's writes go
    (QEMU's HMP ``qemu-io -d``)."""
    import libvirt_qemu

    with closing(host.connect()) as conn:
        dom = conn.lookupByUUIDString(uuid)
        said = libvirt_qemu.qemuMonitorCommand(
            dom,
            f'qemu-io -d {_DISK_BACKEND.format(device)} "{command}"',
            libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP,
        )
    assert not said.strip(), said


def _block_job(host: LibvirtHost, uuid: str, device: str) -> dict[str, int]:
    with closing(host.connect()) as conn:
        job: dict[str, int] = conn.lookupByUUIDString(uuid).blockJobInfo(device, 0)
    return job


async def _until_block_job(host: LibvirtHost, uuid: str, device: str) -> None:
    async with asyncio.timeout(30):
        while not _block_job(host, uuid, device):
            await asyncio.sleep(0.05)


def _paths(host: LibvirtHost, uuid: str, device: str) -> tuple[str, str]:
    """The file of the domain's disk at ``device``: live, and in its persistent definition."""
    with closing(host.connect()) as conn:
        dom = conn.lookupByUUIDString(uuid)
        live, defined = (parse_domain(dom.XMLDesc(f)).disks for f in (0, XML_INACTIVE))
    return (
        next(d.path for d in live if d.target == device),
        next(d.path for d in defined if d.target == device),
    )


def test_a_live_move_carries_what_the_guest_writes_meanwhile(env: Env) -> None:
    a = env.driver(env.a, copy_bandwidth_mib=2)  # 8 MiB of data: the move takes 4 s
    pool, shared = env.local, env.shared

    async def go() -> None:
        vol = await a.create_volume(pool, "vol-a.qcow2", 16)
        write_pattern(env.file(env.a, pool, "vol-a.qcow2"), 0x5A, 0, 8)
        expected = raw_copy(env.file(env.a, pool, "vol-a.qcow2"), env.tmp_path / "expected.raw")
        await a.define(vm(DiskSpec(size_mb=16, device="vdb", path=vol.path)))
        await a.start(UUID)
        counted = await until_counting(env.console(UUID))
        job = await a.move_attached("m-1", UUID, "vdb", shared, "vol-moved.qcow2")
        await _until_block_job(env.a, UUID, "vdb")
        _guest_writes(env.a, UUID, "vdb", "write -P 0x77 12M 1M")
        subprocess.run(
            ["qemu-io", "-f", "raw", "-c", "write -P 0x77 12M 1M", str(expected)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        during = await a.job("m-1")
        assert during is not None and during.status == JobStatus.RUNNING, during  # (mid-move)
        listed = {v.file: v.partial for v in await a.list_volumes(shared)}
        assert listed == {"vol-moved.qcow2": True}
        done = await _ended(a, "m-1")
        assert done.status == JobStatus.COMPLETED, done
        moved = env.file(env.a, shared, "vol-moved.qcow2")
        assert done.result["path"] == str(moved) == done.result["volume"]["path"]
        assert _paths(env.a, UUID, "vdb") == (str(moved), str(moved))
        assert same_disk_data(expected, "raw", moved)  # the data, and the write made meanwhile
        assert [(v.file, v.partial) for v in await a.list_volumes(shared)] == [
            ("vol-moved.qcow2", False)
        ]
        assert await until_counting(env.console(UUID), counted) > counted  # it never stopped
        assert job.command_id == "m-1"

    run_closing(go(), a)


# A move whose agent dies: the agent process starts a slow move and is killed.
MOVER = """
import asyncio, json, sys
from bollard.agent.drivers.libvirt import LibvirtDriver
from bollard.agent.drivers.libvirt.domains import XML_INACTIVE
from bollard.agent.drivers.libvirt.live_move import BLOCK_JOB_ABORT_PIVOT
from bollard.agent.drivers.libvirt.xml import parse_domain
from bollard.agent.drivers.storage import PoolRef

uri, jobs, prefix, pool, uuid = sys.argv[1:]
d = LibvirtDriver(uri, "qemu", jobs + "-consoles", jobs_dir=jobs, node="a",
                  tool_prefix=json.loads(prefix), copy_bandwidth_mib=1)

async def main():
    job = await d.move_attached("m-dies", uuid, "vdb", PoolRef.model_validate_json(pool),
                                "vol-moved")
    while (await d.job("m-dies")).phase != "copy":
        await asyncio.sleep(0.05)
    print(job.model_dump_json(), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.parametrize("pivoted", [False, True], ids=["mid-copy", "pivoted-meanwhile"])
def test_a_live_move_whose_agent_dies_is_settled_from_what_the_guest_uses(
    env: Env, pivoted: bool
) -> None:
    """libvirt runs the block copy on without its agent: the next agent process cancels it
    (the guest keeps its file, the partial target goes), or, when it was pivoted meanwhile,
    finds the guest on the target and completes the move."""
    a = env.driver(env.a)
    pool, shared = env.local, env.shared
    vol = run(a.create_volume(pool, "vol-a", 16))
    write_pattern(env.file(env.a, pool, "vol-a"), 0x5A, 0, 4)  # 4 s at 1 MiB/s
    run(a.define(vm(DiskSpec(size_mb=16, device="vdb", path=vol.path))))
    run(a.start(UUID))
    jobs = str(env.tmp_path / "jobs-a")  # (the jobs directory of env.driver(env.a))
    agent = subprocess.Popen(
        [sys.executable, "-c", MOVER, env.a.uri, jobs, json.dumps(tool_prefix(env.a)),
         shared.model_dump_json(), UUID],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert agent.stdout is not None
        line = agent.stdout.readline()
        assert line, "the agent process did not start the move"
        run(_until_block_job(env.a, UUID, "vdb"))
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait(30)
    moved = str(env.file(env.a, shared, "vol-moved"))
    assert _block_job(env.a, UUID, "vdb")  # libvirt goes on without the agent
    if pivoted:

        async def ready() -> None:
            async with asyncio.timeout(60):
                while (j := _block_job(env.a, UUID, "vdb"))["cur"] != j["end"]:
                    await asyncio.sleep(0.1)

        run(ready())
        with closing(env.a.connect()) as conn:
            conn.lookupByUUIDString(UUID).blockJobAbort("vdb", BLOCK_JOB_ABORT_PIVOT)

    async def go() -> None:
        restarted = env.driver(env.a)
        job = await restarted.job("m-dies")  # settled: nothing runs it any more
        assert job is not None
        if pivoted:
            assert job.status == JobStatus.COMPLETED, job
            assert job.result["path"] == moved
            assert _paths(env.a, UUID, "vdb") == (moved, moved)
            assert await restarted.volume(shared, "vol-moved") is not None
        else:
            assert job.status == JobStatus.ABORTED, job
            assert "stopped with the agent" in job.message
            assert _paths(env.a, UUID, "vdb") == (vol.path, vol.path)
            assert await restarted.volume(shared, "vol-moved") is None
            assert not Path(moved).exists()
        assert not _block_job(env.a, UUID, "vdb")
        assert [d.path for d in await restarted.disks(UUID)] == [_paths(env.a, UUID, "vdb")[0]]
        assert await restarted.abort_jobs("cancel hook") == []
        assert [v.power for v in await restarted.list_vms()] == [PowerState.RUNNING]
        await restarted.close()

    run_closing(go(), a)
