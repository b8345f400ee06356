"""The scheduler's storage filter: a node must see every pool the VM's volumes are in, with
room (as it last reported) for the volumes of local pools that will be made or copied there."""

from __future__ import annotations

from bollard.domain.scheduler import NodeFacts, PlacementRequest, PoolNeed, select_target
from bollard.domain.states import NodeHealth, SchedulingState


def _node(name: str, **free: int) -> NodeFacts:
    return NodeFacts(
        name=name, connected=True, health=NodeHealth.UP, scheduling=SchedulingState.READY,
        vcpus=8, memory_mb=8192, pool_free_mb=free,
    )  # fmt: skip


def test_a_node_outside_a_pool_is_rejected_naming_it() -> None:
    request = PlacementRequest(vcpus=1, memory_mb=512, pools=(PoolNeed("nfs", frozenset({"b"})),))
    decision = select_target([_node("a"), _node("b")], request)
    assert decision.chosen == "b"
    assert decision.rejected == {"a": "not a host of storage pool nfs"}


def test_local_volumes_need_room_on_the_node_shared_ones_do_not() -> None:
    local = PlacementRequest(vcpus=1, memory_mb=512, pools=(PoolNeed("local", None, 2048),))
    nodes = [_node("a", local=1024), _node("b", local=4096), _node("c")]
    decision = select_target(nodes, local)
    assert decision.rejected == {"a": "pool local: 1024 MiB free, 2048 MiB needed"}
    # c has not reported the pool: no claim is made against it.
    assert {name for name, _ in decision.ranking} == {"b", "c"}
    shared = PlacementRequest(vcpus=1, memory_mb=512, pools=(PoolNeed("nfs", None, 0),))
    assert select_target([_node("a", nfs=0)], shared).chosen == "a"
