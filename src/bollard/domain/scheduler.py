"""Target selection: which node should take a VM (migration, move, recovery).

Pure: the caller gathers the facts of every candidate node and the request; this module
filters the nodes, giving every node it rejects a reason an operator can read, then ranks the
rest by a selector, as Parallel Virtual Cluster (PVC) does:

- ``mem``: most free memory, counting only running VMs (``memory_mb - running_memory_mb``);
- ``memprov``: least provisioned memory, counting stopped VMs too
  (``memory_mb - provisioned_memory_mb``);
- ``vcpus``: most free vCPUs (``vcpus * ratio - provisioned_vcpus``);
- ``load``: lowest load average (a node whose load is unknown sorts last);
- ``vms``: fewest VMs.

Ties always break by node name, so a decision is deterministic.

Filters, in the order they are checked (a node gets the reason of the first it fails):
the VM's current node and excluded nodes, the VM's node limit, connected, health up,
scheduling state ready, free memory (admission counts every VM assigned to the node, running or
stopped, and memory is never overcommitted), free vCPUs (``vcpus * ratio``, so a ratio above 1
overcommits vCPUs).
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
from bollard.domain.states import NodeHealth, SchedulingState

NO_SUCH_NODE = "no such node"


class Selector(StrEnum):
    MEM = "mem"
    MEMPROV = "memprov"
    VCPUS = "vcpus"
    LOAD = "load"
    VMS = "vms"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    Selector.MEM: "most free memory (running VMs)",
    Selector.MEMPROV: "least provisioned memory",
    Selector.VCPUS: "most free vCPUs",
    Selector.LOAD: "lowest load",
    Selector.VMS: "fewest VMs",
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
    default.
    """

    vcpus: int
    memory_mb: int
    exclude: AbstractSet[str] = frozenset()
    node_limit: Sequence[str] | None = None
    selector: Selector | None = None
    current_node: str | None = None
    pools: tuple[PoolNeed, ...] = ()

    def __post_init__(self) -> None:
        if self.vcpus < 0 or self.memory_mb < 0:
            raise ValueError(f"negative request: {self.vcpus} vCPUs, {self.memory_mb} MB")
        object.__setattr__(self, "exclude", frozenset(self.exclude))
        if self.node_limit is not None:
            object.__setattr__(self, "node_limit", tuple(self.node_limit))


Score = float | None


@dataclass(frozen=True)
class Decision:
    """The outcome of a selection: the node chosen (or None) and why.

    ``rejected`` maps every node filtered out to its reason; ``ranking`` lists the accepted
    nodes best first with their score for the selector (free MB for mem and memprov, free vCPUs
    for vcpus, the load for load, the VM count for vms). ``wanted`` is the node asked for when
    the decision comes from ``check_target``.
    """

    chosen: str | None
    selector: Selector
    rejected: dict[str, str] = field(default_factory=dict)
    ranking: list[tuple[str, Score]] = field(default_factory=list)
    wanted: str | None = None

    def to_record(self) -> dict[str, object]:
        """A JSON-ready form for the task's record."""
        return {
            "chosen": self.chosen,
            "selector": self.selector.value,
            "wanted": self.wanted,
            "ranking": [{"node": name, "score": score} for name, score in self.ranking],
            "rejected": [
                {"node": name, "reason": reason} for name, reason in sorted(self.rejected.items())
            ],
        }


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


def reject_reason(node: NodeFacts, request: PlacementRequest, ratio: float) -> str | None:
    """Why ``node`` cannot take the VM, or None when it can."""
    if request.current_node is not None and node.name == request.current_node:
        return "is the VM's current node"
    if node.name in request.exclude:
        return "excluded"
    if request.node_limit and node.name not in request.node_limit:
        return f"outside the VM's node limit ({', '.join(request.node_limit)})"
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
    return _storage_reason(node, request)


def _storage_reason(node: NodeFacts, request: PlacementRequest) -> str | None:
    for need in request.pools:
        if need.nodes is not None and node.name not in need.nodes:
            return f"not a host of storage pool {need.pool}"
        free = node.pool_free_mb.get(need.pool)
        if need.local_mb > 0 and free is not None and free < need.local_mb:
            return f"pool {need.pool}: {free} MiB free, {need.local_mb} MiB needed"
    return None


def score(node: NodeFacts, selector: Selector, ratio: float) -> Score:
    """The node's value for ``selector`` (see ``Decision.ranking``)."""
    if selector is Selector.MEM:
        return node.memory_mb - node.running_memory_mb
    if selector is Selector.MEMPROV:
        return free_memory_mb(node)
    if selector is Selector.VCPUS:
        return free_vcpus(node, ratio)
    if selector is Selector.LOAD:
        return node.load
    return node.vm_count


def _sort_key(selector: Selector) -> Callable[[tuple[str, Score]], tuple[object, ...]]:
    higher_is_better = selector in (Selector.MEM, Selector.MEMPROV, Selector.VCPUS)

    def key(item: tuple[str, Score]) -> tuple[object, ...]:
        name, value = item
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return (1, 0.0, name)
        return (0, -value if higher_is_better else value, name)

    return key


def rank(nodes: Sequence[NodeFacts], selector: Selector, ratio: float) -> list[tuple[str, Score]]:
    """``nodes`` best first for ``selector``; ties by name, unknown scores last."""
    scored = [(n.name, score(n, selector, ratio)) for n in nodes]
    return sorted(scored, key=_sort_key(selector))


def _check_settings(nodes: Sequence[NodeFacts], ratio: float) -> None:
    if not ratio > 0 or math.isinf(ratio):
        raise ValueError(f"vCPU allocation ratio must be a positive number, not {ratio}")
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate node names in {sorted(names)}")


def select_target(
    nodes: Sequence[NodeFacts],
    request: PlacementRequest,
    *,
    vcpu_allocation_ratio: float = 1.0,
    default_selector: Selector = Selector.MEM,
) -> Decision:
    """Filter ``nodes`` and pick the best of the rest by the request's (or default) selector."""
    _check_settings(nodes, vcpu_allocation_ratio)
    selector = request.selector or default_selector
    rejected: dict[str, str] = {}
    accepted: list[NodeFacts] = []
    for node in nodes:
        reason = reject_reason(node, request, vcpu_allocation_ratio)
        if reason is None:
            accepted.append(node)
        else:
            rejected[node.name] = reason
    ranking = rank(accepted, selector, vcpu_allocation_ratio)
    chosen = ranking[0][0] if ranking else None
    return Decision(chosen=chosen, selector=selector, rejected=rejected, ranking=ranking)


def check_target(
    nodes: Sequence[NodeFacts],
    request: PlacementRequest,
    name: str,
    *,
    vcpu_allocation_ratio: float = 1.0,
    default_selector: Selector = Selector.MEM,
) -> Decision:
    """Whether node ``name`` (an operator's ``--to``) can take the VM, with the same filters.

    The node limit applies to a wanted target too. Other nodes are not considered.
    """
    _check_settings(nodes, vcpu_allocation_ratio)
    selector = request.selector or default_selector
    match = [n for n in nodes if n.name == name]
    if not match:
        return Decision(chosen=None, selector=selector, rejected={name: NO_SUCH_NODE}, wanted=name)
    node = match[0]
    reason = reject_reason(node, request, vcpu_allocation_ratio)
    if reason is not None:
        return Decision(chosen=None, selector=selector, rejected={name: reason}, wanted=name)
    ranking = [(name, score(node, selector, vcpu_allocation_ratio))]
    return Decision(chosen=name, selector=selector, ranking=ranking, wanted=name)


def _reasons(rejected: dict[str, str]) -> str:
    return "; ".join(f"{name}: {reason}" for name, reason in sorted(rejected.items()))


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
        return f"{decision.chosen} (as requested) can take the VM"
    ranked = ", ".join(
        f"{name} ({'unknown' if value is None else _num(value)})"
        for name, value in decision.ranking
    )
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
    not connected, InsufficientCapacity when it lacks memory or vCPUs, Conflict otherwise (its
    health, scheduling state, the node limit, the VM's current node). Without a wanted node:
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
    if reason.endswith(" needed"):
        return InsufficientCapacity(message)
    return Conflict(message)
