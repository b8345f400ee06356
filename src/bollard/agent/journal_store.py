"""Where the command journal keeps its entries: a directory (durable) or memory (tests).

Directory layout (``DirJournalStore``)::

    <state>/journal/<command_id>.json   one JournalEntry per unfinished or unacknowledged
                                        command, replaced atomically at every change
    <state>/journal/finished.jsonl      compact records of pruned, finished commands
                                        (one JournalEntry per line, appended, then compacted)
    <state>/journal/quarantine/         torn or corrupt files set aside at load

Every write is durable when the call returns (fsync of the file and of the directory).
Pruning appends the finished records (fsync) *before* it deletes the entry files, so a
crash in between leaves a command in both places, never in neither.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from bollard.domain.protocol import JournalEntry
from bollard.durable import TMP_PREFIX, append_durably, fsync_dir, write_atomic

log = logging.getLogger(__name__)

FINISHED_FILE = "finished.jsonl"
QUARANTINE_DIR = "quarantine"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class Loaded:
    entries: list[JournalEntry] = field(default_factory=list)
    finished: list[JournalEntry] = field(default_factory=list)  # oldest first
    corrupt: int = 0  # torn or unreadable records set aside


class JournalStore(Protocol):
    def load(self) -> Loaded:
        """Everything stored; corrupt records are set aside (and counted), never raised."""
        ...

    def put(self, entry: JournalEntry) -> None:
        """Create or replace the entry; durable on return."""
        ...

    def retire(self, entries: Sequence[JournalEntry]) -> None:
        """Append these entries to the finished records, then remove their full entries."""
        ...

    def compact(self, finished: Sequence[JournalEntry]) -> None:
        """Replace the finished records with exactly ``finished`` (oldest first)."""
        ...

    @property
    def finished_records(self) -> int:
        """Records in the finished log, superseded ones included (to decide compaction)."""
        ...


class MemoryJournalStore:
    """Keeps everything in memory: for tests, and for an executor run without a state dir."""

    def __init__(self) -> None:
        self.entries: dict[str, JournalEntry] = {}
        self.finished: list[JournalEntry] = []

    def load(self) -> Loaded:
        return Loaded(list(self.entries.values()), list(self.finished), 0)

    def put(self, entry: JournalEntry) -> None:
        self.entries[entry.command_id] = entry

    def retire(self, entries: Sequence[JournalEntry]) -> None:
        self.finished.extend(entries)
        for entry in entries:
            self.entries.pop(entry.command_id, None)

    def compact(self, finished: Sequence[JournalEntry]) -> None:
        self.finished = list(finished)

    @property
    def finished_records(self) -> int:
        return len(self.finished)


def entry_file_name(command_id: str) -> str:
    """Command ids that are safe file names are used as is; others are hashed."""
    if _SAFE_ID.match(command_id):
        return f"{command_id}.json"
    return f"_h_{hashlib.sha256(command_id.encode()).hexdigest()[:40]}.json"


class DirJournalStore:
    """One file per entry in ``root``, written atomically and fsynced."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.finished_path = root / FINISHED_FILE
        self.quarantine_dir = root / QUARANTINE_DIR
        self._finished_records = 0

    def __repr__(self) -> str:
        return f"DirJournalStore({str(self.root)!r})"

    @property
    def finished_records(self) -> int:
        return self._finished_records

    def _path(self, command_id: str) -> Path:
        return self.root / entry_file_name(command_id)

    # loading

    def load(self) -> Loaded:
        created = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        if created:
            fsync_dir(self.root.parent)
        loaded = Loaded()
        for dirent in sorted(os.scandir(self.root), key=lambda d: d.name):
            if not dirent.is_file():
                continue
            path = Path(dirent.path)
            if dirent.name.startswith(TMP_PREFIX):
                # A write that never reached its rename: the old version is intact.
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            if not dirent.name.endswith(".json"):
                continue
            entry = self._read_entry(path)
            if entry is None:
                loaded.corrupt += 1
            else:
                loaded.entries.append(entry)
        finished, bad = self._read_finished()
        loaded.finished = finished
        loaded.corrupt += bad
        loaded.entries.sort(key=lambda e: (e.received_at, e.command_id))
        return loaded

    def _read_entry(self, path: Path) -> JournalEntry | None:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            self._quarantine(path, f"unreadable: {exc.strerror or exc}")
            return None
        try:
            entry = JournalEntry.model_validate_json(raw)
        except ValidationError as exc:
            reason = "empty file" if not raw.strip() else f"{exc.error_count()} errors"
            self._quarantine(path, f"not a journal entry ({reason})")
            return None
        if entry_file_name(entry.command_id) != path.name:
            self._quarantine(path, f"file name does not match command id {entry.command_id!r}")
            return None
        return entry

    def _quarantine(self, path: Path, reason: str) -> None:
        target = self.quarantine_dir / f"{path.name}.{time.time_ns()}"
        try:
            self.quarantine_dir.mkdir(exist_ok=True)
            os.replace(path, target)
            fsync_dir(self.root)
        except OSError as exc:
            log.error(
                "journal: corrupt entry %s (%s) could not be set aside: %s", path, reason, exc
            )
            return
        log.warning("journal: corrupt entry %s set aside as %s: %s", path.name, target, reason)

    def _read_finished(self) -> tuple[list[JournalEntry], int]:
        try:
            raw = self.finished_path.read_bytes()
        except FileNotFoundError:
            self._finished_records = 0
            return [], 0
        records: list[JournalEntry] = []
        bad: list[bytes] = []
        lines = raw.split(b"\n")
        # Text after the last newline is an append cut short by a crash. Its entries were
        # only deleted after the append was complete, so they are still there: drop it.
        torn = lines.pop()
        if torn:
            log.info("journal: dropping a torn last line of %s", self.finished_path)
        for line in lines:
            if not line.strip():
                continue
            try:
                records.append(JournalEntry.model_validate_json(line))
            except ValidationError:
                bad.append(line)
        self._finished_records = len(records)
        if bad:
            self.quarantine_dir.mkdir(exist_ok=True)
            target = self.quarantine_dir / f"{FINISHED_FILE}.{time.time_ns()}"
            write_atomic(target, b"\n".join(bad) + b"\n")
            log.warning(
                "journal: %d unreadable finished record(s) set aside in %s", len(bad), target
            )
        if bad or torn:
            # Rewrite without them, so that later appends start on a clean line.
            self.compact(records)
        return records, len(bad)

    # writing

    def put(self, entry: JournalEntry) -> None:
        write_atomic(self._path(entry.command_id), entry.model_dump_json().encode())

    def retire(self, entries: Sequence[JournalEntry]) -> None:
        if not entries:
            return
        data = b"".join(e.model_dump_json().encode() + b"\n" for e in entries)
        append_durably(self.finished_path, data)
        self._finished_records += len(entries)
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                self._path(entry.command_id).unlink()
        fsync_dir(self.root)

    def compact(self, finished: Sequence[JournalEntry]) -> None:
        data = b"".join(e.model_dump_json().encode() + b"\n" for e in finished)
        write_atomic(self.finished_path, data)
        self._finished_records = len(finished)
