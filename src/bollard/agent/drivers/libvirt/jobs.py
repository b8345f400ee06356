"""The libvirt driver's job records, and the jobs running in this process.

Jobs are migrations (``kind`` "migrate", see ``migrate``), volume copies ("volume-copy",
see ``volume_copy``) and live moves of a running VM's disk ("volume-move", see
``live_move``). libvirt keeps no trace of a job once it ended, nor of which Bollard
command started it, so the driver keeps its own: one JSON file per command in the jobs
directory
(``<jobs_dir>/<command_id>.json``), written atomically. A record is written before libvirt
is asked to do anything (status RUNNING, phase "prepare"), updated while the job runs
(phase, what libvirt answered, an abort asked for), and written once more when the job
ends; an ended record never changes again.

The thread that runs a job is registered in the ``JobTable`` of its jobs directory. There
is one table per directory in the process, shared by every driver object using that
directory, so a job outlives the driver object that started it (as long as the process
lives). A RUNNING record without a thread in this process was left by an earlier agent
process: what became of its job is then read from libvirt (see ``migrate``).

Ended records older than ``RETENTION`` are removed when the table is first used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bollard.agent.drivers.base import JobInfo, JobStatus
from bollard.durable import TMP_PREFIX, write_atomic

log = logging.getLogger(__name__)

RETENTION = 7 * 24 * 3600.0  # seconds an ended record is kept
_COMMAND_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class PoolDef(BaseModel):
    """A libvirt directory pool as a job record keeps it (see ``storage.Storage``)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    dir: str
    uuid: str | None = None
    shared: bool = False


class CopyPlan(BaseModel):
    """What a volume copy does (see ``volume_copy``)."""

    model_config = ConfigDict(extra="ignore")

    source_pool: PoolDef
    source_file: str
    source_format: str
    snapshot: str | None = None  # copy this internal snapshot of the source
    snapshot_size_mb: int | None = None  # its size (the copy is cut down to it)
    target_pool: PoolDef
    target_file: str
    target_format: str
    # True: qemu-img convert on this host (the target pool is here, or shared); False:
    # streamed to the target host's daemon (``target_uri``) through libvirt.
    here: bool
    # Streamed copies that need converting first (a snapshot, another format, a file with
    # snapshots): the converted file, hidden in the source's pool, removed afterwards.
    temp_file: str | None = None


class MovePlan(BaseModel):
    """What a live move of a running VM's disk does (see ``live_move``)."""

    model_config = ConfigDict(extra="ignore")

    device: str
    source_path: str  # the file the guest used when the move began
    source_format: str
    target_pool: PoolDef
    target_file: str
    target_format: str
    capacity: int  # bytes: the disk's size, which the target is made with
    persistent: bool = True  # the domain has a persistent definition (to point at the target)


class JobRecord(BaseModel):
    """One job (a migration, a volume copy or a live move) as the driver records it."""

    model_config = ConfigDict(extra="ignore")

    command_id: str
    kind: str = "migrate"
    vm_uuid: str = ""  # the VM a migration moves, or whose disk moves ("" for a copy)
    source: str  # this host: the agent's node name, or the libvirt URI
    target: str  # the target's node name
    target_uri: str = ""  # the libvirt URI of the target's daemon, as its endpoint gave it
    address: str | None = None  # the target's address for the migration stream
    live: bool = False
    new_epoch: int = 0
    # A migration: the paths of the disks it copies (None: a record of an older agent, which
    # copied the legacy disks only). A copy: its plan.
    disks: list[str] | None = None
    copy_plan: CopyPlan | None = None
    move_plan: MovePlan | None = None  # a live move: its plan
    started_at: float  # wall clock
    status: JobStatus = JobStatus.RUNNING
    phase: str = "prepare"
    progress: float = Field(default=0.0, ge=0.0, le=1.0)
    abort_reason: str | None = None  # an abort was asked for (the first reason given)
    call_error: str | None = None  # what the libvirt call answered, if it failed
    call_error_code: int = 0
    message: str = ""
    error_code: str = ""
    result: dict[str, Any] = Field(default_factory=dict)
    ended_at: float | None = None
    # A migration: when the VM was first seen landed on the target while its stopped
    # definition was still on this host (see migrate.CLEANUP_GRACE).
    leftover_seen_at: float | None = None


def job_info(rec: JobRecord, progress: float | None = None) -> JobInfo:
    """The job ``rec`` records, as the driver reports it; ``progress``: what the thread that
    runs it measured last (the record's own, if higher, is kept). ``vm_uuid`` is None for a
    job of no VM (a copy)."""
    return JobInfo(
        command_id=rec.command_id,
        kind=rec.kind,
        vm_uuid=rec.vm_uuid or None,
        status=rec.status,
        progress=rec.progress if progress is None else max(rec.progress, progress),
        supervised=True,
        message=rec.message,
        error_code=rec.error_code,
        phase=rec.phase,
        result=dict(rec.result),
    )


def partial_targets(records: list[JobRecord], directory: str) -> set[str]:
    """The files of pool directory ``directory`` that running copies and live moves of this
    host write (qemu-img convert or a block copy here; a file streamed in by another host's
    copy is not known here)."""
    running = [r for r in records if r.status == JobStatus.RUNNING]
    copies = {
        r.copy_plan.target_file
        for r in running
        if r.copy_plan is not None and r.copy_plan.here and r.copy_plan.target_pool.dir == directory
    }
    moves = {  # (once pivoted, the guest uses the target: it is the volume)
        r.move_plan.target_file
        for r in running
        if r.move_plan is not None
        and r.move_plan.target_pool.dir == directory
        and r.phase != "pivoted"
    }
    return copies | moves


def valid_command_id(command_id: str) -> bool:
    """Whether ``command_id`` can name a record file (letters, digits, '.', '_', '-')."""
    return bool(_COMMAND_ID.match(command_id))


class JobTable:
    """The records of one jobs directory and the threads running its jobs in this process.

    Its methods do blocking file I/O (call them in a thread from async code); OSError when
    the directory cannot be read or written.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._lock = threading.RLock()
        self._runners: dict[str, threading.Thread] = {}
        self._progress: dict[str, float] = {}
        self._pruned = False

    def _path(self, command_id: str) -> Path:
        if not valid_command_id(command_id):
            raise ValueError(f"invalid command id {command_id!r}")
        return self.dir / f"{command_id}.json"

    def _read(self, path: Path) -> JobRecord | None:
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError) as exc:
            log.error("libvirt job record %s is unreadable (ignored): %s", path, exc)
            return None
        try:
            return JobRecord.model_validate(data)
        except ValidationError as exc:
            log.error("libvirt job record %s is invalid (ignored): %s", path, exc)
            return None

    def _write(self, record: JobRecord) -> JobRecord:
        self.dir.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(record.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
        write_atomic(self._path(record.command_id), payload.encode())
        return record

    def get(self, command_id: str) -> JobRecord | None:
        """The record of this command (None: none, or not a valid command id)."""
        if not valid_command_id(command_id):
            return None
        return self._read(self._path(command_id))

    def all(self) -> list[JobRecord]:
        """Every record (running or ended), oldest first."""
        with self._lock:
            self._prune()
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        records = [
            rec
            for name in names
            if name.endswith(".json") and not name.startswith(TMP_PREFIX)
            if (rec := self._read(self.dir / name)) is not None
        ]
        return sorted(records, key=lambda r: (r.started_at, r.command_id))

    def create(self, record: JobRecord, runner: threading.Thread) -> tuple[JobRecord, bool]:
        """Write a new record and register its thread (the caller starts it); if the
        command has a record already, that one, untouched. Whether it was created."""
        with self._lock:
            existing = self.get(record.command_id)
            if existing is not None:
                return existing, False
            self._write(record)
            self._runners[record.command_id] = runner
            return record, True

    def update(self, command_id: str, **changes: Any) -> JobRecord | None:
        """Apply ``changes`` to a running job's record; an ended record is left as it is.
        The record as it now is (None: no such record)."""
        with self._lock:
            record = self.get(command_id)
            if record is None or record.status != JobStatus.RUNNING:
                return record
            return self._write(record.model_copy(update=changes))

    def finish(self, command_id: str, **changes: Any) -> JobRecord | None:
        """End a running job's record with ``changes`` (status, message, result...); a
        record that ended already is kept as it is (the first end wins)."""
        changes.setdefault("ended_at", time.time())
        return self.update(command_id, **changes)

    def ask_abort(self, command_id: str, reason: str) -> JobRecord | None:
        """Record that the job is to be aborted (the first reason given is kept)."""
        with self._lock:
            record = self.get(command_id)
            if record is None or record.abort_reason is not None:
                return record
            return self.update(command_id, abort_reason=reason)

    # the threads of this process

    def running_here(self, command_id: str) -> bool:
        """Whether a thread of this process still runs (or settles) the job."""
        with self._lock:
            return command_id in self._runners

    def runner_done(self, command_id: str) -> None:
        with self._lock:
            self._runners.pop(command_id, None)

    def forget_progress(self, command_id: str) -> None:
        """(The job ended: its record has its final progress.)"""
        with self._lock:
            self._progress.pop(command_id, None)

    def progress(self, command_id: str, fraction: float | None = None) -> float:
        """The job's progress as last seen, raised to ``fraction`` (it never goes back)."""
        with self._lock:
            known = self._progress.get(command_id, 0.0)
            if fraction is not None and fraction > known:
                self._progress[command_id] = known = min(1.0, fraction)
            return known

    def _prune(self) -> None:
        if self._pruned:
            return
        self._pruned = True
        cutoff = time.time() - RETENTION
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return
        for entry in entries:
            if not entry.name.endswith(".json") or entry.name.startswith(TMP_PREFIX):
                continue
            record = self._read(Path(entry.path))
            if record is not None and record.ended_at is not None and record.ended_at < cutoff:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


_tables: dict[Path, JobTable] = {}
_tables_lock = threading.Lock()


def table_for(directory: Path) -> JobTable:
    """The process's JobTable of ``directory`` (one per directory)."""
    key = directory.absolute()
    with _tables_lock:
        table = _tables.get(key)
        if table is None:
            table = _tables[key] = JobTable(key)
        return table
