"""The API status derivation: every (vm_state, task_state) pair has an expected status."""

from __future__ import annotations

import pytest

from bollard.domain.states import ApiStatus, TaskState, VmState
from bollard.domain.status import derive_status

S = ApiStatus
T = TaskState
# A resize under way; its confirm and revert run on a resized VM (VERIFY_RESIZE and
# REVERT_RESIZE, as Nova shows them).
RESIZE_TASKS = {T.RESIZE_PREP, T.RESIZE_MIGRATING, T.RESIZE_MIGRATED, T.RESIZE_FINISH}


def expected(vm: VmState, task: TaskState | None) -> ApiStatus:
    """The table written out longhand, independently of the implementation."""
    if vm is VmState.DELETED:
        return S.DELETED
    if vm is VmState.ERROR:
        return S.ERROR
    if vm is VmState.BUILDING:
        return S.BUILD
    if vm is VmState.RESIZED:
        return S.REVERT_RESIZE if task is T.RESIZE_REVERTING else S.VERIFY_RESIZE
    if task is T.MIGRATING:
        return S.MIGRATING
    if task in RESIZE_TASKS:
        return S.RESIZE
    if task is T.REBOOTING:
        return S.REBOOT
    return {
        VmState.ACTIVE: S.ACTIVE,
        VmState.STOPPED: S.SHUTOFF,
        VmState.PAUSED: S.PAUSED,
        VmState.RESIZED: S.VERIFY_RESIZE,
    }[vm]


PAIRS = [(vm, task) for vm in VmState for task in [None, *TaskState]]


@pytest.mark.parametrize(("vm", "task"), PAIRS, ids=[f"{v}-{t}" for v, t in PAIRS])
def test_every_pair(vm: VmState, task: TaskState | None) -> None:
    assert derive_status(vm, task) is expected(vm, task)


def test_spot_checks() -> None:
    assert derive_status(VmState.ACTIVE, None) is S.ACTIVE
    assert derive_status(VmState.STOPPED, None) is S.SHUTOFF
    assert derive_status(VmState.STOPPED, T.POWERING_ON) is S.SHUTOFF
    assert derive_status(VmState.ACTIVE, T.MIGRATING) is S.MIGRATING
    assert derive_status(VmState.RESIZED, None) is S.VERIFY_RESIZE
    assert derive_status(VmState.RESIZED, T.RESIZE_CONFIRMING) is S.VERIFY_RESIZE
    assert derive_status(VmState.RESIZED, T.RESIZE_REVERTING) is S.REVERT_RESIZE
    assert derive_status(VmState.STOPPED, T.RESIZE_MIGRATED) is S.RESIZE
    assert derive_status(VmState.BUILDING, T.SPAWNING) is S.BUILD


@pytest.mark.parametrize("vm", list(VmState))
def test_stale_node_makes_status_unknown(vm: VmState) -> None:
    status = derive_status(vm, None, node_stale=True)
    if vm in (VmState.DELETED, VmState.BUILDING):
        assert status is derive_status(vm, None)
    else:
        assert status is S.UNKNOWN
