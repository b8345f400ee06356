"""Agents' heartbeats (state reports): the gateway's handler of `heartbeat` messages.

A report is stored in the transaction it shares with the other sessions' reports that
arrive meanwhile (group commit), and answered once that has committed: the node's liveness
first, then its inventory, O(1) when the report changes nothing. Then: a full report is
asked for when the server's copy of the inventory is missing or differs, the first full
report of a session is checked for stale VM copies (the rejoiner), a change wakes the state
reconciler, and the journal entries it carries are stored and acknowledged. A report that
carries the host's SR-IOV PFs (every full one, and a delta one when they changed) syncs them
into the store as the hello does, each VF with the VM the host says uses it: what the state
reconciler's VF checks compare with the claims.

A report that carried VMs its node did not own (a VM arriving by migration or recovery, whose
move of owner may be running at that very moment on another server) is followed, once
committed, by one transaction per such VM held by a task (`host_vms.observe_arrived`): it
waits for a move still running, so that the new owner's report is not lost between the two.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from bollard.domain.commands import AgentCommandState
from bollard.domain.errors import InvalidInput
from bollard.domain.inventory import Delta, Inventory
from bollard.domain.protocol import Ack, Heartbeat, JournalEntry, Resync
from bollard.server.clock import Clock
from bollard.server.gateway import AgentConnection
from bollard.server.group_commit import GroupCommit
from bollard.server.metrics import ServerMetrics
from bollard.server.ports import NodeKick
from bollard.store import events, host_vms, nodes, sriov

log = logging.getLogger(__name__)

# Store a heartbeat's journal entries: (session, entries) -> what was stored, for the ack.
JournalSink = Callable[
    [AgentConnection, list[JournalEntry]], Awaitable[dict[str, AgentCommandState]]
]


@dataclass(frozen=True)
class ReportOutcome:
    accepted: bool = True  # False: older than a report already stored
    changed: bool = False  # the inventory changed (the state reconciler should look)
    resync: str | None = None  # ask the host for a full report, for this reason
    unowned: tuple[str, ...] = ()  # VMs it carried that the node did not own (not written)


class Reports:
    def __init__(
        self,
        *,
        clock: Clock,
        report_writes: GroupCommit,
        metrics: ServerMetrics,
        first_report: Callable[[AgentConnection, Heartbeat], None],
        kick_state: NodeKick,
        store_journal: JournalSink,
    ) -> None:
        self.clock = clock
        self.report_writes = report_writes
        self.metrics = metrics
        self.first_report = first_report
        self.kick_state = kick_state
        self.store_journal = store_journal

    async def on_heartbeat(self, connection: AgentConnection, msg: Heartbeat) -> None:
        """The gateway's handler of `heartbeat` messages."""
        outcome = await self.store(connection, msg)
        self.metrics.heartbeat_seconds.labels(_outcome(outcome)).observe(
            self.clock.monotonic() - connection.message_arrived
        )
        if outcome.resync:
            await connection.send(Resync(reason=outcome.resync))
        if outcome.accepted and msg.full and not connection.reported:
            connection.reported = True
            self.first_report(connection, msg)
        if outcome.changed:
            self.kick_state(connection.node)
        if msg.journal:
            stored = await self.store_journal(connection, msg.journal)
            if stored:
                await connection.send(Ack(entries=stored))

    async def store(self, connection: AgentConnection, msg: Heartbeat) -> ReportOutcome:
        """Store a report; it shares its transaction with the other sessions' reports that
        arrive meanwhile (group commit), and is answered once that has committed."""
        try:
            outcome = await self.report_writes.run(
                lambda conn: self._store_report(conn, connection, msg), order=connection.node
            )
            if outcome.unowned:
                await self._observe_arrived(connection.node, outcome.unowned, msg.seq)
            return outcome
        except BaseException:
            connection.inventory = None  # memory may be ahead of the database: start over
            raise

    async def _observe_arrived(self, node: str, unowned: tuple[str, ...], seq: int) -> None:
        """The VMs of a committed report that its node did not own and that a task holds:
        each, in a transaction of its own, gets `node`'s report once a move of its owner
        still running has ended (see the module's docstring)."""
        work = self.report_writes.work

        def held(uuids: list[str]) -> list[str]:
            with work.read() as conn:
                return host_vms.moving(conn, uuids)

        def observe(uuid: str) -> None:
            with work.write() as conn:
                host_vms.observe_arrived(conn, node, uuid, seq, self.clock.now())

        for uuid in await work.run(held, list(unowned)):
            await work.run(observe, uuid)

    def _store_report(
        self, conn: Connection, connection: AgentConnection, msg: Heartbeat
    ) -> ReportOutcome:
        """Liveness, then the inventory: O(1) when the report changes nothing."""
        node, now = connection.node, self.clock.now()
        stored = nodes.record_heartbeat(
            conn, node, msg.seq, now, host_time=msg.sent_at, load=msg.load
        )
        if not stored:
            self._ignored(conn, node, msg)
            return ReportOutcome(accepted=False)
        sriov_changed = msg.sriov is not None and _sync_sriov(conn, node, msg, now)
        if msg.full:
            connection.inventory = Inventory(msg.vms)
            carried = host_vms.replace_node(conn, node, msg.vms, msg.seq, now)
            nodes.set_inventory_incarnation(conn, node, connection.incarnation)
            return ReportOutcome(changed=True, unowned=tuple(carried))
        if connection.inventory is None:
            return ReportOutcome(changed=sriov_changed, resync="no full report in this session yet")
        applied = connection.inventory.apply(Delta(list(msg.vms), list(msg.gone)))
        unowned: tuple[str, ...] = ()
        if applied:
            unowned = tuple(
                host_vms.apply_delta(conn, node, applied.changed, applied.gone, msg.seq, now)
            )
        if msg.digest is not None and msg.digest != connection.inventory.digest:
            log.warning("node %s: inventory digest differs; asking for a full report", node)
            connection.inventory = None
            nodes.set_inventory_incarnation(conn, node, None)
            return ReportOutcome(
                changed=bool(applied) or sriov_changed,
                resync="inventory digest differs",
                unowned=unowned,
            )
        return ReportOutcome(changed=bool(applied) or sriov_changed, unowned=unowned)

    def _ignored(self, conn: Connection, node: str, msg: Heartbeat) -> None:
        known = nodes.get(conn, node)
        log.warning(
            "node %s: report %d is older than report %d already stored; ignored",
            node, msg.seq, known.last_seq,
        )  # fmt: skip
        events.add(
            conn,
            "node.report_ignored",
            f"report {msg.seq} from {node} (host time {msg.sent_at:.3f}) arrived after report "
            f"{known.last_seq} (host time {known.report_host_time or 0:.3f}); ignored",
            self.clock.now(),
            node=node,
            data={
                "seq": msg.seq,
                "host_time": msg.sent_at,
                "stored_seq": known.last_seq,
                "stored_host_time": known.report_host_time,
            },
        )


def _sync_sriov(conn: Connection, node: str, msg: Heartbeat, now: datetime) -> bool:
    """The node's PFs and VFs as the report gives them (written on change only); True. A
    report the store refuses changes nothing (logged; the inventory is stored still, and
    the agent's next full report tries again): False."""
    assert msg.sriov is not None
    try:
        lost = sriov.sync_node(conn, node, msg.sriov, now=now)
    except InvalidInput as exc:
        log.error("node %s: SR-IOV in report %d refused: %s", node, msg.seq, exc.message)
        return False
    for vf in lost:
        log.warning(
            "node %s: PF %s VF %d (%s) held by VM %s is no longer on the host",
            node, vf.pf, vf.idx, vf.pci, vf.used_by,
        )  # fmt: skip
    return True


def _outcome(outcome: ReportOutcome) -> str:
    if not outcome.accepted:
        return "ignored"
    return "changed" if outcome.changed else "unchanged"
