"""Derivation of the API status from (vm_state, task_state): one table, never stored."""

from __future__ import annotations

from bollard.domain.states import ApiStatus, TaskState, VmState

# A resize under way (its VM is active or stopped until it ends).
_RESIZE_TASKS = frozenset(
    {
        TaskState.RESIZE_PREP,
        TaskState.RESIZE_MIGRATING,
        TaskState.RESIZE_MIGRATED,
        TaskState.RESIZE_FINISH,
    }
)

# Status of a VM with no task in progress.
_BY_VM_STATE: dict[VmState, ApiStatus] = {
    VmState.BUILDING: ApiStatus.BUILD,
    VmState.ACTIVE: ApiStatus.ACTIVE,
    VmState.STOPPED: ApiStatus.SHUTOFF,
    VmState.PAUSED: ApiStatus.PAUSED,
    VmState.RESIZED: ApiStatus.VERIFY_RESIZE,
    VmState.ERROR: ApiStatus.ERROR,
    VmState.DELETED: ApiStatus.DELETED,
}


def _with_task(vm_state: VmState, task: TaskState) -> ApiStatus:
    if vm_state in (VmState.DELETED, VmState.ERROR):
        # Terminal or failed records show as such whatever runs on them (a delete of an
        # errored VM shows ERROR until the row is gone, as operators expect).
        return _BY_VM_STATE[vm_state]
    if vm_state is VmState.BUILDING:
        return ApiStatus.BUILD
    if vm_state is VmState.RESIZED:
        # Waiting for confirm or revert; a revert under way shows as such (as in Nova).
        if task is TaskState.RESIZE_REVERTING:
            return ApiStatus.REVERT_RESIZE
        return ApiStatus.VERIFY_RESIZE
    if task is TaskState.MIGRATING:
        return ApiStatus.MIGRATING
    if task in _RESIZE_TASKS:
        return ApiStatus.RESIZE
    if task is TaskState.REBOOTING:
        return ApiStatus.REBOOT
    # powering-on/off, deleting, scheduling, spawning on a built VM: its base status.
    return _BY_VM_STATE[vm_state]


def derive_status(
    vm_state: VmState, task_state: TaskState | None, *, node_stale: bool = False
) -> ApiStatus:
    """The status shown to users.

    ``node_stale`` is true when the owner node has not reported for longer than the
    staleness limit: what we believe about the VM can no longer be vouched for.
    """
    if node_stale and vm_state not in (VmState.DELETED, VmState.BUILDING):
        return ApiStatus.UNKNOWN
    if task_state is None:
        return _BY_VM_STATE[vm_state]
    return _with_task(vm_state, task_state)
