"""Volume copies as jobs of the libvirt driver (its StorageCopier).

``copy_volume`` checks, with nothing done when one fails: the source volume (and snapshot)
exists (DriverNotFound), the target file does not (DriverInvalidState), the target host's
daemon answers (DriverTemporary), and a whole-volume copy's source is not open by a running
VM (DriverInvalidState: a copy of a volume being written would be torn; a snapshot does not
change, so copying one is fine). It writes the job's record (kind "volume-copy", see
``jobs``) and starts a thread that copies:

- to a pool of this host, or to a shared pool (this host sees its directory):
  ``qemu-img convert -p`` from the volume (``-l snapshot.name=X`` for a snapshot) into the
  target file, in the target's format; progress from qemu-img's ``-p`` output;
- to a local pool of another host: streamed from this daemon to the target's
  (``target_endpoint["uri"]``) through libvirt (``virStorageVolDownload`` →
  ``virStorageVolUpload``, see ``storage.copy_volume``); progress: bytes streamed. A source
  that needs converting first (a snapshot, another format, or a file with snapshots of its
  own, which the copy must not carry) is converted into a hidden scratch file of the
  source's pool, which is streamed and removed.

A copy of a snapshot taken before the volume grew is cut down to the snapshot's size.
``copy_bandwidth_mib`` (MiB/s) slows copies down (``qemu-img convert -r``; streams are
paced so that they take at least the volume's size over the rate), for tests and to spare
busy disks.

The job ends COMPLETED with ``result = {"volume": VolumeInfo}`` (the new file, on the
target), or ABORTED / FAILED ("copy-failed"); an aborted or failed copy removes its partial
target. ``abort_job`` stops the thread's qemu-img or stream at once. A copy is supervised:
the tools die with the agent (see ``host_tools``), so a record left RUNNING by an earlier
agent process is settled as ABORTED (its partial target removed) by the next reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import posixpath
import select
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bollard.agent.drivers.base import JobInfo, JobStatus
from bollard.agent.drivers.libvirt.connection import Connection
from bollard.agent.drivers.libvirt.host_tools import HostTools, progress_of, tool_error
from bollard.agent.drivers.libvirt.jobs import (
    CopyPlan,
    JobRecord,
    JobTable,
    PoolDef,
    job_info,
    valid_command_id,
)
from bollard.agent.drivers.libvirt.pools import storage_of
from bollard.agent.drivers.libvirt.storage import (
    Storage,
    copy_volume,
    ensure_pool,
    lookup_volume,
    volume_format,
)
from bollard.agent.drivers.libvirt.volumes import (
    MIB,
    SNAPSHOT_RE,
    check_name,
    physical_bytes,
    read_snapshots,
    refresh,
    unambiguous,
    volume_info,
)
from bollard.agent.drivers.storage import PoolRef, VolumeFormat, VolumeInfo
from bollard.domain.errors import (
    DriverError,
    DriverInvalidState,
    DriverNotFound,
    DriverTemporary,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

KIND = "volume-copy"
COPY_FAILED = "copy-failed"
LOOK = 0.1  # a copy looks this often whether it is to stop
ABORT_POLL = 0.1
INTERRUPTED = "the copy stopped with the agent process that ran it"

# The abort signals of the copies this process runs: (jobs dir, command id) -> event.
_stops: dict[tuple[Path, str], threading.Event] = {}
_stops_lock = threading.Lock()


class _Stopped(Exception):
    """The copy was asked to stop."""


def _pool_def(storage: Storage) -> PoolDef:
    return PoolDef(
        name=storage.pool, dir=storage.image_dir, uuid=storage.uuid, shared=storage.shared
    )


def _storage(pool: PoolDef) -> Storage:
    return Storage(pool.dir, pool.name, uuid=pool.uuid, shared=pool.shared)


class LibvirtCopies:
    """Mixed into LibvirtDriver, which provides the attributes and helpers declared here."""

    lib: Any
    uri: str
    node: str | None
    conn: Connection
    jobs: JobTable
    storage: Storage
    tools: HostTools
    abort_wait: float
    copy_bandwidth_mib: float | None

    async def _call(self, action: str, fn: Callable[[Any], T]) -> T:
        raise NotImplementedError

    async def _peer(self, uri: str, action: str, fn: Callable[[Any], T]) -> T:
        raise NotImplementedError

    def _with(self, uri: str, action: str, fn: Callable[[Any], T]) -> T:
        raise NotImplementedError

    def _open(self, uri: str) -> Any:
        raise NotImplementedError

    async def _io(self, fn: Callable[[], T]) -> T:
        raise NotImplementedError

    async def _record(self, command_id: str) -> JobRecord | None:
        raise NotImplementedError

    # StorageCopier

    async def copy_volume(
        self,
        command_id: str,
        pool: PoolRef,
        file: str,
        target_pool: PoolRef,
        target_file: str,
        *,
        target: str,
        target_endpoint: dict[str, Any] | None = None,
        snapshot: str | None = None,
        fmt: VolumeFormat | None = None,
    ) -> JobInfo:
        if not valid_command_id(command_id):
            raise DriverError(f"invalid command id {command_id!r}", code="invalid-input")
        existing = await self._record(command_id)
        if existing is not None:
            return await self._copy_info(existing)
        check_name(file)
        check_name(target_file)
        if snapshot is not None:
            check_name(snapshot, SNAPSHOT_RE, "snapshot")
        source, dest = storage_of(pool, self.storage), storage_of(target_pool, self.storage)
        here = target in (self.node, self.uri) or target_pool.type == "shared"
        target_uri = ""
        if not here:
            uri = (target_endpoint or {}).get("uri")
            if not isinstance(uri, str) or not uri:
                raise DriverTemporary(f"target {target} has no endpoint to copy volumes to")
            target_uri = uri
        src_path, src_fmt, has_snaps, snap_size = await self._call(
            f"copy volume {file}: read it", lambda c: self._source(c, source, file, snapshot)
        )
        if snapshot is None:  # (refused while a running VM has it open)
            await self.tools.info(src_path, src_fmt, shared=False)
        target_fmt = fmt or src_fmt
        if here:
            await self._call(
                f"copy volume {file}: check the target",
                lambda c: self._no_target(c, dest, target_file, target),
            )
        else:
            await self._peer(
                target_uri,
                f"copy volume {file}: check the target on {target}",
                lambda c: self._no_target(c, dest, target_file, target),
            )
        temp = None
        if not here and (snapshot is not None or target_fmt != src_fmt or has_snaps):
            temp = f".bollard-copy-{command_id}.{target_fmt}"
        plan = CopyPlan(
            source_pool=_pool_def(source),
            source_file=file,
            source_format=src_fmt,
            snapshot=snapshot,
            snapshot_size_mb=snap_size,
            target_pool=_pool_def(dest),
            target_file=target_file,
            target_format=target_fmt,
            here=here,
            temp_file=temp,
        )
        record = JobRecord(
            command_id=command_id,
            kind=KIND,
            source=self.node or self.uri,
            target=target,
            target_uri=target_uri,
            copy_plan=plan,
            started_at=time.time(),
        )
        stop = threading.Event()
        runner = threading.Thread(
            target=self._run_copy,
            args=(command_id, stop),
            name=f"libvirt copy {command_id}",
            daemon=True,
        )
        record, created = await self._io(lambda: self.jobs.create(record, runner))
        if created:
            with _stops_lock:
                _stops[(self.jobs.dir, command_id)] = stop
            log.info("libvirt copy %s: %s/%s to %s/%s on %s", command_id, pool.name, file,
                     target_pool.name, target_file, target)  # fmt: skip
            runner.start()
        return await self._copy_info(record)

    def _source(
        self, conn: Any, source: Storage, file: str, snapshot: str | None
    ) -> tuple[str, str, bool, int | None]:
        """The source volume's path, format, whether it has snapshots, and the size (MiB)
        of the snapshot to copy (None: the whole volume)."""
        pool = ensure_pool(self.lib, conn, source)
        refresh(self.lib, pool)
        vol = lookup_volume(self.lib, pool, file)
        if vol is None:
            raise DriverNotFound(f"volume {file} is not in pool {source.pool} on this host")
        fmt = volume_format(vol)
        snaps = read_snapshots(conn, vol) if fmt == "qcow2" else []
        size = None
        if snapshot is not None:
            found = unambiguous(snaps, snapshot, file)
            if found is None:
                raise DriverNotFound(f"volume {file} has no snapshot {snapshot}")
            size = (found.disk_size or int(vol.info()[1])) // MIB
        return vol.path(), fmt, bool(snaps), size

    def _no_target(self, conn: Any, dest: Storage, file: str, target: str) -> None:
        pool = ensure_pool(self.lib, conn, dest)
        refresh(self.lib, pool)
        if lookup_volume(self.lib, pool, file) is not None:
            raise DriverInvalidState(f"volume {file} exists already in {dest.pool} on {target}")

    # the job as it is

    async def _copy_info(self, record: JobRecord) -> JobInfo:
        if record.status != JobStatus.RUNNING:
            return job_info(record)
        cid = record.command_id
        if self.jobs.running_here(cid):
            return job_info(record, self.jobs.progress(cid))
        settled = await asyncio.to_thread(self._settle_copy, cid)
        return job_info(settled)

    async def _abort_copy(self, command_id: str, reason: str) -> JobInfo | None:
        record = await self._io(lambda: self.jobs.ask_abort(command_id, reason))
        if record is None or record.status != JobStatus.RUNNING:
            return None if record is None else job_info(record)
        log.warning("libvirt copy %s: aborting it: %s", command_id, reason)
        with _stops_lock:
            stop = _stops.get((self.jobs.dir, command_id))
        if stop is not None:
            stop.set()
        deadline = time.monotonic() + self.abort_wait
        while True:
            current = await self._record(command_id)
            if current is None:
                return None
            info = await self._copy_info(current)
            if info.status != JobStatus.RUNNING or time.monotonic() >= deadline:
                return info
            await asyncio.sleep(ABORT_POLL)

    def _settle_copy(self, command_id: str) -> JobRecord:
        """A RUNNING record no thread of this process runs: the copy died with an earlier
        agent process. Its partial target is removed and the job ends ABORTED."""
        record = self.jobs.get(command_id)
        if record is None:
            raise DriverError(f"the record of job {command_id} is gone")
        if record.status != JobStatus.RUNNING or self.jobs.running_here(command_id):
            return record
        self._clean_up(record)
        ended = self.jobs.finish(
            command_id, status=JobStatus.ABORTED, message=record.abort_reason or INTERRUPTED
        )
        return ended or record

    # the copy's thread

    def _run_copy(self, command_id: str, stop: threading.Event) -> None:
        record = None
        try:
            record = self.jobs.get(command_id)
            if record is None or record.copy_plan is None:
                raise DriverError(f"the record of job {command_id} is gone")
            if record.abort_reason is not None:
                raise _Stopped
            info = self._copy_now(record, record.copy_plan, stop)
            self.jobs.finish(
                command_id,
                status=JobStatus.COMPLETED,
                phase="done",
                progress=1.0,
                result={"volume": info.model_dump(mode="json")},
            )
            log.info("libvirt copy %s: done", command_id)
        except _Stopped:
            self._end_badly(record, command_id, JobStatus.ABORTED, "")
        except DriverError as exc:
            self._end_badly(record, command_id, JobStatus.FAILED, exc.message)
        except self.lib.libvirtError as exc:
            self._end_badly(record, command_id, JobStatus.FAILED, f"libvirt: {exc}")
        except Exception as exc:
            log.exception("libvirt copy %s: unexpected error", command_id)
            self._end_badly(record, command_id, JobStatus.FAILED, f"unexpected error: {exc}")
        finally:
            with _stops_lock:
                _stops.pop((self.jobs.dir, command_id), None)
            self.jobs.forget_progress(command_id)
            self.jobs.runner_done(command_id)

    def _end_badly(
        self, record: JobRecord | None, command_id: str, status: JobStatus, message: str
    ) -> None:
        if record is not None:
            self._clean_up(record)
        current = self.jobs.get(command_id)
        reason = current.abort_reason if current is not None else None
        if status == JobStatus.FAILED and reason is not None:
            status = JobStatus.ABORTED  # (stopped by the abort: the error is its doing)
        if status == JobStatus.ABORTED:
            message = reason or message or "aborted"
        else:
            log.warning("libvirt copy %s failed: %s", command_id, message)
        with contextlib.suppress(OSError):
            self.jobs.finish(
                command_id,
                status=status,
                message=message,
                error_code="" if status == JobStatus.ABORTED else COPY_FAILED,
                progress=self.jobs.progress(command_id),
            )

    def _clean_up(self, record: JobRecord) -> None:
        """Remove the copy's partial target and scratch file (what is there of them)."""
        plan = record.copy_plan
        if plan is None:
            return
        target = _storage(plan.target_pool).path_of(plan.target_file)
        paths = [target] if plan.here else []
        if plan.temp_file is not None:
            paths.append(_storage(plan.source_pool).path_of(plan.temp_file))
        try:
            if paths:
                self.tools.run_now("remove a partial copy", ["rm", "-f", "--", *paths])
            if not plan.here:
                self._with(
                    record.target_uri,
                    f"remove the partial copy {plan.target_file} on {record.target}",
                    lambda c: self._drop(c, _storage(plan.target_pool), plan.target_file),
                )
        except DriverError as exc:
            log.warning("libvirt copy %s: %s (left as it is)", record.command_id, exc.message)

    def _drop(self, conn: Any, dest: Storage, file: str) -> None:
        pool = ensure_pool(self.lib, conn, dest)
        refresh(self.lib, pool)
        vol = lookup_volume(self.lib, pool, file)
        if vol is not None:
            vol.delete(0)

    def _copy_now(self, record: JobRecord, plan: CopyPlan, stop: threading.Event) -> VolumeInfo:
        cid = record.command_id
        source, dest = _storage(plan.source_pool), _storage(plan.target_pool)
        src_path = source.path_of(plan.source_file)
        self.jobs.update(cid, phase="transfer")
        if plan.here:
            target_path = dest.path_of(plan.target_file)
            self._convert(cid, plan, src_path, target_path, stop, (0.0, 1.0))
            self._cut_to_snapshot(plan, target_path)
            return self._with(
                self.uri, f"read the copy {plan.target_file}",
                lambda c: volume_info(self._found(c, dest, plan.target_file)),
            )  # fmt: skip
        name, share = plan.source_file, (0.0, 1.0)
        if plan.temp_file is not None:
            temp_path = source.path_of(plan.temp_file)
            self._convert(cid, plan, src_path, temp_path, stop, (0.0, 0.5))
            self._cut_to_snapshot(plan, temp_path)
            name, share = plan.temp_file, (0.5, 1.0)
        try:
            return self._stream(record, plan, name, stop, share)
        finally:
            if plan.temp_file is not None:
                self.tools.run_now(
                    "remove a scratch file", ["rm", "-f", "--", source.path_of(plan.temp_file)]
                )

    def _found(self, conn: Any, storage: Storage, file: str) -> Any:
        pool = ensure_pool(self.lib, conn, storage)
        refresh(self.lib, pool)
        vol = lookup_volume(self.lib, pool, file)
        if vol is None:
            raise DriverError(f"the copy {file} is not in {storage.pool} once made")
        return vol

    def _convert(
        self,
        cid: str,
        plan: CopyPlan,
        src: str,
        dst: str,
        stop: threading.Event,
        share: tuple[float, float],
    ) -> None:
        """``qemu-img convert -p`` from ``src`` into the new file ``dst``, killed when
        ``stop`` is set; progress (within ``share`` of the job's) from its output."""
        cache = self.tools.copy_cache_mode(posixpath.dirname(dst))  # flushed at the end
        argv = ["qemu-img", "convert", "-p", "-t", cache, "-f", plan.source_format]
        argv += ["-O", plan.target_format]
        if plan.target_format == "qcow2":
            argv += ["-o", "compat=1.1"]
        if plan.snapshot is not None:
            argv += ["-U", "-l", f"snapshot.name={plan.snapshot}"]
        if self.copy_bandwidth_mib is not None:
            argv += ["-r", str(max(1, int(self.copy_bandwidth_mib * MIB)))]
        proc = self.tools.start([*argv, src, dst])
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.fileno(), proc.stderr.fileno()
        output, errors = b"", b""
        open_fds = {out, err}
        try:
            while open_fds:
                if stop.is_set():
                    raise _Stopped
                ready, _, _ = select.select(list(open_fds), [], [], LOOK)
                for fd in ready:
                    data = os.read(fd, 4096)
                    if not data:
                        open_fds.discard(fd)
                    elif fd == out:
                        output = (output + data)[-512:]
                        done = progress_of(output)
                        if done is not None:
                            self.jobs.progress(cid, share[0] + (share[1] - share[0]) * done)
                    else:
                        errors = (errors + data)[-4096:]
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        if code != 0:
            raise tool_error(f"copy {plan.source_file}", code, errors.decode(errors="replace"))

    def _cut_to_snapshot(self, plan: CopyPlan, path: str) -> None:
        """A copy of a snapshot taken before the volume grew gets the snapshot's size
        (qemu-img convert gives it the volume's size of now, zeros at the end)."""
        if plan.snapshot is None or plan.snapshot_size_mb is None:
            return
        fmt, size = plan.target_format, plan.snapshot_size_mb * MIB
        try:
            out = self.tools.run_now(
                "read a copy", ["qemu-img", "info", "--output=json", "-f", fmt, path]
            )
            if json.loads(out).get("virtual-size") == size:
                return
            self.tools.run_now(
                "cut a copy to its snapshot's size",
                ["qemu-img", "resize", "--shrink", "-f", fmt, path, str(size)],
            )
        except (DriverError, ValueError, AttributeError) as exc:
            raise DriverError(f"copy of snapshot {plan.snapshot}: {exc}") from None

    def _stream(
        self,
        record: JobRecord,
        plan: CopyPlan,
        name: str,
        stop: threading.Event,
        share: tuple[float, float],
    ) -> VolumeInfo:
        """Stream the source pool's file ``name`` into the target file on the target."""
        cid, lib = record.command_id, self.lib
        source, dest = _storage(plan.source_pool), _storage(plan.target_pool)
        here = self._open(self.uri)
        try:
            there = self._open(record.target_uri)
            try:
                vol = self._found(here, source, name)
                total = max(1, physical_bytes(vol))
                virtual = int(vol.info()[1])
                began = time.monotonic()

                def progress(done: int) -> None:
                    part = min(1.0, done / total)
                    # Held back first, so the progress says what is done; below 1.0 until
                    # the copy has ended (the file's last bytes are not the copy's end).
                    self._pace(began, part * virtual, stop)
                    self.jobs.progress(cid, share[0] + (share[1] - share[0]) * min(part, 0.99))

                created = copy_volume(
                    lib, here, vol, there, dest, progress, name=plan.target_file, replace=False
                )
                return volume_info(created)
            finally:
                with contextlib.suppress(lib.libvirtError):
                    there.close()
        except lib.libvirtError as exc:
            message = exc.get_error_message() or str(exc)
            raise DriverError(f"copy {plan.source_file} to {record.target}: {message}") from None
        finally:
            with contextlib.suppress(lib.libvirtError):
                here.close()

    def _pace(self, began: float, covered: float, stop: threading.Event) -> None:
        """Hold a stream back to ``copy_bandwidth_mib`` (of the volume's size); _Stopped
        when the copy is to stop."""
        if stop.is_set():
            raise _Stopped
        if self.copy_bandwidth_mib is None:
            return
        due = began + covered / (self.copy_bandwidth_mib * MIB)
        while (wait := due - time.monotonic()) > 0:
            if stop.wait(min(wait, LOOK * 10)):
                raise _Stopped
