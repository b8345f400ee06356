"""Crash-safe file primitives for the fabric: atomic JSON writes, tolerant reads, a flock.

Writers go through a temp file in the same directory, fsync it, ``os.replace`` it over the
target and fsync the directory (``bollard.durable``), so a reader sees either the old or the
new content, never a torn file. Mutations take an exclusive ``fcntl.flock`` on one lock
file; the lock is taken without blocking and retried with a short backoff until a deadline,
so no caller waits forever on a stuck holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bollard.durable import append_durably, write_atomic

log = logging.getLogger(__name__)

DEFAULT_LOCK_TIMEOUT = 10.0

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# Corrupt files already reported (path, mtime_ns, size), so a heartbeat loop reading the
# same bad file every few seconds logs it once, not forever.
_reported: set[tuple[str, int, int]] = set()


class FabricBusy(TimeoutError):
    """The fabric lock could not be taken before the deadline."""


def check_component(kind: str, value: str) -> str:
    """Names that become path components (node names, VM uuids, command ids): refuse anything
    that could escape its directory."""
    if not NAME_RE.match(value):
        raise ValueError(f"invalid {kind} {value!r}: use letters, digits, '.', '_' or '-'")
    return value


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
    write_atomic(path, payload, mode=0o644)


def append_line_durably(path: Path, line: str) -> None:
    """Append one line (``line`` must not contain a newline) and fsync it.

    A write cut short by a crash leaves at most a torn last line, which readers skip; a
    failed write is truncated back so the next line starts clean.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    append_durably(path, (line + "\n").encode(), mode=0o644)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None if the file is absent or corrupt (corrupt is logged)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        report_corrupt(path, f"invalid JSON: {exc}")
        return None
    if not isinstance(data, dict):
        report_corrupt(path, f"expected a JSON object, got {type(data).__name__}")
        return None
    return data


def report_corrupt(path: Path, reason: str) -> None:
    try:
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
    except OSError:
        key = (str(path), 0, 0)
    if key in _reported:
        return
    _reported.add(key)
    log.warning("sim fabric: skipping corrupt file %s (%s)", path, reason)


@contextlib.contextmanager
def flock(path: Path, timeout: float = DEFAULT_LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if needed) for the ``with`` block.

    Not reentrant: do not nest two ``flock`` blocks on the same file in one thread.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FabricBusy(f"could not lock {path} within {timeout:.1f}s") from None
                # Backoff between non-blocking attempts, bounded by the deadline.
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
