"""The libvirt driver's disks on real daemons: volumes of each host's own pool, copied by
live migration (libvirt's storage copy while the guest runs) and by offline migration
(streamed through the agent), with the data intact, and removed where no longer needed.

Each daemon sees /var/lib/libvirt as its own directory (``<host dir>/lib``), so the two
hosts keep disks at the same path in different files, as two real hosts do. The data is
checked as the guest sees it (``qemu-img compare -U``), not as file bytes: QEMU's mirror
writes the target's qcow2 file its own way.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bollard.agent.drivers.base import DiskSpec, JobStatus, VmSpec
from bollard.domain.errors import DriverPermanent
from bollard.domain.states import PowerState
from tests.libvirt.driver_pair import Hosts, migrated, run_closing, until_counting
from tests.support.libvirt_env import (
    Guest,
    LibvirtHost,
    disk_image,
    raw_copy,
    remove_bollard_domains,
    same_disk_data,
    write_pattern,
)

UUID = "33333333-3333-4333-8333-333333333333"


def image(host: LibvirtHost, device: str, uuid: str = UUID) -> Path:
    return disk_image(host, uuid, device)


@pytest.fixture
def hosts(libvirt_hosts: list[LibvirtHost], guest: Guest, tmp_path: Path) -> Iterator[Hosts]:
    h = Hosts(libvirt_hosts, guest, tmp_path)

    def reset() -> None:
        for host in (h.a, h.b):
            remove_bollard_domains(host)
            for leftover in image(host, "vda").parent.glob(f"{UUID}-*"):
                leftover.unlink()

    reset()
    yield h
    reset()


def spec(*sizes: int, uuid: str = UUID) -> VmSpec:
    return VmSpec(
        uuid=uuid, name="disky", vcpus=1, memory_mb=128, epoch=1,
        disks=[DiskSpec(size_mb=n) for n in sizes],
    )  # fmt: skip


@pytest.mark.parametrize("live", [True, False], ids=["live", "offline"])
def test_migration_copies_the_disks_data(hosts: Hosts, live: bool) -> None:
    a, b = hosts.driver(hosts.a), hosts.driver(hosts.b)
    expected = hosts.tmp_path / "expected.raw"

    async def go() -> None:
        await b.host_info()  # the target agent has made its pool
        await a.define(spec(16, 8))
        vda, vdb = image(hosts.a, "vda"), image(hosts.a, "vdb")
        assert vda.is_file() and vdb.is_file()
        # Data the guest would read at 1 MiB and at the disk's last MiB.
        write_pattern(vda, 0x5A, 1, 2)
        write_pattern(vda, 0xA5, 15, 1)
        raw_copy(vda, expected)
        assert not same_disk_data(expected, "raw", vdb)  # (the check can fail)
        counted = -1
        if live:
            await a.start(UUID)
            counted = await until_counting(hosts.console(UUID))
        await migrated(hosts, a, b, "disk-move", UUID, live=live)
        assert (await b.list_vms())[0].power == (PowerState.RUNNING if live else PowerState.STOPPED)
        assert [(d.device, d.size_mb) for d in await b.disks(UUID)] == [("vda", 16), ("vdb", 8)]
        assert same_disk_data(expected, "raw", image(hosts.b, "vda"))
        # The source's copies are gone once the VM moved.
        assert not vda.exists() and not vdb.exists()
        if live:  # the guest kept running through the copy: its counter goes on
            assert await until_counting(hosts.console(UUID), counted) > counted
        await b.undefine(UUID, force=True)
        assert not image(hosts.b, "vda").exists() and not image(hosts.b, "vdb").exists()

    run_closing(go(), a, b)


@pytest.mark.parametrize("live", [True, False], ids=["live", "offline"])
def test_disks_a_leftover_copy_has_on_the_target_are_replaced(hosts: Hosts, live: bool) -> None:
    """An earlier attempt left a stopped copy with other data on the target: what lands
    there is the source's data, all of it."""
    a, b = hosts.driver(hosts.a), hosts.driver(hosts.b)
    expected = hosts.tmp_path / "expected.raw"

    async def go() -> None:
        await a.define(spec(16))
        write_pattern(image(hosts.a, "vda"), 0x5A, 1, 1)
        raw_copy(image(hosts.a, "vda"), expected)
        await b.define(spec(16))  # the leftover (epoch 1), its disk full of other data
        write_pattern(image(hosts.b, "vda"), 0xFF, 0, 16)
        assert not same_disk_data(expected, "raw", image(hosts.b, "vda"))
        if live:
            await a.start(UUID)
        await migrated(hosts, a, b, "disk-over", UUID, live=live)
        assert same_disk_data(expected, "raw", image(hosts.b, "vda"))

    run_closing(go(), a, b)


def test_an_aborted_live_migration_leaves_no_disks_on_the_target(hosts: Hosts) -> None:
    # 1 MiB/s: the 128 MiB guest's memory and its 64 MiB disk take minutes.
    a, b = hosts.driver(hosts.a, migration_bandwidth_mib=1), hosts.driver(hosts.b)

    async def go() -> None:
        await b.host_info()
        await a.define(spec(64))
        await a.start(UUID)
        job = await a.migrate(
            "disk-abort", UUID, hosts.b.name, live=True, new_epoch=2,
            target_endpoint=b.migration_endpoint(),
        )  # fmt: skip
        assert job.status == JobStatus.RUNNING, job
        aborted = await a.abort_job("disk-abort", "test")
        assert aborted is not None and aborted.status == JobStatus.ABORTED, aborted
        assert (await a.list_vms())[0].power == PowerState.RUNNING
        assert await b.list_vms() == []
        assert image(hosts.a, "vda").is_file()
        assert not image(hosts.b, "vda").exists()

    run_closing(go(), a, b)


def test_a_disk_removed_behind_libvirts_back_is_made_again_at_define(hosts: Hosts) -> None:
    a = hosts.driver(hosts.a)

    async def go() -> None:
        await a.define(spec(8))
        image(hosts.a, "vda").unlink()  # (libvirt's pool still lists it)
        await a.define(spec(8))
        assert image(hosts.a, "vda").is_file()
        await a.start(UUID)  # QEMU opens it
        await a.undefine(UUID, force=True)
        assert not image(hosts.a, "vda").exists()

    run_closing(go(), a)


def test_a_target_keeping_disks_elsewhere_is_refused(hosts: Hosts) -> None:
    a = hosts.driver(hosts.a)
    b = hosts.driver(hosts.b, image_dir="/var/lib/libvirt/images/elsewhere")

    async def go() -> None:
        await a.define(spec(8))
        with pytest.raises(DriverPermanent, match="same --libvirt-image-dir"):
            await a.migrate(
                "disk-elsewhere", UUID, hosts.b.name, live=False, new_epoch=2,
                target_endpoint=b.migration_endpoint(),
            )  # fmt: skip
        assert await a.job("disk-elsewhere") is None  # nothing was done
        assert [vm.uuid for vm in await a.list_vms()] == [UUID]

    run_closing(go(), a, b)
