"""The API server's image store: the disks of a VM moving between cells, on their way from
the source cell's image spool to the target cell's (no host-to-host link between cells).

`<data-dir>/images/<image>/<disk>`, each beside `<disk>.sha256`. A disk is streamed to a
temporary file while its SHA-256 is computed, checked against what the source said, fsynced
and only then renamed to its name: a disk under its name is always whole and right. Pushing
sends it with its SHA-256, which the target checks the same way."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx

from bollard.cells.directory import CellClient, CellUnreachable, refusal
from bollard.domain.errors import BollardError, InvalidInput

CHUNK = 1024 * 1024
SHA_HEADER = "x-content-sha256"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
TRANSFER_DEADLINE = 3600.0  # a disk's whole transfer (read timeout per chunk: the cell deadline)

Progress = Callable[[int], Awaitable[None]]


class ImageCorrupt(BollardError):
    code = "image-corrupt"
    http_status = 409


def _check(name: str) -> str:
    if not _NAME.match(name) or name in (".", ".."):
        raise InvalidInput(f"{name!r} is not an image or disk name")
    return name


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, image: str, disk: str) -> Path:
        return self.root / _check(image) / _check(disk)

    def sha256(self, image: str, disk: str) -> str | None:
        digest = self.path(image, disk).with_name(disk + ".sha256")
        if not digest.exists() or not self.path(image, disk).exists():
            return None
        return digest.read_text().strip()

    def remove(self, image: str) -> None:
        shutil.rmtree(self.root / _check(image), ignore_errors=True)

    async def pull(
        self, client: CellClient, image: str, disk: str, sha256: str, progress: Progress
    ) -> int:
        """Bring `disk` of `image` from the cell's spool here (nothing if it is here already,
        with that SHA-256); its size in bytes. ImageCorrupt if the bytes do not match."""
        target = self.path(image, disk)
        if self.sha256(image, disk) == sha256:
            return target.stat().st_size
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = target.with_name(disk + ".partial")
        digest = hashlib.sha256()
        size = 0
        try:
            async with client.http.stream(
                "GET", f"/images/{image}/{disk}", timeout=client.deadline
            ) as answer:
                if answer.status_code >= 400:
                    await answer.aread()
                    raise refusal(client.name, answer)
                with partial.open("wb") as out:
                    async for chunk in answer.aiter_bytes(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                        await progress(size)
                    out.flush()
                    os.fsync(out.fileno())
        except (OSError, BollardError):
            partial.unlink(missing_ok=True)
            raise
        except (httpx.TransportError, httpx.StreamError) as exc:  # the cell went away
            partial.unlink(missing_ok=True)
            raise CellUnreachable(client.name, f"{type(exc).__name__}: {exc}") from exc
        if digest.hexdigest() != sha256:
            partial.unlink(missing_ok=True)
            raise ImageCorrupt(
                f"disk {disk} of image {image} from cell {client.name}: SHA-256 "
                f"{digest.hexdigest()}, expected {sha256}"
            )
        target.with_name(disk + ".sha256").write_text(sha256 + "\n")
        partial.replace(target)
        _sync_dir(target.parent)
        return size

    async def push(self, client: CellClient, image: str, disk: str, progress: Progress) -> int:
        """Send `disk` of `image` to the cell's spool, with its SHA-256 (which it checks)."""
        source = self.path(image, disk)
        sha256 = self.sha256(image, disk)
        if sha256 is None:
            raise BollardError(f"disk {disk} of image {image} is not in the API server's store")
        sent = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal sent
            with source.open("rb") as f:
                while chunk := await asyncio.to_thread(f.read, CHUNK):
                    sent += len(chunk)
                    await progress(sent)
                    yield chunk

        answer = await client.call(
            "PUT", f"/images/{image}/{disk}", content=body(),
            headers={SHA_HEADER: sha256, "content-type": "application/octet-stream"},
            deadline=TRANSFER_DEADLINE,
        )  # fmt: skip
        if answer.status_code >= 400:
            raise refusal(client.name, answer)
        return sent


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
