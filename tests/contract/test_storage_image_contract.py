"""Contract suite for volume images (StorageDriver.export_volume / import_volume), run against
every driver the storage contract suite runs against (tests/contract/test_storage_contract.py's
factories: the sim, and real libvirt hosts where they can run).

An image carries a volume to a host that shares nothing with this one: the content (the
checksum of what the guest sees) arrives whole, an import is never seen half written under
its name, a failed or refused one leaves nothing, and running one again is harmless.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bollard.agent.drivers.base import DiskSpec, HypervisorDriver, VmSpec
from bollard.agent.drivers.storage import IMAGE_CHUNK, PoolRef, StorageDriver, VolumeFormat
from bollard.domain.errors import DriverInvalidState, DriverNotFound, DriverPermanent
from tests.contract.test_storage_contract import FACTORIES
from tests.support.storage_harness import StorageHarness

T = TypeVar("T")

SIZE = 16  # MiB
VM = "22222222-2222-4222-8222-222222222222"
_TIMEOUT = [10.0]


@pytest.fixture(params=FACTORIES)
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageHarness]:
    harness: StorageHarness = request.param(request, tmp_path)
    assert isinstance(harness.driver, StorageDriver) and isinstance(harness.peer, StorageDriver)
    _TIMEOUT[0] = harness.timeout
    yield harness
    _TIMEOUT[0] = 10.0


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(_TIMEOUT[0]):
            return await coro

    return asyncio.run(bounded())


async def _export(d: Any, pool: PoolRef, file: str) -> bytes:
    """The whole image (each chunk no larger than IMAGE_CHUNK)."""
    out = bytearray()
    async for chunk in d.export_volume(pool, file):
        assert 0 < len(chunk) <= IMAGE_CHUNK
        out += chunk
    return bytes(out)


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


class _Broken(Exception):
    pass


async def _broken_at_the_end(data: bytes) -> AsyncIterator[bytes]:
    """The whole image, then an error (as a digest that does not match raises)."""
    async for chunk in _chunks(data):
        yield chunk
    raise _Broken("the image's digest does not match")


async def _files(d: Any, pool: PoolRef) -> list[str]:
    return [v.file for v in await d.list_volumes(pool)]


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_an_image_carries_the_volume_to_another_host(h: StorageHarness, fmt: VolumeFormat) -> None:
    d, peer, pool = h.driver, h.peer, h.local_pool

    async def go() -> None:
        await d.create_volume(pool, "vol-src", SIZE, fmt)
        h.write(h.node, pool, "vol-src", b"the guest's data, carried by an image")
        content = await d.checksum(pool, "vol-src")
        image = await _export(d, pool, "vol-src")
        assert await _export(d, pool, "vol-src") == image  # the same bytes again
        made = await peer.import_volume(pool, "vol-dst", fmt, SIZE, _chunks(image))
        assert (made.file, made.format, made.size_mb, made.partial) == ("vol-dst", fmt, SIZE, False)
        there = await peer.volume(pool, "vol-dst")
        assert there is not None and there.path == made.path
        assert await peer.checksum(pool, "vol-dst") == content
        assert await d.checksum(pool, "vol-src") == content  # the source is as it was
        # Its image is the one it was made from: exported again, it can go on travelling.
        assert hashlib.sha256(await _export(peer, pool, "vol-dst")).digest() == (
            hashlib.sha256(image).digest()
        )

    run(go())


def test_images_of_a_shared_pool(h: StorageHarness) -> None:
    d, peer, pool = h.driver, h.peer, h.shared_pool

    async def go() -> None:
        await d.create_volume(pool, "vol-s", SIZE)
        h.write(h.node, pool, "vol-s", b"shared data")
        content = await d.checksum(pool, "vol-s")
        image = await _export(d, pool, "vol-s")
        made = await peer.import_volume(pool, "vol-s2", "qcow2", SIZE, _chunks(image))
        assert made.file == "vol-s2"
        assert await d.checksum(pool, "vol-s2") == content  # (the same directory)

    run(go())


def test_an_import_run_again_is_done_and_other_content_is_refused(h: StorageHarness) -> None:
    d, peer, pool = h.driver, h.peer, h.local_pool

    async def go() -> None:
        await d.create_volume(pool, "vol-a", SIZE)
        h.write(h.node, pool, "vol-a", b"content A")
        await d.create_volume(pool, "vol-b", SIZE)
        h.write(h.node, pool, "vol-b", b"content B")
        image_a, image_b = await _export(d, pool, "vol-a"), await _export(d, pool, "vol-b")
        first = await peer.import_volume(pool, "vol-x", "qcow2", SIZE, _chunks(image_a))
        again = await peer.import_volume(pool, "vol-x", "qcow2", SIZE, _chunks(image_a))
        assert (again.file, again.format, again.size_mb, again.path) == (
            first.file, first.format, first.size_mb, first.path,
        )  # fmt: skip
        kept = await peer.checksum(pool, "vol-x")
        assert kept == await d.checksum(pool, "vol-a")
        with pytest.raises(DriverInvalidState):
            await peer.import_volume(pool, "vol-x", "qcow2", SIZE, _chunks(image_b))
        assert await peer.checksum(pool, "vol-x") == kept  # untouched
        assert await _files(peer, pool) == ["vol-x"]

    run(go())


def test_a_failed_import_leaves_nothing_and_is_never_seen_half_written(
    h: StorageHarness,
) -> None:
    d, peer, pool = h.driver, h.peer, h.local_pool

    async def go() -> None:
        await d.create_volume(pool, "vol-a", SIZE)
        h.write(h.node, pool, "vol-a", b"some data")
        image = await _export(d, pool, "vol-a")

        # Half the image sent, the rest held back: nothing under its name meanwhile.
        half, rest = asyncio.Event(), asyncio.Event()

        async def held() -> AsyncIterator[bytes]:
            middle = len(image) // 2
            async for chunk in _chunks(image[:middle]):
                yield chunk
            half.set()
            await rest.wait()
            async for chunk in _chunks(image[middle:]):
                yield chunk

        importing = asyncio.create_task(peer.import_volume(pool, "vol-h", "qcow2", SIZE, held()))
        await half.wait()
        assert await peer.volume(pool, "vol-h") is None
        assert await _files(peer, pool) == []
        rest.set()
        assert (await importing).file == "vol-h"

        # The chunks fail at their end (a digest that does not match): nothing is left.
        with pytest.raises(_Broken):
            await peer.import_volume(pool, "vol-f", "qcow2", SIZE, _broken_at_the_end(image))
        assert await peer.volume(pool, "vol-f") is None
        assert await _files(peer, pool) == ["vol-h"]
        # Cancelled while it reads: nothing either.
        stuck = asyncio.Event()

        async def never_ends() -> AsyncIterator[bytes]:
            yield image[:1024]
            stuck.set()
            await asyncio.Event().wait()
            yield b""  # (never reached)

        cancelled = asyncio.create_task(
            peer.import_volume(pool, "vol-c", "qcow2", SIZE, never_ends())
        )
        await stuck.wait()
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert await peer.volume(pool, "vol-c") is None
        # The same file can be imported afterwards.
        made = await peer.import_volume(pool, "vol-f", "qcow2", SIZE, _chunks(image))
        assert made.file == "vol-f"
        assert await _files(peer, pool) == ["vol-f", "vol-h"]

    run(go())


@pytest.mark.parametrize(
    ("what", "fmt", "size_mb"),
    [
        ("not-an-image", "qcow2", SIZE),
        ("other-size", "qcow2", 2 * SIZE),
        ("other-format", "raw", SIZE),
    ],
)
def test_an_image_that_is_not_what_it_claims_is_refused(
    h: StorageHarness, what: str, fmt: VolumeFormat, size_mb: int
) -> None:
    d, peer, pool = h.driver, h.peer, h.local_pool

    async def go() -> None:
        await d.create_volume(pool, "vol-a", SIZE, "qcow2")
        image = b"\x00garbage, not an image\n" * 100
        if what != "not-an-image":
            image = await _export(d, pool, "vol-a")
        with pytest.raises(DriverPermanent) as refused:
            await peer.import_volume(pool, "vol-x", fmt, size_mb, _chunks(image))
        assert refused.value.code == "invalid-input", refused.value
        assert await peer.volume(pool, "vol-x") is None
        assert await _files(peer, pool) == []

    run(go())


def test_export_refusals(h: StorageHarness) -> None:
    d: Any = h.driver
    pool = h.local_pool

    async def go() -> None:
        with pytest.raises(DriverNotFound):
            await _export(d, pool, "vol-none")
        vol = await d.create_volume(pool, "vol-used", SIZE)
        hv: HypervisorDriver = d
        disk = DiskSpec(size_mb=SIZE, device="vdb", path=vol.path, format=vol.format)
        await hv.define(
            VmSpec(uuid=VM, name="img-vm", vcpus=1, memory_mb=512, epoch=1, disks=[disk])
        )
        await _export(d, pool, "vol-used")  # defined, stopped: fine
        await hv.start(VM)
        with pytest.raises(DriverInvalidState):  # a running VM has it open
            await _export(d, pool, "vol-used")
        await hv.stop(VM)
        assert len(await _export(d, pool, "vol-used")) > 0

    run(go())
