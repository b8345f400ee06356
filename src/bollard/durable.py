"""Crash-safe file writes, shared by the agent's state dir and the sim fabric.

``write_atomic``: temp file in the same directory, fsync, rename over the target, fsync the
directory; a reader (or a process after a crash) sees the old content or the new, never a
mix. ``append_durably``: one record appended and fsynced; a crash mid-write leaves at most a
torn last record, and a failed write is truncated back so the next append starts clean.
Both write every byte, however short the writes ``os.write`` makes.

A neutral leaf: it imports nothing of bollard, so every package may use it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import uuid
from pathlib import Path

TMP_PREFIX = ".tmp-"

_log = logging.getLogger(__name__)


def fsync_dir(directory: Path) -> None:
    """Make the directory's entries (a file created, renamed or removed) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``: ``os.write`` may write fewer bytes than given."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically and durably (new files get ``mode``)."""
    tmp = path.parent / f"{TMP_PREFIX}{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if sync_dir:
        fsync_dir(path.parent)


def append_durably(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Append ``data`` to ``path`` (created with ``mode`` if absent) and fsync it.

    A failed write is truncated back to where the file ended, so the next append starts
    clean; when the file was created, its directory is fsynced too.
    """
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            write_all(fd, data)
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)


def private_dir(path: Path) -> None:
    """Create `path` mode 0700, or take group and other access away from an existing one
    (the data dir holds the database, tokens, keys and logs)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        _log.warning("%s was mode %04o; now 0700 (it holds secrets)", path, mode)
        path.chmod(0o700)


def private_file(path: Path) -> None:
    """Create `path` empty, mode 0600, if it does not exist; make an existing one 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        _log.warning("%s was mode %04o; now 0600", path, mode)
        path.chmod(0o600)
