"""Each entity's store transition() on SQLite and PostgreSQL: for every pair of states, an
allowed move is made (and stamped), a move not in the table is refused, logged, and writes
nothing; the wrappers the server calls keep their contracts."""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import Connection, update

from bollard.domain.errors import Conflict, InvalidState
from bollard.domain.nodes import (
    HEALTH_TRANSITIONS,
    SCHEDULING_TRANSITIONS,
    health_allowed,
    scheduling_allowed,
)
from bollard.domain.states import DesiredPower, NodeHealth, SchedulingState, TaskState, VmState
from bollard.domain.tasks import STEP_TRANSITIONS, StepState, step_allowed
from bollard.domain.vms import task_state_allowed, vm_state_allowed
from bollard.store import migrate, nodes, steps, tasks, vms
from bollard.store.db import Database
from bollard.store.tables import nodes as nodes_table
from bollard.store.tables import vms as vms_table

BEFORE = datetime(2026, 11, 22, 11, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
State = TypeVar("State")


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    migrate.upgrade(database)
    with database.write() as conn:
        nodes.create(conn, "host", "hash-host", BEFORE)
    yield database
    database.dispose()


def _path(table: Mapping[State, frozenset[State]], start: State, goal: State) -> list[State]:
    """The shortest list of allowed moves from `start` to `goal` ([] when they are equal)."""
    came_from: dict[State, State | None] = {start: None}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        for nxt in table[state]:
            if nxt not in came_from:
                came_from[nxt] = state
                queue.append(nxt)
    assert goal in came_from, f"{goal} cannot be reached from {start}"
    path: list[State] = []
    at: State | None = goal
    while at is not None and at != start:
        path.append(at)
        at = came_from[at]
    return path[::-1]


# ---- nodes -------------------------------------------------------------------------------


def test_node_health_moves(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bollard.store.nodes")
    with db.write() as conn:
        for src in NodeHealth:
            for dst in NodeHealth:
                name = f"h-{src.value}-{dst.value}"
                nodes.create(conn, name, f"hash-{name}", BEFORE)
                for step in _path(HEALTH_TRANSITIONS, NodeHealth.SUSPECT, src):
                    assert nodes.set_health(conn, name, step, BEFORE)
                caplog.clear()
                moved = nodes.transition(conn, name, NOW, health=dst)
                node = nodes.get(conn, name)
                expected = health_allowed(src, dst)
                assert moved is expected, (src, dst)
                assert node.health is (dst if expected else src)
                assert node.health_since == (NOW if expected else BEFORE if src is not
                                             NodeHealth.SUSPECT else None)  # fmt: skip
                assert ("refused health" in caplog.text) is not expected


def test_node_scheduling_moves(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bollard.store.nodes")
    with db.write() as conn:
        for src in SchedulingState:
            for dst in SchedulingState:
                name = f"s-{src.value}-{dst.value}"
                nodes.create(conn, name, f"hash-{name}", BEFORE)
                if src is SchedulingState.MAINTENANCE:  # nothing enters it yet
                    conn.execute(
                        update(nodes_table)
                        .where(nodes_table.c.name == name)
                        .values(scheduling=src.value)
                    )
                for step in _path(SCHEDULING_TRANSITIONS, nodes.get(conn, name).scheduling, src):
                    assert nodes.set_scheduling(conn, name, step, BEFORE)
                caplog.clear()
                moved = nodes.set_scheduling(conn, name, dst, NOW)
                expected = scheduling_allowed(src, dst)
                assert moved is expected, (src, dst)
                assert nodes.get(conn, name).scheduling is (dst if expected else src)
                assert ("refused scheduling" in caplog.text) is not expected


def test_node_compare_and_swap_and_both_machines(db: Database) -> None:
    with db.write() as conn:
        # Not in the health expected: False, nothing written, nothing refused.
        assert not nodes.set_health(conn, "host", NodeHealth.UP, NOW, expect=NodeHealth.DEAD)
        assert nodes.get(conn, "host").health is NodeHealth.SUSPECT
        assert nodes.set_health(conn, "host", NodeHealth.UP, NOW, expect=NodeHealth.SUSPECT)
        # A missing node: False, as a compare-and-swap on no row.
        assert not nodes.set_health(conn, "nobody", NodeHealth.UP, NOW)
        assert not nodes.set_scheduling(conn, "nobody", SchedulingState.FLUSHING, NOW)
        # Both at once, each by its table: one refused move writes neither.
        assert not nodes.transition(
            conn, "host", NOW, health=NodeHealth.FENCED, scheduling=SchedulingState.FLUSHING
        )
        node = nodes.get(conn, "host")
        assert (node.health, node.scheduling) == (NodeHealth.UP, SchedulingState.READY)
        assert nodes.transition(
            conn, "host", NOW, health=NodeHealth.SUSPECT, scheduling=SchedulingState.FLUSHING
        )
        node = nodes.get(conn, "host")
        assert (node.health, node.scheduling) == (NodeHealth.SUSPECT, SchedulingState.FLUSHING)
        with pytest.raises(ValueError, match="health or a scheduling"):
            nodes.transition(conn, "host", NOW)


def test_every_up_node_becomes_suspect_at_server_start(db: Database) -> None:
    with db.write() as conn:
        for name, path in {
            "a": [NodeHealth.UP],
            "b": [NodeHealth.UP],
            "c": [NodeHealth.DEAD],
            "d": [],
        }.items():
            nodes.create(conn, name, f"hash-{name}", BEFORE)
            for health in path:
                assert nodes.set_health(conn, name, health, BEFORE)
        nodes.mark_all_disconnected(conn, NOW)
        found = {n.name: n for n in nodes.list_all(conn)}
        assert {name: found[name].health for name in "abcd"} == {
            "a": NodeHealth.SUSPECT,
            "b": NodeHealth.SUSPECT,
            "c": NodeHealth.DEAD,
            "d": NodeHealth.SUSPECT,
        }
        assert found["a"].health_since == NOW and found["c"].health_since == BEFORE
        # A move the table does not allow moves nobody.
        assert nodes.transition_all(conn, NodeHealth.DEAD, NodeHealth.FENCE_FAILED, NOW) == 0
        assert nodes.get(conn, "c").health is NodeHealth.DEAD


# ---- VMs ---------------------------------------------------------------------------------


def _vm(conn: Connection, name: str, vm_state: VmState, task_state: TaskState | None) -> str:
    """A VM in (vm_state, task_state), held by task 'hold-<name>' when task_state is set
    (written directly: some of these pairs no operation makes)."""
    uuid = f"uuid-{name}"
    vms.create(
        conn, uuid=uuid, name=name, node="host", vcpus=1, memory_mb=256,
        desired_power=DesiredPower.STOPPED, task_id=f"create-{name}", now=BEFORE,
    )  # fmt: skip
    conn.execute(
        update(vms_table)
        .where(vms_table.c.uuid == uuid)
        .values(
            vm_state=vm_state.value,
            task_state=None if task_state is None else task_state.value,
            task_id=None if task_state is None else f"hold-{name}",
        )
    )
    return uuid


def test_vm_state_moves_of_a_free_vm(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bollard.store.vms")
    with db.write() as conn:
        for src in VmState:
            for dst in VmState:
                if src is dst:
                    continue
                name = f"v-{src.value}-{dst.value}"
                uuid = _vm(conn, name, src, None)
                caplog.clear()
                moved = vms.transition(conn, uuid, NOW, held_by=None, task_state=None,
                                       vm_state=dst)  # fmt: skip
                expected = vm_state_allowed(src, dst)
                assert moved is expected, (src, dst)
                vm = vms.get(conn, name)
                assert vm.vm_state is (dst if expected else src)
                assert vm.updated_at == (NOW if expected else BEFORE)
                assert ("refused transition" in caplog.text) is not expected


def test_task_state_moves(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bollard.store.vms")
    states: list[TaskState | None] = [None, *TaskState]
    with db.write() as conn:
        for i, (src, dst) in enumerate(itertools.product(states, states)):
            if src is None and dst is None:
                continue  # no move
            name = f"t{i}"
            uuid = _vm(conn, name, VmState.ACTIVE, src)
            holder = None if src is None else f"hold-{name}"
            taker = f"new-{name}" if src is None else None
            caplog.clear()
            moved = vms.transition(conn, uuid, NOW, held_by=holder, task_state=dst, task_id=taker)
            expected = task_state_allowed(src, dst)
            assert moved is expected, (src, dst)
            vm = vms.get(conn, name)
            if expected:
                assert vm.task_state is dst
                assert vm.task_id == (None if dst is None else taker or holder)
            else:
                assert (vm.task_state, vm.task_id) == (src, holder)
            assert vm.vm_state is VmState.ACTIVE
            assert ("refused transition" in caplog.text) is not expected


def test_vm_state_does_not_change_while_a_task_keeps_the_vm(db: Database) -> None:
    with db.write() as conn:
        uuid = _vm(conn, "held", VmState.STOPPED, TaskState.POWERING_ON)
        assert not vms.transition(
            conn, uuid, NOW, held_by="hold-held", task_state=TaskState.POWERING_ON,
            vm_state=VmState.ACTIVE,
        )  # fmt: skip
        assert vms.get(conn, "held").vm_state is VmState.STOPPED
        # As the task ends, it may.
        assert vms.end_task(conn, uuid, "hold-held", NOW, vm_state=VmState.ACTIVE)
        vm = vms.get(conn, "held")
        assert (vm.vm_state, vm.task_state, vm.task_id) == (VmState.ACTIVE, None, None)


def test_the_vm_wrappers_keep_their_contracts(db: Database) -> None:
    with db.write() as conn:
        created = vms.create(
            conn, uuid="u1", name="vm1", node="host", vcpus=1, memory_mb=256,
            desired_power=DesiredPower.RUNNING, task_id="create", now=BEFORE,
        )  # fmt: skip
        assert (created.vm_state, created.task_state) == (VmState.BUILDING, TaskState.SCHEDULING)
        vms.set_task_state(conn, "u1", "create", TaskState.SPAWNING, NOW)
        vms.set_task_state(conn, "u1", "create", TaskState.SPAWNING, NOW)  # re-entry
        vms.set_task_state(conn, "u1", "other", TaskState.POWERING_ON, NOW)  # not its task
        assert vms.get(conn, "vm1").task_state is TaskState.SPAWNING
        vms.set_task_state(conn, "u1", "create", TaskState.MIGRATING, NOW)  # refused
        assert vms.get(conn, "vm1").task_state is TaskState.SPAWNING
        assert not vms.end_task(conn, "u1", "other", NOW, vm_state=VmState.ACTIVE)
        assert vms.end_task(conn, "u1", "create", NOW, vm_state=VmState.ACTIVE, fault=None)
        vm = vms.get(conn, "vm1")
        # begin_task: a stale read is a conflict; a fresh one takes the VM.
        stale = vms.get(conn, "vm1")
        vms.set_vm_state(conn, "u1", VmState.STOPPED, NOW)
        with pytest.raises(Conflict, match="changed under this request"):
            vms.begin_task(conn, stale, TaskState.POWERING_OFF, "t2", NOW,
                           allowed=frozenset({VmState.ACTIVE}))  # fmt: skip
        vm = vms.get(conn, "vm1")
        vms.begin_task(
            conn, vm, TaskState.POWERING_ON, "t2", NOW, allowed=frozenset({VmState.STOPPED}),
            desired_power=DesiredPower.RUNNING,
        )  # fmt: skip
        vm = vms.get(conn, "vm1")
        assert (vm.task_state, vm.task_id) == (TaskState.POWERING_ON, "t2")
        with pytest.raises(Conflict, match="busy with task t2"):
            vms.begin_task(conn, vm, TaskState.DELETING, "t3", NOW,
                           allowed=frozenset(VmState))  # fmt: skip
        # set_vm_state and follow_host touch only a VM no task holds.
        vms.set_vm_state(conn, "u1", VmState.ACTIVE, NOW)
        assert not vms.follow_host(conn, vm, NOW, vm_state=VmState.ACTIVE.value)
        assert vms.get(conn, "vm1").vm_state is VmState.STOPPED
        assert vms.end_task(conn, "u1", "t2", NOW)  # keeps its vm_state
        vm = vms.get(conn, "vm1")
        assert vm.vm_state is VmState.STOPPED
        assert vms.follow_host(conn, vm, NOW, vm_state=VmState.PAUSED.value,
                               desired_power=DesiredPower.STOPPED.value)  # fmt: skip
        assert vms.get(conn, "vm1").vm_state is VmState.PAUSED
        assert not vms.follow_host(conn, vm, NOW, vcpus=2)  # read before the change
        with pytest.raises(ValueError, match="transition"):
            vms.set_meta(conn, "u1", NOW, vm_state=VmState.ERROR.value)
        with pytest.raises(ValueError, match="names the task that takes"):
            vms.transition(conn, "u1", NOW, held_by=None, task_state=None, task_id="x")


# ---- steps -------------------------------------------------------------------------------


def _step_to(conn: Connection, task_id: str, state: StepState) -> None:
    for step in _path(STEP_TRANSITIONS, StepState.PENDING, state):
        retry_at = NOW + timedelta(seconds=30) if step is StepState.WAITING else None
        assert steps.transition(conn, task_id, 0, step, BEFORE, retry_at=retry_at)


def _task(conn: Connection, task_id: str, names: list[str]) -> None:
    tasks.create(conn, id=task_id, type="create", vm_uuid=None, vm_name=None, node=None,
                 params={}, now=BEFORE)  # fmt: skip
    steps.create_all(conn, task_id, names)


def test_step_moves(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bollard.store.steps")
    with db.write() as conn:
        for src in StepState:
            for dst in StepState:
                task_id = f"task-{src.value}-{dst.value}"
                _task(conn, task_id, ["only"])
                _step_to(conn, task_id, src)
                caplog.clear()
                retry_at = NOW + timedelta(minutes=5) if dst is StepState.WAITING else None
                moved = steps.transition(conn, task_id, 0, dst, NOW, retry_at=retry_at)
                expected = step_allowed(src, dst)
                assert moved is expected, (src, dst)
                assert steps.get(conn, task_id, 0).state == (dst if expected else src)
                assert ("refused transition" in caplog.text) is not expected


def test_mark_stamps_times_and_refuses_loudly(db: Database) -> None:
    with db.write() as conn:
        _task(conn, "t1", ["a", "b"])
        steps.mark(conn, "t1", 0, "running", NOW)
        step = steps.get(conn, "t1", 0)
        assert (step.state, step.started_at, step.attempts, step.retry_at) == (
            "running", NOW, 0, None,
        )  # fmt: skip
        steps.mark(conn, "t1", 0, "failed", NOW, error="boom")
        step = steps.get(conn, "t1", 0)
        assert (step.state, step.finished_at, step.error) == ("failed", NOW, "boom")
        with pytest.raises(InvalidState, match="from failed to done"):
            steps.mark(conn, "t1", 0, "done", NOW)
        assert steps.get(conn, "t1", 0).state == "failed"
        steps.mark(conn, "t1", 0, "undoing", NOW)
        steps.mark(conn, "t1", 0, "undone", NOW)
        step = steps.get(conn, "t1", 0)
        assert (step.state, step.undo_started_at, step.undo_finished_at) == ("undone", NOW, NOW)
        with pytest.raises(ValueError, match=r"only through steps\.transition"):
            steps.update_step(conn, "t1", 1, state="done")
        steps.record_command(conn, "t1", 1, "start", "cmd-1")
        assert steps.get(conn, "t1", 1).commands == {"start": "cmd-1"}


def test_a_waiting_step_keeps_its_retry_time_and_attempts(db: Database) -> None:
    retry_at = NOW + timedelta(seconds=42)
    with db.write() as conn:
        _task(conn, "t1", ["a"])
        steps.mark(conn, "t1", 0, "running", BEFORE)
        with pytest.raises(ValueError, match="retry_at is required"):
            steps.mark(conn, "t1", 0, "waiting", NOW, attempts=1)
        steps.mark(conn, "t1", 0, "waiting", NOW, error="busy", attempts=1, retry_at=retry_at)
    with db.read() as conn:
        step = steps.get(conn, "t1", 0)
        assert (step.state, step.attempts, step.retry_at, step.error) == (
            "waiting", 1, retry_at, "busy",
        )  # fmt: skip
    with db.write() as conn:
        with pytest.raises(ValueError, match="only then"):
            steps.mark(conn, "t1", 0, "running", NOW, retry_at=retry_at)
        steps.mark(conn, "t1", 0, "running", NOW)  # the retry: its time is cleared
        step = steps.get(conn, "t1", 0)
        assert (step.state, step.attempts, step.retry_at, step.error) == (
            "running", 1, None, None,
        )  # fmt: skip
        steps.mark(conn, "t1", 0, "waiting", NOW, attempts=2, retry_at=retry_at)
        steps.mark(conn, "t1", 0, "failed", NOW, error="attempts exhausted")
        step = steps.get(conn, "t1", 0)
        assert (step.state, step.attempts, step.retry_at) == ("failed", 2, None)


def test_expect_guards_a_step_move(db: Database) -> None:
    with db.write() as conn:
        _task(conn, "t1", ["a"])
        assert not steps.transition(conn, "t1", 0, StepState.RUNNING, NOW, expect=StepState.WAITING)
        assert steps.transition(conn, "t1", 0, StepState.RUNNING, NOW, expect=StepState.PENDING)
        values: dict[str, Any] = {"state": "done"}
        with pytest.raises(ValueError, match="is the `dst`"):
            steps.transition(conn, "t1", 0, StepState.DONE, NOW, **values)
