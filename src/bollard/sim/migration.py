"""Migrations between sim hosts: a job on the source host whose phases act on the fabric.

A migration started at ``t0`` lasts ``D`` seconds (the driver picks ``D`` from the VM's
memory). Its phases:

- **prepare**, at ``t0``, in one locked write with the job's creation: checks (see
  ``MigrationRefused``); the target gets a *paused* copy of the VM marked ``incoming`` (with
  the VM's current epoch: nobody owns it yet). A leftover copy from an earlier attempt is
  replaced.
- **transfer**, ``t0`` .. ``t0 + 0.9 D``: progress grows with time; the VM runs on the source.
- **switchover**, at ``t0 + 0.9 D``, the atomic moment: under the fabric lock the VM stops
  running on the source (its definition stays, stopped, marked ``outgoing``) and runs on the
  target with the new epoch (live); a non-live migration moves a stopped VM, which stays
  stopped. The VM is never running on two hosts, nor on none, as seen under the lock
  (``Fabric.snapshot``).
- **cleanup**, at ``t0 + D``: the source's leftover definition is removed; the job completes.

A failure before or at the switchover (injected, or the switchover finds the VM no longer
running on the source, the target host off, the incoming copy gone) rolls back: the VM stays
on the source as it is, the incoming copy is removed. A failure at cleanup leaves the VM
running on the target and a stopped leftover definition (no longer marked) on the source.
An abort is only possible before the switchover (rolled back as a failure is); a migration
past it cannot be aborted: asked to abort, it finishes its cleanup at once.

Nothing runs in the background: whoever reads the fabric through the driver (or
``Fabric.snapshot``) first *settles* it, applying the phases that are due by then, so a
migration goes on, and ends, whether or not its agent is alive. Every step writes its
decision to the job record before acting and is redone if a crash cut it short.
Pending migrations are indexed in ``<fabric>/migrations/<command_id>.json`` so settling costs
one directory scan when there are none.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from bollard.domain.states import PowerState
from bollard.durable import TMP_PREFIX, fsync_dir
from bollard.sim.fabric import Fabric, SimHost
from bollard.sim.files import read_json, write_json_atomic
from bollard.sim.migration_checks import MigrationRefused, MigrationRequest, check_request
from bollard.sim.models import (
    DRIVER_FAULTS,
    FaultMode,
    HostPower,
    JobState,
    MigrationPhase,
    MigrationStage,
    SimJob,
    SimMigration,
)
from bollard.sim.storage import SimStorage

__all__ = ["MigrationRefused", "MigrationRequest", "Migrations"]

log = logging.getLogger(__name__)

KIND = "migrate"
SWITCHOVER_AT = 0.9  # fraction of the duration at which the switchover happens
TRANSFER_FAILS_AT = 0.45  # fraction at which an injected transfer failure strikes


class Migrations:
    def __init__(self, fabric: Fabric) -> None:
        self.fabric = fabric
        self.index_dir = fabric.root / "migrations"
        self.storage = SimStorage(fabric)

    # start

    def start(self, req: MigrationRequest, now: float) -> SimJob:
        """Start the migration of ``req.command_id`` (its prepare phase); if that command
        already has a job, it is returned as it is (idempotent)."""
        source = self.fabric.host(req.source)
        with self.fabric.lock():
            existing = source.jobs.get(req.command_id)
            if existing is not None:
                return existing
            vm, target = check_request(self.fabric, req, source, self._active)
            there = self.storage.conflicts(req.target, vm, now)
            if there:
                raise MigrationRefused(
                    "invalid-state",
                    f"{req.target} already has volumes of VM {req.uuid}: {', '.join(there)}",
                )
            fault = source.faults.take(KIND, DRIVER_FAULTS)
            duration, hang, fail_phase = req.duration, False, None
            if fault is not None and fault.mode == FaultMode.DELAY:
                duration += fault.seconds
            elif fault is not None and fault.mode == FaultMode.HANG:
                hang = True
            elif fault is not None:
                fail_phase = fault.phase or MigrationPhase.PREPARE
            migration = SimMigration(
                source=req.source,
                target=req.target,
                live=req.live,
                new_epoch=req.new_epoch,
                vm=vm,
                switchover_at=now + SWITCHOVER_AT * duration,
                fail_phase=fail_phase,
                hang=hang,
            )
            job = SimJob(
                command_id=req.command_id,
                kind=KIND,
                vm_uuid=req.uuid,
                started_at=now,
                duration=duration,
                migration=migration,
            )
            if fail_phase == MigrationPhase.PREPARE:
                job = _failed(
                    job,
                    MigrationPhase.PREPARE,
                    now,
                    _injected(MigrationPhase.PREPARE, req.source),
                    MigrationStage.ENDED,
                )
                return source.jobs.put(job)  # nothing was done (not in the execution log)
            self._index(req.command_id, req.source)
            source.jobs.put(job)
            source.exec_log.append(req.command_id, KIND, req.uuid)
            incoming = vm.model_copy(
                update={"power": PowerState.PAUSED, "incoming": req.command_id, "outgoing": None}
            )
            target.put_vm(incoming)
        log.info(
            "sim migration %s: %s from %s to %s (%s, %.2fs)",
            req.command_id,
            req.uuid,
            req.source,
            req.target,
            "live" if req.live else "offline",
            duration,
        )
        return job

    def _active(self, command_id: str) -> bool:
        return (self.index_dir / f"{command_id}.json").exists()

    # settling

    def pending(self) -> dict[str, str]:
        """Migrations not ended yet: command id -> source node (read without the lock)."""
        try:
            entries = list(os.scandir(self.index_dir))
        except FileNotFoundError:
            return {}
        found = {}
        for entry in entries:
            if entry.name.startswith(TMP_PREFIX) or not entry.name.endswith(".json"):
                continue
            data = read_json(Path(entry.path))
            source = data.get("source") if data else None
            if isinstance(source, str):
                found[entry.name.removesuffix(".json")] = source
        return found

    def settle(self, now: float) -> None:
        """Apply every phase that is due by ``now``. A migration whose records cannot be
        read or written is logged and left for the next settling; the others go on."""
        if not self.pending():
            return
        with self.fabric.lock():
            for command_id, source in self.pending().items():
                try:
                    self._advance(source, command_id, now)
                except (OSError, ValueError) as exc:
                    log.error("sim migration %s: cannot settle it: %s", command_id, exc)

    def _advance(
        self, source_node: str, command_id: str, now: float, finish: bool = False
    ) -> SimJob | None:
        """Bring one migration up to date (``finish``: do its cleanup now, if past the
        switchover). Called with the fabric lock held."""
        source = self.fabric.host(source_node)
        job = source.jobs.get(command_id)
        if job is None or job.migration is None:
            self._unindex(command_id)
            return job
        if _mig(job).stage == MigrationStage.TRANSFER:
            if job.aborted_at is None and job.failed_at is None:
                job = self._transfer_due(source, job, now)
            if job.aborted_at is not None or job.failed_at is not None:
                return self._rolled_back(source, job)
        if _mig(job).stage == MigrationStage.SWITCHING:
            job = self._switch(source, job, now)
        if _mig(job).stage == MigrationStage.SWITCHED:
            decided = job.failed_at is not None or job.completed_at is not None
            if not decided and (finish or now >= job.ends_at):
                at = min(now, job.ends_at)
                if _mig(job).fail_phase == MigrationPhase.CLEANUP:
                    why = _injected(MigrationPhase.CLEANUP, source_node)
                    job = source.jobs.put(_failed(job, MigrationPhase.CLEANUP, at, why))
                else:
                    job = source.jobs.put(job.model_copy(update={"completed_at": at}))
            if job.failed_at is not None or job.completed_at is not None:
                job = self._cleaned(source, job)
        return job

    def _transfer_due(self, source: SimHost, job: SimJob, now: float) -> SimJob:
        m = job.migration
        assert m is not None
        fails_at = job.started_at + TRANSFER_FAILS_AT * job.duration
        if m.fail_phase == MigrationPhase.TRANSFER and not m.hang and now >= fails_at:
            return source.jobs.put(
                _failed(
                    job,
                    MigrationPhase.TRANSFER,
                    fails_at,
                    _injected(MigrationPhase.TRANSFER, m.source),
                )
            )
        if m.hang or now < m.switchover_at:
            return job
        problem = self._switch_problem(source, job)
        if problem is not None:
            log.warning("sim migration %s fails at switchover: %s", job.command_id, problem)
            return source.jobs.put(
                _failed(job, MigrationPhase.SWITCHOVER, m.switchover_at, problem)
            )
        # The VM as it will run on the target, decided (and written) before any change, so
        # that a switchover cut short by a crash is redone identically.
        base = source.get_vm(m.vm.uuid) or m.vm  # its definition may have changed meanwhile
        target_vm = base.model_copy(
            update={
                "power": PowerState.RUNNING if m.live else PowerState.STOPPED,
                "epoch": m.new_epoch,
                "incoming": None,
                "outgoing": None,
            }
        )
        switching = m.model_copy(update={"stage": MigrationStage.SWITCHING, "vm": target_vm})
        result = {"vm": target_vm.report().model_dump(mode="json")}
        return source.jobs.put(job.model_copy(update={"migration": switching, "result": result}))

    def _switch_problem(self, source: SimHost, job: SimJob) -> str | None:
        m = job.migration
        assert m is not None
        if m.fail_phase == MigrationPhase.SWITCHOVER:
            return _injected(MigrationPhase.SWITCHOVER, m.source)
        vm = source.get_vm(m.vm.uuid)
        if vm is None:
            return f"VM {m.vm.uuid} is no longer defined on {m.source}"
        if m.live and vm.power != PowerState.RUNNING:
            return f"VM {vm.uuid} is {vm.power.value} on {m.source}, no longer running"
        if not m.live and vm.power == PowerState.RUNNING:
            return f"VM {vm.uuid} was started on {m.source} during an offline migration"
        target = self.fabric.host(m.target)
        rec = target.record()
        if rec is None or rec.power != HostPower.ON:
            return f"target host {m.target} is powered off"
        copy = target.get_vm(m.vm.uuid)
        if copy is None or copy.incoming != job.command_id:
            return f"the incoming copy of VM {m.vm.uuid} on {m.target} is gone"
        return None

    def _switch(self, source: SimHost, job: SimJob, now: float) -> SimJob:
        """The switchover's writes (SWITCHING → SWITCHED), source first: a reader without the
        lock may see the VM on neither host for an instant, never on both. The VM's volumes
        in local pools are on the target before the VM runs there (those of shared pools
        stay where they are)."""
        m = job.migration
        assert m is not None
        self.storage.move_in(m.source, m.target, m.vm, now)
        leftover = source.get_vm(m.vm.uuid)
        if leftover is not None and leftover.outgoing != job.command_id:
            source.put_vm(
                leftover.model_copy(
                    update={"power": PowerState.STOPPED, "outgoing": job.command_id}
                )
            )
        self.fabric.host(m.target).put_vm(m.vm)  # m.vm is the VM as it runs on the target now
        log.info(
            "sim migration %s: switchover done, %s now on %s (epoch %d)",
            job.command_id,
            m.vm.uuid,
            m.target,
            m.new_epoch,
        )
        return source.jobs.put(
            job.model_copy(
                update={"migration": m.model_copy(update={"stage": MigrationStage.SWITCHED})}
            )
        )

    def _rolled_back(self, source: SimHost, job: SimJob) -> SimJob:
        m = job.migration
        assert m is not None
        target = self.fabric.host(m.target)
        copy = target.get_vm(m.vm.uuid)
        if copy is not None and copy.incoming == job.command_id:
            target.delete_vm(m.vm.uuid)
        return self._ended(source, job)

    def _cleaned(self, source: SimHost, job: SimJob) -> SimJob:
        m = job.migration
        assert m is not None
        if job.completed_at is not None:
            # The VM's local volumes went to the target at the switchover: the source's
            # copies go (before its definition, so a redone cleanup still finds them).
            self.storage.move_out(source.node, m.vm)
        leftover = source.get_vm(m.vm.uuid)
        if leftover is not None and leftover.outgoing == job.command_id:
            if job.completed_at is not None:
                source.delete_vm(m.vm.uuid)
            else:  # cleanup failed: a plain stopped definition stays behind
                source.put_vm(leftover.model_copy(update={"outgoing": None}))
        return self._ended(source, job)

    def _ended(self, source: SimHost, job: SimJob) -> SimJob:
        m = job.migration
        assert m is not None
        job = source.jobs.put(
            job.model_copy(
                update={"migration": m.model_copy(update={"stage": MigrationStage.ENDED})}
            )
        )
        self._unindex(job.command_id)
        log.info("sim migration %s ended: %s", job.command_id, job.state(0).value)
        return job

    # aborting and reading

    def abort(self, source_node: str, command_id: str, reason: str, now: float) -> SimJob | None:
        """Abort a migration before its switchover (rolled back); past it, finish it now.
        The job as it then is (None: no such job)."""
        source = self.fabric.host(source_node)
        with self.fabric.lock():
            job = self._advance(source_node, command_id, now)
            if job is None or job.migration is None or job.state(now) != JobState.RUNNING:
                return job
            if job.migration.stage == MigrationStage.TRANSFER:
                job = source.jobs.put(
                    job.model_copy(update={"aborted_at": now, "abort_reason": reason})
                )
                log.warning("sim migration %s aborted: %s", command_id, reason)
                return self._advance(source_node, command_id, now)
            return self._advance(source_node, command_id, now, finish=True)

    def running_for(self, node: str, uuid: str, now: float) -> bool:
        """Whether a migration of VM ``uuid`` from or to ``node`` is in progress."""
        self.settle(now)
        for command_id, source in self.pending().items():
            job = self.fabric.host(source).jobs.get(command_id)
            m = job.migration if job is not None else None
            if m is not None and m.vm.uuid == uuid and node in (m.source, m.target):
                return True
        return False

    # the index of pending migrations

    def _index(self, command_id: str, source: str) -> None:
        write_json_atomic(self.index_dir / f"{command_id}.json", {"source": source})

    def _unindex(self, command_id: str) -> None:
        path = self.index_dir / f"{command_id}.json"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            fsync_dir(self.index_dir)


def _mig(job: SimJob) -> SimMigration:
    assert job.migration is not None
    return job.migration


def _injected(phase: MigrationPhase, node: str) -> str:
    return f"injected fault: migrate fails at {phase.value} on {node}"


def _failed(
    job: SimJob, phase: MigrationPhase, at: float, why: str, stage: MigrationStage | None = None
) -> SimJob:
    m = job.migration
    assert m is not None
    return job.model_copy(
        update={
            "failed_at": at,
            "failure": why,
            "migration": m.model_copy(update={"failed_phase": phase, "stage": stage or m.stage}),
        }
    )
