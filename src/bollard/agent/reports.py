"""State reports: what the agent tells the server about the host's VMs in each heartbeat.

The first report of a session is full; the ones after it carry only what changed since the
previous one, with the digest of the whole inventory (bollard.domain.inventory). A ``resync``
from the server (its copy no longer matches) makes the next report full again.

For tests of out-of-order delivery a sim host can be told to hold a report back
(``bollard sim report hold``): the report is built (with its sequence number and time) but
not sent, and goes out only after a newer report that carries a change, as a network that
reorders messages would deliver it. A held report is full and leaves the record of what was
sent untouched, so the reports around it stay consistent.

An agent with SR-IOV (``sriov``, a `SriovSource`) reports its PFs with each VF's user in
every full report, as its hello does, and in a delta report when they differ from what this
session sent last (None otherwise): the server's record of which VM uses each VF on the host
follows within a heartbeat, for the state reconciler to compare with its claims. The look is
taken for every report, so a VF whose VM stopped gets its settings back (sriov_agent.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol

from bollard.agent.drivers.base import HypervisorDriver, ReportFaultSource
from bollard.agent.seq import SeqCounter
from bollard.domain.errors import DriverError
from bollard.domain.inventory import Inventory
from bollard.domain.protocol import Heartbeat, JournalEntry, VmReport
from bollard.domain.sriov import SriovPf

log = logging.getLogger(__name__)

# A held report goes out at the latest after this many newer reports, change or not.
HOLD_AT_MOST = 10


class SriovSource(Protocol):
    """The agent's SR-IOV as a report sees it (sriov_agent.AgentSriov)."""

    async def look(self, vms: Sequence[VmReport]) -> list[SriovPf] | None:
        """The PFs with each VF's user, given the VMs listed for the same report (None:
        nothing to report)."""
        ...


class Reporter:
    def __init__(
        self, driver: HypervisorDriver, seq: SeqCounter, sriov: SriovSource | None = None
    ) -> None:
        self.driver = driver
        self.seq = seq
        self.sriov = sriov
        self._sent: Inventory | None = None  # what the server has from this session
        self._sriov_sent: list[SriovPf] | None = None  # the SR-IOV it has from this session
        self._held: Heartbeat | None = None
        self._held_for = 0

    def reset(self) -> None:
        """A new session, or the server asked for a resync: the next report is full."""
        self._sent = None
        self._sriov_sent = None
        self._held = None

    async def build(self, journal: list[JournalEntry], load: float | None) -> list[Heartbeat]:
        """The heartbeats to send now, in order (none if the VMs cannot be listed)."""
        try:
            current = await self.driver.list_vms()
        except DriverError as exc:
            log.warning("cannot list VMs for heartbeat: %s", exc)
            return []
        sriov = None if self.sriov is None else await self.sriov.look(current)
        if await self._hold_requested():
            self._held = Heartbeat(
                seq=self.seq.next(), sent_at=time.time(), vms=current, full=True, load=load,
                sriov=sriov,
            )  # fmt: skip
            self._held_for = 0
            log.warning("holding back report %d (sim fault)", self._held.seq)
            return []
        beat = self._next(current, journal, load, sriov)
        out = [beat]
        if self._held is not None:
            self._held_for += 1
            if beat.vms or beat.gone or self._held_for >= HOLD_AT_MOST:
                log.warning("delivering held report %d after %d", self._held.seq, beat.seq)
                out.append(self._held)
                self._held = None
        return out

    def _next(
        self,
        current: list[VmReport],
        journal: list[JournalEntry],
        load: float | None,
        sriov: list[SriovPf] | None,
    ) -> Heartbeat:
        seq, now = self.seq.next(), time.time()
        changed_sriov = None if sriov is None or sriov == self._sriov_sent else sriov
        if sriov is not None:
            self._sriov_sent = sriov
        if self._sent is None:
            self._sent = Inventory(current)
            return Heartbeat(
                seq=seq,
                sent_at=now,
                vms=current,
                full=True,
                digest=self._sent.digest,
                journal=journal,
                load=load,
                sriov=sriov,
            )
        delta = self._sent.diff(current)
        self._sent.apply(delta)
        return Heartbeat(
            seq=seq,
            sent_at=now,
            vms=delta.changed,
            full=False,
            gone=delta.gone,
            digest=self._sent.digest,
            journal=journal,
            load=load,
            sriov=changed_sriov,
        )

    async def _hold_requested(self) -> bool:
        if self._held is not None or not isinstance(self.driver, ReportFaultSource):
            return False
        try:
            return await self.driver.take_report_hold()
        except DriverError as exc:
            log.warning("cannot read the report fault: %s", exc)
            return False
