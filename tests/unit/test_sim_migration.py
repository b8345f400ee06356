"""Sim migrations in the fabric (bollard.sim.migration), on an explicit clock: phases,
refusals, faults at each phase, aborts, and redoing a switchover a crash cut short."""

from __future__ import annotations

from pathlib import Path

import pytest

from bollard.domain.states import PowerState
from bollard.sim import Fabric, FaultMode, JobState, SimVm
from bollard.sim.migration import MigrationRefused, MigrationRequest, Migrations
from bollard.sim.models import MigrationPhase, MigrationStage

VM = "11111111-1111-4111-8111-111111111111"
T0 = 1000.0


class World:
    def __init__(self, tmp_path: Path, power: PowerState = PowerState.RUNNING) -> None:
        self.fabric = Fabric(tmp_path)
        self.a = self.fabric.host("a")
        self.b = self.fabric.host("b")
        self.a.ensure_host(8, 8192)
        self.b.ensure_host(8, 8192)
        self.a.put_vm(SimVm(uuid=VM, name="web", vcpus=2, memory_mb=1024, power=power, epoch=3))
        self.migrations = Migrations(self.fabric)

    def start(self, cid: str = "m1", live: bool = True, new_epoch: int = 4, **kw: object) -> None:
        fields: dict[str, object] = {
            "command_id": cid,
            "uuid": VM,
            "source": "a",
            "target": "b",
            "live": live,
            "new_epoch": new_epoch,
            "duration": 10.0,
            **kw,
        }
        self.migrations.start(MigrationRequest(**fields), T0)  # type: ignore[arg-type]

    def at(self, t: float) -> dict[str, tuple[str, int, str | None, str | None] | None]:
        """Settle at T0 + t; then where the VM is: node -> (power, epoch, incoming, outgoing)."""
        self.migrations.settle(T0 + t)
        snap = self.fabric.snapshot(settle=False)
        out: dict[str, tuple[str, int, str | None, str | None] | None] = {}
        for node, vms in snap.items():
            vm = next((v for v in vms if v.uuid == VM), None)
            out[node] = None if vm is None else (vm.power.value, vm.epoch, vm.incoming, vm.outgoing)
        return out

    def job_state(self, t: float) -> JobState:
        job = self.a.jobs.get("m1")
        assert job is not None
        return job.state(T0 + t)


def test_live_migration_phases(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.start()
    # prepare: a paused incoming copy on the target, with the old epoch (owned by nobody yet)
    assert w.at(0) == {"a": ("running", 3, None, None), "b": ("paused", 3, "m1", None)}
    assert w.at(8.99) == {"a": ("running", 3, None, None), "b": ("paused", 3, "m1", None)}
    assert w.job_state(8.99) == JobState.RUNNING
    # switchover at 0.9 of the duration: running on the target with the new epoch
    assert w.at(9.0) == {"a": ("stopped", 3, None, "m1"), "b": ("running", 4, None, None)}
    assert w.job_state(9.0) == JobState.RUNNING  # cleanup still to come
    # cleanup: the source definition is removed, the job completes
    assert w.at(10.0) == {"a": None, "b": ("running", 4, None, None)}
    job = w.a.jobs.get("m1")
    assert job is not None and job.state(T0 + 10) == JobState.COMPLETED
    assert job.result["vm"] == {
        "uuid": VM,
        "name": "web",
        "power": "running",
        "vcpus": 2,
        "memory_mb": 1024,
        "epoch": 4,
    }
    assert w.migrations.pending() == {}
    assert [(op.command_id, op.command) for op in w.a.executed()] == [("m1", "migrate")]
    assert w.b.executed() == []


def test_offline_migration_moves_a_stopped_vm(tmp_path: Path) -> None:
    w = World(tmp_path, PowerState.STOPPED)
    w.start(live=False)
    assert w.at(1) == {"a": ("stopped", 3, None, None), "b": ("paused", 3, "m1", None)}
    assert w.at(11) == {"a": None, "b": ("stopped", 4, None, None)}
    assert w.job_state(11) == JobState.COMPLETED


def test_a_late_settle_applies_every_due_phase_at_once(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.start()
    assert w.at(3600) == {"a": None, "b": ("running", 4, None, None)}
    job = w.a.jobs.get("m1")
    assert job is not None and job.completed_at == T0 + 10  # decided by time, not by the reader


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        ("absent", "not-found", "no VM"),
        ("target-missing", "temporary", "does not exist"),
        ("target-off", "temporary", "powered off"),
        ("target-newer", "invalid-state", "newer epoch"),
        ("target-running", "invalid-state", "already runs"),
        ("stopped", "invalid-state", "only a running VM"),
        ("same-host", "invalid-input", "already on"),
        ("old-epoch", "invalid-input", "not newer"),
        ("source-off", "temporary", "powered off"),
    ],
)
def test_refusals_change_nothing(tmp_path: Path, change: str, code: str, words: str) -> None:
    w = World(tmp_path)
    kw: dict[str, object] = {}
    if change == "absent":
        w.a.delete_vm(VM)
    elif change == "target-missing":
        kw["target"] = "nowhere"
    elif change == "target-off":
        w.b.power_off()
    elif change in ("target-newer", "target-running"):
        epoch = 9 if change == "target-newer" else 2
        power = PowerState.STOPPED if change == "target-newer" else PowerState.RUNNING
        w.b.put_vm(SimVm(uuid=VM, name="web", vcpus=2, memory_mb=1024, power=power, epoch=epoch))
    elif change == "stopped":
        w.a.update_vm(VM, lambda vm: vm.model_copy(update={"power": PowerState.STOPPED}))
    elif change == "same-host":
        kw["target"] = "a"
    elif change == "old-epoch":
        kw["new_epoch"] = 3
    elif change == "source-off":
        w.a.power_off()
    before = w.fabric.snapshot(settle=False)
    with pytest.raises(MigrationRefused) as refused:
        w.start(**kw)
    assert refused.value.code == code and words in refused.value.message
    assert w.fabric.snapshot(settle=False) == before
    assert w.a.jobs.all() == [] and w.migrations.pending() == {}


def test_offline_migration_of_a_running_vm_is_refused(tmp_path: Path) -> None:
    w = World(tmp_path)
    with pytest.raises(MigrationRefused) as refused:
        w.start(live=False)
    assert refused.value.code == "invalid-state"


def test_a_leftover_copy_on_the_target_is_replaced(tmp_path: Path) -> None:
    w = World(tmp_path)
    leftover = SimVm(uuid=VM, name="old", vcpus=1, memory_mb=64, power=PowerState.STOPPED, epoch=4)
    w.b.put_vm(leftover)
    w.start()
    assert w.at(0)["b"] == ("paused", 3, "m1", None)
    assert w.at(10)["b"] == ("running", 4, None, None)
    b = w.b.get_vm(VM)
    assert b is not None and (b.name, b.memory_mb) == ("web", 1024)


@pytest.mark.parametrize(
    ("phase", "fails_at", "source", "target"),
    [
        # up to the switchover: the VM stays running on the source, the copy is removed
        (MigrationPhase.PREPARE, 0.0, ("running", 3, None, None), None),
        (MigrationPhase.TRANSFER, 4.5, ("running", 3, None, None), None),
        (MigrationPhase.SWITCHOVER, 9.0, ("running", 3, None, None), None),
        # at cleanup: running on the target, a stopped (unmarked) leftover on the source
        (MigrationPhase.CLEANUP, 10.0, ("stopped", 3, None, None), ("running", 4, None, None)),
    ],
)
def test_fail_at_each_phase(
    tmp_path: Path,
    phase: MigrationPhase,
    fails_at: float,
    source: tuple[str, int, None, None],
    target: tuple[str, int, None, None] | None,
) -> None:
    w = World(tmp_path)
    w.a.faults.set("migrate", FaultMode.FAIL, phase=phase)
    w.start()
    if fails_at > 0:
        before = w.at(fails_at - 0.01)
        assert before["b"] is not None and w.job_state(fails_at - 0.01) == JobState.RUNNING
    assert w.at(fails_at) == {"a": source, "b": target}
    job = w.a.jobs.get("m1")
    assert job is not None and job.state(T0 + fails_at) == JobState.FAILED
    assert job.migration is not None and job.migration.failed_phase == phase
    assert job.failed_at == T0 + fails_at and phase.value in job.failure
    assert w.migrations.pending() == {} and w.a.faults.all() == []
    assert w.at(100) == {"a": source, "b": target}  # nothing more happens


def test_switchover_fails_when_the_vm_stopped_or_the_target_died(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.start()
    w.a.update_vm(VM, lambda vm: vm.model_copy(update={"power": PowerState.STOPPED}))
    assert w.at(9) == {"a": ("stopped", 3, None, None), "b": None}
    job = w.a.jobs.get("m1")
    assert job is not None and "no longer running" in job.failure

    w.a.update_vm(VM, lambda vm: vm.model_copy(update={"power": PowerState.RUNNING}))
    w.start("m2")
    w.b.power_off()
    w.migrations.settle(T0 + 9)
    m2 = w.a.jobs.get("m2")
    assert m2 is not None and m2.state(T0 + 9) == JobState.FAILED and "powered off" in m2.failure
    assert w.a.get_vm(VM) is not None and w.b.get_vm(VM) is None


def test_abort_before_switchover_rolls_back_and_after_it_finishes(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.start()
    job = w.migrations.abort("a", "m1", "lost the server", T0 + 5)
    assert job is not None and job.state(T0 + 5) == JobState.ABORTED
    assert job.abort_reason == "lost the server"
    assert w.at(20) == {"a": ("running", 3, None, None), "b": None}

    w.start("m2")
    w.migrations.settle(T0 + 9.5)  # past the switchover
    done = w.migrations.abort("a", "m2", "agent restarted", T0 + 9.5)
    assert done is not None and done.state(T0 + 9.5) == JobState.COMPLETED
    assert done.completed_at == T0 + 9.5 and done.aborted_at is None
    assert w.fabric.snapshot(settle=False) == {"a": [], "b": [w.b.get_vm(VM)]}
    # The plain job API cannot abort it either.
    assert w.a.jobs.abort("m2", "x", T0 + 9.6) == done


def test_hang_and_delay_faults(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.a.faults.set("migrate", FaultMode.HANG)
    w.start()
    assert w.at(1e6)["b"] == ("paused", 3, "m1", None)
    job = w.a.jobs.get("m1")
    assert job is not None and job.progress(T0 + 1e6) == 0.5
    w.migrations.abort("a", "m1", "deadline", T0 + 1e6)
    assert w.at(1e6 + 1) == {"a": ("running", 3, None, None), "b": None}

    w.a.faults.set("migrate", FaultMode.DELAY, seconds=10)
    w.start("m2")
    assert w.at(17.9)["b"] == ("paused", 3, "m2", None)  # 20 s now: switchover at 18
    assert w.at(18)["b"] == ("running", 4, None, None)


def test_a_switchover_cut_short_by_a_crash_is_redone(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.start()
    # The settler decides the switchover (written first) and dies before its writes.
    job = w.a.jobs.get("m1")
    assert job is not None and job.migration is not None
    target_vm = job.migration.vm.model_copy(update={"power": PowerState.RUNNING, "epoch": 4})
    switching = job.migration.model_copy(
        update={"stage": MigrationStage.SWITCHING, "vm": target_vm}
    )
    w.a.jobs.put(job.model_copy(update={"migration": switching}))
    # Later the source VM was even changed; the decided switchover is redone as decided.
    assert w.at(9.5) == {"a": ("stopped", 3, None, "m1"), "b": ("running", 4, None, None)}
    assert w.at(10) == {"a": None, "b": ("running", 4, None, None)}


def test_a_second_migration_cannot_bring_in_the_same_vm(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.start()
    c = w.fabric.host("c")
    c.ensure_host(8, 8192)
    c.put_vm(SimVm(uuid=VM, name="web", vcpus=2, memory_mb=1024, power=PowerState.RUNNING))
    with pytest.raises(MigrationRefused) as refused:
        w.migrations.start(
            MigrationRequest("m2", VM, "c", "b", live=True, new_epoch=4, duration=1.0), T0
        )
    assert refused.value.code == "invalid-state" and "m1" in refused.value.message


def test_a_broken_migration_record_does_not_stop_the_others(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.start()
    (w.migrations.index_dir / "bad.json").write_text('{"source": "../elsewhere"}')
    assert w.at(10) == {"a": None, "b": ("running", 4, None, None)}
    assert set(w.migrations.pending()) == {"bad"}  # left, logged, harmless
