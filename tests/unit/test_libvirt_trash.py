"""The libvirt driver's pool trash (agent/drivers/libvirt/trash.py) on real files: a volume's
data linked into the hidden trash (nothing made where there is no pool directory or no
file), entries taken back, the trash emptied in the background (once more when asked
during an emptying, once per pool at first use); and ``delete_volume`` on libvirt's test
driver, whose pool is a real directory here (its volumes are in memory: the file the test
makes stands for the volume's)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bollard.agent.drivers.libvirt.host_tools import HostTools
from bollard.agent.drivers.libvirt.trash import SUFFIX, TRASH_DIR, Trash, trash_dir
from bollard.agent.drivers.storage import PoolRef
from bollard.domain.errors import DriverError

R = TypeVar("R")

WAIT = 10.0  # seconds a test waits at most for the trash's threads


def run(coro: Coroutine[Any, Any, R]) -> R:
    async def bounded() -> R:
        async with asyncio.timeout(10):
            return await coro

    return asyncio.run(bounded())


def pool_dir(tmp_path: Path) -> Path:
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "vol-a.qcow2").write_bytes(b"a" * 4096)
    return pool


def entries(pool: Path) -> list[str]:
    trash = pool / TRASH_DIR
    return sorted(p.name for p in trash.iterdir()) if trash.is_dir() else []


def test_a_volume_put_in_the_trash_is_a_link_to_its_data(tmp_path: Path) -> None:
    pool = pool_dir(tmp_path)
    trash = Trash(HostTools())
    entry = trash.put(str(pool), "vol-a.qcow2")
    assert entry is not None and entry.startswith("vol-a.qcow2.") and entry.endswith(SUFFIX)
    assert entries(pool) == [entry]
    kept, original = pool / TRASH_DIR / entry, pool / "vol-a.qcow2"
    assert os.path.samefile(kept, original)  # the same data, nothing copied
    assert original.stat().st_nlink == 2
    # Unlinking the volume's file now frees nothing: the trash still has the data.
    original.unlink()
    assert kept.read_bytes() == b"a" * 4096
    assert trash_dir(str(pool)) == str(pool / TRASH_DIR)


def test_nothing_is_made_without_the_file_or_its_pool(tmp_path: Path) -> None:
    pool = pool_dir(tmp_path)
    trash = Trash(HostTools())
    assert trash.put(str(pool), "vol-missing.qcow2") is None
    assert not (pool / TRASH_DIR).exists()
    nowhere = tmp_path / "no-such-pool"
    assert trash.put(str(nowhere), "vol-a.qcow2") is None
    assert not nowhere.exists()  # (the trash is never made outside a pool's directory)


def test_an_entry_taken_back_leaves_the_volume_as_it_was(tmp_path: Path) -> None:
    pool = pool_dir(tmp_path)
    trash = Trash(HostTools())
    entry = trash.put(str(pool), "vol-a.qcow2")
    assert entry is not None
    trash.take_back(str(pool), entry)
    assert entries(pool) == []
    assert (pool / "vol-a.qcow2").stat().st_nlink == 1


def test_emptying_removes_the_entries_in_the_background(tmp_path: Path) -> None:
    pool = pool_dir(tmp_path)
    (pool / "vol-b.qcow2").write_bytes(b"b")
    trash = Trash(HostTools())
    first = trash.put(str(pool), "vol-a.qcow2")
    second = trash.put(str(pool), "vol-b.qcow2")
    assert first is not None and second is not None
    (pool / "vol-a.qcow2").unlink()  # (what libvirt's delete does)
    (pool / TRASH_DIR / "not-an-entry").write_bytes(b"")  # (not the trash's own)
    trash.empty_soon(str(pool))
    assert trash.wait_idle(WAIT)
    assert entries(pool) == ["not-an-entry"]
    assert (pool / "vol-b.qcow2").read_bytes() == b"b"  # its file is untouched
    assert sorted(p.name for p in pool.iterdir()) == [TRASH_DIR, "vol-b.qcow2"]


class GatedTools(HostTools):
    """HostTools whose blocking runs are counted, and wait for ``go`` (one at a time)."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Semaphore(0)
        self.started = threading.Semaphore(0)
        self.runs: list[list[str]] = []

    def run_now(self, action: str, argv: Sequence[str], timeout: float | None = None) -> str:
        self.runs.append(list(argv))
        self.started.release()
        assert self.go.acquire(timeout=WAIT)
        return ""


def test_asked_again_while_emptying_it_empties_once_more() -> None:
    tools = GatedTools()
    trash = Trash(tools)
    trash.empty_soon("/pool")
    assert tools.started.acquire(timeout=WAIT)  # the emptying runs (and waits in its tool)
    trash.empty_soon("/pool")  # two deletes end meanwhile: one more emptying, not two
    trash.empty_soon("/pool")
    tools.go.release()
    assert tools.started.acquire(timeout=WAIT)
    tools.go.release()
    assert trash.wait_idle(WAIT)
    assert len(tools.runs) == 2


def test_first_use_empties_each_pool_once() -> None:
    tools = GatedTools()
    trash = Trash(tools)
    for _ in range(2):
        tools.go.release()
    trash.first_use("/one")
    assert trash.wait_idle(WAIT)
    trash.first_use("/two")
    assert trash.wait_idle(WAIT)
    trash.first_use("/one")
    trash.first_use("/two")
    assert trash.wait_idle(WAIT)
    assert [argv[4] for argv in tools.runs] == ["/one", "/two"]


# delete_volume on libvirt's test driver


def test_a_deleted_volume_goes_through_the_trash(tmp_path: Path) -> None:
    pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    from bollard.agent.drivers.libvirt import LibvirtDriver
    from tests.unit.test_libvirt_storage import fresh_host

    pool = tmp_path / "pool"
    pool.mkdir()
    ref = PoolRef(name="fast", type="local", path=str(pool))
    d = LibvirtDriver(fresh_host(tmp_path), "qemu", tmp_path / "c", image_dir="/images/b")
    made: list[str] = []
    real_put = d.trash.put

    def put(directory: str, file: str) -> str | None:
        entry = real_put(directory, file)
        made.append(entry or "")
        return entry

    d.trash.put = put  # type: ignore[method-assign]

    async def go() -> None:
        await d.create_volume(ref, "vol-a.qcow2", 4)
        (pool / "vol-a.qcow2").write_bytes(b"a")  # (the test driver keeps no files)
        assert await d.delete_volume(ref, "vol-a.qcow2") is True
        assert d.trash.wait_idle(WAIT)
        assert await d.volume(ref, "vol-a.qcow2") is None
        assert await d.delete_volume(ref, "vol-a.qcow2") is False  # (nothing to put)
        # Without the file (a file system without hard links is the same): deleted as before.
        await d.create_volume(ref, "vol-b.qcow2", 4)
        assert await d.delete_volume(ref, "vol-b.qcow2") is True
        assert await d.volume(ref, "vol-b.qcow2") is None
        assert [v.file for v in await d.list_volumes(ref)] == []
        assert d.trash.wait_idle(WAIT)
        await d.close()

    run(go())
    assert len(made) == 2 and made[0].startswith("vol-a.qcow2.") and made[1] == ""
    assert entries(pool) == []  # the entry was made, then emptied


def test_a_refused_delete_takes_its_trash_entry_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    from bollard.agent.drivers.libvirt import LibvirtDriver
    from bollard.agent.drivers.libvirt import volumes as V
    from tests.unit.test_libvirt_storage import fresh_host

    pool = tmp_path / "pool"
    pool.mkdir()
    ref = PoolRef(name="fast", type="local", path=str(pool))
    d = LibvirtDriver(fresh_host(tmp_path), "qemu", tmp_path / "c", image_dir="/images/b")

    class Refusing:
        """The volume as libvirt would have it while it refuses to delete it."""

        def __init__(self, vol: Any) -> None:
            self.vol = vol

        def delete(self, flags: int) -> None:
            raise libvirt.libvirtError("volume 'vol-a.qcow2' is still in use.")

    real_lookup = V.lookup_volume

    def lookup(lib: Any, p: Any, name: str) -> Any:
        found = real_lookup(lib, p, name)
        return None if found is None else Refusing(found)

    async def go() -> None:
        await d.create_volume(ref, "vol-a.qcow2", 4)
        (pool / "vol-a.qcow2").write_bytes(b"a")
        monkeypatch.setattr(V, "lookup_volume", lookup)
        with pytest.raises(DriverError, match="still in use"):
            await d.delete_volume(ref, "vol-a.qcow2")
        monkeypatch.setattr(V, "lookup_volume", real_lookup)
        assert await d.volume(ref, "vol-a.qcow2") is not None
        await d.close()

    run(go())
    assert d.trash.wait_idle(WAIT)
    assert (pool / TRASH_DIR).is_dir() and entries(pool) == []  # made, then taken back
    assert (pool / "vol-a.qcow2").stat().st_nlink == 1
