"""Executor with the journal and the sim driver: exactly-once, epochs, cancel, timeouts,
queries and tombstones, injected faults, hypervisor jobs and the cancel hooks."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from bollard.agent.drivers.base import JobInfo, VmSpec
from bollard.agent.drivers.sim import SimDriver
from bollard.agent.executor import Executor
from bollard.agent.journal import CommandJournal
from bollard.agent.journal_store import MemoryJournalStore
from bollard.domain.commands import AgentCommandState
from bollard.domain.protocol import (
    Answer,
    Command,
    InspectResult,
    JournalEntry,
    Progress,
    Query,
    QueryResult,
)
from bollard.domain.states import CommandType, PowerState
from bollard.sim import Fabric, FaultMode

T = TypeVar("T")
S = AgentCommandState
VM = "11111111-1111-4111-8111-111111111111"


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(15):
            return await coro

    return asyncio.run(bounded())


def cmd(cid: str, kind: CommandType, epoch: int = 4, timeout: float = 10, **args: Any) -> Command:
    return Command(id=cid, command=kind, vm_uuid=VM, args=args, epoch=epoch, timeout=timeout)


class WatchedStore(MemoryJournalStore):
    """A memory store that reports every write, so tests can wait for a journal state."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: asyncio.Queue[tuple[str, AgentCommandState]] = asyncio.Queue()

    def put(self, entry: JournalEntry) -> None:
        super().put(entry)
        self.writes.put_nowait((entry.command_id, entry.state))


class Harness:
    def __init__(self, tmp_path: Path, journal: CommandJournal | None = None, **kw: Any) -> None:
        self.store = WatchedStore()
        if journal is None:
            journal = CommandJournal(self.store)
        self.now = [1000.0]
        self.driver = SimDriver(tmp_path / "fabric", "n1", latency=0, wall=lambda: self.now[0])
        self.host = Fabric(tmp_path / "fabric").host("n1")
        self.host.ensure_host(8, 4096)
        self.sent: asyncio.Queue[Answer | QueryResult | InspectResult] = asyncio.Queue()
        self.progress: asyncio.Queue[Progress] = asyncio.Queue()
        self.changes = 0
        self.crashes: list[JournalEntry | None] = []
        self.executor = Executor(
            self.driver,
            self._send,
            self._changed,
            journal,
            crash=self._crash,
            job_poll=0.005,
            **kw,
        )
        self.journal = self.executor.journal

    async def _send(self, msg: Answer | QueryResult | InspectResult | Progress) -> None:
        if isinstance(msg, Progress):
            await self.progress.put(msg)
        else:
            await self.sent.put(msg)

    def _changed(self) -> None:
        self.changes += 1

    def _crash(self) -> None:  # the real one is os._exit; see test_agent_session_journal
        self.crashes.append(self.journal.get(next(iter(self.executor._inflight))))

    async def next(self) -> Answer | QueryResult | InspectResult:
        async with asyncio.timeout(5):
            return await self.sent.get()

    async def answer(self) -> Answer:
        msg = await self.next()
        assert isinstance(msg, Answer), msg
        return msg

    async def define(self, epoch: int = 4, power: PowerState = PowerState.STOPPED) -> None:
        await self.driver.define(VmSpec(uuid=VM, name="web", vcpus=1, memory_mb=64, epoch=epoch))
        if power == PowerState.RUNNING:
            await self.driver.start(VM)

    async def reached(self, cid: str, state: AgentCommandState) -> None:
        """Wait until the journal records ``cid`` in ``state``."""
        async with asyncio.timeout(5):
            while await self.store.writes.get() != (cid, state):
                pass

    def executed(self, cid: str) -> int:
        return sum(op.command_id == cid for op in self.host.executed())

    def state(self, cid: str) -> AgentCommandState | None:
        entry = self.journal.get(cid)
        return None if entry is None else entry.state


def test_a_command_runs_once_and_is_answered_every_time(tmp_path: Path) -> None:
    async def go() -> None:
        h = Harness(tmp_path, CommandJournal.open(tmp_path / "journal"))
        await h.define()
        h.executor.submit(cmd("c1", CommandType.START))
        h.executor.submit(cmd("c1", CommandType.START))  # still running: no second run
        first = await h.answer()
        assert first.ok and first.result["vm"]["power"] == "running"
        h.executor.submit(cmd("c1", CommandType.START))  # done: answered from the journal
        assert await h.answer() == first
        # Even after the entry was pruned, and after a restart.
        h.journal.ack({"c1": S.COMPLETED})
        assert len(h.journal) == 0
        h2 = Harness(tmp_path, CommandJournal.open(tmp_path / "journal"))
        h2.executor.submit(cmd("c1", CommandType.START))
        assert await h2.answer() == first
        assert h.executed("c1") == 1
        assert h.sent.empty() and h2.sent.empty()

    run(go())


def test_stale_epoch_is_refused_and_epoch_zero_is_not_checked(tmp_path: Path) -> None:
    async def go() -> None:
        h = Harness(tmp_path)
        await h.define(epoch=5)
        h.executor.submit(cmd("old", CommandType.START, epoch=4))
        refused = await h.answer()
        assert refused.error is not None and refused.error.code == "stale-epoch"
        assert "4" in refused.error.message and "5" in refused.error.message
        entry = h.journal.get("old")
        assert entry is not None and (entry.state, entry.ok) == (S.FAILED, False)
        assert h.executed("old") == 0
        assert (await h.driver.list_vms())[0].power == PowerState.STOPPED
        for cid, epoch in (("same", 5), ("newer", 6), ("unbound", 0)):
            h.executor.submit(cmd(cid, CommandType.START, epoch=epoch))
            assert (await h.answer()).ok, cid
        h.executor.submit(
            cmd("def", CommandType.DEFINE, epoch=9, name="web", vcpus=1, memory_mb=64)
        )
        assert (await h.answer()).result["vm"]["epoch"] == 9  # a newer owner redefines

    run(go())


def test_journal_follows_the_command(tmp_path: Path) -> None:
    async def go() -> None:
        h = Harness(tmp_path)
        await h.define()
        h.host.faults.set("start", FaultMode.CRASH_AGENT)  # the test crash only records
        h.executor.submit(cmd("c1", CommandType.START))
        assert h.state("c1") == S.RECEIVED  # durable before anything else happens
        answer = await h.answer()
        [at_crash] = h.crashes
        assert at_crash is not None and at_crash.state == S.PROCESSING
        assert answer.ok and h.state("c1") == S.COMPLETED
        entry = h.journal.get("c1")
        assert entry is not None and entry.result == answer.result and entry.ok is True
        assert h.changes == 1

    run(go())


def test_drop_answer_fault_journals_but_does_not_answer(tmp_path: Path) -> None:
    async def go() -> None:
        h = Harness(tmp_path)
        await h.define()
        h.host.faults.set("start", FaultMode.DROP_ANSWER)
        h.executor.submit(cmd("c1", CommandType.START))
        h.executor.submit(cmd("c2", CommandType.STOP))  # behind c1 on the VM lock
        assert (await h.answer()).command_id == "c2"
        entry = h.journal.get("c1")
        assert entry is not None and entry.state == S.COMPLETED
        assert entry.result["vm"]["power"] == "running"
        assert h.changes == 2  # a heartbeat (carrying the entry) is due after each
        assert "c1" in {e.command_id for e in h.journal.unacked()}
        h.executor.submit(cmd("c1", CommandType.START))  # redelivery: answered this time
        assert (await h.answer()).command_id == "c1"

    run(go())


def test_hang_fault_ends_at_the_command_deadline(tmp_path: Path) -> None:
    async def go() -> None:
        h = Harness(tmp_path)
        await h.define()
        h.host.faults.set("start", FaultMode.HANG)
        h.executor.submit(cmd("c1", CommandType.START, timeout=0.2))
        h.executor.submit(cmd("c2", CommandType.STOP, timeout=0.1))  # its deadline passes
        answers = {a.command_id: a for a in [await h.answer(), await h.answer()]}
        for cid in ("c1", "c2"):
            error = answers[cid].error
            assert error is not None and error.code == "timed-out", answers[cid]
        e1, e2 = h.journal.get("c1"), h.journal.get("c2")
        assert e1 is not None and "while PROCESSING" in e1.note and e1.state == S.FAILED
        assert e2 is not None and "nothing was done" in e2.note and e2.state == S.FAILED
        assert h.executed("c1") == h.executed("c2") == 0

    run(go())


def test_cancel(tmp_path: Path) -> None:
    async def go() -> None:
        h = Harness(tmp_path)
        await h.define()
        h.host.faults.set("start", FaultMode.HANG)
        h.executor.submit(cmd("c1", CommandType.START))
        h.executor.submit(cmd("c2", CommandType.STOP))  # will wait for c1's VM lock
        h.executor.submit(cmd("c3", CommandType.STOP))
        assert not h.executor.cancel("unknown")
        assert h.executor.cancel("c3")  # before its task even began
        a3 = await h.answer()
        assert a3.command_id == "c3" and a3.error is not None and a3.error.code == "cancelled"
        await h.reached("c1", S.PROCESSING)  # the hang fault fires right after this
        assert h.state("c2") == S.RECEIVED
        assert h.executor.cancel("c2")  # waiting on the VM lock
        a2 = await h.answer()
        assert a2.command_id == "c2" and a2.error is not None and a2.error.code == "cancelled"
        for cid in ("c2", "c3"):
            entry = h.journal.get(cid)
            assert entry is not None and entry.state == S.FAILED
            assert "nothing was done" in entry.note
        assert h.executor.cancel("c1")  # in the driver
        a1 = await h.answer()
        assert a1.error is not None and a1.error.code == "cancelled"
        e1 = h.journal.get("c1")
        assert e1 is not None and e1.state == S.FAILED and "may have taken effect" in e1.note
        assert not h.executor.cancel("c1")  # finished
        assert h.executor.inflight == 0
        h.executor.submit(cmd("c1", CommandType.START))  # answered from the journal
        assert await h.answer() == a1
        assert (await h.driver.list_vms())[0].power == PowerState.STOPPED
        assert [op.command_id for op in h.host.executed()] == [None]  # the setup define

    run(go())


def test_query_of_an_unknown_command_leaves_a_tombstone(tmp_path: Path) -> None:
    async def go() -> None:
        h = Harness(tmp_path)
        await h.define(power=PowerState.RUNNING)
        h.executor.query(Query(query_id="q1", command_id="lost", vm_uuid=VM))
        tomb = h.journal.get("lost")  # written before the query returns
        assert tomb is not None and tomb.state == S.FAILED and tomb.command is None
        assert tomb.error is not None and tomb.error.code == "never-received"
        result = await h.next()
        assert isinstance(result, QueryResult)
        assert (result.query_id, result.command_id, result.entry) == ("q1", "lost", None)
        assert result.vm is not None and result.vm.power == PowerState.RUNNING
        h.executor.submit(cmd("lost", CommandType.STOP))  # arrives late: refused
        late = await h.answer()
        assert late.error is not None and late.error.code == "never-received"
        assert h.executed("lost") == 0
        assert (await h.driver.list_vms())[0].power == PowerState.RUNNING
        # A known command: its entry; a VM the host does not have: vm None.
        h.executor.query(Query(query_id="q2", command_id="lost"))
        again = await h.next()
        assert isinstance(again, QueryResult) and again.entry == h.journal.get("lost")
        h.executor.query(Query(query_id="q3", command_id="x", vm_uuid="nope"))
        absent = await h.next()
        assert isinstance(absent, QueryResult) and absent.vm is None and absent.entry is None

    run(go())


def _job_starter(h: Harness, duration: float, started: asyncio.Event, supervised: bool = True):  # type: ignore[no-untyped-def]
    async def start(command: Command) -> JobInfo:
        info = await h.driver.start_job(
            command.id, "test-job", duration, vm_uuid=command.vm_uuid, supervised=supervised
        )
        started.set()
        return info

    return start


def test_backend_job_completes_or_is_aborted_by_the_cancel_hook(tmp_path: Path) -> None:
    async def go() -> None:
        h = Harness(tmp_path)
        await h.define()
        started = asyncio.Event()
        h.executor.backend_commands[CommandType.RESTART] = _job_starter(h, 10.0, started)
        h.executor.submit(cmd("j1", CommandType.RESTART))
        async with asyncio.timeout(5):
            await started.wait()
        assert h.state("j1") == S.PROCESSING_IN_BACKEND
        h.now[0] += 10  # the job's time is up
        done = await h.answer()
        assert done.ok and done.result["job"] == {"kind": "test-job", "progress": 1.0}
        assert h.state("j1") == S.COMPLETED

        started.clear()
        h.executor.submit(cmd("j2", CommandType.RESTART))
        async with asyncio.timeout(5):
            await started.wait()
        assert await h.executor.run_cancel_hook("lost the server connection") == ["j2"]
        aborted = await h.answer()
        assert aborted.error is not None and aborted.error.code == "aborted"
        entry = h.journal.get("j2")
        assert entry is not None and entry.state == S.FAILED
        assert entry.note == "aborted by cancel hook: lost the server connection"

        started.clear()
        h.executor.submit(cmd("j3", CommandType.RESTART))
        async with asyncio.timeout(5):
            await started.wait()
        assert h.executor.cancel("j3")
        cancelled = await h.answer()
        assert cancelled.error is not None and cancelled.error.code == "cancelled"
        job = h.host.jobs.get("j3")
        assert job is not None and job.aborted_at is not None  # aborted through the driver

    run(go())


def test_cancel_hook_after_a_restart_settles_dangling_entries(tmp_path: Path) -> None:
    async def go() -> None:
        journal = CommandJournal.open(tmp_path / "journal")
        h = Harness(tmp_path, journal)
        for cid in ("supervised", "alone", "never-started"):
            journal.record_received(cmd(cid, CommandType.RESTART))
            journal.advance(cid, S.STARTED)
            journal.advance(cid, S.PROCESSING_IN_BACKEND)
        await h.driver.start_job("supervised", "migrate", 60.0)
        await h.driver.start_job("alone", "copy", 5.0, supervised=False, result={"copied": 1})
        # The agent dies here; its jobs go on in the hypervisor.
        h.now[0] += 10
        again = Harness(tmp_path, CommandJournal.open(tmp_path / "journal"))
        again.now[0] = h.now[0]
        assert {e.command_id: e.state for e in again.journal.entries()} == dict.fromkeys(
            ("supervised", "alone", "never-started"), S.DANGLED_IN_BACKEND
        )
        assert await again.executor.run_cancel_hook("agent restarted") == ["supervised"]
        sup, alone, lost = (again.journal.get(c) for c in ("supervised", "alone", "never-started"))
        assert sup is not None and sup.state == S.FAILED
        assert sup.note == "aborted by cancel hook: agent restarted"
        assert alone is not None and alone.state == S.COMPLETED and alone.result["copied"] == 1
        assert lost is not None and lost.state == S.FAILED
        assert lost.error is not None and lost.error.code == "job-lost"
        assert again.changes == 1  # a heartbeat is due

    run(go())
