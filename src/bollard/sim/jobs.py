"""Long hypervisor operations on a sim host, one file per job: ``<host>/jobs/<command_id>.json``.

A job's progress is a function of wall-clock time (``started_at`` + ``duration``), so it
advances, and completes, whether or not an agent is alive to watch it, as the jobs of a
real hypervisor do. Aborting stamps ``aborted_at``; a job that completed stays completed.

A migration job (``SimJob.migration``) has effects on the fabric when its phases are due;
bollard.sim.migration applies them. Here, aborting one only stamps it, and only before its
switchover (the point of no return); the fabric's next settling rolls it back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from pydantic import ValidationError

from bollard.durable import TMP_PREFIX, fsync_dir
from bollard.sim.files import (
    check_component,
    read_json,
    report_corrupt,
    write_json_atomic,
)
from bollard.sim.models import JobState, MigrationStage, SimJob

log = logging.getLogger(__name__)


class HostJobs:
    def __init__(self, lock: Callable[[], AbstractContextManager[None]], directory: Path) -> None:
        self._lock = lock
        self.dir = directory

    def _file(self, command_id: str) -> Path:
        return self.dir / f"{check_component('command id', command_id)}.json"

    def _load(self, path: Path) -> SimJob | None:
        data = read_json(path)
        if data is None:
            return None
        try:
            return SimJob.model_validate(data)
        except ValidationError as exc:
            report_corrupt(path, f"invalid job record: {exc.error_count()} errors")
            return None

    def get(self, command_id: str) -> SimJob | None:
        return self._load(self._file(command_id))

    def all(self) -> list[SimJob]:
        """Every job on the host (running or ended), oldest first."""
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return []
        jobs = []
        for entry in entries:
            if entry.name.startswith(TMP_PREFIX) or not entry.name.endswith(".json"):
                continue
            job = self._load(Path(entry.path))
            if job is not None:
                jobs.append(job)
        jobs.sort(key=lambda j: (j.started_at, j.command_id))
        return jobs

    def start(
        self,
        command_id: str,
        kind: str,
        duration: float,
        *,
        vm_uuid: str | None = None,
        supervised: bool = True,
        result: dict[str, object] | None = None,
        now: float | None = None,
    ) -> SimJob:
        """Start the job of ``command_id``; if it already has one, that job is returned as is."""
        path = self._file(command_id)
        with self._lock():
            existing = self._load(path)
            if existing is not None:
                return existing
            job = SimJob(
                command_id=command_id,
                kind=kind,
                vm_uuid=vm_uuid,
                started_at=time.time() if now is None else now,
                duration=duration,
                supervised=supervised,
                result=result or {},
            )
            write_json_atomic(path, job.model_dump(mode="json"))
        log.info("sim job %s started: %s for %.2fs", command_id, kind, duration)
        return job

    def put(self, job: SimJob) -> SimJob:
        """Write a job record as is (the caller holds the fabric lock)."""
        with self._lock():
            write_json_atomic(self._file(job.command_id), job.model_dump(mode="json"))
        return job

    def abort(self, command_id: str, reason: str, now: float | None = None) -> SimJob | None:
        """Abort the job if it is still running; returns the job (None if there is none).

        A migration past its switchover cannot be aborted any more: returned unchanged.
        """
        now = time.time() if now is None else now
        path = self._file(command_id)
        with self._lock():
            job = self._load(path)
            if job is None or job.state(now) != JobState.RUNNING:
                return job
            if job.migration is not None and job.migration.stage != MigrationStage.TRANSFER:
                return job
            job = job.model_copy(update={"aborted_at": now, "abort_reason": reason})
            write_json_atomic(path, job.model_dump(mode="json"))
        log.warning("sim job %s aborted: %s", command_id, reason)
        return job

    def abort_supervised(self, reason: str, now: float | None = None) -> list[SimJob]:
        """Abort every running job that must not run unsupervised; the jobs aborted."""
        now = time.time() if now is None else now
        aborted = []
        with self._lock():
            for job in self.all():
                if job.supervised and job.state(now) == JobState.RUNNING:
                    done = self.abort(job.command_id, reason, now)
                    if done is not None:
                        aborted.append(done)
        return aborted

    def remove(self, command_id: str) -> bool:
        path = self._file(command_id)
        with self._lock():
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            with contextlib.suppress(FileNotFoundError):
                fsync_dir(path.parent)
            return True
