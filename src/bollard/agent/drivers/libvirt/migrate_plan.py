"""The pure parts of a libvirt migration: the call's parameters and flags, and deciding
what became of a migration from where the VM is.

The job's outcome is decided from libvirt's state, not from what the call answered alone
(the call can fail after the VM moved, and an agent that restarted has no call to ask):
the source domain has a libvirt job: RUNNING (progress: data processed / data total of
``virDomainGetJobStats``). Otherwise, the target has the VM persistently, not migrating in,
with ``new_epoch`` (or the source has it no longer): it moved, COMPLETED with ``{"vm":
VmReport on the target}``, or FAILED ``migration-cleanup-failed`` when the source still has
a (stopped) definition; else it did not move: ABORTED when an abort was asked for (or
libvirt says the job was cancelled), else FAILED ``migration-failed``. The VM on neither
host is FAILED ``migration-lost``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from bollard.agent.drivers.base import CLEANUP_FAILED, MIGRATION_FAILED, JobStatus
from bollard.agent.drivers.libvirt.errors import Err, code_of
from bollard.agent.drivers.libvirt.jobs import JobRecord
from bollard.agent.drivers.libvirt.vf_xml import pci_attributes
from bollard.agent.drivers.libvirt.xml import DomainNic, with_epoch
from bollard.domain.errors import DriverError, DriverTemporary

# Answer codes of failed migrations (see bollard.agent.migrate).
MIGRATION_LOST = "migration-lost"

# virDomainMigrateFlags
MIGRATE_LIVE = 1
MIGRATE_PEER2PEER = 2
MIGRATE_PERSIST_DEST = 8
MIGRATE_UNDEFINE_SOURCE = 16
MIGRATE_NON_SHARED_DISK = 64  # copy the disks named in PARAM_MIGRATE_DISKS
MIGRATE_UNSAFE = 512  # disks libvirt cannot tell are shared (Bollard's shared pools) stay
MIGRATE_OFFLINE = 1024
LIVE_FLAGS = MIGRATE_LIVE | MIGRATE_PEER2PEER | MIGRATE_PERSIST_DEST | MIGRATE_UNDEFINE_SOURCE
OFFLINE_FLAGS = MIGRATE_OFFLINE | MIGRATE_PEER2PEER | MIGRATE_PERSIST_DEST | MIGRATE_UNDEFINE_SOURCE
# VIR_MIGRATE_PARAM_*
PARAM_URI = "migrate_uri"
PARAM_DEST_XML = "destination_xml"
PARAM_PERSIST_XML = "persistent_xml"
PARAM_BANDWIDTH = "bandwidth"
PARAM_LISTEN_ADDRESS = "listen_address"
PARAM_MIGRATE_DISKS = "migrate_disks"

XML_MIGRATABLE = 8  # VIR_DOMAIN_XML_MIGRATABLE


@dataclass(frozen=True)
class Endpoint:
    uri: str
    address: str | None
    image_dir: str | None = None  # where the host keeps its VMs' disks (None: not said)
    console_dir: str | None = None  # where it writes their serial console logs


def endpoint_of(target: str, advertised: dict[str, Any] | None) -> Endpoint:
    """The target's endpoint as its driver advertised it; DriverTemporary without one (a
    host not configured for migration, or not known yet)."""
    if not advertised or not isinstance(advertised.get("uri"), str) or not advertised["uri"]:
        raise DriverTemporary(f"target {target} has no migration endpoint")
    address = advertised.get("address")
    if address is not None and (not isinstance(address, str) or not address):
        raise DriverError(
            f"target {target}'s migration address {address!r} is not a host name or address",
            code="invalid-input",
        )
    dirs = [advertised.get(k) for k in ("image_dir", "console_dir")]
    image_dir, console_dir = (d if isinstance(d, str) and d else None for d in dirs)
    return Endpoint(advertised["uri"], address, image_dir, console_dir)


def stream_uri(address: str) -> str:
    """``VIR_MIGRATE_PARAM_URI`` for a migration stream to ``address`` (no port: the
    target's daemon picks one from its migration port range)."""
    return f"tcp://[{address}]" if ":" in address else f"tcp://{address}"


def migration_call(
    live: bool,
    definition: str,
    new_epoch: int,
    address: str | None,
    bandwidth_mib: int | None,
    disks: list[str] | None = None,
    *,
    unsafe: bool = False,
    nics: tuple[DomainNic, ...] = (),
    running: str | None = None,
) -> tuple[dict[str, Any], int]:
    """The parameters and flags of ``virDomainMigrateToURI3`` for this migration;
    ``definition`` is the domain's migratable persistent XML, ``disks`` the devices of
    the disks libvirt copies (live only: an offline migration's are copied before it).
    ``unsafe``: the VM has disks in shared pools, which the target opens where they are;
    libvirt refuses a live migration with disks it does not know to be on a shared file
    system it trusts (an NFS mount with a cache mode other than "none", a directory on one
    machine as in the tests) unless told (``VIR_MIGRATE_UNSAFE``): Bollard knows.
    ``nics``: the VM's SR-IOV NICs on the target's VFs, put into the target's definitions
    (``on_target_vfs``); ``running`` (live, with ``nics``): the running domain's migratable
    XML, which the target runs with those NICs (``DEST_XML``)."""
    target_definition = with_epoch(on_target_vfs(definition, nics), new_epoch)
    if not live:
        return {PARAM_DEST_XML: target_definition}, OFFLINE_FLAGS
    params: dict[str, Any] = {PARAM_PERSIST_XML: target_definition}
    if nics and running is not None:
        params[PARAM_DEST_XML] = on_target_vfs(running, nics)
    flags = LIVE_FLAGS
    if disks:
        params[PARAM_MIGRATE_DISKS] = list(disks)
        flags |= MIGRATE_NON_SHARED_DISK
    if unsafe:
        flags |= MIGRATE_UNSAFE
    if address is not None:
        params[PARAM_URI] = stream_uri(address)
        params[PARAM_LISTEN_ADDRESS] = address
    if bandwidth_mib is not None:
        params[PARAM_BANDWIDTH] = bandwidth_mib
    return params, flags


def on_target_vfs(definition: str, nics: tuple[DomainNic, ...]) -> str:
    """``definition`` (a domain's XML) with the interface of each SR-IOV NIC of ``nics`` (by
    MAC) on that NIC's VF, and nothing else changed: only the interface's source (the
    macvtap device, or the hostdev's PCI address on the host) is the host's; its guest PCI
    address, model and alias stay, as libvirt's ABI check of a migration's destination XML
    requires and as the guest expects (its NIC keeps its name). ValueError naming the NIC
    when the definition has no interface of that MAC in that mode."""
    wanted = {n.mac.lower(): n for n in nics if n.mac and n.mode is not None}
    if not wanted:
        return definition
    try:
        root = ET.fromstring(definition)
    except ET.ParseError as exc:
        raise ValueError(f"unreadable domain XML: {exc}") from None
    for el in root.findall("devices/interface"):
        mac_el = el.find("mac")
        mac = (mac_el.get("address") or "").lower() if mac_el is not None else ""
        nic = wanted.pop(mac, None)
        if nic is None:
            continue
        kind = "direct" if nic.mode == "macvtap" else "hostdev"
        source = el.find("source")
        if el.get("type") != kind or source is None:
            raise ValueError(
                f"NIC {nic.mac}: the definition has it as a {el.get('type')} interface, "
                f"not {nic.mode} on a VF"
            )
        if nic.mode == "macvtap":
            source.attrib.update(dev=nic.vf_netdev or "", mode="passthrough")
            continue
        address = source.find("address")
        if address is None:
            address = ET.SubElement(source, "address")
        address.attrib.clear()
        address.attrib.update(pci_attributes(nic.vf_pci or ""))
    if wanted:
        raise ValueError(f"NIC {next(iter(wanted))}: the definition has no interface of that MAC")
    return ET.tostring(root, encoding="unicode")


def fraction(stats: dict[str, Any]) -> float | None:
    """How far a migration is, from ``virDomainGetJobStats`` (None: not known yet)."""
    total = stats.get("data_total") or 0
    done = stats.get("data_processed") or 0
    if total <= 0:
        return None
    return max(0.0, min(1.0, done / total))


def libvirt_job(lib: Any, dom: Any) -> dict[str, Any] | None:
    """The statistics of the libvirt job running on ``dom`` ({} for an incoming migration,
    which has none); None when no job runs (or the domain does not run, or is gone)."""
    try:
        stats: dict[str, Any] = dom.jobStats(0)
    except lib.libvirtError as exc:
        code = code_of(exc)
        if code == Err.OPERATION_UNSUPPORTED:  # "available only on the source host"
            return {}
        if code in (Err.NO_DOMAIN, Err.OPERATION_INVALID, Err.NO_SUPPORT):
            return None
        raise
    return stats if stats.get("type", 0) != 0 else None


@dataclass(frozen=True)
class MigrationOutcome:
    """What became of a libvirt migration: the job's status, the phase it reached, and
    whether the VM moved."""

    status: JobStatus
    phase: str
    message: str = ""
    error_code: str = ""
    moved: bool = False


@dataclass(frozen=True)
class Copy:
    """The VM's domain on one host, as far as settling a migration needs it."""

    active: bool
    persistent: bool
    migrating: bool  # a libvirt job runs on it (outgoing, or incoming)
    epoch: int


def from_source(rec: JobRecord, source: Copy | None) -> MigrationOutcome | None:
    """What became of a migration, when the source's copy of the VM (None: it has none)
    tells; None when the target must be asked (see ``decide``)."""
    if source is not None and source.migrating:
        return MigrationOutcome(
            JobStatus.RUNNING, "transfer" if rec.phase == "prepare" else rec.phase
        )
    if source is not None and rec.live and source.active:
        return _not_moved(rec)  # it still runs here: libvirt never leaves a moved VM running
    return None


def decide(rec: JobRecord, source: Copy | None, target: Copy | None) -> MigrationOutcome:
    """What became of a migration whose call ended (or whose agent restarted), from where
    the VM is (None: not on that host)."""
    known = from_source(rec, source)
    if known is not None:
        return known
    # The target's copy, if it is the VM as it landed there (not migrating in any more).
    landed = target if target is not None and target.persistent and not target.migrating else None
    if source is None:
        if landed is not None:
            return MigrationOutcome(JobStatus.COMPLETED, "done", moved=True)
        what = "the VM is on neither host"
        return MigrationOutcome(JobStatus.FAILED, rec.phase, f"{what}; {_why(rec)}", MIGRATION_LOST)
    if landed is not None and landed.epoch >= rec.new_epoch and (landed.active or not rec.live):
        message = (
            f"the VM is on {rec.target} with epoch {rec.new_epoch}, but its stopped "
            f"definition is left on {rec.source}; {_why(rec)}"
        )
        return MigrationOutcome(JobStatus.FAILED, "cleanup", message, CLEANUP_FAILED, moved=True)
    return _not_moved(rec)


def _why(rec: JobRecord) -> str:
    return rec.call_error or "the migration ended while its agent was not running"


def _not_moved(rec: JobRecord) -> MigrationOutcome:
    phase = "prepare" if rec.phase == "prepare" else "transfer"
    if rec.abort_reason is not None or rec.call_error_code == Err.OPERATION_ABORTED:
        return MigrationOutcome(JobStatus.ABORTED, phase, rec.abort_reason or _why(rec))
    return MigrationOutcome(JobStatus.FAILED, phase, _why(rec), MIGRATION_FAILED)
