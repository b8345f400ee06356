"""The agent's state reports: full, then deltas with a digest, and held reports."""

from __future__ import annotations

import asyncio
import random
from typing import cast

import pytest

from bollard.agent.drivers.base import HypervisorDriver, ReportFaultSource
from bollard.agent.reports import HOLD_AT_MOST, Reporter
from bollard.agent.seq import SeqCounter
from bollard.domain.commands import AgentCommandState
from bollard.domain.errors import DriverError, DriverTemporary
from bollard.domain.inventory import Delta, Inventory
from bollard.domain.protocol import Heartbeat, JournalEntry, VmReport
from bollard.domain.states import PowerState

POWERS = [PowerState.RUNNING, PowerState.STOPPED, PowerState.PAUSED, PowerState.CRASHED]


def uid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def vm(
    n: int, *, power: PowerState = PowerState.RUNNING, vcpus: int = 2, epoch: int = 0
) -> VmReport:
    return VmReport(
        uuid=uid(n), name=f"vm-{n}", power=power, vcpus=vcpus, memory_mb=1024, epoch=epoch
    )


class FakeDriver:
    """Just what the reporter uses: ``name`` and ``list_vms`` (over a list tests mutate)."""

    name = "fake"

    def __init__(self, vms: list[VmReport] | None = None) -> None:
        self.vms: list[VmReport] = list(vms or [])
        self.fail: DriverError | None = None
        self.listed = 0

    async def list_vms(self) -> list[VmReport]:
        self.listed += 1
        if self.fail is not None:
            raise self.fail
        return list(self.vms)  # a fresh list, as a real driver returns

    def set(self, report: VmReport) -> None:
        """Add a VM or replace the one with the same uuid."""
        self.vms = [v for v in self.vms if v.uuid != report.uuid] + [report]

    def remove(self, n: int) -> None:
        self.vms = [v for v in self.vms if v.uuid != uid(n)]


class HoldingDriver(FakeDriver):
    """A driver with the sim's "hold report" fault (ReportFaultSource)."""

    def __init__(self, vms: list[VmReport] | None = None) -> None:
        super().__init__(vms)
        self.holds = 0  # armed holds
        self.asked = 0
        self.hold_fail: DriverError | None = None

    async def take_report_hold(self) -> bool:
        self.asked += 1
        if self.hold_fail is not None:
            raise self.hold_fail
        if self.holds > 0:
            self.holds -= 1
            return True
        return False


def make(driver: FakeDriver, generation: int = 1) -> Reporter:
    return Reporter(cast(HypervisorDriver, driver), SeqCounter(generation=generation))


def build(
    reporter: Reporter, journal: list[JournalEntry] | None = None, load: float | None = None
) -> list[Heartbeat]:
    return asyncio.run(reporter.build(journal if journal is not None else [], load))


def one(beats: list[Heartbeat]) -> Heartbeat:
    assert len(beats) == 1, beats
    return beats[0]


def by_uuid(reports: list[VmReport]) -> dict[str, VmReport]:
    return {r.uuid: r for r in reports}


def test_fake_drivers_match_the_protocols() -> None:
    assert not isinstance(FakeDriver(), ReportFaultSource)
    assert isinstance(HoldingDriver(), ReportFaultSource)


# full, then deltas


def test_first_build_is_full_with_digest() -> None:
    driver = FakeDriver([vm(1), vm(2)])
    beat = one(build(make(driver)))
    assert beat.full is True
    assert by_uuid(beat.vms) == by_uuid([vm(1), vm(2)])
    assert beat.gone == []
    assert beat.digest == Inventory([vm(1), vm(2)]).digest


def test_first_build_of_empty_host() -> None:
    beat = one(build(make(FakeDriver())))
    assert beat.full is True
    assert beat.vms == []
    assert beat.digest == "0000000000000000"


def test_no_change_is_empty_delta_with_same_digest() -> None:
    driver = FakeDriver([vm(1), vm(2)])
    reporter = make(driver)
    first = one(build(reporter))
    for _ in range(3):
        beat = one(build(reporter))
        assert beat.full is False
        assert beat.vms == []
        assert beat.gone == []
        assert beat.digest == first.digest


def test_change_gives_only_the_changed_entry() -> None:
    driver = FakeDriver([vm(1), vm(2), vm(3)])
    reporter = make(driver)
    build(reporter)
    driver.set(vm(2, power=PowerState.STOPPED))
    beat = one(build(reporter))
    assert beat.full is False
    assert beat.vms == [vm(2, power=PowerState.STOPPED)]
    assert beat.gone == []
    assert beat.digest == Inventory([vm(1), vm(2, power=PowerState.STOPPED), vm(3)]).digest
    # and the change is sent once
    again = one(build(reporter))
    assert again.vms == [] and again.gone == []
    assert again.digest == beat.digest


def test_new_vm_is_in_the_delta() -> None:
    driver = FakeDriver([vm(1)])
    reporter = make(driver)
    build(reporter)
    driver.set(vm(2))
    beat = one(build(reporter))
    assert beat.vms == [vm(2)]
    assert beat.gone == []
    assert beat.digest == Inventory([vm(1), vm(2)]).digest


def test_removed_vm_is_gone() -> None:
    driver = FakeDriver([vm(1), vm(2)])
    reporter = make(driver)
    build(reporter)
    driver.remove(1)
    beat = one(build(reporter))
    assert beat.full is False
    assert beat.vms == []
    assert beat.gone == [uid(1)]
    assert beat.digest == Inventory([vm(2)]).digest
    assert one(build(reporter)).gone == []


def test_all_vms_removed() -> None:
    driver = FakeDriver([vm(1), vm(2)])
    reporter = make(driver)
    build(reporter)
    driver.vms = []
    beat = one(build(reporter))
    assert sorted(beat.gone) == [uid(1), uid(2)]
    assert beat.digest == "0000000000000000"


def test_change_and_removal_together() -> None:
    driver = FakeDriver([vm(1), vm(2), vm(3)])
    reporter = make(driver)
    build(reporter)
    driver.remove(3)
    driver.set(vm(1, epoch=2))
    driver.set(vm(4))
    beat = one(build(reporter))
    assert by_uuid(beat.vms) == by_uuid([vm(1, epoch=2), vm(4)])
    assert beat.gone == [uid(3)]


def test_reset_makes_the_next_full() -> None:
    driver = FakeDriver([vm(1), vm(2)])
    reporter = make(driver)
    build(reporter)
    build(reporter)
    reporter.reset()
    beat = one(build(reporter))
    assert beat.full is True
    assert by_uuid(beat.vms) == by_uuid([vm(1), vm(2)])
    assert beat.digest == Inventory([vm(1), vm(2)]).digest
    assert one(build(reporter)).full is False


def test_reset_after_a_change_sends_everything() -> None:
    driver = FakeDriver([vm(1), vm(2)])
    reporter = make(driver)
    build(reporter)
    driver.remove(2)
    driver.set(vm(3))
    reporter.reset()
    beat = one(build(reporter))
    assert beat.full is True
    assert beat.gone == []
    assert by_uuid(beat.vms) == by_uuid([vm(1), vm(3)])


def test_seq_strictly_increases() -> None:
    driver = FakeDriver([vm(1)])
    reporter = make(driver, generation=3)
    seqs: list[int] = []
    for i in range(20):
        if i % 5 == 0:
            driver.set(vm(1, vcpus=i + 1))
        if i == 10:
            reporter.reset()
        seqs.extend(b.seq for b in build(reporter))
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    assert seqs[0] == (3 << 32) + 1
    assert all(s >> 32 == 3 for s in seqs)


def test_seq_grows_across_generations() -> None:
    before = one(build(make(FakeDriver(), generation=1)))
    after = one(build(make(FakeDriver(), generation=2)))
    assert after.seq > before.seq


def test_journal_and_load_are_carried() -> None:
    driver = FakeDriver([vm(1)])
    reporter = make(driver)
    entry = JournalEntry(
        command_id="c1",
        state=AgentCommandState.COMPLETED,
        ok=True,
        received_at=1.0,
        updated_at=2.0,
    )
    full = one(build(reporter, [entry], 0.5))
    assert full.journal == [entry]
    assert full.load == 0.5
    delta = one(build(reporter, [], None))
    assert delta.journal == []
    assert delta.load is None


def test_sent_at_is_set() -> None:
    beat = one(build(make(FakeDriver())))
    assert beat.sent_at > 1_600_000_000


# driver errors


@pytest.mark.parametrize("error", [DriverError("boom"), DriverTemporary("later")])
def test_driver_error_yields_nothing(error: DriverError) -> None:
    driver = FakeDriver([vm(1)])
    driver.fail = error
    reporter = make(driver)
    assert build(reporter) == []
    # nothing was recorded as sent: the first report once listing works is full
    driver.fail = None
    beat = one(build(reporter))
    assert beat.full is True
    assert beat.vms == [vm(1)]


def test_driver_error_between_deltas_keeps_the_state() -> None:
    driver = FakeDriver([vm(1)])
    reporter = make(driver)
    build(reporter)
    driver.set(vm(2))
    driver.fail = DriverError("boom")
    assert build(reporter) == []
    driver.fail = None
    beat = one(build(reporter))
    assert beat.full is False
    assert beat.vms == [vm(2)]
    assert beat.digest == Inventory([vm(1), vm(2)]).digest


def test_driver_error_does_not_use_a_seq() -> None:
    driver = FakeDriver()
    reporter = make(driver)
    driver.fail = DriverError("boom")
    build(reporter)
    driver.fail = None
    assert one(build(reporter)).seq == (1 << 32) + 1


# held reports


def test_driver_without_hold_fault_never_holds() -> None:
    driver = FakeDriver([vm(1)])
    reporter = make(driver)
    for _ in range(3):
        assert len(build(reporter)) == 1


def test_hold_fault_error_does_not_hold() -> None:
    driver = HoldingDriver([vm(1)])
    driver.hold_fail = DriverError("fabric gone")
    beat = one(build(make(driver)))
    assert beat.full is True


def test_hold_then_no_change_then_change() -> None:
    driver = HoldingDriver([vm(1), vm(2)])
    reporter = make(driver)
    first = one(build(reporter))
    assert first.full is True

    driver.holds = 1
    assert build(reporter) == []  # built and held
    assert driver.holds == 0

    # nothing changed: only the new beat; the held one is still held
    quiet = one(build(reporter))
    assert quiet.full is False
    assert quiet.vms == [] and quiet.gone == []
    assert quiet.digest == first.digest

    driver.set(vm(1, power=PowerState.STOPPED))
    beats = build(reporter)
    assert len(beats) == 2
    new, held = beats
    assert new.full is False
    assert new.vms == [vm(1, power=PowerState.STOPPED)]
    assert held.full is True
    assert held.seq < quiet.seq < new.seq
    assert held.seq > first.seq
    # the held report shows the VMs as they were when it was built
    assert by_uuid(held.vms) == by_uuid([vm(1), vm(2)])

    # delivered once
    assert len(build(reporter)) == 1


def test_held_removal_counts_as_change() -> None:
    driver = HoldingDriver([vm(1), vm(2)])
    reporter = make(driver)
    build(reporter)
    driver.holds = 1
    assert build(reporter) == []
    driver.remove(2)
    beats = build(reporter)
    assert [b.full for b in beats] == [False, True]
    assert beats[0].gone == [uid(2)]
    assert beats[1].seq < beats[0].seq


def test_held_leaves_the_sent_record_untouched() -> None:
    # a change made before the held report is still sent in the next delta
    driver = HoldingDriver([vm(1)])
    reporter = make(driver)
    build(reporter)
    driver.set(vm(2))
    driver.holds = 1
    assert build(reporter) == []
    beats = build(reporter)
    assert len(beats) == 2
    assert beats[0].vms == [vm(2)]
    assert beats[0].digest == Inventory([vm(1), vm(2)]).digest
    assert by_uuid(beats[1].vms) == by_uuid([vm(1), vm(2)])


def test_held_delivered_after_hold_at_most_builds() -> None:
    driver = HoldingDriver([vm(1)])
    reporter = make(driver)
    build(reporter)
    driver.holds = 1
    assert build(reporter) == []
    for _ in range(HOLD_AT_MOST - 1):
        beat = one(build(reporter))
        assert beat.vms == [] and beat.gone == []
    beats = build(reporter)
    assert len(beats) == 2
    assert beats[0].full is False and beats[1].full is True
    assert beats[1].seq < beats[0].seq
    assert len(build(reporter)) == 1


def test_hold_not_asked_while_one_is_held() -> None:
    driver = HoldingDriver([vm(1)])
    reporter = make(driver)
    build(reporter)
    driver.holds = 2
    assert build(reporter) == []
    asked = driver.asked
    one(build(reporter))
    one(build(reporter))
    assert driver.asked == asked  # the second armed hold is not consumed meanwhile
    assert driver.holds == 1
    driver.set(vm(2))
    assert len(build(reporter)) == 2
    # now the next hold fires
    assert build(reporter) == []
    assert driver.holds == 0


def test_hold_of_the_first_report() -> None:
    driver = HoldingDriver([vm(1)])
    reporter = make(driver)
    driver.holds = 1
    assert build(reporter) == []
    # the first report sent is full (nothing was recorded as sent) and lists the VMs, a
    # change: the held one follows it
    beats = build(reporter)
    assert [b.full for b in beats] == [True, True]
    assert beats[0].vms == [vm(1)]
    assert beats[0].digest == Inventory([vm(1)]).digest
    assert beats[1].seq < beats[0].seq


def test_hold_of_the_first_report_of_empty_host() -> None:
    driver = HoldingDriver()
    reporter = make(driver)
    driver.holds = 1
    assert build(reporter) == []
    beat = one(build(reporter))  # a full report listing nothing changes nothing
    assert beat.full is True
    assert beat.vms == []
    driver.set(vm(1))
    assert len(build(reporter)) == 2


def test_reset_drops_the_held_report() -> None:
    driver = HoldingDriver([vm(1)])
    reporter = make(driver)
    build(reporter)
    driver.holds = 1
    assert build(reporter) == []
    reporter.reset()
    beat = one(build(reporter))
    assert beat.full is True
    driver.set(vm(2))
    assert len(build(reporter)) == 1


def test_driver_error_while_held_keeps_it() -> None:
    driver = HoldingDriver([vm(1)])
    reporter = make(driver)
    build(reporter)
    driver.holds = 1
    assert build(reporter) == []
    driver.fail = DriverError("boom")
    assert build(reporter) == []
    driver.fail = None
    driver.set(vm(2))
    assert len(build(reporter)) == 2


# the server's copy follows


class Server:
    """The server side: an Inventory per session, fed with the heartbeats in seq order."""

    def __init__(self) -> None:
        self.inventory: Inventory | None = None
        self.last_seq = 0

    def accept(self, beat: Heartbeat) -> bool:
        if beat.seq <= self.last_seq:
            return False  # out of order (a held report delivered late)
        self.last_seq = beat.seq
        if beat.full:
            if self.inventory is None:
                self.inventory = Inventory(beat.vms)
            else:
                self.inventory.replace(beat.vms)
        else:
            assert self.inventory is not None, "a delta before any full report"
            self.inventory.apply(Delta(changed=beat.vms, gone=beat.gone))
        return True


def _random_change(rng: random.Random, driver: FakeDriver, next_id: list[int]) -> None:
    op = rng.random()
    if op < 0.3 or not driver.vms:
        driver.set(vm(next_id[0], power=rng.choice(POWERS)))
        next_id[0] += 1
    elif op < 0.5:
        driver.vms.pop(rng.randrange(len(driver.vms)))
    else:
        old = rng.choice(driver.vms)
        field = rng.choice(["power", "vcpus", "memory_mb", "epoch", "name"])
        value: object = {
            "power": rng.choice(POWERS),
            "vcpus": rng.choice([1, 2, 4]),
            "memory_mb": rng.choice([512, 1024, 2048]),
            "epoch": rng.randrange(5),
            "name": rng.choice(["a", "b", "c"]),
        }[field]
        driver.set(old.model_copy(update={field: value}))
    if rng.random() < 0.2:
        rng.shuffle(driver.vms)


@pytest.mark.parametrize("seed", range(20))
def test_server_inventory_follows_the_digest(seed: int) -> None:
    rng = random.Random(seed)
    driver = HoldingDriver()
    reporter = make(driver)
    server = Server()
    next_id = [0]
    expected_seq = (1 << 32) + 1  # the seq the next built report takes
    held_seq: int | None = None
    holds_seen = 0
    for _ in range(300):
        for _ in range(rng.choice([0, 0, 1, 1, 2, 5])):
            _random_change(rng, driver, next_id)
        roll = rng.random()
        if roll < 0.05:
            driver.holds += 1
        elif roll < 0.08:
            reporter.reset()
            held_seq = None
            if rng.random() < 0.5:
                server = Server()  # a new session; else the server asked for a resync
        elif roll < 0.1:
            driver.fail = DriverError("flaky")
        armed = driver.holds
        beats = build(reporter)
        failed = driver.fail is not None
        driver.fail = None
        if failed:
            assert beats == []
            continue
        if driver.holds < armed:  # this build was held back
            assert beats == []
            assert held_seq is None
            held_seq = expected_seq
            expected_seq += 1
            holds_seen += 1
            continue
        assert beats
        new = beats[0]
        assert new.seq == expected_seq
        expected_seq += 1
        assert new.digest is not None
        if len(beats) == 2:
            held = beats[1]
            assert held.full is True
            assert held.seq == held_seq
            assert held.seq < new.seq
            held_seq = None
        else:
            assert len(beats) == 1
        assert server.accept(new)
        assert server.inventory is not None
        assert server.inventory.digest == new.digest
        assert server.inventory.entries() == Inventory(driver.vms).entries()
        if len(beats) == 2:
            assert not server.accept(beats[1])  # too old: ignored
    assert holds_seen > 0


def test_server_resync_via_reset() -> None:
    """A server whose copy went wrong asks for a resync: the next full report fixes it."""
    driver = FakeDriver([vm(1), vm(2)])
    reporter = make(driver)
    server = Server()
    server.accept(one(build(reporter)))
    assert server.inventory is not None
    server.inventory.apply(Delta(gone=[uid(1)]))  # lost a change somehow
    driver.set(vm(3))
    beat = one(build(reporter))
    server.accept(beat)
    assert server.inventory.digest != beat.digest  # detected
    reporter.reset()
    beat = one(build(reporter))
    assert server.accept(beat)
    assert server.inventory.digest == beat.digest
    assert server.inventory.entries() == Inventory(driver.vms).entries()
