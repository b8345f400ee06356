"""Volume copies between sim pools: a job on the source host (see bollard.sim.jobs).

A copy started at ``t0`` lasts ``D`` seconds (the driver picks ``D`` from the volume's size
and its copy rate); its progress is a function of time, so it goes on, and ends, whether or
not its agent is alive. At the start, in one locked write, the target file appears *partial*
(``SimVolume.partial`` names the job), already holding what it will hold: the source's
content as it is at ``t0`` (or a snapshot's), in the format asked for. The job decides
whether the target is there (``SimStorage.resolve``): partial while the job runs, whole once
it completed, absent (a leftover, removed at the next chance) once it was aborted.

An abort stamps the job first, then removes the partial target; a crash between the two
leaves a leftover that already counts as absent. ``settle`` makes an ended copy's target
final in the fabric (whole, or removed); the driver calls it whenever it reads the job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bollard.domain.states import CommandType
from bollard.sim.jobs import HostJobs
from bollard.sim.models import JobState, SimJob
from bollard.sim.storage import (
    PoolKey,
    SimStorage,
    StorageRefused,
    check_file,
    host_is_on,
    volume_path,
)
from bollard.sim.storage_models import SimCopy, SimPartial, SimVolume, VolumeFormat

log = logging.getLogger(__name__)

KIND = "volume-copy"


@dataclass(frozen=True)
class CopyRequest:
    command_id: str
    node: str  # the source host (the job's host)
    pool: PoolKey
    file: str
    target_node: str  # the target host (the source's own node for a copy within it)
    target_pool: PoolKey
    target_file: str
    snapshot: str | None = None
    fmt: VolumeFormat | None = None  # None: the source's


def volume_info(pool: PoolKey, rec: SimVolume) -> dict[str, object]:
    """A volume as the drivers' VolumeInfo has it (plain JSON values)."""
    return {
        "file": rec.file,
        "format": rec.format,
        "size_mb": rec.size_mb,
        "allocated_mb": rec.allocated_mb,
        "path": volume_path(pool, rec.file),
    }


def start_copy(
    storage: SimStorage, req: CopyRequest, rate: float, floor: float, now: float
) -> SimJob:
    """Start the copy of ``req.command_id`` (``rate`` MiB/s, lasting at least ``floor``
    seconds); if that command already has a job, it is returned as it is. StorageRefused
    with nothing done: no such volume or snapshot, a partial source, a target file that
    exists, a target host that is missing or off, no room in the target pool."""
    fabric = storage.fabric
    jobs = fabric.host(req.node).jobs
    check_file(req.target_file)
    with fabric.lock():
        existing = jobs.get(req.command_id)
        if existing is not None:
            return existing
        source = storage.get(req.node, req.pool, req.file, now)
        if source is None:
            raise StorageRefused("not-found", f"no volume {req.file} in {req.pool} on {req.node}")
        if source.partial is not None:
            raise StorageRefused("invalid-state", f"volume {req.file} is itself being copied into")
        checksum, size_mb, data_mb = source.checksum, source.size_mb, source.data_mb
        if req.snapshot is not None:
            snap = source.snapshots.get(req.snapshot)
            if snap is None:
                raise StorageRefused(
                    "not-found", f"volume {req.file} has no snapshot {req.snapshot}"
                )
            checksum, size_mb, data_mb = snap.checksum, snap.size_mb, snap.data_mb
        if req.target_node != req.node:
            if fabric.host(req.target_node).record() is None:
                raise StorageRefused("temporary", f"target host {req.target_node} does not exist")
            if not host_is_on(fabric, req.target_node):
                raise StorageRefused("temporary", f"target host {req.target_node} is powered off")
        if storage.get(req.target_node, req.target_pool, req.target_file, now) is not None:
            raise StorageRefused(
                "invalid-state",
                f"volume {req.target_file} exists in {req.target_pool} on {req.target_node}",
            )
        target = SimVolume(
            file=req.target_file,
            format=req.fmt or source.format,
            size_mb=size_mb,
            data_mb=data_mb,
            checksum=checksum,
            partial=SimPartial(node=req.node, command_id=req.command_id),
            created_at=now,
        )
        storage.check_room(req.target_node, req.target_pool, target.allocated_mb, now)
        # The target first: a crash before the job is written leaves a leftover that counts
        # as absent (its job is unknown).
        storage.put(req.target_node, req.target_pool, target)
        job = SimJob(
            command_id=req.command_id,
            kind=KIND,
            started_at=now,
            duration=max(floor, size_mb / rate),
            result={"volume": volume_info(req.target_pool, target)},
            volume_copy=SimCopy(
                target_node=None if req.target_pool.type == "shared" else req.target_node,
                target_pool=req.target_pool.name,
                target_type=req.target_pool.type,
                target_file=req.target_file,
            ),
        )
        jobs.put(job)
        fabric.host(req.node).exec_log.append(req.command_id, CommandType.VOLUME_COPY.value, None)
    log.info(
        "sim copy %s: %s (%s) on %s to %s (%s) on %s, %.2fs",
        req.command_id,
        req.file,
        req.pool,
        req.node,
        req.target_file,
        req.target_pool,
        req.target_node,
        job.duration,
    )
    return job


def _target(job: SimJob, node: str) -> tuple[str, PoolKey, str] | None:
    c = job.volume_copy
    if c is None:
        return None
    return c.target_node or node, PoolKey(c.target_pool, c.target_type), c.target_file


def settle(storage: SimStorage, node: str, job: SimJob, now: float) -> None:
    """Make an ended copy's target final: whole once it completed, removed once it was
    aborted or failed (only a target this job is filling is touched)."""
    where = _target(job, node)
    state = job.state(now)
    if where is None or state == JobState.RUNNING:
        return
    target_node, pool, file = where
    with storage.fabric.lock():
        rec = storage.raw(target_node, pool, file)
        if rec is None or rec.partial is None or rec.partial.command_id != job.command_id:
            return
        if state == JobState.COMPLETED:
            storage.put(target_node, pool, rec.model_copy(update={"partial": None}))
        else:
            storage.remove(target_node, pool, file)
            log.info("sim copy %s %s: its partial target %s removed", job.command_id, state, file)


def abort_copy(
    storage: SimStorage, jobs: HostJobs, node: str, command_id: str, reason: str, now: float
) -> SimJob | None:
    """Abort the copy if it still runs, and remove its partial target; the job as it then
    is (None: no such job). A copy that completed stays completed."""
    with storage.fabric.lock():
        job = jobs.abort(command_id, reason, now)
        if job is not None:
            settle(storage, node, job, now)
        return job
