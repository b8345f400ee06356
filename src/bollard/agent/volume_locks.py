"""One writer per disk: the locks of volumes of shared pools, taken before a VM starts and
given back when it stops.

A lock names the host that holds the volume open, the VM and its epoch there, and the host's
boot id (drivers/storage.py LockHolder). Before a start the agent takes the lock of each of
the VM's shared volumes (``acquire``):

- not locked: taken;
- held by this host for this VM: taken again with the new epoch and boot id (a stale lock this
  host holds from before a crash or reboot is flushed);
- held by another host: the start is refused (``DriverInvalidState``, code ``volume-locked``)
  unless the server names that host as one whose locks may be broken: a host whose fence is
  confirmed (it is off), or the source of a live migration that has completed (the VM runs
  here now);
- held by this host for another VM: refused (a volume is one VM's disk).

When the VM stops (stop, shutdown, undefine) its locks are given back (``release``). Every
write is a compare-and-set on the holder read, so two hosts racing for one lock never both
take it.

``DirLocks`` keeps locks as files beside the volumes, in ``<pool dir>/.bollard-locks/``, where
every host of the shared pool sees them; the compare-and-set holds an exclusive ``flock`` on a
guard file there (NFSv4 maps it to a lock of the server). Drivers whose shared pools are not a
directory the agent sees (none yet) implement VolumeLocker themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bollard.agent.drivers.base import HypervisorDriver
from bollard.agent.drivers.storage import LockHolder, PoolRef, VolumeLocker, check_file
from bollard.domain.errors import DriverError, DriverInvalidState, DriverTemporary
from bollard.durable import write_atomic

log = logging.getLogger(__name__)

LOCK_DIR = ".bollard-locks"
GUARD = ".guard"
GUARD_TIMEOUT = 10.0
LOCKED = "volume-locked"  # the answer's error code of a start refused by a lock


class LockArgs(BaseModel):
    """What a start (or stop) carries about the VM's shared volumes."""

    model_config = ConfigDict(extra="ignore")

    holder: str = Field(min_length=1, max_length=63)  # this host's node name
    epoch: int = Field(ge=0)
    volumes: list[PoolRef] = Field(default_factory=list, max_length=16)
    files: list[str] = Field(default_factory=list, max_length=16)
    # Hosts whose locks may be taken over: fenced ones, and the source of a completed live
    # migration of this VM.
    breakable: list[str] = Field(default_factory=list, max_length=10_000)


class DirLocks:
    """VolumeLocker on a pool directory the agent sees."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory / LOCK_DIR

    def _path(self, file: str) -> Path:
        return self.dir / f"{check_file(file)}.lock"

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / GUARD, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + GUARD_TIMEOUT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise DriverTemporary(f"lock directory {self.dir} is busy") from None
                    time.sleep(0.01)  # backoff between attempts, bounded by the deadline
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _read(self, file: str) -> LockHolder | None:
        try:
            raw = self._path(file).read_bytes()
        except FileNotFoundError:
            return None
        try:
            return LockHolder.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as exc:
            # A torn or foreign file: treated as held by nobody known, so nobody takes it.
            raise DriverInvalidState(
                f"lock file {self._path(file)} is unreadable ({exc}); remove it by hand once "
                "no host uses the volume",
                code=LOCKED,
            ) from None

    def read(self, file: str) -> LockHolder | None:
        return self._read(file)

    def write(self, file: str, holder: LockHolder, expect: LockHolder | None) -> bool:
        with self._guard():
            if self._read(file) != expect:
                return False
            write_atomic(self._path(file), holder.model_dump_json().encode(), mode=0o644)
            return True

    def remove(self, file: str, expect: LockHolder) -> bool:
        with self._guard():
            if self._read(file) != expect:
                return False
            self._path(file).unlink(missing_ok=True)
            return True


def locker_for(driver: HypervisorDriver, pool: PoolRef) -> VolumeLocker | DirLocks | None:
    """The driver's own locks, or lock files in the pool's directory (a real path)."""
    if isinstance(driver, VolumeLocker):
        return driver
    if pool.path and Path(pool.path).is_absolute():
        return DirLocks(Path(pool.path))
    return None


async def _read(locker: VolumeLocker | DirLocks, pool: PoolRef, file: str) -> LockHolder | None:
    if isinstance(locker, DirLocks):
        return await asyncio.to_thread(locker.read, file)
    return await locker.read_lock(pool, file)


async def _write(
    locker: VolumeLocker | DirLocks,
    pool: PoolRef,
    file: str,
    holder: LockHolder,
    expect: LockHolder | None,
) -> bool:
    if isinstance(locker, DirLocks):
        return await asyncio.to_thread(locker.write, file, holder, expect)
    return await locker.write_lock(pool, file, holder, expect=expect)


async def _remove(
    locker: VolumeLocker | DirLocks, pool: PoolRef, file: str, expect: LockHolder
) -> bool:
    if isinstance(locker, DirLocks):
        return await asyncio.to_thread(locker.remove, file, expect)
    return await locker.remove_lock(pool, file, expect=expect)


def parse(args: dict[str, Any]) -> LockArgs | None:
    raw = args.get("locks")
    if raw is None:
        return None
    try:
        return LockArgs.model_validate(raw)
    except ValidationError as exc:
        raise DriverError(f"locks: {exc.errors()[0]['msg']}", code="invalid-input") from None


async def acquire(driver: HypervisorDriver, uuid: str, locks: LockArgs, boot_id: str) -> list[str]:
    """Take the lock of each of the VM's shared volumes (see the module docstring); what was
    flushed or broken, for the answer. On a refusal the locks this call took are given back."""
    taken: list[tuple[VolumeLocker | DirLocks, PoolRef, str, LockHolder]] = []
    notes: list[str] = []
    mine = LockHolder(
        node=locks.holder, vm_uuid=uuid, epoch=locks.epoch, boot_id=boot_id, taken_at=time.time()
    )
    try:
        for pool, file in zip(locks.volumes, locks.files, strict=True):
            locker = locker_for(driver, pool)
            if locker is None:
                continue
            for _attempt in range(3):  # a concurrent change: read again
                current = await _read(locker, pool, file)
                if current is not None and current.node != locks.holder:
                    if current.node not in locks.breakable:
                        raise DriverInvalidState(
                            f"volume {file} of pool {pool.name} is locked by host "
                            f"{current.node} (VM {current.vm_uuid}, epoch {current.epoch}): "
                            "refusing to start the VM here while that host may use it",
                            code=LOCKED,
                        )
                    notes.append(f"lock of {file} taken over from {current.node}")
                elif current is not None and current.vm_uuid != uuid:
                    raise DriverInvalidState(
                        f"volume {file} of pool {pool.name} is held by VM {current.vm_uuid} on "
                        "this host",
                        code=LOCKED,
                    )
                elif current is not None and current != mine and current.boot_id != boot_id:
                    notes.append(f"stale lock of {file} from before a restart flushed")
                if await _write(locker, pool, file, mine, current):
                    taken.append((locker, pool, file, mine))
                    break
            else:
                raise DriverTemporary(f"the lock of volume {file} kept changing; try again")
    except BaseException:
        for locker, pool, file, holder in taken:
            with contextlib.suppress(DriverError, OSError):
                await _remove(locker, pool, file, holder)
        raise
    for note in notes:
        log.warning("VM %s: %s", uuid, note)
    return notes


async def release(driver: HypervisorDriver, uuid: str, locks: LockArgs) -> int:
    """Give back the locks this host holds for the VM; how many."""
    released = 0
    for pool, file in zip(locks.volumes, locks.files, strict=True):
        locker = locker_for(driver, pool)
        if locker is None:
            continue
        current = await _read(locker, pool, file)
        if current is None or current.node != locks.holder or current.vm_uuid != uuid:
            continue
        if await _remove(locker, pool, file, current):
            released += 1
    return released
