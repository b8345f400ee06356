"""bollard.durable: every byte written even when os.write writes fewer, fsync, clean failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bollard import durable
from bollard.durable import TMP_PREFIX, append_durably, write_atomic

REAL_WRITE = os.write


class ShortWrites:
    """Stands in for os.write: writes at most ``chunk`` bytes per call, and counts the calls
    and the fsyncs of the file descriptors written to."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, chunk: int = 3) -> None:
        self.chunk = chunk
        self.calls = 0
        self.fsynced: list[int] = []
        real_fsync = os.fsync

        def write(fd: int, data: bytes | memoryview) -> int:
            self.calls += 1
            return REAL_WRITE(fd, memoryview(data)[: self.chunk])

        def fsync(fd: int) -> None:
            self.fsynced.append(fd)
            real_fsync(fd)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "fsync", fsync)


def test_append_durably_loops_on_short_writes_and_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"first\n")
    writes = ShortWrites(monkeypatch)
    append_durably(path, b"second record\n")
    assert path.read_bytes() == b"first\nsecond record\n"
    assert writes.calls == 5  # 14 bytes, 3 at a time
    assert writes.fsynced  # the file (an existing one: its directory needs none)


def test_append_durably_creates_the_file_with_its_mode_and_syncs_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(durable, "fsync_dir", synced.append)
    path = tmp_path / "new.log"
    append_durably(path, b"one\n", mode=0o644)
    append_durably(path, b"two\n", mode=0o644)
    assert path.read_bytes() == b"one\ntwo\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 & ~_umask()
    assert synced == [tmp_path]  # once: when the file was created


def test_a_failed_append_is_truncated_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"kept\n")
    calls = 0

    def write(fd: int, data: bytes | memoryview) -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError(28, "No space left on device")
        return REAL_WRITE(fd, memoryview(data)[:4])

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(OSError, match="No space"):
        append_durably(path, b"torn record\n")
    monkeypatch.undo()
    assert path.read_bytes() == b"kept\n"
    append_durably(path, b"next\n")
    assert path.read_bytes() == b"kept\nnext\n"


def test_write_atomic_loops_on_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"old")
    writes = ShortWrites(monkeypatch, chunk=2)
    write_atomic(path, b'{"new": true}')
    assert path.read_bytes() == b'{"new": true}'
    assert writes.calls == 7
    assert writes.fsynced  # the temp file, then the directory
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failed_write_atomic_keeps_the_old_content_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"old")

    def write(fd: int, data: bytes | memoryview) -> int:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(OSError, match="Input/output"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
