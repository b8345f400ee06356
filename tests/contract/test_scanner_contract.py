"""The state reconciler's scanners (reconcile/scanners.py) on real databases (SQLite and
PostgreSQL): the worker thread and the worker process find the same differences in the same
database, every class of them, and count the same VMs and nodes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from bollard.domain.drift import Drift
from bollard.domain.protocol import VmReport
from bollard.domain.states import DesiredPower, NodeHealth, PowerState, TaskStatus, VmState
from bollard.server.clock import SystemClock
from bollard.server.reconcile.facts import ScanRequest, ScanResult
from bollard.server.reconcile.scanners import ProcessScanner, Scanner, ThreadScanner
from bollard.store import host_vms, migrate, nodes, tasks, vms
from bollard.store.db import Database

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
BEFORE = NOW - timedelta(minutes=10)
GRACE = timedelta(seconds=30)

# (name, node, desired power, state the create task ended with, what its host reports:
#  None = absent, else (power, vcpus))
VMS = [
    ("steady", "n1", DesiredPower.RUNNING, VmState.ACTIVE, (PowerState.RUNNING, 1)),
    ("gone", "n1", DesiredPower.RUNNING, VmState.ACTIVE, None),
    ("halted", "n1", DesiredPower.RUNNING, VmState.ACTIVE, (PowerState.STOPPED, 1)),
    ("resized", "n2", DesiredPower.STOPPED, VmState.STOPPED, (PowerState.STOPPED, 4)),
    ("stranded", "n3", DesiredPower.RUNNING, VmState.ACTIVE, None),
]
EXPECTED = {
    ("stale", "gone"),
    ("power", "halted"),
    ("spec", "resized"),
    ("lost", "stranded"),
    ("orphan", "stray"),
    ("pending", "held"),  # held by a task that has ended
    ("pending", "idle"),  # a task nobody drives
}


def _uuid(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def _seed(db: Database) -> None:
    with db.write() as conn:
        for node in ("n1", "n2", "n3"):
            nodes.create(conn, node, f"hash-{node}", BEFORE)
            nodes.register_agent(
                conn, node, incarnation=f"inc-{node}", boot_id="b", driver="sim", vcpus=64,
                memory_mb=65536, now=BEFORE,
            )  # fmt: skip
            nodes.set_inventory_incarnation(conn, node, f"inc-{node}")
        nodes.set_health(conn, "n3", NodeHealth.FENCED, BEFORE)
        reports: dict[str, list[VmReport]] = {"n1": [], "n2": [], "n3": []}
        for i, (name, node, desired, ended_as, reported) in enumerate(VMS):
            uuid = _uuid(i)
            vms.create(
                conn, uuid=uuid, name=name, node=node, vcpus=1, memory_mb=256,
                desired_power=desired, task_id=f"create-{i}", now=BEFORE,
            )  # fmt: skip
            vms.end_task(conn, uuid, f"create-{i}", BEFORE, vm_state=ended_as)
            if reported is not None:
                power, vcpus = reported
                reports[node].append(
                    VmReport(uuid=uuid, name=name, power=power, vcpus=vcpus, memory_mb=256,
                             epoch=1)
                )  # fmt: skip
        reports["n2"].append(
            VmReport(uuid=_uuid(99), name="stray", power=PowerState.RUNNING, vcpus=2,
                     memory_mb=128, epoch=3)
        )  # fmt: skip
        # "held": its record points at a task that has ended (a leftover task_state).
        vms.create(
            conn, uuid=_uuid(50), name="held", node="n2", vcpus=1, memory_mb=256,
            desired_power=DesiredPower.STOPPED, task_id="ended", now=BEFORE,
        )  # fmt: skip
        reports["n2"].append(
            VmReport(uuid=_uuid(50), name="held", power=PowerState.STOPPED, vcpus=1,
                     memory_mb=256, epoch=1)
        )  # fmt: skip
        tasks.create(conn, id="ended", type="vm.start", vm_uuid=_uuid(50), vm_name="held",
                     node="n2", params={}, now=BEFORE)  # fmt: skip
        tasks.set_state(conn, "ended", TaskStatus.FAILED, BEFORE)
        # "idle": an unfinished task, still for longer than the grace; driven or not.
        tasks.create(conn, id="still", type="vm.stop", vm_uuid=_uuid(0), vm_name="idle",
                     node="n1", params={}, now=BEFORE)  # fmt: skip
        for node, reported_vms in reports.items():
            host_vms.replace_node(conn, node, reported_vms, 1, NOW)
            nodes.record_heartbeat(conn, node, 1, NOW)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    migrate.upgrade(database)
    _seed(database)
    yield database
    database.dispose()


def _scanner(kind: str, db: Database) -> Scanner:
    return (
        ThreadScanner(db)
        if kind == "thread"
        else ProcessScanner(db.url, clock=SystemClock(), deadline=60)
    )


def _run(scanner: Scanner, request: ScanRequest) -> ScanResult:
    async def go() -> ScanResult:
        try:
            return await scanner.scan(request)
        finally:
            await scanner.close()

    return asyncio.run(go())


def _found(differences: list[Drift]) -> set[tuple[str, str]]:
    return {(d.kind.value, d.vm_name) for d in differences}


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_scan_finds_every_class_of_difference(kind: str, db: Database) -> None:
    result = _run(_scanner(kind, db), ScanRequest(now=NOW, task_grace=GRACE))
    assert _found(result.differences) == EXPECTED
    assert (result.vms, result.nodes) == (len(VMS) + 1, 3)
    stale = next(d for d in result.differences if d.kind.value == "stale")
    assert (stale.node, stale.record, stale.host) == ("n1", "active on n1", "absent")


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_task_the_server_drives_is_not_pending(kind: str, db: Database) -> None:
    request = ScanRequest(now=NOW, task_grace=GRACE, driven=frozenset({"still"}))
    assert _found(_run(_scanner(kind, db), request).differences) == EXPECTED - {("pending", "idle")}


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_the_request_s_clock_decides_the_grace(kind: str, db: Database) -> None:
    # Seen from a moment just after the idle task's last change, it is not pending yet.
    request = ScanRequest(now=BEFORE + timedelta(seconds=5), task_grace=GRACE)
    assert ("pending", "idle") not in _found(_run(_scanner(kind, db), request).differences)


def test_both_scanners_say_the_same_in_every_detail(db: Database) -> None:
    request = ScanRequest(now=NOW, task_grace=GRACE)
    by_thread = _run(ThreadScanner(db), request)
    by_process = _run(ProcessScanner(db.url, clock=SystemClock(), deadline=60), request)
    assert by_process.differences == by_thread.differences
    assert (by_process.vms, by_process.nodes) == (by_thread.vms, by_thread.nodes)
