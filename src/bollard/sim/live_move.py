"""Live moves of a running sim VM's disk to a new file of a pool on its host: a block copy
that mirrors the guest's writes, then pivots (as libvirt's virDomainBlockCopy does), modelled
as a job on the VM's host (see bollard.sim.jobs).

A move started at ``t0`` lasts ``D`` seconds (the driver picks ``D`` from the volume's size
and its copy rate); its progress is a function of time, so it goes on whether or not its
agent is alive. The start writes, under the fabric lock and in this order (a crash between
them leaves a leftover that counts as absent and is cleaned at the next settling):

1. the target file, *partial* (``SimVolume.partial`` names the job, as a copy's target);
2. the move's record, ``<host>/live_moves/<command_id>.json`` (SimLiveMove: the VM, its
   device, the file it used and the target): the move is not settled yet;
3. the job (kind ``volume_move_live``, supervised, naming the VM).

While the job runs the guest keeps using, and writing to, the source. Once it is due, the
fabric's settling (``settle``: the driver calls it whenever it reads the host, i.e. every
heartbeat, every job poll, a VM's disks, an abort) applies the pivot in one locked write:
the target takes the source's content as it is *then* (the mirror: whatever the guest wrote
during the copy is in it), the VM's drive at the device names the target, the job is stamped
completed (its result the final volume), and the record goes. A move whose VM stopped,
vanished or stopped using the source before the pivot fails (a block job ends with its
domain), and its partial target is removed; so does an aborted one's. The source file is
never touched: the server removes it once the volume's record has moved.

Until the settling has pivoted, the driver reports a due move as running at 100% ("pivot"),
never as completed, so an agent does not answer "moved" while the VM still uses the source.
(``SimStorage.resolve`` decides a partial target by the job's time alone, so a reader of the
fabric that bypasses the driver may see the target whole, with the content of ``t0``, between
the job's end and the next settling; every agent read settles first.)
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bollard.domain.states import CommandType, PowerState
from bollard.durable import TMP_PREFIX, fsync_dir
from bollard.sim.files import check_component, read_json, report_corrupt, write_json_atomic
from bollard.sim.models import JobState, SimJob, SimVm
from bollard.sim.storage import (
    PoolKey,
    SimStorage,
    StorageRefused,
    check_file,
    parse_path,
    volume_path,
)
from bollard.sim.storage_models import PoolType, SimPartial, SimVolume, VolumeFormat
from bollard.sim.volume_copy import volume_info

log = logging.getLogger(__name__)

KIND = CommandType.VOLUME_MOVE_LIVE.value
# The guest runs (paused counts: its domain is active and holds the disk open).
ACTIVE = (PowerState.RUNNING, PowerState.PAUSED)


class SimLiveMove(BaseModel):
    """``<host>/live_moves/<command_id>.json``: a live move not settled yet."""

    model_config = ConfigDict(extra="ignore")

    command_id: str
    vm_uuid: str
    device: str
    source: str  # the sim path the VM's device used when the move started
    target_pool: str
    target_type: PoolType
    target_file: str
    format: VolumeFormat
    started_at: float = Field(ge=0)

    @property
    def pool(self) -> PoolKey:
        return PoolKey(self.target_pool, self.target_type)

    @property
    def target(self) -> str:
        return volume_path(self.pool, self.target_file)


@dataclass(frozen=True)
class MoveRequest:
    command_id: str
    node: str  # the VM's host (the job's, and a local target pool's)
    vm_uuid: str
    device: str
    target_pool: PoolKey
    target_file: str
    fmt: VolumeFormat = "qcow2"


class LiveMoves:
    """The live moves of one fabric's hosts."""

    def __init__(self, storage: SimStorage) -> None:
        self.storage = storage
        self.fabric = storage.fabric

    # records

    def _dir(self, node: str) -> Path:
        return self.fabric.host(node).dir / "live_moves"

    def _file(self, node: str, command_id: str) -> Path:
        return self._dir(node) / f"{check_component('command id', command_id)}.json"

    def record(self, node: str, command_id: str) -> SimLiveMove | None:
        path = self._file(node, command_id)
        data = read_json(path)
        if data is None:
            return None
        try:
            return SimLiveMove.model_validate(data)
        except ValidationError as exc:
            report_corrupt(path, f"invalid live move record: {exc.error_count()} errors")
            return None

    def pending(self, node: str) -> list[str]:
        """The command ids of the host's moves not settled yet (read without the lock)."""
        try:
            entries = list(os.scandir(self._dir(node)))
        except FileNotFoundError:
            return []
        names = [e.name for e in entries if not e.name.startswith(TMP_PREFIX)]
        return sorted(n.removesuffix(".json") for n in names if n.endswith(".json"))

    def _unindex(self, node: str, command_id: str) -> None:
        path = self._file(node, command_id)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            fsync_dir(path.parent)

    # starting

    def start(self, req: MoveRequest, rate: float, floor: float, now: float) -> SimJob:
        """Start the move of ``req.command_id`` (``rate`` MiB/s, lasting at least ``floor``
        seconds); if that command already has a job, it is returned as it is. StorageRefused
        with nothing done: no such VM or no volume at the device (not-found), a VM that is
        not running, a source being filled, a device already being moved, a target file that
        exists (invalid-state), no room in the target pool (insufficient-capacity)."""
        node, host = req.node, self.fabric.host(req.node)
        check_file(req.target_file)
        with self.fabric.lock():
            existing = host.jobs.get(req.command_id)
            if existing is not None:
                return existing
            self.settle(node, now, vm_uuid=req.vm_uuid)
            vm = host.get_vm(req.vm_uuid)
            if vm is None:
                raise StorageRefused("not-found", f"no VM {req.vm_uuid} on {node}")
            if vm.power not in ACTIVE:
                raise StorageRefused(
                    "invalid-state",
                    f"VM {vm.name} is {vm.power.value}: only a running VM's disk moves live",
                )
            drive = next((d for d in vm.drives if d.device == req.device), None)
            parsed = parse_path(drive.path) if drive is not None else None
            if drive is None or parsed is None:
                raise StorageRefused("not-found", f"VM {vm.name} has no volume at {req.device}")
            busy = self._moving(node, vm.uuid, req.device, now)
            if busy is not None:
                raise StorageRefused(
                    "invalid-state", f"disk {req.device} of VM {vm.name} is being moved ({busy})"
                )
            source = self.storage.get(node, parsed[0], parsed[1], now)
            if source is None:
                raise StorageRefused("not-found", f"no volume {parsed[1]} in {parsed[0]} on {node}")
            if source.partial is not None:
                raise StorageRefused("invalid-state", f"volume {parsed[1]} is being copied into")
            if self.storage.get(node, req.target_pool, req.target_file, now) is not None:
                where = "" if req.target_pool.type == "shared" else f" on {node}"
                raise StorageRefused(
                    "invalid-state",
                    f"volume {req.target_file} exists in {req.target_pool}{where}",
                )
            target = SimVolume(
                file=req.target_file,
                format=req.fmt,
                size_mb=source.size_mb,
                data_mb=source.data_mb,
                checksum=source.checksum,
                partial=SimPartial(node=node, command_id=req.command_id),
                created_at=now,
            )
            self.storage.check_room(node, req.target_pool, target.allocated_mb, now)
            self.storage.put(node, req.target_pool, target)
            record = SimLiveMove(
                command_id=req.command_id, vm_uuid=vm.uuid, device=req.device,
                source=drive.path, target_pool=req.target_pool.name,
                target_type=req.target_pool.type, target_file=req.target_file,
                format=req.fmt, started_at=now,
            )  # fmt: skip
            self._dir(node).mkdir(parents=True, exist_ok=True)
            write_json_atomic(self._file(node, req.command_id), record.model_dump(mode="json"))
            job = SimJob(
                command_id=req.command_id,
                kind=KIND,
                vm_uuid=vm.uuid,
                started_at=now,
                duration=max(floor, source.size_mb / rate),
                result=_result(record, target),
            )
            host.jobs.put(job)
            host.exec_log.append(req.command_id, KIND, vm.uuid)
        log.info(
            "sim live move %s: disk %s of VM %s on %s from %s to %s, %.2fs",
            req.command_id, req.device, vm.uuid, node, drive.path, record.target, job.duration,
        )  # fmt: skip
        return job

    def _moving(self, node: str, vm_uuid: str, device: str, now: float) -> str | None:
        """The command id of a move of that disk still running (None: none)."""
        jobs = self.fabric.host(node).jobs
        for command_id in self.pending(node):
            rec = self.record(node, command_id)
            job = jobs.get(command_id)
            if rec is None or job is None or (rec.vm_uuid, rec.device) != (vm_uuid, device):
                continue
            if job.state(now) == JobState.RUNNING:
                return command_id
        return None

    # settling

    def settle(
        self, node: str, now: float, *, vm_uuid: str | None = None, only: str | None = None
    ) -> bool:
        """Bring the host's unsettled moves up to date at ``now`` (those of VM ``vm_uuid``,
        or the move of command ``only``): pivot the due ones, fail those whose VM stopped
        using the source, clean up after aborted and failed ones. True if a VM's disk
        changed (pivoted). A move whose records cannot be read or written is logged and
        left for the next settling."""
        if not self.pending(node):
            return False
        pivoted = False
        with self.fabric.lock():
            for command_id in self.pending(node):
                if only is not None and command_id != only:
                    continue
                try:
                    pivoted |= self._advance(node, command_id, now, vm_uuid)
                except (OSError, ValueError) as exc:
                    log.error("sim live move %s: cannot settle it: %s", command_id, exc)
        return pivoted

    def _advance(self, node: str, command_id: str, now: float, vm_uuid: str | None) -> bool:
        """One move brought up to date (the caller holds the lock); True if it pivoted."""
        host = self.fabric.host(node)
        rec = self.record(node, command_id)
        if rec is None:  # unreadable (reported): nothing is known of it any more
            self._unindex(node, command_id)
            return False
        if vm_uuid is not None and rec.vm_uuid != vm_uuid:
            return False
        job = host.jobs.get(command_id)
        if job is None:  # a crash before the job was written: nothing started
            self._drop_target(node, rec)
            self._unindex(node, command_id)
            return False
        state = job.state(now)
        if state == JobState.COMPLETED and job.completed_at is not None:
            self._unindex(node, command_id)  # pivoted; a crash cut the last write
            return False
        if state in (JobState.ABORTED, JobState.FAILED):
            self._drop_target(node, rec)
            self._unindex(node, command_id)
            return False
        vm = host.get_vm(rec.vm_uuid)
        problem = self._problem(node, rec, vm, now)
        if problem is not None:
            at = min(now, job.ends_at)
            failed = job.model_copy(update={"failed_at": at, "failure": problem})
            host.jobs.put(failed)
            log.warning("sim live move %s failed: %s", command_id, problem)
            self._drop_target(node, rec)
            self._unindex(node, command_id)
            return False
        if state == JobState.RUNNING:
            return False
        assert vm is not None  # (no problem: the VM is there)
        self._pivot(node, rec, vm, job)
        self._unindex(node, command_id)
        return True

    def _problem(self, node: str, rec: SimLiveMove, vm: SimVm | None, now: float) -> str | None:
        """Why the move cannot go on (None: it can)."""
        if vm is None:
            return f"VM {rec.vm_uuid} is no longer on {node}"
        if vm.power not in ACTIVE:
            return f"VM {vm.name} is {vm.power.value}: its block copy ended with it"
        drive = next((d for d in vm.drives if d.device == rec.device), None)
        if drive is None or drive.path not in (rec.source, rec.target):
            return f"VM {vm.name} no longer uses {rec.source} at {rec.device}"
        if drive.path == rec.target:
            return None  # pivoted already (a crash cut the writes after it)
        parsed = parse_path(rec.source)
        source = None if parsed is None else self.storage.get(node, *parsed, now)
        if source is None:
            return f"the source {rec.source} of disk {rec.device} is gone"
        target = self.storage.raw(node, rec.pool, rec.target_file)
        if target is None:
            return f"the target {rec.target} is gone"
        if target.partial is not None and target.partial.command_id != rec.command_id:
            return f"the target {rec.target} is another job's ({target.partial.command_id})"
        return None

    def _pivot(self, node: str, rec: SimLiveMove, vm: SimVm, job: SimJob) -> None:
        """The mirror is in sync: the target takes the source's content as it is now, the
        VM's drive names the target, the job completes (the caller holds the lock)."""
        host = self.fabric.host(node)
        drive = next(d for d in vm.drives if d.device == rec.device)
        target = self.storage.raw(node, rec.pool, rec.target_file)
        if drive.path == rec.source:
            parsed = parse_path(rec.source)
            source = None if parsed is None else self.storage.raw(node, *parsed)
            if source is None or target is None:  # (checked by _problem, under the lock)
                raise ValueError(f"live move {rec.command_id}: its files vanished")
            content = {"checksum": source.checksum, "size_mb": source.size_mb,
                       "data_mb": source.data_mb, "partial": None}  # fmt: skip
            target = self.storage.put(node, rec.pool, target.model_copy(update=content))
            moved = drive.model_copy(
                update={"path": rec.target, "size_mb": source.size_mb, "format": rec.format}
            )
            drives = [moved if d.device == rec.device else d for d in vm.drives]
            host.put_vm(vm.model_copy(update={"drives": drives}))
            log.info("sim live move %s: VM %s now uses %s", rec.command_id, vm.uuid, rec.target)
        elif target is not None and target.partial is not None:
            target = self.storage.put(node, rec.pool, target.model_copy(update={"partial": None}))
        result = job.result if target is None else _result(rec, target)
        host.jobs.put(job.model_copy(update={"completed_at": job.ends_at, "result": result}))

    def _drop_target(self, node: str, rec: SimLiveMove) -> None:
        """Remove the move's target if it is still the partial file this move made."""
        target = self.storage.raw(node, rec.pool, rec.target_file)
        if target is None or target.partial is None:
            return
        if target.partial.command_id != rec.command_id:
            return
        self.storage.remove(node, rec.pool, rec.target_file)
        log.info("sim live move %s: its partial target %s removed", rec.command_id, rec.target)

    # aborting

    def abort(self, node: str, command_id: str, reason: str, now: float) -> SimJob | None:
        """Abort the move if it still runs (a due one pivots and stays completed, as a copy
        that completed does); its partial target goes. The job as it then is (None: no
        such job)."""
        jobs = self.fabric.host(node).jobs
        with self.fabric.lock():
            self.settle(node, now, only=command_id)
            job = jobs.abort(command_id, reason, now)
            self.settle(node, now, only=command_id)
            return jobs.get(command_id) if job is not None else None


def pivot_pending(job: SimJob, now: float) -> bool:
    """A live move whose time is up but whose pivot the fabric has not applied yet."""
    return job.kind == KIND and job.completed_at is None and job.state(now) == JobState.COMPLETED


def _result(rec: SimLiveMove, target: SimVolume) -> dict[str, object]:
    """A move's job result: the new volume and the path the VM uses once it pivoted."""
    return {"volume": volume_info(rec.pool, target), "path": rec.target}
