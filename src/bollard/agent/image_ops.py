"""The image commands: a volume's image to and from the cell server's image spool.

``volume_export`` (args: pool, file, image, disk) reads the volume's image twice through the
driver (``export_volume``, see drivers/storage.py): once for its SHA-256 and size, then to
upload it, ``PUT <server>/api/v1/agent/images/{image}/{disk}`` with header
``X-Content-SHA256`` (the server refuses bytes that do not match, and keeps nothing of them).
Its result: ``{"sha256", "bytes", "format", "size_mb", "checksum"}`` (``checksum``: the
driver's digest of the guest-visible content). Run again, it uploads the same bytes again.

``volume_import`` (args: pool, file, format, size_mb, image, disk, sha256) downloads
``GET <server>/api/v1/agent/images/{image}/{disk}`` into a new volume
(``import_volume``): the digest of the bytes is checked as they end, before the volume
appears under its name, so bytes that do not match leave nothing. A file already there whose
image has that digest is the import done already (success); one with other content is
refused (invalid-state). Its result: ``{"volume": VolumeInfo, "sha256", "bytes"}``.

Both speak to the server the agent's session uses (its URL, TLS context and node token:
``ImageServer``), one connection per command, streamed both ways: no image is ever held in
memory. They send ``progress`` messages as the copies do (``volume_export read: 40%``,
``volume_export upload: 70%``, ``volume_import download: 35%``), on each tenth, on a change of
phase and at least every ``every`` seconds. Errors: the server not reachable or failing
(5xx) is ``temporary``; a digest that does not match is ``sha256-mismatch``; an image the
server does not have is ``not-found``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bollard.agent.drivers.base import HypervisorDriver
from bollard.agent.drivers.storage import (
    IMAGE_CHUNK,
    VOLUME_FILE,
    PoolRef,
    StorageDriver,
    VolumeFormat,
)
from bollard.agent.operations import failure
from bollard.domain.errors import (
    DriverError,
    DriverInvalidState,
    DriverNotFound,
    DriverPermanent,
    DriverTemporary,
)
from bollard.domain.protocol import Answer, Command, Progress
from bollard.domain.states import CommandType
from bollard.domain.storage import UNSUPPORTED

log = logging.getLogger(__name__)

IMAGE_COMMANDS = frozenset({CommandType.VOLUME_EXPORT, CommandType.VOLUME_IMPORT})
AGENT_IMAGES = "/api/v1/agent/images"
SHA256_HEADER = "X-Content-SHA256"
# An image's and a disk's name in the spool (not starting with a dot).
IMAGE_NAME = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$"
SHA256 = r"^[0-9a-f]{64}$"
MISMATCH = "sha256-mismatch"
MIB = 1024 * 1024
HTTP_TIMEOUT = 60.0  # seconds without progress (connect, one read or one write) at most
PROGRESS_EVERY = 0.5

Send = Callable[[Progress], Awaitable[object]]


class _Args(BaseModel):
    model_config = ConfigDict(extra="ignore")

    pool: PoolRef
    file: str = Field(pattern=VOLUME_FILE)
    image: str = Field(pattern=IMAGE_NAME)
    disk: str = Field(pattern=IMAGE_NAME)


class ExportArgs(_Args):
    pass


class ImportArgs(_Args):
    format: VolumeFormat
    size_mb: int = Field(ge=1, le=2**31 - 1)
    sha256: str = Field(pattern=SHA256)


class ImageServer:
    """The cell server's image spool as this agent reaches it: the session's server URL,
    TLS context (None: plain http) and node token (never logged)."""

    def __init__(
        self,
        server_url: str,
        token: str,
        tls: ssl.SSLContext | None,
        *,
        timeout: float = HTTP_TIMEOUT,
    ) -> None:
        self.base = server_url.strip().rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._tls = tls
        self._timeout = timeout

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            headers=self._headers,
            verify=self._tls if self._tls is not None else True,
            timeout=httpx.Timeout(self._timeout),
        )

    def url(self, image: str, disk: str) -> str:
        return f"{self.base}{AGENT_IMAGES}/{quote(image)}/{quote(disk)}"

    async def upload(
        self, image: str, disk: str, sha256: str, size: int, body: AsyncIterator[bytes]
    ) -> None:
        """PUT the image's bytes (``size`` of them, whose digest is ``sha256``)."""
        what = f"upload of image {image}/{disk}"
        headers = {SHA256_HEADER: sha256, "Content-Length": str(size)}
        async with self._client() as client:
            try:
                answer = await client.put(self.url(image, disk), content=body, headers=headers)
            except httpx.HTTPError as exc:
                raise DriverTemporary(f"{what}: {_brief(exc)}") from None
        _check(answer, what)

    @asynccontextmanager
    async def download(
        self, image: str, disk: str
    ) -> AsyncIterator[tuple[int | None, str | None, AsyncIterator[bytes]]]:
        """The image's length (None: not said), the digest the server has for it, and its
        bytes as they arrive."""
        what = f"download of image {image}/{disk}"
        async with self._client() as client:
            try:
                async with client.stream("GET", self.url(image, disk)) as answer:
                    if answer.status_code >= 300:
                        await answer.aread()
                        _check(answer, what)
                    length = answer.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    yield total, answer.headers.get(SHA256_HEADER), _reading(answer, what)
            except httpx.HTTPError as exc:
                raise DriverTemporary(f"{what}: {_brief(exc)}") from None


async def _reading(answer: httpx.Response, what: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in answer.aiter_bytes(IMAGE_CHUNK):
            yield chunk
    except httpx.HTTPError as exc:
        raise DriverTemporary(f"{what}: {_brief(exc)}") from None


def _brief(exc: httpx.HTTPError) -> str:
    return str(exc) or type(exc).__name__


def _check(answer: httpx.Response, what: str) -> None:
    """DriverError for an answer that is not a success, naming what the server said."""
    if answer.status_code < 300:
        return
    try:
        said = str(answer.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        said = answer.text[:200] or answer.reason_phrase
    message = f"{what}: the server answered {answer.status_code}: {said}"
    if answer.status_code == 404:
        raise DriverNotFound(message)
    if answer.status_code == 422:
        raise DriverPermanent(message, code=MISMATCH)
    if answer.status_code >= 500 or answer.status_code in (408, 429):
        raise DriverTemporary(message)
    raise DriverPermanent(message)


class Reporter:
    """Sends a command's ``progress`` (see the module's docstring)."""

    def __init__(self, send: Send | None, command_id: str, kind: str, every: float) -> None:
        self._send = send
        self._command_id = command_id
        self._kind = kind
        self._every = every
        self._last: tuple[int, str, float] | None = None

    async def __call__(self, phase: str, fraction: float) -> None:
        if self._send is None:
            return
        fraction = min(1.0, max(0.0, fraction))
        tenth, now = int(fraction * 10), asyncio.get_running_loop().time()
        last = self._last
        if last is not None and (tenth, phase) == last[:2] and now - last[2] < self._every:
            return
        self._last = (tenth, phase, now)
        message = f"{self._kind} {phase}: {fraction:.0%}"
        await self._send(Progress(command_id=self._command_id, fraction=fraction, message=message))


async def _closing(chunks: AsyncIterator[bytes]) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


async def digest_of(
    storage: StorageDriver,
    pool: PoolRef,
    file: str,
    report: Callable[[int], Awaitable[None]] | None = None,
) -> tuple[str, int]:
    """The SHA-256 (hex) and length of the volume's image."""
    hasher, size = hashlib.sha256(), 0
    chunks = storage.export_volume(pool, file)
    try:
        async for chunk in chunks:
            hasher.update(chunk)
            size += len(chunk)
            if report is not None:
                await report(size)
    finally:
        await _closing(chunks)
    return hasher.hexdigest(), size


def _storage(driver: HypervisorDriver) -> StorageDriver:
    if not isinstance(driver, StorageDriver):
        raise DriverError(f"the {driver.name} driver has no storage pools", code=UNSUPPORTED)
    return driver


async def export(
    driver: HypervisorDriver, a: ExportArgs, server: ImageServer, report: Reporter
) -> dict[str, Any]:
    storage = _storage(driver)
    info = await storage.volume(a.pool, a.file)
    if info is None:
        raise DriverNotFound(f"volume {a.file} is not in pool {a.pool.name} on this host")
    if info.partial:
        raise DriverInvalidState(f"volume {a.file} is being copied into")
    checksum = await storage.checksum(a.pool, a.file)
    estimate = max(1, info.allocated_mb * MIB)

    async def read(done: int) -> None:
        await report("read", 0.5 * min(1.0, done / estimate))

    sha256, size = await digest_of(storage, a.pool, a.file, read)

    async def body() -> AsyncIterator[bytes]:
        hasher, sent = hashlib.sha256(), 0
        chunks = storage.export_volume(a.pool, a.file)
        try:
            async for chunk in chunks:
                hasher.update(chunk)
                sent += len(chunk)
                if sent > size:
                    break
                yield chunk
                await report("upload", 0.5 + 0.5 * sent / max(1, size))
        finally:
            await _closing(chunks)
        if (sent, hasher.hexdigest()) != (size, sha256):
            raise DriverInvalidState(f"volume {a.file} changed while it was exported")

    await server.upload(a.image, a.disk, sha256, size, body())
    log.info("volume %s exported as image %s/%s (%d bytes)", a.file, a.image, a.disk, size)
    return {
        "sha256": sha256,
        "bytes": size,
        "format": info.format,
        "size_mb": info.size_mb,
        "checksum": checksum,
    }


async def _verified(
    chunks: AsyncIterator[bytes],
    sha256: str,
    total: int | None,
    report: Reporter,
    counted: list[int],
) -> AsyncIterator[bytes]:
    """The bytes as they arrive; at their end, DriverPermanent (sha256-mismatch) unless their
    digest is ``sha256`` (raised inside the driver's import: nothing is then left)."""
    hasher, size = hashlib.sha256(), 0
    async for chunk in chunks:
        hasher.update(chunk)
        size += len(chunk)
        yield chunk
        if total:
            await report("download", size / total)
    counted.append(size)
    if total is not None and size != total:
        raise DriverTemporary(f"the download ended after {size} of {total} bytes")
    if hasher.hexdigest() != sha256:
        raise DriverPermanent(
            f"the image's bytes have SHA-256 {hasher.hexdigest()}, not {sha256}", code=MISMATCH
        )


async def import_(
    driver: HypervisorDriver, a: ImportArgs, server: ImageServer, report: Reporter
) -> dict[str, Any]:
    storage = _storage(driver)
    existing = await storage.volume(a.pool, a.file)
    if existing is not None and not existing.partial:
        sha256, size = await digest_of(storage, a.pool, a.file)
        if sha256 != a.sha256:
            raise DriverInvalidState(
                f"volume {a.file} exists in pool {a.pool.name} with other content"
            )
        return {"volume": existing.model_dump(mode="json"), "sha256": sha256, "bytes": size}
    counted: list[int] = []
    async with server.download(a.image, a.disk) as (total, announced, chunks):
        if announced is not None and announced != a.sha256:
            raise DriverPermanent(
                f"image {a.image}/{a.disk} on the server has SHA-256 {announced}, not {a.sha256}",
                code=MISMATCH,
            )
        checked = _verified(chunks, a.sha256, total, report, counted)
        info = await storage.import_volume(a.pool, a.file, a.format, a.size_mb, checked)
    log.info("volume %s imported from image %s/%s", a.file, a.image, a.disk)
    size = counted[0] if counted else 0
    return {"volume": info.model_dump(mode="json"), "sha256": a.sha256, "bytes": size}


async def perform_image(
    driver: HypervisorDriver,
    command: Command,
    server: ImageServer | None,
    send: Send | None,
    every: float = PROGRESS_EVERY,
) -> Answer:
    """Run an image command; every error becomes a failed answer with its code."""
    kind = command.command
    report = Reporter(send, command.id, kind.value, every)
    try:
        if server is None:
            raise DriverError("this agent has no server to carry images", code=UNSUPPORTED)
        if kind is CommandType.VOLUME_EXPORT:
            result = await export(driver, ExportArgs.model_validate(command.args), server, report)
        elif kind is CommandType.VOLUME_IMPORT:
            result = await import_(driver, ImportArgs.model_validate(command.args), server, report)
        else:
            raise DriverError(f"{kind.value} is not an image command", code="invalid-input")
    except ValidationError as exc:
        return failure(command.id, "invalid-input", _brief_validation(exc))
    except DriverError as exc:
        return failure(command.id, exc.code, exc.message)
    except Exception as exc:
        log.exception("command %s: unexpected error", command.id)
        return failure(command.id, "internal", f"{type(exc).__name__}: {exc}")
    return Answer(command_id=command.id, ok=True, result=result)


def _brief_validation(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'args'}: {e['msg']}" for e in exc.errors()
    )
