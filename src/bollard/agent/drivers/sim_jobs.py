"""The sim driver's hypervisor jobs (JobDriver) and migrations (MigrationDriver).

A job is a record in the fabric whose progress is a function of the fabric's wall clock (see
bollard.sim.jobs); a migration is a job whose phases act on the fabric when they are due (see
bollard.sim.migration), applied whenever the driver reads the fabric. Its duration is the
VM's memory over the migration rate, at least the operation latency. A volume copy is a job
whose target the job decides (see bollard.sim.volume_copy): reading an ended copy's job
makes its target final, aborting one removes its partial target.

A migration given the VM's NICs on the target (``nics``: each SR-IOV NIC on the VF the
server claimed there) records them on the target at its start, with the migration's new
epoch (``_land_nics``, see sim.py's ``SimNics``): they count from the switchover on, when the
VM lands there with that epoch, and never if it does not (a rolled-back migration's record
keeps its older epoch, or is removed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from bollard.agent.drivers.base import (
    CLEANUP_FAILED,
    MIGRATION_FAILED,
    JobInfo,
    JobStatus,
    NicSpec,
)
from bollard.domain.errors import (
    DriverError,
    DriverInvalidState,
    DriverNotFound,
    DriverPermanent,
    DriverTemporary,
)
from bollard.sim.fabric import Fabric, SimHost
from bollard.sim.migration import MigrationRefused, MigrationRequest, Migrations
from bollard.sim.models import JobState, MigrationPhase, SimJob
from bollard.sim.storage import SimStorage
from bollard.sim.volume_copy import abort_copy
from bollard.sim.volume_copy import settle as settle_copy

T = TypeVar("T")

_STATUS = {
    JobState.RUNNING: JobStatus.RUNNING,
    JobState.COMPLETED: JobStatus.COMPLETED,
    JobState.ABORTED: JobStatus.ABORTED,
    JobState.FAILED: JobStatus.FAILED,
}

_REFUSALS: dict[str, type[DriverError]] = {
    "not-found": DriverNotFound,
    "invalid-state": DriverInvalidState,
    "temporary": DriverTemporary,
}


class SimJobs:
    """Mixed into SimDriver, which provides the attributes and helpers declared here."""

    fabric: Fabric
    host: SimHost
    node: str
    latency: float
    migration_rate: float
    migrations: Migrations
    storage: SimStorage
    _wall: Callable[[], float]

    async def _io(self, fn: Callable[[], T]) -> T:
        raise NotImplementedError

    async def _check_host_on(self) -> None:
        raise NotImplementedError

    def _land_nics(self, target: str, uuid: str, epoch: int, nics: Sequence[NicSpec]) -> None:
        raise NotImplementedError

    def _settle(self) -> None:
        """Apply the migration phases due by now (blocking; runs in a worker thread)."""
        self.migrations.settle(self._wall())

    def _job_info(self, job: SimJob) -> JobInfo:
        now = self._wall()
        status = _STATUS[job.state(now)]
        info = JobInfo(
            command_id=job.command_id,
            kind=job.kind,
            vm_uuid=job.vm_uuid,
            status=status,
            progress=job.progress(now),
            supervised=job.supervised,
            message=job.abort_reason or job.failure,
            result=dict(job.result),
        )
        m = job.migration
        if m is None:
            return info
        phase = m.phase(job, now)
        result = dict(job.result) if status == JobStatus.COMPLETED else {}
        if status != JobStatus.RUNNING:
            moved = status == JobStatus.COMPLETED or phase == MigrationPhase.CLEANUP
            result["migration"] = {
                "phase": phase.value,
                "source": m.source,
                "target": m.target,
                "vm_on": m.target if moved else m.source,
            }
        code = ""
        if status == JobStatus.FAILED:
            code = CLEANUP_FAILED if phase == MigrationPhase.CLEANUP else MIGRATION_FAILED
        done = "done" if status == JobStatus.COMPLETED else phase.value
        return info.model_copy(update={"phase": done, "error_code": code, "result": result})

    async def start_job(
        self,
        command_id: str,
        kind: str,
        duration: float,
        *,
        vm_uuid: str | None = None,
        supervised: bool = True,
        result: dict[str, object] | None = None,
    ) -> JobInfo:
        """Start a sim job lasting ``duration`` seconds (idempotent per command id)."""
        await self._check_host_on()
        job = await self._io(
            lambda: self.host.jobs.start(
                command_id,
                kind,
                duration,
                vm_uuid=vm_uuid,
                supervised=supervised,
                result=result,
                now=self._wall(),
            )
        )
        return self._job_info(job)

    async def job(self, command_id: str) -> JobInfo | None:
        def read() -> SimJob | None:
            self._settle()
            job = self.host.jobs.get(command_id)
            if job is not None and job.volume_copy is not None:
                settle_copy(self.storage, self.node, job, self._wall())
            return job

        job = await self._io(read)
        return None if job is None else self._job_info(job)

    def _abort(self, command_id: str, reason: str) -> SimJob | None:
        job = self.host.jobs.get(command_id)
        if job is not None and job.migration is not None:
            return self.migrations.abort(self.node, command_id, reason, self._wall())
        if job is not None and job.volume_copy is not None:
            return abort_copy(
                self.storage, self.host.jobs, self.node, command_id, reason, self._wall()
            )
        return self.host.jobs.abort(command_id, reason, self._wall())

    async def abort_job(self, command_id: str, reason: str) -> JobInfo | None:
        job = await self._io(lambda: self._abort(command_id, reason))
        return None if job is None else self._job_info(job)

    async def abort_jobs(self, reason: str = "") -> list[str]:
        """Abort the supervised jobs still running; a migration past its switchover is
        finished instead (not listed)."""

        def abort_all() -> list[str]:
            now = self._wall()
            aborted = []
            with self.fabric.lock():
                self.migrations.settle(now)
                for job in self.host.jobs.all():
                    if not job.supervised or job.state(now) != JobState.RUNNING:
                        continue
                    done = self._abort(job.command_id, reason)
                    if done is not None and done.state(now) == JobState.ABORTED:
                        aborted.append(done.command_id)
            return aborted

        return await self._io(abort_all)

    async def vm_busy(self, uuid: str) -> bool:
        def busy() -> bool:
            now = self._wall()
            if self.migrations.running_for(self.node, uuid, now):
                return True
            return any(
                job.vm_uuid == uuid and job.state(now) == JobState.RUNNING
                for job in self.host.jobs.all()
            )

        return await self._io(busy)

    def migration_duration(self, memory_mb: int) -> float:
        return max(self.latency, memory_mb / self.migration_rate)

    async def migrate(
        self,
        command_id: str,
        uuid: str,
        target: str,
        *,
        live: bool,
        new_epoch: int,
        target_endpoint: dict[str, Any] | None = None,
        nics: Sequence[NicSpec] | None = None,
    ) -> JobInfo:
        """(``target_endpoint`` is not needed: sim hosts find each other in the fabric.)
        ``nics``: see the module's doc."""
        await self._check_host_on()

        def start() -> SimJob:
            with self.fabric.lock():
                self._settle()
                vm = self.host.get_vm(uuid)
                request = MigrationRequest(
                    command_id=command_id,
                    uuid=uuid,
                    source=self.node,
                    target=target,
                    live=live,
                    new_epoch=new_epoch,
                    duration=self.migration_duration(vm.memory_mb if vm is not None else 0),
                )
                started = self.host.jobs.get(command_id) is None
                job = self.migrations.start(request, self._wall())
                if started and nics is not None and job.failed_at is None:
                    self._land_nics(target, uuid, new_epoch, nics)
                return job

        try:
            job = await self._io(start)
        except MigrationRefused as exc:
            error = _REFUSALS.get(exc.code)
            if error is None:
                raise DriverPermanent(exc.message, code=exc.code) from None
            raise error(exc.message) from None
        return self._job_info(job)
