"""Reading Bollard's domains: lookup, power state, and the VmReport of each.

These functions take libvirt objects and run in the connection's call threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from bollard.agent.drivers.libvirt.errors import Err, code_of
from bollard.agent.drivers.libvirt.xml import DomainFacts, parse_domain
from bollard.domain.errors import DriverNotFound
from bollard.domain.protocol import VmReport
from bollard.domain.states import PowerState

XML_INACTIVE = 2  # VIR_DOMAIN_XML_INACTIVE: the persistent definition


class DomState(IntEnum):
    """virDomainState."""

    NOSTATE = 0
    RUNNING = 1
    BLOCKED = 2
    PAUSED = 3
    SHUTDOWN = 4  # being shut down: still running
    SHUTOFF = 5
    CRASHED = 6
    PMSUSPENDED = 7


SHUTOFF_CRASHED = 3  # virDomainShutoffReason
PAUSED_CRASHED = 10  # virDomainPausedReason (e.g. "KVM internal error")

# States in which the guest's CPUs run and an ACPI request can be heard.
GUEST_RUNS = frozenset({DomState.NOSTATE, DomState.RUNNING, DomState.BLOCKED, DomState.SHUTDOWN})


def power_of(state: int, reason: int) -> PowerState:
    """Bollard's power state for libvirt's (state, reason).

    Anything that may still execute guest code is RUNNING (a VM must never be reported
    stopped while it may run): running, blocked, being shut down, and "no state" (starting).
    Paused and suspended to RAM are PAUSED, unless paused because the guest crashed.
    """
    if state in (DomState.RUNNING, DomState.BLOCKED, DomState.SHUTDOWN, DomState.NOSTATE):
        return PowerState.RUNNING
    if state == DomState.PAUSED:
        return PowerState.CRASHED if reason == PAUSED_CRASHED else PowerState.PAUSED
    if state == DomState.PMSUSPENDED:
        return PowerState.PAUSED
    if state == DomState.CRASHED:
        return PowerState.CRASHED
    if state == DomState.SHUTOFF:
        return PowerState.CRASHED if reason == SHUTOFF_CRASHED else PowerState.STOPPED
    return PowerState.RUNNING  # a state this code does not know: assume the worst


@dataclass(frozen=True)
class Domain:
    """A Bollard domain: the libvirt object and its persistent definition's facts."""

    dom: Any
    facts: DomainFacts

    @property
    def uuid(self) -> str:
        return self.facts.uuid

    def state(self) -> tuple[int, int]:
        """virDomainState and its reason (compare with DomState)."""
        state, reason = self.dom.state()
        return int(state), int(reason)

    def report(self) -> VmReport:
        meta = self.facts.meta
        assert meta is not None  # Domain objects are made for Bollard's domains only
        state, reason = self.state()
        return VmReport(
            uuid=self.facts.uuid,
            name=meta.name,
            power=power_of(state, reason),
            vcpus=self.facts.vcpus,
            memory_mb=self.facts.memory_mb,
            epoch=meta.epoch,
        )


def lookup(lib: Any, conn: Any, uuid: str) -> Any | None:
    """The libvirt domain with this uuid, Bollard's or not (None: there is none)."""
    try:
        return conn.lookupByUUIDString(uuid)
    except lib.libvirtError as exc:
        if code_of(exc) == Err.NO_DOMAIN:
            return None
        raise


def read(dom: Any) -> DomainFacts:
    return parse_domain(dom.XMLDesc(XML_INACTIVE))


def find(lib: Any, conn: Any, uuid: str) -> Domain | None:
    """Bollard's domain with this uuid (None: none, or a domain that is not Bollard's)."""
    dom = lookup(lib, conn, uuid)
    if dom is None:
        return None
    try:
        facts = read(dom)
    except lib.libvirtError as exc:
        if code_of(exc) == Err.NO_DOMAIN:
            return None  # undefined meanwhile
        raise
    return Domain(dom, facts) if facts.meta is not None else None


def get(lib: Any, conn: Any, uuid: str) -> Domain:
    """Bollard's domain with this uuid; DriverNotFound if there is none."""
    found = find(lib, conn, uuid)
    if found is None:
        raise DriverNotFound(f"no VM {uuid} on this libvirt host")
    return found


def all_reports(lib: Any, conn: Any) -> list[VmReport]:
    """Every Bollard domain of the host (others are ignored), defined or running."""
    reports = []
    for dom in conn.listAllDomains(0):
        try:
            facts = read(dom)
            if facts.meta is not None:
                reports.append(Domain(dom, facts).report())
        except lib.libvirtError as exc:
            if code_of(exc) != Err.NO_DOMAIN:  # gone meanwhile: not there any more
                raise
        except ValueError:
            continue  # unreadable XML: not a domain Bollard defined
    return reports
