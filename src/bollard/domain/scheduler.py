"""Target selection: which node should take a VM (migration, move, recovery).

Pure: the caller gathers the facts of every candidate node and the request; this module
filters the nodes, giving every node it rejects a reason an operator can read, then ranks the
rest by a selector, as Parallel Virtual Cluster (PVC) does:

- ``mem``: most free memory, counting only running VMs (``memory_mb - running_memory_mb``);
- ``memprov``: least provisioned memory, counting stopped VMs too
  (``memory_mb - provisioned_memory_mb``);
- ``vcpus``: most free vCPUs (``vcpus * ratio - provisioned_vcpus``);
- ``load``: lowest load average (a node whose load is unknown sorts last);
- ``vms``: fewest VMs;
- ``static``: the lowest (vCPU fraction + memory fraction) once the VM is placed, counting
  every VM assigned to the node, running or stopped (``(provisioned_vcpus + vcpus) / vcpus +
  (provisioned_memory_mb + memory_mb) / memory_mb``, physical vCPUs).

Ties always break by node name, so a decision is deterministic. With an HA policy (the VM's
group and affinity rules, ``domain/placement_rules.py``) nodes rank by the non-strict rules
they break (fewest first), then by their group priority (higher first, outside the group
last), then by the selector, then by name.

Filters, in the order they are checked (a node gets the reason of the first it fails):
the VM's current node and excluded nodes, the VM's node limit, its restricted HA group,
connected, health up, scheduling state ready, free memory (admission counts every VM assigned
to the node, running or stopped, and memory is never overcommitted), free vCPUs (``vcpus *
ratio``, so a ratio above 1 overcommits vCPUs), storage, free SR-IOV VFs (one per SR-IOV
NIC, on its physical network), the VM's strict affinity rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import StrEnum

from bollard.domain.errors import (
    BollardError,
    Conflict,
    InsufficientCapacity,
    InvalidInput,
    NodeUnavailable,
    NotFound,
)
from bollard.domain.placement_rules import (
    DOWN_HEALTH,
    PlacementPolicy,
    RuleContext,
    group_reason,
    preference_breaches,
    strict_reason,
    tier,
)
from bollard.domain.states import NodeHealth, SchedulingState

NO_SUCH_NODE = "no such node"


class Selector(StrEnum):
    MEM = "mem"
    MEMPROV = "memprov"
    VCPUS = "vcpus"
    LOAD = "load"
    VMS = "vms"
    STATIC = "static"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    Selector.MEM: "most free memory (running VMs)",
    Selector.MEMPROV: "least provisioned memory",
    Selector.VCPUS: "most free vCPUs",
    Selector.LOAD: "lowest load",
    Selector.VMS: "fewest VMs",
    Selector.STATIC: "lowest vCPU + memory fraction of every VM placed",
}


def parse_selector(text: str) -> Selector:
    """The selector named ``text``, or InvalidInput listing the valid names."""
    try:
        return Selector(text.strip().lower())
    except ValueError:
        names = ", ".join(s.value for s in Selector)
        raise InvalidInput(f"unknown selector {text!r} (one of: {names})") from None


@dataclass(frozen=True)
class NodeFacts:
    """What the scheduler needs to know of one node."""

    name: str
    connected: bool
    health: NodeHealth
    scheduling: SchedulingState
    vcpus: int
    memory_mb: int
    # Every VM assigned to the node, running or stopped: what admission control counts.
    provisioned_vcpus: int = 0
    provisioned_memory_mb: int = 0
    # Running VMs only: what the ``mem`` selector counts.
    running_vcpus: int = 0
    running_memory_mb: int = 0
    vm_count: int = 0
    load: float | None = None
    # The free room (MiB) of each storage pool on this node, as it last reported it (a pool
    # it has not reported is not here).
    pool_free_mb: Mapping[str, int] = field(default_factory=dict)
    # Free SR-IOV VFs per physical network (physnet -> count), of the physical networks the
    # request needs, counted as its NICs can take them (a macvtap NIC needs a VF with a
    # network device); a physical network the node has no PF on is not here (0 free).
    free_vfs: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PoolNeed:
    """Storage the VM needs on its node: pool ``pool``, seen by ``nodes`` (None: every
    node), with ``local_mb`` MiB to be made on the node (its volumes of a local pool, copied
    or made anew there; 0 for a shared pool, whose volumes stay where they are)."""

    pool: str
    nodes: frozenset[str] | None
    local_mb: int = 0


@dataclass(frozen=True)
class PlacementRequest:
    """What the VM needs and where it may go.

    ``exclude`` holds nodes that must not be chosen; ``current_node`` (the VM's node now) is
    excluded as well and named as such in the reasons. ``node_limit``, when given and not empty,
    is the only nodes the VM may run on. ``selector`` is the VM's own; None means the cluster
    default. ``policy``: the VM's HA group and affinity rules with where their VMs are.
    ``vfs``: the SR-IOV VFs its NICs need (physnet -> count, one per SR-IOV NIC);
    ``vf_netdev``: the physical networks where some of them are macvtap NICs, whose VF needs
    a network device (the node's ``free_vfs`` are counted accordingly).
    """

    vcpus: int
    memory_mb: int
    exclude: AbstractSet[str] = frozenset()
    node_limit: Sequence[str] | None = None
    selector: Selector | None = None
    current_node: str | None = None
    pools: tuple[PoolNeed, ...] = ()
    policy: PlacementPolicy = field(default_factory=PlacementPolicy)
    vfs: Mapping[str, int] = field(default_factory=dict)
    vf_netdev: AbstractSet[str] = frozenset()

    def __post_init__(self) -> None:
        if self.vcpus < 0 or self.memory_mb < 0:
            raise ValueError(f"negative request: {self.vcpus} vCPUs, {self.memory_mb} MB")
        negative = {physnet: n for physnet, n in self.vfs.items() if n < 0}
        if negative:
            raise ValueError(f"negative SR-IOV VF request: {negative}")
        object.__setattr__(self, "exclude", frozenset(self.exclude))
        object.__setattr__(self, "vfs", {p: n for p, n in sorted(self.vfs.items()) if n})
        object.__setattr__(self, "vf_netdev", frozenset(self.vf_netdev))
        if self.node_limit is not None:
            object.__setattr__(self, "node_limit", tuple(self.node_limit))


Score = float | None


@dataclass(frozen=True)
class Decision:
    """The outcome of a selection: the node chosen (or None) and why.

    ``rejected`` maps every node filtered out to its reason; ``ranking`` lists the accepted
    nodes best first with their score for the selector (free MB for mem and memprov, free vCPUs
    for vcpus, the load for load, the VM count for vms, the vCPU + memory fraction for
    static). ``wanted`` is the node asked for when the decision comes from ``check_target``.
    ``group`` is the VM's HA group (None: none) and ``priorities`` each ranked node's priority
    in it (None: outside it); ``breaks`` the non-strict affinity rules each ranked node would
    break, with why (a node breaking none is not in it).
    """

    chosen: str | None
    selector: Selector
    rejected: dict[str, str] = field(default_factory=dict)
    ranking: list[tuple[str, Score]] = field(default_factory=list)
    wanted: str | None = None
    group: str | None = None
    priorities: dict[str, int | None] = field(default_factory=dict)
    breaks: dict[str, list[str]] = field(default_factory=dict)

    def to_record(self) -> dict[str, object]:
        """A JSON-ready form for the task's record (``group``, and a ranked node's
        ``priority`` and ``breaks``, only when the VM has a group or such rules)."""
        ranking: list[dict[str, object]] = []
        for name, value in self.ranking:
            item: dict[str, object] = {"node": name, "score": value}
            if self.group is not None:
                item["priority"] = self.priorities.get(name)
            if self.breaks.get(name):
                item["breaks"] = list(self.breaks[name])
            ranking.append(item)
        record: dict[str, object] = {
            "chosen": self.chosen,
            "selector": self.selector.value,
            "wanted": self.wanted,
            "ranking": ranking,
            "rejected": [
                {"node": name, "reason": reason} for name, reason in sorted(self.rejected.items())
            ],
        }
        if self.group is not None:
            record["group"] = self.group
        return record


def _num(value: float) -> str:
    """A number as an operator reads it: 3, 2.5, 12.25."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def vcpu_capacity(node: NodeFacts, ratio: float) -> float:
    """vCPUs the node may hand out. Rounded so 100 x 1.13 is 113, not 112.99999999999999."""
    return round(node.vcpus * ratio, 6)


def free_vcpus(node: NodeFacts, ratio: float) -> float:
    return vcpu_capacity(node, ratio) - node.provisioned_vcpus


def free_memory_mb(node: NodeFacts) -> int:
    """Memory not yet promised to a VM assigned to the node (running or stopped)."""
    return node.memory_mb - node.provisioned_memory_mb


def reject_reason(
    node: NodeFacts,
    request: PlacementRequest,
    ratio: float,
    context: RuleContext | None = None,
) -> str | None:
    """Why ``node`` cannot take the VM, or None when it can. ``context``: what the VM's strict
    affinity rules need of the other nodes (see ``rule_context``; None: no node is down and
    the VM's node is not being emptied)."""
    if request.current_node is not None and node.name == request.current_node:
        return "is the VM's current node"
    if node.name in request.exclude:
        return "excluded"
    if request.node_limit and node.name not in request.node_limit:
        return f"outside the VM's node limit ({', '.join(request.node_limit)})"
    restricted = group_reason(request.policy, node.name)
    if restricted is not None:
        return restricted
    reason = (
        _node_reason(node, request, ratio)
        or _storage_reason(node, request)
        or _vf_reason(node, request)
    )
    if reason is not None:
        return reason
    return strict_reason(request.policy, node.name, context or RuleContext())


def _node_reason(node: NodeFacts, request: PlacementRequest, ratio: float) -> str | None:
    if not node.connected:
        return "not connected"
    if node.health != NodeHealth.UP:
        return f"health {node.health.value}"
    if node.scheduling != SchedulingState.READY:
        return f"scheduling state {node.scheduling.value}"
    memory = free_memory_mb(node)
    if memory < request.memory_mb:
        return f"{memory} MB free, {request.memory_mb} MB needed"
    vcpus = free_vcpus(node, ratio)
    if vcpus < request.vcpus:
        return (
            f"{_num(vcpus)} vCPUs free ({node.vcpus} x ratio {float(ratio)} - "
            f"{node.provisioned_vcpus} provisioned), {request.vcpus} needed"
        )
    return None


def _available(node: NodeFacts) -> bool:
    return (
        node.connected and node.health == NodeHealth.UP and node.scheduling == SchedulingState.READY
    )


def rule_context(nodes: Sequence[NodeFacts], request: PlacementRequest) -> RuleContext:
    """The nodes down for the health monitor (a partner there pins nothing) and the VM's
    node when it is being emptied (not connected, not up or not ready)."""
    down = frozenset(n.name for n in nodes if n.health in DOWN_HEALTH)
    current = [n for n in nodes if n.name == request.current_node]
    evacuating = request.current_node if current and not _available(current[0]) else None
    return RuleContext(down=down, evacuating=evacuating)


def _storage_reason(node: NodeFacts, request: PlacementRequest) -> str | None:
    for need in request.pools:
        if need.nodes is not None and node.name not in need.nodes:
            return f"not a host of storage pool {need.pool}"
        free = node.pool_free_mb.get(need.pool)
        if need.local_mb > 0 and free is not None and free < need.local_mb:
            return f"pool {need.pool}: {free} MiB free, {need.local_mb} MiB needed"
    return None


NO_FREE_VF = "no free SR-IOV VF on physnet"


def _vf_reason(node: NodeFacts, request: PlacementRequest) -> str | None:
    """One VF per SR-IOV NIC, on the NIC's physical network (macvtap and hostdev alike:
    the node's count already says which VFs the request's NICs can take)."""
    for physnet, needed in request.vfs.items():
        free = node.free_vfs.get(physnet, 0)
        if free < needed:
            return f"{NO_FREE_VF} {physnet} ({free} free, {needed} needed)"
    return None


def static_score(node: NodeFacts, request: PlacementRequest | None) -> Score:
    """The node's vCPU fraction plus memory fraction once the VM is placed (every VM assigned
    to it counted, running or stopped); None for a node without vCPUs or memory."""
    if node.vcpus <= 0 or node.memory_mb <= 0:
        return None
    vcpus, memory = (request.vcpus, request.memory_mb) if request is not None else (0, 0)
    cpu = (node.provisioned_vcpus + vcpus) / node.vcpus
    mem = (node.provisioned_memory_mb + memory) / node.memory_mb
    return round(cpu + mem, 4)


def score(
    node: NodeFacts, selector: Selector, ratio: float, request: PlacementRequest | None = None
) -> Score:
    """The node's value for ``selector`` (see ``Decision.ranking``); ``static`` counts the
    request's VM on the node."""
    if selector is Selector.MEM:
        return node.memory_mb - node.running_memory_mb
    if selector is Selector.MEMPROV:
        return free_memory_mb(node)
    if selector is Selector.VCPUS:
        return free_vcpus(node, ratio)
    if selector is Selector.LOAD:
        return node.load
    if selector is Selector.STATIC:
        return static_score(node, request)
    return node.vm_count


def _sort_key(selector: Selector) -> Callable[[tuple[str, Score]], tuple[object, ...]]:
    higher_is_better = selector in (Selector.MEM, Selector.MEMPROV, Selector.VCPUS)

    def key(item: tuple[str, Score]) -> tuple[object, ...]:
        name, value = item
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return (1, 0.0, name)
        return (0, -value if higher_is_better else value, name)

    return key


def rank(
    nodes: Sequence[NodeFacts],
    selector: Selector,
    ratio: float,
    request: PlacementRequest | None = None,
    breaks: Mapping[str, Sequence[str]] | None = None,
) -> list[tuple[str, Score]]:
    """``nodes`` best first: fewest non-strict rules broken (``breaks``), then the request's
    group priority (higher first, outside the group last), then ``selector`` (unknown scores
    last), then the name."""
    policy = request.policy if request is not None else PlacementPolicy()
    broken = breaks or {}
    by_selector = _sort_key(selector)

    def key(item: tuple[str, Score]) -> tuple[object, ...]:
        name = item[0]
        return (len(broken.get(name, ())), tier(policy, name), *by_selector(item))

    scored = [(n.name, score(n, selector, ratio, request)) for n in nodes]
    return sorted(scored, key=key)


def _check_settings(nodes: Sequence[NodeFacts], ratio: float) -> None:
    if not ratio > 0 or math.isinf(ratio):
        raise ValueError(f"vCPU allocation ratio must be a positive number, not {ratio}")
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate node names in {sorted(names)}")


def _decision(
    request: PlacementRequest,
    selector: Selector,
    ranked: list[tuple[str, Score]],
    breaks: dict[str, list[str]],
    *,
    chosen: str | None,
    rejected: dict[str, str] | None = None,
    wanted: str | None = None,
) -> Decision:
    """A decision with the group priorities and rule breaches of the ranked nodes."""
    policy = request.policy
    group = policy.group.name if policy.group is not None else None
    priorities = {name: policy.priority(name) for name, _ in ranked} if group else {}
    return Decision(
        selector=selector,
        ranking=ranked,
        group=group,
        priorities=priorities,
        breaks={name: breaks[name] for name, _ in ranked if breaks.get(name)},
        chosen=chosen,
        rejected=rejected or {},
        wanted=wanted,
    )


def select_target(
    nodes: Sequence[NodeFacts],
    request: PlacementRequest,
    *,
    vcpu_allocation_ratio: float = 1.0,
    default_selector: Selector = Selector.MEM,
) -> Decision:
    """Filter ``nodes`` and rank the rest (``rank``): the first is chosen."""
    _check_settings(nodes, vcpu_allocation_ratio)
    selector = request.selector or default_selector
    context = rule_context(nodes, request)
    rejected: dict[str, str] = {}
    accepted: list[NodeFacts] = []
    for node in nodes:
        reason = reject_reason(node, request, vcpu_allocation_ratio, context)
        if reason is None:
            accepted.append(node)
        else:
            rejected[node.name] = reason
    breaks = {n.name: preference_breaches(request.policy, n.name, context) for n in accepted}
    ranking = rank(accepted, selector, vcpu_allocation_ratio, request, breaks)
    chosen = ranking[0][0] if ranking else None
    return _decision(request, selector, ranking, breaks, chosen=chosen, rejected=rejected)


def check_target(
    nodes: Sequence[NodeFacts],
    request: PlacementRequest,
    name: str,
    *,
    vcpu_allocation_ratio: float = 1.0,
    default_selector: Selector = Selector.MEM,
) -> Decision:
    """Whether node ``name`` (an operator's ``--to``) can take the VM, with the same filters.

    The node limit, a restricted group and strict affinity rules apply to a wanted target
    too; a group's priorities and non-strict rules do not (a broken one is noted). Other
    nodes are not considered.
    """
    _check_settings(nodes, vcpu_allocation_ratio)
    selector = request.selector or default_selector
    match = [n for n in nodes if n.name == name]
    if not match:
        return Decision(chosen=None, selector=selector, rejected={name: NO_SUCH_NODE}, wanted=name)
    node = match[0]
    context = rule_context(nodes, request)
    reason = reject_reason(node, request, vcpu_allocation_ratio, context)
    if reason is not None:
        return Decision(chosen=None, selector=selector, rejected={name: reason}, wanted=name)
    ranking = [(name, score(node, selector, vcpu_allocation_ratio, request))]
    breaks = {name: preference_breaches(request.policy, name, context)}
    return _decision(request, selector, ranking, breaks, chosen=name, wanted=name)


def failback_target(
    nodes: Sequence[NodeFacts],
    request: PlacementRequest,
    *,
    vcpu_allocation_ratio: float = 1.0,
    default_selector: Selector = Selector.MEM,
) -> str | None:
    """Where a VM on ``request.current_node`` should move back to: the best-ranked node that
    passes every filter and rule, of strictly higher priority in the VM's group than its node
    (any node of the group when its node is outside it) and breaking no more non-strict
    rules than its node does. None when there is none, the VM has no group, or its group has
    ``nofailback``."""
    group = request.policy.group
    if group is None or group.nofailback or request.current_node is None:
        return None
    decision = select_target(
        nodes,
        request,
        vcpu_allocation_ratio=vcpu_allocation_ratio,
        default_selector=default_selector,
    )
    current = group.priority(request.current_node)
    context = rule_context(nodes, request)
    broken_now = len(preference_breaches(request.policy, request.current_node, context))
    for name, _ in decision.ranking:
        priority = decision.priorities.get(name)
        if priority is None or (current is not None and priority <= current):
            continue
        if len(decision.breaks.get(name, ())) <= broken_now:
            return name
    return None


def _reasons(rejected: dict[str, str]) -> str:
    return "; ".join(f"{name}: {reason}" for name, reason in sorted(rejected.items()))


def _ranked(decision: Decision, name: str, value: Score) -> str:
    """A ranked node as an operator reads it: its score, its group priority, what it breaks."""
    parts = ["unknown" if value is None else _num(value)]
    if decision.group is not None:
        priority = decision.priorities.get(name)
        parts.append(
            f"outside HA group {decision.group}" if priority is None else f"priority {priority}"
        )
    parts.extend(f"breaks {b}" for b in decision.breaks.get(name, ()))
    return f"{name} ({', '.join(parts)})"


def explain(decision: Decision) -> str:
    """One line for an operator: the choice and its grounds, or why no node can take the VM."""
    if decision.chosen is None:
        if decision.wanted is not None:
            reason = decision.rejected.get(decision.wanted, "rejected")
            return f"node {decision.wanted} cannot take the VM: {reason}"
        if not decision.rejected:
            return "no node can take the VM: no node is enrolled"
        return f"no node can take the VM: {_reasons(decision.rejected)}"
    if decision.wanted is not None:
        text = f"{decision.chosen} (as requested) can take the VM"
        broken = decision.breaks.get(decision.chosen)
        if broken:
            text += f" (it breaks {'; '.join(broken)})"
        return text
    ranked = ", ".join(_ranked(decision, name, value) for name, value in decision.ranking)
    text = (
        f"{decision.chosen} chosen by selector {decision.selector.value} "
        f"({decision.selector.description}) from {ranked}"
    )
    if decision.rejected:
        text += f"; rejected: {_reasons(decision.rejected)}"
    return text


def decision_error(decision: Decision) -> BollardError:
    """The typed error for a decision that chose nothing; its message is ``explain``.

    For a wanted node: NotFound when it does not exist, NodeUnavailable (retryable) when it is
    not connected, InsufficientCapacity when it lacks memory, vCPUs or a free SR-IOV VF,
    Conflict otherwise (its health, scheduling state, the node limit, a restricted HA group,
    a strict affinity rule, the VM's current node). Without a wanted node:
    InsufficientCapacity.
    """
    if decision.chosen is not None:
        raise ValueError(f"decision chose {decision.chosen}: nothing to report")
    message = explain(decision)
    if decision.wanted is None:
        return InsufficientCapacity(message)
    reason = decision.rejected.get(decision.wanted, "")
    if reason == NO_SUCH_NODE:
        return NotFound(f"node {decision.wanted!r} does not exist")
    if reason == "not connected":
        return NodeUnavailable(message)
    if reason.endswith(" needed") or reason.startswith(NO_FREE_VF):
        return InsufficientCapacity(message)
    return Conflict(message)
