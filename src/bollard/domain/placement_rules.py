"""HA placement rules (issue 21): a VM's HA group and its affinity rules, as the scheduler
weighs them (``domain/scheduler.py`` asks these functions; the facts come from
``server/placement_facts.py``).

Pure. A VM in an HA group runs on the highest-priority node of the group that passes every
filter; a ``restricted`` group is a filter (no node outside it), an unrestricted one only a
preference (nodes outside it rank after every node of it). An affinity rule keeps its VMs
``together`` on one node or ``apart`` (no two on one node): a strict rule is a filter whose
reason names the rule and the VM that pins the node, a non-strict rule a preference (nodes
that break fewer of them rank first).

Where a partner (another VM of the rule) is: its node, and the destination of its migration,
HA restart or resize under way. A partner on a node that is down for the health monitor
(dead, being fenced, fenced, fence failed: awaiting recovery) or on no node pins nothing. For
``together``, a partner on the node the VM leaves pins nothing either when that node is being
emptied (not ready, not up or not connected: a drain, a maintenance, a recovery): the first to
leave leads, the others follow it.
"""

from __future__ import annotations

import math
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from bollard.domain.ha import AffinityKind, HaGroup, format_group_nodes
from bollard.domain.states import NodeHealth

# A partner on a node in one of these health states pins nothing: it awaits its recovery.
DOWN_HEALTH = frozenset(
    {NodeHealth.DEAD, NodeHealth.FENCING, NodeHealth.FENCED, NodeHealth.FENCE_FAILED}
)


@dataclass(frozen=True)
class Partner:
    """Another VM of a rule: its node (None: on no node) and, while a migration, HA restart
    or resize of it runs, the node it goes to."""

    name: str
    node: str | None
    moving_to: str | None = None


@dataclass(frozen=True)
class RuleFacts:
    """An affinity rule the VM is in, with where its other VMs are."""

    name: str
    kind: AffinityKind
    strict: bool
    partners: tuple[Partner, ...] = ()


@dataclass(frozen=True)
class PlacementPolicy:
    """What the VM's HA group and affinity rules ask of its node (empty: nothing)."""

    group: HaGroup | None = None
    rules: tuple[RuleFacts, ...] = ()

    @property
    def empty(self) -> bool:
        return self.group is None and not self.rules

    def priority(self, node: str | None) -> int | None:
        """The node's priority in the VM's group (None: outside it, or no group)."""
        return None if self.group is None else self.group.priority(node)


@dataclass(frozen=True)
class RuleContext:
    """What a rule needs of the cluster beyond the candidate: the nodes that are down for the
    health monitor, and the node the VM leaves when it is being emptied (None otherwise)."""

    down: AbstractSet[str] = frozenset()
    evacuating: str | None = None


NO_CONTEXT = RuleContext()


def group_reason(policy: PlacementPolicy, node: str) -> str | None:
    """Why a restricted group keeps the VM off ``node``, or None."""
    group = policy.group
    if group is None or not group.restricted or node in group.nodes:
        return None
    return f"outside restricted HA group {group.name} ({format_group_nodes(group.nodes)})"


def positions(partner: Partner, down: AbstractSet[str]) -> list[str]:
    """The nodes a partner pins: its node and its destination, unless down."""
    found = [n for n in (partner.node, partner.moving_to) if n is not None and n not in down]
    return list(dict.fromkeys(found))


def breach(rule: RuleFacts, node: str, context: RuleContext = NO_CONTEXT) -> str | None:
    """Why putting the VM on ``node`` breaks ``rule``, naming the rule and a VM; None when
    it does not."""
    for partner in sorted(rule.partners, key=lambda p: p.name):
        where = positions(partner, context.down)
        if not where:
            continue
        if rule.kind is AffinityKind.APART:
            if node in where:
                verb = "is on" if partner.node == node else "is moving to"
                return f"apart rule {rule.name}: VM {partner.name} {verb} {node}"
        elif node not in where:
            if context.evacuating is not None and where == [context.evacuating]:
                continue  # it leaves the same node: it follows the VM
            return f"together rule {rule.name}: VM {partner.name} is on {', '.join(where)}"
    return None


def _by_name(policy: PlacementPolicy) -> list[RuleFacts]:
    return sorted(policy.rules, key=lambda r: r.name)


def strict_reason(
    policy: PlacementPolicy, node: str, context: RuleContext = NO_CONTEXT
) -> str | None:
    """The first strict rule (by name) that putting the VM on ``node`` breaks, or None."""
    for rule in _by_name(policy):
        if rule.strict:
            reason = breach(rule, node, context)
            if reason is not None:
                return reason
    return None


def preference_breaches(
    policy: PlacementPolicy, node: str, context: RuleContext = NO_CONTEXT
) -> list[str]:
    """Every non-strict rule that putting the VM on ``node`` breaks, with why."""
    found = []
    for rule in _by_name(policy):
        if not rule.strict:
            reason = breach(rule, node, context)
            if reason is not None:
                found.append(reason)
    return found


def tier(policy: PlacementPolicy, node: str) -> float:
    """The node's group tier as a sort key: the higher its priority the smaller; outside the
    group last; 0 for every node when the VM has no group."""
    if policy.group is None:
        return 0.0
    found = policy.group.priority(node)
    return math.inf if found is None else float(-found)
