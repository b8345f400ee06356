"""The scheduler with HA policies (issue 21): HA groups with node priorities (restricted or
not), affinity rules (together / apart, strict = a filter with a reason, non-strict = a
preference), the ranking order, the static selector, failback targets."""

from __future__ import annotations

import random
from typing import Any

import pytest

from bollard.domain.errors import Conflict, InsufficientCapacity
from bollard.domain.ha import AffinityKind, HaGroup
from bollard.domain.placement_rules import (
    Partner,
    PlacementPolicy,
    RuleFacts,
    preference_breaches,
    strict_reason,
    tier,
)
from bollard.domain.scheduler import (
    NodeFacts,
    PlacementRequest,
    Selector,
    check_target,
    decision_error,
    explain,
    failback_target,
    rule_context,
    select_target,
)
from bollard.domain.states import NodeHealth, SchedulingState

APART, TOGETHER = AffinityKind.APART, AffinityKind.TOGETHER


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


def group(nodes: dict[str, int], **kw: Any) -> HaGroup:
    return HaGroup(name=kw.pop("name", "g"), nodes=nodes, **kw)


def rule(name: str, kind: AffinityKind, strict: bool, *partners: Partner) -> RuleFacts:
    return RuleFacts(name=name, kind=kind, strict=strict, partners=partners)


def req(
    *, group_: HaGroup | None = None, rules: tuple[RuleFacts, ...] = (), **kw: Any
) -> PlacementRequest:
    policy = PlacementPolicy(group=group_, rules=rules)
    return PlacementRequest(vcpus=kw.pop("vcpus", 1), memory_mb=kw.pop("memory_mb", 1024),
                            policy=policy, **kw)  # fmt: skip


def names(ranking: list[tuple[str, Any]]) -> list[str]:
    return [n for n, _ in ranking]


# Four equal nodes but for free memory: the `mem` selector alone ranks d, c, b, a.
NODES = [
    node("a", running_memory_mb=4096),
    node("b", running_memory_mb=3072),
    node("c", running_memory_mb=2048),
    node("d", running_memory_mb=1024),
]


# ---- groups ---------------------------------------------------------------------------------


def test_no_policy_ranks_by_the_selector_alone() -> None:
    d = select_target(NODES, req())
    assert names(d.ranking) == ["d", "c", "b", "a"]
    assert d.group is None and d.priorities == {} and d.breaks == {}
    assert set(d.to_record()) == {"chosen", "selector", "wanted", "ranking", "rejected"}


def test_a_group_puts_higher_priority_first_then_the_selector_then_outside_nodes() -> None:
    g = group({"a": 2, "b": 2, "c": 1})
    d = select_target(NODES, req(group_=g))
    # a and b share priority 2 (b has more free memory), then c (1), then d outside.
    assert names(d.ranking) == ["b", "a", "c", "d"]
    assert d.chosen == "b"
    assert d.priorities == {"a": 2, "b": 2, "c": 1, "d": None}
    record = d.to_record()
    assert record["group"] == "g"
    assert record["ranking"] == [
        {"node": "b", "score": 13312, "priority": 2},
        {"node": "a", "score": 12288, "priority": 2},
        {"node": "c", "score": 14336, "priority": 1},
        {"node": "d", "score": 15360, "priority": None},
    ]
    assert "b (13312, priority 2)" in explain(d)
    assert "d (15360, outside HA group g)" in explain(d)


def test_negative_priorities_still_rank_before_outside_nodes() -> None:
    d = select_target(NODES, req(group_=group({"a": -5})))
    assert names(d.ranking) == ["a", "d", "c", "b"]


def test_the_highest_priority_node_that_fits_is_chosen() -> None:
    nodes = [
        node("a", connected=False),
        node("b", provisioned_memory_mb=16000),  # no room
        node("c"),
        node("d"),
    ]
    d = select_target(nodes, req(group_=group({"a": 3, "b": 2, "c": 1})))
    assert d.chosen == "c"
    assert d.rejected == {"a": "not connected", "b": "384 MB free, 1024 MB needed"}


def test_an_unrestricted_group_falls_back_outside_when_no_group_node_fits() -> None:
    nodes = [node("a", health=NodeHealth.FENCED), node("b"), node("c", running_memory_mb=9000)]
    d = select_target(nodes, req(group_=group({"a": 1})))
    assert d.chosen == "b"  # outside the group, by the selector
    assert d.priorities == {"b": None, "c": None}


def test_a_restricted_group_never_leaves_the_group() -> None:
    g = group({"a": 2, "b": 1}, name="db", restricted=True)
    nodes = [node("a", connected=False), node("b", scheduling=SchedulingState.FLUSHED),
             node("c"), node("d")]  # fmt: skip
    d = select_target(nodes, req(group_=g))
    assert d.chosen is None
    assert d.rejected == {
        "a": "not connected",
        "b": "scheduling state flushed",
        "c": "outside restricted HA group db (a:2,b:1)",
        "d": "outside restricted HA group db (a:2,b:1)",
    }
    error = decision_error(d)
    assert isinstance(error, InsufficientCapacity)  # the VM waits, as "fits nowhere"
    assert "c: outside restricted HA group db (a:2,b:1)" in error.message


def test_a_restricted_group_refuses_a_named_node_outside_it() -> None:
    g = group({"a": 1}, name="db", restricted=True)
    d = check_target(NODES, req(group_=g), "c")
    assert d.chosen is None
    error = decision_error(d)
    assert isinstance(error, Conflict)
    assert error.message == "node c cannot take the VM: outside restricted HA group db (a:1)"
    # an unrestricted group does not (its priorities rank, they do not filter)
    assert check_target(NODES, req(group_=group({"a": 1})), "c").chosen == "c"


def test_the_node_limit_is_checked_before_the_group() -> None:
    g = group({"a": 1}, restricted=True)
    d = select_target(NODES, req(group_=g, node_limit=["a", "b"]))
    assert d.rejected["c"] == "outside the VM's node limit (a, b)"
    assert d.rejected["b"] == "outside restricted HA group g (a:1)"


# ---- strict affinity rules --------------------------------------------------------------------


def test_strict_apart_rejects_the_nodes_of_its_other_vms_naming_rule_and_vm() -> None:
    r = rule("web-apart", APART, True, Partner("web1", "d"), Partner("web3", "c"))
    d = select_target(NODES, req(rules=(r,)))
    assert d.chosen == "b"
    assert d.rejected == {
        "c": "apart rule web-apart: VM web3 is on c",
        "d": "apart rule web-apart: VM web1 is on d",
    }


def test_strict_apart_counts_a_partners_migration_destination() -> None:
    r = rule("r", APART, True, Partner("web1", "a", moving_to="d"))
    d = select_target(NODES, req(rules=(r,)))
    assert d.rejected == {"a": "apart rule r: VM web1 is on a", "d": "apart rule r: VM web1 "
                          "is moving to d"}  # fmt: skip
    assert d.chosen == "c"


@pytest.mark.parametrize(
    "health", [NodeHealth.DEAD, NodeHealth.FENCING, NodeHealth.FENCED, NodeHealth.FENCE_FAILED]
)
def test_a_partner_on_a_node_awaiting_recovery_pins_nothing(health: NodeHealth) -> None:
    nodes = [node("a", health=health, connected=False), node("b"), node("c")]
    apart = rule("r", APART, True, Partner("x", "a"), Partner("y", None))
    d = select_target(nodes, req(rules=(apart,)))
    assert (d.chosen, d.rejected) == ("b", {"a": "not connected"})
    together = rule("t", TOGETHER, True, Partner("x", "a"))
    assert select_target(nodes, req(rules=(together,))).chosen == "b"


def test_a_suspect_partners_node_still_pins() -> None:
    nodes = [node("a", health=NodeHealth.SUSPECT), node("b"), node("c")]
    d = select_target(nodes, req(rules=(rule("t", TOGETHER, True, Partner("x", "a")),)))
    assert d.chosen is None
    assert d.rejected["b"] == "together rule t: VM x is on a"


def test_strict_together_keeps_the_vm_with_its_partners() -> None:
    r = rule("pair", TOGETHER, True, Partner("db2", "b"))
    d = select_target(NODES, req(rules=(r,)))
    assert d.chosen == "b"
    assert d.rejected == {n: "together rule pair: VM db2 is on b" for n in ("a", "c", "d")}


def test_strict_together_with_no_room_beside_the_partner_places_nowhere() -> None:
    nodes = [*NODES[:1], node("b", provisioned_memory_mb=16384), *NODES[2:]]
    r = rule("pair", TOGETHER, True, Partner("db2", "b"))
    d = select_target(nodes, req(rules=(r,)))
    assert d.chosen is None
    assert d.rejected["b"] == "0 MB free, 1024 MB needed"


def test_strict_together_partners_leaving_an_emptied_node_follow_the_vm() -> None:
    # A drain: node a is flushing; db2 is on a too and will follow db1 wherever it goes.
    nodes = [node("a", scheduling=SchedulingState.FLUSHING), *NODES[1:]]
    r = rule("pair", TOGETHER, True, Partner("db2", "a"))
    d = select_target(nodes, req(rules=(r,), current_node="a"))
    assert d.chosen == "d"
    # Once db1 moves to d (its migration record says so), db2 must go to d as well.
    moved = rule("pair", TOGETHER, True, Partner("db1", "a", moving_to="d"))
    d = select_target(nodes, req(rules=(moved,), current_node="a"))
    assert d.chosen == "d"
    # On a node that is not being emptied, a partner left behind pins the VM there.
    d = select_target(NODES, req(rules=(r,), current_node="a"))
    assert d.chosen is None
    assert d.rejected["b"] == "together rule pair: VM db2 is on a"


def test_a_named_target_breaking_a_strict_rule_is_refused_with_the_reason() -> None:
    r = rule("web-apart", APART, True, Partner("web2", "c"))
    d = check_target(NODES, req(rules=(r,), current_node="a"), "c")
    assert d.chosen is None
    error = decision_error(d)
    assert isinstance(error, Conflict)
    assert error.message == "node c cannot take the VM: apart rule web-apart: VM web2 is on c"


def test_the_first_strict_rule_by_name_gives_the_reason() -> None:
    rules = (rule("z", APART, True, Partner("v1", "a")), rule("m", APART, True,
             Partner("v2", "a")))  # fmt: skip
    assert select_target(NODES, req(rules=rules)).rejected == {"a": "apart rule m: VM v2 is on a"}


def test_a_node_down_is_named_by_its_state_before_any_rule() -> None:
    nodes = [node("a", connected=False), *NODES[1:]]
    r = rule("r", APART, True, Partner("v", "a"), Partner("w", "b"))
    d = select_target(nodes, req(rules=(r,)))
    assert d.rejected["a"] == "not connected"
    assert d.rejected["b"] == "apart rule r: VM w is on b"


# ---- non-strict rules: preferences ------------------------------------------------------------


def test_non_strict_apart_ranks_breaking_nodes_last_but_keeps_them() -> None:
    r = rule("spread", APART, False, Partner("web2", "d"), Partner("web3", "c"))
    d = select_target(NODES, req(rules=(r,)))
    assert d.rejected == {}
    assert names(d.ranking) == ["b", "a", "d", "c"]
    assert d.breaks == {
        "c": ["apart rule spread: VM web3 is on c"],
        "d": ["apart rule spread: VM web2 is on d"],
    }
    record = d.to_record()
    assert record["ranking"][2] == {  # type: ignore[index]
        "node": "d",
        "score": 15360,
        "breaks": ["apart rule spread: VM web2 is on d"],
    }
    assert "d (15360, breaks apart rule spread: VM web2 is on d)" in explain(d)


def test_a_non_strict_rule_is_broken_only_when_nothing_else_fits() -> None:
    r = rule("spread", APART, False, Partner("web2", "d"))
    nodes = [node(n, connected=False) for n in ("a", "b", "c")] + [node("d")]
    assert select_target(nodes, req(rules=(r,))).chosen == "d"


def test_fewest_broken_preferences_first() -> None:
    rules = (
        rule("p1", APART, False, Partner("v1", "d")),
        rule("p2", APART, False, Partner("v2", "d"), Partner("v3", "c")),
        rule("p3", TOGETHER, False, Partner("v4", "c"), Partner("v5", "d")),
    )
    d = select_target(NODES, req(rules=rules))
    # a, b: break p3 only; c: p2 and p3; d: p1, p2 and p3.
    assert [(n, len(d.breaks.get(n, []))) for n in names(d.ranking)] == [
        ("b", 1), ("a", 1), ("c", 2), ("d", 3)
    ]  # fmt: skip


def test_preferences_rank_before_group_priority() -> None:
    g = group({"d": 5, "c": 1})
    r = rule("spread", APART, False, Partner("web2", "d"))
    d = select_target(NODES, req(group_=g, rules=(r,)))
    # d has the highest priority but breaks the preference: c (priority 1) first, then the
    # nodes outside the group, then d.
    assert names(d.ranking) == ["c", "b", "a", "d"]


def test_a_named_target_breaking_a_preference_is_taken_and_says_so() -> None:
    r = rule("spread", APART, False, Partner("web2", "c"))
    d = check_target(NODES, req(rules=(r,)), "c")
    assert d.chosen == "c"
    assert explain(d) == "c (as requested) can take the VM (it breaks apart rule spread: VM " \
        "web2 is on c)"  # fmt: skip


# ---- static selector ---------------------------------------------------------------------------


def test_static_weighs_cpu_and_memory_of_every_vm_placed_after_placing_this_one() -> None:
    nodes = [
        # 4/16 + 8192/16384 after placing 2 vCPUs / 4096 MB: 0.25 + 0.5 = 0.75
        node("a", provisioned_vcpus=2, provisioned_memory_mb=4096, running_memory_mb=0),
        # 10/16 + 4096/16384: 0.625 + 0.25 = 0.875 (memory is not all that counts)
        node("b", provisioned_vcpus=8, provisioned_memory_mb=0),
        # a big node: 2/64 + 4096/65536 = 0.03125 + 0.0625 = 0.09375
        node("c", vcpus=64, memory_mb=65536, provisioned_vcpus=0, provisioned_memory_mb=0),
    ]
    d = select_target(nodes, req(vcpus=2, memory_mb=4096, selector=Selector.STATIC))
    assert d.ranking == [("c", 0.0938), ("a", 0.75), ("b", 0.875)]
    assert "chosen by selector static (lowest vCPU + memory fraction" in explain(d)


def test_static_counts_stopped_vms_unlike_mem() -> None:
    # Both nodes run nothing; a has 12 GB of stopped VMs assigned.
    nodes = [node("a", provisioned_memory_mb=12288), node("b", provisioned_memory_mb=0)]
    assert select_target(nodes, req(selector=Selector.MEM)).chosen == "a"  # ties: by name
    assert select_target(nodes, req(selector=Selector.STATIC)).chosen == "b"


def test_static_ties_break_by_name() -> None:
    nodes = [node("z"), node("m"), node("q")]
    d = select_target(nodes, req(selector=Selector.STATIC))
    assert names(d.ranking) == ["m", "q", "z"]


# ---- failback ----------------------------------------------------------------------------------


def test_failback_picks_the_best_node_of_higher_priority() -> None:
    g = group({"a": 3, "b": 3, "c": 1})
    request = req(group_=g, current_node="c")
    assert failback_target(NODES, request) == "b"  # a and b tie on priority: b has more room


def test_failback_none_when_on_the_top_priority_node_or_nofailback_or_no_group() -> None:
    g = group({"a": 3, "b": 3, "c": 1})
    assert failback_target(NODES, req(group_=g, current_node="a")) is None  # b is not higher
    no_fb = group({"a": 3, "c": 1}, nofailback=True)
    assert failback_target(NODES, req(group_=no_fb, current_node="c")) is None
    assert failback_target(NODES, req(current_node="c")) is None


def test_failback_from_outside_the_group_to_any_group_node() -> None:
    g = group({"a": -1})
    assert failback_target(NODES, req(group_=g, current_node="d")) == "a"


def test_failback_skips_nodes_that_fail_a_filter_or_a_strict_rule() -> None:
    g = group({"a": 3, "b": 2, "c": 1})
    nodes = [node("a", connected=False), *NODES[1:]]
    r = rule("r", APART, True, Partner("other", "b"))
    assert failback_target(nodes, req(group_=g, current_node="c")) == "b"
    assert failback_target(nodes, req(group_=g, rules=(r,), current_node="c")) is None


def test_failback_does_not_move_to_a_node_breaking_more_preferences() -> None:
    g = group({"a": 3, "c": 1})
    r = rule("p", APART, False, Partner("other", "a"))
    assert failback_target(NODES, req(group_=g, rules=(r,), current_node="c")) is None
    # ... but does when the current node breaks as many
    r2 = rule("p", APART, False, Partner("other", "a"), Partner("x", "c"))
    assert failback_target(NODES, req(group_=g, rules=(r2,), current_node="c")) == "a"


# ---- random clusters: the invariants hold whatever the policy -----------------------------------


def _random_policy(rng: random.Random, names_: list[str]) -> PlacementPolicy:
    g = None
    if rng.random() < 0.7:
        members = rng.sample(names_, rng.randint(1, len(names_)))
        g = group({n: rng.randint(-2, 3) for n in members}, restricted=rng.random() < 0.3)
    rules = []
    for i in range(rng.randint(0, 3)):
        partners = tuple(
            Partner(f"v{i}{j}", rng.choice([*names_, None]), rng.choice([None, None, *names_]))
            for j in range(rng.randint(1, 3))
        )
        kind = rng.choice([APART, TOGETHER])
        rules.append(RuleFacts(f"r{i}", kind, rng.random() < 0.5, partners))
    return PlacementPolicy(group=g, rules=tuple(rules))


@pytest.mark.parametrize("seed", range(30))
def test_random_policies_keep_the_invariants(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(20):
        health = [NodeHealth.UP] * 4 + [NodeHealth.SUSPECT, NodeHealth.FENCED, NodeHealth.DEAD]
        nodes = [
            node(
                f"n{i}",
                health=rng.choice(health),
                running_memory_mb=rng.randint(0, 8192),
                provisioned_memory_mb=rng.randint(0, 16384),
            )
            for i in range(rng.randint(1, 6))
        ]
        names_ = [n.name for n in nodes]
        policy = _random_policy(rng, names_)
        request = PlacementRequest(
            vcpus=1, memory_mb=1024, policy=policy, current_node=rng.choice([None, *names_])
        )
        d = select_target(nodes, request)
        context = rule_context(nodes, request)
        ranked = names(d.ranking)
        assert set(ranked) | set(d.rejected) == set(names_)
        for name in ranked:  # every node accepted passes the group and every strict rule
            assert strict_reason(policy, name, context) is None
            assert policy.group is None or not policy.group.restricted or name in policy.group.nodes
            assert d.breaks.get(name, []) == preference_breaches(policy, name, context)
        for name, reason in d.rejected.items():  # a rule's reason is a real breach
            if " rule " in reason:
                assert reason == strict_reason(policy, name, context)
        keys = [(len(d.breaks.get(n, [])), tier(policy, n), -float(s or 0)) for n, s in d.ranking]
        assert keys == sorted(keys)
        assert d.chosen == (ranked[0] if ranked else None)
        if ranked:  # a named target agrees with the choice
            assert check_target(nodes, request, ranked[0]).chosen == ranked[0]
