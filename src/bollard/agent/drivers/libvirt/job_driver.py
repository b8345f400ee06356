"""The libvirt driver's JobDriver: its jobs are migrations (``migrate``), volume copies
(``volume_copy``) and live moves of a running VM's disk (``live_move``), each recorded in the
jobs directory (``jobs``); these methods read and abort each kind, by the record's ``kind``.

``abort_job`` returns once the job ended (or the driver's ``abort_wait`` passed);
``abort_jobs`` (the cancel hooks) aborts every running job, all of them being supervised.
``vm_busy`` concerns migrations and live moves (a copy is of a volume, not of a VM).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from bollard.agent.drivers.base import JobInfo, JobStatus
from bollard.agent.drivers.libvirt import domains
from bollard.agent.drivers.libvirt.jobs import JobRecord
from bollard.agent.drivers.libvirt.live_move import KIND as MOVE_KIND
from bollard.agent.drivers.libvirt.live_move import LibvirtLiveMoves
from bollard.agent.drivers.libvirt.migrate import LibvirtMigrations
from bollard.agent.drivers.libvirt.migrate_plan import libvirt_job
from bollard.agent.drivers.libvirt.volume_copy import KIND as COPY_KIND
from bollard.agent.drivers.libvirt.volume_copy import LibvirtCopies
from bollard.domain.errors import DriverError, DriverPermanent

log = logging.getLogger(__name__)

T = TypeVar("T")


class LibvirtJobs(LibvirtMigrations, LibvirtCopies, LibvirtLiveMoves):
    """Mixed into LibvirtDriver."""

    async def job(self, command_id: str) -> JobInfo | None:
        record = await self._record(command_id)
        return None if record is None else await self._info(record)

    async def abort_job(self, command_id: str, reason: str) -> JobInfo | None:
        first = await self.job(command_id)  # (a job an earlier process left may have ended)
        if first is None or first.status != JobStatus.RUNNING:
            return first
        if first.kind == COPY_KIND:
            return await self._abort_copy(command_id, reason)
        if first.kind == MOVE_KIND:
            return await self._abort_move(command_id, reason)
        return await self._abort_migration(command_id, reason)

    async def abort_jobs(self, reason: str = "") -> list[str]:
        running = [r for r in await self._io(self.jobs.all) if r.status == JobStatus.RUNNING]
        outcomes = await asyncio.gather(
            *(self.abort_job(r.command_id, reason) for r in running), return_exceptions=True
        )
        aborted = []
        for record, outcome in zip(running, outcomes, strict=True):
            if isinstance(outcome, DriverError):
                log.warning("cannot abort the job of %s: %s", record.command_id, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            elif outcome is not None and outcome.status == JobStatus.ABORTED:
                aborted.append(record.command_id)
        return aborted

    async def vm_busy(self, uuid: str) -> bool:
        uuid = self._uuid(uuid)
        for record in await self._io(self.jobs.all):
            if record.vm_uuid != uuid or record.status != JobStatus.RUNNING:
                continue
            if (await self._info(record)).status == JobStatus.RUNNING:
                return True

        def busy(conn: Any) -> bool:
            dom = domains.lookup(self.lib, conn, uuid)
            return dom is not None and libvirt_job(self.lib, dom) is not None

        return await self._call(f"read the jobs of {uuid}", busy)

    # the records

    async def _io(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except OSError as exc:
            raise DriverPermanent(f"libvirt job records in {self.jobs.dir}: {exc}") from None

    async def _record(self, command_id: str) -> JobRecord | None:
        return await self._io(lambda: self.jobs.get(command_id))

    async def _info(self, record: JobRecord) -> JobInfo:
        if record.kind == COPY_KIND:
            return await self._copy_info(record)
        if record.kind == MOVE_KIND:
            return await self._move_info(record)
        return await self._migration_info(record)
