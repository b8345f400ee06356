"""The migrate command through the executor, the journal and the sim driver, on an injected
clock: answers, progress, faults at each phase, cancel and deadline, cancel hooks and
restarts, Inspect, and undefine --force."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bollard.agent.drivers.sim import SimDriver
from bollard.agent.executor import Executor
from bollard.agent.journal import CommandJournal
from bollard.domain.commands import AgentCommandState
from bollard.domain.protocol import Answer, Command, Inspect, InspectResult, Progress
from bollard.domain.states import CommandType, PowerState
from bollard.sim import Fabric, FaultMode, SimVm
from bollard.sim.models import MigrationPhase

T = TypeVar("T")
S = AgentCommandState
VM = "11111111-1111-4111-8111-111111111111"
T0 = 1000.0


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(15):
            return await coro

    return asyncio.run(bounded())


def migrate(cid: str = "m1", live: bool = True, epoch: int = 3, **over: Any) -> Command:
    args = {"target": "b", "live": live, "new_epoch": epoch + 1, **over}
    return Command(
        id=cid, command=CommandType.MIGRATE, vm_uuid=VM, args=args, epoch=epoch, timeout=10
    )


class Cluster:
    """Hosts a and b in one fabric; the agent of ``a`` runs an executor on a fake wall clock.
    A 1024 MiB VM at 512 MiB/s migrates in 2 s: switchover at +1.8 s, cleanup at +2 s."""

    def __init__(self, tmp_path: Path, journal: CommandJournal | None = None) -> None:
        self.now = [T0]
        self.fabric = Fabric(tmp_path / "fabric")
        self.a = self.fabric.host("a")
        self.b = self.fabric.host("b")
        self.a.ensure_host(8, 8192)
        self.b.ensure_host(8, 8192)
        self.driver = self.make_driver("a")
        self.sent: asyncio.Queue[Answer | InspectResult] = asyncio.Queue()
        self.progress: list[Progress] = []
        self.new_progress = asyncio.Event()
        self.journal = journal if journal is not None else CommandJournal.in_memory()
        self.executor = Executor(self.driver, self._send, journal=self.journal, job_poll=0.002)

    def make_driver(self, node: str) -> SimDriver:
        return SimDriver(
            self.fabric.root, node, latency=0.0, migration_rate=512.0, wall=lambda: self.now[0]
        )

    def put(self, power: PowerState = PowerState.RUNNING, memory_mb: int = 1024) -> None:
        vm = SimVm(uuid=VM, name="web", vcpus=2, memory_mb=memory_mb, power=power, epoch=3)
        self.a.put_vm(vm)

    async def _send(self, msg: Any) -> None:
        if isinstance(msg, Progress):
            self.progress.append(msg)
            self.new_progress.set()
        else:
            await self.sent.put(msg)

    async def answer(self) -> Answer:
        async with asyncio.timeout(5):
            msg = await self.sent.get()
        assert isinstance(msg, Answer), msg
        return msg

    async def progressed(self, fraction: float, cid: str = "m1") -> Progress:
        """Wait for a progress message of ``cid`` at ``fraction`` or more."""
        async with asyncio.timeout(5):
            while True:
                done = [p for p in self.progress if p.command_id == cid and p.fraction >= fraction]
                if done:
                    return done[0]
                self.new_progress.clear()
                await self.new_progress.wait()

    def where(self) -> dict[str, tuple[str, int] | None]:
        out: dict[str, tuple[str, int] | None] = {}
        for node, vms in self.fabric.snapshot(settle=False).items():
            vm = next((v for v in vms if v.uuid == VM), None)
            out[node] = None if vm is None else (vm.power.value, vm.epoch)
        return out

    def state(self, cid: str) -> AgentCommandState | None:
        entry = self.journal.get(cid)
        return None if entry is None else entry.state

    async def inspect(self, executor: Executor, qid: str = "q") -> InspectResult:
        executor.inspect(Inspect(query_id=qid, vm_uuid=VM))
        async with asyncio.timeout(5):
            msg = await self.sent.get()
        assert isinstance(msg, InspectResult), msg
        return msg


def test_live_migration_answers_with_the_vm_on_the_target(tmp_path: Path) -> None:
    async def go() -> None:
        c = Cluster(tmp_path)
        c.put()
        c.executor.submit(migrate())
        first = await c.progressed(0.0)
        assert first.command_id == "m1" and first.message.startswith("migrate transfer")
        assert c.state("m1") == S.PROCESSING_IN_BACKEND
        assert c.where() == {"a": ("running", 3), "b": ("paused", 3)}
        c.now[0] += 1.0
        half = await c.progressed(0.5)
        assert "transfer: 50%" in half.message
        c.now[0] += 1.0
        answer = await c.answer()
        assert answer.ok, answer
        vm = answer.result["vm"]
        assert (vm["uuid"], vm["power"], vm["epoch"]) == (VM, "running", 4)
        assert c.where() == {"a": None, "b": ("running", 4)}
        entry = c.journal.get("m1")
        assert entry is not None and entry.state == S.COMPLETED and entry.result == answer.result
        assert [op.command_id for op in c.a.executed()] == ["m1"]
        # Redelivered: answered from the journal, not run again.
        c.executor.submit(migrate())
        assert await c.answer() == answer
        assert [op.command_id for op in c.a.executed()] == ["m1"]

    run(go())


@pytest.mark.parametrize("memory_mb", [256, 1024, 4096])
def test_duration_scales_with_memory(tmp_path: Path, memory_mb: int) -> None:
    async def go() -> None:
        c = Cluster(tmp_path)
        c.put(memory_mb=memory_mb)
        duration = memory_mb / 512.0
        c.executor.submit(migrate())
        await c.progressed(0.0)
        c.now[0] += duration * 0.9 - 0.001  # just before the switchover
        await c.progressed(0.89)
        assert c.where()["a"] == ("running", 3)
        c.now[0] += 0.002
        await c.progressed(0.9)
        assert c.where() == {"a": ("stopped", 3), "b": ("running", 4)}
        c.now[0] += duration * 0.1
        assert (await c.answer()).ok
        job = c.a.jobs.get("m1")
        assert job is not None and job.duration == duration

    run(go())


def test_minimum_duration_is_the_latency(tmp_path: Path) -> None:
    driver = SimDriver(tmp_path, "a", latency=0.25, migration_rate=2048.0)
    assert driver.migration_duration(64) == 0.25
    assert driver.migration_duration(4096) == 2.0


@pytest.mark.parametrize(
    ("phase", "code", "vm_on", "where"),
    [
        (MigrationPhase.PREPARE, "migration-failed", "a", {"a": ("running", 3), "b": None}),
        (MigrationPhase.TRANSFER, "migration-failed", "a", {"a": ("running", 3), "b": None}),
        (MigrationPhase.SWITCHOVER, "migration-failed", "a", {"a": ("running", 3), "b": None}),
        (
            MigrationPhase.CLEANUP,
            "migration-cleanup-failed",
            "b",
            {"a": ("stopped", 3), "b": ("running", 4)},
        ),
    ],
)
def test_fault_at_each_phase(
    tmp_path: Path, phase: MigrationPhase, code: str, vm_on: str, where: dict[str, Any]
) -> None:
    async def go() -> None:
        c = Cluster(tmp_path)
        c.put()
        c.a.faults.set("migrate", FaultMode.FAIL, phase=phase)
        c.executor.submit(migrate())
        if phase != MigrationPhase.PREPARE:  # failed at once, else started: let time pass
            await c.progressed(0.0)
            c.now[0] += 5
        answer = await c.answer()
        assert answer.error is not None and answer.error.code == code, answer
        assert phase.value in answer.error.message
        assert answer.result["migration"] == {
            "phase": phase.value,
            "source": "a",
            "target": "b",
            "vm_on": vm_on,
        }
        assert c.where() == where
        assert c.state("m1") == S.FAILED

    run(go())


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ("absent", "not-found"),
        ("target-off", "temporary"),
        ("stopped", "invalid-state"),
        ("target-newer", "invalid-state"),
        ("bad-args", "invalid-input"),
        ("stale", "stale-epoch"),
    ],
)
def test_refusals(tmp_path: Path, change: str, code: str) -> None:
    async def go() -> None:
        c = Cluster(tmp_path)
        c.put(PowerState.STOPPED if change == "stopped" else PowerState.RUNNING)
        command = migrate()
        if change == "absent":
            c.a.delete_vm(VM)
        elif change == "target-off":
            c.b.power_off()
        elif change == "target-newer":
            c.b.put_vm(SimVm(uuid=VM, name="web", vcpus=2, memory_mb=1024, epoch=7))
        elif change == "bad-args":
            command = migrate(target="")
        elif change == "stale":
            command = migrate(epoch=2)
        before = c.fabric.snapshot(settle=False)
        c.executor.submit(command)
        answer = await c.answer()
        assert answer.error is not None and answer.error.code == code, answer
        assert c.fabric.snapshot(settle=False) == before
        assert c.a.jobs.all() == []

    run(go())


def test_cancel_before_the_switchover_aborts(tmp_path: Path) -> None:
    async def go() -> None:
        c = Cluster(tmp_path)
        c.put()
        c.executor.submit(migrate())
        await c.progressed(0.0)
        c.now[0] += 1.0
        assert c.executor.cancel("m1")
        answer = await c.answer()
        assert answer.error is not None and answer.error.code == "cancelled", answer
        assert answer.result["migration"]["vm_on"] == "a"
        assert c.where() == {"a": ("running", 3), "b": None}
        entry = c.journal.get("m1")
        assert entry is not None and entry.state == S.FAILED
        assert "aborted; nothing was done" in entry.note
        c.now[0] += 10  # nothing happens later either
        assert c.where() == {"a": ("running", 3), "b": None}

    run(go())


def test_cancel_after_the_switchover_completes(tmp_path: Path) -> None:
    async def go() -> None:
        c = Cluster(tmp_path)
        c.put()
        c.executor.submit(migrate())
        await c.progressed(0.0)
        c.now[0] += 1.9  # past the switchover (1.8 s), before the cleanup (2 s)
        await c.progressed(0.94)
        assert c.where() == {"a": ("stopped", 3), "b": ("running", 4)}
        assert c.executor.cancel("m1")
        answer = await c.answer()
        assert answer.ok and answer.result["vm"]["epoch"] == 4, answer
        assert c.where() == {"a": None, "b": ("running", 4)}  # cleanup done at once
        entry = c.journal.get("m1")
        assert entry is not None and entry.state == S.COMPLETED and "too late" in entry.note

    run(go())


def test_deadline_of_a_hung_migration_aborts_it(tmp_path: Path) -> None:
    async def go() -> None:
        c = Cluster(tmp_path)
        c.put()
        c.a.faults.set("migrate", FaultMode.HANG)
        c.executor.submit(migrate().model_copy(update={"timeout": 0.2}))
        answer = await c.answer()
        assert answer.error is not None and answer.error.code == "timed-out", answer
        assert c.where() == {"a": ("running", 3), "b": None}

    run(go())


def test_drop_answer_migrates_and_journals_without_answering(tmp_path: Path) -> None:
    async def go() -> None:
        c = Cluster(tmp_path)
        c.put()
        c.a.faults.set("migrate", FaultMode.DROP_ANSWER)
        c.executor.submit(migrate())
        await c.progressed(0.0)
        c.now[0] += 2
        c.executor.submit(migrate("after", epoch=0, target="a"))  # queued behind m1
        refused = await c.answer()  # the next answer is not m1's
        assert refused.command_id == "after"
        entry = c.journal.get("m1")
        assert entry is not None and entry.state == S.COMPLETED
        assert c.where() == {"a": None, "b": ("running", 4)}

    run(go())


def test_cancel_hook_aborts_before_and_finishes_after_the_switchover(tmp_path: Path) -> None:
    async def go() -> None:
        c = Cluster(tmp_path)
        c.put()
        c.executor.submit(migrate())
        await c.progressed(0.0)
        assert await c.executor.run_cancel_hook("lost the server connection") == ["m1"]
        answer = await c.answer()
        assert answer.error is not None and answer.error.code == "aborted"
        entry = c.journal.get("m1")
        assert entry is not None and entry.state == S.FAILED
        assert entry.note == "aborted by cancel hook: lost the server connection"
        assert c.where() == {"a": ("running", 3), "b": None}

        c.executor.submit(migrate("m2"))
        await c.progressed(0.0, "m2")
        c.now[0] += 1.85
        await c.progressed(0.92, "m2")
        assert await c.executor.run_cancel_hook("lost the server connection") == []
        assert (await c.answer()).ok
        assert c.where() == {"a": None, "b": ("running", 4)}

    run(go())


@pytest.mark.parametrize(("elapsed", "moved"), [(1.0, False), (1.9, True), (60.0, True)])
def test_restart_settles_a_dangling_migration(tmp_path: Path, elapsed: float, moved: bool) -> None:
    async def go() -> None:
        c = Cluster(tmp_path, CommandJournal.open(tmp_path / "journal"))
        c.put()
        c.executor.submit(migrate())
        await c.progressed(0.0)
        # The agent dies here (nothing of it runs any more); the job goes on by time.
        c.now[0] += elapsed
        again = Cluster(tmp_path, CommandJournal.open(tmp_path / "journal"))
        again.now[0] = c.now[0]
        assert again.state("m1") == S.DANGLED_IN_BACKEND
        aborted = await again.executor.run_cancel_hook("agent restarted")
        entry = again.journal.get("m1")
        assert entry is not None
        if moved:
            assert aborted == [] and entry.state == S.COMPLETED
            assert entry.result["vm"]["epoch"] == 4
            assert again.where() == {"a": None, "b": ("running", 4)}
        else:
            assert aborted == ["m1"] and entry.state == S.FAILED
            assert entry.error is not None and entry.error.code == "aborted"
            assert entry.note == "aborted by cancel hook: agent restarted"
            assert again.where() == {"a": ("running", 3), "b": None}
        await c.executor.aclose(timeout=1)

    run(go())


def test_inspect_reports_the_vm_and_running_jobs_and_writes_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        c = Cluster(tmp_path)
        c.put()
        target = Executor(c.make_driver("b"), c._send, job_poll=0.002)
        seen = await c.inspect(c.executor, "q0")
        assert (seen.query_id, seen.vm_uuid, seen.job_running) == ("q0", VM, False)
        assert seen.vm is not None and (seen.vm.power, seen.vm.epoch) == (PowerState.RUNNING, 3)
        absent = await c.inspect(target, "q1")
        assert absent.vm is None and absent.job_running is False
        c.executor.submit(migrate())
        await c.progressed(0.0)
        entries = len(c.journal)
        on_a, on_b = await c.inspect(c.executor), await c.inspect(target)
        assert on_a.job_running and on_b.job_running
        assert on_a.vm is not None and on_a.vm.power == PowerState.RUNNING
        assert on_b.vm is not None and (on_b.vm.power, on_b.vm.epoch) == (PowerState.PAUSED, 3)
        c.now[0] += 2
        assert (await c.answer()).ok
        on_a, on_b = await c.inspect(c.executor), await c.inspect(target)
        assert (on_a.vm, on_a.job_running, on_b.job_running) == (None, False, False)
        assert on_b.vm is not None and (on_b.vm.power, on_b.vm.epoch) == (PowerState.RUNNING, 4)
        assert len(c.journal) == entries and len(target.journal) == 0
        unknown = Executor(c.make_driver("b"), c._send)
        unknown.inspect(Inspect(query_id="q9", vm_uuid="nope"))
        assert (await c.sent.get()) == InspectResult(query_id="q9", vm_uuid="nope")

    run(go())


def test_inspect_counts_a_migrate_waiting_for_the_vm_lock(tmp_path: Path) -> None:
    async def go() -> None:
        c = Cluster(tmp_path)
        c.put()
        c.a.faults.set("start", FaultMode.HANG)
        start = Command(id="s1", command=CommandType.START, vm_uuid=VM, epoch=3, timeout=10)
        c.executor.submit(start)
        c.executor.submit(migrate())  # waits for the VM lock: no job yet, but it will run
        assert (await c.inspect(c.executor)).job_running
        c.executor.cancel("m1")
        await c.answer()
        assert not (await c.inspect(c.executor)).job_running
        c.executor.cancel("s1")
        await c.answer()

    run(go())


def test_undefine_force_removes_a_running_copy(tmp_path: Path) -> None:
    async def go() -> None:
        c = Cluster(tmp_path)
        c.put()

        def undefine(cid: str, **args: Any) -> Command:
            return Command(
                id=cid, command=CommandType.UNDEFINE, vm_uuid=VM, args=args, epoch=3, timeout=5
            )

        c.executor.submit(undefine("u1"))
        refused = await c.answer()
        assert refused.error is not None and refused.error.code == "invalid-state"
        assert c.where()["a"] == ("running", 3)
        c.executor.submit(undefine("u2", force=True))
        assert (await c.answer()).ok
        assert c.where()["a"] is None
        assert [(op.command_id, op.command) for op in c.a.executed()] == [("u2", "undefine")]

    run(go())


def test_the_target_sees_the_migration_end_without_the_source_agent(tmp_path: Path) -> None:
    async def go() -> None:
        c = Cluster(tmp_path)
        c.put()
        await c.driver.migrate("m1", VM, "b", live=True, new_epoch=4)
        target = c.make_driver("b")  # the source's agent is gone: nobody polls the job
        [incoming] = await target.list_vms()
        assert (incoming.power, incoming.epoch) == (PowerState.PAUSED, 3)
        c.now[0] += 2
        [vm] = await target.list_vms()  # the target's heartbeat settles the fabric
        assert (vm.power, vm.epoch) == (PowerState.RUNNING, 4)
        assert c.a.get_vm(VM) is None

    run(go())


class GatedJobs:
    """A JobDriver whose job starts only when the test opens a gate (no threads: the order
    of events is asyncio's), recording whether an abort found the job."""

    name = "gated"

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.job_info: Any = None
        self.aborts: list[bool] = []

    async def start(self, command: Command) -> Any:
        from bollard.agent.drivers.base import JobInfo, JobStatus

        self.entered.set()
        await self.gate.wait()
        self.job_info = JobInfo(
            command_id=command.id, kind="k", status=JobStatus.RUNNING, progress=0
        )
        return self.job_info

    async def job(self, command_id: str) -> Any:
        return self.job_info

    async def abort_job(self, command_id: str, reason: str) -> Any:
        from bollard.agent.drivers.base import JobStatus

        self.aborts.append(self.job_info is not None)
        if self.job_info is not None:
            self.job_info = self.job_info.model_copy(update={"status": JobStatus.ABORTED})
        return self.job_info

    async def abort_jobs(self, reason: str = "") -> list[str]:
        return []

    async def vm_busy(self, uuid: str) -> bool:
        return False


def test_a_cancel_during_the_start_aborts_the_job_the_start_makes() -> None:
    from bollard.agent.backend import run_job

    async def go() -> None:
        driver = GatedJobs()
        runner = asyncio.create_task(
            run_job(driver, migrate(), driver.start, 0.001)  # type: ignore[arg-type]
        )
        await driver.entered.wait()
        runner.cancel()  # the cancel is delivered first, then the start goes on
        driver.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await runner
        assert driver.aborts == [True]  # the abort waited for the job, and stopped it
        assert driver.job_info.status == "aborted"

    run(go())


def test_crash_agent_fault_dies_before_the_job_starts(tmp_path: Path) -> None:
    def die() -> None:  # stands in for os._exit: nothing of the command runs after it
        raise asyncio.CancelledError

    async def go() -> None:
        c = Cluster(tmp_path, CommandJournal.open(tmp_path / "journal"))
        c.executor._crash = die
        c.put()
        c.a.faults.set("migrate", FaultMode.CRASH_AGENT)
        c.executor.submit(migrate())
        task = c.executor._inflight["m1"]
        done, _ = await asyncio.wait({task}, timeout=5)  # the crashed command's task ends
        assert done == {task} and task.cancelled()
        assert c.state("m1") == S.PROCESSING_IN_BACKEND
        again = Cluster(tmp_path, CommandJournal.open(tmp_path / "journal"))
        assert await again.executor.run_cancel_hook("agent restarted") == []
        entry = again.journal.get("m1")
        assert entry is not None and entry.error is not None
        assert (entry.state, entry.error.code) == (S.FAILED, "job-lost")
        assert again.where() == {"a": ("running", 3), "b": None}
        assert c.a.executed() == []

    run(go())
