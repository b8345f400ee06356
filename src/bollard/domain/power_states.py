"""What a VM's vm_state is when its host reports a power state, and what a command's result
says about the VM's power (pure; used by the task flows, the state reconciler and the
handling of late command outcomes)."""

from __future__ import annotations

from typing import Any

from bollard.domain.states import PowerState, VmState

# The vm_state a VM has when its host reports it in this power state.
STATE_OF_POWER: dict[PowerState, VmState] = {
    PowerState.RUNNING: VmState.ACTIVE,
    PowerState.PAUSED: VmState.PAUSED,
    PowerState.STOPPED: VmState.STOPPED,
    PowerState.CRASHED: VmState.STOPPED,
}

# Power states in which a VM is on (its host runs it, paused or not).
POWERED_ON: frozenset[PowerState] = frozenset({PowerState.RUNNING, PowerState.PAUSED})


def vm_state_of(power: PowerState | None) -> VmState | None:
    """The vm_state matching a reported power state (None: no VM, or no matching state)."""
    return None if power is None else STATE_OF_POWER.get(power)


def reported_power(result: dict[str, Any]) -> tuple[bool, PowerState | None]:
    """(known, power) from a command result: known with None means the host has no such VM."""
    if "vm" not in result:
        return False, None
    vm = result["vm"]
    if vm is None:
        return True, None
    try:
        return True, PowerState(vm["power"])
    except (KeyError, TypeError, ValueError):
        return False, None
