"""Contract suite for the command journal, run over every JournalStore implementation.

"Reopening" builds a new CommandJournal over the same store, as an agent restart does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bollard.agent.journal import (
    CommandJournal,
    DuplicateCommand,
    TransitionRefused,
    answer_from,
)
from bollard.agent.journal_store import DirJournalStore, JournalStore, MemoryJournalStore
from bollard.domain.commands import (
    AGENT_ON_RESTART,
    AGENT_TERMINAL,
    AGENT_TRANSITIONS,
    AgentCommandState,
)
from bollard.domain.protocol import Answer, AnswerError, Command
from bollard.domain.states import CommandType

S = AgentCommandState


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    store: JournalStore
    clock: Clock

    def open(self, **kw: object) -> CommandJournal:
        return CommandJournal(self.store, clock=self.clock, **kw)  # type: ignore[arg-type]


def _memory(tmp_path: Path) -> JournalStore:
    return MemoryJournalStore()


def _dir(tmp_path: Path) -> JournalStore:
    return DirJournalStore(tmp_path / "state" / "journal")


STORES: list[tuple[str, Callable[[Path], JournalStore]]] = [("memory", _memory), ("dir", _dir)]


@pytest.fixture(params=[f for _, f in STORES], ids=[n for n, _ in STORES])
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    return Harness(request.param(tmp_path), Clock())


def cmd(cid: str, kind: CommandType = CommandType.START, epoch: int = 3) -> Command:
    return Command(id=cid, command=kind, vm_uuid="vm-1", epoch=epoch, timeout=10)


def ok(cid: str, **result: object) -> Answer:
    return Answer(command_id=cid, ok=True, result=dict(result))


def bad(cid: str, code: str = "permanent") -> Answer:
    return Answer(command_id=cid, ok=False, error=AnswerError(code=code, message="no"))


def _path_to(state: AgentCommandState) -> list[AgentCommandState]:
    """A shortest allowed path of states from RECEIVED to ``state``."""
    paths = {S.RECEIVED: [S.RECEIVED]}
    frontier = [S.RECEIVED]
    while frontier:
        nxt = []
        for src in frontier:
            for dst in sorted(AGENT_TRANSITIONS[src]):
                if dst not in paths:
                    paths[dst] = [*paths[src], dst]
                    nxt.append(dst)
        frontier = nxt
    return paths[state]


def _drive(j: CommandJournal, cid: str, state: AgentCommandState) -> None:
    j.record_received(cmd(cid))
    for step in _path_to(state)[1:]:
        if step == S.COMPLETED:
            j.finish(cid, ok(cid))
        elif step == S.FAILED:
            j.finish(cid, bad(cid))
        else:
            j.advance(cid, step)


ALL_PAIRS = [(a, b) for a in S for b in S]


def test_received_entry_holds_the_command(h: Harness) -> None:
    j = h.open()
    entry = j.record_received(cmd("c1", CommandType.DEFINE, epoch=7))
    assert (entry.state, entry.command, entry.vm_uuid, entry.epoch) == (
        S.RECEIVED,
        CommandType.DEFINE,
        "vm-1",
        7,
    )
    assert entry.received_at == entry.updated_at == h.clock.now
    assert j.get("c1") == entry and "c1" in j and len(j) == 1
    assert j.answer_for("c1") is None
    with pytest.raises(DuplicateCommand):
        j.record_received(cmd("c1"))


@pytest.mark.parametrize(("src", "dst"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_every_transition_is_allowed_or_refused_per_the_table(
    h: Harness, src: AgentCommandState, dst: AgentCommandState
) -> None:
    j = h.open()
    _drive(j, "c", src)
    assert j.get("c") is not None and j.get("c").state == src  # type: ignore[union-attr]
    h.clock.now += 1
    allowed = dst in AGENT_TRANSITIONS[src]

    def attempt() -> object:
        if dst in (S.COMPLETED, S.FAILED):
            return j.finish("c", ok("c") if dst == S.COMPLETED else bad("c"))
        return j.advance("c", dst, note="why")

    if allowed:
        entry = attempt()
        now = j.get("c")
        assert now == entry and now is not None
        assert (now.state, now.updated_at) == (dst, h.clock.now)
    else:
        with pytest.raises(TransitionRefused):
            attempt()
        assert j.get("c").state == src  # type: ignore[union-attr]
    # Whatever happened in memory is what a reopened journal sees (before recovery maps it).
    again = h.open()
    state = again.get("c").state  # type: ignore[union-attr]
    expected = dst if allowed else src
    assert state == AGENT_ON_RESTART.get(expected, expected)


def test_finish_records_the_answer(h: Harness) -> None:
    j = h.open()
    for cid, answer in (("good", ok("good", vm={"power": "running"})), ("bad", bad("bad"))):
        j.record_received(cmd(cid))
        j.advance(cid, S.STARTED)
        j.advance(cid, S.PROCESSING)
        entry = j.finish(cid, answer, note="done")
        assert entry.ok is answer.ok and entry.result == answer.result
        assert entry.error == answer.error and entry.note == "done"
        assert j.answer_for(cid) == answer
    with pytest.raises(TransitionRefused):
        j.finish("good", ok("good"))  # finished is final
    with pytest.raises(TransitionRefused):
        j.advance("unknown", S.STARTED)


@pytest.mark.parametrize("state", list(AGENT_ON_RESTART), ids=str)
def test_restart_maps_unfinished_entries_and_reports_them(
    h: Harness, state: AgentCommandState
) -> None:
    j = h.open()
    _drive(j, "open", state)
    _drive(j, "done", S.COMPLETED)
    j.ack({"done": S.COMPLETED, "open": state})  # acked before the restart
    assert j.unacked() == []
    h.clock.now += 5
    again = h.open()
    entry = again.get("open")
    assert entry is not None
    assert entry.state == AGENT_ON_RESTART[state]
    assert entry.note and "restarted" in entry.note
    assert entry.updated_at == h.clock.now
    assert again.recovered == ["open"]
    # Reported on the first heartbeat: nothing counts as acknowledged after a restart.
    assert [e.command_id for e in again.unacked()] == ["open"]
    # A third start does not map it again.
    assert h.open().get("open") == entry


def test_interrupted_entry_answers_interrupted(h: Harness) -> None:
    j = h.open()
    _drive(j, "c", S.PROCESSING)
    answer = h.open().answer_for("c")
    assert answer is not None and answer.ok is False
    assert answer.error is not None and answer.error.code == "interrupted"


def test_unacked_until_acked_at_the_current_state(h: Harness) -> None:
    j = h.open()
    j.record_received(cmd("a"))
    h.clock.now += 1
    j.record_received(cmd("b"))
    assert [e.command_id for e in j.unacked()] == ["a", "b"]
    assert [e.command_id for e in j.unacked(limit=1)] == ["a"]
    assert j.ack({"a": S.RECEIVED, "zzz": S.FAILED}) == 0  # unknown ids are ignored
    assert [e.command_id for e in j.unacked()] == ["b"]
    h.clock.now += 1
    j.advance("a", S.STARTED)  # changed after the ack: sent again
    assert [e.command_id for e in j.unacked()] == ["b", "a"]
    j.ack({"a": S.RECEIVED})  # a stale ack (of the older state) does not count
    assert "a" in {e.command_id for e in j.unacked()}


def test_only_entries_acked_in_a_terminal_state_are_pruned(h: Harness) -> None:
    j = h.open()
    for state in S:
        _drive(j, f"c-{state}", state)
    states = {e.command_id: e.state for e in j.entries()}
    pruned = j.ack(states)
    assert pruned == len(AGENT_TERMINAL)
    remaining = {e.state for e in j.entries()}
    assert remaining == set(S) - AGENT_TERMINAL
    assert j.unacked() == []
    for state in AGENT_TERMINAL:
        record = j.get(f"c-{state}")
        assert record is not None and record.state == state  # compact record
    assert j.finished_count == len(AGENT_TERMINAL)


def test_pruning_keeps_exactly_once_across_restarts(h: Harness) -> None:
    j = h.open()
    _drive(j, "c1", S.COMPLETED)
    j.record_tombstone("t1", "vm-9")
    j.ack({"c1": S.COMPLETED, "t1": S.FAILED})
    assert len(j) == 0
    for journal in (j, h.open()):
        assert journal.answer_for("c1") == ok("c1")
        with pytest.raises(DuplicateCommand):
            journal.record_received(cmd("c1"))
        tomb = journal.answer_for("t1")
        assert tomb is not None and tomb.error is not None
        assert tomb.error.code == "never-received"
        with pytest.raises(DuplicateCommand):
            journal.record_received(cmd("t1"))


def test_tombstone(h: Harness) -> None:
    j = h.open()
    entry = j.record_tombstone("late", "vm-2")
    assert (entry.state, entry.command, entry.ok, entry.vm_uuid) == (S.FAILED, None, False, "vm-2")
    assert entry.note == "reconciled before it arrived"
    assert [e.command_id for e in j.unacked()] == ["late"]
    with pytest.raises(DuplicateCommand):
        j.record_tombstone("late")
    _drive(j, "real", S.PROCESSING)
    with pytest.raises(DuplicateCommand):
        j.record_tombstone("real")


def test_finished_records_are_bounded_by_count_and_age(h: Harness) -> None:
    j = h.open(keep_finished=3, keep_finished_for=100.0, compact_slack=2)
    for i in range(5):
        _drive(j, f"c{i}", S.COMPLETED)
        j.ack({f"c{i}": S.COMPLETED})
        h.clock.now += 10
    kept = [f"c{i}" for i in range(5) if f"c{i}" in j]
    assert kept == ["c2", "c3", "c4"]
    h.clock.now += 75  # now c2 (finished 105 s ago) is too old, c3 (95 s ago) is not
    _drive(j, "c5", S.COMPLETED)
    j.ack({"c5": S.COMPLETED})
    assert [c for c in ("c2", "c3", "c4", "c5") if c in j] == ["c3", "c4", "c5"]
    again = h.open(keep_finished=3, keep_finished_for=100.0, compact_slack=2)
    assert [c for c in ("c2", "c3", "c4", "c5") if c in again] == ["c3", "c4", "c5"]
    assert again.answer_for("c4") == ok("c4")
    assert h.store.finished_records <= 3 + 2


def test_unknown_ids_have_no_entry(h: Harness) -> None:
    j = h.open()
    assert j.get("nope") is None and j.answer_for("nope") is None and "nope" not in j
    assert answer_from(j.record_received(cmd("x"))) is None
