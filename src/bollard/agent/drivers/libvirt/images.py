"""The libvirt driver's volume images: ``export_volume`` and ``import_volume`` (see
drivers/storage.py), what carries a volume to a host that shares nothing with this one.

An image of a directory pool's volume is its file's bytes as they are (qcow2, with its
internal snapshots, or raw), streamed from the daemon (``virStorageVolDownload``) and, on
import, into it (``virStorageVolUpload``), so the agent never needs to see the daemon's
files for the bytes themselves. An export is refused while a running VM has the volume open
(qemu-img takes the image's lock first: DriverInvalidState) or a copy is filling it.

An import writes a hidden volume of the pool (``.bollard-import-<file>``: not a volume file
name, so it is never listed), made empty (raw, 0 bytes) so that it holds exactly the bytes
uploaded; an earlier attempt's leftover is replaced. Once the upload has ended (and the
caller's checks at the end of its chunks passed) the image is checked with ``qemu-img``:
the format and size it was given, no backing file or external data file (an image must not
reach other files of the host), and a qcow2's metadata consistent (``qemu-img check``;
leaked clusters are harmless). It is then flushed and linked under its name (``ln``: never
over an existing file), and the temporary name removed: a volume never appears half written.
A file already there is compared (sha256sum): the same bytes are the same volume (an import
run again), other bytes are refused (DriverInvalidState). Whatever fails removes the
temporary file. Renames and comparisons run with the host tools (see ``host_tools``), in the
daemon's mount namespace where it has one of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from bollard.agent.drivers.libvirt.errors import map_error
from bollard.agent.drivers.libvirt.pools import storage_of
from bollard.agent.drivers.libvirt.storage import lookup_volume, volume_xml
from bollard.agent.drivers.libvirt.volumes import MIB, LibvirtVolumes, check_name, volume_info
from bollard.agent.drivers.storage import IMAGE_CHUNK, PoolRef, VolumeFormat, VolumeInfo
from bollard.domain.errors import DriverError, DriverInvalidState, DriverPermanent

log = logging.getLogger(__name__)

T = TypeVar("T")

TEMP_PREFIX = ".bollard-import-"  # + the volume's file: hidden, never a volume file name
INVALID = "invalid-input"

# $1 the complete temporary file, $2 the volume's path: flushed, then linked under its name
# unless a file is there (mv -n where the file system has no hard links). Prints "placed"
# or "exists" (the temporary file is then left for the caller to compare and remove).
_PLACE = """set -e
t="$1"; f="$2"; d=$(dirname -- "$f")
sync -- "$t" 2>/dev/null || sync
if ln -T -- "$t" "$f" 2>/dev/null; then
  rm -f -- "$t"
elif [ -e "$f" ] || [ -L "$f" ]; then
  echo exists; exit 0
else
  mv -T -n -- "$t" "$f"
  if [ -e "$t" ]; then echo exists; exit 0; fi
fi
sync -- "$d" 2>/dev/null || sync
echo placed
"""
# $1 a qcow2 image: its metadata must be consistent (exit status 3 is leaked clusters only).
_CHECK_QCOW2 = 'qemu-img check -q -f qcow2 "$1"; s=$?; [ "$s" -eq 3 ] && exit 0; exit "$s"\n'


def _send_all(stream: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        sent = stream.send(view.tobytes())
        if sent < 0:
            raise DriverPermanent("the libvirt upload stream did not block")
        view = view[sent:]


class LibvirtImages(LibvirtVolumes):
    """Mixed into LibvirtDriver (with the volumes it extends), which provides ``_open``: a
    connection of the transfer's own."""

    uri: str

    def _open(self, uri: str) -> Any:
        raise NotImplementedError

    async def _blocking(self, action: str, fn: Callable[[], T]) -> T:
        """``fn()`` (libvirt calls on a transfer's connection) in a worker thread."""
        lib = self.lib
        try:
            return await asyncio.to_thread(fn)
        except lib.libvirtError as exc:
            raise map_error(exc, action) from None

    def _release(self, conn: Any, stream: Any | None) -> None:
        """Abort a stream still open and close the transfer's connection (in a thread)."""
        lib = self.lib
        if stream is not None:
            with contextlib.suppress(lib.libvirtError):
                stream.abort()
        with contextlib.suppress(lib.libvirtError):
            conn.close()

    # export

    async def export_volume(self, pool: PoolRef, file: str) -> AsyncIterator[bytes]:
        check_name(file)
        action = f"export volume {file}"
        if file in await self._partial(pool):
            raise DriverInvalidState(f"volume {file} in pool {pool.name} is being copied into")
        info = await self._call(
            f"{action}: read it", lambda c: volume_info(self._vol(c, pool, file))
        )
        await self.tools.info(info.path, info.format, shared=False)  # (refused while in use)
        conn = await asyncio.to_thread(self._open, self.uri)
        stream: Any | None = None

        def begin() -> Any:
            vol = self._vol(conn, pool, file)
            new = conn.newStream(0)
            vol.download(new, 0, 0, 0)
            return new

        try:
            stream = await self._blocking(action, begin)
            down: Any = stream
            while True:
                chunk = await self._blocking(action, lambda: down.recv(IMAGE_CHUNK))
                if isinstance(chunk, int):  # -2, "would block": only non-blocking streams
                    raise DriverPermanent(f"{action}: the stream did not block")
                if not chunk:
                    break
                yield chunk
            await self._blocking(action, down.finish)
            stream = None
        finally:
            done = stream
            await asyncio.shield(asyncio.to_thread(self._release, conn, done))

    # import

    async def import_volume(
        self,
        pool: PoolRef,
        file: str,
        fmt: VolumeFormat,
        size_mb: int,
        chunks: AsyncIterator[bytes],
    ) -> VolumeInfo:
        check_name(file)
        if fmt not in ("qcow2", "raw"):
            raise DriverError(f"{fmt!r} is not a volume format (qcow2, raw)", code=INVALID)
        if size_mb < 1:
            raise DriverError(f"a volume's size must be >= 1 MiB, not {size_mb}", code=INVALID)
        action = f"import volume {file}"
        storage = storage_of(pool, self.storage)
        temp = TEMP_PREFIX + file
        temp_path, path = storage.path_of(temp), storage.path_of(file)
        conn = await asyncio.to_thread(self._open, self.uri)
        try:
            vol = await self._blocking(f"{action}: make it", lambda: self._fresh(conn, pool, temp))
            await self._upload(action, conn, vol, chunks)
            await self._check_image(action, temp_path, fmt, size_mb)
            placed = await self.tools.run(
                f"{action}: name it", ["sh", "-c", _PLACE, "sh", temp_path, path]
            )
            if placed.strip() != "placed":
                await self._same_or_refuse(action, pool, temp_path, path)
        finally:
            await asyncio.shield(self._end_import(conn, temp_path))
        log.info("volume %s imported into pool %s (%s, %d MiB)", file, pool.name, fmt, size_mb)
        return await self._call(
            f"{action}: read it", lambda c: volume_info(self._vol(c, pool, file))
        )

    def _fresh(self, conn: Any, pool: PoolRef, temp: str) -> Any:
        """The hidden volume the upload fills: empty (raw, 0 bytes), so that it ends with
        exactly the bytes sent; a leftover of an earlier attempt is replaced."""
        p = self._pool_of(conn, pool)
        old = lookup_volume(self.lib, p, temp)
        if old is not None:
            old.delete(0)
        return p.createXML(volume_xml(temp, 0, "raw"), 0)

    async def _upload(self, action: str, conn: Any, vol: Any, chunks: AsyncIterator[bytes]) -> None:
        def begin() -> Any:
            stream = conn.newStream(0)
            vol.upload(stream, 0, 0, 0)
            return stream

        stream = await self._blocking(f"{action}: upload", begin)
        try:
            async for chunk in chunks:
                await self._blocking(
                    f"{action}: upload", functools.partial(_send_all, stream, chunk)
                )
            await self._blocking(f"{action}: upload", stream.finish)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(self._release_stream, stream))
            raise

    def _release_stream(self, stream: Any) -> None:
        with contextlib.suppress(self.lib.libvirtError):
            stream.abort()

    async def _check_image(self, action: str, path: str, fmt: str, size_mb: int) -> None:
        """The uploaded file is an image of ``fmt`` and ``size_mb`` MiB that reaches no other
        file (DriverPermanent, invalid-input, otherwise)."""
        try:
            info = await self.tools.info(path, fmt, shared=False)
        except DriverPermanent as exc:
            raise DriverPermanent(
                f"{action}: not a {fmt} image: {exc.message}", code=INVALID
            ) from None
        virtual = info.get("virtual-size")
        if not isinstance(virtual, int) or virtual // MIB != size_mb:
            shown = f"{virtual // MIB} MiB" if isinstance(virtual, int) else "of no size"
            raise DriverPermanent(
                f"{action}: the image is {shown}, not {size_mb} MiB", code=INVALID
            )
        data = (info.get("format-specific") or {}).get("data") or {}
        if info.get("backing-filename") or info.get("full-backing-filename"):
            raise DriverPermanent(f"{action}: the image has a backing file: refused", code=INVALID)
        if isinstance(data, dict) and data.get("data-file"):
            raise DriverPermanent(
                f"{action}: the image has an external data file: refused", code=INVALID
            )
        if fmt == "qcow2":
            try:
                await self.tools.run(f"{action}: check it", ["sh", "-c", _CHECK_QCOW2, "sh", path])
            except DriverPermanent as exc:
                raise DriverPermanent(
                    f"{action}: a damaged qcow2 image: {exc.message}", code=INVALID
                ) from None

    async def _same_or_refuse(self, action: str, pool: PoolRef, temp_path: str, path: str) -> None:
        """The volume's file exists: an import run again (the same bytes) is done; other bytes
        are refused."""
        out = await self.tools.run(
            f"{action}: compare it with the file there", ["sha256sum", "--", temp_path, path]
        )
        digests = [line.split()[0] for line in out.splitlines() if line.split()]
        if len(digests) != 2 or digests[0] != digests[1]:
            raise DriverInvalidState(
                f"volume {path.rsplit('/', 1)[-1]} exists in pool {pool.name} with other content"
            )

    async def _end_import(self, conn: Any, temp_path: str) -> None:
        """Remove the temporary file (gone already once placed) and close the connection."""
        try:
            await self.tools.run("remove an import's temporary file", ["rm", "-f", "--", temp_path])
        except DriverError as exc:
            log.warning("%s (left as it is)", exc.message)
        finally:
            await asyncio.to_thread(self._release, conn, None)
