"""The one scheduler: where a VM may go, for creation, migration (and so drain) and HA restart.

Every placement goes through ``place``: it gathers the facts of every node, reads
``scheduler.selector`` and ``scheduler.vcpu_allocation_ratio`` in the caller's transaction, and
asks ``domain.scheduler`` for a decision (``select_target``, or ``check_target`` for a node the
operator named). The caller records ``decision.to_record()`` on its task, raises
``decision_error(decision)`` when nothing was chosen, and reserves the chosen node's room with
``claim``, which counts vCPUs by the same ratio (so what the scheduler accepts, the claim
accepts, unless another request took the room in between). Every node rejected is named
with why, as an operator reads it (``for_operators``): "node1: fenced; node2: not connected;
node3: 512 MiB of memory free, 1024 MiB needed".

A VM's HA group and affinity rules (``request_for_vm``, or ``request_for(..., policy=...)``
for a VM being made) come from ``placement_facts.policy_of``, which locks the VM's rules so two
placements of VMs of one rule do not both pass (PostgreSQL; see that module): call it in the
transaction that writes the placement (the VM's node, or its migration record's
destination). ``failback_target`` is where the failback loop sends a VM back to.

SR-IOV NICs (issue 22): a request carries the VFs the VM's NICs need (``request_for(...,
vfs=..., vf_netdev=...)``, from ``sriov_nics.vf_needs``) and the facts count each node's
free VFs on those physical networks; the caller claims them with ``sriov_nics.claim_for``
in the transaction that writes the placement. A move of such a VM asks with
``request_for_vm(..., vfs=True)`` and claims the target's VFs with its task; a caller that
does not ask so is refused for it (``sriov_nics.refuse_move``).

Stateless: plain functions on a ``Connection``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection

from bollard.domain.models import Vm
from bollard.domain.placement_rules import PlacementPolicy
from bollard.domain.scheduler import (
    Decision,
    NodeFacts,
    PlacementRequest,
    PoolNeed,
    Selector,
    check_target,
    free_memory_mb,
    parse_selector,
    select_target,
)
from bollard.domain.scheduler import failback_target as failback_choice
from bollard.domain.settings import lookup
from bollard.domain.states import NodeHealth
from bollard.domain.storage import PoolType
from bollard.server import sriov_nics
from bollard.server.placement_facts import group_of
from bollard.server.placement_facts import policy_of as policy_of  # (for the callers)
from bollard.store import nodes, pools, vms, volumes
from bollard.store import settings as stored_settings

SELECTOR = "scheduler.selector"
VCPU_ALLOCATION_RATIO = "scheduler.vcpu_allocation_ratio"


@dataclass(frozen=True)
class SchedulerSettings:
    """The cluster's scheduler settings as one transaction sees them."""

    default_selector: Selector
    vcpu_allocation_ratio: float


def setting_in(conn: Connection, key: str) -> Any:
    """A setting's value as this transaction sees it. A stored value that is not valid reads
    as the default (the settings reader, which every server's health monitor runs, logs it
    once)."""
    value, _ = lookup(key).stored(stored_settings.get(conn, key))
    return value


def read_settings(conn: Connection) -> SchedulerSettings:
    """``scheduler.selector`` and ``scheduler.vcpu_allocation_ratio``, read through ``conn``."""
    return SchedulerSettings(
        default_selector=parse_selector(str(setting_in(conn, SELECTOR))),
        vcpu_allocation_ratio=float(setting_in(conn, VCPU_ALLOCATION_RATIO)),
    )


def node_facts(conn: Connection, request: PlacementRequest | None = None) -> list[NodeFacts]:
    """What the scheduler knows of every node: state, capacity, what its VMs take, its load,
    the free room of its storage pools, and the free SR-IOV VFs on the physical networks
    `request` needs (none counted without a request or when it needs none)."""
    usage = vms.usage_by_node(conn)
    vfs = (
        sriov_nics.free_vfs(conn, dict(request.vfs), frozenset(request.vf_netdev))
        if request is not None and request.vfs
        else {}
    )
    pool_free: dict[str, dict[str, int]] = {}
    for h in pools.hosts(conn):
        if h.free_mb is not None:
            pool_free.setdefault(h.node, {})[h.pool] = h.free_mb
    facts = []
    for n in nodes.list_all(conn):
        running_vcpus, running_mem, count = usage.get(n.name, (0, 0, 0))
        facts.append(
            NodeFacts(
                name=n.name,
                connected=n.connected,
                health=n.health,
                scheduling=n.scheduling,
                vcpus=n.vcpus,
                memory_mb=n.memory_mb,
                provisioned_vcpus=n.allocated_vcpus,
                provisioned_memory_mb=n.allocated_memory_mb,
                running_vcpus=running_vcpus,
                running_memory_mb=running_mem,
                vm_count=count,
                load=n.load,
                pool_free_mb=pool_free.get(n.name, {}),
                free_vfs=vfs.get(n.name, {}),
            )
        )
    return facts


def request_for(
    vcpus: int,
    memory_mb: int,
    *,
    node_limit: Sequence[str] | None = None,
    node_selector: str | None = None,
    current_node: str | None = None,
    exclude: Iterable[str] = (),
    pools: Sequence[PoolNeed] = (),
    policy: PlacementPolicy | None = None,
    vfs: dict[str, int] | None = None,
    vf_netdev: frozenset[str] = frozenset(),
) -> PlacementRequest:
    """The request for a VM with these needs. ``node_selector`` is the VM's own selector name
    (None or "" for the cluster's); ``current_node`` is the node the VM is leaving, if any;
    ``pools``: the storage it needs on its node (see ``pool_needs``); ``policy``: its HA group
    and affinity rules (``placement_facts.policy_of``; None: none); ``vfs`` and
    ``vf_netdev``: the SR-IOV VFs its NICs need (``sriov_nics.vf_needs``)."""
    return PlacementRequest(
        vcpus=vcpus,
        memory_mb=memory_mb,
        exclude=frozenset(exclude),
        node_limit=node_limit,
        selector=parse_selector(node_selector) if node_selector else None,
        current_node=current_node,
        pools=tuple(pools),
        policy=policy or PlacementPolicy(),
        vfs=vfs or {},
        vf_netdev=vf_netdev,
    )


def pool_needs(conn: Connection, disks: Iterable[tuple[str, int]]) -> list[PoolNeed]:
    """What volumes of these (pool, MiB) need of a node: to see each pool, and room for
    those of local pools (made or copied there)."""
    sizes: dict[str, int] = {}
    for name, size in disks:
        sizes[name] = sizes.get(name, 0) + size
    known = pools.by_name(conn, set(sizes))
    needs = []
    for name, size in sorted(sizes.items()):
        found = known.get(name)
        if found is None:
            continue
        local = found.type is PoolType.LOCAL
        nodes_ = frozenset(found.nodes) if found.nodes is not None else None
        needs.append(PoolNeed(pool=name, nodes=nodes_, local_mb=size if local else 0))
    return needs


def policy_for_new(conn: Connection, ha_group: str | None) -> PlacementPolicy:
    """The HA policy of a VM being made: its group's (a VM joins affinity rules once it
    exists)."""
    return PlacementPolicy(group=group_of(conn, ha_group))


def request_for_vm(
    conn: Connection, vm: Vm, *, leaving: str | None, lock: bool = True, vfs: bool = False
) -> PlacementRequest:
    """The request for an existing VM that leaves node ``leaving`` (its owner, for a migration;
    the fenced node, for an HA restart): its node must see its volumes' pools, with room for
    those of local pools, have free VFs for its SR-IOV NICs, and follow its HA group and
    affinity rules (their rows locked unless ``lock`` is False: see ``placement_facts``).
    ``vfs``: the caller claims the VFs on the node it moves the VM to (``sriov_nics.claim_for``
    with its task) and moves the claims at its commit (``sriov_nics.commit_move``); a caller
    that does not gets a Conflict for a VM with SR-IOV NICs (``sriov_nics.refuse_move``)."""
    if not vfs:
        sriov_nics.refuse_move(vm)
    policy = policy_of(conn, vm, lock=lock)
    disks = [(v.pool, v.size_mb) for v in volumes.of_vm(conn, vm.uuid)]
    needs, netdev = sriov_nics.vf_needs(vm.nics)
    return request_for(
        vm.vcpus,
        vm.memory_mb,
        node_limit=vm.node_limit,
        node_selector=vm.node_selector,
        current_node=leaving,
        pools=pool_needs(conn, disks),
        policy=policy,
        vfs=needs,
        vf_netdev=netdev,
    )


def place(
    conn: Connection,
    request: PlacementRequest,
    *,
    wanted: str | None = None,
    settings: SchedulerSettings | None = None,
) -> Decision:
    """Where the VM should go: the best node by the selector, or, with ``wanted``, whether that
    node can take it (same filters). The decision names every node rejected, with why.
    ``settings``: as the caller read them in this transaction (read here if not given)."""
    settings = settings or read_settings(conn)
    facts = node_facts(conn, request)
    options: dict[str, Any] = {
        "vcpu_allocation_ratio": settings.vcpu_allocation_ratio,
        "default_selector": settings.default_selector,
    }
    if wanted is not None:
        decision = check_target(facts, request, wanted, **options)
    else:
        decision = select_target(facts, request, **options)
    return for_operators(decision, facts, request)


def failback_target(conn: Connection, vm: Vm) -> str | None:
    """Where the failback loop should move the VM back to: the best node of strictly higher
    priority in its HA group than its node (any node of the group when it runs outside it)
    that passes every filter and rule and breaks no more non-strict rules than its node.
    None when there is none, the VM is on no node, in no group, or its group has
    ``nofailback``. The node must have free VFs for its SR-IOV NICs: the migration it leads
    to claims them (``vfs``). Locks nothing: that migration checks the node again."""
    if vm.node is None or not vm.ha_group:
        return None
    request = request_for_vm(conn, vm, leaving=vm.node, lock=False, vfs=True)
    settings = read_settings(conn)
    return failback_choice(
        node_facts(conn, request),
        request,
        vcpu_allocation_ratio=settings.vcpu_allocation_ratio,
        default_selector=settings.default_selector,
    )


# A node down for the health monitor is named by its health: "fenced" says more than the
# "not connected" it also is.
_DOWN = {
    NodeHealth.DEAD: "dead",
    NodeHealth.FENCING: "being fenced",
    NodeHealth.FENCED: "fenced",
    NodeHealth.FENCE_FAILED: "fence failed",
}


def operator_reason(node: NodeFacts, reason: str, request: PlacementRequest) -> str:
    """A rejection as an operator reads it: a node down for the health monitor by its health
    ("fenced", "dead", "fence failed"), memory as "512 MiB of memory free, 1024 MiB needed";
    other reasons as the domain scheduler gives them."""
    down = _DOWN.get(node.health)
    if down is not None and reason in ("not connected", f"health {node.health.value}"):
        return down
    free = free_memory_mb(node)
    if reason == f"{free} MB free, {request.memory_mb} MB needed":
        # (still ending in "needed": `decision_error` makes it InsufficientCapacity)
        return f"{free} MiB of memory free, {request.memory_mb} MiB needed"
    return reason


def for_operators(
    decision: Decision, facts: Sequence[NodeFacts], request: PlacementRequest
) -> Decision:
    """The decision with every rejection worded by `operator_reason`."""
    by_name = {f.name: f for f in facts}
    rejected = {
        name: operator_reason(by_name[name], reason, request) if name in by_name else reason
        for name, reason in decision.rejected.items()
    }
    return replace(decision, rejected=rejected)


def vcpu_limit(vcpus: int, ratio: float) -> int:
    """Whole vCPUs a node of ``vcpus`` may hand out at ``ratio``, rounded as
    ``domain.scheduler.vcpu_capacity`` rounds (so 100 x 1.13 is 113)."""
    return math.floor(round(vcpus * ratio, 6))


def claim(
    conn: Connection,
    node: str,
    request: PlacementRequest,
    *,
    settings: SchedulerSettings | None = None,
) -> bool:
    """Reserve the request's vCPUs and memory on ``node`` if they are still free, vCPUs counted
    by ``scheduler.vcpu_allocation_ratio`` and memory never overcommitted (compare-and-swap:
    False when another request took the room first, or the node's capacity changed)."""
    ratio = (settings or read_settings(conn)).vcpu_allocation_ratio
    return nodes.claim(
        conn,
        node,
        request.vcpus,
        request.memory_mb,
        vcpu_limit=lambda capacity: vcpu_limit(capacity, ratio),
    )
