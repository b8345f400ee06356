"""The status shown for a VM is UNKNOWN once its owner has been silent past the dead
threshold (health.dead_after heartbeats), and not before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bollard.domain.models import HostVm, Vm
from bollard.domain.states import DesiredPower, PowerState, VmState
from bollard.server.api.schemas import NodesSeen, VmOut

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def _vm(node: str | None = "node1", state: VmState = VmState.ACTIVE) -> Vm:
    return Vm(
        uuid="u1", name="vm1", node=node, vcpus=1, memory_mb=256, epoch=1, vm_state=state,
        task_state=None, task_id=None, desired_power=DesiredPower.RUNNING,
        observed_power=PowerState.RUNNING, observed_at=NOW, observed_seq=1, fault=None,
        created_at=NOW, updated_at=NOW,
    )  # fmt: skip


def _seen(silent_for: float | None, stale_after: float = 15.0) -> NodesSeen:
    last = None if silent_for is None else NOW - timedelta(seconds=silent_for)
    return NodesSeen(last={"node1": last}, host_time={"node1": 1.5}, stale_after=stale_after)


@pytest.mark.parametrize(
    ("silent_for", "status"),
    [(0.0, "ACTIVE"), (14.9, "ACTIVE"), (15.0, "ACTIVE"), (15.1, "UNKNOWN"), (None, "UNKNOWN")],
)
def test_unknown_past_the_dead_threshold(silent_for: float | None, status: str) -> None:
    out = VmOut.of(_vm(), _seen(silent_for), NOW)
    assert out.status == status
    if silent_for is not None:
        assert out.reported_at == NOW - timedelta(seconds=silent_for)
        assert out.host_reported_at == 1.5


def test_building_and_unplaced_vms_are_never_unknown() -> None:
    assert VmOut.of(_vm(state=VmState.BUILDING), _seen(None), NOW).status == "BUILD"
    unplaced = VmOut.of(_vm(node=None, state=VmState.STOPPED), _seen(None), NOW)
    assert (unplaced.status, unplaced.reported_at) == ("SHUTOFF", None)


def test_observed_spec_comes_from_the_owner_report() -> None:
    entry = HostVm("node1", "u1", "vm1", PowerState.RUNNING, 2, 1024, 1, 9, NOW)
    out = VmOut.of(_vm(), _seen(1.0), NOW, entry)
    assert (out.vcpus, out.observed_vcpus, out.memory_mb, out.observed_memory_mb) == (
        1, 2, 256, 1024,
    )  # fmt: skip
    assert VmOut.of(_vm(), _seen(1.0), NOW).observed_memory_mb is None
