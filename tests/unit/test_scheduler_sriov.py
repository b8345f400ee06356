"""The scheduler's SR-IOV filter: a VM with SR-IOV NICs needs, on its node, one free VF per
NIC on the NIC's physical network; a node without enough is rejected with how many it has."""

from __future__ import annotations

import pytest

from bollard.domain.errors import Conflict, InsufficientCapacity
from bollard.domain.scheduler import (
    NodeFacts,
    PlacementRequest,
    check_target,
    decision_error,
    explain,
    select_target,
)
from bollard.domain.states import NodeHealth, SchedulingState


def _node(name: str, memory_mb: int = 8192, **free_vfs: int) -> NodeFacts:
    return NodeFacts(
        name=name, connected=True, health=NodeHealth.UP, scheduling=SchedulingState.READY,
        vcpus=8, memory_mb=memory_mb, free_vfs=free_vfs,
    )  # fmt: skip


def _request(**vfs: int) -> PlacementRequest:
    return PlacementRequest(vcpus=1, memory_mb=512, vfs=vfs)


def test_a_node_without_a_free_vf_on_the_physnet_is_rejected_with_the_counts() -> None:
    nodes = [_node("a", memory_mb=65536, fast=1), _node("b", fast=2), _node("c")]
    decision = select_target(nodes, _request(fast=2))
    assert decision.chosen == "b"  # a has the most memory, but one VF only
    assert decision.rejected == {
        "a": "no free SR-IOV VF on physnet fast (1 free, 2 needed)",
        "c": "no free SR-IOV VF on physnet fast (0 free, 2 needed)",
    }


def test_every_physnet_the_nics_are_on_is_needed() -> None:
    nodes = [_node("a", fast=4), _node("b", fast=1, slow=1)]
    decision = select_target(nodes, _request(fast=1, slow=1))
    assert decision.chosen == "b"
    assert decision.rejected == {"a": "no free SR-IOV VF on physnet slow (0 free, 1 needed)"}


def test_a_vm_without_sriov_nics_ignores_vfs() -> None:
    decision = select_target([_node("a"), _node("b", memory_mb=16384)], _request())
    assert decision.chosen == "b" and decision.rejected == {}


def test_the_first_failed_filter_names_the_reason() -> None:
    tight = _node("a", memory_mb=256)  # memory is checked first
    decision = select_target([tight], _request(fast=1))
    assert decision.rejected == {"a": "256 MB free, 512 MB needed"}


def test_no_node_with_a_free_vf_is_insufficient_capacity_naming_each_node() -> None:
    decision = select_target([_node("a", fast=0), _node("b")], _request(fast=1))
    error = decision_error(decision)
    assert isinstance(error, InsufficientCapacity)
    assert error.message == (
        "no node can take the VM: a: no free SR-IOV VF on physnet fast (0 free, 1 needed); "
        "b: no free SR-IOV VF on physnet fast (0 free, 1 needed)"
    )


def test_a_wanted_node_without_a_free_vf_is_insufficient_capacity() -> None:
    decision = check_target([_node("a", fast=0), _node("b", fast=3)], _request(fast=1), "a")
    error = decision_error(decision)
    assert isinstance(error, InsufficientCapacity) and not isinstance(error, Conflict)
    assert explain(decision) == (
        "node a cannot take the VM: no free SR-IOV VF on physnet fast (0 free, 1 needed)"
    )
    assert check_target([_node("b", fast=3)], _request(fast=1), "b").chosen == "b"


def test_a_negative_vf_request_is_refused_and_zero_needs_nothing() -> None:
    with pytest.raises(ValueError, match="negative SR-IOV VF request"):
        _request(fast=-1)
    assert dict(_request(fast=0, slow=2).vfs) == {"slow": 2}
