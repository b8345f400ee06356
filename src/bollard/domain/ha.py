"""HA policies (issue 21): node groups with priorities, affinity rules between VMs, a VM's HA
request state, restart and relocate limits, and what a host's clean shutdown means.

Pure: the records and the rules that read them. Proxmox VE's HA manager is the model an
operator knows: its groups (nodes with priorities, `restricted`, `nofailback`), its request
states (started, stopped, disabled, ignored, error), its `max_restart` / `max_relocate`, its
shutdown policies (freeze, failover, migrate, conditional).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from bollard.domain.errors import InvalidInput


class HaState(StrEnum):
    """A VM's HA request state, as shown (derived, see ``ha_state``)."""

    STARTED = "started"  # HA keeps it running: restarted, relocated, recovered, failed back
    STOPPED = "stopped"  # HA keeps it stopped: recovered (defined, not started) with its node
    DISABLED = "disabled"  # not HA (`--ha none`): recorded stopped with a fenced node
    IGNORED = "ignored"  # HA never touches it (no recovery, restart, relocation, failback)
    ERROR = "error"  # its restart and relocate limits ran out: left alone until cleared


class HaHold(StrEnum):
    """What a VM's stored ``ha_hold`` may say (NULL: nothing holds HA back)."""

    IGNORED = "ignored"
    ERROR = "error"


def ha_state(ha_policy: str, desired_running: bool, hold: str | None) -> HaState:
    """The request state of a VM whose HA policy in force is ``ha_policy`` (restart | none),
    meant to run or not, with its stored ``hold``."""
    if hold == HaHold.ERROR:
        return HaState.ERROR
    if hold == HaHold.IGNORED:
        return HaState.IGNORED
    if ha_policy != "restart":
        return HaState.DISABLED
    return HaState.STARTED if desired_running else HaState.STOPPED


# What `--ha-state` may ask for (error is set by Bollard only; setting another state clears it).
SETTABLE_STATES = (HaState.STARTED, HaState.STOPPED, HaState.DISABLED, HaState.IGNORED)


class ShutdownPolicy(StrEnum):
    """What a host's clean shutdown or reboot means for its VMs."""

    FREEZE = "freeze"  # VMs stay, the node is not fenced, nothing is recovered
    FAILOVER = "failover"  # once the host reads off: fence and recover, without the dead wait
    MIGRATE = "migrate"  # drain before the host goes down; they come back when it returns
    CONDITIONAL = "conditional"  # freeze on a reboot, failover on a power-off


class ShutdownKind(StrEnum):
    POWEROFF = "poweroff"
    REBOOT = "reboot"


def shutdown_action(policy: ShutdownPolicy, kind: ShutdownKind) -> ShutdownPolicy:
    """What to do (freeze, failover or migrate) for a shutdown of ``kind`` under ``policy``."""
    if policy is ShutdownPolicy.CONDITIONAL:
        return ShutdownPolicy.FREEZE if kind is ShutdownKind.REBOOT else ShutdownPolicy.FAILOVER
    return policy


class AffinityKind(StrEnum):
    TOGETHER = "together"  # on one node
    APART = "apart"  # no two on one node


@dataclass(frozen=True)
class HaGroup:
    """Nodes a VM prefers, with priorities: it runs on the highest-priority available node of
    its group; a ``restricted`` group's VMs never run outside it (they wait instead); with
    ``nofailback`` false (the default) a VM moves back when a higher-priority node returns."""

    name: str
    nodes: Mapping[str, int]  # node -> priority (higher first)
    restricted: bool = False
    nofailback: bool = False
    description: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def priority(self, node: str | None) -> int | None:
        """The node's priority in this group; None outside it."""
        return None if node is None else self.nodes.get(node)


@dataclass(frozen=True)
class AffinityRule:
    """VMs kept together on one node, or apart (no two on one node). A ``strict`` rule is a
    filter (a placement that breaks it is refused: the VM waits or stays); a non-strict one a
    preference (broken only when nothing else fits)."""

    name: str
    kind: AffinityKind
    strict: bool
    vms: tuple[str, ...]  # VM names, sorted
    vm_uuids: tuple[str, ...] = field(default=(), compare=False)
    description: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None


def parse_group_nodes(text: str) -> dict[str, int]:
    """``node1:2,node2:1,node3`` -> {node1: 2, node2: 1, node3: 0} (Proxmox's form; a node
    without a priority has 0). InvalidInput, saying what is wrong, for anything else."""
    found: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, priority = part.partition(":")
        name = name.strip()
        if not name:
            raise InvalidInput(f"group nodes: {part!r} names no node (node[:priority],...)")
        if name in found:
            raise InvalidInput(f"group nodes: {name} is given twice")
        try:
            found[name] = int(priority) if priority.strip() else 0
        except ValueError:
            raise InvalidInput(
                f"group nodes: priority {priority!r} of {name} is not a whole number"
            ) from None
        if not -1000 <= found[name] <= 1000:
            raise InvalidInput(
                f"group nodes: priority {found[name]} of {name} is not in -1000..1000"
            )
    if not found:
        raise InvalidInput("group nodes: give at least one node (node[:priority],...)")
    return found


def format_group_nodes(nodes: Mapping[str, int]) -> str:
    """The inverse of ``parse_group_nodes``, highest priority first."""
    ordered = sorted(nodes.items(), key=lambda kv: (-kv[1], kv[0]))
    return ",".join(f"{n}:{p}" for n, p in ordered)
