"""The cell server's image spool: the images of VM disks on their way between cells.

An image is a directory of disks (``<data-dir>/images/<image>/<disk>``), each a file of
bytes (a volume's image, as its host's driver exported it) with its SHA-256 and length beside
it (``.<disk>.sha256``: ``<hex> <bytes>``). Names: 1-64 of letters, digits, ``_``, ``-``
and ``.``, not starting with a dot (so ``.``, ``..`` and the hidden files are never names).

A disk is written (``put``) to a temporary file of ``.incoming`` (on the same file system),
its digest computed as the bytes arrive; bytes whose digest is not the one announced are
refused (DigestMismatch, 422) and nothing is kept. Accepted bytes are fsynced, then the
disk's old digest file is removed, the file renamed into place and its digest file written
(a temporary file renamed); a disk without its digest file (a crash between) is not there
for readers. Nothing is ever held in memory but one batch of a write or a read. The
temporary files a crash left are removed when the spool is opened.

Whoever may write may overwrite (an export run again uploads the same bytes again): the
readers check the digest of what they read. Removing an image (``remove``) removes its
directory; an upload under way meanwhile lands afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bollard.domain.errors import BollardError, InvalidInput, NotFound
from bollard.durable import fsync_dir, private_dir, write_all, write_atomic

log = logging.getLogger(__name__)

NAME = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$"
SHA256 = r"^[0-9a-f]{64}$"
_NAME = re.compile(NAME)
_SHA256 = re.compile(SHA256)
INCOMING = ".incoming"
BATCH = 1024 * 1024  # bytes written or read at once (in a worker thread)
HEADROOM = 64 * 1024 * 1024  # bytes a declared upload leaves free on the spool's disk


class DigestMismatch(InvalidInput):
    code = "sha256-mismatch"


class SpoolFull(BollardError):
    code = "insufficient-storage"
    http_status = 507


@dataclass(frozen=True)
class SpoolDisk:
    disk: str
    bytes: int
    sha256: str


def check_name(what: str, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            f"{what} {name!r}: use 1-64 letters, digits, '_', '-' and '.', not starting with '.'"
        )
    return name


def check_sha256(value: str | None) -> str:
    if value is None:
        raise InvalidInput("X-Content-SHA256: required (the SHA-256 of the bytes, in hex)")
    value = value.strip().lower()
    if not _SHA256.fullmatch(value):
        raise InvalidInput("X-Content-SHA256: must be a SHA-256 in hex (64 digits 0-9, a-f)")
    return value


class ImageSpool:
    """The spool at ``root`` (``<data-dir>/images``); made, and cleared of a crash's
    temporary files, when opened."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / INCOMING
        private_dir(root)
        shutil.rmtree(self.incoming, ignore_errors=True)
        self.incoming.mkdir(mode=0o700)
        self._placing = asyncio.Lock()  # a disk put in place, an image removed

    def _dir(self, image: str) -> Path:
        return self.root / check_name("image", image)

    def _paths(self, image: str, disk: str) -> tuple[Path, Path]:
        directory = self._dir(image)
        check_name("disk", disk)
        return directory / disk, directory / f".{disk}.sha256"

    # reading (blocking: in a worker thread)

    def disk(self, image: str, disk: str) -> SpoolDisk | None:
        """The disk if the image has it, whole."""
        data, digest = self._paths(image, disk)
        try:
            sha256, size = digest.read_text().split()
            if data.stat().st_size != int(size) or not _SHA256.fullmatch(sha256):
                return None
        except (FileNotFoundError, ValueError):
            return None
        return SpoolDisk(disk=disk, bytes=int(size), sha256=sha256)

    def disks(self, image: str) -> list[SpoolDisk]:
        """The image's whole disks, by name; NotFound without the image."""
        directory = self._dir(image)
        try:
            names = sorted(e.name for e in os.scandir(directory) if _NAME.fullmatch(e.name))
        except FileNotFoundError:
            raise NotFound(f"no image {image} in the spool") from None
        found = (self.disk(image, name) for name in names)
        return [d for d in found if d is not None]

    def open(self, image: str, disk: str) -> tuple[SpoolDisk, BinaryIO]:
        """The disk and its file, open for reading; NotFound without it."""
        found = self.disk(image, disk)
        if found is not None:
            try:
                reader = self._paths(image, disk)[0].open("rb")
            except FileNotFoundError:
                reader = None
            if reader is not None:
                if os.fstat(reader.fileno()).st_size == found.bytes:
                    return found, reader
                reader.close()
        raise NotFound(f"image {image} has no disk {disk} in the spool")

    # streams

    async def read(self, image: str, disk: str) -> tuple[SpoolDisk, AsyncIterator[bytes]]:
        """The disk and its bytes (NotFound before the first if it is not there)."""
        found, reader = await asyncio.to_thread(self.open, image, disk)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while chunk := await asyncio.to_thread(reader.read, BATCH):
                    yield chunk
            finally:
                reader.close()

        return found, chunks()

    async def put(
        self,
        image: str,
        disk: str,
        sha256: str,
        chunks: AsyncIterator[bytes],
        *,
        declared: int | None = None,
    ) -> SpoolDisk:
        """Write the disk from ``chunks`` (see the module's docstring): DigestMismatch (and
        nothing kept) unless their digest is ``sha256``; SpoolFull when ``declared`` bytes
        would not fit, or the disk filled up."""
        self._paths(image, disk)  # (the names are checked first)
        sha256 = check_sha256(sha256)
        if declared is not None:
            free = (await asyncio.to_thread(shutil.disk_usage, self.root)).free
            if declared + HEADROOM > free:
                raise SpoolFull(f"the image spool has {free} bytes free, {declared} are sent")
        temp = self.incoming / f"{image}.{disk}.{uuid.uuid4().hex[:12]}"
        try:
            size, digest = await self._receive(temp, chunks)
            if digest != sha256:
                raise DigestMismatch(
                    f"image {image}/{disk}: the bytes have SHA-256 {digest}, not {sha256}"
                )
            async with self._placing:
                await asyncio.to_thread(self._place, temp, image, disk, digest, size)
        except OSError as exc:
            if exc.errno == 28:  # ENOSPC
                raise SpoolFull(f"the image spool is full: {exc.strerror}") from None
            raise
        finally:
            await asyncio.shield(asyncio.to_thread(_unlink, temp))
        log.info("image %s/%s: %d bytes spooled (sha256 %s)", image, disk, size, digest)
        return SpoolDisk(disk=disk, bytes=size, sha256=digest)

    async def _receive(self, temp: Path, chunks: AsyncIterator[bytes]) -> tuple[int, str]:
        hasher, size = hashlib.sha256(), 0
        fd = await asyncio.to_thread(os.open, temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            batch = bytearray()
            async for chunk in chunks:
                hasher.update(chunk)
                size += len(chunk)
                batch += chunk
                if len(batch) >= BATCH:
                    await asyncio.to_thread(write_all, fd, bytes(batch))
                    batch.clear()
            if batch:
                await asyncio.to_thread(write_all, fd, bytes(batch))
            await asyncio.to_thread(os.fsync, fd)
        finally:
            await asyncio.shield(asyncio.to_thread(os.close, fd))
        return size, hasher.hexdigest()

    def _place(self, temp: Path, image: str, disk: str, sha256: str, size: int) -> None:
        data, digest = self._paths(image, disk)
        created = not data.parent.exists()
        data.parent.mkdir(mode=0o700, exist_ok=True)
        if created:
            fsync_dir(self.root)
        with contextlib.suppress(FileNotFoundError):
            digest.unlink()  # (the old bytes' digest: the disk is absent until the new one)
        os.replace(temp, data)
        write_atomic(digest, f"{sha256} {size}\n".encode())

    async def remove(self, image: str) -> bool:
        """Remove the image and its disks; False if it was not there."""
        directory = self._dir(image)
        async with self._placing:
            return await asyncio.to_thread(_remove_tree, directory, self.root)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _remove_tree(directory: Path, parent: Path) -> bool:
    if not directory.exists():
        return False
    shutil.rmtree(directory)
    fsync_dir(parent)
    log.info("image %s removed from the spool", directory.name)
    return True
