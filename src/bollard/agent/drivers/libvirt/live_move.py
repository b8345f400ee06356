"""Live moves of a running VM's disk to another pool of this host (the libvirt driver's
LiveVolumeMover), as jobs of its job system (kind "volume-move", see ``jobs``).

``move_attached`` checks, with nothing done when one fails: the VM is here (DriverNotFound)
and running, the disk is at that device of the running guest (DriverNotFound), no block job
or other job works on it, and the target file is not in the target pool (DriverInvalidState).
It writes the job's record (the ``MovePlan``: device, the file the guest uses now, target,
the disk's size) and starts a thread that moves the disk, as CloudStack's KVM agent does:

1. ``create``: the target volume is made empty in the target pool, through the pool (so the
   daemon makes it, in its own mount namespace), with the disk's exact size;
2. ``copy``: ``virDomainBlockCopy`` of the device into it (``REUSE_EXT``: into the file just
   made; ``TRANSIENT_JOB`` for a persistent domain, which libvirt requires) with
   ``copy_bandwidth_mib`` as its rate, where set. QEMU copies the data and mirrors every
   write of the guest to both files; the thread polls ``virDomainGetBlockJobInfo`` (progress:
   its cur/end; ``cur == end``: in sync, "ready");
3. ``pivot``: ``virDomainBlockJobAbort(PIVOT)``: the guest uses the target from now on
   (``pivoted``; not ready after all: back to waiting);
4. the persistent definition names the target (libvirt 9 does it with the pivot; older
   daemons do not: the driver defines it), and the job ends COMPLETED with ``result =
   {"volume": VolumeInfo, "path": <target path>}``. The source file stays (the server
   removes it).

A move is supervised: ``abort_job`` (and the cancel hooks) stop it before its pivot: the
block job is cancelled (the guest keeps its file) and the partial target is removed; an abort
that comes once the pivot was asked for is too late (the job completes). Until it ends, the
target is listed ``partial`` (see ``jobs.partial_targets``).

Whatever ends a move other than its pivot (an abort, an error, the VM stopping, the agent
dying: libvirt runs the block job on after its client is gone) is settled from libvirt's
state, never from what a call answered alone (``_settle_with``): the file the guest uses
(the live definition; the persistent one for a domain that no longer runs) decides. The
target: COMPLETED as above. The source: any block job of the move is cancelled, the target
is removed, and the job ends ABORTED (asked to, or died with its agent process) or FAILED
("move-failed", with the error). A record left RUNNING by an earlier agent process is
settled so by its next reader. A target the guest uses is never removed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bollard.agent.drivers.base import JobInfo, JobStatus
from bollard.agent.drivers.libvirt import domains
from bollard.agent.drivers.libvirt.connection import Connection, in_thread
from bollard.agent.drivers.libvirt.errors import Err, code_of, message_of
from bollard.agent.drivers.libvirt.jobs import (
    JobRecord,
    JobTable,
    MovePlan,
    PoolDef,
    job_info,
    valid_command_id,
)
from bollard.agent.drivers.libvirt.migrate_plan import libvirt_job
from bollard.agent.drivers.libvirt.pools import storage_of
from bollard.agent.drivers.libvirt.storage import Storage, ensure_pool, lookup_volume, volume_xml
from bollard.agent.drivers.libvirt.volumes import MIB, check_name, refresh, volume_info
from bollard.agent.drivers.libvirt.xml import DomainDisk, parse_domain
from bollard.agent.drivers.storage import PoolRef, VolumeFormat
from bollard.domain.errors import (
    DriverError,
    DriverInvalidState,
    DriverNotFound,
    DriverPermanent,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

KIND = "volume-move"
MOVE_FAILED = "move-failed"
LOOK = 0.2  # the move's thread looks at the block job (and whether to stop) this often
ABORT_POLL = 0.1
INTERRUPTED = "the move stopped with the agent process that ran it"

BLOCK_COPY_REUSE_EXT = 2  # VIR_DOMAIN_BLOCK_COPY_REUSE_EXT
BLOCK_COPY_TRANSIENT_JOB = 4  # VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB
BLOCK_COPY_BANDWIDTH = "bandwidth"  # VIR_DOMAIN_BLOCK_COPY_BANDWIDTH (bytes/s)
BLOCK_JOB_ABORT_PIVOT = 2  # VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT
BLOCK_COPY_ACTIVE = 83  # VIR_ERR_BLOCK_COPY_ACTIVE: "not ready for pivot yet"

# Phases, in order. Before "create" nothing was made; from "copy" a block job may run; once
# "pivoted" the guest uses the target.
PREPARE, CREATE, COPY, PIVOT, PIVOTED, DONE = (
    "prepare", "create", "copy", "pivot", "pivoted", "done",
)  # fmt: skip

# The stop signals of the moves this process runs: (jobs dir, command id) -> event.
_stops: dict[tuple[Path, str], threading.Event] = {}
_stops_lock = threading.Lock()
_settling = threading.Lock()  # one settle at a time (they cancel jobs and remove files)


class _Stopped(Exception):
    """The move was asked to stop."""


def _pool_def(storage: Storage) -> PoolDef:
    return PoolDef(
        name=storage.pool, dir=storage.image_dir, uuid=storage.uuid, shared=storage.shared
    )


def _storage(pool: PoolDef) -> Storage:
    return Storage(pool.dir, pool.name, uuid=pool.uuid, shared=pool.shared)


def _disk_at(disks: list[DomainDisk], device: str) -> DomainDisk | None:
    return next((d for d in disks if d.target == device), None)


def target_xml(plan: MovePlan) -> str:
    """The target volume: thin, of the disk's exact size in bytes."""
    root = ET.fromstring(volume_xml(plan.target_file, 1, plan.target_format))
    capacity = root.find("capacity")
    assert capacity is not None
    capacity.attrib = {"unit": "bytes"}
    capacity.text = str(plan.capacity)
    return ET.tostring(root, encoding="unicode")


def copy_destination(path: str, fmt: str) -> str:
    """The ``<disk>`` that ``virDomainBlockCopy`` copies into."""
    root = ET.Element("disk", {"type": "file"})
    ET.SubElement(root, "driver", {"type": fmt})
    ET.SubElement(root, "source", {"file": path})
    return ET.tostring(root, encoding="unicode")


def pointed_at(definition: str, device: str, path: str, fmt: str) -> str | None:
    """``definition`` (a domain's XML) with its disk at ``device`` using the file ``path``
    of format ``fmt``; None when it does so already (or has no such disk)."""
    root = ET.fromstring(definition)
    for disk in root.findall("devices/disk"):
        target, source = disk.find("target"), disk.find("source")
        if target is None or target.get("dev") != device or source is None:
            continue
        driver = disk.find("driver")
        if source.get("file") == path and (driver is None or driver.get("type") == fmt):
            return None
        source.attrib = {"file": path}
        for stale in disk.findall("backingStore"):  # (the old file's chain)
            disk.remove(stale)
        if driver is None:
            driver = ET.SubElement(disk, "driver", {"name": "qemu"})
        driver.set("type", fmt)
        return ET.tostring(root, encoding="unicode")
    return None


class LibvirtLiveMoves:
    """Mixed into LibvirtDriver, which provides the attributes and helpers declared here."""

    lib: Any
    uri: str
    node: str | None
    conn: Connection
    jobs: JobTable
    storage: Storage
    abort_wait: float
    copy_bandwidth_mib: float | None

    async def _call(self, action: str, fn: Callable[[Any], T]) -> T:
        raise NotImplementedError

    def _uuid(self, uuid: str) -> str:
        raise NotImplementedError

    def _with(self, uri: str, action: str, fn: Callable[[Any], T]) -> T:
        raise NotImplementedError

    def _open(self, uri: str) -> Any:
        raise NotImplementedError

    async def _io(self, fn: Callable[[], T]) -> T:
        raise NotImplementedError

    async def _record(self, command_id: str) -> JobRecord | None:
        raise NotImplementedError

    # LiveVolumeMover

    async def move_attached(
        self,
        command_id: str,
        uuid: str,
        device: str,
        target_pool: PoolRef,
        target_file: str,
        *,
        fmt: VolumeFormat = "qcow2",
    ) -> JobInfo:
        if not valid_command_id(command_id):
            raise DriverError(f"invalid command id {command_id!r}", code="invalid-input")
        existing = await self._record(command_id)
        if existing is not None:
            return await self._move_info(existing)
        uuid = self._uuid(uuid)
        check_name(target_file)
        dest = storage_of(target_pool, self.storage)
        for other in await self._io(self.jobs.all):
            plan = other.move_plan
            if (
                plan is not None
                and other.vm_uuid == uuid
                and plan.device == device
                and (await self._move_info(other)).status == JobStatus.RUNNING
            ):
                raise DriverInvalidState(
                    f"disk {device} of VM {uuid} is being moved already (command "
                    f"{other.command_id})"
                )
        disk, capacity, persistent = await self._call(
            f"move {device} of {uuid}: check it",
            lambda c: self._move_facts(c, uuid, device, dest, target_file),
        )
        plan = MovePlan(
            device=device,
            source_path=disk.path,
            source_format=disk.format,
            target_pool=_pool_def(dest),
            target_file=target_file,
            target_format=fmt,
            capacity=capacity,
            persistent=persistent,
        )
        node = self.node or self.uri
        record = JobRecord(
            command_id=command_id,
            kind=KIND,
            vm_uuid=uuid,
            source=node,
            target=node,
            move_plan=plan,
            started_at=time.time(),
        )
        stop = threading.Event()
        runner = threading.Thread(
            target=self._run_move,
            args=(command_id, stop),
            name=f"libvirt move {command_id}",
            daemon=True,
        )
        record, created = await self._io(lambda: self.jobs.create(record, runner))
        if created:
            with _stops_lock:
                _stops[(self.jobs.dir, command_id)] = stop
            log.info("libvirt move %s: %s of %s from %s to %s/%s", command_id, device, uuid,
                     disk.path, target_pool.name, target_file)  # fmt: skip
            runner.start()
        return await self._move_info(record)

    def _move_facts(
        self, conn: Any, uuid: str, device: str, dest: Storage, target_file: str
    ) -> tuple[DomainDisk, int, bool]:
        """The disk the running guest has at ``device``, its size (bytes), and whether the
        domain is persistent; the refusals of ``move_attached``."""
        d = domains.get(self.lib, conn, uuid)
        if not d.dom.isActive():
            raise DriverInvalidState(
                f"VM {uuid} is not running: its disk {device} cannot move live (copy it)"
            )
        disk = _disk_at(parse_domain(d.dom.XMLDesc(0)).disks, device)
        if disk is None:
            raise DriverNotFound(f"VM {uuid} has no disk at {device}")
        if disk.readonly:
            raise DriverInvalidState(f"disk {device} of VM {uuid} is read-only")
        if d.dom.blockJobInfo(device, 0):
            raise DriverInvalidState(f"disk {device} of VM {uuid} is busy with a block job")
        if libvirt_job(self.lib, d.dom) is not None:
            raise DriverInvalidState(f"VM {uuid} is busy with a libvirt job (a migration?)")
        capacity = int(d.dom.blockInfo(device, 0)[0])
        pool = ensure_pool(self.lib, conn, dest)
        refresh(self.lib, pool)
        if lookup_volume(self.lib, pool, target_file) is not None:
            raise DriverInvalidState(
                f"volume {target_file} exists already in {dest.pool} on this host"
            )
        return disk, capacity, bool(d.dom.isPersistent())

    # the job as it is

    async def _move_info(self, record: JobRecord) -> JobInfo:
        if record.status != JobStatus.RUNNING:
            return job_info(record)
        cid = record.command_id
        if self.jobs.running_here(cid):
            return job_info(record, self.jobs.progress(cid))
        settled = await in_thread(
            f"settle the move {cid} ({self.uri})",
            lambda: self._settle_move(cid),
            self.conn.call_timeout,
        )
        return job_info(settled)

    async def _abort_move(self, command_id: str, reason: str) -> JobInfo | None:
        record = await self._io(lambda: self.jobs.ask_abort(command_id, reason))
        if record is None or record.status != JobStatus.RUNNING:
            return None if record is None else job_info(record)
        log.warning("libvirt move %s: aborting it: %s", command_id, reason)
        with _stops_lock:
            stop = _stops.get((self.jobs.dir, command_id))
        if stop is not None:
            stop.set()
        deadline = time.monotonic() + self.abort_wait
        while True:
            current = await self._record(command_id)
            if current is None:
                return None
            info = await self._move_info(current)
            if info.status != JobStatus.RUNNING or time.monotonic() >= deadline:
                return info
            await asyncio.sleep(ABORT_POLL)

    # the move's thread

    def _run_move(self, command_id: str, stop: threading.Event) -> None:
        try:
            try:
                record = self.jobs.get(command_id)
                if record is None or record.move_plan is None:
                    raise DriverError(f"the record of job {command_id} is gone")
                self._move_now(record, record.move_plan, stop)
                return
            except _Stopped:
                pass
            except DriverError as exc:
                self._failed(command_id, exc.message)
            except self.lib.libvirtError as exc:
                self._failed(command_id, f"libvirt: {message_of(exc)}")
            except Exception as exc:
                log.exception("libvirt move %s: unexpected error", command_id)
                self._failed(command_id, f"unexpected error: {exc}")
            try:
                self._settle_move(command_id)
            except (DriverError, OSError) as exc:
                log.warning("libvirt move %s: cannot settle it now (%s); left to the next "
                            "reader", command_id, exc)  # fmt: skip
        finally:
            with _stops_lock:
                _stops.pop((self.jobs.dir, command_id), None)
            self.jobs.forget_progress(command_id)
            self.jobs.runner_done(command_id)

    def _failed(self, command_id: str, message: str) -> None:
        log.warning("libvirt move %s failed: %s", command_id, message)
        self.jobs.update(command_id, call_error=message)

    def _phase(self, command_id: str, phase: str, before: str) -> None:
        """Record that the move enters ``phase`` (from ``before``); _Stopped, in ``before``
        again, if an abort was asked for."""
        current = self.jobs.update(command_id, phase=phase)
        if current is None or current.status != JobStatus.RUNNING:
            raise DriverError(f"the record of job {command_id} is gone or ended")
        if current.abort_reason is not None:
            self.jobs.update(command_id, phase=before)  # (what was done is what is undone)
            raise _Stopped

    def _move_now(self, record: JobRecord, plan: MovePlan, stop: threading.Event) -> None:
        cid, lib = record.command_id, self.lib
        dest = _storage(plan.target_pool)
        target = dest.path_of(plan.target_file)
        conn = self._open(self.uri)
        try:
            self._phase(cid, CREATE, PREPARE)
            pool = ensure_pool(lib, conn, dest)
            refresh(lib, pool)
            try:
                pool.createXML(target_xml(plan), 0)
            except lib.libvirtError:
                if lookup_volume(lib, pool, plan.target_file) is not None:
                    self.jobs.update(cid, phase=PREPARE)  # (not ours: never removed)
                    raise DriverInvalidState(
                        f"volume {plan.target_file} exists already in {dest.pool}"
                    ) from None
                raise
            dom = conn.lookupByUUIDString(record.vm_uuid)
            self._phase(cid, COPY, CREATE)
            flags = BLOCK_COPY_REUSE_EXT | (BLOCK_COPY_TRANSIENT_JOB if plan.persistent else 0)
            params = {}
            if self.copy_bandwidth_mib is not None:
                params[BLOCK_COPY_BANDWIDTH] = max(1, int(self.copy_bandwidth_mib * MIB))
            try:
                dom.blockCopy(
                    plan.device, copy_destination(target, plan.target_format), params, flags
                )
            except lib.libvirtError:
                self.jobs.update(cid, phase=CREATE)  # (no block job of ours to cancel)
                raise
            self._until_pivoted(cid, dom, plan, stop)
            self.jobs.update(cid, phase=PIVOTED)
            log.info("libvirt move %s: the guest uses %s", cid, target)
            current = self.jobs.get(cid) or record
            self._complete(conn, current, plan)
        finally:
            try:
                conn.close()
            except lib.libvirtError as exc:
                log.debug("libvirt move %s: closing its connection: %s", cid, exc)

    def _until_pivoted(self, cid: str, dom: Any, plan: MovePlan, stop: threading.Event) -> None:
        """Wait for the block copy to be in sync, then pivot to the target."""
        lib = self.lib
        while True:
            if stop.is_set():
                raise _Stopped
            info = dom.blockJobInfo(plan.device, 0)
            if not info:
                raise DriverError(
                    f"the block copy of {plan.device} ended before it was in sync "
                    "(did the VM stop?)"
                )
            cur, end = int(info.get("cur", 0)), int(info.get("end", 0))
            if end > 0:
                self.jobs.progress(cid, 0.99 * cur / end)
            if end > 0 and cur == end:
                self._phase(cid, PIVOT, COPY)
                try:
                    dom.blockJobAbort(plan.device, BLOCK_JOB_ABORT_PIVOT)
                    return
                except lib.libvirtError as exc:
                    if code_of(exc) != BLOCK_COPY_ACTIVE:
                        raise
                    self._phase(cid, COPY, COPY)  # not in sync after all: wait on
            stop.wait(LOOK)

    # deciding what became of a move (see the module's docstring)

    def _settle_move(self, command_id: str) -> JobRecord:
        """End a RUNNING move that nothing runs (any more) from libvirt's state; the record
        as it then is. DriverTemporary when the daemon does not answer."""
        with _settling:
            record = self.jobs.get(command_id)
            if record is None:
                raise DriverPermanent(f"the record of job {command_id} is gone")
            if record.status != JobStatus.RUNNING:
                return record
            plan = record.move_plan
            if plan is None:
                ended = self.jobs.finish(
                    command_id, status=JobStatus.FAILED, error_code=MOVE_FAILED,
                    message="the move's record has no plan",
                )  # fmt: skip
                return ended or record
            return self._with(
                self.uri,
                f"settle the move of {plan.device} of {record.vm_uuid}",
                lambda c: self._settle_with(c, record, plan),
            )

    def _settle_with(self, conn: Any, record: JobRecord, plan: MovePlan) -> JobRecord:
        target = _storage(plan.target_pool).path_of(plan.target_file)
        d = domains.find(self.lib, conn, record.vm_uuid)
        if d is not None and d.dom.isActive():
            uses = self._live_path(d.dom, plan.device)
            if uses != target and record.phase in (COPY, PIVOT):
                self._cancel_block_job(d.dom, plan.device)
                uses = self._live_path(d.dom, plan.device)  # (a pivot may have just ended)
            if uses == target:
                return self._complete(conn, record, plan)
            if record.phase == PIVOTED:  # (restarted from a definition not updated yet?)
                return self._undecided(
                    record,
                    f"VM {record.vm_uuid} runs with {uses} at "
                    f"{plan.device} although it was moved to {target}",
                )
            return self._give_up(conn, record, plan)
        # Not running (or gone): the block job went with the guest.
        defined = _disk_at(d.facts.disks, plan.device) if d is not None else None
        if record.phase == PIVOTED or (defined is not None and defined.path == target):
            return self._complete(conn, record, plan)
        return self._give_up(conn, record, plan)

    def _live_path(self, dom: Any, device: str) -> str | None:
        """The file the running guest uses at ``device`` (None: no such disk, or it does not
        run any more)."""
        try:
            if not dom.isActive():
                return None
            disk = _disk_at(parse_domain(dom.XMLDesc(0)).disks, device)
        except self.lib.libvirtError as exc:
            if code_of(exc) == Err.NO_DOMAIN:
                return None
            raise
        return None if disk is None else disk.path

    def _cancel_block_job(self, dom: Any, device: str) -> None:
        """Cancel the device's block job (the guest keeps its file); none: fine."""
        try:
            dom.blockJobAbort(device, 0)
        except self.lib.libvirtError as exc:
            if code_of(exc) not in (Err.INVALID_ARG, Err.OPERATION_INVALID, Err.NO_DOMAIN):
                raise

    def _complete(self, conn: Any, record: JobRecord, plan: MovePlan) -> JobRecord:
        """The guest uses the target: its persistent definition names it too, and the job
        ends COMPLETED."""
        lib, dest = self.lib, _storage(plan.target_pool)
        target = dest.path_of(plan.target_file)
        self.jobs.update(record.command_id, phase=PIVOTED)
        d = domains.find(lib, conn, record.vm_uuid)
        if d is not None and d.dom.isPersistent():
            changed = pointed_at(
                d.dom.XMLDesc(domains.XML_INACTIVE), plan.device, target, plan.target_format
            )
            if changed is not None:
                conn.defineXML(changed)
                log.info("libvirt move %s: VM %s's definition names %s at %s",
                         record.command_id, record.vm_uuid, target, plan.device)  # fmt: skip
        pool = ensure_pool(lib, conn, dest)
        refresh(lib, pool)
        vol = lookup_volume(lib, pool, plan.target_file)
        if vol is None:
            raise DriverPermanent(
                f"VM {record.vm_uuid} uses {target}, which is not in pool {dest.pool}"
            )
        ended = self.jobs.finish(
            record.command_id,
            status=JobStatus.COMPLETED,
            phase=DONE,
            progress=1.0,
            result={"volume": volume_info(vol).model_dump(mode="json"), "path": target},
        )
        self.jobs.forget_progress(record.command_id)
        log.info("libvirt move %s: done", record.command_id)
        return ended or record

    def _undecided(self, record: JobRecord, why: str) -> JobRecord:
        """Neither file can be called the disk's: the job fails and both stay."""
        log.error("libvirt move %s: %s; both files are kept", record.command_id, why)
        ended = self.jobs.finish(
            record.command_id, status=JobStatus.FAILED, error_code=MOVE_FAILED,
            message=f"{why}; both files are kept",
        )  # fmt: skip
        return ended or record

    def _give_up(self, conn: Any, record: JobRecord, plan: MovePlan) -> JobRecord:
        """The guest kept its file: the target (if the move made it) goes, and the job ends
        ABORTED or FAILED."""
        lib, dest = self.lib, _storage(plan.target_pool)
        if record.phase != PREPARE:
            pool = ensure_pool(lib, conn, dest)
            refresh(lib, pool)
            vol = lookup_volume(lib, pool, plan.target_file)
            if vol is not None:
                path = vol.path()
                vol.delete(0)
                log.info("libvirt move %s: the partial target %s is removed",
                         record.command_id, path)  # fmt: skip
        current = self.jobs.get(record.command_id) or record
        failed = current.abort_reason is None and current.call_error is not None
        ended = self.jobs.finish(
            record.command_id,
            status=JobStatus.FAILED if failed else JobStatus.ABORTED,
            message=current.abort_reason or current.call_error or INTERRUPTED,
            error_code=MOVE_FAILED if failed else "",
            progress=max(current.progress, self.jobs.progress(record.command_id)),
        )
        self.jobs.forget_progress(record.command_id)
        if ended is not None:
            log.info("libvirt move %s ended %s: %s", record.command_id, ended.status.value,
                     ended.message)  # fmt: skip
        return ended or current
