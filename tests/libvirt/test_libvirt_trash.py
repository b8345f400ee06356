"""Deleting volumes through the pool's trash (agent/drivers/libvirt/trash.py) on a real
daemon: the file is gone when the delete returns and its data is unlinked from the trash
soon after; the trash is never listed as a volume; what an earlier agent process left in
the trash goes the first time a new one uses the pool. (A delete libvirt refuses is in
tests/unit/test_libvirt_trash.py.)

The pool is a local pool of the test's own under /var/lib/libvirt on host a (see
tests/support/libvirt_storage.py: the driver runs its tools in the daemon's namespace).
"""

from __future__ import annotations

import shutil
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from bollard.agent.drivers.libvirt import LibvirtDriver
from bollard.agent.drivers.libvirt.trash import SUFFIX, TRASH_DIR
from bollard.agent.drivers.storage import PoolRef
from tests.libvirt.driver_pair import run
from tests.support.libvirt_env import LibvirtHost, power_on_host
from tests.support.libvirt_storage import (
    LOCAL_ROOT,
    drop_pools,
    seen_here,
    tool_prefix,
    write_into,
)

pytestmark = pytest.mark.libvirt

MIB = 1024 * 1024
WAIT = 30.0  # seconds a test waits at most for the trash to be emptied


class Pool:
    """A local pool of the test's own on host a, and drivers that use it."""

    def __init__(self, host: LibvirtHost, tmp_path: Path) -> None:
        self.host, self.tmp_path = host, tmp_path
        self.id = uuidlib.uuid4().hex[:10]
        path = f"{LOCAL_ROOT}/{self.id}/local"
        self.ref = PoolRef(name=f"r{self.id}-local", type="local", path=path)

    def driver(self) -> LibvirtDriver:
        return LibvirtDriver(
            self.host.uri,
            "qemu",
            self.tmp_path / "consoles",
            jobs_dir=self.tmp_path / "jobs",
            node=self.host.name,
            tool_prefix=tool_prefix(self.host),
        )

    def file(self, name: str) -> Path:
        return seen_here(self.host, self.ref, name)

    def trash(self) -> list[str]:
        trash = self.file(TRASH_DIR)
        return sorted(p.name for p in trash.iterdir()) if trash.is_dir() else []

    def clean_up(self) -> None:
        drop_pools(self.host, ["bollard-" + self.ref.name])
        shutil.rmtree(self.host.dir / "lib" / "bollard-test" / self.id, ignore_errors=True)


@pytest.fixture
def pool(libvirt_hosts: list[LibvirtHost], tmp_path: Path) -> Iterator[Pool]:
    host = libvirt_hosts[0]
    power_on_host(host)  # (a test of another suite may have powered it off)
    made = Pool(host, tmp_path)
    yield made
    made.clean_up()


async def made_with_data(d: LibvirtDriver, pool: Pool, file: str) -> Path:
    await d.create_volume(pool.ref, file, 64)
    path = pool.file(file)
    write_into(path, b"\x5a" * (8 * MIB))
    return path


def test_a_deleted_volume_is_gone_at_once_and_its_data_unlinked_soon(pool: Pool) -> None:
    d = pool.driver()

    async def go() -> None:
        path = await made_with_data(d, pool, "vol-a.qcow2")
        assert path.stat().st_size > 8 * MIB
        assert await d.delete_volume(pool.ref, "vol-a.qcow2") is True
        assert not path.exists()  # gone when the delete returns
        assert await d.volume(pool.ref, "vol-a.qcow2") is None
        assert d.trash.wait_idle(WAIT)
        assert pool.trash() == []  # the data's last link is gone too
        assert pool.file(TRASH_DIR).is_dir()
        # The trash is in the pool's directory, and never one of its volumes.
        await made_with_data(d, pool, "vol-b.qcow2")
        assert [v.file for v in await d.list_volumes(pool.ref)] == ["vol-b.qcow2"]
        assert pool.file("vol-b.qcow2").stat().st_nlink == 1
        await d.close()

    run(go())


def test_what_an_earlier_agent_left_in_the_trash_goes_at_first_use(pool: Pool) -> None:
    first = pool.driver()

    async def before() -> None:
        await made_with_data(first, pool, "vol-a.qcow2")
        await first.close()

    run(before())
    # An agent that died between the link and its emptying left this behind.
    trash = pool.file(TRASH_DIR)
    trash.mkdir()
    left = trash / f"vol-z.qcow2.0123456789abcdef{SUFFIX}"
    left.write_bytes(b"\x00" * MIB)
    not_ours = trash / "notes.txt"
    not_ours.write_text("not a trash entry")
    again = pool.driver()

    async def after() -> None:
        assert [v.file for v in await again.list_volumes(pool.ref)] == ["vol-a.qcow2"]
        assert again.trash.wait_idle(WAIT)
        await again.close()

    run(after())
    assert pool.trash() == ["notes.txt"]
    assert pool.file("vol-a.qcow2").exists()
