"""The whitelisted state tables of DESIGN.md section 5 not covered elsewhere: node health,
node scheduling state, vm_state, task_state (and the pair they make) and task steps. Each
table is checked against an independent list of the moves the server makes: every allowed
pair, refusal of every other, a row for every state, and the terminal states."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import pytest

from bollard.domain import nodes as node_tables
from bollard.domain import tasks as task_tables
from bollard.domain import vms as vm_tables
from bollard.domain.nodes import (
    HEALTH_TERMINAL,
    HEALTH_TRANSITIONS,
    SCHEDULING_TERMINAL,
    SCHEDULING_TRANSITIONS,
    health_allowed,
    scheduling_allowed,
)
from bollard.domain.states import NodeHealth, SchedulingState, TaskState, VmState
from bollard.domain.tasks import (
    STEP_STATES,
    STEP_TERMINAL,
    STEP_TRANSITIONS,
    StepState,
    step_allowed,
)
from bollard.domain.vms import (
    TASK_STATE_TERMINAL,
    TASK_STATE_TRANSITIONS,
    VM_STATE_TERMINAL,
    VM_STATE_TRANSITIONS,
    VmStates,
    task_state_allowed,
    vm_state_allowed,
)

# ---- node health -------------------------------------------------------------------------

HEALTH_MOVES = {
    (NodeHealth.UP, NodeHealth.SUSPECT),  # monitor: silent or disconnected; server start
    (NodeHealth.UP, NodeHealth.DEAD),  # monitor
    (NodeHealth.SUSPECT, NodeHealth.UP),  # monitor: beating again; rejoin
    (NodeHealth.SUSPECT, NodeHealth.DEAD),  # monitor
    (NodeHealth.SUSPECT, NodeHealth.FENCED),  # confirm-down
    (NodeHealth.DEAD, NodeHealth.UP),  # rejoin
    (NodeHealth.DEAD, NodeHealth.FENCING),  # fencer
    (NodeHealth.DEAD, NodeHealth.FENCED),  # confirm-down
    (NodeHealth.FENCING, NodeHealth.FENCED),  # fence confirmed
    (NodeHealth.FENCING, NodeHealth.FENCE_FAILED),  # fence failed
    (NodeHealth.FENCED, NodeHealth.UP),  # rejoin after a reboot
    (NodeHealth.FENCE_FAILED, NodeHealth.UP),  # rejoin
    (NodeHealth.FENCE_FAILED, NodeHealth.FENCED),  # confirm-down
}


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(NodeHealth, NodeHealth)))
def test_health_table(src: NodeHealth, dst: NodeHealth) -> None:
    assert health_allowed(src, dst) is ((src, dst) in HEALTH_MOVES)


def test_every_health_has_a_row_and_none_is_final() -> None:
    assert set(HEALTH_TRANSITIONS) == set(NodeHealth)
    assert frozenset() == HEALTH_TERMINAL


# ---- node scheduling state ---------------------------------------------------------------

SCHEDULING_MOVES = {
    (SchedulingState.READY, SchedulingState.FLUSHING),  # flush
    (SchedulingState.UNFLUSHING, SchedulingState.FLUSHING),  # flush stops an unflush
    (SchedulingState.FLUSHING, SchedulingState.FLUSHED),  # flush ends
    (SchedulingState.FLUSHING, SchedulingState.UNFLUSHING),  # unflush stops a flush
    (SchedulingState.FLUSHED, SchedulingState.UNFLUSHING),  # unflush
    (SchedulingState.FLUSHING, SchedulingState.MAINTENANCE),  # a maintenance drain ends
    (SchedulingState.FLUSHED, SchedulingState.FLUSHING),  # maintenance on, once flushed
    (SchedulingState.MAINTENANCE, SchedulingState.UNFLUSHING),  # unflush
    (SchedulingState.UNFLUSHING, SchedulingState.UNFLUSHING),  # unflush again: restarts
    (SchedulingState.UNFLUSHING, SchedulingState.READY),  # unflush's first step
}


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(SchedulingState, SchedulingState)))
def test_scheduling_table(src: SchedulingState, dst: SchedulingState) -> None:
    assert scheduling_allowed(src, dst) is ((src, dst) in SCHEDULING_MOVES)


def test_every_scheduling_state_has_a_row_and_none_is_final() -> None:
    assert set(SCHEDULING_TRANSITIONS) == set(SchedulingState)
    assert frozenset() == SCHEDULING_TERMINAL


def test_only_a_drain_enters_maintenance() -> None:
    assert {
        src for src, nxt in SCHEDULING_TRANSITIONS.items() if SchedulingState.MAINTENANCE in nxt
    } == {SchedulingState.FLUSHING}


# ---- vm_state ----------------------------------------------------------------------------

SETTLED = {VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED, VmState.ERROR}
VM_STATE_MOVES = {
    *(
        (src, dst)
        for src in (VmState.BUILDING, VmState.RESIZED, *SETTLED)
        for dst in SETTLED
        if src is not dst
    ),
    # A resize ends with the VM resized (VERIFY_RESIZE), from active or stopped.
    (VmState.ACTIVE, VmState.RESIZED),
    (VmState.STOPPED, VmState.RESIZED),
}


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(VmState, VmState)))
def test_vm_state_table(src: VmState, dst: VmState) -> None:
    assert vm_state_allowed(src, dst) is ((src, dst) in VM_STATE_MOVES)


def test_every_vm_state_has_a_row_and_deleted_is_final() -> None:
    assert set(VM_STATE_TRANSITIONS) == set(VmState)
    assert {VmState.DELETED} == VM_STATE_TERMINAL


def test_nothing_becomes_building_or_deleted_and_only_a_resize_makes_resized() -> None:
    entered = set().union(*VM_STATE_TRANSITIONS.values())
    assert entered == SETTLED | {VmState.RESIZED}
    assert {s for s, nxt in VM_STATE_TRANSITIONS.items() if VmState.RESIZED in nxt} == {
        VmState.ACTIVE,
        VmState.STOPPED,
    }


# ---- task_state --------------------------------------------------------------------------

TASK_STATES: list[TaskState | None] = [None, *TaskState]
TASK_STATE_MOVES: set[tuple[TaskState | None, TaskState | None]] = {
    *((None, state) for state in TaskState),  # a task takes the VM
    *((state, None) for state in TaskState),  # it ends
    *((state, state) for state in TaskState),  # re-entry: a step sets it again
    (TaskState.SCHEDULING, TaskState.SPAWNING),  # create: define; ha_restart: place
    (TaskState.SPAWNING, TaskState.POWERING_ON),  # create, ha_restart: start
    (TaskState.POWERING_ON, TaskState.POWERING_OFF),  # create rolled back: undo start
    (TaskState.POWERING_OFF, TaskState.DELETING),  # ... then undo define
    (TaskState.SPAWNING, TaskState.DELETING),  # define failed or cancelled: undo define
    (TaskState.SCHEDULING, TaskState.DELETING),  # define interrupted early, then cancelled
    (TaskState.SPAWNING, TaskState.POWERING_OFF),  # start interrupted early, then cancelled
    (TaskState.RESIZE_PREP, TaskState.RESIZE_MIGRATING),  # resize: stop and copy
    (TaskState.RESIZE_MIGRATING, TaskState.RESIZE_MIGRATED),  # copied
    (TaskState.RESIZE_MIGRATED, TaskState.RESIZE_FINISH),  # defined at the destination
    (TaskState.RESIZE_FINISH, TaskState.RESIZE_MIGRATING),  # rolled back: copies removed
    (TaskState.RESIZE_MIGRATED, TaskState.RESIZE_MIGRATING),  # rolled back: copies removed
}


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(TASK_STATES, TASK_STATES)))
def test_task_state_table(src: TaskState | None, dst: TaskState | None) -> None:
    assert task_state_allowed(src, dst) is ((src, dst) in TASK_STATE_MOVES)


def test_every_task_state_has_a_row_and_every_task_ends() -> None:
    assert set(TASK_STATE_TRANSITIONS) == set(TASK_STATES)
    assert frozenset() == TASK_STATE_TERMINAL


# ---- the pair ----------------------------------------------------------------------------


def test_vm_state_changes_only_when_no_task_holds_the_vm_afterwards() -> None:
    held = VmStates(VmState.STOPPED, TaskState.POWERING_ON)
    assert not vm_tables.allowed(held, VmStates(VmState.ACTIVE, TaskState.POWERING_ON))
    assert vm_tables.allowed(held, VmStates(VmState.ACTIVE, None))  # the task ends
    free = VmStates(VmState.STOPPED, None)
    assert vm_tables.allowed(free, VmStates(VmState.ACTIVE, None))  # follows its host
    # A task takes the VM as it is.
    assert vm_tables.allowed(free, VmStates(VmState.STOPPED, TaskState.POWERING_ON))
    assert not vm_tables.allowed(free, VmStates(VmState.ACTIVE, TaskState.POWERING_ON))


def test_keeping_the_pair_is_no_move_and_needs_no_row() -> None:
    for vm_state in VmState:
        assert vm_tables.allowed(VmStates(vm_state, None), VmStates(vm_state, None))


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(TASK_STATES, TASK_STATES)))
def test_the_pair_checks_task_state_by_its_table(
    src: TaskState | None, dst: TaskState | None
) -> None:
    expected = (src is None and dst is None) or task_state_allowed(src, dst)
    assert vm_tables.allowed(VmStates(VmState.ACTIVE, src), VmStates(VmState.ACTIVE, dst)) is (
        expected
    )


def test_the_pair_refuses_a_vm_state_move_not_in_its_table() -> None:
    assert not vm_tables.allowed(
        VmStates(VmState.ACTIVE, TaskState.DELETING), VmStates(VmState.BUILDING, None)
    )
    assert not vm_tables.allowed(VmStates(VmState.DELETED, None), VmStates(VmState.ACTIVE, None))


# ---- task steps --------------------------------------------------------------------------

STEP_MOVES = {
    (StepState.PENDING, StepState.RUNNING),
    (StepState.PENDING, StepState.SKIPPED),
    (StepState.RUNNING, StepState.RUNNING),  # re-entry after a restart
    (StepState.RUNNING, StepState.DONE),
    (StepState.RUNNING, StepState.FAILED),
    (StepState.RUNNING, StepState.WAITING),  # a temporary error
    (StepState.WAITING, StepState.RUNNING),  # retried at retry_at
    (StepState.WAITING, StepState.FAILED),  # cancelled, or attempts exhausted
    (StepState.DONE, StepState.UNDOING),
    (StepState.FAILED, StepState.UNDOING),  # it may have acted in part
    (StepState.UNDOING, StepState.UNDOING),  # re-entry after a restart
    (StepState.UNDOING, StepState.UNDONE),
    (StepState.UNDOING, StepState.UNDO_FAILED),
}


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(StepState, StepState)))
def test_step_table(src: StepState, dst: StepState) -> None:
    assert step_allowed(src, dst) is ((src, dst) in STEP_MOVES)


def test_every_step_state_has_a_row_and_the_terminal_ones() -> None:
    assert set(STEP_TRANSITIONS) == set(StepState)
    assert {StepState.SKIPPED, StepState.UNDONE, StepState.UNDO_FAILED} == STEP_TERMINAL
    assert set(STEP_STATES) == {s.value for s in StepState}


def test_step_states_compare_equal_to_the_stored_strings() -> None:
    as_strings: list[str] = list(StepState)
    assert "waiting" in as_strings
    assert StepState("undo_failed") is StepState.UNDO_FAILED


# ---- every table in one place ------------------------------------------------------------


def test_the_tables_name_only_their_own_states() -> None:
    tables: list[tuple[Mapping[Any, frozenset[Any]], set[Any]]] = [
        (node_tables.HEALTH_TRANSITIONS, set(NodeHealth)),
        (node_tables.SCHEDULING_TRANSITIONS, set(SchedulingState)),
        (vm_tables.VM_STATE_TRANSITIONS, set(VmState)),
        (vm_tables.TASK_STATE_TRANSITIONS, set(TASK_STATES)),
        (task_tables.STEP_TRANSITIONS, set(StepState)),
    ]
    for table, states in tables:
        assert set(table) == states
        assert set().union(*table.values()) <= states
