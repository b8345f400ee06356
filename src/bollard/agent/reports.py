"""State reports: what the agent tells the server about the host's VMs in each heartbeat.

The first report of a session is full; the ones after it carry only what changed since the
previous one, with the digest of the whole inventory (bollard.domain.inventory). A ``resync``
from the server (its copy no longer matches) makes the next report full again.

For tests of out-of-order delivery a sim host can be told to hold a report back
(``bollard sim report hold``): the report is built (with its sequence number and time) but
not sent, and goes out only after a newer report that carries a change, as a network that
reorders messages would deliver it. A held report is full and leaves the record of what was
sent untouched, so the reports around it stay consistent.
"""

from __future__ import annotations

import logging
import time

from bollard.agent.drivers.base import HypervisorDriver, ReportFaultSource
from bollard.agent.seq import SeqCounter
from bollard.domain.errors import DriverError
from bollard.domain.inventory import Inventory
from bollard.domain.protocol import Heartbeat, JournalEntry, VmReport

log = logging.getLogger(__name__)

# A held report goes out at the latest after this many newer reports, change or not.
HOLD_AT_MOST = 10


class Reporter:
    def __init__(self, driver: HypervisorDriver, seq: SeqCounter) -> None:
        self.driver = driver
        self.seq = seq
        self._sent: Inventory | None = None  # what the server has from this session
        self._held: Heartbeat | None = None
        self._held_for = 0

    def reset(self) -> None:
        """A new session, or the server asked for a resync: the next report is full."""
        self._sent = None
        self._held = None

    async def build(self, journal: list[JournalEntry], load: float | None) -> list[Heartbeat]:
        """The heartbeats to send now, in order (none if the VMs cannot be listed)."""
        try:
            current = await self.driver.list_vms()
        except DriverError as exc:
            log.warning("cannot list VMs for heartbeat: %s", exc)
            return []
        if await self._hold_requested():
            self._held = Heartbeat(
                seq=self.seq.next(), sent_at=time.time(), vms=current, full=True, load=load
            )
            self._held_for = 0
            log.warning("holding back report %d (sim fault)", self._held.seq)
            return []
        beat = self._next(current, journal, load)
        out = [beat]
        if self._held is not None:
            self._held_for += 1
            if beat.vms or beat.gone or self._held_for >= HOLD_AT_MOST:
                log.warning("delivering held report %d after %d", self._held.seq, beat.seq)
                out.append(self._held)
                self._held = None
        return out

    def _next(
        self, current: list[VmReport], journal: list[JournalEntry], load: float | None
    ) -> Heartbeat:
        seq, now = self.seq.next(), time.time()
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
        )

    async def _hold_requested(self) -> bool:
        if self._held is not None or not isinstance(self.driver, ReportFaultSource):
            return False
        try:
            return await self.driver.take_report_hold()
        except DriverError as exc:
            log.warning("cannot read the report fault: %s", exc)
            return False
