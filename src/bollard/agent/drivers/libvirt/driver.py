"""``LibvirtDriver``: Bollard's HypervisorDriver on a libvirt daemon (QEMU/KVM).

Semantics (those of the HypervisorDriver contract, as the sim driver has them):

- Only domains carrying Bollard's metadata (see ``xml``) are Bollard's: the others are not
  listed, and commands for their uuids answer "not found" (define refuses to take one over).
- ``define`` is idempotent: a domain with the uuid is updated in place (name, size,
  metadata; its devices are kept) and keeps its power state; the epoch never goes back.
  Changes to a running domain's size apply at its next start; its epoch is also set in its
  live metadata. Ownership checks of epochs are the executor's (stale-epoch refusals).
- ``start`` of a running VM and ``stop`` (destroy) of a stopped one do nothing. ``start``
  resumes a paused or suspended VM.
- ``shutdown`` asks the guest by ACPI (power button), again every ``acpi_repeat`` seconds
  (a guest still booting misses the first press), waits for it to be off (woken by
  lifecycle events, polling as a fallback) and destroys it once ``timeout`` has passed. A
  VM that is paused cannot hear ACPI: it is destroyed at once.
- ``restart`` is a cold restart: a running VM is destroyed and started again (pending
  definition changes apply); a stopped one is started. The guest is not asked: a graceful
  reboot is a shutdown followed by a start.
- ``undefine`` refuses a VM that is running or paused (DriverInvalidState) unless
  ``force``, which destroys it first; it removes the managed save image, snapshot and
  checkpoint metadata and the NVRAM file where libvirt supports it, the VM's console
  log and its legacy disks (not the volumes of pools it has: the server deletes those).
  Undefining an absent VM removes only legacy disks of it left in the legacy pool.
- NICs: each of the VM's NICs is an ``<interface>`` on a libvirt network, a host bridge or
  an SR-IOV VF (``sriov``) with the VM's MAC; ``define`` adds those (by MAC) a defined
  domain lacks, and moves an SR-IOV NIC it has on another VF to the VF given.
- Disks (``storage``): ``define`` creates the VM's missing legacy disks as volumes of the
  host's legacy pool (in ``image_dir``), uses the disks with a path (volumes of pools) as
  they are, and adds the devices a defined domain lacks; ``disks`` (DiskSource) lists them
  with their capacity: for a running VM, the files its guest uses now (the live definition:
  after a live move's pivot, the new file), else those of its persistent definition.

Optional facilities: ``StateWatcher`` (libvirt lifecycle events and reconnections call
back, so the agent reports at once), ``ConsoleSource`` (serial log tail, VNC address),
``VfUseSource`` (``sriov``: which VFs the host's domains use),
``JobDriver`` (``job_driver``) / ``MigrationDriver`` / ``MigrationEndpoint`` (live and
offline migration to another libvirt host as a job, see ``migrate``; job records in
``jobs_dir``), and storage (drivers/storage.py): ``StorageDriver`` (``volumes``, on the
pools of ``pools``; volume images: ``images``), ``StorageCopier`` (``volume_copy``: copies
as jobs), ``VolumeAttacher`` (``attach``) and ``LiveVolumeMover`` (``live_move``: a running
VM's disk moved to another pool by block copy and pivot, as a job).
The console log is read from the agent's file system: with a remote libvirt URI it is not
there (the agent is meant to run on its hypervisor host).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from bollard.agent.drivers.base import DiskInfo, HostInfo, VmSpec
from bollard.agent.drivers.libvirt import domains
from bollard.agent.drivers.libvirt.attach import DETACH_TIMEOUT, LibvirtAttacher
from bollard.agent.drivers.libvirt.binding import load_libvirt
from bollard.agent.drivers.libvirt.connection import DEFAULT_CALL_TIMEOUT, Connection
from bollard.agent.drivers.libvirt.console import tail
from bollard.agent.drivers.libvirt.errors import Err, code_of, is_unsupported
from bollard.agent.drivers.libvirt.events import ChangeNotifier
from bollard.agent.drivers.libvirt.host import (
    KERNEL_BOOT_ID,
    boot_id,
    domain_types,
    host_uuid,
    is_local_uri,
    read_kernel_boot_id,
)
from bollard.agent.drivers.libvirt.host_tools import DEFAULT_TIMEOUT as TOOL_TIMEOUT
from bollard.agent.drivers.libvirt.host_tools import HostTools
from bollard.agent.drivers.libvirt.images import LibvirtImages
from bollard.agent.drivers.libvirt.job_driver import LibvirtJobs
from bollard.agent.drivers.libvirt.jobs import table_for
from bollard.agent.drivers.libvirt.migrate import ABORT_WAIT
from bollard.agent.drivers.libvirt.sriov import LibvirtVfUsers, domain_nic
from bollard.agent.drivers.libvirt.storage import (
    DEFAULT_IMAGE_DIR,
    Storage,
    disk_infos,
    ensure_disks,
    ensure_pool,
    owned_disks,
    remove_disks,
    remove_paths,
)
from bollard.agent.drivers.libvirt.xml import (
    NS,
    NS_PREFIX,
    BollardMeta,
    DomainSpec,
    HostSettings,
    canonical_uuid,
    console_path,
    display_of,
    domain_xml,
    metadata_xml,
    nic_changes,
    parse_domain,
    updated_domain_xml,
    with_devices,
)
from bollard.domain.errors import DriverError, DriverInvalidState, DriverPermanent
from bollard.domain.protocol import Capacity, VmReport
from bollard.domain.states import PowerState

log = logging.getLogger(__name__)

T = TypeVar("T")

SHUTDOWN_POLL = 0.5  # while waiting for a guest to power off, look at least this often
ACPI_REPEAT = 1.0  # and press its power button again this often

_METADATA_ELEMENT = 2  # VIR_DOMAIN_METADATA_ELEMENT
_AFFECT_LIVE = 1  # VIR_DOMAIN_AFFECT_LIVE
_SHUTDOWN_ACPI = 1  # VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN
# VIR_DOMAIN_UNDEFINE_*: MANAGED_SAVE | SNAPSHOTS_METADATA | NVRAM | CHECKPOINTS_METADATA,
# then without what older daemons or other drivers do not support.
_UNDEFINE_FLAGS = (1 | 2 | 4 | 16, 1 | 2, 0)


class LibvirtDriver(LibvirtJobs, LibvirtImages, LibvirtAttacher, LibvirtVfUsers):
    name = "libvirt"

    def __init__(
        self,
        uri: str = "qemu:///system",
        domain_type: str = "kvm",
        console_dir: Path | str = Path("consoles"),
        vnc_listen: str = "127.0.0.1",
        *,
        boot_kernel: str | None = None,
        boot_initrd: str | None = None,
        boot_cmdline: str | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        acpi_repeat: float = ACPI_REPEAT,
        kernel_boot_id: Path = KERNEL_BOOT_ID,
        monotonic: Callable[[], float] = time.monotonic,
        migration_uri: str | None = None,
        migration_address: str | None = None,
        migration_max_downtime_ms: int | None = None,
        migration_bandwidth_mib: int | None = None,
        jobs_dir: Path | str | None = None,
        image_dir: str = DEFAULT_IMAGE_DIR,
        node: str | None = None,
        abort_wait: float = ABORT_WAIT,
        tool_prefix: Sequence[str] = (),
        tool_timeout: float = TOOL_TIMEOUT,
        copy_bandwidth_mib: float | None = None,
        detach_timeout: float = DETACH_TIMEOUT,
    ) -> None:
        """ValueError for bad settings; LibvirtUnavailable without libvirt-python.

        Migration: ``migration_uri`` is the libvirt URI the daemons of other hosts reach
        this host's daemon with (None: VMs cannot migrate to this host), and
        ``migration_address`` the address their migration streams connect to (None: the
        name libvirt finds for this host); both are advertised by ``migration_endpoint``.
        ``migration_max_downtime_ms`` (the longest pause of a live migration's last
        step) and ``migration_bandwidth_mib`` (MiB/s) apply to migrations from this
        host; None: libvirt's defaults. ``jobs_dir`` keeps the job records (default: a
        ``libvirt-jobs`` directory next to ``console_dir``); ``node`` is the agent's node
        name, for the results of migrations (default: the URI). ``image_dir`` is where
        the daemon keeps the VMs' disks (the directory of its ``bollard`` storage pool, as
        the daemon sees it; the same path on every host, not shared between them).

        Storage (see ``host_tools``): ``tool_prefix`` runs qemu-img in the daemon's mount
        namespace where it has one of its own (tests); ``tool_timeout`` bounds each tool
        call (a checksum reads the whole volume); ``copy_bandwidth_mib`` (MiB/s) slows
        volume copies down (None: as fast as they go); ``detach_timeout``: how long a
        running guest has to release a disk being detached.
        """
        if not uri:
            raise ValueError("the libvirt URI must not be empty")
        if acpi_repeat <= 0:
            raise ValueError("the ACPI repeat interval must be > 0")
        if migration_uri is not None and not migration_uri.strip():
            raise ValueError("the libvirt migration URI must not be empty")
        if migration_address is not None and not migration_address.strip():
            raise ValueError("the libvirt migration address must not be empty")
        for what, value in (
            ("migration max downtime", migration_max_downtime_ms),
            ("migration bandwidth", migration_bandwidth_mib),
        ):
            if value is not None and value <= 0:
                raise ValueError(f"the {what} must be > 0")
        if abort_wait < 0:
            raise ValueError("the abort wait must be >= 0")
        if copy_bandwidth_mib is not None and copy_bandwidth_mib <= 0:
            raise ValueError("the copy bandwidth must be > 0")
        if detach_timeout <= 0:
            raise ValueError("the detach timeout must be > 0")
        self.settings = HostSettings(
            console_dir=Path(console_dir).absolute(),  # QEMU needs absolute paths
            domain_type=domain_type,
            vnc_listen=vnc_listen,
            boot_kernel=boot_kernel,
            boot_initrd=boot_initrd,
            boot_cmdline=boot_cmdline,
        )
        self.storage = Storage(image_dir)
        self.tools = HostTools(tool_prefix, tool_timeout)
        self.copy_bandwidth_mib = copy_bandwidth_mib
        self.detach_timeout = detach_timeout
        self.lib: Any = load_libvirt()
        self.uri = uri
        self.local = is_local_uri(uri)
        self.notifier = ChangeNotifier()
        self.conn = Connection(uri, notifier=self.notifier, call_timeout=call_timeout)
        self.acpi_repeat = acpi_repeat
        self.migration_uri = migration_uri
        self.migration_address = migration_address
        self.migration_max_downtime_ms = migration_max_downtime_ms
        self.migration_bandwidth_mib = migration_bandwidth_mib
        self.node = node
        self.abort_wait = abort_wait
        default_jobs = self.settings.console_dir.parent / "libvirt-jobs"
        self.jobs = table_for(Path(jobs_dir).absolute() if jobs_dir else default_jobs)
        self._kernel_boot_id = kernel_boot_id
        self._monotonic = monotonic
        self._warned_type = False

    def __repr__(self) -> str:
        return f"LibvirtDriver(uri={self.uri!r}, domain_type={self.settings.domain_type!r})"

    async def _call(self, action: str, fn: Callable[[Any], T]) -> T:
        try:
            return await self.conn.call(action, fn)
        except ValueError as exc:  # a definition Bollard cannot read or write
            raise DriverPermanent(f"libvirt: {action}: {exc}") from None

    @staticmethod
    def _uuid(uuid: str) -> str:
        try:
            return canonical_uuid(uuid)
        except ValueError:
            raise DriverPermanent(f"{uuid!r} is not a uuid") from None

    # facilities: StateWatcher, ConsoleSource

    def on_change(self, callback: Callable[[], None]) -> None:
        """``callback()`` (in the event loop the driver is used from) when a domain changes
        state by itself (lifecycle event) or the connection to libvirt was lost or remade."""
        self.notifier.add(callback)

    async def console_log(self, uuid: str, lines: int = 100) -> str:
        uuid = self._uuid(uuid)
        await self._call("find the VM", lambda c: domains.get(self.lib, c, uuid))
        path = console_path(self.settings.console_dir, uuid)
        try:
            return await asyncio.to_thread(tail, path, lines)
        except OSError as exc:
            raise DriverPermanent(f"cannot read the console log {path}: {exc}") from None

    async def display(self, uuid: str) -> dict[str, Any] | None:
        uuid = self._uuid(uuid)

        def read(conn: Any) -> dict[str, Any] | None:
            dom = domains.get(self.lib, conn, uuid).dom
            return display_of(parse_domain(dom.XMLDesc(0))) if dom.isActive() else None

        return await self._call("read the display", read)

    # reads

    async def host_info(self) -> HostInfo:
        def read(conn: Any) -> tuple[str, list[Any], str]:
            return conn.getCapabilities(), conn.getInfo(), conn.getURI()

        caps, info, uri = await self._call("read the host", read)
        try:  # ready for disks, of its VMs and of VMs migrating in
            await self._call("prepare the storage pool", self._pool)
        except DriverError as exc:
            log.warning("VMs with disks cannot be defined here: %s", exc.message)
        types = domain_types(caps)
        if types and self.settings.domain_type not in types and not self._warned_type:
            self._warned_type = True
            log.warning(
                "libvirt at %s offers no %s domains (only %s): VMs will not start; run the "
                "agent with --libvirt-domain-type %s",
                self.uri, self.settings.domain_type, ", ".join(sorted(types)),
                "qemu" if "qemu" in types else "TYPE",
            )  # fmt: skip
        kernel: str | None = None
        if self.local:
            try:
                kernel = await asyncio.to_thread(read_kernel_boot_id, self._kernel_boot_id)
            except OSError as exc:
                raise DriverPermanent(f"cannot read the kernel's boot id: {exc}") from None
        return HostInfo(
            boot_id=boot_id(kernel, host_uuid(caps) or uri),
            capacity=Capacity(vcpus=int(info[2]), memory_mb=int(info[1])),
        )

    def _pool(self, conn: Any) -> None:
        ensure_pool(self.lib, conn, self.storage)

    async def disks(self, uuid: str) -> list[DiskInfo]:
        uuid = self._uuid(uuid)

        def read(conn: Any) -> list[DiskInfo]:
            d = domains.get(self.lib, conn, uuid)
            facts = d.facts
            if d.dom.isActive():  # what the guest really uses (a live move changes it)
                facts = parse_domain(d.dom.XMLDesc(0))
            return disk_infos(self.lib, conn, facts)

        return await self._call(f"read the disks of {uuid}", read)

    async def list_vms(self) -> list[VmReport]:
        return await self._call("list the domains", lambda c: domains.all_reports(self.lib, c))

    # operations

    async def define(self, spec: VmSpec) -> VmReport:
        uuid = self._uuid(spec.uuid)
        nics = tuple(domain_nic(n) for n in spec.nics)
        wanted = DomainSpec(uuid, spec.name, spec.vcpus, spec.memory_mb, spec.epoch, nics=nics)

        def write(conn: Any) -> VmReport:
            self._ensure_console_log(uuid)
            dom = domains.lookup(self.lib, conn, uuid)
            if dom is None:
                disks = ensure_disks(self.lib, conn, self.storage, uuid, spec.disks)
                conn.defineXML(domain_xml(replace(wanted, disks=tuple(disks)), self.settings))
                return domains.get(self.lib, conn, uuid).report()
            facts = domains.read(dom)
            if facts.meta is None:
                raise DriverInvalidState(
                    f"libvirt domain {dom.name()!r} has uuid {uuid} and is not Bollard's; "
                    "it is left alone"
                )
            disks = ensure_disks(self.lib, conn, self.storage, uuid, spec.disks)
            target = replace(wanted, epoch=max(facts.meta.epoch, spec.epoch))
            now = (facts.meta.name, facts.vcpus, facts.memory_mb, facts.meta.epoch)
            new_disks = {d.target for d in disks} - {d.target for d in facts.disks}
            new_nics = nic_changes(facts.nics, nics)
            if (
                new_disks
                or new_nics
                or now != (target.name, target.vcpus, target.memory_mb, target.epoch)
            ):
                current = dom.XMLDesc(domains.XML_INACTIVE)
                xml = with_devices(updated_domain_xml(current, target), disks, nics)
                dom = conn.defineXML(xml)
                if target.epoch != facts.meta.epoch and dom.isActive():
                    meta = BollardMeta(uuid=uuid, name=target.name, epoch=target.epoch)
                    self._set_live_meta(dom, meta)
            return domains.get(self.lib, conn, uuid).report()

        return await self._call(f"define {uuid}", write)

    async def start(self, uuid: str) -> VmReport:
        uuid = self._uuid(uuid)

        def go(conn: Any) -> VmReport:
            d = domains.get(self.lib, conn, uuid)
            state, _ = d.state()
            if state == domains.DomState.PAUSED:
                d.dom.resume()
            elif state == domains.DomState.PMSUSPENDED:
                d.dom.pMWakeup(0)
            elif state == domains.DomState.CRASHED:
                self._destroy(d.dom)
                self._create(d.dom)
            elif state == domains.DomState.SHUTOFF:
                self._create(d.dom)
            return d.report()

        return await self._call(f"start {uuid}", go)

    async def stop(self, uuid: str) -> VmReport:
        uuid = self._uuid(uuid)

        def go(conn: Any) -> VmReport:
            d = domains.get(self.lib, conn, uuid)
            self._destroy(d.dom)
            return d.report()

        return await self._call(f"stop {uuid}", go)

    async def shutdown(self, uuid: str, timeout: float) -> VmReport:
        uuid = self._uuid(uuid)
        deadline = self._monotonic() + max(0.0, timeout)

        def ask(conn: Any) -> VmReport | None:
            """Press the power button; the report if there is nothing to wait for."""
            d = domains.get(self.lib, conn, uuid)
            if not d.dom.isActive():
                return d.report()
            if d.state()[0] not in domains.GUEST_RUNS:  # paused: it cannot hear ACPI
                self._destroy(d.dom)
                return d.report()
            self._acpi(d.dom)
            return None

        def active(conn: Any) -> bool:
            return bool(domains.get(self.lib, conn, uuid).dom.isActive())

        done = await self._call(f"shut down {uuid}", ask)
        if done is not None:
            return done
        next_ask = self._monotonic() + self.acpi_repeat
        while await self._call(f"wait for {uuid} to shut down", active):
            now = self._monotonic()
            if now >= deadline:
                log.info("VM %s did not shut down within %gs: forcing it off", uuid, timeout)
                return await self.stop(uuid)
            if now >= next_ask:
                if await self._call(f"shut down {uuid}", ask) is not None:
                    break
                next_ask = now + self.acpi_repeat
            await self.notifier.wait(min(SHUTDOWN_POLL, deadline - now, next_ask - now))
        return await self._call(f"read {uuid}", lambda c: domains.get(self.lib, c, uuid).report())

    async def restart(self, uuid: str) -> VmReport:
        uuid = self._uuid(uuid)

        def go(conn: Any) -> VmReport:
            d = domains.get(self.lib, conn, uuid)
            self._destroy(d.dom)
            self._create(d.dom)
            return d.report()

        return await self._call(f"restart {uuid}", go)

    async def undefine(self, uuid: str, *, force: bool = False) -> None:
        uuid = self._uuid(uuid)

        def go(conn: Any) -> None:
            d = domains.find(self.lib, conn, uuid)
            if d is None:
                if domains.lookup(self.lib, conn, uuid) is not None:
                    log.warning("undefine %s: the domain is not Bollard's; left alone", uuid)
                else:  # (disks a failed migration or define left behind)
                    remove_disks(self.lib, conn, self.storage, uuid)
                return
            if d.dom.isActive():
                power = d.report().power
                if not force and power != PowerState.CRASHED:
                    raise DriverInvalidState(f"VM {uuid} is {power.value}; stop it first")
                self._destroy(d.dom)
            if d.dom.isPersistent():
                self._undefine(d.dom)
            if domains.lookup(self.lib, conn, uuid) is None:  # (not still running as transient)
                removed = remove_paths(self.lib, conn, owned_disks(d.facts, self.storage))
                if removed:
                    log.info("VM %s: disks removed: %s", uuid, ", ".join(removed))
            self._remove_console_log(uuid)

        await self._call(f"undefine {uuid}", go)

    async def close(self) -> None:
        await self.conn.close()

    # libvirt calls, in the connection's threads

    def _create(self, dom: Any) -> None:
        self._ensure_console_log(dom.UUIDString())
        try:
            dom.create()
        except self.lib.libvirtError:
            if not dom.isActive():
                raise  # (started meanwhile by someone else: that is what was wanted)

    def _destroy(self, dom: Any) -> None:
        if not dom.isActive():
            return
        try:
            dom.destroy()
        except self.lib.libvirtError:
            if dom.isActive():
                raise  # (stopped meanwhile: that is what was wanted)

    def _acpi(self, dom: Any) -> None:
        try:
            try:
                dom.shutdownFlags(_SHUTDOWN_ACPI)
            except self.lib.libvirtError as exc:
                if not is_unsupported(exc):
                    raise
                dom.shutdown()
        except self.lib.libvirtError as exc:
            if code_of(exc) != Err.OPERATION_INVALID or dom.isActive():
                raise  # (stopped meanwhile: fine)

    def _undefine(self, dom: Any) -> None:
        for flags in _UNDEFINE_FLAGS:
            try:
                if flags:
                    dom.undefineFlags(flags)
                else:
                    dom.undefine()
                return
            except self.lib.libvirtError as exc:
                if code_of(exc) == Err.NO_DOMAIN:
                    return  # undefined meanwhile
                if not (flags and is_unsupported(exc)):
                    raise

    def _set_live_meta(self, dom: Any, meta: BollardMeta) -> None:
        try:
            dom.setMetadata(_METADATA_ELEMENT, metadata_xml(meta), NS_PREFIX, NS, _AFFECT_LIVE)
        except self.lib.libvirtError as exc:
            # The persistent definition (which Bollard reads) has it; only `virsh dumpxml`
            # of the running domain shows the old epoch until its next start.
            log.warning("cannot set the live metadata of %s: %s", meta.uuid, exc)

    def _ensure_console_log(self, uuid: str) -> None:
        """Create the console log file (and its directory) before QEMU needs it, so that
        libvirt can hand it over to the QEMU user (dynamic ownership) where that is not
        root. Only where the daemon runs on this machine; elsewhere it is that host's."""
        if not self.local:
            return
        path = console_path(self.settings.console_dir, uuid)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)
        except OSError as exc:
            raise DriverPermanent(f"cannot create the console log {path}: {exc}") from None

    def _remove_console_log(self, uuid: str) -> None:
        if self.local:
            console_path(self.settings.console_dir, uuid).unlink(missing_ok=True)
