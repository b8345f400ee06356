"""A migrated VM's new host reports it while another server moves its owner (issue 23).

`vms.move_owner` gives the VM the new owner's last report of it (host_vms), and a report
writes the observed power of the VMs its node owns. On PostgreSQL the two transactions can
miss each other: the move reads the new owner's entry before the report commits, and the
report's update finds the VM still the old owner's. The VM's observed power then stays what
the move saw (unknown) until its power changes again, since reports carry only changes.
Fixed by the move locking the row before it reads the entry, and the report, once committed,
applying itself to the VMs it carried that its node did not own, after waiting for a move
still running (`host_vms.observe_arrived`).

The report goes through `Reports.store` with its real group commit; the move is a
transaction the test holds open, and the report's transaction is paused where each
interleaving needs it (no sleeps: events)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from sqlalchemy import Connection, event, update

from bollard.domain.inventory import Inventory
from bollard.domain.protocol import Heartbeat, VmReport
from bollard.domain.states import DesiredPower, PowerState
from bollard.server.clock import SystemClock
from bollard.server.gateway import AgentConnection
from bollard.server.group_commit import GroupCommit
from bollard.server.reports import Reports
from bollard.server.unit_of_work import DatabaseWork
from bollard.store import nodes, vms
from bollard.store.db import Database
from bollard.store.tables import nodes as nodes_table
from tests.support.cluster_db import DEADLINE
from tests.support.cluster_db import db as db  # the fixture (an explicit re-export)

NOW = datetime(2026, 12, 8, tzinfo=UTC)
SOURCE, TARGET = "node-b", "node-a"  # the target first: the group commit's order of nodes
UUID = "00000000-0000-4000-8000-000000000001"
TASK = "00000000-0000-4000-8000-0000000000aa"
SEQ = 7  # the target's report


class PausingWork(DatabaseWork):
    """The report's transaction (the first write) can be held just before its commit
    (`written`, then it waits for `go`); `committed` once it has committed."""

    def __init__(self, db: Database, *, pause: bool) -> None:
        super().__init__(db)
        self.pause = pause
        self.written, self.go, self.committed = (
            threading.Event(),
            threading.Event(),
            threading.Event(),
        )
        self._first = True

    @contextmanager
    def write(self) -> Iterator[Connection]:
        first, self._first = self._first, False
        with self.db.write() as conn:
            yield conn
            if first and self.pause:
                self.written.set()
                if not self.go.wait(DEADLINE):
                    raise TimeoutError("the test never let the report commit")
        if first:
            self.committed.set()


def _setup(db: Database) -> None:
    with db.write() as conn:
        for name in (SOURCE, TARGET):
            nodes.create(conn, name, f"hash-{name}", NOW)
        conn.execute(update(nodes_table).values(last_seq=1))
        vms.create(
            conn, uuid=UUID, name="vm-1", node=SOURCE, vcpus=1, memory_mb=64,
            desired_power=DesiredPower.RUNNING, task_id=TASK, now=NOW,
        )  # fmt: skip


def _report() -> tuple[AgentConnection, Heartbeat]:
    """The target's first report of the VM, arrived by migration: a delta."""
    session = AgentConnection(cast(Any, None), TARGET, "incarnation")
    session.inventory = Inventory([])
    arrived = VmReport(uuid=UUID, name="vm-1", power=PowerState.RUNNING, vcpus=1, memory_mb=64)
    msg = Heartbeat(
        seq=SEQ, sent_at=NOW.timestamp(), vms=[arrived], full=False,
        digest=Inventory([arrived]).digest,
    )  # fmt: skip
    return session, msg


def _store_in_thread(work: PausingWork) -> tuple[threading.Thread, list[Any]]:
    reports = Reports(
        clock=SystemClock(),
        report_writes=GroupCommit(work),
        metrics=cast(Any, None),  # (on_heartbeat's; store does not use it)
        first_report=lambda _c, _m: None,
        kick_state=lambda _node: None,
        store_journal=cast(Any, None),
    )
    session, msg = _report()
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(asyncio.run(reports.store(session, msg)))
        except BaseException as exc:  # noqa: BLE001 - looked at by the test
            outcome.append(exc)

    thread = threading.Thread(target=run, name="report", daemon=True)
    thread.start()
    return thread, outcome


def _wait(event: threading.Event, what: str) -> None:
    if not event.wait(DEADLINE):
        raise AssertionError(f"timed out after {DEADLINE:g} s waiting for {what}")


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
@pytest.mark.parametrize(
    "order",
    [
        "move-then-report",
        "report-commits-during-move",
        "report-before-the-moves-update",
        "report-then-move",
    ],
)
def test_the_new_owners_report_is_not_lost_to_the_move_of_the_owner(
    db: Database, order: str
) -> None:
    _setup(db)
    work = PausingWork(db, pause=order == "report-commits-during-move")
    started: list[tuple[threading.Thread, list[Any]]] = []

    def report() -> None:
        started.append(_store_in_thread(work))

    move = db.engine.connect()
    try:
        if order == "report-then-move":
            report()
            _wait(work.committed, "the report to commit")
        tx = move.begin()
        if order == "report-commits-during-move":
            report()
            _wait(work.written, "the report to be written")
        if order == "report-before-the-moves-update":
            # The whole report (and what follows it) lands before the move's first update of
            # the VM's row: after the move read the new owner's entry, if it reads first.
            def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
                if statement.startswith("UPDATE vms") and not started:
                    report()
                    started[0][0].join(DEADLINE)

            event.listen(move, "before_cursor_execute", before)
        moved = vms.move_owner(
            move, UUID, source=SOURCE, target=TARGET, epoch=1, previous_node=None, now=NOW
        )
        assert moved
        if order == "move-then-report":
            report()
        work.go.set()
        _wait(work.committed, "the report to commit")
        tx.commit()
    finally:
        move.close()
    [(thread, outcome)] = started
    thread.join(DEADLINE)
    assert not thread.is_alive(), "the report was not stored in time"
    assert len(outcome) == 1 and not isinstance(outcome[0], BaseException), outcome
    with db.read() as conn:
        vm = vms.get_by_uuid(conn, UUID)
    assert vm.node == TARGET
    assert (vm.observed_power, vm.observed_seq) == (PowerState.RUNNING, SEQ)


def test_a_report_of_a_vm_the_node_does_not_own_changes_nothing_of_it(db: Database) -> None:
    """Also on SQLite: the follow-up of a report that carried another node's VM, held by a
    task that does not move it, leaves the VM's observed state alone."""
    _setup(db)
    work = PausingWork(db, pause=False)
    thread, outcome = _store_in_thread(work)
    thread.join(DEADLINE)
    assert not thread.is_alive(), "the report was not stored in time"
    assert len(outcome) == 1 and outcome[0].unowned == (UUID,), outcome
    with db.read() as conn:
        vm = vms.get_by_uuid(conn, UUID)
    assert (vm.node, vm.observed_power, vm.observed_seq) == (SOURCE, PowerState.UNKNOWN, 0)


def test_a_new_vm_is_absent_from_a_node_whose_whole_inventory_is_stored(db: Database) -> None:
    """A VM created after its node's last full report of the session: absent until a report
    carries it (reports carry only changes: if its definition never reaches the host, no
    report ever would, and it stayed UNKNOWN for good, seen in the chaos run); on a node
    with no full report of its session stored, unknown until that report."""
    with db.write() as conn:
        for name in (SOURCE, TARGET):
            nodes.create(conn, name, f"hash-{name}", NOW)
        nodes.set_inventory_incarnation(conn, TARGET, "incarnation")
        on_target = vms.create(
            conn, uuid=UUID, name="vm-1", node=TARGET, vcpus=1, memory_mb=64,
            desired_power=DesiredPower.RUNNING, task_id=TASK, now=NOW,
        )  # fmt: skip
        on_source = vms.create(
            conn, uuid=UUID[:-1] + "2", name="vm-2", node=SOURCE, vcpus=1, memory_mb=64,
            desired_power=DesiredPower.RUNNING, task_id=TASK, now=NOW,
        )  # fmt: skip
    assert (on_target.observed_power, on_target.observed_seq) == (PowerState.ABSENT, 0)
    assert on_source.observed_power is PowerState.UNKNOWN
