"""Target selection: filters with their reasons, selectors, explain, check_target."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from bollard.domain.errors import (
    Conflict,
    InsufficientCapacity,
    InvalidInput,
    NodeUnavailable,
    NotFound,
)
from bollard.domain.scheduler import (
    Decision,
    NodeFacts,
    PlacementRequest,
    Selector,
    check_target,
    decision_error,
    explain,
    parse_selector,
    select_target,
)
from bollard.domain.states import NodeHealth, SchedulingState
from bollard.server.scheduling import vcpu_limit


def node(name: str, **kw: Any) -> NodeFacts:
    facts: dict[str, Any] = {
        "connected": True,
        "health": NodeHealth.UP,
        "scheduling": SchedulingState.READY,
        "vcpus": 16,
        "memory_mb": 16384,
    }
    facts.update(kw)
    return NodeFacts(name=name, **facts)


def req(vcpus: int = 1, memory_mb: int = 1024, **kw: Any) -> PlacementRequest:
    return PlacementRequest(vcpus=vcpus, memory_mb=memory_mb, **kw)


# ---- filters and their reasons -------------------------------------------------------------


def test_not_connected_is_rejected() -> None:
    d = select_target([node("a", connected=False), node("b")], req())
    assert d.chosen == "b"
    assert d.rejected == {"a": "not connected"}


@pytest.mark.parametrize("health", [h for h in NodeHealth if h is not NodeHealth.UP])
def test_health_other_than_up_is_rejected(health: NodeHealth) -> None:
    d = select_target([node("a", health=health)], req())
    assert d.chosen is None
    assert d.rejected == {"a": f"health {health.value}"}


@pytest.mark.parametrize("state", [s for s in SchedulingState if s is not SchedulingState.READY])
def test_scheduling_state_other_than_ready_is_rejected(state: SchedulingState) -> None:
    d = select_target([node("a", scheduling=state)], req())
    assert d.chosen is None
    assert d.rejected == {"a": f"scheduling state {state.value}"}


def test_reason_examples_from_the_brief() -> None:
    d = select_target(
        [
            node("n1", health=NodeHealth.SUSPECT),
            node("n2", scheduling=SchedulingState.FLUSHING),
            node("n3", memory_mb=4096, provisioned_memory_mb=3072),
            node("n4", vcpus=16, provisioned_vcpus=13),
        ],
        req(vcpus=4, memory_mb=2048),
    )
    assert d.chosen is None
    assert d.rejected == {
        "n1": "health suspect",
        "n2": "scheduling state flushing",
        "n3": "1024 MB free, 2048 MB needed",
        "n4": "3 vCPUs free (16 x ratio 1.0 - 13 provisioned), 4 needed",
    }


def test_memory_exactly_fitting_is_accepted_one_mb_short_is_not() -> None:
    exact = node("exact", memory_mb=4096, provisioned_memory_mb=2048)
    short = node("short", memory_mb=4096, provisioned_memory_mb=2049)
    d = select_target([exact, short], req(memory_mb=2048))
    assert d.chosen == "exact"
    assert d.rejected == {"short": "2047 MB free, 2048 MB needed"}


def test_admission_counts_stopped_vms_memory() -> None:
    # 2 GB of running VMs but 15 GB provisioned: a 2 GB VM does not fit.
    n = node("a", memory_mb=16384, running_memory_mb=2048, provisioned_memory_mb=15360)
    d = select_target([n], req(memory_mb=2048))
    assert d.rejected == {"a": "1024 MB free, 2048 MB needed"}


def test_vcpus_exactly_fitting_is_accepted_one_short_is_not() -> None:
    exact = node("exact", vcpus=8, provisioned_vcpus=6)
    short = node("short", vcpus=8, provisioned_vcpus=7)
    d = select_target([exact, short], req(vcpus=2))
    assert d.chosen == "exact"
    assert d.rejected == {"short": "1 vCPUs free (8 x ratio 1.0 - 7 provisioned), 2 needed"}


def test_ratio_above_one_overcommits_vcpus() -> None:
    n = node("a", vcpus=16, provisioned_vcpus=20)
    assert select_target([n], req(vcpus=4)).chosen is None
    d = select_target([n], req(vcpus=4), vcpu_allocation_ratio=1.5)  # 24 - 20 = 4
    assert d.chosen == "a"
    d = select_target([n], req(vcpus=5), vcpu_allocation_ratio=1.5)
    assert d.rejected == {"a": "4 vCPUs free (16 x ratio 1.5 - 20 provisioned), 5 needed"}


def test_ratio_never_overcommits_memory() -> None:
    n = node("a", memory_mb=4096, provisioned_memory_mb=4096)
    d = select_target([n], req(vcpus=1, memory_mb=1), vcpu_allocation_ratio=10.0)
    assert d.rejected == {"a": "0 MB free, 1 MB needed"}


def test_ratio_below_one_and_fractional_capacity() -> None:
    n = node("a", vcpus=5, provisioned_vcpus=0)
    d = select_target([n], req(vcpus=3), vcpu_allocation_ratio=0.5)  # 2.5 free
    assert d.rejected == {"a": "2.5 vCPUs free (5 x ratio 0.5 - 0 provisioned), 3 needed"}


def test_float_ratio_exact_fit_is_not_lost_to_rounding() -> None:
    # 100 * 1.13 == 112.99999999999999 in binary floating point
    n = node("a", vcpus=100, provisioned_vcpus=0)
    assert select_target([n], req(vcpus=113), vcpu_allocation_ratio=1.13).chosen == "a"


@pytest.mark.parametrize("ratio", [0.0, -1.0, float("nan"), float("inf")])
def test_invalid_ratio_is_refused(ratio: float) -> None:
    with pytest.raises(ValueError, match="ratio"):
        select_target([node("a")], req(), vcpu_allocation_ratio=ratio)


def test_current_node_is_never_chosen() -> None:
    nodes = [node("a", memory_mb=65536), node("b")]
    d = select_target(nodes, req(current_node="a"))
    assert d.chosen == "b"
    assert d.rejected == {"a": "is the VM's current node"}


def test_current_node_named_in_exclude_gets_the_current_node_reason() -> None:
    d = select_target([node("a"), node("b")], req(exclude={"a"}, current_node="a"))
    assert d.rejected == {"a": "is the VM's current node"}


def test_excluded_nodes_are_rejected() -> None:
    d = select_target([node("a"), node("b"), node("c")], req(exclude={"a", "b"}))
    assert d.chosen == "c"
    assert d.rejected == {"a": "excluded", "b": "excluded"}


def test_node_limit() -> None:
    nodes = [node("a", memory_mb=65536), node("b"), node("c")]
    d = select_target(nodes, req(node_limit=["c", "b"]))
    assert d.chosen == "b"
    assert d.rejected == {"a": "outside the VM's node limit (c, b)"}


def test_empty_node_limit_means_no_limit() -> None:
    d = select_target([node("a")], req(node_limit=[]))
    assert d.chosen == "a"


def test_first_failing_filter_gives_the_reason() -> None:
    bad = node(
        "a",
        connected=False,
        health=NodeHealth.DEAD,
        scheduling=SchedulingState.MAINTENANCE,
        memory_mb=0,
    )
    assert select_target([bad], req()).rejected == {"a": "not connected"}
    assert select_target([bad], req(node_limit=["b"])).rejected == {
        "a": "outside the VM's node limit (b)"
    }
    assert select_target([bad], req(exclude={"a"})).rejected == {"a": "excluded"}
    up = node("a", health=NodeHealth.DEAD, scheduling=SchedulingState.MAINTENANCE, memory_mb=0)
    assert select_target([up], req()).rejected == {"a": "health dead"}
    healthy = node("a", scheduling=SchedulingState.MAINTENANCE, memory_mb=0)
    assert select_target([healthy], req()).rejected == {"a": "scheduling state maintenance"}
    ready = node("a", memory_mb=0, vcpus=0)
    assert select_target([ready], req()).rejected == {"a": "0 MB free, 1024 MB needed"}


def test_every_node_is_either_ranked_or_rejected() -> None:
    nodes = [node("a"), node("b", connected=False), node("c"), node("d", memory_mb=10)]
    d = select_target(nodes, req())
    assert sorted(d.rejected) == ["b", "d"]
    assert sorted(name for name, _ in d.ranking) == ["a", "c"]


def test_no_nodes() -> None:
    d = select_target([], req())
    assert d.chosen is None
    assert d.rejected == {}
    assert d.ranking == []
    assert explain(d) == "no node can take the VM: no node is enrolled"


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        select_target([node("a"), node("a")], req())


def test_negative_request_is_refused() -> None:
    with pytest.raises(ValueError):
        req(vcpus=-1)


# ---- selectors --------------------------------------------------------------------------------


def test_mem_counts_only_running_vms() -> None:
    nodes = [
        # lots provisioned but mostly stopped: most free running memory
        node("a", memory_mb=16384, running_memory_mb=1024, provisioned_memory_mb=12288),
        node("b", memory_mb=16384, running_memory_mb=4096, provisioned_memory_mb=4096),
    ]
    d = select_target(nodes, req(selector=Selector.MEM))
    assert d.chosen == "a"
    assert d.ranking == [("a", 15360), ("b", 12288)]


def test_memprov_counts_stopped_vms_too() -> None:
    nodes = [
        node("a", memory_mb=16384, running_memory_mb=1024, provisioned_memory_mb=12288),
        node("b", memory_mb=16384, running_memory_mb=4096, provisioned_memory_mb=4096),
    ]
    d = select_target(nodes, req(selector=Selector.MEMPROV))
    assert d.chosen == "b"
    assert d.ranking == [("b", 12288), ("a", 4096)]


def test_memprov_is_relative_to_capacity() -> None:
    nodes = [
        node("small", memory_mb=8192, provisioned_memory_mb=1024),  # 7168 unprovisioned
        node("big", memory_mb=65536, provisioned_memory_mb=8192),  # 57344 unprovisioned
    ]
    assert select_target(nodes, req(selector=Selector.MEMPROV)).chosen == "big"


def test_vcpus_picks_most_free_vcpus() -> None:
    nodes = [
        node("a", vcpus=8, provisioned_vcpus=2),  # 6 free
        node("b", vcpus=32, provisioned_vcpus=20),  # 12 free
        node("c", vcpus=16, provisioned_vcpus=2, running_vcpus=0),  # 14 free
    ]
    d = select_target(nodes, req(selector=Selector.VCPUS))
    assert d.ranking == [("c", 14), ("b", 12), ("a", 6)]
    d = select_target(nodes, req(selector=Selector.VCPUS), vcpu_allocation_ratio=2.0)
    assert d.ranking == [("b", 44), ("c", 30), ("a", 14)]


def test_load_lowest_first_unknown_last() -> None:
    nodes = [
        node("a", load=None),
        node("b", load=2.5),
        node("c", load=0.25),
        node("d", load=None),
        node("e", load=float("nan")),
    ]
    d = select_target(nodes, req(selector=Selector.LOAD))
    assert d.chosen == "c"
    assert [name for name, _ in d.ranking] == ["c", "b", "a", "d", "e"]


def test_load_all_unknown_falls_back_to_name() -> None:
    d = select_target([node("z"), node("y")], req(selector=Selector.LOAD))
    assert d.chosen == "y"
    assert d.ranking == [("y", None), ("z", None)]


def test_vms_fewest_first() -> None:
    nodes = [node("a", vm_count=3), node("b", vm_count=0), node("c", vm_count=1)]
    d = select_target(nodes, req(selector=Selector.VMS))
    assert d.ranking == [("b", 0), ("c", 1), ("a", 3)]


@pytest.mark.parametrize("selector", list(Selector))
def test_ties_break_by_name(selector: Selector) -> None:
    nodes = [node(name, load=1.0, vm_count=2) for name in ("node3", "node1", "node2")]
    d = select_target(nodes, req(selector=selector))
    assert d.chosen == "node1"
    assert [name for name, _ in d.ranking] == ["node1", "node2", "node3"]


def test_request_selector_overrides_default() -> None:
    nodes = [node("a", memory_mb=65536, vm_count=5), node("b", vm_count=0)]
    assert select_target(nodes, req()).chosen == "a"
    assert select_target(nodes, req(), default_selector=Selector.VMS).chosen == "b"
    d = select_target(nodes, req(selector=Selector.MEM), default_selector=Selector.VMS)
    assert (d.chosen, d.selector) == ("a", Selector.MEM)


def test_parse_selector() -> None:
    assert parse_selector("memprov") is Selector.MEMPROV
    assert parse_selector(" VMS ") is Selector.VMS
    with pytest.raises(InvalidInput, match="one of: mem, memprov, vcpus, load, vms"):
        parse_selector("cpu")


# ---- explain and errors ---------------------------------------------------------------------


def test_explain_nothing_fits() -> None:
    nodes = [node("node2", memory_mb=1024), node("node1", connected=False)]
    d = select_target(nodes, req(memory_mb=2048))
    assert explain(d) == (
        "no node can take the VM: node1: not connected; node2: 1024 MB free, 2048 MB needed"
    )
    err = decision_error(d)
    assert isinstance(err, InsufficientCapacity)
    assert err.message == explain(d)


def test_explain_a_choice() -> None:
    nodes = [node("a", memory_mb=8192), node("b"), node("c", connected=False)]
    d = select_target(nodes, req())
    assert explain(d) == (
        "b chosen by selector mem (most free memory (running VMs)) from b (16384), a (8192); "
        "rejected: c: not connected"
    )
    with pytest.raises(ValueError):
        decision_error(d)


def test_explain_load_with_unknown() -> None:
    d = select_target([node("a", load=0.5), node("b")], req(selector=Selector.LOAD))
    assert explain(d) == "a chosen by selector load (lowest load) from a (0.5), b (unknown)"


def test_to_record_is_plain_data() -> None:
    d = select_target([node("a"), node("b", connected=False)], req())
    assert d.to_record() == {
        "chosen": "a",
        "selector": "mem",
        "wanted": None,
        "ranking": [{"node": "a", "score": 16384}],
        "rejected": [{"node": "b", "reason": "not connected"}],
    }


# ---- check_target -----------------------------------------------------------------------------


def test_check_target_accepts_a_fitting_node_even_if_not_the_best() -> None:
    nodes = [node("big", memory_mb=65536), node("small", memory_mb=4096)]
    d = check_target(nodes, req(memory_mb=2048), "small")
    assert d.chosen == "small"
    assert d.wanted == "small"
    assert d.rejected == {}
    assert d.ranking == [("small", 4096)]
    assert explain(d) == "small (as requested) can take the VM"


def test_check_target_unknown_node() -> None:
    d = check_target([node("a")], req(), "zz")
    assert d.chosen is None
    assert d.rejected == {"zz": "no such node"}
    assert explain(d) == "node zz cannot take the VM: no such node"
    assert isinstance(decision_error(d), NotFound)


def test_check_target_applies_every_filter() -> None:
    nodes = [
        node("off", connected=False),
        node("sick", health=NodeHealth.SUSPECT),
        node("flush", scheduling=SchedulingState.FLUSHING),
        node("full", memory_mb=1024),
        node("busy", vcpus=2, provisioned_vcpus=2),
        node("here"),
        node("far"),
    ]
    r = req(vcpus=1, memory_mb=2048, current_node="here", node_limit=[n.name for n in nodes[:-1]])
    expected = {
        "off": ("not connected", NodeUnavailable),
        "sick": ("health suspect", Conflict),
        "flush": ("scheduling state flushing", Conflict),
        "full": ("1024 MB free, 2048 MB needed", InsufficientCapacity),
        "busy": ("0 vCPUs free (2 x ratio 1.0 - 2 provisioned), 1 needed", InsufficientCapacity),
        "here": ("is the VM's current node", Conflict),
        "far": ("outside the VM's node limit (off, sick, flush, full, busy, here)", Conflict),
    }
    for name, (reason, error) in expected.items():
        d = check_target(nodes, r, name)
        assert d.chosen is None
        assert d.rejected == {name: reason}
        assert explain(d) == f"node {name} cannot take the VM: {reason}"
        err = decision_error(d)
        assert type(err) is error, name
        assert isinstance(err, NotFound) or err.message == explain(d)


def test_check_target_uses_the_ratio() -> None:
    nodes = [node("a", vcpus=4, provisioned_vcpus=4)]
    assert check_target(nodes, req(vcpus=2), "a").chosen is None
    assert check_target(nodes, req(vcpus=2), "a", vcpu_allocation_ratio=1.5).chosen == "a"


def test_check_target_agrees_with_select_target_on_rejections() -> None:
    rng = random.Random(7)
    for _ in range(50):
        nodes = random_nodes(rng)
        r = random_request(rng, [n.name for n in nodes])
        full = select_target(nodes, r, vcpu_allocation_ratio=1.25)
        for n in nodes:
            one = check_target(nodes, r, n.name, vcpu_allocation_ratio=1.25)
            if n.name in full.rejected:
                assert one.rejected == {n.name: full.rejected[n.name]}
            else:
                assert one.chosen == n.name


# ---- property-style: seeded random clusters --------------------------------------------------


def random_nodes(rng: random.Random) -> list[NodeFacts]:
    count = rng.randint(0, 8)
    names = rng.sample([f"node{i}" for i in range(12)], count)
    nodes = []
    for name in names:
        vcpus = rng.choice([2, 4, 8, 16])
        memory = rng.choice([2048, 4096, 8192, 16384])
        provisioned_memory = rng.randint(0, memory + 1024)
        provisioned_vcpus = rng.randint(0, vcpus * 2)
        nodes.append(
            NodeFacts(
                name=name,
                connected=rng.random() < 0.85,
                health=NodeHealth.UP if rng.random() < 0.8 else rng.choice(list(NodeHealth)),
                scheduling=(
                    SchedulingState.READY
                    if rng.random() < 0.8
                    else rng.choice(list(SchedulingState))
                ),
                vcpus=vcpus,
                memory_mb=memory,
                provisioned_vcpus=provisioned_vcpus,
                provisioned_memory_mb=provisioned_memory,
                running_vcpus=rng.randint(0, provisioned_vcpus),
                running_memory_mb=rng.randint(0, provisioned_memory),
                vm_count=rng.randint(0, 4),
                load=None if rng.random() < 0.2 else rng.choice([0.0, 0.5, 1.0, 2.0, 4.0]),
            )
        )
    return nodes


def random_request(rng: random.Random, names: list[str]) -> PlacementRequest:
    pool = [*names, "ghost"]
    return PlacementRequest(
        vcpus=rng.choice([0, 1, 2, 4]),
        memory_mb=rng.choice([0, 512, 1024, 2048, 4096]),
        exclude=set(rng.sample(pool, rng.randint(0, min(2, len(pool))))),
        node_limit=(
            None if rng.random() < 0.6 else rng.sample(pool, rng.randint(1, min(4, len(pool))))
        ),
        selector=None if rng.random() < 0.3 else rng.choice(list(Selector)),
        current_node=rng.choice([None, *names]),
    )


def passes_every_filter(n: NodeFacts, r: PlacementRequest, ratio: float) -> bool:
    """The filters restated independently of the module."""
    return (
        n.connected
        and n.health == NodeHealth.UP
        and n.scheduling == SchedulingState.READY
        and n.name not in r.exclude
        and n.name != r.current_node
        and (not r.node_limit or n.name in r.node_limit)
        and n.memory_mb - n.provisioned_memory_mb >= r.memory_mb
        and n.vcpus * ratio - n.provisioned_vcpus >= r.vcpus - 1e-9
    )


def better_or_equal(
    a: NodeFacts, b: NodeFacts, selector: Selector, ratio: float, r: PlacementRequest
) -> bool:
    """Whether ``a`` is at least as good as ``b`` for ``selector`` (names aside)."""
    if selector is Selector.STATIC:  # vCPU + memory fractions once r's VM is placed

        def load(n: NodeFacts) -> float:
            cpu = (n.provisioned_vcpus + r.vcpus) / n.vcpus
            return round(cpu + (n.provisioned_memory_mb + r.memory_mb) / n.memory_mb, 4)

        return load(a) <= load(b)
    if selector is Selector.MEM:
        return a.memory_mb - a.running_memory_mb >= b.memory_mb - b.running_memory_mb
    if selector is Selector.MEMPROV:
        return a.memory_mb - a.provisioned_memory_mb >= b.memory_mb - b.provisioned_memory_mb
    if selector is Selector.VCPUS:
        return a.vcpus * ratio - a.provisioned_vcpus >= b.vcpus * ratio - b.provisioned_vcpus - 1e-9
    if selector is Selector.LOAD:
        if a.load is None:
            return b.load is None
        return b.load is None or a.load <= b.load
    return a.vm_count <= b.vm_count


@pytest.mark.parametrize("seed", range(40))
def test_random_clusters(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(25):
        nodes = random_nodes(rng)
        r = random_request(rng, [n.name for n in nodes])
        ratio = rng.choice([0.5, 1.0, 1.5, 4.0])
        default = rng.choice(list(Selector))
        d = select_target(nodes, r, vcpu_allocation_ratio=ratio, default_selector=default)
        check_decision(nodes, r, ratio, default, d)


def check_decision(
    nodes: list[NodeFacts], r: PlacementRequest, ratio: float, default: Selector, d: Decision
) -> None:
    by_name = {n.name: n for n in nodes}
    accepted = [n for n in nodes if passes_every_filter(n, r, ratio)]
    assert d.selector == (r.selector or default)
    # every node is accounted for exactly once
    ranked = [name for name, _ in d.ranking]
    assert set(ranked) | set(d.rejected) == set(by_name)
    assert not set(ranked) & set(d.rejected)
    assert set(ranked) == {n.name for n in accepted}
    assert all(reason for reason in d.rejected.values())
    if not accepted:
        assert d.chosen is None
        assert explain(d).startswith("no node can take the VM: ")
        return
    assert d.chosen is not None
    chosen = by_name[d.chosen]
    assert d.chosen == ranked[0]
    assert passes_every_filter(chosen, r, ratio)
    assert d.chosen not in r.exclude and d.chosen != r.current_node
    for other in accepted:
        assert better_or_equal(chosen, other, d.selector, ratio, r)
        if better_or_equal(other, chosen, d.selector, ratio, r):  # a tie: name decides
            assert chosen.name <= other.name
    # the ranking is sorted: each node at least as good as the next
    for first, second in itertools.pairwise(ranked):
        assert better_or_equal(by_name[first], by_name[second], d.selector, ratio, r)
    # the wanted-target check agrees
    assert check_target(nodes, r, d.chosen, vcpu_allocation_ratio=ratio).chosen == d.chosen


# ---- creation's cases (ported from the former domain/placement.py) -----------------------------
# Creation goes through the same scheduler as migration and HA restart (server/scheduling.py).


def test_creation_default_selector_prefers_most_free_memory() -> None:
    nodes = [
        node("a", memory_mb=8192, running_memory_mb=4096, provisioned_memory_mb=4096),
        node("b", memory_mb=16384, running_memory_mb=4096, provisioned_memory_mb=4096),
        node("c", memory_mb=8192),
    ]
    d = select_target(nodes, req(memory_mb=1024))
    assert (d.chosen, d.selector) == ("b", Selector.MEM)
    assert d.ranking == [("b", 12288), ("c", 8192), ("a", 4096)]


def test_creation_skips_a_disconnected_node_with_more_memory() -> None:
    nodes = [node("big", memory_mb=65536, connected=False), node("small", memory_mb=2048)]
    d = select_target(nodes, req(memory_mb=1024))
    assert d.chosen == "small"
    assert d.rejected == {"big": "not connected"}


def test_creation_needs_vcpus_too_where_memory_abounds() -> None:
    nodes = [node("roomy", memory_mb=65536, vcpus=4, provisioned_vcpus=4), node("tight", vcpus=8)]
    d = select_target(nodes, req(vcpus=2, memory_mb=1024))
    assert d.chosen == "tight"
    assert d.rejected == {"roomy": "0 vCPUs free (4 x ratio 1.0 - 4 provisioned), 2 needed"}


def test_creation_nothing_fits_explains_each_node() -> None:
    nodes = [
        node("a", memory_mb=1024),
        node("b", memory_mb=65536, connected=False),
        node("c", memory_mb=8192, vcpus=1),
    ]
    d = select_target(nodes, req(vcpus=2, memory_mb=2048))
    err = decision_error(d)
    assert isinstance(err, InsufficientCapacity)
    assert "a: 1024 MB free, 2048 MB needed" in err.message
    assert "b: not connected" in err.message
    assert "c: 1 vCPUs free (1 x ratio 1.0 - 0 provisioned), 2 needed" in err.message


def test_creation_wanted_node_errors() -> None:
    nodes = [node("a", memory_mb=65536), node("b", memory_mb=4096)]
    assert check_target(nodes, req(memory_mb=1024), "b").chosen == "b"
    missing = decision_error(check_target(nodes, req(memory_mb=1024), "zz"))
    assert isinstance(missing, NotFound) and missing.message == "node 'zz' does not exist"
    full = decision_error(check_target(nodes, req(memory_mb=8192), "b"))
    assert isinstance(full, InsufficientCapacity)
    assert full.message == "node b cannot take the VM: 4096 MB free, 8192 MB needed"
    off = decision_error(check_target([node("d", connected=False)], req(), "d"))
    assert isinstance(off, NodeUnavailable)


def test_a_vm_larger_than_every_node_fits_only_with_overcommit() -> None:
    nodes = [node("node1", vcpus=16, memory_mb=32768), node("node2", vcpus=8, memory_mb=16384)]
    r = req(vcpus=20, memory_mb=1024)
    refused = select_target(nodes, r)
    assert refused.rejected == {
        "node1": "16 vCPUs free (16 x ratio 1.0 - 0 provisioned), 20 needed",
        "node2": "8 vCPUs free (8 x ratio 1.0 - 0 provisioned), 20 needed",
    }
    accepted = select_target(nodes, r, vcpu_allocation_ratio=2.0)
    assert accepted.chosen == "node1"
    assert accepted.rejected == {
        "node2": "16 vCPUs free (8 x ratio 2.0 - 0 provisioned), 20 needed"
    }


# ---- the claim's vCPU limit agrees with the scheduler's capacity -------------------------------


@pytest.mark.parametrize(
    ("vcpus", "ratio", "limit"),
    [(16, 1.0, 16), (8, 2.0, 16), (100, 1.13, 113), (5, 0.5, 2), (3, 0.1, 0), (7, 1.5, 10)],
)
def test_claim_vcpu_limit(vcpus: int, ratio: float, limit: int) -> None:
    assert vcpu_limit(vcpus, ratio) == limit


def test_claim_vcpu_limit_agrees_with_admission() -> None:
    rng = random.Random(11)
    for _ in range(500):
        vcpus = rng.randint(0, 256)
        ratio = rng.choice([1.0, 1.13, 1.5, 2.0, 0.3, rng.uniform(0.1, 64)])
        provisioned = rng.randint(0, 300)
        want = rng.randint(0, 64)
        n = node("a", vcpus=vcpus, provisioned_vcpus=provisioned)
        admitted = select_target([n], req(vcpus=want, memory_mb=0), vcpu_allocation_ratio=ratio)
        assert (admitted.chosen == "a") == (provisioned + want <= vcpu_limit(vcpus, ratio))
