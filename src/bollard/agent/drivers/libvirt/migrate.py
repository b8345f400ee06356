"""Migration of Bollard's domains between libvirt hosts: the libvirt driver's
MigrationDriver and MigrationEndpoint (its jobs are read and aborted by ``job_driver``).

A host that VMs can migrate to advertises its endpoint (``migration_endpoint``):
``{"uri": <the libvirt URI other hosts' daemons reach its daemon with>, "address": <the
address the migration stream connects to, or None>, "image_dir": <where it keeps disks>,
"console_dir": <where it writes console logs>}``; the server forwards the target's endpoint
in the ``migrate`` command.

``migrate`` checks, with nothing done when one fails: the VM is on this host
(DriverNotFound) and not busy with another job, running for a live migration and shut off
for an offline one, ``new_epoch`` newer than its epoch (DriverInvalidState; "invalid-input"
for the epoch), the target has an endpoint and answers (DriverTemporary), is another host,
and has no copy of the VM that runs, migrates in or has a newer epoch (DriverInvalidState;
a stopped older copy, left by an earlier attempt, is replaced, and so are disks of the VM
left in the target's pool). It then writes the job's
record (see ``jobs``) and starts a thread that makes one peer-to-peer call, in which the
source's daemon drives the whole migration::

    live:    migrateToURI3(target uri, {URI: tcp://<address>, LISTEN_ADDRESS: <address>,
                           PERSIST_XML: <definition with new_epoch>, BANDWIDTH: ...},
                           LIVE | PEER2PEER | PERSIST_DEST | UNDEFINE_SOURCE)
    offline: migrateToURI3(target uri, {DEST_XML: <definition with new_epoch>},
                           OFFLINE | PEER2PEER | PERSIST_DEST | UNDEFINE_SOURCE)

The target's daemon picks the port of the migration stream from its migration port range.
The target's definition carries ``new_epoch`` from the moment it exists there (libvirt 9
honours PERSIST_XML only for live migrations and DEST_XML for offline ones); once the call
returned, the epoch is also set in the running domain's live metadata. ``migrate`` returns
once libvirt transfers the VM's memory (the target has its incoming copy by then; at most
the call timeout) or the call ended (an offline migration is done by then).

Disks (see ``storage`` and ``pools``): disks in local pools (legacy disks, and volumes of
Bollard's local pools) are each host's own, at the same path on every host; they are
copied. A live migration copies them in the same call (``VIR_MIGRATE_NON_SHARED_DISK``,
the disks named in ``VIR_MIGRATE_PARAM_MIGRATE_DISKS``; the target's daemon creates their
volumes in its pool first, which the source defines there); an offline one streams each
volume to the target's pool before the call (progress: bytes copied). Disks in shared pools
stay where they are (the target must see them: DriverInvalidState otherwise), which libvirt
allows with ``VIR_MIGRATE_UNSAFE`` only. The target's endpoint says where it keeps legacy
disks and console logs; a target that keeps them elsewhere is refused (DriverPermanent), as
the definition names them by path. Once the job ended, the copies that are no longer needed
go (the paths copied, from the job's record): the source's when the VM moved (and the
source has no definition of it left), the target's when it did not (and the target has no
definition of it).

The job's outcome is decided from libvirt's state (see ``migrate_plan``), not from what
the call answered alone. Ended jobs carry ``result["migration"] = {"phase", "source",
"target", "vm_on"}``.

libvirt runs a peer-to-peer migration to its end even when the client that asked for it is
gone: after an agent restart, a migration can still be RUNNING, and the cancel hook
(``abort_jobs``) aborts it through ``virDomainAbortJob``. ``abort_job`` returns once the job
ended (or ``abort_wait`` passed): ABORTED, or COMPLETED when it was past the point where
libvirt can abort it. ``vm_busy`` is also true for a VM migrating in to this host (libvirt
has an incoming job for it), whoever started it.

The serial console log path is part of the definition: the target host must have the same
console directory (the driver creates the log file only for VMs it defines or starts).

SR-IOV NICs land on the VFs the server claimed on the target (``nics``): the call's
definitions, and the running one of a live migration (``DEST_XML``), have them
(``migrate_plan.on_target_vfs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from bollard.agent.drivers.base import CLEANUP_FAILED, JobInfo, JobStatus, NicSpec
from bollard.agent.drivers.libvirt import domains
from bollard.agent.drivers.libvirt.connection import Connection, in_thread
from bollard.agent.drivers.libvirt.errors import Err, code_of, map_error, message_of
from bollard.agent.drivers.libvirt.events import ensure_event_loop
from bollard.agent.drivers.libvirt.host import host_uuid
from bollard.agent.drivers.libvirt.jobs import JobRecord, JobTable, job_info, valid_command_id
from bollard.agent.drivers.libvirt.lockd import lock_refusal
from bollard.agent.drivers.libvirt.migrate_disks import MigrationDisks
from bollard.agent.drivers.libvirt.migrate_plan import (
    XML_MIGRATABLE,
    Copy,
    MigrationOutcome,
    decide,
    endpoint_of,
    fraction,
    from_source,
    libvirt_job,
    migration_call,
)
from bollard.agent.drivers.libvirt.pools import DiskPlacement, placement
from bollard.agent.drivers.libvirt.sriov import domain_nic
from bollard.agent.drivers.libvirt.storage import Storage
from bollard.agent.drivers.libvirt.xml import (
    NS,
    NS_PREFIX,
    BollardMeta,
    DomainNic,
    HostSettings,
    metadata_xml,
    parse_domain,
)
from bollard.domain.errors import (
    DriverError,
    DriverInvalidState,
    DriverPermanent,
    DriverTemporary,
)
from bollard.domain.protocol import VmReport
from bollard.domain.states import PowerState

log = logging.getLogger(__name__)

T = TypeVar("T")

KIND = "migrate"
BEGIN_POLL = 0.05  # migrate looks this often whether libvirt's transfer began
ABORT_WAIT = 60.0  # abort_job waits this long for libvirt to end the job
ABORT_POLL = 0.1  # looking at the job this often meanwhile
ABORT_REPEAT = 1.0  # and asking libvirt to abort again this often (a job not begun yet)
SETTLE_WINDOW = 120.0  # the thread settles a job whose call ended for this long at most
# A migration found landed on the target with its stopped definition still here is given this
# long before it counts as a failed cleanup: libvirt's own Confirm phase on this host stops
# the source, releases its disk leases (lockd) and only then undefines it, so a look in
# between (after an agent restart, libvirt finishing the migration alone) sees a leftover
# that is about to go.
CLEANUP_GRACE = 10.0
SETTLE_RETRY = 1.0
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3

_METADATA_ELEMENT = 2  # VIR_DOMAIN_METADATA_ELEMENT
_AFFECT_LIVE = 1
_AFFECT_CONFIG = 2


class LibvirtMigrations(MigrationDisks):
    """Mixed into LibvirtDriver, which provides the attributes and helpers declared here."""

    lib: Any
    uri: str
    conn: Connection
    node: str | None
    migration_uri: str | None
    migration_address: str | None
    migration_max_downtime_ms: int | None
    migration_bandwidth_mib: int | None
    abort_wait: float
    jobs: JobTable
    storage: Storage
    settings: HostSettings

    async def _call(self, action: str, fn: Callable[[Any], T]) -> T:
        raise NotImplementedError

    def _uuid(self, uuid: str) -> str:
        raise NotImplementedError

    def _set_live_meta(self, dom: Any, meta: BollardMeta) -> None:
        raise NotImplementedError

    async def job(self, command_id: str) -> JobInfo | None:
        raise NotImplementedError

    async def _io(self, fn: Callable[[], T]) -> T:
        raise NotImplementedError

    async def _record(self, command_id: str) -> JobRecord | None:
        raise NotImplementedError

    async def _info(self, record: JobRecord) -> JobInfo:
        raise NotImplementedError

    # MigrationEndpoint

    def migration_endpoint(self) -> dict[str, Any] | None:
        if self.migration_uri is None:
            return None
        return {
            "uri": self.migration_uri,
            "address": self.migration_address,
            "image_dir": self.storage.image_dir,
            "console_dir": str(self.settings.console_dir),
        }

    # MigrationDriver

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
        if not valid_command_id(command_id):
            raise DriverError(f"invalid command id {command_id!r}", code="invalid-input")
        existing = await self._record(command_id)
        if existing is not None:
            return await self._info(existing)
        uuid = self._uuid(uuid)
        here = await self._call(f"migrate {uuid}", lambda c: self._source_facts(c, uuid))
        report, source_uuid, source_uri, disks = here
        await self._check_source(command_id, report, live, new_epoch)
        endpoint = endpoint_of(target, target_endpoint)
        legacy = any(pool.uuid is None for _, pool in disks.copied)
        self._check_dirs(endpoint, target, has_disks=legacy)
        await self._peer(
            endpoint.uri,
            f"migrate {uuid}: check target {target}",
            lambda c: self._check_target(
                c, uuid, target, new_epoch, source_uuid, source_uri, disks=disks
            ),
        )
        record = JobRecord(
            command_id=command_id,
            kind=KIND,
            vm_uuid=uuid,
            source=self.node or self.uri,
            target=target,
            target_uri=endpoint.uri,
            address=endpoint.address,
            live=live,
            new_epoch=new_epoch,
            disks=[disk.path for disk, _ in disks.copied],
            started_at=time.time(),
        )
        # The SR-IOV NICs the target's definitions get (the others are the definition's).
        target_nics = tuple(domain_nic(n) for n in nics or () if n.sriov is not None)
        runner = threading.Thread(
            target=self._run,
            args=(command_id, target_nics),
            name=f"libvirt migrate {command_id}",
            daemon=True,
        )
        record, created = await self._io(lambda: self.jobs.create(record, runner))
        if created:
            log.info(
                "libvirt migration %s: %s to %s (%s, epoch %d)",
                command_id, uuid, target, "live" if live else "offline", new_epoch,
            )  # fmt: skip
            runner.start()
            await self._until_begun(command_id, uuid)
            record = await self._record(command_id) or record
        return await self._info(record)

    async def _until_begun(self, command_id: str, uuid: str) -> None:
        """Wait until libvirt transfers the VM's memory (the target has its incoming copy
        by then) or the migration's call ended, at most the call timeout: a live migration
        that ``migrate`` returns as RUNNING is under way on both hosts."""
        deadline = time.monotonic() + self.conn.call_timeout
        while self.jobs.running_here(command_id) and time.monotonic() < deadline:
            try:
                stats = await self._call(
                    f"read the migration of {uuid}", lambda c: self._stats(c, uuid)
                )
            except DriverError:
                stats = None
            if stats and (stats.get("data_total") or 0) > 0:
                return
            await asyncio.sleep(BEGIN_POLL)

    def _source_facts(
        self, conn: Any, uuid: str
    ) -> tuple[VmReport, str | None, str, DiskPlacement]:
        d = domains.get(self.lib, conn, uuid)
        if libvirt_job(self.lib, d.dom) is not None:
            raise DriverInvalidState(f"VM {uuid} is busy with a libvirt job (a migration?)")
        disks = placement(conn, d.facts.disks, self.storage)
        return d.report(), host_uuid(conn.getCapabilities()), conn.getURI(), disks

    async def _check_source(
        self, command_id: str, vm: VmReport, live: bool, new_epoch: int
    ) -> None:
        if live and vm.power != PowerState.RUNNING:
            raise DriverInvalidState(
                f"VM {vm.uuid} is {vm.power.value}: only a running VM migrates live"
            )
        if not live and vm.power not in (PowerState.STOPPED, PowerState.CRASHED):
            raise DriverInvalidState(
                f"VM {vm.uuid} is {vm.power.value}: stop it or migrate it live"
            )
        if new_epoch <= vm.epoch:
            raise DriverError(
                f"new epoch {new_epoch} is not newer than the VM's epoch {vm.epoch}",
                code="invalid-input",
            )
        for other in await self._io(self.jobs.all):
            if other.vm_uuid != vm.uuid or other.status != JobStatus.RUNNING:
                continue
            if other.command_id != command_id and (await self._info(other)).status == (
                JobStatus.RUNNING
            ):
                raise DriverInvalidState(
                    f"VM {vm.uuid} is being migrated already (command {other.command_id})"
                )

    def _check_target(
        self,
        conn: Any,
        uuid: str,
        target: str,
        new_epoch: int,
        source_uuid: str | None,
        source_uri: str,
        *,
        disks: DiskPlacement,
    ) -> None:
        lib = self.lib
        there = host_uuid(conn.getCapabilities())
        if (there is not None and there == source_uuid) or conn.getURI() == source_uri:
            raise DriverError(f"VM {uuid} is already on {target}", code="invalid-input")
        dom = domains.lookup(lib, conn, uuid)
        if dom is not None:
            meta = domains.read(dom).meta
            if meta is None:
                raise DriverInvalidState(
                    f"{target} has a domain with uuid {uuid} that is not Bollard's"
                )
            if meta.epoch > new_epoch:
                raise DriverInvalidState(f"{target} has VM {uuid} with a newer epoch {meta.epoch}")
            if dom.isActive():
                if libvirt_job(lib, dom) is not None:
                    raise DriverInvalidState(f"VM {uuid} is migrating to {target} already")
                raise DriverInvalidState(f"VM {uuid} already runs on {target}")
            log.warning("migration of %s: replacing a leftover copy on %s", uuid, target)
        self._target_disks(conn, target, disks)

    # aborting (see job_driver)

    async def _abort_migration(self, command_id: str, reason: str) -> JobInfo | None:
        record = await self._io(lambda: self.jobs.ask_abort(command_id, reason))
        if record is None or record.status != JobStatus.RUNNING:
            return None if record is None else job_info(record)
        log.warning("libvirt migration %s: aborting it: %s", command_id, reason)
        uuid = record.vm_uuid
        deadline = time.monotonic() + self.abort_wait
        next_abort = 0.0
        while True:
            now = time.monotonic()
            if now >= next_abort:
                next_abort = now + ABORT_REPEAT
                try:
                    await self._call(
                        f"abort the migration of {uuid}", lambda c: self._abort_libvirt_job(c, uuid)
                    )
                except DriverError as exc:
                    log.warning("libvirt migration %s: cannot abort it: %s", command_id, exc)
            info = await self.job(command_id)
            if info is None or info.status != JobStatus.RUNNING or now >= deadline:
                return info
            await asyncio.sleep(ABORT_POLL)

    def _abort_libvirt_job(self, conn: Any, uuid: str) -> None:
        dom = domains.lookup(self.lib, conn, uuid)
        if dom is None:
            return
        try:
            dom.abortJob()
        except self.lib.libvirtError as exc:
            # No job (not begun yet, or ended): the caller looks again.
            if code_of(exc) not in (Err.OPERATION_INVALID, Err.NO_DOMAIN):
                raise

    # the job's state

    async def _migration_info(self, record: JobRecord) -> JobInfo:
        """The migration as it is now: from its record once ended; from the thread running it in
        this process and libvirt's statistics; or, with no such thread, settled from
        libvirt's state."""
        if record.status != JobStatus.RUNNING:
            return job_info(record)
        cid = record.command_id
        if self.jobs.running_here(cid):
            try:
                stats = await self._call(
                    f"read the migration of {record.vm_uuid}",
                    lambda c: self._stats(c, record.vm_uuid),
                )
            except DriverError:
                stats = None  # e.g. gone from here at the end of the migration
            done = fraction(stats) if stats else None
            return job_info(record, self.jobs.progress(cid, done))
        settled, done = await in_thread(
            f"settle the migration {cid} ({self.uri})",
            lambda: self._settle(cid),
            self.conn.call_timeout,
        )
        return job_info(settled, self.jobs.progress(cid, done))

    def _stats(self, conn: Any, uuid: str) -> dict[str, Any] | None:
        dom = domains.lookup(self.lib, conn, uuid)
        return None if dom is None else libvirt_job(self.lib, dom)

    # in threads: the migration, and deciding what became of it

    def _open(self, uri: str) -> Any:
        """A new connection to ``uri`` (close it when done); DriverTemporary if the daemon
        does not answer."""
        lib = self.lib
        ensure_event_loop(lib)  # keepalive needs it
        try:
            conn = lib.open(uri)
        except lib.libvirtError as exc:
            raise DriverTemporary(f"libvirt: cannot connect to {uri}: {message_of(exc)}") from None
        if conn is None:
            raise DriverTemporary(f"libvirt: cannot connect to {uri}")
        with contextlib.suppress(lib.libvirtError):
            conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
        return conn

    def _with(self, uri: str, action: str, fn: Callable[[Any], T]) -> T:
        lib = self.lib
        conn = self._open(uri)
        try:
            return fn(conn)
        except lib.libvirtError as exc:
            raise map_error(exc, action) from None
        except ValueError as exc:  # a definition Bollard cannot read
            raise DriverPermanent(f"libvirt: {action}: {exc}") from None
        finally:
            with contextlib.suppress(lib.libvirtError):
                conn.close()

    async def _peer(self, uri: str, action: str, fn: Callable[[Any], T]) -> T:
        """``fn(conn)`` on a new connection to another host's daemon, within the call
        timeout."""
        return await in_thread(
            f"{action} ({uri})", lambda: self._with(uri, action, fn), self.conn.call_timeout
        )

    def _run(self, command_id: str, nics: tuple[DomainNic, ...] = ()) -> None:
        """The migration's thread: the libvirt call, then what became of it."""
        try:
            record = self.jobs.get(command_id)
            if record is not None and record.abort_reason is None:
                self._migrate_now(record, nics)
        except Exception:
            log.exception("libvirt migration %s: unexpected error", command_id)
            with contextlib.suppress(OSError):
                self.jobs.update(command_id, call_error="unexpected error in the driver")
        try:
            self._settle_until_ended(command_id)
        finally:
            self.jobs.runner_done(command_id)

    def _migrate_now(self, record: JobRecord, nics: tuple[DomainNic, ...] = ()) -> None:
        lib = self.lib
        cid = record.command_id
        try:
            conn = self._open(self.uri)
        except DriverError as exc:
            self.jobs.update(cid, call_error=exc.message)
            return
        try:
            dom = conn.lookupByUUIDString(record.vm_uuid)
            definition = dom.XMLDesc(domains.XML_INACTIVE | XML_MIGRATABLE)
            disks = placement(conn, parse_domain(definition).disks, self.storage)
            running = dom.XMLDesc(XML_MIGRATABLE) if record.live and nics else None
            params, flags = migration_call(
                record.live,
                definition,
                record.new_epoch,
                record.address,
                self.migration_bandwidth_mib,
                [disk.target for disk, _ in disks.copied],
                unsafe=bool(disks.shared),
                nics=nics,
                running=running,
            )
            if record.live and self.migration_max_downtime_ms is not None:
                try:
                    dom.migrateSetMaxDowntime(self.migration_max_downtime_ms, 0)
                except lib.libvirtError as exc:
                    log.warning("migration of %s: cannot set its max downtime: %s",
                                record.vm_uuid, message_of(exc))  # fmt: skip
            current = self.jobs.update(cid, phase="transfer")
            if current is None or current.abort_reason is not None:
                return  # aborted before it began: nothing was done
            copied = disks.copied
            if not record.live and copied and not self._copy_disks(conn, record, copied):
                return  # aborted while copying (the copies are removed when it is settled)
            dom.migrateToURI3(record.target_uri, params, flags)
            log.info("libvirt migration %s: the call returned", cid)
        except lib.libvirtError as exc:
            log.warning("libvirt migration %s: %s", cid, message_of(exc))
            refused = lock_refusal(exc, "migrate")  # a disk's lease held elsewhere: one line
            why = refused.message if refused is not None else message_of(exc)
            self.jobs.update(cid, call_error=why, call_error_code=code_of(exc))
        except ValueError as exc:  # a definition without Bollard's metadata
            self.jobs.update(cid, call_error=f"cannot migrate this definition: {exc}")
        except DriverError as exc:  # copying the disks: e.g. the target's pool
            log.warning("libvirt migration %s: %s", cid, exc.message)
            self.jobs.update(cid, call_error=exc.message)
        finally:
            with contextlib.suppress(lib.libvirtError):
                conn.close()

    def _settle_until_ended(self, command_id: str) -> None:
        deadline = time.monotonic() + SETTLE_WINDOW
        while True:
            try:
                record, _ = self._settle(command_id)
                if record.status != JobStatus.RUNNING:
                    return
                why = "libvirt's job still runs"
            except DriverError as exc:
                why = exc.message
            except OSError as exc:  # its record cannot be written
                why = str(exc)
            if time.monotonic() >= deadline:
                log.warning("libvirt migration %s: still undecided (%s); left to the next "
                            "reader", command_id, why)  # fmt: skip
                return
            time.sleep(SETTLE_RETRY)

    def _settle(self, command_id: str) -> tuple[JobRecord, float | None]:
        """Decide the job from libvirt's state (see the module's docstring) and record its
        end; the record, and the progress libvirt shows while it runs. DriverTemporary when a
        host that must be asked does not answer."""
        found = self.jobs.get(command_id)
        if found is None:
            raise DriverPermanent(f"the record of job {command_id} is gone")
        record = found
        if record.status != JobStatus.RUNNING:
            return record, None
        uuid = record.vm_uuid
        source, stats = self._with(self.uri, f"read VM {uuid}", lambda c: self._copy(c, uuid))
        outcome = from_source(record, source)
        if outcome is None:
            outcome = self._with(
                record.target_uri,
                f"read VM {uuid} on {record.target}",
                lambda c: self._decide_with_target(c, found, source),
            )
        if outcome.error_code == CLEANUP_FAILED:
            now = time.time()
            if record.leftover_seen_at is None:
                record = self.jobs.update(command_id, leftover_seen_at=now) or record
            if now - (record.leftover_seen_at or now) < CLEANUP_GRACE:
                outcome = MigrationOutcome(JobStatus.RUNNING, "cleanup")
        if outcome.status == JobStatus.RUNNING:
            if outcome.phase != record.phase:
                record = self.jobs.update(command_id, phase=outcome.phase) or record
            return record, fraction(stats) if stats else None
        self._tidy_disks(record, outcome)
        ended = self._end(record, outcome)
        self.jobs.forget_progress(command_id)
        return ended, None

    def _copy(self, conn: Any, uuid: str) -> tuple[Copy | None, dict[str, Any] | None]:
        d = domains.find(self.lib, conn, uuid)
        if d is None:
            return None, None
        assert d.facts.meta is not None
        try:
            stats = libvirt_job(self.lib, d.dom)
            active, persistent = bool(d.dom.isActive()), bool(d.dom.isPersistent())
        except self.lib.libvirtError as exc:
            # Found, then undefined before these calls: a migration that has just ended
            # here (UNDEFINE_SOURCE). That is the same as not found.
            if code_of(exc) == Err.NO_DOMAIN:
                return None, None
            raise
        copy = Copy(
            active=active, persistent=persistent, migrating=stats is not None,
            epoch=d.facts.meta.epoch,
        )  # fmt: skip
        return copy, stats

    def _decide_with_target(
        self, conn: Any, record: JobRecord, source: Copy | None
    ) -> MigrationOutcome:
        target, _ = self._copy(conn, record.vm_uuid)
        outcome = decide(record, source, target)
        if outcome.moved:
            report = self._landed(conn, record)
            self.jobs.update(
                record.command_id, result={"vm": report.model_dump(mode="json")}, progress=1.0
            )
        return outcome

    def _landed(self, conn: Any, record: JobRecord) -> VmReport:
        """The VM on the target, with the migration's epoch in its persistent and live
        metadata."""
        d = domains.get(self.lib, conn, record.vm_uuid)
        meta = d.facts.meta
        assert meta is not None
        wanted = BollardMeta(uuid=meta.uuid, name=meta.name, epoch=record.new_epoch)
        if meta.epoch < record.new_epoch:
            d.dom.setMetadata(
                _METADATA_ELEMENT, metadata_xml(wanted), NS_PREFIX, NS, _AFFECT_CONFIG
            )
            d = domains.get(self.lib, conn, record.vm_uuid)
        if d.dom.isActive():
            self._set_live_meta(d.dom, wanted)
        return d.report()

    def _end(self, record: JobRecord, outcome: MigrationOutcome) -> JobRecord:
        current = self.jobs.get(record.command_id) or record
        result = dict(current.result) if outcome.status == JobStatus.COMPLETED else {}
        result["migration"] = {
            "phase": outcome.phase,
            "source": record.source,
            "target": record.target,
            "vm_on": record.target if outcome.moved else record.source,
        }
        ended = self.jobs.finish(
            record.command_id,
            status=outcome.status,
            phase=outcome.phase,
            message=outcome.message,
            error_code=outcome.error_code,
            result=result,
            progress=(
                1.0
                if outcome.status == JobStatus.COMPLETED
                else max(current.progress, self.jobs.progress(record.command_id))
            ),
        )
        assert ended is not None
        if ended.status == outcome.status:
            log.info("libvirt migration %s ended: %s %s", record.command_id,
                     outcome.status.value, outcome.message)  # fmt: skip
        return ended
